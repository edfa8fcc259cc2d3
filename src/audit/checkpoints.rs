//! Auditors' checkpoints: signing one over every key's head now, and checking the store
//! against one kept outside it (cut short, rewritten, missing keys, a bad signature).

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde::{Serialize, Serializer};

use crate::chain::{Broken, Hasher, LinkInput, Problem, Verifier};
use crate::checkpoint::{self, Checkpoint};
use crate::store::{Store, StoreError};
use crate::tokens::{CheckpointSignatureError, SigningKeys};

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
