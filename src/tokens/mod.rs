//! Minting, verifying and publishing the widget's JWTs (API.md, "Tokens").
//!
//! Tokens are compact JWS signed with Ed25519 (`alg: EdDSA`). The realtime service verifies
//! them offline against the JWKS this module renders, so everything that decides whether a
//! token is accepted lives here: the per-kind `aud` and header `typ` (RFC 8725 §3.11), the
//! pinned algorithm, the refusal of header parameters that would let a token pick its own key
//! (`jku`, `x5u`, `jwk`, `x5c`) or demand extensions we do not implement (`crit`), and `kid`
//! mapping only to keys we hold.
//!
//! Minting is on the hot path, so it bypasses `jsonwebtoken::encode` (which re-parses the
//! PKCS#8 key on every call): each key is parsed once into an `Ed25519KeyPair`, the header
//! segment of each kind is rendered once, and a token is assembled in a single `String`.
//! Verification uses `jsonwebtoken` for the signature and registered claims, after our own
//! header checks.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};

/// Clock skew tolerated between the minting node and whoever verifies, in seconds.
pub const LEEWAY_SECS: i64 = 5;

/// Longest token `verify` will look at. Ours are well under 1 KiB; the cap keeps an
/// anonymous caller from making us base64-decode and parse megabytes.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Length of a base64url-encoded Ed25519 signature (64 bytes, no padding).
const SIGNATURE_B64_LEN: usize = 86;

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

/// One Ed25519 key, parsed once.
struct Key {
    kid: String,
    pair: Ed25519KeyPair,
    /// For `jsonwebtoken::decode`: the raw 32-byte public key.
    decoding: DecodingKey,
}

/// The base64url header segment of the active key, one per kind, rendered at construction.
struct HeaderSegments {
    visitor: String,
    session: String,
    refresh: String,
}

impl HeaderSegments {
    fn new(kid: &str) -> Self {
        let render = |kind: TokenKind| {
            // `typ` is one of our constants and `kid` is base64url, so neither needs JSON escaping.
            let json = format!(r#"{{"alg":"EdDSA","typ":"{}","kid":"{kid}"}}"#, kind.typ());
            URL_SAFE_NO_PAD.encode(json)
        };
        Self {
            visitor: render(TokenKind::Visitor),
            session: render(TokenKind::Session),
            refresh: render(TokenKind::Refresh),
        }
    }

    fn get(&self, kind: TokenKind) -> &str {
        match kind {
            TokenKind::Visitor => &self.visitor,
            TokenKind::Session => &self.session,
            TokenKind::Refresh => &self.refresh,
        }
    }
}

/// Ed25519 signing keys. The first key signs; every key is published in the JWKS and accepted
/// when verifying (operators stage the next key by appending it, and keep the previous one
/// listed until its tokens expired).
pub struct SigningKeys {
    active: Key,
    others: Vec<Key>,
    headers: HeaderSegments,
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
    /// writes), for operators staging the next key.
    pub fn generate_pem() -> Result<String, SigningKeyError> {
        let der = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
            .map_err(|_| SigningKeyError::Generate)?;
        let b64 = STANDARD.encode(der.as_ref());
        let mut pem = String::with_capacity(b64.len() + 64);
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            // Base64 output is ASCII, so every chunk is valid UTF-8.
            pem.push_str(std::str::from_utf8(line).map_err(|_| SigningKeyError::Generate)?);
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// The kid new tokens are signed with.
    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// Signs `claims` with the active key. Refuses claims whose `aud` is not their kind's,
    /// since such a token could never be verified.
    pub fn mint(&self, claims: &Claims) -> Result<String, TokenError> {
        if claims.aud != claims.kind.audience() {
            return Err(TokenError::Invalid(
                "token audience does not match its kind".to_owned(),
            ));
        }
        let header = self.headers.get(claims.kind);
        // Serialize once, then base64 in one pass: feeding serde_json's many small writes
        // through a streaming base64 encoder cost more than the extra buffer.
        let json = serde_json::to_vec(claims).map_err(|e| {
            tracing::error!(error = %e, "could not serialize token claims");
            TokenError::Invalid("token could not be encoded".to_owned())
        })?;
        let mut token = String::with_capacity(
            header.len() + 2 + (json.len() * 4).div_ceil(3) + SIGNATURE_B64_LEN,
        );
        token.push_str(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        let signature = self.active.pair.try_sign(token.as_bytes()).map_err(|_| {
            tracing::error!("Ed25519 signing failed");
            TokenError::Invalid("token could not be signed".to_owned())
        })?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// Verifies a token of the given kind from `issuer` at `now` (unix seconds, passed in so
    /// callers and tests control the clock) and returns its claims.
    pub fn verify(
        &self,
        token: &str,
        kind: TokenKind,
        issuer: &str,
        now: i64,
    ) -> Result<Claims, TokenError> {
        let result = self.verify_inner(token, kind, issuer, Some(now));
        if let Err(e) = &result {
            tracing::debug!(kind = ?kind, error = %e, "token refused");
        }
        result
    }

    /// Every check of [`SigningKeys::verify`] except `exp` and `nbf`: for auditors asking
    /// what a token we minted long ago was minted under. Never for accepting a token.
    pub fn verify_ignoring_lifetime(
        &self,
        token: &str,
        kind: TokenKind,
        issuer: &str,
    ) -> Result<Claims, TokenError> {
        self.verify_inner(token, kind, issuer, None)
    }

    /// `{"keys":[...]}` for `GET /.well-known/jwks.json`, rendered once at construction.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks.clone()
    }

    fn verify_inner(
        &self,
        token: &str,
        kind: TokenKind,
        issuer: &str,
        now: Option<i64>,
    ) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let mut segments = token.split('.');
        let (Some(header_b64), Some(_), Some(_), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(TokenError::Malformed);
        };

        // Our own header parse rather than `jsonwebtoken::decode_header`: its `Header` reads
        // `"crit": null` as absent and fails on a `jwk` it cannot parse, whereas any presence
        // of these names must be refused as such.
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| TokenError::Malformed)?;
        let header: RawHeader<'_> =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if header.jku.0 || header.x5u.0 || header.jwk.0 || header.x5c.0 || header.crit.0 {
            return Err(TokenError::ForbiddenHeader);
        }
        if header.alg.as_deref() != Some("EdDSA") {
            return Err(TokenError::Invalid(
                "token algorithm not accepted".to_owned(),
            ));
        }
        if header.typ.as_deref() != Some(kind.typ()) {
            return Err(TokenError::WrongKind);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.key(kid))
            .ok_or(TokenError::UnknownKey)?;

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[kind.audience()]);
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = now.is_some();
        validation.validate_nbf = now.is_some();
        validation.leeway = LEEWAY_SECS.unsigned_abs();
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| map_jwt_error(e.into_kind()))?
            .claims;

        if claims.kind != kind {
            return Err(TokenError::WrongKind);
        }
        // jsonwebtoken checked exp/nbf against the system clock; `now` is the authority.
        let Some(now) = now else {
            return Ok(claims);
        };
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::Expired);
        }
        if now < claims.nbf.saturating_sub(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    fn key(&self, kid: &str) -> Option<&Key> {
        std::iter::once(&self.active)
            .chain(&self.others)
            .find(|k| k.kid == kid)
    }

    fn from_file_contents(path: &Path, pem: &str) -> Result<Self, SigningKeyError> {
        Self::parse(pem, &format!("the signing key file {}", path.display()))
    }

    fn parse(pem: &str, origin: &str) -> Result<Self, SigningKeyError> {
        // Without this, a build where another crate also enables jsonwebtoken's `rust_crypto`
        // feature would panic on first verify. An error only means a provider is already set.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();

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
        let jwks = render_jwks(std::iter::once(&active).chain(&others));
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
        Self {
            kid: jwk_thumbprint(&URL_SAFE_NO_PAD.encode(public)),
            // Despite the name, jsonwebtoken's aws-lc EdDSA verifier takes the raw 32-byte
            // public key here (it calls `ED25519.verify_sig(key.as_bytes(), ..)`).
            decoding: DecodingKey::from_ed_der(public),
            pair,
        }
    }

    fn x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key given as base64url `x` (RFC 8037 §2).
fn jwk_thumbprint(x: &str) -> String {
    // Members in lexicographic order, no whitespace; `x` is base64url so needs no escaping.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn render_jwks<'a>(keys: impl Iterator<Item = &'a Key>) -> Bytes {
    let mut json = String::from(r#"{"keys":["#);
    for (i, key) in keys.enumerate() {
        if i > 0 {
            json.push(',');
        }
        // `x` and `kid` are base64url, so none of these values needs JSON escaping.
        json.push_str(&format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{}","kid":"{}","alg":"EdDSA","use":"sig"}}"#,
            key.x(),
            key.kid
        ));
    }
    json.push_str("]}");
    Bytes::from(json)
}

/// Finds every `PRIVATE KEY` block and returns (line of its BEGIN, DER bytes). Any other PEM
/// label is an error: an encrypted or non-PKCS#8 key silently skipped would be a key missing
/// from the JWKS.
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
        if label != "PRIVATE KEY" {
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

fn map_jwt_error(kind: ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongKind,
        ErrorKind::InvalidIssuer => TokenError::Invalid("token issuer not accepted".to_owned()),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            TokenError::Invalid("token algorithm not accepted".to_owned())
        }
        // The names come from our fixed list of required claims or from jsonwebtoken's own
        // list of registered ones, never from the token.
        ErrorKind::MissingRequiredClaim(claim) => {
            TokenError::Invalid(format!("token lacks the {} claim", claim_name(&claim)))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            TokenError::Invalid(format!("token {} claim malformed", claim_name(&claim)))
        }
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => TokenError::Malformed,
        other => {
            // Key or provider trouble is our fault, not the client's.
            tracing::error!(error = ?other, "token verification failed unexpectedly");
            TokenError::Invalid("token could not be verified".to_owned())
        }
    }
}

/// Passes through only registered claim names, as a belt to the braces above.
fn claim_name(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "required",
    }
}

/// The header members verification looks at. Unknown members are ignored (RFC 7515 §4),
/// except those that would let the token choose its own key or demand extensions.
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow, default)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    typ: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kid: Option<Cow<'a, str>>,
    #[serde(default)]
    jku: Present,
    #[serde(default)]
    x5u: Present,
    #[serde(default)]
    jwk: Present,
    #[serde(default)]
    x5c: Present,
    #[serde(default)]
    crit: Present,
}

/// True when the member appears at all, whatever its value (even `null`).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Present(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::{JwkSet, ThumbprintHash};
    use jsonwebtoken::{EncodingKey, Header};

    const ISS: &str = "https://auth.example.test";

    fn real_now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn claims(kind: TokenKind, now: i64) -> Claims {
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
        }
    }

    fn two_keys() -> (String, String) {
        (
            SigningKeys::generate_pem().expect("generate"),
            SigningKeys::generate_pem().expect("generate"),
        )
    }

    fn keys() -> SigningKeys {
        let (a, b) = two_keys();
        SigningKeys::from_pem(&format!("{a}{b}")).expect("parse")
    }

    /// Builds a token from raw header and claims JSON, properly signed by the active key.
    fn sign_raw(keys: &SigningKeys, header: &str, claims: &str) -> String {
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

    fn header_json(keys: &SigningKeys, kind: TokenKind, extra: &str) -> String {
        format!(
            r#"{{"alg":"EdDSA","typ":"{}","kid":"{}"{extra}}}"#,
            kind.typ(),
            keys.active_kid()
        )
    }

    /// A fresh directory under the system temp dir, removed on drop (keeps the crate free of
    /// a `tempfile` dev-dependency).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("widget-auth-tokens-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir(&dir).expect("create temp dir");
            Self(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn claims_json(c: &Claims) -> String {
        serde_json::to_string(c).expect("serialize")
    }

    #[test]
    fn a_minted_token_verifies_to_the_same_claims() {
        let keys = keys();
        let now = real_now();
        for kind in [TokenKind::Visitor, TokenKind::Session, TokenKind::Refresh] {
            let mut c = claims(kind, now);
            c.fam = Some("fam-1".to_owned());
            let token = keys.mint(&c).expect("mint");
            assert_eq!(keys.verify(&token, kind, ISS, now), Ok(c));
        }
    }

    #[test]
    fn an_expired_token_verifies_for_auditors_but_a_forged_one_does_not() {
        let keys = keys();
        let long_ago = real_now() - 86_400;
        let c = claims(TokenKind::Session, long_ago);
        let token = keys.mint(&c).expect("mint");
        assert_eq!(
            keys.verify(&token, TokenKind::Session, ISS, real_now()),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify_ignoring_lifetime(&token, TokenKind::Session, ISS),
            Ok(c.clone())
        );

        let other =
            SigningKeys::from_pem(&SigningKeys::generate_pem().expect("pem")).expect("parse");
        assert_eq!(
            other.verify_ignoring_lifetime(&token, TokenKind::Session, ISS),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            keys.verify_ignoring_lifetime(&token, TokenKind::Session, "someone-else"),
            Err(TokenError::Invalid("token issuer not accepted".to_owned()))
        );
        assert_eq!(
            keys.verify_ignoring_lifetime(&token, TokenKind::Visitor, ISS),
            Err(TokenError::WrongKind)
        );
        let mut tampered = c;
        tampered.ver = 1;
        let forged = format!(
            "{}.{}.{}",
            token.split('.').next().expect("header"),
            URL_SAFE_NO_PAD.encode(claims_json(&tampered)),
            token.split('.').nth(2).expect("signature")
        );
        assert_eq!(
            keys.verify_ignoring_lifetime(&forged, TokenKind::Session, ISS),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_minted_token_has_the_contract_header_and_omits_absent_claims() {
        let keys = keys();
        let mut c = claims(TokenKind::Visitor, real_now());
        c.name = None;
        c.email = None;
        c.guest = None;
        let token = keys.mint(&c).expect("mint");
        let mut parts = token.split('.');
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(parts.next().expect("header"))
                .expect("b64"),
        )
        .expect("json");
        assert_eq!(
            header,
            serde_json::json!({"alg":"EdDSA","typ":"visitor+jwt","kid":keys.active_kid()})
        );
        let payload: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(parts.next().expect("payload"))
                .expect("b64"),
        )
        .expect("json");
        let mut names: Vec<&str> = payload.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["aud", "ck", "exp", "iat", "iss", "jti", "kind", "nbf", "origin", "sub", "ver"]
        );
    }

    #[test]
    fn minting_refuses_claims_whose_audience_is_not_their_kinds() {
        let keys = keys();
        let mut c = claims(TokenKind::Session, real_now());
        c.aud = TokenKind::Refresh.audience().to_owned();
        assert!(matches!(keys.mint(&c), Err(TokenError::Invalid(_))));
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
    fn a_tampered_payload_fails_the_signature_check() {
        let keys = keys();
        let now = real_now();
        let token = keys.mint(&claims(TokenKind::Session, now)).expect("mint");
        let mut forged = claims(TokenKind::Session, now);
        forged.sub = "someone-else".to_owned();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims_json(&forged)),
            parts[2]
        );
        assert_eq!(
            keys.verify(&tampered, TokenKind::Session, ISS, now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_token_signed_by_another_key_under_our_kid_fails_the_signature_check() {
        let keys = keys();
        let impostor =
            SigningKeys::from_pem(&SigningKeys::generate_pem().expect("gen")).expect("parse");
        let now = real_now();
        let c = claims(TokenKind::Session, now);
        let token = sign_raw(
            &impostor,
            &header_json(&keys, TokenKind::Session, ""),
            &claims_json(&c),
        );
        assert_eq!(
            keys.verify(&token, TokenKind::Session, ISS, now),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn an_unsigned_alg_none_token_is_refused() {
        let keys = keys();
        let now = real_now();
        let header = format!(
            r#"{{"alg":"none","typ":"session+jwt","kid":"{}"}}"#,
            keys.active_kid()
        );
        let token = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims_json(&claims(TokenKind::Session, now)))
        );
        assert_eq!(
            keys.verify(&token, TokenKind::Session, ISS, now),
            Err(TokenError::Invalid(
                "token algorithm not accepted".to_owned()
            ))
        );
    }

    #[test]
    fn an_hs256_token_keyed_with_our_public_key_is_refused() {
        let keys = keys();
        let now = real_now();
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TokenKind::Session.typ().to_owned());
        header.kid = Some(keys.active_kid().to_owned());
        for secret in [
            keys.active.pair.public_key().as_ref().to_vec(),
            keys.active.x().into_bytes(),
        ] {
            let token = jsonwebtoken::encode(
                &header,
                &claims(TokenKind::Session, now),
                &EncodingKey::from_secret(&secret),
            )
            .expect("encode");
            assert_eq!(
                keys.verify(&token, TokenKind::Session, ISS, now),
                Err(TokenError::Invalid(
                    "token algorithm not accepted".to_owned()
                ))
            );
        }
    }

    #[test]
    fn a_missing_or_unknown_kid_is_refused() {
        let keys = keys();
        let stranger =
            SigningKeys::from_pem(&SigningKeys::generate_pem().expect("gen")).expect("parse");
        let now = real_now();
        let c = claims(TokenKind::Session, now);
        let token = stranger.mint(&c).expect("mint");
        assert_eq!(
            keys.verify(&token, TokenKind::Session, ISS, now),
            Err(TokenError::UnknownKey)
        );
        let no_kid = sign_raw(
            &keys,
            r#"{"alg":"EdDSA","typ":"session+jwt"}"#,
            &claims_json(&c),
        );
        assert_eq!(
            keys.verify(&no_kid, TokenKind::Session, ISS, now),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn headers_that_choose_a_key_or_demand_extensions_are_refused() {
        let keys = keys();
        let now = real_now();
        let c = claims_json(&claims(TokenKind::Session, now));
        // The same hand-built token without the extra member is accepted, so the refusals
        // below are due to the member alone.
        let plain = sign_raw(&keys, &header_json(&keys, TokenKind::Session, ""), &c);
        assert!(keys.verify(&plain, TokenKind::Session, ISS, now).is_ok());
        // (jsonwebtoken's `Header` only admits string-valued unknown members.)
        let unknown = sign_raw(
            &keys,
            &header_json(&keys, TokenKind::Session, r#","foo":"bar""#),
            &c,
        );
        assert!(keys.verify(&unknown, TokenKind::Session, ISS, now).is_ok());

        let x = keys.active.x();
        for extra in [
            r#","jku":"https://evil.example/jwks.json""#.to_owned(),
            r#","x5u":"https://evil.example/cert.pem""#.to_owned(),
            format!(r#","jwk":{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}"#),
            r#","jwk":"not even an object""#.to_owned(),
            r#","x5c":["MIIB"]"#.to_owned(),
            r#","crit":["exp"]"#.to_owned(),
            r#","crit":null"#.to_owned(),
        ] {
            let token = sign_raw(&keys, &header_json(&keys, TokenKind::Session, &extra), &c);
            assert_eq!(
                keys.verify(&token, TokenKind::Session, ISS, now),
                Err(TokenError::ForbiddenHeader),
                "header member {extra}"
            );
        }
    }

    #[test]
    fn a_token_of_one_kind_is_refused_as_another() {
        let keys = keys();
        let now = real_now();
        let session = claims(TokenKind::Session, now);
        // typ and aud both differ.
        let token = keys.mint(&session).expect("mint");
        assert_eq!(
            keys.verify(&token, TokenKind::Refresh, ISS, now),
            Err(TokenError::WrongKind)
        );
        // Right typ, session aud: the aud check alone refuses it.
        let token = sign_raw(
            &keys,
            &header_json(&keys, TokenKind::Refresh, ""),
            &claims_json(&session),
        );
        assert_eq!(
            keys.verify(&token, TokenKind::Refresh, ISS, now),
            Err(TokenError::WrongKind)
        );
        // Right typ and aud, session kind: the kind claim alone refuses it.
        let mut mixed = session.clone();
        mixed.aud = TokenKind::Refresh.audience().to_owned();
        let token = sign_raw(
            &keys,
            &header_json(&keys, TokenKind::Refresh, ""),
            &claims_json(&mixed),
        );
        assert_eq!(
            keys.verify(&token, TokenKind::Refresh, ISS, now),
            Err(TokenError::WrongKind)
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys();
        let now = real_now();
        let mut c = claims(TokenKind::Visitor, now - 1000);
        c.exp = now - 100;
        let token = keys.mint(&c).expect("mint");
        assert_eq!(
            keys.verify(&token, TokenKind::Visitor, ISS, now),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn expiry_is_judged_against_the_given_now_with_five_seconds_of_leeway() {
        let keys = keys();
        let now = real_now();
        let mut c = claims(TokenKind::Visitor, now);
        c.exp = now + 60;
        let token = keys.mint(&c).expect("mint");
        assert_eq!(
            keys.verify(&token, TokenKind::Visitor, ISS, now + 65),
            Ok(c)
        );
        assert_eq!(
            keys.verify(&token, TokenKind::Visitor, ISS, now + 66),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_before_its_nbf_is_refused() {
        let keys = keys();
        let now = real_now();
        let mut c = claims(TokenKind::Visitor, now);
        c.nbf = now + 600;
        c.exp = now + 1200;
        let token = keys.mint(&c).expect("mint");
        assert_eq!(
            keys.verify(&token, TokenKind::Visitor, ISS, now),
            Err(TokenError::NotYetValid)
        );
        // Judged against the given now too, with the same leeway.
        let c = claims(TokenKind::Visitor, now);
        let token = keys.mint(&c).expect("mint");
        assert_eq!(keys.verify(&token, TokenKind::Visitor, ISS, now - 5), Ok(c));
        assert_eq!(
            keys.verify(&token, TokenKind::Visitor, ISS, now - 6),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn a_token_missing_a_required_claim_is_refused() {
        let keys = keys();
        let now = real_now();
        let full = serde_json::to_value(claims(TokenKind::Session, now)).expect("value");
        for claim in ["sub", "exp", "nbf", "iss", "aud"] {
            let mut c = full.clone();
            c.as_object_mut().expect("object").remove(claim);
            let token = sign_raw(
                &keys,
                &header_json(&keys, TokenKind::Session, ""),
                &c.to_string(),
            );
            assert!(
                keys.verify(&token, TokenKind::Session, ISS, now).is_err(),
                "token without {claim} was accepted"
            );
        }
    }

    #[test]
    fn a_token_from_another_issuer_is_refused() {
        let keys = keys();
        let now = real_now();
        let token = keys.mint(&claims(TokenKind::Session, now)).expect("mint");
        assert_eq!(
            keys.verify(
                &token,
                TokenKind::Session,
                "https://other.example.test",
                now
            ),
            Err(TokenError::Invalid("token issuer not accepted".to_owned()))
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let keys = keys();
        let now = real_now();
        for token in ["", "a", "a.b", "a.b.c.d", "!!!.b.c", "e30.e30.e30"] {
            assert!(keys.verify(token, TokenKind::Session, ISS, now).is_err());
        }
        assert_eq!(
            keys.verify("a.b.c.d", TokenKind::Session, ISS, now),
            Err(TokenError::Malformed)
        );
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            keys.verify(&huge, TokenKind::Session, ISS, now),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn a_token_signed_by_a_listed_non_active_key_verifies() {
        let (current, next) = two_keys();
        // A node that already signs with `next` while this one still signs with `current`.
        let ahead = SigningKeys::from_pem(&format!("{next}{current}")).expect("parse");
        let keys = SigningKeys::from_pem(&format!("{current}{next}")).expect("parse");
        assert_ne!(ahead.active_kid(), keys.active_kid());
        let now = real_now();
        let c = claims(TokenKind::Refresh, now);
        let token = ahead.mint(&c).expect("mint");
        assert_eq!(keys.verify(&token, TokenKind::Refresh, ISS, now), Ok(c));
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
    fn error_messages_never_echo_the_token() {
        let keys = keys();
        let now = real_now();
        let mut c = claims(TokenKind::Session, now);
        c.exp = now - 100;
        let token = keys.mint(&c).expect("mint");
        let err = keys
            .verify(&token, TokenKind::Session, ISS, now)
            .expect_err("expired");
        assert_eq!(err.to_string(), "token expired");
        for part in token.split('.') {
            assert!(!err.to_string().contains(part));
        }
    }

    impl SigningKeys {
        fn key_kids(&self) -> Vec<String> {
            std::iter::once(&self.active)
                .chain(&self.others)
                .map(|k| k.kid.clone())
                .collect()
        }
    }

    /// `cargo test --release -- --ignored --nocapture timing`
    #[test]
    #[ignore]
    #[allow(clippy::print_stdout)]
    fn timing_of_mint_and_verify() {
        const N: u32 = 20_000;
        let keys = keys();
        let now = real_now();
        let c = claims(TokenKind::Session, now);
        let start = std::time::Instant::now();
        let mut last = String::new();
        for _ in 0..N {
            last = std::hint::black_box(keys.mint(std::hint::black_box(&c)).expect("mint"));
        }
        let mint = start.elapsed() / N;
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(
                keys.verify(std::hint::black_box(&last), TokenKind::Session, ISS, now)
                    .expect("verify"),
            );
        }
        let verify = start.elapsed() / N;

        // For comparison: jsonwebtoken::encode with the PKCS#8 key.
        let pem = SigningKeys::generate_pem().expect("gen");
        let enc = EncodingKey::from_ed_pem(pem.as_bytes()).expect("enc");
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("session+jwt".to_owned());
        header.kid = Some("x".to_owned());
        let start = std::time::Instant::now();
        for _ in 0..N {
            std::hint::black_box(jsonwebtoken::encode(&header, &c, &enc).expect("encode"));
        }
        let encode = start.elapsed() / N;
        println!(
            "mint {mint:?}/token, verify {verify:?}/token, jsonwebtoken::encode {encode:?}/token ({} bytes)",
            last.len()
        );
    }
}
