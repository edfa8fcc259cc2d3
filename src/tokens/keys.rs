//! The signing keys: where they come from and how they are published.
//!
//! Keys live in a PEM file of unencrypted PKCS#8 Ed25519 `PRIVATE KEY` blocks (the form
//! `openssl genpkey -algorithm ed25519` writes), created 0600 on first start when absent.
//! Each key is parsed once into an `Ed25519KeyPair` for minting and a `DecodingKey` for
//! verifying (both used by `jwt.rs`); its `kid` is the RFC 7638 thumbprint of its
//! public JWK, and the JWKS document is rendered once, from `jsonwebtoken`'s own JWK types,
//! when the keys are loaded. New keys are written with the `pem` crate.

use std::fmt;
use std::io::{self, Write as _};
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::DecodingKey;
use pem::{EncodeConfig, LineEnding, Pem};

use super::jwt::HeaderSegments;
use super::{CheckpointSignatureError, SigningKeyError, CHECKPOINT_CONTEXT};

/// The only PEM label accepted, and the one written.
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";

/// One Ed25519 key, parsed once.
pub(super) struct Key {
    pub(super) kid: String,
    pub(super) pair: Ed25519KeyPair,
    /// For `jsonwebtoken::decode`: the raw 32-byte public key.
    pub(super) decoding: DecodingKey,
    /// The public half as the JWKS publishes it, `kid` included.
    jwk: Jwk,
}

/// Ed25519 signing keys. The first key signs; every key is published in the JWKS and accepted
/// when verifying (operators stage the next key by appending it, and keep the previous one
/// listed until its tokens expired).
pub struct SigningKeys {
    pub(super) active: Key,
    pub(super) others: Vec<Key>,
    pub(super) headers: HeaderSegments,
    jwks: Bytes,
}

impl fmt::Debug for SigningKeys {
    /// Only the kids: the key pairs are secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("active_kid", &self.active.kid)
            .field(
                "other_kids",
                &self
                    .others
                    .iter()
                    .map(|k| k.kid.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl SigningKeys {
    /// Parses one or more `-----BEGIN PRIVATE KEY-----` (unencrypted PKCS#8 Ed25519) blocks;
    /// text outside the blocks is ignored so operators can annotate the file.
    pub fn from_pem(pem: &str) -> Result<Self, SigningKeyError> {
        Self::parse(pem, "the signing key PEM")
    }

    /// Loads the key file, or creates it with one new key when it does not exist, so a
    /// single-node deployment works without setup. The file is created with mode 0600.
    pub fn load_or_generate(path: &Path) -> Result<Self, SigningKeyError> {
        match std::fs::read_to_string(path) {
            Ok(pem) => Self::from_file_contents(path, &pem),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let pem = Self::generate_pem()?;
                match create_private_file(path, &pem) {
                    Ok(()) => {
                        let keys = Self::from_file_contents(path, &pem)?;
                        tracing::info!(
                            path = %path.display(),
                            kid = keys.active_kid(),
                            "generated a new token signing key"
                        );
                        Ok(keys)
                    }
                    // Another process created it between our read and our create: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(path),
                    Err(source) => Err(SigningKeyError::Write {
                        path: path.to_owned(),
                        source,
                    }),
                }
            }
            Err(source) => Err(SigningKeyError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Loads the key file, which must exist (deployments that manage keys themselves).
    pub fn load(path: &Path) -> Result<Self, SigningKeyError> {
        let pem = std::fs::read_to_string(path).map_err(|source| SigningKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        warn_if_readable_by_others(path);
        Self::from_file_contents(path, &pem)
    }

    /// One new key as a PKCS#8 v1 PEM block (the form `openssl genpkey -algorithm ed25519`
    /// writes: 64-column base64, LF line endings), for operators staging the next key.
    pub fn generate_pem() -> Result<String, SigningKeyError> {
        let der = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
            .map_err(|_| SigningKeyError::Generate)?;
        Ok(pem::encode_config(
            &Pem::new(PRIVATE_KEY_LABEL, der.as_ref()),
            EncodeConfig::new().set_line_ending(LineEnding::LF),
        ))
    }

    /// The kid new tokens are signed with.
    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// `{"keys":[...]}` for `GET /.well-known/jwks.json`, rendered once at construction.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The key a token's `kid` names, if we hold it.
    pub(super) fn key(&self, kid: &str) -> Option<&Key> {
        std::iter::once(&self.active)
            .chain(&self.others)
            .find(|k| k.kid == kid)
    }

    /// Signs a checkpoint's body with the active key, over [`CHECKPOINT_CONTEXT`] and then
    /// `body`, never over bytes a caller chose alone. Returns the kid and the signature.
    pub fn sign_checkpoint(&self, body: &[u8]) -> (&str, Vec<u8>) {
        let signature = self.active.pair.sign(&checkpoint_message(body));
        (&self.active.kid, signature.as_ref().to_vec())
    }

    /// Checks a signature [`SigningKeys::sign_checkpoint`] made, with the key `kid` names.
    pub fn verify_checkpoint(
        &self,
        kid: &str,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), CheckpointSignatureError> {
        let key = self.key(kid).ok_or(CheckpointSignatureError::UnknownKid)?;
        UnparsedPublicKey::new(&ED25519, key.pair.public_key().as_ref())
            .verify(&checkpoint_message(body), signature)
            .map_err(|_| CheckpointSignatureError::Invalid)
    }

    fn from_file_contents(path: &Path, pem: &str) -> Result<Self, SigningKeyError> {
        Self::parse(pem, &format!("the signing key file {}", path.display()))
    }

    fn parse(pem: &str, origin: &str) -> Result<Self, SigningKeyError> {
        install_crypto_provider();

        let mut keys: Vec<(usize, Key)> = Vec::new();
        for (line, der) in pem_private_key_blocks(pem, origin)? {
            let pair =
                Ed25519KeyPair::from_pkcs8(&der).map_err(|_| SigningKeyError::NotEd25519 {
                    origin: origin.to_owned(),
                    line,
                })?;
            let key = Key::new(pair);
            if let Some((first, _)) = keys.iter().find(|(_, k)| k.kid == key.kid) {
                return Err(SigningKeyError::Pem {
                    origin: origin.to_owned(),
                    reason: format!("lists the key at line {line} twice (first at line {first})"),
                });
            }
            keys.push((line, key));
        }
        let mut keys = keys.into_iter().map(|(_, k)| k);
        let Some(active) = keys.next() else {
            return Err(SigningKeyError::Pem {
                origin: origin.to_owned(),
                reason: "contains no \"PRIVATE KEY\" block".to_owned(),
            });
        };
        let others: Vec<Key> = keys.collect();
        let jwks = render_jwks(std::iter::once(&active).chain(&others)).map_err(|e| {
            tracing::error!(error = %e, "could not render the JWKS");
            SigningKeyError::Pem {
                origin: origin.to_owned(),
                reason: "could not be published as a JWKS".to_owned(),
            }
        })?;
        Ok(Self {
            headers: HeaderSegments::new(&active.kid),
            active,
            others,
            jwks,
        })
    }
}

impl Key {
    fn new(pair: Ed25519KeyPair) -> Self {
        let public = pair.public_key().as_ref();
        let mut jwk = public_jwk(URL_SAFE_NO_PAD.encode(public));
        let kid = jwk.thumbprint(ThumbprintHash::SHA256);
        jwk.common.key_id = Some(kid.clone());
        Self {
            kid,
            // Despite the name, jsonwebtoken's aws-lc EdDSA verifier takes the raw 32-byte
            // public key here (it calls `ED25519.verify_sig(key.as_bytes(), ..)`).
            decoding: DecodingKey::from_ed_der(public),
            pair,
            jwk,
        }
    }
}

fn checkpoint_message(body: &[u8]) -> Vec<u8> {
    [CHECKPOINT_CONTEXT, body].concat()
}

/// Without this, a build where another crate also enables jsonwebtoken's `rust_crypto`
/// feature would panic on the first thumbprint or verify. An error only means a provider is
/// already set.
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// The public JWK of an Ed25519 key given as base64url `x` (RFC 8037 §2), for EdDSA
/// signatures only, without its `kid` (which is computed from it).
fn public_jwk(x: String) -> Jwk {
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::EdDSA),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
            key_type: OctetKeyPairType::OctetKeyPair,
            curve: EllipticCurve::Ed25519,
            x,
        }),
    }
}

/// `{"keys":[...]}`: each key's `kty`, `crv`, `x`, `kid`, `alg` and `use`, nothing private.
fn render_jwks<'a>(keys: impl Iterator<Item = &'a Key>) -> serde_json::Result<Bytes> {
    let set = JwkSet {
        keys: keys.map(|k| k.jwk.clone()).collect(),
    };
    serde_json::to_vec(&set).map(Bytes::from)
}

/// Finds every `PRIVATE KEY` block and returns (line of its BEGIN, DER bytes). Any other PEM
/// label is an error: an encrypted or non-PKCS#8 key silently skipped would be a key missing
/// from the JWKS.
///
/// Framing stays line-based here rather than `pem::parse_many`, for what operators get:
/// every error names the line of its block, a boundary counts only as a whole line (an
/// annotation that mentions `-----BEGIN PRIVATE KEY-----` mid-line is ignored), and a blank
/// line inside a block is tolerated (`pem` reads it as the end of RFC 1421 headers and then
/// refuses the block).
fn pem_private_key_blocks(
    pem: &str,
    origin: &str,
) -> Result<Vec<(usize, Vec<u8>)>, SigningKeyError> {
    let error = |reason: String| SigningKeyError::Pem {
        origin: origin.to_owned(),
        reason,
    };
    let mut blocks = Vec::new();
    let mut lines = pem.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    while let Some((begin, line)) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            continue;
        };
        if label != PRIVATE_KEY_LABEL {
            return Err(error(format!(
                "has a \"{label}\" block at line {begin}; only unencrypted PKCS#8 \"PRIVATE KEY\" blocks are accepted"
            )));
        }
        let mut body = String::new();
        let mut closed = false;
        for (_, line) in lines.by_ref() {
            if line == "-----END PRIVATE KEY-----" {
                closed = true;
                break;
            }
            if line.starts_with("-----") {
                break;
            }
            body.push_str(line);
        }
        if !closed {
            return Err(error(format!(
                "has a block at line {begin} without its \"-----END PRIVATE KEY-----\" line"
            )));
        }
        let der = STANDARD.decode(body.as_bytes()).map_err(|_| {
            error(format!(
                "has a block at line {begin} that is not valid base64"
            ))
        })?;
        blocks.push((begin, der));
    }
    Ok(blocks)
}

/// Creates `path` exclusively, readable by its owner only, and writes `contents` durably.
fn create_private_file(path: &Path, contents: &str) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // The umask can only narrow the creation mode, but set it explicitly so the result is
    // exactly 0600 whatever the environment.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "token signing key file is accessible to other users; it should be 0600"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Claims, TokenKind};
    use super::*;
    use jsonwebtoken::{Algorithm, Validation};

    /// RFC 7638 thumbprint of an Ed25519 public key given as base64url `x`, as `Key::new`
    /// computes the `kid`.
    fn jwk_thumbprint(x: &str) -> String {
        install_crypto_provider();
        public_jwk(x.to_owned()).thumbprint(ThumbprintHash::SHA256)
    }

    #[test]
    fn the_jwks_lists_every_key_with_its_thumbprint_and_verifies_tokens() {
        let (a, b) = two_keys();
        let keys = SigningKeys::from_pem(&format!("{a}{b}")).expect("parse");
        let b_first = SigningKeys::from_pem(&format!("{b}{a}")).expect("parse");
        let set: JwkSet = serde_json::from_slice(&keys.jwks_json()).expect("jwks json");
        assert_eq!(set.keys.len(), 2);

        let now = real_now();
        let c = claims(TokenKind::Session, now);
        for minter in [&keys, &b_first] {
            let token = minter.mint(&c).expect("mint");
            let jwk = set
                .find(minter.active_kid())
                .expect("kid listed in the JWKS");
            // The kid is the RFC 7638 thumbprint, as jsonwebtoken computes it independently.
            assert_eq!(jwk.thumbprint(ThumbprintHash::SHA256), minter.active_kid());
            let raw: serde_json::Value = serde_json::from_slice(&keys.jwks_json()).expect("json");
            let entry = raw["keys"]
                .as_array()
                .expect("keys array")
                .iter()
                .find(|k| k["kid"] == minter.active_kid())
                .expect("entry");
            assert_eq!(entry["alg"], "EdDSA");
            assert_eq!(entry["use"], "sig");
            assert_eq!(entry["kty"], "OKP");
            assert_eq!(entry["crv"], "Ed25519");

            let mut validation = Validation::new(Algorithm::EdDSA);
            validation.set_audience(&[TokenKind::Session.audience()]);
            validation.set_issuer(&[ISS]);
            let decoding = DecodingKey::from_jwk(jwk).expect("decoding key from JWKS");
            let data = jsonwebtoken::decode::<Claims>(&token, &decoding, &validation)
                .expect("token verifies against the published key");
            assert_eq!(data.claims, c);
        }
    }

    #[test]
    fn the_kid_matches_the_rfc_8037_thumbprint_example() {
        assert_eq!(
            jwk_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }
    #[test]
    fn pem_problems_are_reported_with_their_origin() {
        let (a, _) = two_keys();
        let dir = TempDir::new();
        let path = dir.path().join("keys.pem");
        let cases = [
            ("no keys here\n".to_owned(), "contains no \"PRIVATE KEY\" block"),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_owned(),
                "\"PUBLIC KEY\" block at line 1",
            ),
            (format!("{a}{a}"), "twice"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n".to_owned(),
                "without its \"-----END PRIVATE KEY-----\" line",
            ),
            (
                "# staged 2025-01-01\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
                    .to_owned(),
                "key at line 2 that is not an Ed25519",
            ),
        ];
        for (pem, expected) in cases {
            std::fs::write(&path, &pem).expect("write");
            let message = SigningKeys::load(&path).expect_err("must fail").to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
        let missing = SigningKeys::load(&dir.path().join("absent.pem")).expect_err("must fail");
        assert!(matches!(missing, SigningKeyError::Read { .. }));
        assert!(missing.to_string().contains("absent.pem"));
    }

    #[test]
    fn load_or_generate_creates_a_private_file_once_and_then_reuses_it() {
        let dir = TempDir::new();
        let path = dir.path().join("signing.pem");
        let first = SigningKeys::load_or_generate(&path).expect("generate");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = SigningKeys::load_or_generate(&path).expect("load");
        assert_eq!(first.active_kid(), second.active_kid());
        let loaded = SigningKeys::load(&path).expect("load");
        assert_eq!(first.active_kid(), loaded.active_kid());
        let token = first
            .mint(&claims(TokenKind::Visitor, real_now()))
            .expect("mint");
        assert!(second
            .verify(&token, TokenKind::Visitor, ISS, real_now())
            .is_ok());
    }

    #[test]
    fn debug_shows_only_kids_and_keys_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SigningKeys>();
        let keys = keys();
        let kids: Vec<String> = keys.key_kids();
        assert_eq!(
            format!("{keys:?}"),
            format!(
                "SigningKeys {{ active_kid: {:?}, other_kids: [{:?}] }}",
                kids[0], kids[1]
            )
        );
    }

    #[test]
    fn the_jwks_publishes_exactly_the_public_members_of_each_key() {
        let keys = keys();
        let raw: serde_json::Value = serde_json::from_slice(&keys.jwks_json()).expect("json");
        let entries = raw["keys"].as_array().expect("keys array");
        assert_eq!(entries.len(), 2);
        for (entry, kid) in entries.iter().zip(keys.key_kids()) {
            let mut names: Vec<&str> = entry
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            names.sort_unstable();
            assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"]);
            assert_eq!(entry["kid"], kid.as_str());
        }
        assert_eq!(entries[0]["x"], keys.active.x().as_str());
    }

    #[test]
    fn a_checkpoint_signature_verifies_only_for_its_body_and_its_kid() {
        let keys = keys();
        let (kid, signature) = keys.sign_checkpoint(b"at=x\n");
        assert_eq!(kid, keys.active_kid());
        let kid = kid.to_owned();
        assert_eq!(keys.verify_checkpoint(&kid, b"at=x\n", &signature), Ok(()));
        assert_eq!(
            keys.verify_checkpoint(&kid, b"at=y\n", &signature),
            Err(CheckpointSignatureError::Invalid)
        );
        let stranger =
            SigningKeys::from_pem(&SigningKeys::generate_pem().expect("pem")).expect("key");
        assert_eq!(
            stranger.verify_checkpoint(&kid, b"at=x\n", &signature),
            Err(CheckpointSignatureError::UnknownKid)
        );
        // Signed by the other listed key, under the active key's kid: refused.
        let (_, other_signature) = stranger.sign_checkpoint(b"at=x\n");
        assert_eq!(
            keys.verify_checkpoint(&kid, b"at=x\n", &other_signature),
            Err(CheckpointSignatureError::Invalid)
        );
    }

    #[test]
    fn a_checkpoint_signature_never_passes_as_a_jwt_nor_a_jwt_signature_as_a_checkpoint() {
        let keys = keys();
        let now = real_now();
        let token = keys.mint(&claims(TokenKind::Session, now)).expect("mint");
        let (signing_input, jwt_signature) = token.rsplit_once('.').expect("three parts");
        let jwt_signature = URL_SAFE_NO_PAD.decode(jwt_signature).expect("base64url");

        // A JWT's signature is not a checkpoint signature over the same bytes…
        assert_eq!(
            keys.verify_checkpoint(keys.active_kid(), signing_input.as_bytes(), &jwt_signature),
            Err(CheckpointSignatureError::Invalid)
        );
        // …and a checkpoint signed over a token's exact signing input is no token.
        let (_, checkpoint_signature) = keys.sign_checkpoint(signing_input.as_bytes());
        let forged = format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(&checkpoint_signature)
        );
        assert!(keys.verify(&forged, TokenKind::Session, ISS, now).is_err());
        assert!(keys.verify(&token, TokenKind::Session, ISS, now).is_ok());
        // The context line holds bytes no JWS signing input can: '/' and a newline.
        assert!(CHECKPOINT_CONTEXT
            .iter()
            .any(|b| !(b.is_ascii_alphanumeric() || b"-_.".contains(b))));
    }

    #[test]
    fn a_generated_key_is_a_standard_pem_block_that_parses_back() {
        let pem_text = SigningKeys::generate_pem().expect("generate");
        assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem_text.ends_with("\n-----END PRIVATE KEY-----\n"));
        assert!(!pem_text.contains('\r'));
        assert!(pem_text.lines().all(|l| l.len() <= 64));
        let block = pem::parse(&pem_text).expect("pem");
        assert_eq!(block.tag(), "PRIVATE KEY");
        assert!(Ed25519KeyPair::from_pkcs8(block.contents()).is_ok());
        assert!(SigningKeys::from_pem(&pem_text).is_ok());
    }

    #[test]
    fn annotations_indentation_blank_lines_and_crlf_in_the_key_file_are_tolerated() {
        let (a, b) = two_keys();
        let expected = SigningKeys::from_pem(&format!("{a}{b}")).expect("parse");
        let mut lines_a: Vec<String> = a.lines().map(|l| format!("  {l}  ")).collect();
        lines_a.insert(2, String::new());
        let messy = format!(
            "# paste -----BEGIN PRIVATE KEY----- blocks below\r\n{}\r\n\r\nnext key:\r\n{}",
            lines_a.join("\r\n"),
            b.replace('\n', "\r\n")
        );
        let parsed = SigningKeys::from_pem(&messy).expect("parse");
        assert_eq!(parsed.key_kids(), expected.key_kids());
    }
}
