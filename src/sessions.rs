//! What a session is: who it is for, what its visitor, session and refresh tokens
//! contain, and the rules that decide whether a presented token still counts (verified,
//! its key alive and enabled, not revoked, a refresh token rotated at most once).
//!
//! Everything here is a plain function of its inputs (read models, the ledger's answer,
//! the time), so each rule has a unit test and the HTTP handlers in `http/public.rs` only
//! parse, check the origin, call these, write the ledger and build the response.
//! Refusals are [`SessionError`]s; `http/error.rs` gives each its status and the
//! contract's message (the `Display` text here).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::aggregate::KeyState;
use domain::{
    Email, KeyStatus, ProfileError, ProfileText, RequestOrigin, SecretKey, SecretKeyHash,
    TokenPolicy, UserId,
};
use projections::{ClientKeyView, Directory};

use crate::ledger::TokenUse;
use crate::tokens::{Claims, SigningKeys, TokenError, TokenKind};

/// How long a client may retry a refresh with the token it just rotated (its response
/// was lost) before that counts as reuse of a rotated token.
pub const REFRESH_RETRY_GRACE_MS: i64 = 10_000;

/// Why a session was not started, continued or extended. The `Display` text is the
/// sentence API.md promises the client; the HTTP edge adds the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The token failed verification (signature, lifetime, kind, issuer, shape).
    #[error("invalid {}: {error}", noun(.kind))]
    InvalidToken { kind: TokenKind, error: TokenError },
    /// The token is genuine but names a client key the directory no longer has.
    #[error("invalid {}: its client key no longer exists", noun(.kind))]
    ClientKeyGone { kind: TokenKind },
    /// A token presented for a disabled key (a bad request, unlike [`Self::KeyDisabled`]).
    #[error("client key disabled")]
    TokenOfDisabledKey,
    /// Issued at or before a revocation cut-off, or of a revoked refresh family.
    #[error("{} revoked", noun(.kind))]
    Revoked { kind: TokenKind },
    /// A customer backend asked for a token for a disabled key.
    #[error("client key disabled")]
    KeyDisabled,
    #[error("guests are not allowed for this client_key")]
    GuestsNotAllowed,
    #[error("invalid secret key")]
    InvalidSecretKey,
    #[error("secret key does not belong to this client_key")]
    SecretKeyOfAnotherKey,
    /// A profile value a customer backend sent, with the field it came in.
    #[error("{field} {error}")]
    InvalidProfile {
        field: &'static str,
        error: ProfileError,
    },
    #[error("visitor token already exchanged")]
    AlreadyExchanged,
    #[error("origin does not match the one this token was minted for")]
    OriginMismatch,
    #[error("refresh token already used; the session is revoked")]
    RefreshReused,
}

/// How messages name a token kind.
fn noun(kind: &TokenKind) -> &'static str {
    match kind {
        TokenKind::Visitor => "visitor token",
        TokenKind::Session => "session token",
        TokenKind::Refresh => "refresh token",
    }
}

/// 128 random bits as 32 hex digits (a token's `jti`, a refresh family, a guest id),
/// from the thread-local CSPRNG: a UUID v4 would make a `getrandom` system call for
/// each, three per guest token.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Who a session is for: the `sub` and profile claims every token of it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub sub: String,
    pub guest: bool,
    pub name: Option<String>,
    pub email: Option<String>,
}

impl Identity {
    /// A new anonymous visitor (`v_…`), if the key's policy lets guests in.
    pub fn guest(policy: &TokenPolicy) -> Result<Self, SessionError> {
        if !policy.guests_allowed() {
            return Err(SessionError::GuestsNotAllowed);
        }
        Ok(Self {
            sub: format!("v_{}", new_id()),
            guest: true,
            name: None,
            email: None,
        })
    }

    /// A user a customer backend vouches for. Checked in the order API.md documents
    /// (user id, email, name), so a request with several bad fields names the same one
    /// every time. An empty name or email is no name or email.
    pub fn user(
        user_id: &str,
        name: Option<&str>,
        email: Option<&str>,
    ) -> Result<Self, SessionError> {
        let invalid = |field| move |error| SessionError::InvalidProfile { field, error };
        let user_id = UserId::parse(user_id).map_err(invalid("user_id"))?;
        let email = email
            .map(Email::parse)
            .transpose()
            .map_err(invalid("email"))?
            .flatten();
        let name = name
            .map(ProfileText::parse)
            .transpose()
            .map_err(invalid("name"))?
            .flatten();
        Ok(Self {
            sub: user_id.into(),
            guest: false,
            name: name.map(String::from),
            email: email.map(String::from),
        })
    }

    /// The user a visitor token was minted for. Visitor tokens come from a customer's
    /// backend, so the session they start is never a guest's.
    pub fn exchanged(visitor: Claims) -> Self {
        Self {
            sub: visitor.sub,
            guest: false,
            name: visitor.name,
            email: visitor.email,
        }
    }

    /// Whoever the refresh token's session was for, guest or not.
    pub fn refreshed(refresh: Claims) -> Self {
        Self {
            sub: refresh.sub,
            guest: refresh.guest.unwrap_or(false),
            name: refresh.name,
            email: refresh.email,
        }
    }
}

/// The claims of one token of `kind` for `identity` under `view`, valid for `ttl`
/// seconds from `now`: the key's id and version (so an auditor can replay the policy
/// then in force) and a fresh `jti`.
pub fn claims(
    view: &ClientKeyView,
    kind: TokenKind,
    identity: &Identity,
    ttl: u32,
    issuer: &str,
    now: i64,
) -> Claims {
    Claims {
        iss: issuer.to_owned(),
        aud: kind.audience().to_owned(),
        sub: identity.sub.clone(),
        iat: now,
        nbf: now,
        exp: now + i64::from(ttl),
        jti: new_id(),
        ck: view.state().id.as_str().to_owned(),
        kind,
        ver: view.version(),
        origin: None,
        guest: Some(identity.guest),
        name: identity.name.clone(),
        email: identity.email.clone(),
        fam: None,
    }
}

/// A visitor token's claims: short-lived, bound to no origin, exchanged once.
pub fn visitor_claims(view: &ClientKeyView, identity: &Identity, issuer: &str, now: i64) -> Claims {
    let ttl = view.state().token_policy.visitor_token_ttl_seconds();
    claims(view, TokenKind::Visitor, identity, ttl, issuer, now)
}

/// A session token and the refresh token that extends it, both bound to the origin
/// they were minted for; lifetimes are the key's policy's.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPair {
    pub session: Claims,
    pub refresh: Claims,
    pub expires_in: u32,
    pub refresh_expires_in: u32,
}

/// The pair for `identity` at `origin`. A refresh continues `family`; a new session
/// starts a new family, which reuse detection revokes as a whole.
pub fn session_pair(
    view: &ClientKeyView,
    identity: &Identity,
    origin: &RequestOrigin,
    family: Option<String>,
    issuer: &str,
    now: i64,
) -> SessionPair {
    let policy = view.state().token_policy;
    let origin = Some(origin.as_str().to_owned());
    let (expires_in, refresh_expires_in) =
        (policy.session_ttl_seconds(), policy.refresh_ttl_seconds());
    let mut session = claims(view, TokenKind::Session, identity, expires_in, issuer, now);
    session.origin.clone_from(&origin);
    let mut refresh = claims(
        view,
        TokenKind::Refresh,
        identity,
        refresh_expires_in,
        issuer,
        now,
    );
    refresh.origin = origin;
    refresh.fam = Some(family.unwrap_or_else(new_id));
    SessionPair {
        session,
        refresh,
        expires_in,
        refresh_expires_in,
    }
}

/// A presented token of `kind`, verified at `now` (unix seconds), with its client key:
/// refused if the key is gone or disabled, or the token was issued at or before a
/// revocation of its key or its user.
pub fn verify_presented(
    keys: &SigningKeys,
    issuer: &str,
    directory: &Directory,
    token: &str,
    kind: TokenKind,
    now: i64,
) -> Result<(Claims, Arc<ClientKeyView>), SessionError> {
    let claims = keys
        .verify(token, kind, issuer, now)
        .map_err(|error| SessionError::InvalidToken { kind, error })?;
    let view = directory
        .by_id(&claims.ck)
        .ok_or(SessionError::ClientKeyGone { kind })?;
    if view.state().status == KeyStatus::Disabled {
        return Err(SessionError::TokenOfDisabledKey);
    }
    if view.state().is_revoked(&claims.sub, claims.iat) {
        return Err(SessionError::Revoked { kind });
    }
    Ok((claims, view))
}

/// What the ledger's answer means for a visitor token: only its first use counts.
pub fn first_exchange(used: TokenUse) -> Result<(), SessionError> {
    match used {
        TokenUse::First => Ok(()),
        TokenUse::Again { .. } => Err(SessionError::AlreadyExchanged),
    }
}

/// The family of a presented refresh token, which may only be used from the origin it
/// was minted for.
pub fn refresh_family(refresh: &Claims, origin: &RequestOrigin) -> Result<String, SessionError> {
    if refresh.origin.as_deref() != Some(origin.as_str()) {
        return Err(SessionError::OriginMismatch);
    }
    refresh.fam.clone().ok_or(SessionError::InvalidToken {
        kind: TokenKind::Refresh,
        error: TokenError::Malformed,
    })
}

/// What to do with a presented refresh token, once the ledger has recorded its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// First use: mint its successor.
    Rotate,
    /// The latest token of its family, used moments ago: the client lost the response
    /// and retries, so it gets a pair again rather than losing its session.
    RetryWithinGrace,
    /// A rotated token came back (stolen, or replayed late): revoke the whole family
    /// and refuse.
    ReuseDetected(FamilyRevocation),
}

/// The ledger row that revokes a refresh family (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyRevocation {
    pub revoked_at: i64,
    /// When no token of the family can be valid any more, so the row may be pruned.
    pub expires_at: i64,
}

/// The rotation rule: a refresh token has at most one successor, except for the
/// latest of its family presented again within [`REFRESH_RETRY_GRACE_MS`].
pub fn rotation(used: TokenUse, now_ms: i64, policy: &TokenPolicy) -> Rotation {
    match used {
        TokenUse::First => Rotation::Rotate,
        TokenUse::Again {
            used_at_ms,
            latest_in_family,
        } if latest_in_family && now_ms - used_at_ms <= REFRESH_RETRY_GRACE_MS => {
            Rotation::RetryWithinGrace
        }
        TokenUse::Again { .. } => Rotation::ReuseDetected(family_revocation(policy, now_ms)),
    }
}

/// A family revoked at `now_ms` stays revoked as long as any of its refresh tokens could
/// still be valid: one refresh lifetime from now.
pub fn family_revocation(policy: &TokenPolicy, now_ms: i64) -> FamilyRevocation {
    let now = now_ms.div_euclid(1000);
    FamilyRevocation {
        revoked_at: now,
        expires_at: now + i64::from(policy.refresh_ttl_seconds()),
    }
}

/// Whether `hash` is `key`'s current secret key or a previous one still in its grace at
/// `now`. Constant-time compares: the hash came from the caller.
pub fn accepts_secret_key(key: &KeyState, hash: &SecretKeyHash, now: DateTime<Utc>) -> bool {
    key.secret_key.hash.ct_eq(hash)
        || key
            .previous_secret_keys
            .iter()
            .any(|p| p.secret_key.hash.ct_eq(hash) && now < p.valid_until)
}

/// The client key a presented `sk_live_…` authenticates at `now`: checksum first (no
/// lookup for a malformed key), then the secret key index, then the grace window.
pub fn authenticate_secret_key(
    directory: &Directory,
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Arc<ClientKeyView>, SessionError> {
    let secret = SecretKey::parse(presented).map_err(|_| SessionError::InvalidSecretKey)?;
    let hash = secret.hash();
    let view = directory
        .by_secret_hash(&hash)
        .ok_or(SessionError::InvalidSecretKey)?;
    if !accepts_secret_key(view.state(), &hash, now) {
        return Err(SessionError::InvalidSecretKey);
    }
    Ok(view)
}

/// Whether a secret key's owner (`view`) may mint visitor tokens for the public key
/// `client_key` named in the request: its own (current, or previous in grace) and only
/// while enabled. `now` is asked only for a previous public key.
pub fn authorize_visitor_token(
    view: &ClientKeyView,
    client_key: &str,
    now: impl FnOnce() -> DateTime<Utc>,
) -> Result<(), SessionError> {
    let belongs = domain::PublicKey::parse(client_key)
        .is_ok_and(|pk| view.state().accepts_public_key(&pk, now));
    if !belongs {
        return Err(SessionError::SecretKeyOfAnotherKey);
    }
    if view.state().status == KeyStatus::Disabled {
        return Err(SessionError::KeyDisabled);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
