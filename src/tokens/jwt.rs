//! Minting and verifying the widget's JWTs.
//!
//! Minting is on the hot path, so it bypasses `jsonwebtoken::encode` (which re-parses the
//! PKCS#8 key on every call): each key is parsed once into an `Ed25519KeyPair` (see
//! `keys.rs`), the header segment of each kind is rendered once, and a token is
//! assembled in a single `String`. Verification uses `jsonwebtoken` for the signature and
//! registered claims, after our own header checks: the pinned algorithm, the per-kind header
//! `typ` (RFC 8725 §3.11), the refusal of header parameters that would let a token pick its
//! own key (`jku`, `x5u`, `jwk`, `x5c`) or demand extensions we do not implement (`crit`),
//! and `kid` mapping only to keys we hold.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};

use super::{Claims, SigningKeys, TokenError, TokenKind, LEEWAY_SECS};

/// Longest token `verify` will look at. Ours are well under 1 KiB; the cap keeps an
/// anonymous caller from making us base64-decode and parse megabytes.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Length of a base64url-encoded Ed25519 signature (64 bytes, no padding).
const SIGNATURE_B64_LEN: usize = 86;

/// The base64url header segment of the active key, one per kind, rendered at construction.
pub(super) struct HeaderSegments {
    visitor: String,
    session: String,
    refresh: String,
}

impl HeaderSegments {
    pub(super) fn new(kid: &str) -> Self {
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

/// Minting and verifying; loading the keys and publishing them is in `keys.rs`.
impl SigningKeys {
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
    use super::super::test_support::*;
    use super::*;
    use aws_lc_rs::signature::KeyPair as _;
    use jsonwebtoken::{EncodingKey, Header};

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
