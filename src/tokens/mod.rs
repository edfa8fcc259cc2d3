//! The widget's JWTs (API.md, "Tokens"): what a token is, and why one is refused.
//!
//! Tokens are compact JWS signed with Ed25519 (`alg: EdDSA`). The realtime service verifies
//! them offline against the JWKS we publish, so everything that decides whether a token is
//! accepted lives in this folder:
//! - this file: the shared vocabulary — the token kinds, the claims, the errors callers
//!   match on, and the clock leeway;
//! - `jwt.rs`: minting (the hot path) and verifying — header pre-check, claims
//!   validation, the `jsonwebtoken` use;
//! - `keys.rs`: the signing keys themselves — PEM parsing and writing, the key
//!   file (created 0600), the `kid` thumbprint and the JWKS document.
//!
//! Callers only ever name `crate::tokens::{SigningKeys, Claims, TokenKind, ...}`; the split
//! into files is internal.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

mod jwt;
mod keys;
#[cfg(test)]
mod test_support;

pub use keys::SigningKeys;

/// What every checkpoint signature is over before the checkpoint's own fields
/// (`crate::checkpoint`): a line no JWS signing input (base64url and dots) can begin with,
/// so a checkpoint signature never verifies as a token, nor a token's as a checkpoint.
pub const CHECKPOINT_CONTEXT: &[u8] = b"widget-auth-checkpoint/1\n";

/// Why a checkpoint signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointSignatureError {
    /// The `kid` is not among our keys (any more): the JWKS no longer lists it.
    #[error("the checkpoint's signing key is not in the JWKS")]
    UnknownKid,
    #[error("the checkpoint's signature does not verify")]
    Invalid,
}

/// Clock skew tolerated between the minting node and whoever verifies, in seconds.
pub const LEEWAY_SECS: i64 = 5;

/// Which of the three token kinds a token is. Each kind has its own `aud` and header `typ`
/// so that one kind can never be accepted where another is expected (RFC 8725 §3.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Visitor,
    Session,
    Refresh,
}

impl TokenKind {
    /// The `aud` claim every token of this kind carries and verification requires.
    pub fn audience(self) -> &'static str {
        match self {
            TokenKind::Visitor => "widget-auth/visitor",
            TokenKind::Session => "widget-auth/session",
            TokenKind::Refresh => "widget-auth/refresh",
        }
    }

    /// The JWS header `typ` of this kind, compared exactly when verifying.
    pub fn typ(self) -> &'static str {
        match self {
            TokenKind::Visitor => "visitor+jwt",
            TokenKind::Session => "session+jwt",
            TokenKind::Refresh => "refresh+jwt",
        }
    }
}

/// The claims of every widget token; optional ones are omitted from the JSON when `None`,
/// so a token carries only what its kind needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// Must be `kind.audience()`; `mint` refuses anything else.
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// Stable client key id.
    pub ck: String,
    pub kind: TokenKind,
    /// The client key's version at mint, so an auditor can replay the policy then in force.
    pub ver: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub guest: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub email: Option<String>,
    /// Refresh-token family id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fam: Option<String>,
    /// Refresh tokens: when the family's first token was minted (unix seconds), so every
    /// node caps a successor's `exp` at the family's absolute end alike.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fst: Option<i64>,
    /// Refresh tokens: the generation in the family (0 for the first token, +1 per
    /// rotation), so a replay names which one came back.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gen: Option<i64>,
}

/// Why a token was not minted or not accepted. Every message is a short sentence that is
/// safe to show to the client that sent the token: none ever contains token text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token malformed")]
    Malformed,
    #[error("token signature invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token not valid for this use")]
    WrongKind,
    #[error("token signing key unknown")]
    UnknownKey,
    #[error("token header not allowed")]
    ForbiddenHeader,
    /// Any other refusal; the text is always a fixed sentence written in this module.
    #[error("{0}")]
    Invalid(String),
}

/// Why the signing keys could not be loaded or created. Messages name the file (or say the
/// PEM came from elsewhere) so an operator can fix it from the startup error alone.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("could not read the signing key file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not create the signing key file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The PEM text is unusable; `origin` names the file, `reason` says what is wrong.
    #[error("{origin} {reason}")]
    Pem { origin: String, reason: String },
    #[error("{origin} has a key at line {line} that is not an Ed25519 PKCS#8 private key")]
    NotEd25519 { origin: String, line: usize },
    #[error("could not generate an Ed25519 signing key")]
    Generate,
}
