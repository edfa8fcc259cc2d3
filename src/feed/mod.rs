//! How events reach this node's read models from the store.
//!
//! - **Start-up replay** ([`replay::replay_all`]): every stored event, folded before the
//!   node says it is ready.
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
use crate::metrics::ProjectionLag;
use crate::store::{Store, StoreError};

/// Replays the store into the directory (retrying while the store is down), marks the
/// node ready, then — on PostgreSQL — runs the cross-node feed until `shutdown`.
///
/// The feed's checkpoint is taken *before* each replay attempt, so an event committed
/// while the replay streams is either in the replay or after the checkpoint.
pub fn spawn(
    store: Arc<Store>,
    directory: Arc<Directory>,
    lag: ProjectionLag,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    // LISTEN first, so wake-ups for what is committed during the replay are queued.
    let wakes = store.postgres_pool().map(|pool| {
        let (sender, receiver) = mpsc::channel(WAKE_QUEUE);
        tasks.push(tokio::spawn(listen(pool.clone(), sender, shutdown.clone())));
        receiver
    });
    tasks.push(tokio::spawn(async move {
        let started = std::time::Instant::now();
        let cursor = loop {
            let attempt = async {
                let cursor = feed_start(&store).await?;
                let events = replay::replay_all(&store, &directory).await?;
                Ok::<_, StoreError>((cursor, events))
            };
            match until_shutdown(&shutdown, attempt).await {
                None => return,
                Some(Ok((cursor, events))) => {
                    directory.mark_ready();
                    tracing::info!(
                        events,
                        keys = directory.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "read models ready"
                    );
                    break cursor;
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
                cursor,
                failing: false,
                lag,
            };
            feed.run(wakes, shutdown).await;
        }
    }));
    tasks
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
