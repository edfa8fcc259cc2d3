//! Group commit, for both stores: the cqrs-es libraries for every read, our own writes.
//!
//! postgres-es and sqlite-es commit each command as its own transaction: `BEGIN`,
//! `INSERT`, `COMMIT`, one log flush per command. That capped admin commands far below
//! what either database commits here (BENCHMARKS.md, "Admin commands"; README, "Stores",
//! for SQLite, where the pool's connections also queued for its single write lock in
//! SQLite's busy handler, whose sleeps made the tail latency). [`GroupCommitRepository`]
//! keeps the cqrs-es contract (`PersistedEventRepository`, so loads, upcasting and the
//! optimistic check stay cqrs-es's) and changes only how a single-event commit reaches
//! the database:
//! commits that arrive while others are in flight are written together, in one
//! transaction, one log flush for the whole group. Every event of a group is durable
//! before any of its commands is answered.
//!
//! `ON CONFLICT DO NOTHING` keeps one command's conflict from failing the others: an
//! event whose `(aggregate_type, aggregate_id, sequence)` another writer took, or whose
//! `Idempotency-Key` is already recorded, is simply not returned by the insert, and its
//! command gets the optimistic-lock error it would have got alone. An insert that fails
//! for another reason is retried one event at a time, so only the offending command
//! sees the error.
//!
//! Gathering groups and answering commands is written once, here; a [`GroupWriter`] (one
//! per database, `postgres.rs` and `sqlite.rs`) says how a group goes in and how many
//! groups may be in flight at once.

mod postgres;
mod sqlite;

use std::future::Future;
use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::is_unavailable;
use crate::metrics::{count_group_commit, count_query};

/// Events per group at most. Larger groups gain little (the flush is already shared)
/// and make one group's latency all of its commands'.
const MAX_GROUP: usize = 64;

/// A database that can take a group of events in one transaction.
pub trait GroupWriter: Clone + Send + Sync + 'static {
    /// The cqrs-es repository that serves every read (and the rare multi-event commit).
    type Reads: PersistedEventRepository;

    /// Groups in flight at once.
    const COMMITTERS: usize;

    fn reads(&self) -> Self::Reads;

    /// Inserts the group atomically, skipping (not failing on) any event that conflicts
    /// with a stored one, and returns `(aggregate_id, sequence)` of the events that went in.
    /// No two events of the group share a key ([`gather`] sees to that).
    fn insert(
        &self,
        group: &[NewEvent],
    ) -> impl Future<Output = Result<Vec<(String, i64)>, sqlx::Error>> + Send;
}

/// One row of the events table to be, serialized exactly as sqlite-es and postgres-es
/// serialize it (`serde_json`'s compact text), so their reads decode it.
#[derive(Debug)]
pub struct NewEvent {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

/// One event waiting for its group, and where its command waits.
struct Pending {
    event: NewEvent,
    done: oneshot::Sender<Result<(), PersistenceError>>,
}

/// Why a whole group failed, handed to each of its commands (the driver's error is not
/// `Clone`; what callers need from it is whether the database was reachable).
#[derive(Debug, thiserror::Error)]
#[error("committing a group of events failed: {0}")]
struct GroupFailed(String);

pub struct GroupCommitRepository<W: GroupWriter> {
    reads: W::Reads,
    queue: mpsc::UnboundedSender<Pending>,
}

impl<W: GroupWriter> std::fmt::Debug for GroupCommitRepository<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommitRepository")
    }
}

impl<W: GroupWriter> GroupCommitRepository<W> {
    /// Starts the committers on the current runtime. They stop when the last clone of
    /// the repository is dropped (the queue closes).
    pub fn new(writer: W) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..W::COMMITTERS {
            tokio::spawn(committer(writer.clone(), Arc::clone(&receiver)));
        }
        Self {
            reads: writer.reads(),
            queue,
        }
    }

    async fn commit_one<A: Aggregate>(
        &self,
        event: &SerializedEvent,
    ) -> Result<(), PersistenceError> {
        let (done, outcome) = oneshot::channel();
        let pending = Pending {
            event: NewEvent {
                aggregate_type: A::TYPE,
                aggregate_id: event.aggregate_id.clone(),
                sequence: i64::try_from(event.sequence)
                    .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: event.payload.to_string(),
                metadata: event.metadata.to_string(),
            },
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

impl<W: GroupWriter> PersistedEventRepository for GroupCommitRepository<W> {
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
            // NOTHING` could keep some and drop others, so they take the library's own
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
/// group, answers each command, and goes again.
async fn committer<W: GroupWriter>(
    writer: W,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
) {
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
        commit_group(&writer, group).await;
    }
}

/// Adds what has queued to `group`, up to [`MAX_GROUP`]. Two events of one key in one
/// group would be ambiguous in what the insert returns, so an event of a key already in
/// the group ends it and is returned, to start the next group (commands on one key queue
/// behind one lock on this node, so this is rare).
fn gather(
    receiver: &mut mpsc::UnboundedReceiver<Pending>,
    group: &mut Vec<Pending>,
) -> Option<Pending> {
    while group.len() < MAX_GROUP {
        let next = receiver.try_recv().ok()?;
        if group.iter().any(|p| same_key(&p.event, &next.event)) {
            return Some(next);
        }
        group.push(next);
    }
    None
}

fn same_key(a: &NewEvent, b: &NewEvent) -> bool {
    a.aggregate_type == b.aggregate_type && a.aggregate_id == b.aggregate_id
}

async fn commit_group<W: GroupWriter>(writer: &W, group: Vec<Pending>) {
    let (events, waiting): (Vec<NewEvent>, Vec<_>) =
        group.into_iter().map(|p| (p.event, p.done)).unzip();
    match insert(writer, &events).await {
        Ok(inserted) => answer(&events, waiting, &inserted),
        // One malformed event must not fail the commands it happened to share a group
        // with: an error that is not about reaching the database is retried one event
        // at a time, so only that event's command sees it.
        Err(err) if events.len() > 1 && !is_unavailable(&err) => {
            tracing::warn!(error = %err, events = events.len(), "group commit failed; committing its events one by one");
            for (event, done) in events.iter().zip(waiting) {
                let alone = std::slice::from_ref(event);
                match insert(writer, alone).await {
                    Ok(inserted) => answer(alone, vec![done], &inserted),
                    Err(err) => fail(vec![done], &err),
                }
            }
        }
        Err(err) => fail(waiting, &err),
    }
}

async fn insert<W: GroupWriter>(
    writer: &W,
    events: &[NewEvent],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    count_query();
    count_group_commit(events.len());
    writer.insert(events).await
}

/// Every event the insert returned is committed; one it did not return conflicted.
fn answer(
    events: &[NewEvent],
    waiting: Vec<oneshot::Sender<Result<(), PersistenceError>>>,
    inserted: &[(String, i64)],
) {
    for (event, done) in events.iter().zip(waiting) {
        let committed = inserted
            .iter()
            .any(|(id, sequence)| *id == event.aggregate_id && *sequence == event.sequence);
        let result = if committed {
            Ok(())
        } else {
            Err(PersistenceError::OptimisticLockError)
        };
        // The command may have been dropped (its client went away); its event stands.
        let _ = done.send(result);
    }
}

fn fail(waiting: Vec<oneshot::Sender<Result<(), PersistenceError>>>, err: &sqlx::Error) {
    let unavailable = is_unavailable(err);
    for done in waiting {
        let failed = Box::new(GroupFailed(err.to_string()));
        let _ = done.send(Err(if unavailable {
            PersistenceError::ConnectionError(failed)
        } else {
            PersistenceError::UnknownError(failed)
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(
        aggregate_id: &str,
        sequence: i64,
    ) -> (Pending, oneshot::Receiver<Result<(), PersistenceError>>) {
        let (done, outcome) = oneshot::channel();
        let event = NewEvent {
            aggregate_type: "ClientKey",
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            event_type: "OriginsChanged".to_owned(),
            event_version: "1.0".to_owned(),
            payload: "{}".to_owned(),
            metadata: "{}".to_owned(),
        };
        (Pending { event, done }, outcome)
    }

    fn queue(events: &[(&str, i64)]) -> mpsc::UnboundedReceiver<Pending> {
        let (sender, receiver) = mpsc::unbounded_channel();
        for (id, sequence) in events {
            sender.send(pending(id, *sequence).0).expect("queued");
        }
        receiver
    }

    fn ids(group: &[Pending]) -> Vec<&str> {
        group
            .iter()
            .map(|p| p.event.aggregate_id.as_str())
            .collect()
    }

    #[test]
    fn gathering_takes_everything_queued_on_distinct_keys() {
        let mut receiver = queue(&[("b", 1), ("c", 4)]);
        let mut group = vec![pending("a", 1).0];

        let carried = gather(&mut receiver, &mut group);

        assert!(carried.is_none());
        assert_eq!(ids(&group), ["a", "b", "c"]);
    }

    #[test]
    fn a_second_event_of_a_key_in_the_group_ends_it_and_starts_the_next() {
        let mut receiver = queue(&[("b", 1), ("a", 2), ("c", 1)]);
        let mut group = vec![pending("a", 1).0];

        let carried = gather(&mut receiver, &mut group).expect("carried");

        assert_eq!(ids(&group), ["a", "b"]);
        assert_eq!(
            (carried.event.aggregate_id.as_str(), carried.event.sequence),
            ("a", 2)
        );
        assert_eq!(
            receiver.try_recv().expect("left queued").event.aggregate_id,
            "c"
        );
    }

    #[test]
    fn a_group_stops_at_its_size_limit_and_leaves_the_rest_queued() {
        let names: Vec<String> = (0..MAX_GROUP + 5).map(|i| format!("k{i}")).collect();
        let events: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let mut receiver = queue(&events[1..]);
        let mut group = vec![pending(events[0].0, 1).0];

        let carried = gather(&mut receiver, &mut group);

        assert!(carried.is_none());
        assert_eq!(group.len(), MAX_GROUP);
        assert_eq!(receiver.len(), 5);
    }

    #[test]
    fn each_command_is_told_whether_its_own_event_went_in() {
        let (first, first_outcome) = pending("a", 1);
        let (second, second_outcome) = pending("b", 3);

        // "b" went in at another sequence: someone else's event, not this command's.
        answer(
            &[first.event, second.event],
            vec![first.done, second.done],
            &[("a".to_owned(), 1), ("b".to_owned(), 2)],
        );

        assert!(matches!(first_outcome.blocking_recv(), Ok(Ok(()))));
        assert!(matches!(
            second_outcome.blocking_recv(),
            Ok(Err(PersistenceError::OptimisticLockError))
        ));
    }

    #[test]
    fn a_failed_group_tells_its_commands_whether_the_database_was_reachable() {
        let (down, down_outcome) = pending("a", 1);
        let (refused, refused_outcome) = pending("b", 1);

        fail(vec![down.done], &sqlx::Error::PoolClosed);
        fail(vec![refused.done], &sqlx::Error::RowNotFound);

        assert!(matches!(
            down_outcome.blocking_recv(),
            Ok(Err(PersistenceError::ConnectionError(_)))
        ));
        assert!(matches!(
            refused_outcome.blocking_recv(),
            Ok(Err(PersistenceError::UnknownError(_)))
        ));
    }
}
