//! Helpers shared by the unit tests of `jwt.rs` and `keys.rs`:
//! sample claims, fresh keys, hand-signed tokens and a temporary directory.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::keys::Key;
use super::{Claims, SigningKeys, TokenKind};

pub(super) const ISS: &str = "https://auth.example.test";

pub(super) fn real_now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(super) fn claims(kind: TokenKind, now: i64) -> Claims {
    Claims {
        iss: ISS.to_owned(),
        aud: kind.audience().to_owned(),
        sub: "visitor-123".to_owned(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: uuid::Uuid::new_v4().to_string(),
        ck: "ck_live_abc".to_owned(),
        kind,
        ver: 7,
        origin: Some("https://shop.example".to_owned()),
        guest: Some(true),
        name: Some("Ada \"Lovelace\" ✓".to_owned()),
        email: Some("ada@example.com".to_owned()),
        fam: None,
        fst: None,
        gen: None,
    }
}

pub(super) fn two_keys() -> (String, String) {
    (
        SigningKeys::generate_pem().expect("generate"),
        SigningKeys::generate_pem().expect("generate"),
    )
}

pub(super) fn keys() -> SigningKeys {
    let (a, b) = two_keys();
    SigningKeys::from_pem(&format!("{a}{b}")).expect("parse")
}

/// Builds a token from raw header and claims JSON, properly signed by the active key.
pub(super) fn sign_raw(keys: &SigningKeys, header: &str, claims: &str) -> String {
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let sig = keys.active.pair.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
    token
}

pub(super) fn header_json(keys: &SigningKeys, kind: TokenKind, extra: &str) -> String {
    format!(
        r#"{{"alg":"EdDSA","typ":"{}","kid":"{}"{extra}}}"#,
        kind.typ(),
        keys.active_kid()
    )
}

/// A fresh directory under the system temp dir, removed on drop (keeps the crate free of
/// a `tempfile` dev-dependency).
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("widget-auth-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("create temp dir");
        Self(dir)
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn claims_json(c: &Claims) -> String {
    serde_json::to_string(c).expect("serialize")
}

impl SigningKeys {
    pub(super) fn key_kids(&self) -> Vec<String> {
        std::iter::once(&self.active)
            .chain(&self.others)
            .map(|k| k.kid.clone())
            .collect()
    }
}

impl Key {
    /// The public key as the JWKS's base64url `x`.
    pub(super) fn x(&self) -> String {
        use aws_lc_rs::signature::KeyPair as _;
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }
}
