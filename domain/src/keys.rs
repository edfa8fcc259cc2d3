//! Client key identifiers and the public and secret keys that authenticate with them.
//!
//! Keys carry a CRC32 checksum in base62 (API.md, "Keys"), so a mistyped or made-up key is
//! refused before any lookup and secret scanners can recognise ours. A secret key is shown
//! once; after that only its [`SecretKeyHash`] and last four characters are kept, which is
//! why [`SecretKey`] can be neither serialised nor printed in full.

use std::fmt;

use rand::distr::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM_LEN: usize = 6;

/// The shape of one kind of key.
struct Format {
    prefix: &'static str,
    random_len: usize,
    checksummed: bool,
}

impl Format {
    fn len(&self) -> usize {
        self.prefix.len() + self.random_len + if self.checksummed { CHECKSUM_LEN } else { 0 }
    }

    fn check(&self, s: &str) -> Result<(), KeyFormatError> {
        let Some(rest) = s.strip_prefix(self.prefix) else {
            return Err(KeyFormatError::WrongPrefix {
                expected: self.prefix,
            });
        };
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyFormatError::InvalidCharacter);
        }
        if s.len() != self.len() {
            return Err(KeyFormatError::WrongLength {
                expected: self.len(),
            });
        }
        // All ASCII from here on, so the byte split is on a character boundary.
        if self.checksummed {
            let (body, checksum) = s.as_bytes().split_at(s.len() - CHECKSUM_LEN);
            if checksum != base62_checksum(crc32fast::hash(body)) {
                return Err(KeyFormatError::BadChecksum);
            }
        }
        Ok(())
    }

    fn generate<R: Rng + ?Sized>(&self, rng: &mut R) -> String {
        let mut key = String::with_capacity(self.len());
        key.push_str(self.prefix);
        key.extend((0..self.random_len).map(|_| char::from(rng.sample(Alphanumeric))));
        if self.checksummed {
            let checksum = base62_checksum(crc32fast::hash(key.as_bytes()));
            key.extend(checksum.iter().copied().map(char::from));
        }
        key
    }
}

const PUBLIC: Format = Format {
    prefix: "pk_live_",
    random_len: 24,
    checksummed: true,
};
const SECRET: Format = Format {
    prefix: "sk_live_",
    random_len: 32,
    checksummed: true,
};
const CLIENT_KEY_ID: Format = Format {
    prefix: "ck_",
    random_len: 20,
    checksummed: false,
};

/// `n` in base62, most significant digit first, left-padded with `0` to six digits
/// (62^6 > 2^32, so every `u32` fits).
fn base62_checksum(mut n: u32) -> [u8; CHECKSUM_LEN] {
    let mut digits = [b'0'; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(n % 62) as usize];
        n /= 62;
    }
    digits
}

/// Why a string is not a key. Never includes the text itself, which may be a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key must start with `{expected}`")]
    WrongPrefix { expected: &'static str },
    #[error("key must be {expected} characters long")]
    WrongLength { expected: usize },
    #[error("key contains a character outside 0-9, A-Z and a-z")]
    InvalidCharacter,
    #[error("key checksum does not match")]
    BadChecksum,
}

/// Whether `s` is a well-formed public or secret key, checksum included, so a malformed
/// key is refused without touching the store.
pub fn has_valid_checksum(s: &str) -> bool {
    PUBLIC.check(s).is_ok() || SECRET.check(s).is_ok()
}

/// The key a widget embeds in the page; public, so it may be logged and serialised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey(String);

impl PublicKey {
    /// Every public key has exactly this many bytes (`pk_live_`, 24 random, 6 checksum).
    pub const LEN: usize = 8 + 24 + CHECKSUM_LEN;

    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        PUBLIC.check(s)?;
        Ok(Self(s.to_owned()))
    }

    /// Randomness comes from the caller so the domain stays deterministic under test.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self(PUBLIC.generate(rng))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PublicKey {
    type Error = KeyFormatError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        PUBLIC.check(&s)?;
        Ok(Self(s))
    }
}

impl From<PublicKey> for String {
    fn from(key: PublicKey) -> Self {
        key.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The server-to-server key. Deliberately not `Serialize`, `PartialEq` or printable in
/// full: the text leaves the process only through [`SecretKey::expose_secret`], and is
/// compared only through its hash.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        SECRET.check(s)?;
        Ok(Self(s.to_owned()))
    }

    /// Randomness comes from the caller so the domain stays deterministic under test.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self(SECRET.generate(rng))
    }

    /// The full key, for the one response that shows it to its owner.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// What the store keeps instead of the key.
    pub fn hash(&self) -> SecretKeyHash {
        SecretKeyHash::of(&self.0)
    }

    /// Lets people tell keys apart without seeing them.
    pub fn last_four(&self) -> String {
        // The key is ASCII (checked by `parse`), so this slice is on a char boundary.
        self.0
            .get(self.0.len().saturating_sub(4)..)
            .unwrap_or_default()
            .to_owned()
    }

    /// What events record about a secret key.
    pub fn fingerprint(&self) -> SecretKeyFingerprint {
        SecretKeyFingerprint {
            hash: self.hash(),
            last_four: self.last_four(),
        }
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…{}", SECRET.prefix, self.last_four())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({self})")
    }
}

/// SHA-256 of a secret key's text: how a presented key is looked up and checked
/// without the store ever holding the key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretKeyHash([u8; 32]);

impl SecretKeyHash {
    /// Hashes any candidate text, valid key or not, so a presented key can be looked up.
    pub fn of(secret_text: &str) -> Self {
        Self(Sha256::digest(secret_text.as_bytes()).into())
    }

    /// Compares without leaking, through timing, how many leading bytes agree.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SecretKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKeyHash({})", self.to_hex())
    }
}

impl Serialize for SecretKeyHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for SecretKeyHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes).map_err(|_| {
            serde::de::Error::custom("secret key hash must be 64 hexadecimal characters")
        })?;
        Ok(Self(bytes))
    }
}

/// What events store about a secret key instead of the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretKeyFingerprint {
    pub hash: SecretKeyHash,
    pub last_four: String,
}

/// The stable id of a client key; unlike the keys it never rotates, so it names the
/// aggregate. No checksum: it is never typed in by people.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientKeyId(String);

impl ClientKeyId {
    /// Length of every id: `ck_` and 20 base62 characters.
    pub const LEN: usize = 3 + 20;

    pub fn parse(s: &str) -> Result<Self, KeyFormatError> {
        CLIENT_KEY_ID.check(s)?;
        Ok(Self(s.to_owned()))
    }

    /// Randomness comes from the caller so the domain stays deterministic under test.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        Self(CLIENT_KEY_ID.generate(rng))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's bytes held inline, for maps that copy and compare keys without
    /// following a pointer. Every id has [`Self::LEN`] of them (`parse` and `try_from`
    /// check the format).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut bytes = [0; Self::LEN];
        for (to, from) in bytes.iter_mut().zip(self.0.bytes()) {
            *to = from;
        }
        bytes
    }
}

impl TryFrom<String> for ClientKeyId {
    type Error = KeyFormatError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        CLIENT_KEY_ID.check(&s)?;
        Ok(Self(s))
    }
}

impl From<ClientKeyId> for String {
    fn from(id: ClientKeyId) -> Self {
        id.0
    }
}

impl fmt::Display for ClientKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(42)
    }

    /// Builds a key from a body by hand, independently of `Format::generate`.
    fn with_checksum(body: &str) -> String {
        let checksum = base62_checksum(crc32fast::hash(body.as_bytes()));
        format!(
            "{body}{}",
            std::str::from_utf8(&checksum).expect("base62 is ASCII")
        )
    }

    /// Changes the character at `index` to another base62 character.
    fn tweak(key: &str, index: usize) -> String {
        let mut bytes = key.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'a' { b'b' } else { b'a' };
        String::from_utf8(bytes).expect("still ASCII")
    }

    #[test]
    fn base62_is_most_significant_digit_first_and_padded_to_six() {
        assert_eq!(&base62_checksum(0), b"000000");
        assert_eq!(&base62_checksum(61), b"00000z");
        assert_eq!(&base62_checksum(62), b"000010");
        assert_eq!(&base62_checksum(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn the_checksum_is_the_base62_crc32_of_everything_before_it() {
        let body = "pk_live_abcdefghijklmnopqrstuvwx";
        let crc = crc32fast::hash(body.as_bytes());
        // Known vector: base62 of the CRC computed digit by digit here.
        let mut n = crc;
        let mut expected = Vec::new();
        for _ in 0..6 {
            expected.push(BASE62[(n % 62) as usize]);
            n /= 62;
        }
        expected.reverse();
        let key = format!("{body}{}", String::from_utf8(expected).expect("ASCII"));
        assert_eq!(key, with_checksum(body));
        assert_eq!(PublicKey::parse(&key).expect("valid").as_str(), key);
        assert!(has_valid_checksum(&key));
    }

    #[test]
    fn the_public_key_length_constant_is_the_format_s() {
        assert_eq!(PublicKey::LEN, PUBLIC.len());
    }

    #[test]
    fn a_client_key_id_is_its_bytes_inline_and_distinct_ids_stay_distinct() {
        // Given ids generated and parsed
        assert_eq!(ClientKeyId::LEN, CLIENT_KEY_ID.len());
        let mut rng = rng();
        let ids: Vec<ClientKeyId> = (0..100).map(|_| ClientKeyId::generate(&mut rng)).collect();
        // Then each one's inline bytes are its text, byte for byte
        for id in &ids {
            assert_eq!(&id.to_bytes()[..], id.as_str().as_bytes());
            let parsed = ClientKeyId::parse(id.as_str()).expect("valid");
            assert_eq!(parsed.to_bytes(), id.to_bytes());
        }
        // And no two ids share them
        let inline: std::collections::HashSet<_> = ids.iter().map(ClientKeyId::to_bytes).collect();
        assert_eq!(inline.len(), ids.len());
        // And text of another length is no id
        assert!(ClientKeyId::parse("ck_short").is_err());
        assert!(ClientKeyId::parse(&format!("{}x", ids[0].as_str())).is_err());
    }

    #[test]
    fn generated_keys_parse_and_have_the_documented_shape() {
        let mut rng = rng();
        for _ in 0..100 {
            let pk = PublicKey::generate(&mut rng);
            assert_eq!(pk.as_str().len(), 8 + 24 + 6);
            assert_eq!(PublicKey::parse(pk.as_str()), Ok(pk.clone()));
            assert!(has_valid_checksum(pk.as_str()));

            let sk = SecretKey::generate(&mut rng);
            assert_eq!(sk.expose_secret().len(), 8 + 32 + 6);
            let reparsed = SecretKey::parse(sk.expose_secret()).expect("valid");
            assert_eq!(reparsed.expose_secret(), sk.expose_secret());
            assert!(has_valid_checksum(sk.expose_secret()));

            let id = ClientKeyId::generate(&mut rng);
            assert_eq!(id.as_str().len(), 3 + 20);
            assert!(id.as_str().starts_with("ck_"));
            assert_eq!(ClientKeyId::parse(id.as_str()), Ok(id.clone()));
        }
    }

    #[test]
    fn generation_is_driven_by_the_given_rng() {
        let a = PublicKey::generate(&mut rng());
        let b = PublicKey::generate(&mut rng());
        let c = PublicKey::generate(&mut StdRng::seed_from_u64(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_one_character_change_is_rejected() {
        let key = PublicKey::generate(&mut rng());
        let text = key.as_str();
        for index in 8..text.len() {
            let changed = tweak(text, index);
            assert_eq!(
                PublicKey::parse(&changed),
                Err(KeyFormatError::BadChecksum),
                "change at {index}"
            );
            assert!(!has_valid_checksum(&changed));
        }
        let secret = SecretKey::generate(&mut rng());
        let changed = tweak(secret.expose_secret(), 20);
        assert!(SecretKey::parse(&changed).is_err());
    }

    #[test]
    fn a_wrong_prefix_is_rejected() {
        let key = PublicKey::generate(&mut rng());
        let test_key = key.as_str().replacen("pk_live_", "pk_test_", 1);
        assert_eq!(
            PublicKey::parse(&test_key),
            Err(KeyFormatError::WrongPrefix {
                expected: "pk_live_"
            })
        );
        assert!(PublicKey::parse("").is_err());
        assert!(ClientKeyId::parse("xk_aaaaaaaaaaaaaaaaaaaa").is_err());
    }

    #[test]
    fn a_wrong_length_is_rejected() {
        let short = with_checksum("pk_live_abcdefghijklmnopqrstuvw");
        let long = with_checksum("pk_live_abcdefghijklmnopqrstuvwxy");
        for key in [short, long] {
            assert_eq!(
                PublicKey::parse(&key),
                Err(KeyFormatError::WrongLength { expected: 38 })
            );
            assert!(!has_valid_checksum(&key));
        }
        assert_eq!(
            ClientKeyId::parse("ck_abc"),
            Err(KeyFormatError::WrongLength { expected: 23 })
        );
    }

    #[test]
    fn characters_outside_base62_are_rejected() {
        for body in [
            "pk_live_abcdefghijklmnopqrstuv_x",
            "pk_live_abcdefghijklmnopqrstuv-x",
            "pk_live_abcdefghijklmnopqrstuvéx",
            "pk_live_abcdefghijklmnopqrstuv x",
        ] {
            assert_eq!(
                PublicKey::parse(&with_checksum(body)),
                Err(KeyFormatError::InvalidCharacter),
                "{body}"
            );
        }
        assert_eq!(
            ClientKeyId::parse("ck_aaaaaaaaaaaaaaaaaaa!"),
            Err(KeyFormatError::InvalidCharacter)
        );
    }

    #[test]
    fn a_public_key_is_not_a_secret_key_and_vice_versa() {
        let pk = PublicKey::generate(&mut rng());
        let sk = SecretKey::generate(&mut rng());
        assert!(SecretKey::parse(pk.as_str()).is_err());
        assert!(PublicKey::parse(sk.expose_secret()).is_err());
    }

    #[test]
    fn errors_never_echo_the_key() {
        let sk = SecretKey::generate(&mut rng());
        let changed = tweak(sk.expose_secret(), 20);
        for attempt in [&changed[..], &changed[..30], &changed[8..]] {
            let err = SecretKey::parse(attempt).expect_err("malformed");
            assert!(!err.to_string().contains(&changed[8..16]), "{err}");
        }
    }

    #[test]
    fn debug_and_display_of_a_secret_key_never_show_it() {
        let sk = SecretKey::generate(&mut rng());
        let full = sk.expose_secret();
        let last_four = &full[full.len() - 4..];
        assert_eq!(format!("{sk}"), format!("sk_live_…{last_four}"));
        assert_eq!(
            format!("{sk:?}"),
            format!("SecretKey(sk_live_…{last_four})")
        );
        assert!(!format!("{sk:?}{sk}{sk:#?}").contains(&full[8..40]));
    }

    #[test]
    fn the_hash_is_sha256_hex_of_the_text() {
        assert_eq!(
            SecretKeyHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let sk = SecretKey::generate(&mut rng());
        assert_eq!(sk.hash(), SecretKeyHash::of(sk.expose_secret()));
        assert!(sk.hash().ct_eq(&SecretKeyHash::of(sk.expose_secret())));
        assert!(!sk.hash().ct_eq(&SecretKeyHash::of("abc")));
    }

    #[test]
    fn a_hash_serialises_as_lower_case_hex() {
        let hash = SecretKeyHash::of("abc");
        let json = serde_json::to_string(&hash).expect("serialises");
        assert_eq!(
            json,
            "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
        );
        assert_eq!(
            serde_json::from_str::<SecretKeyHash>(&json).ok(),
            Some(hash)
        );
        assert!(serde_json::from_str::<SecretKeyHash>("\"abc\"").is_err());
        assert_eq!(
            format!("{hash:?}"),
            "SecretKeyHash(ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad)"
        );
    }

    #[test]
    fn the_fingerprint_holds_the_hash_and_last_four() {
        let sk = SecretKey::generate(&mut rng());
        let full = sk.expose_secret();
        let fp = sk.fingerprint();
        assert_eq!(fp.last_four, &full[full.len() - 4..]);
        assert_eq!(sk.last_four(), fp.last_four);
        assert_eq!(fp.hash, SecretKeyHash::of(full));
        let json = serde_json::to_string(&fp).expect("serialises");
        assert!(!json.contains(full));
        assert_eq!(
            serde_json::from_str::<SecretKeyFingerprint>(&json).ok(),
            Some(fp)
        );
    }

    #[test]
    fn public_keys_and_ids_serialise_as_strings_and_deserialise_through_parse() {
        let pk = PublicKey::generate(&mut rng());
        let json = serde_json::to_string(&pk).expect("serialises");
        assert_eq!(json, format!("\"{pk}\""));
        assert_eq!(serde_json::from_str::<PublicKey>(&json).ok(), Some(pk));
        let err = serde_json::from_str::<PublicKey>("\"pk_live_nope\"").expect_err("bad");
        assert!(
            err.to_string().contains("key must be 38 characters long"),
            "{err}"
        );

        let id = ClientKeyId::generate(&mut rng());
        let json = serde_json::to_string(&id).expect("serialises");
        assert_eq!(serde_json::from_str::<ClientKeyId>(&json).ok(), Some(id));
    }
}
