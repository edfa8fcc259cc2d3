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

use crate::ledger::{FamilyRecord, RecordedToken, SpendOutcome, TokenUse};
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
    /// A guest's refresh family once the key's policy turned guests off (a bad request,
    /// unlike [`Self::GuestsNotAllowed`] on guest minting).
    #[error("guests are not allowed for this client_key")]
    GuestFamilyEnded,
    /// The family reached its absolute lifetime (`refresh_absolute_ttl_seconds`).
    #[error("refresh token expired: the session reached its absolute lifetime")]
    FamilyEnded,
}

/// How messages name a token kind.
fn noun(kind: &TokenKind) -> &'static str {
    match kind {
        TokenKind::Visitor => "visitor token",
        TokenKind::Session => "session token",
        TokenKind::Refresh => "refresh token",
    }
}

/// 128 random bits as 32 hex digits (a guest's id), from the thread-local CSPRNG: a
/// UUID v4 would make a `getrandom` system call for each.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A token's `jti` or a refresh family: 32 hex digits as [`new_id`]'s, the first 12 the
/// milliseconds since the Unix epoch and the other 20 random (80 bits, as a UUID v7
/// lays them out). The token ledger's tables are keyed by these, and a random key puts
/// each insert on a random page of the key's index: a batch of 24 wrote about as many
/// pages, and after every PostgreSQL checkpoint each page's first change wrote the
/// whole page to the WAL again (BENCHMARKS.md, "Tails on the stores"). Time-ordered
/// keys go in at the index's right edge. Nothing in them is secret (the token is signed,
/// and its `iat` says the time anyway); collisions need two in one millisecond with the
/// same 80 random bits.
pub fn new_token_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let random = rand::random::<u128>() & ((1 << 80) - 1);
    format!("{:012x}{random:020x}", ms & 0xffff_ffff_ffff)
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
        jti: new_token_id(),
        ck: view.state().id.as_str().to_owned(),
        kind,
        ver: view.version(),
        origin: None,
        guest: Some(identity.guest),
        name: identity.name.clone(),
        email: identity.email.clone(),
        fam: None,
        fst: None,
        gen: None,
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

/// How a refresh continues its family: the family, when it started, and the successor
/// the ledger recorded for the spent token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    pub family: String,
    pub started_at: i64,
    pub successor: RecordedToken,
}

/// The pair for `identity` at `origin`. A new session (`continuing` is `None`) starts a
/// new family, which reuse detection revokes as a whole; a refresh hands out the
/// successor the ledger recorded, so a retry re-mints the very same refresh token.
pub fn session_pair(
    view: &ClientKeyView,
    identity: &Identity,
    origin: &RequestOrigin,
    continuing: Option<&Continuation>,
    issuer: &str,
    now: i64,
) -> SessionPair {
    let policy = view.state().token_policy;
    let expires_in = policy.session_ttl_seconds();
    let mut session = claims(view, TokenKind::Session, identity, expires_in, issuer, now);
    session.origin = Some(origin.as_str().to_owned());
    let started;
    let (family, started_at, token) = match continuing {
        Some(c) => (c.family.clone(), c.started_at, &c.successor),
        None => {
            // The absolute lifetime is never below the refresh lifetime: no cap needed.
            started = RecordedToken {
                jti: new_token_id(),
                generation: 0,
                iat: now,
                exp: now + i64::from(policy.refresh_ttl_seconds()),
                ver: view.version() as i64,
            };
            (new_token_id(), now, &started)
        }
    };
    let refresh = refresh_claims(view, identity, origin, family, started_at, token, issuer);
    SessionPair {
        session,
        refresh_expires_in: u32::try_from((token.exp - now).max(0)).unwrap_or(u32::MAX),
        refresh,
        expires_in,
    }
}

/// The claims of the refresh token `token` of `family`: the one place they are built,
/// so re-minting a recorded successor gives the identical token (Ed25519 signatures are
/// deterministic).
fn refresh_claims(
    view: &ClientKeyView,
    identity: &Identity,
    origin: &RequestOrigin,
    family: String,
    started_at: i64,
    token: &RecordedToken,
    issuer: &str,
) -> Claims {
    Claims {
        iss: issuer.to_owned(),
        aud: TokenKind::Refresh.audience().to_owned(),
        sub: identity.sub.clone(),
        iat: token.iat,
        nbf: token.iat,
        exp: token.exp,
        jti: token.jti.clone(),
        ck: view.state().id.as_str().to_owned(),
        kind: TokenKind::Refresh,
        ver: u64::try_from(token.ver).unwrap_or_default(),
        origin: Some(origin.as_str().to_owned()),
        guest: Some(identity.guest),
        name: identity.name.clone(),
        email: identity.email.clone(),
        fam: Some(family),
        fst: Some(started_at),
        gen: Some(token.generation),
    }
}

/// When a refresh token's family started: carried in the token (`fst`); a token minted
/// before families had a start counts from its own `iat`.
pub fn family_started_at(refresh: &Claims) -> i64 {
    refresh.fst.unwrap_or(refresh.iat)
}

/// When `refresh`'s family ends under `policy`: no successor outlives that instant.
pub fn family_ends_at(refresh: &Claims, policy: &TokenPolicy) -> i64 {
    family_started_at(refresh) + i64::from(policy.refresh_absolute_ttl_seconds())
}

/// Whether a verified refresh token may still continue its session under the key's
/// current policy: guest families end when guests are switched off, and every family
/// at its absolute end. Checked before the ledger is written and again after.
pub fn may_continue(refresh: &Claims, view: &ClientKeyView, now: i64) -> Result<(), SessionError> {
    let policy = view.state().token_policy;
    if refresh.guest == Some(true) && !policy.guests_allowed() {
        return Err(SessionError::GuestFamilyEnded);
    }
    if now >= family_ends_at(refresh, &policy) {
        return Err(SessionError::FamilyEnded);
    }
    Ok(())
}

/// The successor to record for `refresh` at `now`: one generation on, a refresh
/// lifetime from now but never past the family's absolute end.
pub fn successor(refresh: &Claims, view: &ClientKeyView, now: i64) -> RecordedToken {
    let policy = view.state().token_policy;
    let exp = (now + i64::from(policy.refresh_ttl_seconds())).min(family_ends_at(refresh, &policy));
    RecordedToken {
        jti: new_token_id(),
        generation: refresh.gen.unwrap_or(0) + 1,
        iat: now,
        exp,
        ver: view.version() as i64,
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
    let view = key_still_counts(directory, &claims, kind)?;
    Ok((claims, view))
}

/// The client key of a verified token, as the directory holds it now: refused if the
/// key is gone or disabled, or the token was issued at or before a revocation of its key
/// or its user.
pub fn key_still_counts(
    directory: &Directory,
    claims: &Claims,
    kind: TokenKind,
) -> Result<Arc<ClientKeyView>, SessionError> {
    let view = directory
        .by_id(&claims.ck)
        .ok_or(SessionError::ClientKeyGone { kind })?;
    if view.state().status == KeyStatus::Disabled {
        return Err(SessionError::TokenOfDisabledKey);
    }
    if view.state().is_revoked(&claims.sub, claims.iat) {
        return Err(SessionError::Revoked { kind });
    }
    Ok(view)
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

/// What the ledger's answer to spending a refresh token means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// This request spent the token: hand out the successor it recorded.
    Rotated,
    /// The most recently spent token again, within [`REFRESH_RETRY_GRACE_MS`] of its
    /// use: the client lost the response, so it gets the same successor again.
    Retry(RecordedToken),
    /// The family was revoked before: refuse.
    Revoked,
    /// The key was revoked or disabled after the version this node decided on: nothing
    /// was spent; the client should retry once the read model has caught up.
    KeyChanged,
    /// Any other spent token (stolen, or replayed late): revoke the whole family,
    /// the live head included, and refuse.
    ReuseDetected(FamilyRevocation),
}

/// The ledger write that revokes a family caught replaying (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyRevocation {
    pub revoked_at: i64,
    /// The replayed token's generation, when it carries one.
    pub generation: Option<i64>,
    /// Until when the revocation must be remembered: no token of the family is valid
    /// after it.
    pub ends_at: i64,
}

/// The rule: a refresh token has exactly one successor; only the latest spent token,
/// presented again within the grace while its successor is still unspent, gets that
/// successor again; anything else revokes the family.
pub fn after_spend(presented: &Claims, outcome: SpendOutcome, now_ms: i64) -> Refresh {
    let record = match outcome {
        SpendOutcome::Spent => return Refresh::Rotated,
        SpendOutcome::KeyChanged => return Refresh::KeyChanged,
        SpendOutcome::NotSpent(record) => record,
    };
    if record.as_ref().is_some_and(|r| r.revoked.is_some()) {
        return Refresh::Revoked;
    }
    if let Some(FamilyRecord {
        head: Some(head),
        spent: Some((spent_jti, spent_at_ms)),
        ..
    }) = &record
    {
        if *spent_jti == presented.jti && now_ms - spent_at_ms <= REFRESH_RETRY_GRACE_MS {
            return Refresh::Retry(head.clone());
        }
    }
    Refresh::ReuseDetected(FamilyRevocation {
        revoked_at: now_ms.div_euclid(1000),
        generation: presented.gen,
        ends_at: revocation_ends_at(presented, record.as_ref(), now_ms.div_euclid(1000)),
    })
}

/// How long a revocation must last: past the latest `exp` of any token of the family.
/// The ledger's row knows it for families rotated since it kept one; a family known only
/// from the old single-use ledger could have tokens up to the longest refresh lifetime
/// (90 days) from now.
fn revocation_ends_at(presented: &Claims, record: Option<&FamilyRecord>, now: i64) -> i64 {
    let known = match record {
        Some(record) => record.ends_at,
        None => now + i64::from(domain::policy::REFRESH_TTL_BOUNDS.1),
    };
    known.max(presented.exp)
}

/// Where a refresh token stands in its family, for auditors (`audit token`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum FamilyStanding {
    /// The family's live token: presenting it rotates it.
    Live { expired: bool },
    /// Already rotated. `successor` is the token its spending produced when this was
    /// the latest spent token (a retry within the grace gets it again); `None` once the
    /// family has moved on further, when presenting it revokes the family.
    Spent {
        spent_at_ms: Option<i64>,
        successor: Option<String>,
        live_generation: Option<i64>,
    },
    /// The whole family is refused.
    Revoked {
        at: i64,
        reason: String,
        generation_replayed: Option<i64>,
    },
}

/// `refresh`'s standing given its family's ledger row (`None`: never rotated) at `now`.
pub fn family_standing(
    refresh: &Claims,
    record: Option<&FamilyRecord>,
    now: i64,
) -> FamilyStanding {
    let expired = now >= refresh.exp;
    let Some(record) = record else {
        return FamilyStanding::Live { expired };
    };
    if let Some(revoked) = &record.revoked {
        return FamilyStanding::Revoked {
            at: revoked.at,
            reason: revoked.reason.clone(),
            generation_replayed: revoked.generation,
        };
    }
    let head = record.head.as_ref();
    if head.is_some_and(|h| h.jti == refresh.jti) {
        return FamilyStanding::Live { expired };
    }
    let latest = record.spent.as_ref().filter(|(jti, _)| *jti == refresh.jti);
    FamilyStanding::Spent {
        spent_at_ms: latest.map(|(_, at)| *at),
        successor: latest.and(head).map(|h| h.jti.clone()),
        live_generation: head.map(|h| h.generation),
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
    let belongs = view.state().accepts_public_key(client_key, now);
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
