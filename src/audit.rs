//! Auditors' reads: a key's full history with metadata and what each event changed, its
//! state at any past point rebuilt by replaying that history through the same fold the
//! read models use, what a token was minted under, and verification of the
//! tamper-evidence chain. The internal HTTP API and the `widget-auth audit` CLI both call
//! these, so the two can never disagree.
//!
//! Everything here returns typed results and formats nothing: the edges render them (the
//! HTTP API serializes them as they are, the CLI as JSON or as text for people), and
//! [`Change`]'s `Display` is the one summary both use. The types the HTTP API sends
//! declare their fields in alphabetical order: those bodies used to be built as
//! `serde_json::Value`, whose maps sort their keys, so the bytes sent stay the same.

mod change;
mod checkpoints;
pub mod periodic;
mod token;

use chrono::{DateTime, Utc};
use domain::aggregate::KeyState;
use domain::{ClientKeyEvent, PublicKey};
use futures::StreamExt;
use projections::ClientKeyView;
use serde::{Serialize, Serializer};
use serde_json::Value;

pub use self::change::{Change, FieldChange};
pub use self::checkpoints::*;
pub use self::token::*;
use crate::chain::{self, Broken, Problem, Verifier};
use crate::store::{RecordedEvent, Store, StoreError};

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

/// An event as auditors see it (an entry of API.md's `/events`): the payload without the
/// enum wrapper, and the metadata fields API.md lists (never the idempotency record).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub metadata: AuditMetadata,
    /// The domain event as stored, without its `{"EventName": …}` wrapper: JSON by
    /// nature, since each event type has its own shape.
    pub payload: Value,
    pub sequence: u64,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
}

/// Who did it, when, under which request, and why.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditMetadata {
    pub actor: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
    pub request_id: String,
}

impl AuditEvent {
    pub fn of(recorded: &RecordedEvent) -> Self {
        let kind = recorded.event.name();
        let payload = match serde_json::to_value(&recorded.event) {
            Ok(Value::Object(mut wrapper)) => wrapper.remove(kind).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let metadata = &recorded.metadata;
        Self {
            metadata: AuditMetadata {
                actor: metadata.actor.clone(),
                at: metadata.at,
                reason: metadata.reason.clone(),
                request_id: metadata.request_id.clone(),
            },
            payload,
            sequence: recorded.sequence,
            kind,
        }
    }
}

/// One page of a key's events (`GET /internal/v1/client-keys/{id}/events`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EventsPage {
    pub events: Vec<AuditEvent>,
    /// The `after` of the next page; `None` on the last one.
    pub next_after: Option<u64>,
}

/// One page of a key's events, or `None` for an unknown key.
pub async fn events_page(
    store: &Store,
    id: &str,
    after: u64,
    limit: u64,
) -> Result<Option<EventsPage>, StoreError> {
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
    Ok(Some(EventsPage {
        events: events.iter().map(AuditEvent::of).collect(),
        next_after,
    }))
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

/// The result of checking the chain over the whole store (`GET /internal/v1/audit/verify`
/// and `audit verify`).
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
}

/// `{"broken", "events", "intact", "legacy_events"}`: `intact` is derived from `broken`,
/// so it is never stored where the two could disagree.
impl Serialize for VerifyReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            broken: Option<&'a Broken>,
            events: u64,
            intact: bool,
            legacy_events: u64,
        }
        Body {
            broken: self.broken.as_ref(),
            events: self.events,
            intact: self.intact(),
            legacy_events: self.legacy_events,
        }
        .serialize(serializer)
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
        // Only once every key was seen: stripped links are told from legacy ones by time.
        broken.or_else(|| verifier.finish())
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
        if seen.is_multiple_of(PROGRESS_EVERY) {
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

/// An event with its stored chain link: one line of `audit export`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArchivedEvent {
    /// `None` on events written before the chain existed.
    pub chain: Option<String>,
    #[serde(flatten)]
    pub event: AuditEvent,
}

impl ArchivedEvent {
    fn of(recorded: &RecordedEvent) -> Self {
        Self {
            chain: recorded.metadata.chain.clone(),
            event: AuditEvent::of(recorded),
        }
    }
}

/// A key's whole history for archiving, in order (empty for an unknown key).
pub async fn export(store: &Store, id: &str) -> Result<Vec<ArchivedEvent>, StoreError> {
    let events = store.history(id, 0, None).await?;
    Ok(events.iter().map(ArchivedEvent::of).collect())
}

/// A key's whole history, each event with what it changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyHistory {
    pub client_key_id: String,
    pub events: Vec<HistoryEntry>,
}

/// One event of a key's history: the archived event plus what it changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub archived: ArchivedEvent,
    /// What changed; never a secret. Serialized as its sentence.
    pub summary: Change,
}

/// A key's whole history with what each event changed, or `None` for an unknown key.
pub async fn history(store: &Store, id: &str) -> Result<Option<KeyHistory>, StoreError> {
    let events = store.history(id, 0, None).await?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut state: Option<KeyState> = None;
    let mut entries = Vec::with_capacity(events.len());
    for recorded in events {
        let summary = Change::of(state.as_ref(), &recorded.event);
        let archived = ArchivedEvent::of(&recorded);
        match state.as_mut() {
            Some(state) => state.apply(recorded.event),
            None => state = KeyState::created(recorded.event),
        }
        entries.push(HistoryEntry { archived, summary });
    }
    Ok(Some(KeyHistory {
        client_key_id: id.to_owned(),
        events: entries,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::EventMetadata;

    fn recorded() -> RecordedEvent {
        let at = DateTime::from_timestamp(1_767_225_600, 0).expect("time");
        RecordedEvent {
            aggregate_id: "ck_1".to_owned(),
            sequence: 7,
            event: ClientKeyEvent::ClientKeyEnabled { at },
            metadata: EventMetadata {
                actor: "admin:ops".to_owned(),
                at,
                request_id: "req-1".to_owned(),
                reason: Some("back".to_owned()),
                idempotency_key: Some("idem".to_owned()),
                request_hash: Some("hash".to_owned()),
                chain: Some("link".to_owned()),
            },
        }
    }

    #[test]
    fn an_event_is_sent_as_api_md_shapes_it_in_its_usual_key_order() {
        let event = AuditEvent::of(&recorded());
        let expected = json!({
            "sequence": 7,
            "type": "ClientKeyEnabled",
            "payload": {"at": "2026-01-01T00:00:00Z"},
            "metadata": {
                "actor": "admin:ops",
                "at": "2026-01-01T00:00:00Z",
                "request_id": "req-1",
                "reason": "back",
            },
        });
        // Byte for byte: the text a `Value` (sorted keys) used to give.
        assert_eq!(
            serde_json::to_string(&event).expect("json"),
            expected.to_string()
        );
        let page = EventsPage {
            events: vec![event],
            next_after: None,
        };
        assert_eq!(
            serde_json::to_string(&page).expect("json"),
            json!({"events": [expected], "next_after": null}).to_string()
        );
    }

    #[test]
    fn an_archived_event_adds_its_chain_link() {
        let archived = ArchivedEvent::of(&recorded());
        let value = serde_json::to_value(&archived).expect("json");
        assert_eq!(value["chain"], "link");
        assert_eq!(value["sequence"], 7);
        assert_eq!(value.as_object().map(|o| o.len()), Some(5));
    }

    #[test]
    fn a_verify_report_says_intact_only_without_a_broken_link() {
        let intact = VerifyReport {
            events: 5,
            legacy_events: 0,
            broken: None,
        };
        assert_eq!(
            serde_json::to_string(&intact).expect("json"),
            json!({"intact": true, "events": 5, "legacy_events": 0, "broken": null}).to_string()
        );
        let broken = VerifyReport {
            events: 1,
            legacy_events: 0,
            broken: Some(Broken::new(
                "ck_1",
                2,
                Problem::Renumbered { written_as: 3 },
            )),
        };
        let expected = json!({
            "intact": false,
            "events": 1,
            "legacy_events": 0,
            "broken": {
                "client_key_id": "ck_1",
                "sequence": 2,
                "problem": "reordered",
                "message": "the event stored as sequence 2 was written as sequence 3: \
                            events were reordered or renumbered",
            },
        });
        assert_eq!(
            serde_json::to_string(&broken).expect("json"),
            expected.to_string()
        );
    }
}
