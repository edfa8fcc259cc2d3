//! The cross-node feed on PostgreSQL (see the [module docs](super) for why it is built
//! this way): the `LISTEN` task, the wake-ups this node sends after its commits (batched
//! `pg_notify`), and the catch-up's reads after a `(txid, global_position)` cursor.

use std::sync::Arc;
use std::time::Duration;

use domain::ClientKey;
use projections::{ApplyOutcome, Directory};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};
use tokio::sync::{mpsc, watch};

use super::replay::{apply_in_order, reload};
use super::until_shutdown;
use crate::metrics::{count_feed_query, count_query, ProjectionLag};
use crate::snapshot::{Applied, Position};
use crate::store::{decode_recorded_row, RecordedEvent, Store, StoreError, COLUMNS};

/// The NOTIFY channel wake-ups are sent on ([`Notifier::notify`]).
pub const CHANNEL: &str = "widget_auth_events";

/// How often the feed reads the store for events it was not woken up for.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(1);

/// Rows per catch-up query; the catch-up loops until it has read everything.
const CATCH_UP_BATCH: u32 = 1000;

/// Wake-ups waiting to be handled; when full, new ones are dropped (catch-up covers them).
pub(super) const WAKE_QUEUE: usize = 4096;

/// Longest wait between attempts to re-establish the `LISTEN` connection.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);

/// One read of the cross-node feed ([`feed_after`]).
#[derive(Debug, Default)]
struct FeedBatch {
    /// Rows read, wanted or not.
    rows: usize,
    /// The position of the last row read: the checkpoint once `events` are applied.
    last: Option<FeedCursor>,
    /// The rows that were wanted, decoded.
    events: Vec<RecordedEvent>,
}

/// A position in the cross-node feed: the last (transaction id, global position) read.
/// Ordered like the feed query orders rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub txid: i64,
    pub global_position: i64,
}

impl From<FeedCursor> for Position {
    fn from(cursor: FeedCursor) -> Self {
        Self {
            txid: cursor.txid,
            global: cursor.global_position,
        }
    }
}

impl From<Position> for FeedCursor {
    fn from(position: Position) -> Self {
        Self {
            txid: position.txid,
            global_position: position.global,
        }
    }
}

/// Reads and applies every event after `cursor` (the start-up after a snapshot). Returns
/// the cursor reached and how many events were applied (those the snapshot did not
/// already hold).
///
/// Two passes. The first reads finished transactions only and advances the cursor, as
/// the feed does. The xmin is the whole server's, so a transaction open anywhere (even
/// in another database) stops it short of events that have committed since; a full
/// replay would hold those, so the second pass reads everything visible after the
/// cursor and applies it *without* moving the cursor: the feed reads those rows again
/// later and skips them by version, and anything still uncommitted is above the cursor.
pub(super) async fn catch_up_from(
    store: &Store,
    directory: &Directory,
    mut cursor: FeedCursor,
) -> Result<(FeedCursor, u64), StoreError> {
    let mut applied = 0u64;
    for finished_only in [true, false] {
        let mut read = cursor;
        loop {
            let batch = feed_after(
                store,
                read,
                CATCH_UP_BATCH,
                finished_only,
                |id, sequence| {
                    directory
                        .by_id(id)
                        .is_none_or(|view| view.version() < sequence)
                },
            )
            .await?;
            let Some(last) = batch.last else { break };
            applied += batch.events.len() as u64;
            apply_in_order(store, directory, &batch.events).await?;
            read = last;
            if finished_only {
                cursor = last;
            }
            if batch.rows < CATCH_UP_BATCH as usize {
                break;
            }
        }
    }
    Ok((cursor, applied))
}

/// Where a feed reader starts so that it misses nothing committed after this call:
/// every transaction below the current snapshot's xmin has finished, so a replay
/// started after this call sees all of their rows, and the cursor takes the rest.
pub(super) async fn feed_start(store: &Store) -> Result<FeedCursor, StoreError> {
    count_query();
    let Some(pool) = store.postgres_pool() else {
        return Ok(FeedCursor::default());
    };
    let xmin: i64 = sqlx::query_scalar(
        "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint)",
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    Ok(FeedCursor {
        txid: xmin - 1,
        global_position: i64::MAX,
    })
}

/// Events after `cursor` from finished transactions, in feed order, at most `limit`
/// rows: the new checkpoint, and the events `wanted` asks for. Only those are decoded:
/// most rows a node reads back are its own commands, already applied, and decoding
/// them was most of the catch-up's cost under a stream of commands.
async fn feed_after(
    store: &Store,
    cursor: FeedCursor,
    limit: u32,
    finished_only: bool,
    wanted: impl Fn(&str, u64) -> bool,
) -> Result<FeedBatch, StoreError> {
    count_query();
    let Some(pool) = store.postgres_pool() else {
        return Ok(FeedBatch::default());
    };
    // The row comparison and the xmin filter together are the transaction-aware
    // high-water mark: see migrations/postgres/0003_feed.sql.
    // `finished_only: false` is the start-up's second pass only (see `catch_up_from`).
    let finished = if finished_only {
        "AND txid < pg_snapshot_xmin(pg_current_snapshot())"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {COLUMNS}, CAST(CAST(txid AS text) AS bigint), global_position FROM events \
         WHERE aggregate_type = $1 \
         AND (txid, global_position) > (CAST(CAST($2 AS text) AS xid8), $3) \
         {finished} \
         ORDER BY txid, global_position LIMIT $4"
    );
    let rows = sqlx::query(&sql)
        .bind(<ClientKey as cqrs_es::Aggregate>::TYPE)
        .bind(cursor.txid)
        .bind(cursor.global_position)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    let mut batch = FeedBatch {
        rows: rows.len(),
        ..FeedBatch::default()
    };
    for row in &rows {
        batch.last = Some(FeedCursor {
            txid: row.try_get(6).map_err(StoreError::from_sqlx)?,
            global_position: row.try_get(7).map_err(StoreError::from_sqlx)?,
        });
        let aggregate_id: &str = row.try_get(0).map_err(StoreError::from_sqlx)?;
        let sequence: i64 = row.try_get(1).map_err(StoreError::from_sqlx)?;
        if wanted(aggregate_id, sequence as u64) {
            batch.events.push(decode_recorded_row(row)?);
        }
    }
    Ok(batch)
}

/// Sends this node's wake-ups to every other node's feed (PostgreSQL; on SQLite, which is
/// single-node, it sends nothing). The command path calls [`Notifier::notify`] after each
/// commit; one task sends what has queued in batches (see [`notifier`]).
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: Option<mpsc::UnboundedSender<String>>,
}

impl Notifier {
    /// Starts the sending task on the current Tokio runtime when the store is PostgreSQL.
    /// It stops once every clone of this notifier is dropped.
    pub fn start(store: &Store) -> Self {
        let queue = store.postgres_pool().map(|pool| {
            let (queue, queued) = mpsc::unbounded_channel();
            tokio::spawn(notifier(pool.clone(), queued));
            queue
        });
        Self { queue }
    }

    /// Wakes every other node's feed for this key's new event, after the commit and off
    /// the command's path (see `migrations/postgres/0004_notify_after_commit.sql`).
    /// A lost notification only delays another node until its next catch-up.
    pub fn notify(&self, aggregate_id: &str, sequence: u64) {
        if let Some(queue) = &self.queue {
            // Fails only once the notifier has stopped, at shutdown.
            let _ = queue.send(format!("{aggregate_id}:{sequence}"));
        }
    }
}

/// Most wake-ups in one statement.
const NOTIFY_BATCH: usize = 1024;

/// Sends queued wake-ups, all that have queued in one `pg_notify` statement: every
/// transaction that notifies takes PostgreSQL's one notification lock at its commit, so
/// one per command would queue busy writers behind each other again.
async fn notifier(pool: PgPool, mut queued: mpsc::UnboundedReceiver<String>) {
    let mut batch = Vec::with_capacity(NOTIFY_BATCH);
    while queued.recv_many(&mut batch, NOTIFY_BATCH).await > 0 {
        count_query();
        let sent = sqlx::query("SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload")
            .bind(CHANNEL)
            .bind(&batch)
            .execute(&pool)
            .await;
        if let Err(err) = sent {
            tracing::debug!(error = %err, "NOTIFY not sent; other nodes catch up instead");
        }
        batch.clear();
    }
}

/// Why the feed looks at the store.
#[derive(Debug)]
pub(super) enum Wake {
    /// A notification: this key has (at least) this sequence now.
    Event { aggregate_id: String, sequence: u64 },
    /// The listener has (re)connected: whatever it missed meanwhile must be read.
    Resync,
}

/// Keeps one `LISTEN` connection open, forwarding notifications; on any error drops it
/// and reconnects with back-off, then asks for a catch-up (notifications sent while it was
/// away are gone for good).
pub(super) async fn listen(
    pool: PgPool,
    wakes: mpsc::Sender<Wake>,
    shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let connect = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match until_shutdown(&shutdown, connect).await {
            None => return,
            Some(Ok(listener)) => listener,
            Some(Err(err)) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot LISTEN for events; retrying");
                if until_shutdown(&shutdown, tokio::time::sleep(backoff))
                    .await
                    .is_none()
                {
                    return;
                }
                backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if connected_before {
            tracing::info!("listening for events again; catching up");
        } else {
            tracing::debug!(channel = CHANNEL, "listening for events");
        }
        connected_before = true;
        // After LISTEN is in place, so nothing falls between the catch-up and the first
        // notification.
        let _ = wakes.try_send(Wake::Resync);
        loop {
            match until_shutdown(&shutdown, listener.try_recv()).await {
                None => return,
                Some(Ok(Some(notification))) => {
                    match parse_payload(notification.payload()) {
                        Some((aggregate_id, sequence)) => {
                            // A full queue drops the hint; the next catch-up reads it.
                            let _ = wakes.try_send(Wake::Event {
                                aggregate_id,
                                sequence,
                            });
                        }
                        None => tracing::warn!(
                            payload = notification.payload(),
                            "unexpected notification payload"
                        ),
                    }
                }
                Some(Ok(None)) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    break;
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "LISTEN connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// `"<aggregate_id>:<sequence>"`, as [`Notifier::notify`] sends it.
fn parse_payload(payload: &str) -> Option<(String, u64)> {
    let (id, sequence) = payload.rsplit_once(':')?;
    Some((id.to_owned(), sequence.parse().ok()?))
}

/// What a catch-up found this node lacked: how many events, and when the oldest was
/// recorded. Without missed wake-ups both stay empty: every event arrived by `NOTIFY`.
#[derive(Debug, Default)]
struct Behind {
    events: usize,
    oldest: Option<chrono::DateTime<chrono::Utc>>,
}

impl Behind {
    fn note(&mut self, events: &[RecordedEvent]) {
        self.events += events.len();
        let oldest = events.iter().map(|e| e.metadata.at).min();
        self.oldest = match (self.oldest, oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// How old the oldest missed event was at `now`, in seconds (0 when none was missed).
    fn seconds(&self, now: chrono::DateTime<chrono::Utc>) -> f64 {
        self.oldest.map_or(0.0, |at| {
            ((now - at).num_milliseconds().max(0) as f64) / 1000.0
        })
    }
}

pub(super) struct Feed {
    pub(super) store: Arc<Store>,
    pub(super) directory: Arc<Directory>,
    pub(super) cursor: FeedCursor,
    /// Whether the last catch-up failed, so a store outage is logged once, not per tick.
    pub(super) failing: bool,
    /// Where each catch-up reports how far behind it found the read models.
    pub(super) lag: ProjectionLag,
    /// Where the cursor is published once everything up to it is applied (snapshots).
    pub(super) applied: Applied,
}

impl Feed {
    pub(super) async fn run(
        mut self,
        mut wakes: mpsc::Receiver<Wake>,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(CATCH_UP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = shutdown.clone();
        loop {
            let wake = tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => return,
                _ = tick.tick() => Wake::Resync,
                wake = wakes.recv() => match wake {
                    Some(wake) => wake,
                    None => return,
                },
            };
            let work = async {
                match wake {
                    Wake::Event {
                        aggregate_id,
                        sequence,
                    } => self.on_notification(&aggregate_id, sequence).await,
                    Wake::Resync => self.catch_up().await,
                }
            };
            if until_shutdown(&shutdown, work).await.is_none() {
                return;
            }
        }
    }

    /// Loads only what this node lacks of one key. Errors are left to the catch-up.
    async fn on_notification(&mut self, aggregate_id: &str, sequence: u64) {
        let have = self
            .directory
            .by_id(aggregate_id)
            .map_or(0, |view| view.version());
        if have >= sequence {
            return;
        }
        count_feed_query();
        let missing = self.store.history(aggregate_id, have, None).await;
        match missing {
            Ok(events) => {
                self.apply(&events).await;
            }
            Err(err) => tracing::warn!(
                client_key = aggregate_id,
                error = %err,
                "loading notified events failed; the catch-up will retry"
            ),
        }
    }

    /// Reads every event after the checkpoint from finished transactions.
    async fn catch_up(&mut self) {
        let mut behind = Behind::default();
        if self.read_behind(&mut behind).await {
            self.lag
                .set(behind.events, behind.seconds(chrono::Utc::now()));
        }
    }

    /// The catch-up's reads, noting in `behind` what this node lacked. False when the
    /// store failed (the lag is then unknown, and `/metrics`' store health says why).
    async fn read_behind(&mut self, behind: &mut Behind) -> bool {
        loop {
            count_feed_query();
            let directory = &self.directory;
            let batch = feed_after(
                &self.store,
                self.cursor,
                CATCH_UP_BATCH,
                true,
                |aggregate_id, sequence| {
                    directory
                        .by_id(aggregate_id)
                        .is_none_or(|view| view.version() < sequence)
                },
            )
            .await;
            match batch {
                Ok(batch) => {
                    if self.failing {
                        tracing::info!("event store reachable again; feed caught up");
                        self.failing = false;
                    }
                    behind.note(&batch.events);
                    let full = batch.rows == CATCH_UP_BATCH as usize;
                    let Some(last) = batch.last else {
                        return true;
                    };
                    if !self.apply(&batch.events).await {
                        // Not past what could not be applied: the next catch-up retries.
                        return true;
                    }
                    self.cursor = last;
                    self.applied.set(last.into());
                    if !full {
                        return true;
                    }
                }
                Err(err) => {
                    if !self.failing {
                        tracing::warn!(error = %err, "feed catch-up failed; serving from memory until the store is back");
                        self.failing = true;
                    }
                    return false;
                }
            }
        }
    }

    /// Applies events in order; a gap reloads that key's whole history (which then also
    /// covers that key's later events in `events`). False when a reload failed.
    async fn apply(&self, events: &[RecordedEvent]) -> bool {
        let mut complete = true;
        let mut reloaded: Vec<&str> = Vec::new();
        for recorded in events {
            if reloaded.contains(&recorded.aggregate_id.as_str()) {
                continue;
            }
            if let ApplyOutcome::Gap { have, got } = self.directory.apply(&recorded.to_stored()) {
                tracing::warn!(
                    client_key = %recorded.aggregate_id,
                    have,
                    got,
                    "feed found a gap; reloading the key"
                );
                if let Err(err) = reload(&self.store, &self.directory, &recorded.aggregate_id).await
                {
                    tracing::error!(client_key = %recorded.aggregate_id, error = %err, "reloading a client key's read model failed");
                    complete = false;
                }
                reloaded.push(&recorded.aggregate_id);
            }
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::parse_payload;

    #[test]
    fn a_notification_names_the_key_and_its_sequence() {
        assert_eq!(parse_payload("ck_abc:12"), Some(("ck_abc".to_owned(), 12)));
        assert_eq!(parse_payload("ck_abc"), None);
        assert_eq!(parse_payload("ck_abc:x"), None);
    }
}
