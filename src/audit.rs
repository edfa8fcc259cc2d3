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
pub mod periodic;

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::aggregate::KeyState;
use domain::{
    AllowList, ClientKeyEvent, KeyStatus, PreviousPublicKey, PublicKey, RequestOrigin, TokenPolicy,
};
use futures::StreamExt;
use projections::ClientKeyView;
use serde::{Serialize, Serializer};
use serde_json::Value;

pub use self::change::{Change, FieldChange};
use crate::chain::{self, Broken, Hasher, LinkInput, Problem, Verifier};
use crate::checkpoint::{self, Checkpoint};
use crate::sessions::{self, FamilyStanding};
use crate::store::{RecordedEvent, Store, StoreError};
use crate::tokens::{CheckpointSignatureError, Claims, SigningKeys, TokenError, TokenKind};

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

/// Why no checkpoint was signed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A checkpoint vouches for the store as it is; one over a broken chain would vouch
    /// for the tampering.
    #[error(
        "the event chain is broken at {} sequence {} ({}): no checkpoint is signed over a \
         broken history; run audit verify",
        .0.client_key_id, .0.sequence, .0.problem.code()
    )]
    Broken(Broken),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A signed checkpoint of every key's head now (`GET /internal/v1/audit/checkpoint`,
/// `audit checkpoint`). The heads are the links computed from the stored rows while the
/// whole chain is verified, never the stored `chain` fields taken on trust.
pub async fn checkpoint(
    store: &Store,
    keys: &SigningKeys,
    now: DateTime<Utc>,
) -> Result<Checkpoint, CheckpointError> {
    let mut verifier = Verifier::default();
    let mut heads = Vec::new();
    {
        let mut events = store.replay_raw();
        while let Some(event) = events.next().await {
            let event = event.map_err(|err| match err {
                StoreError::Corrupt {
                    aggregate_id,
                    sequence,
                    ..
                } => CheckpointError::Broken(Broken::new(
                    &aggregate_id,
                    sequence,
                    Problem::Unreadable,
                )),
                other => CheckpointError::Store(other),
            })?;
            if verifier.key() != event.aggregate_id {
                heads.extend(verifier.head());
            }
            verifier.feed(&event).map_err(CheckpointError::Broken)?;
        }
    }
    heads.extend(verifier.head());
    if let Some(broken) = verifier.finish() {
        return Err(CheckpointError::Broken(broken));
    }
    // The database's collation orders ids its own way; the root is over byte order.
    heads.sort_unstable_by(|a, b| a.client_key.as_bytes().cmp(b.client_key.as_bytes()));
    let mut checkpoint = Checkpoint {
        format: checkpoint::FORMAT.to_owned(),
        at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        events: heads.iter().map(|h| h.sequence).sum(),
        keys: heads.len() as u64,
        root: checkpoint::root_of(&heads),
        kid: keys.active_kid().to_owned(),
        signature: String::new(),
        heads,
    };
    let (_, signature) = keys.sign_checkpoint(&checkpoint.signed_body());
    checkpoint.signature = URL_SAFE_NO_PAD.encode(signature);
    Ok(checkpoint)
}

/// Whether a checkpoint's signature verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureCheck {
    Valid,
    Invalid,
    /// Its `kid` is not among our keys: the JWKS no longer lists it.
    UnknownKid,
}

/// What is wrong, found checking the store against a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// The signature does not verify.
    SignatureInvalid,
    /// The signing key is not in the JWKS (any more).
    SigningKeyUnknown,
    /// The heads are not what the signed root and counts commit to.
    CheckpointEdited,
    /// The key's history ends before the committed sequence: its newest events are gone.
    CutShort { store_head: u64 },
    /// The link at the committed sequence, recomputed from the stored rows, differs.
    Rewritten,
    /// No event of the key is left.
    Missing,
    /// The chain itself is broken (as plain verify reports it), e.g. after the checkpoint.
    Chain(Problem),
}

impl Finding {
    /// The stable code in the JSON.
    pub fn code(self) -> &'static str {
        match self {
            Self::SignatureInvalid => "signature_invalid",
            Self::SigningKeyUnknown => "signing_key_unknown",
            Self::CheckpointEdited => "checkpoint_edited",
            Self::CutShort { .. } => "cut_short",
            Self::Rewritten => "rewritten",
            Self::Missing => "missing",
            Self::Chain(problem) => problem.code(),
        }
    }
}

impl Serialize for Finding {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// One entry of `problems`: the key (none for the checkpoint itself), the sequence, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointProblem {
    pub client_key: Option<String>,
    /// A sentence for people.
    pub message: String,
    pub problem: Finding,
    pub sequence: Option<u64>,
}

impl CheckpointProblem {
    fn checkpoint(problem: Finding, message: String) -> Self {
        Self {
            client_key: None,
            message,
            problem,
            sequence: None,
        }
    }

    fn key(key: &str, sequence: u64, problem: Finding) -> Self {
        let message = match problem {
            Finding::CutShort { store_head } => format!(
                "the checkpoint has sequence {sequence}, the store's history ends at \
                 {store_head}: its newest events were removed"
            ),
            Finding::Rewritten => format!(
                "the history no longer passes through the checkpoint's link at sequence \
                 {sequence}: it was rewritten"
            ),
            Finding::Missing => {
                format!("the checkpoint has {sequence} events of this key; the store has none")
            }
            Finding::Chain(problem) => Broken::new(key, sequence, problem).message,
            _ => String::new(),
        };
        Self {
            client_key: Some(key.to_owned()),
            message,
            problem,
            sequence: Some(sequence),
        }
    }

    fn chain(broken: Broken) -> Self {
        Self {
            client_key: Some(broken.client_key_id),
            message: broken.message,
            problem: Finding::Chain(broken.problem),
            sequence: Some(broken.sequence),
        }
    }
}

/// The store checked against a checkpoint (`POST /internal/v1/audit/verify`,
/// `audit verify --checkpoint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The checkpoint's `at` and `kid`, echoed.
    pub checkpoint_at: String,
    pub kid: String,
    pub signature: SignatureCheck,
    /// Keys of the checkpoint checked, and keys written since (fine: the store extends it).
    pub keys: u64,
    pub new_keys: u64,
    /// Events read from the store.
    pub events: u64,
    pub problems: Vec<CheckpointProblem>,
}

impl CheckpointReport {
    pub fn intact(&self) -> bool {
        self.signature == SignatureCheck::Valid && self.problems.is_empty()
    }
}

/// `{"checkpoint_at", "events", "intact", "keys", "kid", "new_keys", "problems",
/// "signature"}`, `intact` derived.
impl Serialize for CheckpointReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            checkpoint_at: &'a str,
            events: u64,
            intact: bool,
            keys: u64,
            kid: &'a str,
            new_keys: u64,
            problems: &'a [CheckpointProblem],
            signature: SignatureCheck,
        }
        Body {
            checkpoint_at: &self.checkpoint_at,
            events: self.events,
            intact: self.intact(),
            keys: self.keys,
            kid: &self.kid,
            new_keys: self.new_keys,
            problems: &self.problems,
            signature: self.signature,
        }
        .serialize(serializer)
    }
}

/// A key being walked while checking a checkpoint.
#[derive(Debug)]
struct Walk {
    key: String,
    /// The checkpoint's sequence for this key (`None`: created since).
    committed: Option<u64>,
    last: u64,
    /// The link computed at the committed sequence, when the walk got there.
    at_committed: Option<String>,
    /// Its chain broke: links from there on are computed here, not by the verifier.
    previous: Option<String>,
    unreadable: bool,
}

/// Checks the store against a checkpoint: its signature and heads, then, in one streamed
/// pass that recomputes every link from the stored rows, that every committed key still
/// passes through its (sequence, link), and that the chain holds (after the checkpoint
/// too). Keys created since are fine. Call [`Checkpoint::check_form`] first.
pub async fn verify_checkpoint(
    store: &Store,
    keys: &SigningKeys,
    checkpoint: Checkpoint,
) -> Result<CheckpointReport, StoreError> {
    let mut problems = Vec::new();
    let signature = match URL_SAFE_NO_PAD.decode(&checkpoint.signature) {
        Err(_) => Err(CheckpointSignatureError::Invalid),
        Ok(bytes) => keys.verify_checkpoint(&checkpoint.kid, &checkpoint.signed_body(), &bytes),
    };
    let signature = match signature {
        Ok(()) => SignatureCheck::Valid,
        Err(CheckpointSignatureError::UnknownKid) => {
            problems.push(CheckpointProblem::checkpoint(
                Finding::SigningKeyUnknown,
                format!(
                    "the checkpoint was signed by key {}, which is not in the JWKS: it \
                     cannot be verified here",
                    checkpoint.kid
                ),
            ));
            SignatureCheck::UnknownKid
        }
        Err(CheckpointSignatureError::Invalid) => {
            problems.push(CheckpointProblem::checkpoint(
                Finding::SignatureInvalid,
                format!(
                    "the checkpoint's signature does not verify with key {}: it was edited \
                     or not signed by us",
                    checkpoint.kid
                ),
            ));
            SignatureCheck::Invalid
        }
    };
    if !checkpoint.heads_match() {
        problems.push(CheckpointProblem::checkpoint(
            Finding::CheckpointEdited,
            "the checkpoint's heads are not what its signed root and counts commit to: \
             they were edited"
                .to_owned(),
        ));
    }
    let Checkpoint {
        at: checkpoint_at,
        kid,
        heads,
        ..
    } = checkpoint;
    let committed_keys = heads.len() as u64;
    let mut committed: HashMap<String, (u64, String)> = heads
        .into_iter()
        .map(|h| (h.client_key, (h.sequence, h.link)))
        .collect();

    let mut verifier = Verifier::default();
    let mut hasher = Hasher::default();
    let mut walk: Option<Walk> = None;
    let mut new_keys = 0u64;
    let mut finish = |walk: Walk,
                      committed: &mut HashMap<String, (u64, String)>,
                      problems: &mut Vec<CheckpointProblem>| {
        let Some((sequence, link)) = committed.remove(&walk.key) else {
            new_keys += 1;
            return;
        };
        if walk.unreadable {
            return; // Already reported; nothing after it can be recomputed.
        }
        if walk.last < sequence {
            problems.push(CheckpointProblem::key(
                &walk.key,
                sequence,
                Finding::CutShort {
                    store_head: walk.last,
                },
            ));
        } else if walk.at_committed.as_deref() != Some(link.as_str()) {
            problems.push(CheckpointProblem::key(
                &walk.key,
                sequence,
                Finding::Rewritten,
            ));
        }
    };
    let mut events_read = 0u64;
    {
        let mut events = store.replay_raw();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => Ok(event),
                Err(StoreError::Corrupt {
                    aggregate_id,
                    sequence,
                    ..
                }) => {
                    problems.push(CheckpointProblem::key(
                        &aggregate_id,
                        sequence,
                        Finding::Chain(Problem::Unreadable),
                    ));
                    Err(aggregate_id)
                }
                Err(other) => return Err(other),
            };
            events_read += 1;
            let key = match &event {
                Ok(event) => event.aggregate_id.as_str(),
                Err(key) => key.as_str(),
            };
            // Per key, not per event: the key's id and committed sequence.
            if walk.as_ref().is_none_or(|w| w.key != key) {
                if let Some(done) = walk.take() {
                    finish(done, &mut committed, &mut problems);
                }
                walk = Some(Walk {
                    key: key.to_owned(),
                    committed: committed.get(key).map(|(sequence, _)| *sequence),
                    last: 0,
                    at_committed: None,
                    previous: None,
                    unreadable: false,
                });
            }
            let Some(current) = walk.as_mut() else {
                continue;
            };
            let Ok(event) = event else {
                current.unreadable = true;
                continue;
            };
            if current.unreadable {
                continue;
            }
            let sequence = event.sequence as u64;
            let link = match current.previous.take() {
                Some(previous) => hasher.link(&previous, &LinkInput::of(&event)),
                None => match verifier.feed(&event) {
                    Ok(()) => {
                        current.last = sequence;
                        if current.committed == Some(sequence) {
                            current.at_committed = Some(verifier.last_link().to_owned());
                        }
                        continue;
                    }
                    Err(broken) => {
                        // The verifier stopped before this event: go on from its last link.
                        problems.push(CheckpointProblem::chain(broken));
                        hasher.link(verifier.last_link(), &LinkInput::of(&event))
                    }
                },
            };
            current.last = sequence;
            if current.committed == Some(sequence) {
                current.at_committed = Some(link.clone());
            }
            current.previous = Some(link);
        }
    }
    if let Some(done) = walk.take() {
        finish(done, &mut committed, &mut problems);
    }
    if let Some(broken) = verifier.finish() {
        problems.push(CheckpointProblem::chain(broken));
    }
    let mut missing: Vec<(String, u64)> = committed
        .into_iter()
        .map(|(key, (sequence, _))| (key, sequence))
        .collect();
    missing.sort_unstable();
    for (key, sequence) in missing {
        problems.push(CheckpointProblem::key(&key, sequence, Finding::Missing));
    }
    Ok(CheckpointReport {
        checkpoint_at,
        kid,
        signature,
        keys: committed_keys,
        new_keys,
        events: events_read,
        problems,
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
