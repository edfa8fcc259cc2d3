//! The event store: SQLite (embedded, the default) or PostgreSQL (production, several
//! nodes). Commands load and commit through cqrs-es (`sqlite-es` / `postgres-es`), which
//! own optimistic concurrency; the reads cqrs-es has no API for (a key's history page,
//! the start-up replay, idempotency look-ups) are plain SQL here, identical for both
//! stores, decoded in one place (`rows.rs`) so upcasting happens in one place.
//!
//! This module is the event store only: the token ledger's tables are `ledger/`'s, the
//! cross-node feed's queries live with the feed, and the query counters with the metrics.

pub mod files;
mod noops;
mod rows;

pub mod group_commit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{PersistedEventStore, SerializedEvent};
use cqrs_es::{AggregateError, EventStore};
use domain::{ClientKey, ClientKeyError, ClientKeyEvent};
use futures::stream::{BoxStream, StreamExt};
use projections::StoredEvent;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use self::group_commit::GroupCommitRepository;
pub use self::noops::NoopRecord;
pub(crate) use self::rows::{decode_recorded_row, COLUMNS};
use self::rows::{decode_row, REPLAY_SQL};
use crate::ledger::group::LedgerWriters;
use crate::metrics::{count_health_query, count_query};

pub type AggregateContext = cqrs_es::persist::EventStoreAggregateContext<ClientKey>;
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// PostgreSQL connections per node unless `WIDGET_AUTH_DB_MAX_CONNECTIONS` says otherwise.
pub const DEFAULT_PG_CONNECTIONS: u32 = 16;

/// A pooled PostgreSQL connection idle at least this long is pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a request waits for a database connection before the store counts as down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

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
    /// `DATABASE_URL` names no store we can open: the operator must fix it.
    #[error("{0}")]
    Configuration(String),
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the database file {} owner-only", path.display())]
    DatabaseFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event store error")]
    Other(#[source] BoxError),
}

impl StoreError {
    pub(crate) fn from_sqlx(err: sqlx::Error) -> Self {
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

    /// Like [`RecordedEvent::to_stored`], by value: what the streamed folds push.
    pub fn into_stored(self) -> StoredEvent {
        StoredEvent {
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event: self.event,
            at: Some(self.metadata.at),
            link: self.metadata.chain,
        }
    }
}

pub enum Store {
    Postgres {
        pool: PgPool,
        events: PersistedEventStore<GroupCommitRepository<PgPool>, ClientKey>,
        /// The token ledger's batched writes (`ledger/group.rs`), on this pool.
        ledger: LedgerWriters,
    },
    Sqlite {
        pool: SqlitePool,
        events: PersistedEventStore<GroupCommitRepository<SqlitePool>, ClientKey>,
        ledger: LedgerWriters,
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

/// Runs the same query text on whichever pool the store has (here and in `ledger/`).
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            $crate::store::Store::Postgres { pool: $pool, .. } => $body,
            $crate::store::Store::Sqlite { pool: $pool, .. } => $body,
        }
    };
}
pub(crate) use on_pool;

impl Store {
    /// PostgreSQL from a `postgres://` URL; otherwise the embedded SQLite file in `data_dir`.
    pub async fn open(database_url: Option<&str>, data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_pool(database_url, data_dir, DEFAULT_PG_CONNECTIONS).await
    }

    /// Like [`Store::open`], with at most `pg_connections` PostgreSQL connections. Commits
    /// take at most the group committers' few (see `group_commit/`); the rest serve the
    /// token ledger, loads, the feed and audits, whose concurrency grows with it.
    pub async fn open_with_pool(
        database_url: Option<&str>,
        data_dir: &Path,
        pg_connections: u32,
    ) -> Result<Self, StoreError> {
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
                    StoreError::Configuration(format!(
                        "DATABASE_URL is not a valid PostgreSQL URL: {e}"
                    ))
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
                let ledger = LedgerWriters::postgres(pool.clone(), is_unavailable);
                Ok(Self::Postgres {
                    pool,
                    events,
                    ledger,
                })
            }
            Some(url) if url.starts_with("sqlite:") => {
                let options: SqliteConnectOptions = url.parse().map_err(|e: sqlx::Error| {
                    StoreError::Configuration(format!(
                        "DATABASE_URL is not a valid SQLite URL: {e}"
                    ))
                })?;
                Self::open_sqlite(options).await
            }
            Some(_) => Err(StoreError::Configuration(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite:".to_owned(),
            )),
            None => {
                files::private_dir(data_dir).map_err(|source| StoreError::DataDir {
                    path: data_dir.to_owned(),
                    source,
                })?;
                let options =
                    SqliteConnectOptions::new().filename(data_dir.join("widget-auth.sqlite3"));
                Self::open_sqlite(options).await
            }
        }
    }

    async fn open_sqlite(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let database = options.get_filename().to_owned();
        let on_disk = database.as_os_str() != ":memory:" && !database.as_os_str().is_empty();
        let private = |result: std::io::Result<()>| {
            result.map_err(|source| StoreError::DatabaseFile {
                path: database.clone(),
                source,
            })
        };
        if on_disk {
            private(files::prepare_sqlite(&database))?;
        }
        let options = options
            .create_if_missing(true)
            // WAL: readers (loads, the hot path's ledger checks) never wait for the
            // writer, and a commit is one append to the log rather than a rewrite of pages.
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged command must survive a power cut, not just a crash: FULL
            // fsyncs the WAL at every COMMIT (NORMAL would leave the newest commits to the
            // next checkpoint). Group commit shares that fsync among a group's commands,
            // so durability no longer costs one fsync per command.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        if on_disk {
            // The pool's first connection switched to WAL: `-wal` and `-shm` exist now.
            private(files::narrow_sqlite(&database))?;
        }
        let events = PersistedEventStore::new_event_store(GroupCommitRepository::new(pool.clone()))
            .with_upcasters(domain::events::upcasters());
        let ledger = LedgerWriters::sqlite(pool.clone(), is_unavailable);
        Ok(Self::Sqlite {
            pool,
            events,
            ledger,
        })
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

    /// [`Store::ping`] for `/metrics`' store health gauge, counted apart from the queries
    /// requests cause (a scrape must not look like hot-path traffic reaching the store).
    pub async fn health_check(&self) -> Result<(), StoreError> {
        count_query();
        count_health_query();
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
        // Counted by the group commit, per group (one for many commands).
        let committed = match self {
            Self::Postgres { events: store, .. } => {
                store.commit(events, context, metadata.to_map()).await
            }
            Self::Sqlite { events: store, .. } => {
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

    /// The PostgreSQL pool, for the cross-node feed (its `LISTEN` connection, its reads,
    /// the wake-ups it sends); `None` on SQLite, which is single-node and has no feed.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres { pool, .. } => Some(pool),
            Self::Sqlite { .. } => None,
        }
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}
