//! Running admin commands: load the key, decide, commit with metadata, update this
//! node's read models before answering (so a command's effect is visible here the moment
//! its response is sent), and make retries with an Idempotency-Key harmless.

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use domain::{ClientKey, ClientKeyCommand, ClientKeyError, ClientKeyEvent, ClientKeyServices};
use projections::{ApplyOutcome, Directory};
use tracing::Instrument;

use crate::chain;
use crate::feed::{replay, Notifier};
use crate::store::{AggregateContext, EventMetadata, NoopRecord, RecordedEvent, Store, StoreError};

/// Attempts for a command without `expected_version` that keeps losing the optimistic
/// race to another node: each retry re-decides on fresh state, so nothing is lost or
/// applied twice.
const MAX_ATTEMPTS: u32 = 10;

/// Commands on one key from this node queue behind one of these (striped by key), so
/// the optimistic race is only ever lost to other nodes.
const LOCK_STRIPES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(#[from] ClientKeyError),
    #[error("expected version {expected} but the client key is at version {actual}")]
    StaleVersion { expected: u64, actual: u64 },
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// `ClientKey::decide` yields at most one event per command, which the chain relies
    /// on (one metadata map carries the event's own link): a bug, not the caller's fault.
    #[error("a command recorded {0} events; the chain needs one")]
    SeveralEvents(usize),
    /// The event or its metadata could not be serialized to compute its chain link.
    #[error("the event could not be serialized for its chain link")]
    Serialize(#[source] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who asked, why, and how to recognise a retry.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub metadata: EventMetadata,
    pub expected_version: Option<u64>,
}

/// The result of a command.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub version: u64,
    /// The event recorded, or `None` when the command changed nothing.
    pub event: Option<RecordedEvent>,
    /// True when this answers a retry from the first attempt's record.
    pub replayed: bool,
}

#[derive(Debug, Clone)]
pub struct CommandService {
    store: Arc<Store>,
    directory: Arc<Directory>,
    services: ClientKeyServices,
    /// Wakes the other nodes after each commit.
    notifier: Notifier,
    stripes: Arc<[tokio::sync::Mutex<()>]>,
}

impl CommandService {
    /// Must be called on a Tokio runtime: on PostgreSQL it starts the task that sends
    /// this node's wake-ups to the others (see [`Notifier`]).
    pub fn new(store: Arc<Store>, directory: Arc<Directory>, services: ClientKeyServices) -> Self {
        Self {
            notifier: Notifier::start(&store),
            store,
            directory,
            services,
            stripes: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    fn stripe(&self, aggregate_id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        aggregate_id.hash(&mut hasher);
        &self.stripes[hasher.finish() as usize % self.stripes.len()]
    }

    /// Runs `work` while no command of this node is between its commit and its update of
    /// the read models: every key's lock is taken (in order, so this cannot deadlock with
    /// a command, which holds one). A SQLite snapshot reads its position this way, so
    /// every event at or below it is already in the views (`snapshot/mod.rs`). Commands
    /// wait for the duration of `work`, one short query.
    pub async fn paused<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        let mut held = Vec::with_capacity(self.stripes.len());
        for stripe in self.stripes.iter() {
            held.push(stripe.lock().await);
        }
        work.await
    }

    /// The read models this service keeps current (the feed applies to the same ones).
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    pub fn services(&self) -> &ClientKeyServices {
        &self.services
    }

    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: ClientKeyCommand,
        context: CommandContext,
    ) -> Result<Outcome, CommandError> {
        let span = tracing::info_span!(
            "command",
            client_key = aggregate_id,
            request_id = context.metadata.request_id.as_str(),
        );
        self.execute_inner(aggregate_id, command, context)
            .instrument(span)
            .await
    }

    async fn execute_inner(
        &self,
        aggregate_id: &str,
        command: ClientKeyCommand,
        context: CommandContext,
    ) -> Result<Outcome, CommandError> {
        let _queued = self.stripe(aggregate_id).lock().await;
        if let Some(outcome) = self.replay_if_retry(&context.metadata).await? {
            return Ok(outcome);
        }
        let mut attempt = 0;
        let mut use_view = true;
        loop {
            attempt += 1;
            // The read model is the key's state as of its version, folded by the same
            // domain code, with the link of its last event: deciding from it saves the
            // two reads a command would otherwise make (the history, the previous link).
            // If another node wrote since, the commit conflicts on the sequence and the
            // next attempt loads from the store, so a stale view costs one retry and
            // never a wrong decision.
            let view = if use_view {
                self.directory
                    .by_id(aggregate_id)
                    .filter(|view| view.link().is_some())
            } else {
                None
            };
            use_view = false;
            let (mut loaded, previous) = match &view {
                Some(view) => (
                    AggregateContext {
                        aggregate_id: aggregate_id.to_owned(),
                        aggregate: ClientKey::from_state(view.state().clone()),
                        current_sequence: view.version() as usize,
                        current_snapshot: None,
                    },
                    view.link().map(str::to_owned),
                ),
                None => (self.store.load(aggregate_id).await?, None),
            };
            let current = loaded.current_sequence as u64;
            if let Some(expected) = context.expected_version {
                if expected != current {
                    if view.is_some() {
                        // The view may be behind another node's write: ask the store.
                        continue;
                    }
                    return Err(CommandError::StaleVersion {
                        expected,
                        actual: current,
                    });
                }
            }
            let sink = EventSink::<ClientKey>::default();
            loaded
                .aggregate
                .handle(command.clone(), &self.services, &sink)
                .await?;
            let events: Vec<ClientKeyEvent> = sink.collect().await;
            if events.is_empty() {
                return self
                    .remember_noop(aggregate_id, current, &context.metadata)
                    .await;
            }
            // The link needs the previous event as stored, which cannot change under us:
            // if another writer appended meanwhile, the commit fails as a conflict and the
            // next attempt links to the newer event.
            let previous = match previous {
                Some(link) => link,
                None => self.previous_link(aggregate_id, current).await?,
            };
            let metadata =
                chained_metadata(aggregate_id, current, &events, &context.metadata, &previous)?;
            match self.store.commit(events, loaded, &metadata).await {
                Ok(committed) => {
                    if let Some(last) = committed.last() {
                        self.notifier.notify(aggregate_id, last.sequence);
                    }
                    self.apply_to_read_models(&committed).await;
                    tracing::info!(
                        version = current + committed.len() as u64,
                        "command committed"
                    );
                    let event = committed.into_iter().last();
                    return Ok(Outcome {
                        version: event.as_ref().map_or(current, |e| e.sequence),
                        event,
                        replayed: false,
                    });
                }
                Err(err) => {
                    // A concurrent retry with the same Idempotency-Key may be what beat
                    // us (the store's unique index refuses the second write).
                    if let Some(outcome) = self.replay_if_retry(&context.metadata).await? {
                        return Ok(outcome);
                    }
                    match err {
                        StoreError::Conflict if context.expected_version.is_some() => {
                            let actual =
                                self.store.load(aggregate_id).await?.current_sequence as u64;
                            return Err(CommandError::StaleVersion {
                                expected: current,
                                actual,
                            });
                        }
                        StoreError::Conflict if attempt < MAX_ATTEMPTS => {
                            tracing::debug!(
                                attempt,
                                "optimistic conflict; deciding again on fresh state"
                            );
                            // Jittered back-off so racing nodes do not collide in lockstep.
                            let jitter = rand::random_range(1..=5 * u64::from(attempt));
                            tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
                        }
                        other => return Err(other.into()),
                    }
                }
            }
        }
    }

    /// The link of the key's event at `current`. Events written before the chain existed
    /// have none stored; their implied links are computed over the legacy prefix, so the
    /// first chained event also seals what came before it.
    async fn previous_link(&self, aggregate_id: &str, current: u64) -> Result<String, StoreError> {
        if current == 0 {
            return Ok(chain::GENESIS.to_owned());
        }
        if let Some(last) = self.store.raw_event(aggregate_id, current).await? {
            if let Some(link) = chain::stored_link(&last.metadata) {
                return Ok(link.to_owned());
            }
        }
        let history = self
            .store
            .raw_history(aggregate_id, 0, Some(current))
            .await?;
        Ok(chain::implied_head(&history))
    }

    async fn replay_if_retry(
        &self,
        metadata: &EventMetadata,
    ) -> Result<Option<Outcome>, CommandError> {
        let Some(key) = metadata.idempotency_key.as_deref() else {
            return Ok(None);
        };
        if let Some(first) = self.store.find_by_idempotency_key(key).await? {
            if first.metadata.request_hash != metadata.request_hash {
                return Err(CommandError::IdempotencyKeyReused);
            }
            return Ok(Some(Outcome {
                version: first.sequence,
                event: Some(first),
                replayed: true,
            }));
        }
        match self.store.find_noop(key).await? {
            Some(first) => Self::noop_answer(&first, metadata, true).map(Some),
            None => Ok(None),
        }
    }

    /// A command that changed nothing: its Idempotency-Key (if any) is remembered with
    /// its answer, so a retry is answered the same and another body under it is a 409.
    async fn remember_noop(
        &self,
        aggregate_id: &str,
        current: u64,
        metadata: &EventMetadata,
    ) -> Result<Outcome, CommandError> {
        let Some(key) = metadata.idempotency_key.as_deref() else {
            return Ok(Outcome {
                version: current,
                event: None,
                replayed: false,
            });
        };
        let ours = NoopRecord {
            request_hash: metadata.request_hash.clone().unwrap_or_default(),
            aggregate_id: aggregate_id.to_owned(),
            version: current,
        };
        let recorded = self.store.record_noop(key, &ours, metadata.at).await?;
        // Another request (on any node) may have taken the key between our look-up and
        // the insert: then its answer is the one that counts.
        let replayed = recorded != ours;
        Self::noop_answer(&recorded, metadata, replayed)
    }

    fn noop_answer(
        recorded: &NoopRecord,
        metadata: &EventMetadata,
        replayed: bool,
    ) -> Result<Outcome, CommandError> {
        if Some(&recorded.request_hash) != metadata.request_hash.as_ref() {
            return Err(CommandError::IdempotencyKeyReused);
        }
        Ok(Outcome {
            version: recorded.version,
            event: None,
            replayed,
        })
    }

    /// Makes committed events visible on this node before the response is sent. A gap
    /// (this node missed an event another node wrote) is closed by reloading the key.
    async fn apply_to_read_models(&self, committed: &[RecordedEvent]) {
        for recorded in committed {
            if let ApplyOutcome::Gap { have, got } = self.directory.apply(&recorded.to_stored()) {
                tracing::warn!(have, got, "read model behind the store; reloading the key");
                if let Err(err) = self.reload(&recorded.aggregate_id).await {
                    tracing::error!(error = %err, "reloading a client key's read model failed");
                }
                return;
            }
        }
    }

    /// Rebuilds one key's view from its full history (the same fold as the start-up
    /// replay, see `feed/replay.rs`).
    pub async fn reload(&self, aggregate_id: &str) -> Result<(), StoreError> {
        replay::reload(&self.store, &self.directory, aggregate_id).await
    }
}

/// The command's metadata with the tamper-evidence link of the one event it records
/// (see `chain.rs`). `ClientKey::decide` yields at most one event per command, which is
/// what lets one metadata map carry the event's own link.
fn chained_metadata(
    aggregate_id: &str,
    current: u64,
    events: &[ClientKeyEvent],
    metadata: &EventMetadata,
    previous: &str,
) -> Result<EventMetadata, CommandError> {
    let [event] = events else {
        return Err(CommandError::SeveralEvents(events.len()));
    };
    let mut metadata = EventMetadata {
        chain: None,
        ..metadata.clone()
    };
    // Exactly what cqrs-es will store: the serialized event and the string map.
    let payload = serde_json::to_value(event).map_err(CommandError::Serialize)?;
    let stored_metadata =
        serde_json::to_value(metadata.to_map()).map_err(CommandError::Serialize)?;
    let link = chain::Hasher::default().link(
        previous,
        &chain::LinkInput {
            aggregate_id,
            sequence: current + 1,
            event_type: &event.event_type(),
            event_version: &event.event_version(),
            payload: &payload,
            metadata: &stored_metadata,
        },
    );
    metadata.chain = Some(link);
    Ok(metadata)
}
