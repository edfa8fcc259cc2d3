//! The tamper-evidence chain: every event's metadata carries `chain`, a SHA-256 over the
//! previous event's link and everything stored about this event, so editing, deleting or
//! renumbering a stored event breaks the links from there on.
//!
//! The hash input is a sequence of length-prefixed fields (8-byte big-endian length, then
//! the bytes), so no two different events can produce the same input by moving bytes
//! from one field to the next:
//!
//! 1. the previous event's link as 64 lower-case hex characters ([`GENESIS`] before
//!    sequence 1);
//! 2. the payload as canonical JSON;
//! 3. the metadata as canonical JSON, without its `chain` entry;
//! 4. the aggregate (client key) id; 5. the sequence in decimal;
//! 6. the event type; 7. the event version, both as stored (before any upcasting).
//!
//! Canonical JSON is serde_json's serialization of a parsed `Value`: object keys sorted
//! (the workspace does not enable `preserve_order`, so `Map` is a `BTreeMap`), no
//! whitespace. PostgreSQL's `jsonb` reorders keys and drops whitespace, so links are
//! always computed from a re-serialized `Value`, never from the text a database returns.

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The metadata entry that holds the link.
pub const CHAIN_FIELD: &str = "chain";

/// The "previous link" of a key's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the link of one event is computed over (besides the previous link).
#[derive(Debug, Clone, Copy)]
pub struct LinkInput<'a> {
    pub aggregate_id: &'a str,
    pub sequence: u64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    /// The stored metadata object; its `chain` entry, if any, is left out of the hash.
    pub metadata: &'a Value,
}

/// Computes links, reusing one buffer for the canonical JSON (verify hashes every event
/// of the store, so allocations per event show up in its rate).
#[derive(Debug, Default)]
pub struct Hasher {
    buffer: Vec<u8>,
}

impl Hasher {
    /// The link of an event whose predecessor's link is `previous`, as lower-case hex.
    pub fn link(&mut self, previous: &str, input: &LinkInput<'_>) -> String {
        let mut sha = Sha256::new();
        field(&mut sha, previous.as_bytes());
        self.buffer.clear();
        // Writing a `Value` into a Vec cannot fail: no I/O, and every key is a string.
        let _ = serde_json::to_writer(&mut self.buffer, input.payload);
        field(&mut sha, &self.buffer);
        self.buffer.clear();
        let _ = match input.metadata {
            Value::Object(map) => serde_json::to_writer(&mut self.buffer, &WithoutChain(map)),
            other => serde_json::to_writer(&mut self.buffer, other),
        };
        field(&mut sha, &self.buffer);
        field(&mut sha, input.aggregate_id.as_bytes());
        field(&mut sha, input.sequence.to_string().as_bytes());
        field(&mut sha, input.event_type.as_bytes());
        field(&mut sha, input.event_version.as_bytes());
        hex::encode(sha.finalize())
    }
}

fn field(sha: &mut Sha256, bytes: &[u8]) {
    sha.update((bytes.len() as u64).to_be_bytes());
    sha.update(bytes);
}

/// A metadata object serialized exactly as serde_json serializes the same `Map` with
/// its `chain` entry removed, without cloning the map.
struct WithoutChain<'a>(&'a Map<String, Value>);

impl Serialize for WithoutChain<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entries = self.0.iter().filter(|(key, _)| key.as_str() != CHAIN_FIELD);
        let mut map = serializer.serialize_map(Some(entries.clone().count()))?;
        for (key, value) in entries {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The link stored in an event's metadata: `None` for an event written before the chain
/// existed (or one whose `chain` was stripped, which verify tells apart by position).
pub fn stored_link(metadata: &Value) -> Option<&str> {
    metadata.get(CHAIN_FIELD).and_then(Value::as_str)
}

/// The link the event after `history` must chain to: stored links where present, and for
/// events written before the chain existed the link they would have had.
pub fn implied_head(history: &[SerializedEvent]) -> String {
    let mut hasher = Hasher::default();
    history.iter().fold(GENESIS.to_owned(), |previous, event| {
        match stored_link(&event.metadata) {
            Some(link) => link.to_owned(),
            None => hasher.link(&previous, &LinkInput::of(event)),
        }
    })
}

impl<'a> LinkInput<'a> {
    /// The hashed fields of a stored (not upcast) event.
    pub fn of(event: &'a SerializedEvent) -> Self {
        Self {
            aggregate_id: &event.aggregate_id,
            sequence: event.sequence as u64,
            event_type: &event.event_type,
            event_version: &event.event_version,
            payload: &event.payload,
            metadata: &event.metadata,
        }
    }
}

/// What verify found wrong at a broken link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The event does not hash to its stored link: its payload, metadata, type or version
    /// changed after it was written (or the event before it was replaced).
    Edited,
    /// A sequence number is missing: an event was deleted.
    Deleted,
    /// The event hashes to its link only under another sequence number: events were
    /// reordered or renumbered.
    Renumbered { written_as: u64 },
    /// No link on an event that follows chained events of the same key.
    ChainMissing,
    /// No link on an event written after the store's first chained event (its `at` is
    /// later, or unreadable): its link was removed, since legacy events predate the chain.
    ChainStripped,
    /// The stored payload or metadata is not JSON (only SQLite can hold such text).
    Unreadable,
}

impl Problem {
    /// The stable code in verify's JSON.
    pub fn code(self) -> &'static str {
        match self {
            Self::Edited => "edited",
            Self::Deleted => "deleted",
            Self::Renumbered { .. } => "reordered",
            Self::ChainMissing => "chain_missing",
            Self::ChainStripped => "chain_stripped",
            Self::Unreadable => "unreadable",
        }
    }
}

/// Verify's JSON names a problem by its stable code.
impl Serialize for Problem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// The first broken link: which key, which sequence, what is wrong. Serialized as the
/// `broken` object of verify's JSON; fields in alphabetical order, the order that body
/// has always had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Broken {
    pub client_key_id: String,
    /// A sentence for people.
    pub message: String,
    /// `edited`, `deleted`, `reordered`, `chain_missing` or `unreadable`.
    #[schema(value_type = String)]
    pub problem: Problem,
    pub sequence: u64,
}

impl Broken {
    pub fn new(client_key_id: &str, sequence: u64, problem: Problem) -> Self {
        let message = match problem {
            Problem::Edited => format!(
                "event {sequence} does not match its chain link: its payload, metadata, type or \
                 version was changed after it was written (or the event before it was replaced)"
            ),
            Problem::Deleted => format!("event {sequence} is missing: it was deleted"),
            Problem::Renumbered { written_as } => format!(
                "the event stored as sequence {sequence} was written as sequence {written_as}: \
                 events were reordered or renumbered"
            ),
            Problem::ChainMissing => format!(
                "event {sequence} has no chain link although earlier events of this key have one"
            ),
            Problem::ChainStripped => format!(
                "event {sequence} has no chain link although it was written after this \
                 store's first chained event: its link was removed"
            ),
            Problem::Unreadable => format!("event {sequence} is not valid JSON"),
        };
        Self {
            client_key_id: client_key_id.to_owned(),
            sequence,
            problem,
            message,
        }
    }
}

/// Checks a stream of stored events, ordered by key then sequence, one at a time, so the
/// whole store is verified in constant memory.
///
/// Events without a link are accepted only as a key's *legacy prefix* (written before
/// the chain existed) and counted in [`Verifier::legacy`], never silently trusted: their
/// implied links are what the first chained event after them was hashed over, so editing
/// them is caught there; a key whose history is all legacy is protected by nothing.
/// A link missing after a chained event is [`Problem::ChainMissing`].
///
/// Stripping every link of a key would make it look all legacy; [`Verifier::finish`]
/// catches that when the stripped events are later than the store's first chained event
/// (legacy events were all written before the chain existed). Stripped events that are
/// also backdated before it cannot be told from legacy ones here: a checkpoint can.
#[derive(Debug)]
pub struct Verifier {
    hasher: Hasher,
    key: String,
    expected: u64,
    previous: String,
    chained: bool,
    /// The earliest time among each key's first chained event.
    first_chained_at: Option<DateTime<Utc>>,
    /// Each key's latest legacy event: (key, sequence, its `at` if readable).
    legacy_heads: Vec<(String, u64, Option<DateTime<Utc>>)>,
    /// Events checked so far.
    pub events: u64,
    /// Of those, events without a link in a key's legacy prefix.
    pub legacy: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self {
            hasher: Hasher::default(),
            key: String::new(),
            expected: 1,
            previous: GENESIS.to_owned(),
            chained: false,
            first_chained_at: None,
            legacy_heads: Vec::new(),
            events: 0,
            legacy: 0,
        }
    }
}

impl Verifier {
    /// Checks the next event. A mismatch comes back as [`Problem::Edited`]; [`diagnose`]
    /// can tell a renumbering apart with the key's whole history.
    pub fn feed(&mut self, event: &SerializedEvent) -> Result<(), Broken> {
        if self.key != event.aggregate_id {
            self.key.clone_from(&event.aggregate_id);
            self.expected = 1;
            self.previous = GENESIS.to_owned();
            self.chained = false;
        }
        let sequence = event.sequence as u64;
        if sequence != self.expected {
            return Err(Broken::new(&self.key, self.expected, Problem::Deleted));
        }
        let computed = self.hasher.link(&self.previous, &LinkInput::of(event));
        match stored_link(&event.metadata) {
            Some(link) if link == computed => {
                if !self.chained {
                    // Once per key: the store's chain began no later than this.
                    if let Some(at) = written_at(&event.metadata) {
                        self.first_chained_at =
                            Some(self.first_chained_at.map_or(at, |first| first.min(at)));
                    }
                }
                self.chained = true;
            }
            Some(_) => return Err(Broken::new(&self.key, sequence, Problem::Edited)),
            None if self.chained => {
                return Err(Broken::new(&self.key, sequence, Problem::ChainMissing))
            }
            None => {
                self.legacy += 1;
                let at = written_at(&event.metadata);
                match self.legacy_heads.last_mut() {
                    Some(last) if last.0 == self.key => {
                        last.1 = sequence;
                        // One unreadable time makes the whole prefix unplaceable.
                        last.2 = match (last.2, at) {
                            (Some(a), Some(b)) => Some(a.max(b)),
                            _ => None,
                        };
                    }
                    _ => self.legacy_heads.push((self.key.clone(), sequence, at)),
                }
            }
        }
        self.previous = computed;
        self.expected += 1;
        self.events += 1;
        Ok(())
    }
}

impl Verifier {
    /// After the last event: the first legacy event (by key) that cannot be legacy,
    /// written after the store's first chained event (or with no readable time).
    pub fn finish(&self) -> Option<Broken> {
        let chain_began = self.first_chained_at?;
        self.legacy_heads
            .iter()
            .find(|(_, _, at)| at.is_none_or(|at| at > chain_began))
            .map(|(key, sequence, _)| Broken::new(key, *sequence, Problem::ChainStripped))
    }

    /// The key being checked.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The link of the last event accepted, computed from its stored fields (for a
    /// legacy event, the link it would have had).
    pub fn last_link(&self) -> &str {
        &self.previous
    }

    /// The current key's head so far: its last accepted sequence and that link.
    pub fn head(&self) -> Option<crate::checkpoint::Head> {
        (self.expected > 1 && !self.key.is_empty()).then(|| crate::checkpoint::Head {
            client_key: self.key.clone(),
            sequence: self.expected - 1,
            link: self.previous.clone(),
        })
    }
}

/// An event's metadata `at`, if it is an RFC 3339 time.
fn written_at(metadata: &Value) -> Option<DateTime<Utc>> {
    metadata
        .get("at")
        .and_then(Value::as_str)
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
        .map(|at| at.with_timezone(&Utc))
}

/// Longest history [`diagnose`] searches (it tries every position against every link).
pub const DIAGNOSE_LIMIT: usize = 1000;

/// Looks closer at an event that does not match its link: if it matches under another
/// sequence number (after any stored link), it was moved, not edited.
pub fn diagnose(history: &[SerializedEvent], broken: Broken) -> Broken {
    if broken.problem != Problem::Edited || history.len() > DIAGNOSE_LIMIT {
        return broken;
    }
    let Some(event) = history
        .iter()
        .find(|e| e.sequence as u64 == broken.sequence)
    else {
        return broken;
    };
    let Some(stored) = stored_link(&event.metadata) else {
        return broken;
    };
    let mut hasher = Hasher::default();
    let previous_links: Vec<&str> = std::iter::once(GENESIS)
        .chain(history.iter().filter_map(|e| stored_link(&e.metadata)))
        .collect();
    let last = history.iter().map(|e| e.sequence as u64).max().unwrap_or(0);
    for written_as in (1..=last + 1).filter(|&s| s != broken.sequence) {
        let input = LinkInput {
            sequence: written_as,
            ..LinkInput::of(event)
        };
        if previous_links
            .iter()
            .any(|previous| hasher.link(previous, &input) == stored)
        {
            return Broken::new(
                &broken.client_key_id,
                broken.sequence,
                Problem::Renumbered { written_as },
            );
        }
    }
    broken
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn input<'a>(payload: &'a Value, metadata: &'a Value) -> LinkInput<'a> {
        LinkInput {
            aggregate_id: "ck_1",
            sequence: 2,
            event_type: "OriginsChanged",
            event_version: "1.0",
            payload,
            metadata,
        }
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_link() {
        // What PostgreSQL's jsonb hands back: other key order, other spacing.
        let written: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": "é"}}"#).expect("json");
        let read_back: Value =
            serde_json::from_str(r#"{"a":{"x":"\u00e9","y":[1,2]},"b":1}"#).expect("json");
        let metadata = json!({"actor": "admin:1", "at": "2026-01-01T00:00:00.000Z"});
        let mut hasher = Hasher::default();
        assert_eq!(
            hasher.link(GENESIS, &input(&written, &metadata)),
            hasher.link(GENESIS, &input(&read_back, &metadata))
        );
    }

    #[test]
    fn the_stored_chain_entry_is_not_part_of_the_hash() {
        let payload = json!({"OriginsChanged": {"origins": []}});
        let bare = json!({"actor": "admin:1"});
        let chained = json!({"actor": "admin:1", "chain": "abc"});
        let mut hasher = Hasher::default();
        assert_eq!(
            hasher.link(GENESIS, &input(&payload, &bare)),
            hasher.link(GENESIS, &input(&payload, &chained))
        );
    }

    #[test]
    fn every_hashed_field_changes_the_link() {
        let payload = json!({"OriginsChanged": {"origins": ["https://a.test"]}});
        let metadata = json!({"actor": "admin:1", "reason": "x"});
        let mut hasher = Hasher::default();
        let base = hasher.link(GENESIS, &input(&payload, &metadata));
        assert_eq!(base.len(), 64);

        let other_payload = json!({"OriginsChanged": {"origins": ["https://b.test"]}});
        let other_metadata = json!({"actor": "admin:1", "reason": "y"});
        let variants = [
            hasher.link(&"1".repeat(64), &input(&payload, &metadata)),
            hasher.link(GENESIS, &input(&other_payload, &metadata)),
            hasher.link(GENESIS, &input(&payload, &other_metadata)),
            hasher.link(
                GENESIS,
                &LinkInput {
                    aggregate_id: "ck_2",
                    ..input(&payload, &metadata)
                },
            ),
            hasher.link(
                GENESIS,
                &LinkInput {
                    sequence: 3,
                    ..input(&payload, &metadata)
                },
            ),
            hasher.link(
                GENESIS,
                &LinkInput {
                    event_type: "ConfigUpdated",
                    ..input(&payload, &metadata)
                },
            ),
            hasher.link(
                GENESIS,
                &LinkInput {
                    event_version: "0.9",
                    ..input(&payload, &metadata)
                },
            ),
        ];
        for variant in variants {
            assert_ne!(variant, base);
        }
    }

    #[test]
    fn bytes_cannot_move_between_fields() {
        // "ck_1" + "12" vs "ck_11" + "2": plain concatenation would collide.
        let payload = json!({});
        let metadata = json!({});
        let mut hasher = Hasher::default();
        let a = hasher.link(
            GENESIS,
            &LinkInput {
                aggregate_id: "ck_1",
                sequence: 12,
                ..input(&payload, &metadata)
            },
        );
        let b = hasher.link(
            GENESIS,
            &LinkInput {
                aggregate_id: "ck_11",
                sequence: 2,
                ..input(&payload, &metadata)
            },
        );
        assert_ne!(a, b);
    }

    /// A key's history with valid links; `legacy` events at the start have none.
    fn history(key: &str, len: u64, legacy: u64) -> Vec<SerializedEvent> {
        let mut hasher = Hasher::default();
        let mut previous = GENESIS.to_owned();
        (1..=len)
            .map(|sequence| {
                let mut event = SerializedEvent {
                    aggregate_id: key.to_owned(),
                    sequence: sequence as usize,
                    aggregate_type: "ClientKey".to_owned(),
                    event_type: "OriginsChanged".to_owned(),
                    event_version: "1.0".to_owned(),
                    payload: json!({"OriginsChanged": {"origins": [format!("https://{sequence}.test")]}}),
                    metadata: json!({"actor": "admin:1", "request_id": sequence.to_string()}),
                };
                previous = hasher.link(&previous, &LinkInput::of(&event));
                if sequence > legacy {
                    event.metadata[CHAIN_FIELD] = json!(previous);
                }
                event
            })
            .collect()
    }

    fn verify(events: &[SerializedEvent]) -> Result<Verifier, Broken> {
        let mut verifier = Verifier::default();
        for event in events {
            verifier.feed(event)?;
        }
        Ok(verifier)
    }

    #[test]
    fn an_untouched_store_verifies_with_its_event_count() {
        let mut events = history("ck_a", 3, 0);
        events.extend(history("ck_b", 2, 0));
        let verifier = verify(&events).expect("intact");
        assert_eq!((verifier.events, verifier.legacy), (5, 0));
        assert_eq!(
            implied_head(&events[..3]),
            stored_link(&events[2].metadata).expect("link")
        );
    }

    #[test]
    fn an_edited_payload_is_reported_at_its_sequence() {
        let mut events = history("ck_a", 3, 0);
        events[1].payload = json!({"OriginsChanged": {"origins": ["https://evil.test"]}});
        let broken = verify(&events).expect_err("broken");
        assert_eq!(
            (broken.client_key_id.as_str(), broken.sequence),
            ("ck_a", 2)
        );
        assert_eq!(broken.problem, Problem::Edited);
    }

    #[test]
    fn a_deleted_event_is_reported_as_the_missing_sequence() {
        let mut events = history("ck_a", 4, 0);
        events.remove(1);
        let broken = verify(&events).expect_err("broken");
        assert_eq!((broken.sequence, broken.problem), (2, Problem::Deleted));
    }

    #[test]
    fn swapped_events_are_diagnosed_as_reordered() {
        let mut events = history("ck_a", 4, 0);
        events.swap(1, 2);
        events[1].sequence = 2;
        events[2].sequence = 3;
        let broken = verify(&events).expect_err("broken");
        let broken = diagnose(&events, broken);
        assert_eq!(broken.sequence, 2);
        assert_eq!(broken.problem, Problem::Renumbered { written_as: 3 });
    }

    #[test]
    fn a_legacy_prefix_is_counted_and_sealed_by_the_first_chained_event() {
        let events = history("ck_a", 4, 2);
        let verifier = verify(&events).expect("intact");
        assert_eq!((verifier.events, verifier.legacy), (4, 2));

        let mut edited = events.clone();
        edited[0].payload = json!({"OriginsChanged": {"origins": []}});
        let broken = verify(&edited).expect_err("the chained event 3 seals events 1 and 2");
        assert_eq!((broken.sequence, broken.problem), (3, Problem::Edited));
    }

    /// `history` with every event's `at` set `minutes` minutes after midnight, re-linked.
    fn history_at(key: &str, len: u64, legacy: u64, minutes: u32) -> Vec<SerializedEvent> {
        let mut events = history(key, len, legacy);
        let mut hasher = Hasher::default();
        let mut previous = GENESIS.to_owned();
        for event in &mut events {
            let chained = stored_link(&event.metadata).is_some();
            event.metadata["at"] = json!(format!("2026-12-01T00:{minutes:02}:00Z"));
            event
                .metadata
                .as_object_mut()
                .expect("object")
                .remove(CHAIN_FIELD);
            previous = hasher.link(&previous, &LinkInput::of(event));
            if chained {
                event.metadata[CHAIN_FIELD] = json!(previous);
            }
        }
        events
    }

    fn verify_and_finish(events: &[SerializedEvent]) -> Result<Verifier, Broken> {
        let verifier = verify(events)?;
        match verifier.finish() {
            Some(broken) => Err(broken),
            None => Ok(verifier),
        }
    }

    #[test]
    fn a_key_stripped_of_every_link_after_the_chain_began_is_reported() {
        // ck_a chained at 00:01; ck_b's events have no link but were written at 00:05.
        let mut events = history_at("ck_a", 2, 0, 1);
        events.extend(history_at("ck_b", 3, 3, 5));
        let broken = verify_and_finish(&events).expect_err("stripped");
        assert_eq!(
            (
                broken.client_key_id.as_str(),
                broken.sequence,
                broken.problem
            ),
            ("ck_b", 3, Problem::ChainStripped)
        );

        // The same legacy key written before the chain began is accepted, counted.
        let mut events = history_at("ck_a", 2, 0, 5);
        events.extend(history_at("ck_b", 3, 3, 1));
        let verifier = verify_and_finish(&events).expect("legacy, not stripped");
        assert_eq!(verifier.legacy, 3);

        // A legacy key with no readable time cannot be placed before the chain.
        let mut events = history_at("ck_a", 2, 0, 1);
        let mut legacy = history_at("ck_b", 1, 1, 0);
        legacy[0].metadata["at"] = json!("yesterday");
        events.extend(legacy);
        assert_eq!(
            verify_and_finish(&events).expect_err("unplaceable").problem,
            Problem::ChainStripped
        );

        // A store with no chained event at all has nothing to compare against.
        assert!(verify_and_finish(&history_at("ck_b", 3, 3, 5)).is_ok());
    }

    #[test]
    fn the_head_is_the_last_sequence_with_its_computed_link() {
        let events = history("ck_a", 3, 1);
        let verifier = verify(&events).expect("intact");
        let head = verifier.head().expect("a head");
        assert_eq!((head.client_key.as_str(), head.sequence), ("ck_a", 3));
        assert_eq!(Some(head.link.as_str()), stored_link(&events[2].metadata));
        assert_eq!(head.link, implied_head(&events));
    }

    #[test]
    fn a_stripped_link_after_chained_events_is_reported() {
        let mut events = history("ck_a", 3, 0);
        events[2]
            .metadata
            .as_object_mut()
            .expect("object")
            .remove(CHAIN_FIELD);
        let broken = verify(&events).expect_err("broken");
        assert_eq!(
            (broken.sequence, broken.problem),
            (3, Problem::ChainMissing)
        );
    }
}
