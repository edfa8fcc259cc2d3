//! What a token we minted was minted under (`widget-auth audit token`): its claims, the
//! key as it stood at the token's version, and for a refresh token its family's standing.

use chrono::{DateTime, Utc};
use domain::aggregate::KeyState;
use domain::{AllowList, KeyStatus, PreviousPublicKey, PublicKey, RequestOrigin, TokenPolicy};
use projections::ClientKeyView;
use serde::{Serialize, Serializer};

use crate::sessions::{self, FamilyStanding};
use crate::store::{Store, StoreError};
use crate::tokens::{Claims, SigningKeys, TokenError, TokenKind};

use super::{state_at, Change, Point, StateAt};

/// Why a token could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum TokenAuditError {
    #[error("not a token we minted: {0}")]
    Token(#[from] TokenError),
    #[error("the token names client key {0}, which is not in this store")]
    UnknownKey(String),
    #[error("the token names version {version} of {id}, which its history does not reach")]
    UnknownVersion { id: String, version: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a token we minted was minted under (`audit token`).
#[derive(Debug, Clone, Serialize)]
pub struct TokenReport {
    pub token: MintedToken,
    pub signature: Signature,
    pub in_force: InForce,
    /// Whether the token's `origin` was in the allowlist then; `None` without an origin.
    pub origin_allowed_then: Option<bool>,
    pub current_version: u64,
    pub changes_since: Vec<LaterChange>,
    /// The whole key at the token's version, as `GET /internal/v1/client-keys/{id}`
    /// shows it.
    #[serde(serialize_with = "admin_json")]
    pub state: ClientKeyView,
    /// For a refresh token: its family, and whether it is live, spent or revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_family: Option<RefreshFamily>,
}

/// A refresh token's family as the token ledger holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefreshFamily {
    pub family: String,
    /// The token's generation in it (0: the first), when it carries one.
    pub generation: Option<i64>,
    #[serde(flatten)]
    pub standing: FamilyStanding,
}

/// Only a token whose signature verifies gets a report; the field says so to readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signature {
    Valid,
}

/// The claims that say what a token is and what it was minted under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MintedToken {
    pub kind: TokenKind,
    pub sub: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// `iat` as a time (`None` if out of range).
    pub minted_at: Option<DateTime<Utc>>,
    pub origin: Option<String>,
    pub guest: Option<bool>,
    pub ck: String,
    pub ver: u64,
}

/// What decided the token's fate at the version it was minted under.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InForce {
    pub version: u64,
    pub status: KeyStatus,
    pub origins: AllowList,
    pub token_policy: TokenPolicy,
    pub public_key: PublicKey,
    pub previous_public_keys: Vec<PreviousPublicKey>,
    pub secret_key_last_four: String,
    pub previous_secret_keys: Vec<PreviousSecret>,
    pub sessions_revoked_at_or_before: Option<i64>,
}

/// A rotated-out secret key as auditors see it: its last four characters, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousSecret {
    pub last_four: String,
    pub valid_until: DateTime<Utc>,
}

/// An event after the token's version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaterChange {
    pub sequence: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub at: DateTime<Utc>,
    pub summary: Change,
}

impl InForce {
    fn of(state: &KeyState, version: u64) -> Self {
        Self {
            version,
            status: state.status,
            origins: state.origins.clone(),
            token_policy: state.token_policy,
            public_key: state.public_key.clone(),
            previous_public_keys: state.previous_public_keys.clone(),
            secret_key_last_four: state.secret_key.last_four.clone(),
            previous_secret_keys: state
                .previous_secret_keys
                .iter()
                .map(|p| PreviousSecret {
                    last_four: p.secret_key.last_four.clone(),
                    valid_until: p.valid_until,
                })
                .collect(),
            sessions_revoked_at_or_before: state.sessions_revoked_at_or_before,
        }
    }
}

fn admin_json<S: Serializer>(view: &ClientKeyView, serializer: S) -> Result<S::Ok, S::Error> {
    view.to_admin_json().serialize(serializer)
}

/// What a token we minted was minted under: its claims (signature checked against our
/// keys, lifetime ignored) and the client key as it stood at the token's `ver`.
pub async fn token_report(
    store: &Store,
    keys: &SigningKeys,
    issuer: &str,
    token: &str,
) -> Result<TokenReport, TokenAuditError> {
    // The header's `typ` says the kind; trying each keeps one code path for the checks.
    let claims: Claims = [TokenKind::Visitor, TokenKind::Session, TokenKind::Refresh]
        .into_iter()
        .map(|kind| keys.verify_ignoring_lifetime(token, kind, issuer))
        .reduce(|found, next| match found {
            Err(TokenError::WrongKind) => next,
            found => found,
        })
        .unwrap_or(Err(TokenError::Malformed))?;
    let view = match state_at(store, &claims.ck, Point::Sequence(claims.ver)).await? {
        StateAt::Found(view) => view,
        StateAt::UnknownKey => return Err(TokenAuditError::UnknownKey(claims.ck)),
        StateAt::NotYetCreated => {
            return Err(TokenAuditError::UnknownVersion {
                id: claims.ck,
                version: claims.ver,
            })
        }
    };
    if view.version() != claims.ver {
        return Err(TokenAuditError::UnknownVersion {
            id: claims.ck,
            version: claims.ver,
        });
    }
    let state = view.state();
    let origin_allowed_then = claims.origin.as_deref().map(|origin| {
        RequestOrigin::parse(origin).is_ok_and(|origin| state.origins.allows(&origin))
    });
    let later = store.history(&claims.ck, claims.ver, None).await?;
    let current_version = later.last().map_or(claims.ver, |e| e.sequence);
    let mut before = Some(state.clone());
    let changes_since = later
        .into_iter()
        .map(|e| {
            let summary = Change::of(before.as_ref(), &e.event);
            let change = LaterChange {
                sequence: e.sequence,
                kind: e.event.name(),
                at: e.metadata.at,
                summary,
            };
            if let Some(s) = before.as_mut() {
                s.apply(e.event);
            }
            change
        })
        .collect();
    let refresh_family = match (&claims.kind, &claims.fam) {
        (TokenKind::Refresh, Some(family)) => {
            let record = store.refresh_family(family).await?;
            Some(RefreshFamily {
                family: family.clone(),
                generation: claims.gen,
                standing: sessions::family_standing(
                    &claims,
                    record.as_ref(),
                    Utc::now().timestamp(),
                ),
            })
        }
        _ => None,
    };
    Ok(TokenReport {
        refresh_family,
        in_force: InForce::of(state, claims.ver),
        token: MintedToken {
            kind: claims.kind,
            sub: claims.sub,
            jti: claims.jti,
            iat: claims.iat,
            exp: claims.exp,
            minted_at: DateTime::from_timestamp(claims.iat, 0),
            origin: claims.origin,
            guest: claims.guest,
            ck: claims.ck,
            ver: claims.ver,
        },
        signature: Signature::Valid,
        origin_allowed_then,
        current_version,
        changes_since,
        state: *view,
    })
}
