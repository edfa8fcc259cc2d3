//! How events reach this node's read models from the store.
//!
//! - **Start-up** ([`build`]): the newest usable read-model snapshot and the events after
//!   its position (`snapshot/mod.rs`), or every stored event ([`replay::replay_all`]),
//!   folded before the node says it is ready.
//! - **Cross-node feed** ([`spawn`], PostgreSQL only; SQLite is single-node): cqrs-es
//!   dispatches a committed event only inside the process that wrote it, so every node
//!   also reads what the others wrote, two ways:
//!   - *wake-ups*: the node that committed an event sends
//!     `pg_notify('widget_auth_events', '<aggregate_id>:<sequence>')` right after the
//!     commit ([`Notifier::notify`]; not a trigger, which would serialise every commit on
//!     PostgreSQL's notification lock, see `migrations/postgres/0004_notify_after_commit.sql`).
//!     A dedicated [`PgListener`] task forwards each one; the feed compares it
//!     with the directory's version of that key and loads only the missing events. This
//!     is the fast path (a few milliseconds).
//!   - *catch-up*: NOTIFY is only a hint (a node that was disconnected never gets what
//!     it missed), so every [`CATCH_UP_EVERY`], and at once whenever the listener has
//!     (re)connected, the feed reads the events table after its checkpoint.
//!
//! The checkpoint must never pass an event that is not visible yet. A global `BIGSERIAL`
//! alone would: transaction A takes position 10, B takes 11 and commits first, a reader
//! sees 11, checkpoints there, and loses 10 for good. So the feed reads in
//! `(txid, global_position)` order and only rows whose writing transaction is below
//! `pg_snapshot_xmin(pg_current_snapshot())` — every such transaction has finished, and
//! any transaction that commits later has a txid at or above that mark, hence above the
//! checkpoint. (See `migrations/postgres/0003_feed.sql`.) We chose this over a per-key
//! version table because the catch-up then costs one indexed range read of new rows,
//! however many keys there are. The price: a transaction left open anywhere in the
//! cluster holds the mark back, delaying catch-up (never losing events); wake-ups are
//! unaffected.
//!
//! Applying is idempotent per (key, sequence) through the directory's versions, so a
//! wake-up and a catch-up delivering the same event, or this node's own command echoing
//! back, is harmless; a gap (an event missing before the one at hand) reloads the key's
//! whole history.
//!
//! Files: `replay.rs` is the one streaming fold of stored events into views (start-up,
//! reloads, audits); `postgres.rs` is the feed itself, its queries and its wake-ups.

pub mod postgres;
pub mod replay;

use std::sync::Arc;
use std::time::Duration;

use projections::Directory;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use self::postgres::{feed_start, listen, Feed, WAKE_QUEUE};
pub use self::postgres::{Notifier, CATCH_UP_EVERY, CHANNEL};
use crate::metrics::{ProjectionLag, SnapshotMetrics};
use crate::snapshot::{self, Applied, Position, SnapshotError};
use crate::store::{Store, StoreError};

/// How this node's read models were built at start-up ([`build`]).
#[derive(Debug, Clone, Copy)]
pub struct Built {
    /// The position every event up to which is in the read models: where the feed (and
    /// the next snapshot) carries on.
    pub position: Position,
    /// Events applied: those after the snapshot that it did not hold already, or every
    /// stored event.
    pub events: u64,
    /// When the snapshot started from was taken (Unix ms); `None` after a full replay.
    pub snapshot_taken_at_ms: Option<i64>,
    /// That snapshot's id.
    pub snapshot_id: Option<i64>,
}

/// Builds the read models: from the newest usable snapshot plus the events after its
/// position when `use_snapshots`, else (or when there is none, or it is unusable: a
/// `warn`) by replaying every event. A store error is returned for the caller to retry.
pub async fn build(
    store: &Store,
    directory: &Directory,
    use_snapshots: bool,
) -> Result<Built, StoreError> {
    if use_snapshots {
        match snapshot::load(store, directory).await {
            Ok(Some(loaded)) => {
                let keys = loaded.keys;
                let (position, events) = after_snapshot(store, directory, loaded.position).await?;
                tracing::info!(keys, events, "read models loaded from a snapshot");
                return Ok(Built {
                    position,
                    events,
                    snapshot_taken_at_ms: Some(loaded.created_at_ms),
                    snapshot_id: Some(loaded.id),
                });
            }
            Ok(None) => {}
            Err(SnapshotError::Unusable(why)) => tracing::warn!(
                reason = %why,
                "read-model snapshot not used; replaying every event"
            ),
            Err(SnapshotError::Store(err)) => return Err(err),
            Err(SnapshotError::NotReady) => {}
        }
    }
    // Taken before the replay, so an event committed while it streams is either in the
    // replay or after the position.
    let position = match store {
        Store::Postgres { .. } => feed_start(store).await?.into(),
        Store::Sqlite { .. } => Position {
            txid: 0,
            global: snapshot::sqlite_head(store).await?,
        },
    };
    let events = replay::replay_all(store, directory).await?;
    Ok(Built {
        position,
        events,
        snapshot_taken_at_ms: None,
        snapshot_id: None,
    })
}

/// The events after a snapshot's `position`, applied in order; returns the position
/// reached and the events applied.
async fn after_snapshot(
    store: &Store,
    directory: &Directory,
    position: Position,
) -> Result<(Position, u64), StoreError> {
    match store {
        Store::Postgres { .. } => {
            let (cursor, events) =
                postgres::catch_up_from(store, directory, position.into()).await?;
            Ok((cursor.into(), events))
        }
        Store::Sqlite { .. } => {
            let (mut position, mut events) = (position, 0u64);
            loop {
                let (batch, last) = snapshot::sqlite_after(store, position.global).await?;
                let Some(last) = last else {
                    return Ok((position, events));
                };
                events += batch
                    .iter()
                    .filter(|e| {
                        directory
                            .by_id(&e.aggregate_id)
                            .is_none_or(|view| view.version() < e.sequence)
                    })
                    .count() as u64;
                replay::apply_in_order(store, directory, &batch).await?;
                position.global = last;
            }
        }
    }
}

/// Builds the read models (retrying while the store is down), marks the node ready,
/// then — on PostgreSQL — runs the cross-node feed until `shutdown`, publishing in
/// `applied` the position up to which it has applied every event (snapshots record it).
pub fn spawn(
    store: Arc<Store>,
    directory: Arc<Directory>,
    reports: Reports,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let Reports {
        lag,
        snapshots,
        applied,
        use_snapshots,
    } = reports;
    let mut tasks = Vec::new();
    // LISTEN first, so wake-ups for what is committed during the replay are queued.
    let wakes = store.postgres_pool().map(|pool| {
        let (sender, receiver) = mpsc::channel(WAKE_QUEUE);
        tasks.push(tokio::spawn(listen(pool.clone(), sender, shutdown.clone())));
        receiver
    });
    tasks.push(tokio::spawn(async move {
        let started = std::time::Instant::now();
        let built = loop {
            match until_shutdown(&shutdown, build(&store, &directory, use_snapshots)).await {
                None => return,
                Some(Ok(built)) => {
                    applied.set(built.position);
                    if let Some(id) = built.snapshot_id {
                        applied.trust(id);
                    }
                    snapshots.started(built.events, built.snapshot_taken_at_ms.is_some());
                    if let Some(taken_at) = built.snapshot_taken_at_ms {
                        snapshots.taken_at(taken_at);
                    }
                    directory.mark_ready();
                    tracing::info!(
                        events = built.events,
                        from_snapshot = built.snapshot_taken_at_ms.is_some(),
                        keys = directory.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "read models ready"
                    );
                    break built;
                }
                Some(Err(err)) => {
                    tracing::error!(error = %err, "replaying events failed; retrying");
                    if until_shutdown(&shutdown, tokio::time::sleep(Duration::from_secs(1)))
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
        };
        if let Some(wakes) = wakes {
            let feed = Feed {
                store,
                directory,
                cursor: built.position.into(),
                failing: false,
                lag,
                applied,
            };
            feed.run(wakes, shutdown).await;
        }
    }));
    tasks
}

/// Where the start-up and the feed report: the feed's lag, the start-up's metrics, the
/// applied position; and whether to start from a snapshot (`WIDGET_AUTH_SNAPSHOTS`).
#[derive(Debug, Clone)]
pub struct Reports {
    pub lag: ProjectionLag,
    pub snapshots: SnapshotMetrics,
    pub applied: Applied,
    pub use_snapshots: bool,
}

/// Runs `work` unless shutdown is requested first (`None`).
async fn until_shutdown<T>(
    shutdown: &watch::Receiver<bool>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let mut shutdown = shutdown.clone();
    tokio::select! {
        output = work => Some(output),
        _ = shutdown.wait_for(|stopped| *stopped) => None,
    }
}
