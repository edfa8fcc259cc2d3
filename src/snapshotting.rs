//! When this node writes read-model snapshots: periodically and at shutdown (what a
//! snapshot is, and how one is written and checked, is [`crate::snapshot`]). Apart from
//! it because it needs the command service, to pause commands for SQLite's position,
//! and the command service reaches the feed, which loads snapshots.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::commands::CommandService;
use crate::metrics::SnapshotMetrics;
use crate::snapshot::{self, Applied, Position, SnapshotError, Written};
use crate::store::Store;

/// The position this node's read models reflect at least, right now: the feed's on
/// PostgreSQL, the newest rowid with every command paused on SQLite.
pub async fn current_position(
    store: &Store,
    commands: &CommandService,
    applied: &Applied,
) -> Result<Position, SnapshotError> {
    if !commands.directory().is_ready() {
        return Err(SnapshotError::NotReady);
    }
    match store {
        Store::Postgres { .. } => applied.get().ok_or(SnapshotError::NotReady),
        Store::Sqlite { .. } => {
            let head = commands.paused(snapshot::sqlite_head(store)).await?;
            Ok(Position {
                txid: 0,
                global: head,
            })
        }
    }
}

/// Writes a snapshot of this node's read models at shutdown, unless the store's newest is
/// one this node loaded or wrote and reflects the same position (a restart with nothing
/// done in between; a newest one this node did not check may be the unusable one it
/// replayed instead of). `None` when skipped.
pub async fn write_at_shutdown(
    store: &Store,
    commands: &CommandService,
    applied: &Applied,
) -> Result<Option<Written>, SnapshotError> {
    let position = current_position(store, commands, applied).await?;
    if snapshot::newest(store)
        .await?
        .is_some_and(|newest| newest.header.position == position && applied.trusts(newest.id))
    {
        return Ok(None);
    }
    let written = snapshot::write(store, commands.directory(), position).await?;
    applied.trust(written.id);
    Ok(Some(written))
}

/// Writes a snapshot every `every` until shutdown, unless the store's newest is younger
/// than that (another node wrote it) or reflects the same position (nothing happened).
pub async fn keep_snapshotting(
    store: Arc<Store>,
    commands: CommandService,
    applied: Applied,
    metrics: SnapshotMetrics,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; a node just started from a snapshot needs none.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stopped| *stopped) => return,
            _ = tick.tick() => {}
        }
        let work = async {
            let newest = snapshot::newest(&store).await?;
            let position = current_position(&store, &commands, &applied).await?;
            // A little under the interval, so this node's own last snapshot, written one
            // tick ago, does not make it skip this one.
            let young = i64::try_from(every.mul_f64(0.9).as_millis()).unwrap_or(i64::MAX);
            if let Some(newest) = newest {
                let age = chrono::Utc::now().timestamp_millis() - newest.header.created_at_ms;
                let unchanged = newest.header.position == position && applied.trusts(newest.id);
                if age < young || unchanged {
                    metrics.taken_at(newest.header.created_at_ms);
                    return Ok(());
                }
            }
            let written = snapshot::write(&store, commands.directory(), position).await?;
            applied.trust(written.id);
            metrics.taken_at(written.created_at_ms);
            Ok(())
        };
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            done = work => match done {
                Ok(()) | Err(SnapshotError::NotReady) => {}
                Err(err) => tracing::warn!(error = %err, "writing a read-model snapshot failed; the next one is due in one interval"),
            }
        }
    }
}
