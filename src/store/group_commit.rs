//! The PostgreSQL event repository: postgres-es for every read, group commit for writes.
//!
//! postgres-es commits each command as `BEGIN`, `INSERT`, `COMMIT`: three round trips and
//! one WAL flush per command, which capped admin commands far below what PostgreSQL
//! commits here (BENCHMARKS.md, "Admin commands"). [`GroupCommitRepository`] keeps the
//! cqrs-es contract (`PersistedEventRepository`, so loads, upcasting and the optimistic
//! check stay cqrs-es's) and changes only how a single-event commit reaches the database:
//! commits that arrive while others are in flight are sent together as one statement,
//!
//! ```sql
//! INSERT INTO events ... SELECT ... FROM UNNEST($1, ..., $7) ON CONFLICT DO NOTHING RETURNING ...
//! ```
//!
//! one round trip and one WAL flush for the whole group. A statement is atomic, so every
//! event of the group is durable before any of its commands is answered. `DO NOTHING`
//! keeps one command's conflict from failing the others: an event whose
//! `(aggregate_type, aggregate_id, sequence)` another writer took, or whose
//! `Idempotency-Key` is already recorded, is simply not returned, and its command gets
//! the optimistic-lock error it would have got alone.

use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::is_unavailable;
use crate::metrics::{count_group_commit, count_query};

/// Events per statement at most. Larger groups gain little (the flush is already shared)
/// and make one statement's latency the whole group's.
const MAX_GROUP: usize = 64;

/// Statements in flight at once. While one group waits for its WAL flush, the next
/// gathers; a few of them keep PostgreSQL's own group commit busy without taking the
/// whole pool (the feed, the token ledger and loads need connections too).
const COMMITTERS: usize = 4;

const INSERT_GROUP: &str = "INSERT INTO events \
     (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
     SELECT t, id, seq, et, ev, p::jsonb, m::jsonb \
     FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) \
     AS r(t, id, seq, et, ev, p, m) \
     ON CONFLICT DO NOTHING \
     RETURNING aggregate_id, sequence";

/// One event waiting for its group's statement, and where its command waits.
struct Pending {
    aggregate_type: &'static str,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    done: oneshot::Sender<Result<(), PersistenceError>>,
}

/// Why a whole group failed, handed to each of its commands (the driver's error is not
/// `Clone`; what callers need from it is whether the database was reachable).
#[derive(Debug, thiserror::Error)]
#[error("committing a group of events failed: {0}")]
struct GroupFailed(String);

pub struct GroupCommitRepository {
    reads: PostgresEventRepository,
    queue: mpsc::UnboundedSender<Pending>,
}

impl std::fmt::Debug for GroupCommitRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommitRepository")
    }
}

impl GroupCommitRepository {
    /// Starts the committers on the current runtime. They stop when the last clone of
    /// the repository is dropped (the queue closes).
    pub fn new(pool: PgPool) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..COMMITTERS {
            tokio::spawn(committer(pool.clone(), Arc::clone(&receiver)));
        }
        Self {
            reads: PostgresEventRepository::new(pool),
            queue,
        }
    }

    async fn commit_one<A: Aggregate>(
        &self,
        event: &SerializedEvent,
    ) -> Result<(), PersistenceError> {
        let (done, outcome) = oneshot::channel();
        let pending = Pending {
            aggregate_type: A::TYPE,
            aggregate_id: event.aggregate_id.clone(),
            sequence: i64::try_from(event.sequence)
                .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?,
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            payload: event.payload.to_string(),
            metadata: event.metadata.to_string(),
            done,
        };
        self.queue
            .send(pending)
            .map_err(|_| unavailable("the committers have stopped"))?;
        outcome
            .await
            .unwrap_or_else(|_| Err(unavailable("a committer stopped mid-commit")))
    }
}

impl PersistedEventRepository for GroupCommitRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match (events, snapshot_update) {
            ([], None) => Ok(()),
            ([event], None) => self.commit_one::<A>(event).await,
            // Several events of one command must land together or not at all; `DO
            // NOTHING` could keep some and drop others, so they take postgres-es's own
            // transaction. (ClientKey decides at most one event per command.)
            (events, snapshot_update) => {
                count_query();
                self.reads.persist::<A>(events, snapshot_update).await
            }
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}

fn unavailable(why: &str) -> PersistenceError {
    PersistenceError::ConnectionError(Box::new(GroupFailed(why.to_owned())))
}

/// Takes whatever has queued (waiting for the first event only), commits it as one
/// statement, answers each command, and goes again.
async fn committer(pool: PgPool, receiver: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>) {
    let mut carried: Option<Pending> = None;
    loop {
        let mut group = Vec::with_capacity(MAX_GROUP);
        match carried.take() {
            // Never wait for the queue with an event in hand: another committer may be
            // waiting on an empty queue while holding it.
            Some(pending) => {
                group.push(pending);
                if let Ok(mut receiver) = receiver.try_lock() {
                    carried = gather(&mut receiver, &mut group);
                }
            }
            None => {
                let mut receiver = receiver.lock().await;
                match receiver.recv().await {
                    Some(pending) => group.push(pending),
                    None => return,
                }
                carried = gather(&mut receiver, &mut group);
            }
        }
        commit_group(&pool, group).await;
    }
}

/// Adds what has queued to `group`, up to [`MAX_GROUP`]. Two events of one key in one
/// statement would be ambiguous in what it returns, so an event of a key already in the
/// group ends it and is returned, to start the next group (commands on one key queue
/// behind one lock on this node, so this is rare).
fn gather(
    receiver: &mut mpsc::UnboundedReceiver<Pending>,
    group: &mut Vec<Pending>,
) -> Option<Pending> {
    while group.len() < MAX_GROUP {
        let next = receiver.try_recv().ok()?;
        if group.iter().any(|p| same_row_key(p, &next)) {
            return Some(next);
        }
        group.push(next);
    }
    None
}

fn same_row_key(a: &Pending, b: &Pending) -> bool {
    a.aggregate_type == b.aggregate_type && a.aggregate_id == b.aggregate_id
}

async fn commit_group(pool: &PgPool, group: Vec<Pending>) {
    match insert(pool, &group).await {
        Ok(inserted) => answer(group, &inserted),
        // One malformed event must not fail the commands it happened to share a
        // statement with: a statement error that is not about reaching the database is
        // retried one event at a time, so only that event's command sees it.
        Err(err) if group.len() > 1 && !is_unavailable(&err) => {
            tracing::warn!(error = %err, events = group.len(), "group commit failed; committing its events one by one");
            for pending in group {
                match insert(pool, std::slice::from_ref(&pending)).await {
                    Ok(inserted) => answer(vec![pending], &inserted),
                    Err(err) => fail(vec![pending], &err),
                }
            }
        }
        Err(err) => fail(group, &err),
    }
}

async fn insert(pool: &PgPool, group: &[Pending]) -> Result<Vec<(String, i64)>, sqlx::Error> {
    count_query();
    count_group_commit(group.len());
    let column = |f: fn(&Pending) -> &str| group.iter().map(f).collect::<Vec<&str>>();
    sqlx::query_as(INSERT_GROUP)
        .bind(column(|p| p.aggregate_type))
        .bind(column(|p| &p.aggregate_id))
        .bind(group.iter().map(|p| p.sequence).collect::<Vec<i64>>())
        .bind(column(|p| &p.event_type))
        .bind(column(|p| &p.event_version))
        .bind(column(|p| &p.payload))
        .bind(column(|p| &p.metadata))
        .fetch_all(pool)
        .await
}

/// Every event the statement returned is committed; one it did not return conflicted.
fn answer(group: Vec<Pending>, inserted: &[(String, i64)]) {
    for pending in group {
        let committed = inserted
            .iter()
            .any(|(id, sequence)| *id == pending.aggregate_id && *sequence == pending.sequence);
        let result = if committed {
            Ok(())
        } else {
            Err(PersistenceError::OptimisticLockError)
        };
        // The command may have been dropped (its client went away); its event stands.
        let _ = pending.done.send(result);
    }
}

fn fail(group: Vec<Pending>, err: &sqlx::Error) {
    let unavailable = is_unavailable(err);
    for pending in group {
        let failed = Box::new(GroupFailed(err.to_string()));
        let _ = pending.done.send(Err(if unavailable {
            PersistenceError::ConnectionError(failed)
        } else {
            PersistenceError::UnknownError(failed)
        }));
    }
}
