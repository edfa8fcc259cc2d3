//! The event store: SQLite (embedded, the default) or PostgreSQL (production, several
//! nodes). Commands load and commit through cqrs-es (`sqlite-es` / `postgres-es`), which
//! own optimistic concurrency; the reads cqrs-es has no API for (a key's history page,
//! the start-up replay, idempotency look-ups) are plain SQL here, identical for both
//! stores, decoded in one place so upcasting happens in one place.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, PersistedEventStore, SerializedEvent};
use cqrs_es::{AggregateError, EventStore};
use domain::{ClientKey, ClientKeyError, ClientKeyEvent};
use futures::stream::{BoxStream, StreamExt};
use projections::StoredEvent;
use serde::{Deserialize, Serialize};
use sqlite_es::SqliteEventRepository;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ColumnIndex, Decode, PgPool, Row, SqlitePool, Type};
use tokio::sync::mpsc;

use crate::group_commit::GroupCommitRepository;

pub type AggregateContext = cqrs_es::persist::EventStoreAggregateContext<ClientKey>;
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every call into the database by this process, for `/metrics`: the benchmark proves
/// with it that the hot path's refusals never reach the store.
static STORE_QUERIES: AtomicU64 = AtomicU64::new(0);

pub(crate) fn count_query() {
    STORE_QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// Calls into the database so far (all stores of this process).
pub fn store_queries() -> u64 {
    STORE_QUERIES.load(Ordering::Relaxed)
}

/// PostgreSQL connections per node unless `WIDGET_AUTH_DB_MAX_CONNECTIONS` says otherwise.
pub const DEFAULT_PG_CONNECTIONS: u32 = 16;

/// A pooled PostgreSQL connection idle at least this long is pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a request waits for a database connection before the store counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The domain's upcasters, for our own reads ([`RecordedEvent::decode`]); cqrs-es gets
/// its own list of the same upcasters in [`Store::open`].
static UPCASTERS: LazyLock<Vec<Box<dyn EventUpcaster>>> = LazyLock::new(domain::events::upcasters);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the event store is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("another command changed this client key at the same time")]
    Conflict,
    #[error("stored event {aggregate_id}#{sequence} cannot be read")]
    Corrupt {
        aggregate_id: String,
        sequence: u64,
        #[source]
        source: BoxError,
    },
    #[error("event store error")]
    Other(#[source] BoxError),
}

impl StoreError {
    fn from_sqlx(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            Self::Unavailable(Box::new(err))
        } else {
            Self::Other(Box::new(err))
        }
    }

    /// cqrs-es wraps driver errors in boxes and calls a pool time-out "unexpected"; look
    /// inside so that a stopped database is a 503, not a 500.
    fn from_aggregate(err: AggregateError<ClientKeyError>) -> Self {
        match err {
            AggregateError::AggregateConflict => Self::Conflict,
            AggregateError::DatabaseConnectionError(source) => Self::Unavailable(source),
            AggregateError::UnexpectedError(source)
            | AggregateError::DeserializationError(source) => {
                match source.downcast::<sqlx::Error>() {
                    Ok(sqlx_error) => Self::from_sqlx(*sqlx_error),
                    Err(other) => Self::Other(other),
                }
            }
            AggregateError::UserError(rule) => Self::Other(Box::new(rule)),
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

pub(crate) fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions (08), insufficient resources (53, e.g.
            // too many connections), shutting down / cannot connect now (57P), database
            // not accepting connections (55000) or gone (3D000); SQLite: busy / locked
            // beyond the busy timeout (5, 6).
            ["08", "53", "57P"]
                .iter()
                .any(|class| code.starts_with(class))
                || ["55000", "3D000", "5", "6"].contains(&code.as_ref())
        }),
        _ => false,
    }
}

/// What every event carries besides its payload (DESIGN.md: actor, time, request id,
/// reason), plus the idempotency record of the command that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub actor: String,
    pub at: DateTime<Utc>,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// SHA-256 of the command body, so a reused Idempotency-Key with another body is caught.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    /// The tamper-evidence link (see `chain.rs`); `None` on events written before the
    /// chain existed, and while a command's metadata is being put together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

impl EventMetadata {
    /// cqrs-es carries metadata as a string map.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor".to_owned(), self.actor.clone()),
            (
                "at".to_owned(),
                self.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            ("request_id".to_owned(), self.request_id.clone()),
        ]);
        let optional = [
            ("reason", &self.reason),
            ("idempotency_key", &self.idempotency_key),
            ("request_hash", &self.request_hash),
            ("chain", &self.chain),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                map.insert(name.to_owned(), value.clone());
            }
        }
        map
    }
}

/// An event read back from the store with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub aggregate_id: String,
    pub sequence: u64,
    pub event: ClientKeyEvent,
    pub metadata: EventMetadata,
}

impl RecordedEvent {
    pub fn to_stored(&self) -> StoredEvent {
        StoredEvent {
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            event: self.event.clone(),
            at: Some(self.metadata.at),
            link: self.metadata.chain.clone(),
        }
    }

    /// The one place stored events become domain events: older `event_version`s are
    /// upcast here, so every read of ours sees the current model.
    pub fn decode(serialized: SerializedEvent) -> Result<Self, StoreError> {
        let serialized = upcast(serialized);
        let corrupt = |source: BoxError| StoreError::Corrupt {
            aggregate_id: serialized.aggregate_id.clone(),
            sequence: serialized.sequence as u64,
            source,
        };
        // Deserializing from a borrowed `Value` spares a deep copy per event (replays of
        // a whole store go through here).
        let event =
            ClientKeyEvent::deserialize(&serialized.payload).map_err(|e| corrupt(Box::new(e)))?;
        let metadata =
            EventMetadata::deserialize(&serialized.metadata).map_err(|e| corrupt(Box::new(e)))?;
        Ok(Self {
            aggregate_id: serialized.aggregate_id,
            sequence: serialized.sequence as u64,
            event,
            metadata,
        })
    }
}

/// Applies the upcasters in order, as cqrs-es does on its loads.
fn upcast(serialized: SerializedEvent) -> SerializedEvent {
    UPCASTERS.iter().fold(serialized, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

const COLUMNS: &str = "aggregate_id, sequence, event_type, event_version, \
     CAST(payload AS TEXT) AS payload, CAST(metadata AS TEXT) AS metadata";

/// Every event of every key, by key then sequence (the start-up replay, verify).
static REPLAY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence"
    )
});

/// One row of the events table, whichever database it came from, as stored.
fn decode_row<R>(row: &R) -> Result<SerializedEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |index: usize| row.try_get::<&str, _>(index).map_err(StoreError::from_sqlx);
    let aggregate_id = text(0)?;
    let sequence = row.try_get::<i64, _>(1).map_err(StoreError::from_sqlx)?;
    let parse = |index: usize| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(text(index)?).map_err(|e| StoreError::Corrupt {
            aggregate_id: aggregate_id.to_owned(),
            sequence: sequence as u64,
            source: Box::new(e),
        })
    };
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence: sequence as usize,
        aggregate_type: <ClientKey as cqrs_es::Aggregate>::TYPE.to_owned(),
        event_type: text(2)?.to_owned(),
        event_version: text(3)?.to_owned(),
        payload: parse(4)?,
        metadata: parse(5)?,
    })
}

/// One read of the cross-node feed ([`Store::feed_after`]).
#[derive(Debug, Default)]
pub struct FeedBatch {
    /// Rows read, wanted or not.
    pub rows: usize,
    /// The position of the last row read: the checkpoint once `events` are applied.
    pub last: Option<FeedCursor>,
    /// The rows that were wanted, decoded.
    pub events: Vec<RecordedEvent>,
}

/// A position in the cross-node feed: the last (transaction id, global position) read.
/// Ordered like the feed query orders rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FeedCursor {
    pub txid: i64,
    pub global_position: i64,
}

/// One row decoded to the current model. An event stored at a version some upcaster
/// handles goes through [`RecordedEvent::decode`]; every other one (the common case, and
/// what long replays spend their time on) is parsed from the stored text directly, which
/// yields the same event without building a JSON tree first.
fn decode_recorded_row<R>(row: &R) -> Result<RecordedEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |index: usize| row.try_get::<&str, _>(index).map_err(StoreError::from_sqlx);
    let (event_type, event_version) = (text(2)?, text(3)?);
    if UPCASTERS
        .iter()
        .any(|upcaster| upcaster.can_upcast(event_type, event_version))
    {
        return decode_row(row).and_then(RecordedEvent::decode);
    }
    let aggregate_id = text(0)?;
    let sequence = row.try_get::<i64, _>(1).map_err(StoreError::from_sqlx)?;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        aggregate_id: aggregate_id.to_owned(),
        sequence: sequence as u64,
        source: Box::new(e),
    };
    Ok(RecordedEvent {
        event: serde_json::from_str(text(4)?).map_err(corrupt)?,
        metadata: serde_json::from_str(text(5)?).map_err(corrupt)?,
        aggregate_id: aggregate_id.to_owned(),
        sequence: sequence as u64,
    })
}

pub enum Store {
    Postgres {
        pool: PgPool,
        events: PersistedEventStore<GroupCommitRepository, ClientKey>,
        /// Wake-ups for other nodes, sent in batches by [`notifier`].
        notifications: mpsc::UnboundedSender<String>,
    },
    Sqlite {
        pool: SqlitePool,
        events: PersistedEventStore<SqliteEventRepository, ClientKey>,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Postgres { .. } => "Store::Postgres",
            Self::Sqlite { .. } => "Store::Sqlite",
        })
    }
}

/// Runs the same query text on whichever pool the store has.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Postgres { pool: $pool, .. } => $body,
            Store::Sqlite { pool: $pool, .. } => $body,
        }
    };
}

impl Store {
    /// PostgreSQL from a `postgres://` URL; otherwise the embedded SQLite file in `data_dir`.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_pool(database_url, data_dir, DEFAULT_PG_CONNECTIONS).await
    }

    /// Like [`Store::open`], with at most `pg_connections` PostgreSQL connections. Commits
    /// take at most the group committers' few (see `group_commit.rs`); the rest serve the
    /// token ledger, loads, the feed and audits, whose concurrency grows with it.
    pub async fn open_with_pool(
        database_url: Option<&str>,
        data_dir: &Path,
        pg_connections: u32,
    ) -> Result<Self, StoreError> {
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
                    StoreError::Other(
                        format!("DATABASE_URL is not a valid PostgreSQL URL: {e}").into(),
                    )
                })?;
                let pool = PgPoolOptions::new()
                    .max_connections(pg_connections.max(2))
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    // sqlx pings every connection it hands out by default: a round trip
                    // before each statement. A connection in steady use was just proven
                    // alive by its last statement; one idle for a while may have been cut
                    // (a database restart), so only that one is pinged, and dropped if
                    // the ping fails.
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for < PING_IF_IDLE_FOR {
                                return Ok(true);
                            }
                            Ok(sqlx::Connection::ping(conn).await.is_ok())
                        })
                    })
                    .connect_lazy_with(options);
                let events =
                    PersistedEventStore::new_event_store(GroupCommitRepository::new(pool.clone()))
                        .with_upcasters(domain::events::upcasters());
                let (notifications, queued) = mpsc::unbounded_channel();
                tokio::spawn(notifier(pool.clone(), queued));
                Ok(Self::Postgres {
                    pool,
                    events,
                    notifications,
                })
            }
            Some(url) if url.starts_with("sqlite:") => {
                let options: SqliteConnectOptions = url.parse().map_err(|e: sqlx::Error| {
                    StoreError::Other(format!("DATABASE_URL is not a valid SQLite URL: {e}").into())
                })?;
                Self::open_sqlite(options).await
            }
            Some(_) => Err(StoreError::Other(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:".into(),
            )),
            None => {
                std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Other(Box::new(e)))?;
                let options =
                    SqliteConnectOptions::new().filename(data_dir.join("widget-auth.sqlite3"));
                Self::open_sqlite(options).await
            }
        }
    }

    async fn open_sqlite(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged command must survive a power cut, not just a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        let events = PersistedEventStore::new_event_store(SqliteEventRepository::new(pool.clone()))
            .with_upcasters(domain::events::upcasters());
        Ok(Self::Sqlite { pool, events })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres { .. } => "postgres",
            Self::Sqlite { .. } => "sqlite",
        }
    }

    /// Applies the versioned migrations in `migrations/` that have not run yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let result = match self {
            Self::Postgres { pool, .. } => sqlx::migrate!("migrations/postgres").run(pool).await,
            Self::Sqlite { pool, .. } => sqlx::migrate!("migrations/sqlite").run(pool).await,
        };
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) => StoreError::from_sqlx(inner),
            other => StoreError::Other(Box::new(other)),
        })
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        count_query();
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(StoreError::from_sqlx)
    }

    pub async fn load(&self, aggregate_id: &str) -> Result<AggregateContext, StoreError> {
        count_query();
        match self {
            Self::Postgres { events, .. } => events.load_aggregate(aggregate_id).await,
            Self::Sqlite { events, .. } => events.load_aggregate(aggregate_id).await,
        }
        .map_err(StoreError::from_aggregate)
    }

    /// Appends `events` after the context's sequence, atomically, or fails with
    /// [`StoreError::Conflict`] when another writer got there first.
    pub async fn commit(
        &self,
        events: Vec<ClientKeyEvent>,
        context: AggregateContext,
        metadata: &EventMetadata,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let committed = match self {
            // Counted by the group commit, per statement (one for many commands).
            Self::Postgres { events: store, .. } => {
                store.commit(events, context, metadata.to_map()).await
            }
            Self::Sqlite { events: store, .. } => {
                count_query();
                store.commit(events, context, metadata.to_map()).await
            }
        }
        .map_err(StoreError::from_aggregate)?;
        Ok(committed
            .into_iter()
            .map(|envelope| RecordedEvent {
                aggregate_id: envelope.aggregate_id,
                sequence: envelope.sequence as u64,
                event: envelope.payload,
                metadata: metadata.clone(),
            })
            .collect())
    }

    /// A key's events with sequence greater than `after`, in order, at most `limit`.
    pub async fn history(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: Option<u64>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.raw_history(aggregate_id, after, limit)
            .await?
            .into_iter()
            .map(RecordedEvent::decode)
            .collect()
    }

    /// Like [`Store::history`], as stored: not upcast, metadata as written. The chain is
    /// computed over these.
    pub async fn raw_history(
        &self,
        aggregate_id: &str,
        after: u64,
        limit: Option<u64>,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        count_query();
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND sequence > $3 ORDER BY sequence LIMIT $4"
        );
        let limit = limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows = on_pool!(self, |pool| {
            let rows = sqlx::query(&sql)
                .bind(<ClientKey as cqrs_es::Aggregate>::TYPE)
                .bind(aggregate_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await
                .map_err(StoreError::from_sqlx)?;
            rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()
        })?;
        Ok(rows)
    }

    /// A key's whole history, decoded, streamed: replaying a long history to one point
    /// never holds it in memory.
    pub fn stream_history(
        &self,
        aggregate_id: &str,
    ) -> BoxStream<'_, Result<RecordedEvent, StoreError>> {
        count_query();
        const SQL: &str = "SELECT aggregate_id, sequence, event_type, event_version, \
             CAST(payload AS TEXT) AS payload, CAST(metadata AS TEXT) AS metadata \
             FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence";
        let aggregate_type = <ClientKey as cqrs_es::Aggregate>::TYPE;
        let aggregate_id = aggregate_id.to_owned();
        on_pool!(self, |pool| sqlx::query(SQL)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch(pool)
            .map(|row| {
                row.map_err(StoreError::from_sqlx)
                    .and_then(|row| decode_recorded_row(&row))
            })
            .boxed())
    }

    /// One stored event, as written (not upcast).
    pub async fn raw_event(
        &self,
        aggregate_id: &str,
        sequence: u64,
    ) -> Result<Option<SerializedEvent>, StoreError> {
        count_query();
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             AND sequence = $3"
        );
        let sequence = i64::try_from(sequence).unwrap_or(i64::MAX);
        on_pool!(self, |pool| {
            let row = sqlx::query(&sql)
                .bind(<ClientKey as cqrs_es::Aggregate>::TYPE)
                .bind(aggregate_id)
                .bind(sequence)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::from_sqlx)?;
            row.as_ref().map(decode_row).transpose()
        })
    }

    /// How many events the store holds (sizes the auditors' progress bars).
    pub async fn count_events(&self) -> Result<u64, StoreError> {
        count_query();
        const SQL: &str = "SELECT COUNT(*) FROM events WHERE aggregate_type = $1";
        let count: i64 = on_pool!(self, |pool| sqlx::query_scalar(SQL)
            .bind(<ClientKey as cqrs_es::Aggregate>::TYPE)
            .fetch_one(pool)
            .await)
        .map_err(StoreError::from_sqlx)?;
        Ok(count.max(0) as u64)
    }

    /// Every event of every key, ordered by key then sequence: the start-up replay.
    /// Streamed, so a million events never sit in memory as rows.
    pub fn replay_all(&self) -> BoxStream<'_, Result<RecordedEvent, StoreError>> {
        count_query();
        let aggregate_type = <ClientKey as cqrs_es::Aggregate>::TYPE;
        on_pool!(self, |pool| sqlx::query(&REPLAY_SQL)
            .bind(aggregate_type)
            .fetch(pool)
            .map(|row| {
                row.map_err(StoreError::from_sqlx)
                    .and_then(|row| decode_recorded_row(&row))
            })
            .boxed())
    }

    /// [`Store::replay_all`] as stored (not upcast): what verify hashes.
    pub fn replay_raw(&self) -> BoxStream<'_, Result<SerializedEvent, StoreError>> {
        count_query();
        let aggregate_type = <ClientKey as cqrs_es::Aggregate>::TYPE;
        on_pool!(self, |pool| sqlx::query(&REPLAY_SQL)
            .bind(aggregate_type)
            .fetch(pool)
            .map(|row| row
                .map_err(StoreError::from_sqlx)
                .and_then(|row| decode_row(&row)))
            .boxed())
    }

    /// The event a command with this Idempotency-Key wrote, if any.
    pub async fn find_by_idempotency_key(
        &self,
        key: &str,
    ) -> Result<Option<RecordedEvent>, StoreError> {
        count_query();
        let sql = format!("SELECT {COLUMNS} FROM events WHERE metadata ->> 'idempotency_key' = $1");
        let row = on_pool!(self, |pool| {
            let row = sqlx::query(&sql)
                .bind(key)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::from_sqlx)?;
            row.as_ref().map(decode_row).transpose()
        })?;
        row.map(RecordedEvent::decode).transpose()
    }

    /// The PostgreSQL pool, for the feed's `LISTEN` connection; `None` on SQLite, which
    /// is single-node and has no feed.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres { pool, .. } => Some(pool),
            Self::Sqlite { .. } => None,
        }
    }

    /// Where a feed reader starts so that it misses nothing committed after this call:
    /// every transaction below the current snapshot's xmin has finished, so a replay
    /// started after this call sees all of their rows, and the cursor takes the rest.
    pub async fn feed_start(&self) -> Result<FeedCursor, StoreError> {
        count_query();
        let Self::Postgres { pool, .. } = self else {
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
    pub async fn feed_after(
        &self,
        cursor: FeedCursor,
        limit: u32,
        wanted: impl Fn(&str, u64) -> bool,
    ) -> Result<FeedBatch, StoreError> {
        count_query();
        let Self::Postgres { pool, .. } = self else {
            return Ok(FeedBatch::default());
        };
        // The row comparison and the xmin filter together are the transaction-aware
        // high-water mark: see migrations/postgres/0003_feed.sql.
        let sql = format!(
            "SELECT {COLUMNS}, CAST(CAST(txid AS text) AS bigint), global_position FROM events \
             WHERE aggregate_type = $1 \
             AND (txid, global_position) > (CAST(CAST($2 AS text) AS xid8), $3) \
             AND txid < pg_snapshot_xmin(pg_current_snapshot()) \
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

    /// Wakes every other node's feed for this key's new event, after the commit and off
    /// the command's path (see `migrations/postgres/0004_notify_after_commit.sql`).
    /// A lost notification only delays another node until its next catch-up.
    pub fn notify(&self, aggregate_id: &str, sequence: u64) {
        if let Self::Postgres { notifications, .. } = self {
            // Fails only once the notifier has stopped, at shutdown.
            let _ = notifications.send(format!("{aggregate_id}:{sequence}"));
        }
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
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
            .bind(crate::feed::CHANNEL)
            .bind(&batch)
            .execute(&pool)
            .await;
        if let Err(err) = sent {
            tracing::debug!(error = %err, "NOTIFY not sent; other nodes catch up instead");
        }
        batch.clear();
    }
}

/// What the token ledger knew when a token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// This is the token's first use; it is now recorded as used.
    First,
    /// The token was used before, at `used_at_ms`; `latest_in_family` says whether it is
    /// still the most recently rotated token of its refresh family.
    Again {
        used_at_ms: i64,
        latest_in_family: bool,
    },
}

impl Store {
    /// Records the use of a single-use token in one atomic insert: of two nodes racing
    /// with the same `jti`, exactly one gets [`TokenUse::First`].
    pub async fn use_token(
        &self,
        jti: &str,
        kind: &str,
        family: Option<&str>,
        now_ms: i64,
        expires_at: i64,
    ) -> Result<TokenUse, StoreError> {
        count_query();
        const INSERT: &str =
            "INSERT INTO token_ledger (jti, kind, family, used_at_ms, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (jti) DO NOTHING";
        const USED_AT: &str = "SELECT used_at_ms FROM token_ledger WHERE jti = $1";
        const LATEST: &str = "SELECT jti FROM token_ledger WHERE family = $1 \
             ORDER BY used_at_ms DESC, jti DESC LIMIT 1";
        let inserted = on_pool!(self, |pool| sqlx::query(INSERT)
            .bind(jti)
            .bind(kind)
            .bind(family)
            .bind(now_ms)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StoreError::from_sqlx)?;
        if inserted == 1 {
            return Ok(TokenUse::First);
        }
        let used_at_ms: i64 = on_pool!(self, |pool| sqlx::query_scalar(USED_AT)
            .bind(jti)
            .fetch_one(pool)
            .await)
        .map_err(StoreError::from_sqlx)?;
        let latest_in_family = match family {
            None => false,
            Some(family) => {
                let latest: Option<String> = on_pool!(self, |pool| sqlx::query_scalar(LATEST)
                    .bind(family)
                    .fetch_optional(pool)
                    .await)
                .map_err(StoreError::from_sqlx)?;
                latest.as_deref() == Some(jti)
            }
        };
        Ok(TokenUse::Again {
            used_at_ms,
            latest_in_family,
        })
    }

    pub async fn refresh_family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        count_query();
        const SQL: &str = "SELECT family FROM refresh_families WHERE family = $1";
        let found: Option<String> = on_pool!(self, |pool| sqlx::query_scalar(SQL)
            .bind(family)
            .fetch_optional(pool)
            .await)
        .map_err(StoreError::from_sqlx)?;
        Ok(found.is_some())
    }

    pub async fn revoke_refresh_family(
        &self,
        family: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        count_query();
        const SQL: &str =
            "INSERT INTO refresh_families (family, revoked_at, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (family) DO NOTHING";
        on_pool!(self, |pool| sqlx::query(SQL)
            .bind(family)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(StoreError::from_sqlx)
    }

    /// Forgets ledger rows of tokens that expired before `before` (unix seconds): an
    /// expired token is refused by its signature check alone.
    pub async fn prune_token_ledger(&self, before: i64) -> Result<u64, StoreError> {
        count_query();
        let mut removed = 0;
        for sql in [
            "DELETE FROM token_ledger WHERE expires_at < $1",
            "DELETE FROM refresh_families WHERE expires_at < $1",
        ] {
            removed += on_pool!(self, |pool| sqlx::query(sql)
                .bind(before)
                .execute(pool)
                .await
                .map(|done| done.rows_affected()))
            .map_err(StoreError::from_sqlx)?;
        }
        Ok(removed)
    }
}
