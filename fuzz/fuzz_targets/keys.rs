//! Key parsers: `pk_live_…`, `sk_live_…` and `ck_…`.
//!
//! Input: byte 0 picks the mode. Mode 0 parses the rest as text. Mode 1 generates a key
//! from a seed (bytes 1–8), checks it parses, then changes one character (position and
//! replacement from the next bytes) and checks the checksum refuses the typo.
//! Properties: a key that parses re-serialises to itself (text, `Display`, serde);
//! `has_valid_checksum` agrees with the parsers; a secret key's `Debug`/`Display` never
//! show it; any one-character change to a valid key is refused.
#![no_main]

use domain::keys::has_valid_checksum;
use domain::{ClientKeyId, PublicKey, SecretKey};
use libfuzzer_sys::fuzz_target;
use rand::rngs::StdRng;
use rand::SeedableRng;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => {
            if let Ok(text) = std::str::from_utf8(rest) {
                parse_all(text);
            }
        }
        Some((_, rest)) => typo(rest),
        None => {}
    }
});

fn parse_all(text: &str) {
    let public = PublicKey::parse(text);
    let secret = SecretKey::parse(text);
    if let Ok(pk) = &public {
        assert_eq!(pk.as_str(), text);
        assert_eq!(pk.to_string(), text);
        assert_eq!(pk.as_str().len(), PublicKey::LEN);
        let json = serde_json::to_string(pk).expect("serialises");
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(
            &serde_json::from_str::<PublicKey>(&json).expect("reads back"),
            pk
        );
    }
    if let Ok(sk) = &secret {
        assert_eq!(sk.expose_secret(), text);
        assert_eq!(
            SecretKey::parse(sk.expose_secret()).expect("again").hash(),
            sk.hash()
        );
        assert!(!format!("{sk}").contains(text), "Display shows the secret");
        assert!(!format!("{sk:?}").contains(text), "Debug shows the secret");
        assert!(text.ends_with(&sk.last_four()));
    }
    assert_eq!(
        has_valid_checksum(text),
        public.is_ok() || secret.is_ok(),
        "checksum check and parsers disagree on {text:?}"
    );
    if let Ok(id) = ClientKeyId::parse(text) {
        assert_eq!(id.as_str(), text);
        let json = serde_json::to_string(&id).expect("serialises");
        assert_eq!(
            serde_json::from_str::<ClientKeyId>(&json).expect("reads back"),
            id
        );
    }
    // serde goes through the same check as `parse`, so no invalid key slips in via JSON.
    let quoted = serde_json::to_string(text).expect("a string serialises");
    assert_eq!(
        serde_json::from_str::<PublicKey>(&quoted).is_ok(),
        public.is_ok()
    );
    assert_eq!(
        serde_json::from_str::<ClientKeyId>(&quoted).is_ok(),
        ClientKeyId::parse(text).is_ok()
    );
}

fn typo(rest: &[u8]) {
    let mut seed = [0u8; 8];
    let n = rest.len().min(8);
    seed[..n].copy_from_slice(&rest[..n]);
    let mut rng = StdRng::seed_from_u64(u64::from_le_bytes(seed));
    let (pos, replacement) = (
        rest.get(8).copied().unwrap_or(0) as usize,
        rest.get(9).copied().unwrap_or(0),
    );
    let public = PublicKey::generate(&mut rng).as_str().to_owned();
    let secret = SecretKey::generate(&mut rng).expose_secret().to_owned();
    for key in [public, secret] {
        assert!(has_valid_checksum(&key), "generated key {key} refused");
        parse_all(&key);
        // Change one character after the prefix to another base62 one.
        let prefix = 8;
        let i = prefix + pos % (key.len() - prefix);
        let mut bytes = key.clone().into_bytes();
        let new = BASE62[replacement as usize % BASE62.len()];
        if bytes[i] == new {
            continue;
        }
        bytes[i] = new;
        let changed = String::from_utf8(bytes).expect("ASCII");
        assert!(
            !has_valid_checksum(&changed),
            "typo {changed} of {key} accepted"
        );
        assert!(PublicKey::parse(&changed).is_err() && SecretKey::parse(&changed).is_err());
    }
}
