//! Auditors' reads: a key's full history with metadata and readable summaries, its state
//! at any past point rebuilt by replaying that history through the same fold the read
//! models use, what a token was minted under, and verification of the tamper-evidence
//! chain. The internal HTTP API and the `widget-auth audit` CLI both call these, so the
//! two can never disagree.

use chrono::{DateTime, SecondsFormat, Utc};
use domain::aggregate::KeyState;
use domain::{ClientKeyEvent, PublicKey, RequestOrigin};
use futures::StreamExt;
use projections::ClientKeyView;
use serde_json::{json, Value};

use crate::chain::{self, Broken, Problem, Verifier};
use crate::store::{RecordedEvent, Store, StoreError};
use crate::tokens::{Claims, SigningKeys, TokenError, TokenKind};

/// How often (in events) the long replays report progress.
pub const PROGRESS_EVERY: u64 = 4096;

/// A past moment: right after an event, or as things stood at a time.
#[derive(Debug, Clone, Copy)]
pub enum Point {
    Sequence(u64),
    Time(DateTime<Utc>),
}

#[derive(Debug)]
pub enum StateAt {
    Found(Box<ClientKeyView>),
    UnknownKey,
    NotYetCreated,
}

/// One page of a key's events as API.md shapes it, or `None` for an unknown key.
pub async fn events_page(
    store: &Store,
    id: &str,
    after: u64,
    limit: u64,
) -> Result<Option<Value>, StoreError> {
    let mut events = store.history(id, after, Some(limit + 1)).await?;
    if events.is_empty() && store.history(id, 0, Some(1)).await?.is_empty() {
        return Ok(None);
    }
    let more = events.len() as u64 > limit;
    events.truncate(limit as usize);
    let next_after = if more {
        events.last().map(|e| e.sequence)
    } else {
        None
    };
    let events: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Some(json!({ "events": events, "next_after": next_after })))
}

/// An event as auditors see it: the payload without the enum wrapper, the metadata
/// fields API.md lists.
pub fn event_json(recorded: &RecordedEvent) -> Value {
    let payload = match serde_json::to_value(&recorded.event) {
        Ok(Value::Object(mut wrapper)) => {
            wrapper.remove(recorded.event.name()).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    let metadata = &recorded.metadata;
    json!({
        "sequence": recorded.sequence,
        "type": recorded.event.name(),
        "payload": payload,
        "metadata": {
            "actor": metadata.actor,
            "at": metadata.at,
            "request_id": metadata.request_id,
            "reason": metadata.reason,
        },
    })
}

/// The key right after event N, or as it stood at a time, by replaying its history
/// through the read models' fold. Streamed and applied by value: one key with a long
/// history costs time, not memory.
pub async fn state_at(store: &Store, id: &str, point: Point) -> Result<StateAt, StoreError> {
    // The same fold as the read models (`feed/replay.rs`), up to the point.
    let folded = crate::feed::replay::fold_key(store, id, |recorded| match point {
        Point::Sequence(n) => recorded.sequence <= n,
        Point::Time(t) => recorded.metadata.at <= t,
    })
    .await?;
    Ok(match folded.view {
        Some(view) => StateAt::Found(Box::new(view)),
        None if folded.events_read > 0 => StateAt::NotYetCreated,
        None => StateAt::UnknownKey,
    })
}

/// The result of checking the chain over the whole store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events checked (all of them when intact; those before the broken link otherwise).
    pub events: u64,
    /// Of those, events written before the chain existed (see [`Verifier`]).
    pub legacy_events: u64,
    pub broken: Option<Broken>,
}

impl VerifyReport {
    pub fn intact(&self) -> bool {
        self.broken.is_none()
    }

    /// `GET /internal/v1/audit/verify` and `audit verify --json`.
    pub fn to_json(&self) -> Value {
        json!({
            "intact": self.intact(),
            "events": self.events,
            "legacy_events": self.legacy_events,
            "broken": self.broken.as_ref().map(|b| json!({
                "client_key_id": b.client_key_id,
                "sequence": b.sequence,
                "problem": b.problem.code(),
                "message": b.message,
            })),
        })
    }

    /// The one-line answer people read.
    pub fn to_text(&self) -> String {
        let legacy = match self.legacy_events {
            0 => String::new(),
            n => format!(
                " ({n} legacy events written before the chain existed: only a chained \
                 event after them in the same key protects them)"
            ),
        };
        match &self.broken {
            None => format!("intact, {} events{legacy}", self.events),
            Some(b) => format!(
                "BROKEN at {} sequence {} ({}): {}",
                b.client_key_id,
                b.sequence,
                b.problem.code(),
                b.message
            ),
        }
    }
}

/// Checks the chain over every event of the store, streamed in key and sequence order,
/// and stops at the first broken link. `progress` is called with the running count.
pub async fn verify(
    store: &Store,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let mut verifier = Verifier::default();
    let broken = {
        let mut events = store.replay_raw();
        let mut broken = None;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(StoreError::Corrupt {
                    aggregate_id,
                    sequence,
                    ..
                }) => {
                    broken = Some(Broken::new(&aggregate_id, sequence, Problem::Unreadable));
                    break;
                }
                Err(other) => return Err(other),
            };
            if let Err(found) = verifier.feed(&event) {
                broken = Some(found);
                break;
            }
            if verifier.events % PROGRESS_EVERY == 0 {
                progress(verifier.events);
            }
        }
        broken
    };
    progress(verifier.events);
    // Only on failure, and only for the broken key: tell an edit from a renumbering.
    let broken = match broken {
        Some(found) if found.problem == Problem::Edited => {
            let limit = chain::DIAGNOSE_LIMIT as u64 + 1;
            let history = store
                .raw_history(&found.client_key_id, 0, Some(limit))
                .await?;
            Some(chain::diagnose(&history, found))
        }
        other => other,
    };
    Ok(VerifyReport {
        events: verifier.events,
        legacy_events: verifier.legacy,
        broken,
    })
}

/// The client key id a `ck_…` id or a `pk_live_…` public key names, or `None`. A public
/// key is found by replaying every key's creation and rotations, so a rotated-out key
/// still leads to its client key.
pub async fn resolve_key(
    store: &Store,
    key: &str,
    mut progress: impl FnMut(u64),
) -> Result<Option<String>, StoreError> {
    let Ok(public_key) = PublicKey::parse(key) else {
        let exists = !store.history(key, 0, Some(1)).await?.is_empty();
        return Ok(exists.then(|| key.to_owned()));
    };
    let mut events = store.replay_all();
    let mut seen = 0u64;
    while let Some(recorded) = events.next().await {
        let recorded = recorded?;
        seen += 1;
        if seen % PROGRESS_EVERY == 0 {
            progress(seen);
        }
        let found = match &recorded.event {
            ClientKeyEvent::ClientKeyCreated { public_key: pk, .. } => *pk == public_key,
            ClientKeyEvent::PublicKeyRotated {
                public_key: pk,
                previous,
                ..
            } => *pk == public_key || *previous == public_key,
            _ => false,
        };
        if found {
            return Ok(Some(recorded.aggregate_id));
        }
    }
    Ok(None)
}

/// One event of a key's history as the CLI shows it.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub recorded: RecordedEvent,
    /// What changed, in words; never a secret.
    pub summary: String,
}

impl HistoryEntry {
    /// The `/events` entry plus `summary` and `chain`.
    pub fn to_json(&self) -> Value {
        let mut entry = event_json(&self.recorded);
        entry["summary"] = json!(self.summary);
        entry["chain"] = json!(self.recorded.metadata.chain);
        entry
    }
}

/// A key's whole history with a summary of each change, or `None` for an unknown key.
pub async fn history(store: &Store, id: &str) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
    let events = store.history(id, 0, None).await?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut state: Option<KeyState> = None;
    let mut entries = Vec::with_capacity(events.len());
    for recorded in events {
        let summary = summarize(state.as_ref(), &recorded.event);
        match state.as_mut() {
            Some(state) => state.apply(recorded.event.clone()),
            None => state = KeyState::created(recorded.event.clone()),
        }
        entries.push(HistoryEntry { recorded, summary });
    }
    Ok(Some(entries))
}

/// An archive line: the `/events` entry plus the stored `chain` link.
pub fn export_json(recorded: &RecordedEvent) -> Value {
    let mut entry = event_json(recorded);
    entry["chain"] = json!(recorded.metadata.chain);
    entry
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// A readable account of one event, given the state before it.
pub fn summarize(before: Option<&KeyState>, event: &ClientKeyEvent) -> String {
    match event {
        ClientKeyEvent::ClientKeyCreated {
            name,
            public_key,
            secret_key,
            origins,
            ..
        } => {
            let origins: Vec<String> = origins
                .entries()
                .iter()
                .map(|o| o.as_str().to_owned())
                .collect();
            format!(
                "created \"{}\" (public key {}, secret key …{}, origins: {})",
                name.as_str(),
                public_key.as_str(),
                secret_key.last_four,
                list(&origins)
            )
        }
        ClientKeyEvent::OriginsChanged { origins } => {
            let old: Vec<&str> = before
                .map(|s| s.origins.entries().iter().map(|o| o.as_str()).collect())
                .unwrap_or_default();
            let new: Vec<&str> = origins.entries().iter().map(|o| o.as_str()).collect();
            let mut changes: Vec<String> = new
                .iter()
                .filter(|o| !old.contains(o))
                .map(|o| format!("+{o}"))
                .collect();
            changes.extend(
                old.iter()
                    .filter(|o| !new.contains(o))
                    .map(|o| format!("\u{2212}{o}")),
            );
            if changes.is_empty() {
                "origins: unchanged".to_owned()
            } else {
                format!("origins: {}", changes.join(" "))
            }
        }
        ClientKeyEvent::ConfigUpdated { config } => {
            let old = before.map(|s| serde_json::to_value(&s.config).unwrap_or(Value::Null));
            let new = serde_json::to_value(config).unwrap_or(Value::Null);
            let changed = changed_fields(old.as_ref().unwrap_or(&Value::Null), &new);
            if changed.is_empty() {
                "config: unchanged".to_owned()
            } else {
                format!("config: {}", changed.join(", "))
            }
        }
        ClientKeyEvent::TokenPolicySet { policy } => {
            let old = before.map(|s| serde_json::to_value(s.token_policy).unwrap_or(Value::Null));
            let new = serde_json::to_value(policy).unwrap_or(Value::Null);
            let changed = changed_fields(old.as_ref().unwrap_or(&Value::Null), &new);
            if changed.is_empty() {
                "token policy: unchanged".to_owned()
            } else {
                format!("token policy: {}", changed.join(", "))
            }
        }
        ClientKeyEvent::SecretKeyRotated {
            secret_key,
            previous,
            previous_valid_until,
            ..
        } => format!(
            "secret key rotated (…{} \u{2192} …{}, old valid until {})",
            previous.last_four,
            secret_key.last_four,
            time(previous_valid_until)
        ),
        ClientKeyEvent::PublicKeyRotated {
            public_key,
            previous,
            previous_valid_until,
            ..
        } => format!(
            "public key rotated ({} \u{2192} {}, old valid until {})",
            previous.as_str(),
            public_key.as_str(),
            time(previous_valid_until)
        ),
        ClientKeyEvent::PreviousKeysExpired { at } => {
            let mut ended: Vec<String> = Vec::new();
            if let Some(state) = before {
                ended.extend(
                    state
                        .previous_public_keys
                        .iter()
                        .filter(|p| *at < p.valid_until)
                        .map(|p| p.public_key.as_str().to_owned()),
                );
                ended.extend(
                    state
                        .previous_secret_keys
                        .iter()
                        .filter(|p| *at < p.valid_until)
                        .map(|p| format!("…{}", p.secret_key.last_four)),
                );
            }
            format!("grace periods ended now for {}", list(&ended))
        }
        ClientKeyEvent::SessionsRevoked {
            user_id,
            issued_at_or_before,
        } => {
            let cut = DateTime::from_timestamp(*issued_at_or_before, 0)
                .map_or_else(|| issued_at_or_before.to_string(), |t| time(&t));
            match user_id {
                Some(user) => format!(
                    "sessions of user {} issued at or before {cut} revoked",
                    user.as_str()
                ),
                None => format!("all sessions issued at or before {cut} revoked"),
            }
        }
        ClientKeyEvent::ClientKeyDisabled { .. } => {
            "disabled (tokens issued until now stay refused)".to_owned()
        }
        ClientKeyEvent::ClientKeyEnabled { .. } => "enabled".to_owned(),
    }
}

/// `path: old → new` for every leaf that differs between two JSON values.
fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(
                        &child,
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            (a, b) if a == b => {}
            (a, b) => out.push(format!("{path} {a} \u{2192} {b}")),
        }
    }
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

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

/// What a token we minted was minted under: its claims (signature checked against our
/// keys, lifetime ignored) and the client key as it stood at the token's `ver`.
pub async fn token_report(
    store: &Store,
    keys: &SigningKeys,
    issuer: &str,
    token: &str,
) -> Result<Value, TokenAuditError> {
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
    let minted_at = DateTime::from_timestamp(claims.iat, 0);
    let origin_allowed = claims.origin.as_deref().map(|origin| {
        RequestOrigin::parse(origin).is_ok_and(|origin| state.origins.allows(&origin))
    });
    let later = store.history(&claims.ck, claims.ver, None).await?;
    let current_version = later.last().map_or(claims.ver, |e| e.sequence);
    let mut before = Some(state.clone());
    let changes_since: Vec<Value> = later
        .iter()
        .map(|e| {
            let summary = summarize(before.as_ref(), &e.event);
            if let Some(s) = before.as_mut() {
                s.apply(e.event.clone());
            }
            json!({"sequence": e.sequence, "type": e.event.name(), "at": e.metadata.at, "summary": summary})
        })
        .collect();
    let admin = view.to_admin_json();
    Ok(json!({
        "token": {
            "kind": claims.kind,
            "sub": claims.sub,
            "jti": claims.jti,
            "iat": claims.iat,
            "exp": claims.exp,
            "minted_at": minted_at,
            "origin": claims.origin,
            "guest": claims.guest,
            "ck": claims.ck,
            "ver": claims.ver,
        },
        "signature": "valid",
        "in_force": {
            "version": claims.ver,
            "status": admin["status"],
            "origins": admin["origins"],
            "token_policy": admin["token_policy"],
            "public_key": admin["public_key"],
            "previous_public_keys": admin["previous_public_keys"],
            "secret_key_last_four": admin["secret_key_last_four"],
            "previous_secret_keys": admin["previous_secret_keys"],
            "sessions_revoked_at_or_before": admin["sessions_revoked_at_or_before"],
        },
        "origin_allowed_then": origin_allowed,
        "current_version": current_version,
        "changes_since": changes_since,
        "state": admin,
    }))
}
