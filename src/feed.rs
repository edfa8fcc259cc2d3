//! How events reach this node's read models from the store.
//!
//! - **Start-up replay** ([`replay_all`]): every stored event, folded before the node
//!   says it is ready.
//! - **Cross-node feed** ([`spawn`], PostgreSQL only; SQLite is single-node): cqrs-es
//!   dispatches a committed event only inside the process that wrote it, so every node
//!   also reads what the others wrote, two ways:
//!   - *wake-ups*: the node that committed an event sends
//!     `pg_notify('widget_auth_events', '<aggregate_id>:<sequence>')` right after the
//!     commit (`Store::notify`; not a trigger, which would serialise every commit on
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use domain::aggregate::KeyState;
use futures::StreamExt;
use projections::{ApplyOutcome, ClientKeyView, Directory};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::commands::CommandService;
use crate::store::{FeedCursor, RecordedEvent, Store, StoreError};

/// The NOTIFY channel wake-ups are sent on (`Store::notify`).
pub const CHANNEL: &str = "widget_auth_events";

/// How often the feed reads the store for events it was not woken up for.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(1);

/// Rows per catch-up query; the catch-up loops until it has read everything.
const CATCH_UP_BATCH: u32 = 1000;

/// Wake-ups waiting to be handled; when full, new ones are dropped (catch-up covers them).
const WAKE_QUEUE: usize = 4096;

/// Longest wait between attempts to re-establish the `LISTEN` connection.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(2);

/// Folds every stored event into `directory`, one key at a time (the stream is ordered
/// by key, then sequence), rendering each key's view once at the end of its history.
/// Returns the number of events read.
/// Store calls made by the feed (wake-ups and catch-up), so `/metrics` can tell
/// background reads from request-driven ones.
static FEED_QUERIES: AtomicU64 = AtomicU64::new(0);

pub fn feed_queries() -> u64 {
    FEED_QUERIES.load(Ordering::Relaxed)
}

/// Folds every stored event into `directory`, one key at a time (the stream is ordered
/// by key, then sequence): each event is applied by value as it arrives, and each key's
/// view is rendered once, at the end of its history. Returns the number of events read.
pub async fn replay_all(store: &Store, directory: &Directory) -> Result<u64, StoreError> {
    let mut events = store.replay_all();
    let mut current: Option<Folding> = None;
    let mut count = 0u64;
    while let Some(recorded) = events.next().await {
        let recorded = recorded?;
        count += 1;
        let at = Some(recorded.metadata.at);
        match current.as_mut() {
            Some(key) if key.id == recorded.aggregate_id => {
                if let Some(state) = key.state.as_mut() {
                    state.apply(recorded.event);
                }
                key.version = recorded.sequence;
                key.updated_at = at.or(key.updated_at);
                key.link = recorded.metadata.chain;
            }
            _ => {
                if let Some(done) = current.take() {
                    done.install(directory);
                }
                current = Some(Folding {
                    state: KeyState::created(recorded.event),
                    id: recorded.aggregate_id,
                    version: recorded.sequence,
                    updated_at: at,
                    link: recorded.metadata.chain,
                });
            }
        }
    }
    if let Some(done) = current {
        done.install(directory);
    }
    Ok(count)
}

/// One key's history being folded during the replay.
struct Folding {
    id: String,
    /// `None` when the history does not start with a creation.
    state: Option<KeyState>,
    version: u64,
    updated_at: Option<chrono::DateTime<chrono::Utc>>,
    link: Option<String>,
}

impl Folding {
    fn install(self, directory: &Directory) {
        match self.state {
            Some(state) => directory.replace(ClientKeyView::from_state(
                state,
                self.version,
                self.updated_at,
                self.link,
            )),
            None => tracing::error!(
                aggregate_id = %self.id,
                "stored history does not start with a creation; key not served"
            ),
        }
    }
}

/// Replays the store into the directory (retrying while the store is down), marks the
/// node ready, then — on PostgreSQL — runs the cross-node feed until `shutdown`.
///
/// The feed's checkpoint is taken *before* each replay attempt, so an event committed
/// while the replay streams is either in the replay or after the checkpoint.
pub fn spawn(
    store: std::sync::Arc<Store>,
    commands: CommandService,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let directory = commands.directory().clone();
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
                let cursor = store.feed_start().await?;
                let events = replay_all(&store, &directory).await?;
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
                commands,
                cursor,
                failing: false,
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

/// Why the feed looks at the store.
#[derive(Debug)]
enum Wake {
    /// A notification: this key has (at least) this sequence now.
    Event { aggregate_id: String, sequence: u64 },
    /// The listener has (re)connected: whatever it missed meanwhile must be read.
    Resync,
}

/// Keeps one `LISTEN` connection open, forwarding notifications; on any error drops it
/// and reconnects with back-off, then asks for a catch-up (notifications sent while it was
/// away are gone for good).
async fn listen(pool: PgPool, wakes: mpsc::Sender<Wake>, shutdown: watch::Receiver<bool>) {
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

/// `"<aggregate_id>:<sequence>"`, as `Store::notify` sends it.
fn parse_payload(payload: &str) -> Option<(String, u64)> {
    let (id, sequence) = payload.rsplit_once(':')?;
    Some((id.to_owned(), sequence.parse().ok()?))
}

struct Feed {
    store: std::sync::Arc<Store>,
    commands: CommandService,
    cursor: FeedCursor,
    /// Whether the last catch-up failed, so a store outage is logged once, not per tick.
    failing: bool,
}

impl Feed {
    fn directory(&self) -> &Directory {
        self.commands.directory()
    }

    async fn run(mut self, mut wakes: mpsc::Receiver<Wake>, shutdown: watch::Receiver<bool>) {
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
            .directory()
            .by_id(aggregate_id)
            .map_or(0, |view| view.version());
        if have >= sequence {
            return;
        }
        FEED_QUERIES.fetch_add(1, Ordering::Relaxed);
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
        loop {
            FEED_QUERIES.fetch_add(1, Ordering::Relaxed);
            let directory = self.directory();
            let batch = self
                .store
                .feed_after(self.cursor, CATCH_UP_BATCH, |aggregate_id, sequence| {
                    directory
                        .by_id(aggregate_id)
                        .is_none_or(|view| view.version() < sequence)
                })
                .await;
            match batch {
                Ok(batch) => {
                    if self.failing {
                        tracing::info!("event store reachable again; feed caught up");
                        self.failing = false;
                    }
                    let full = batch.rows == CATCH_UP_BATCH as usize;
                    let Some(last) = batch.last else {
                        return;
                    };
                    if !self.apply(&batch.events).await {
                        // Not past what could not be applied: the next catch-up retries.
                        return;
                    }
                    self.cursor = last;
                    if !full {
                        return;
                    }
                }
                Err(err) => {
                    if !self.failing {
                        tracing::warn!(error = %err, "feed catch-up failed; serving from memory until the store is back");
                        self.failing = true;
                    }
                    return;
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
            if let ApplyOutcome::Gap { have, got } = self.directory().apply(&recorded.to_stored()) {
                tracing::warn!(
                    client_key = %recorded.aggregate_id,
                    have,
                    got,
                    "feed found a gap; reloading the key"
                );
                if let Err(err) = self.commands.reload(&recorded.aggregate_id).await {
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
