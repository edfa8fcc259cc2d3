//! The snapshot tables' queries (`migrations/*/..._read_model_snapshots.sql`) and the
//! reads of the events table that only snapshots need: the chain links at the versions a
//! snapshot records, and on SQLite the rowid position and the events after it. One SQL
//! text serves both databases wherever their dialects agree.

use std::collections::HashMap;

use domain::ClientKey;
use futures::stream::{BoxStream, StreamExt};
use sqlx::Row;

use super::format::{Header, Position};
use crate::metrics::count_query;
use crate::store::{decode_recorded_row, on_pool, RecordedEvent, Store, StoreError, COLUMNS};

/// A sealed snapshot's header as stored.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub id: i64,
    pub header: Header,
    pub keys: i64,
    pub chunks: i64,
    pub digest: String,
}

fn aggregate_type() -> &'static str {
    <ClientKey as cqrs_es::Aggregate>::TYPE
}

/// Starts a snapshot: its header, not loadable until [`seal`]ed. Returns its id.
pub(super) async fn begin(store: &Store, header: &Header) -> Result<i64, StoreError> {
    count_query();
    const SQL: &str = "INSERT INTO read_model_snapshots \
         (format_version, created_at, position_txid, position_global) \
         VALUES ($1, $2, $3, $4) RETURNING id";
    on_pool!(store, |pool| sqlx::query_scalar(SQL)
        .bind(header.format_version)
        .bind(header.created_at_ms)
        .bind(header.position.txid)
        .bind(header.position.global)
        .fetch_one(pool)
        .await)
    .map_err(StoreError::from_sqlx)
}

/// Stores one chunk, in a statement of its own (see the migration: no long transaction).
pub(super) async fn put_chunk(
    store: &Store,
    id: i64,
    index: u32,
    body: &[u8],
) -> Result<(), StoreError> {
    count_query();
    const SQL: &str =
        "INSERT INTO read_model_snapshot_chunks (snapshot_id, chunk, body) VALUES ($1, $2, $3)";
    on_pool!(store, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(i64::from(index))
        .bind(body)
        .execute(pool)
        .await
        .map(|_| ()))
    .map_err(StoreError::from_sqlx)
}

/// Makes a written snapshot loadable.
pub(super) async fn seal(
    store: &Store,
    id: i64,
    keys: u64,
    chunks: u32,
    digest: &str,
) -> Result<(), StoreError> {
    count_query();
    const SQL: &str =
        "UPDATE read_model_snapshots SET keys = $2, chunks = $3, digest = $4 WHERE id = $1";
    on_pool!(store, |pool| sqlx::query(SQL)
        .bind(id)
        .bind(i64::try_from(keys).unwrap_or(i64::MAX))
        .bind(i64::from(chunks))
        .bind(digest)
        .execute(pool)
        .await
        .map(|_| ()))
    .map_err(StoreError::from_sqlx)
}

/// The newest sealed snapshot's header, if any.
pub(super) async fn newest(store: &Store) -> Result<Option<Sealed>, StoreError> {
    count_query();
    const SQL: &str = "SELECT id, CAST(format_version AS bigint), created_at, position_txid, \
         position_global, keys, CAST(chunks AS bigint), digest FROM read_model_snapshots WHERE digest IS NOT NULL \
         ORDER BY id DESC LIMIT 1";
    let row = on_pool!(store, |pool| {
        let row = sqlx::query(SQL)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.map(|row| -> Result<Sealed, sqlx::Error> {
            Ok(Sealed {
                id: row.try_get(0)?,
                header: Header {
                    format_version: i32::try_from(row.try_get::<i64, _>(1)?).unwrap_or(i32::MIN),
                    created_at_ms: row.try_get(2)?,
                    position: Position {
                        txid: row.try_get(3)?,
                        global: row.try_get(4)?,
                    },
                },
                keys: row.try_get(5)?,
                chunks: row.try_get(6)?,
                digest: row.try_get(7)?,
            })
        })
        .transpose()
        .map_err(StoreError::from_sqlx)
    })?;
    Ok(row)
}

/// Chunks `0..chunks` of snapshot `id` with their indexes, in order, as one streamed
/// query: rows arrive as the loader takes them, so it holds a few chunks' bytes at a
/// time, never the whole snapshot's, and pays one round trip, not one per chunk.
pub(super) fn chunks(
    store: &Store,
    id: i64,
    chunks: u32,
) -> BoxStream<'_, Result<(u32, Vec<u8>), StoreError>> {
    count_query();
    const SQL: &str = "SELECT chunk, body FROM read_model_snapshot_chunks \
         WHERE snapshot_id = $1 AND chunk < $2 ORDER BY chunk";
    let rows = on_pool!(store, |pool| sqlx::query_as::<_, (i64, Vec<u8>)>(SQL)
        .bind(id)
        .bind(i64::from(chunks))
        .fetch(pool));
    rows.map(|row| {
        let (index, body) = row.map_err(StoreError::from_sqlx)?;
        // Below `chunks`, a u32, by the query.
        Ok((u32::try_from(index).unwrap_or(u32::MAX), body))
    })
    .boxed()
}

/// Deletes sealed snapshots older than the `keep` newest, and unsealed ones (a writer
/// that died) started before `stale_before_ms`. Returns how many went.
pub(super) async fn prune(
    store: &Store,
    keep: i64,
    stale_before_ms: i64,
) -> Result<u64, StoreError> {
    count_query();
    const DOOMED: &str = "SELECT id FROM read_model_snapshots \
         WHERE (digest IS NOT NULL AND id < COALESCE((SELECT id FROM read_model_snapshots \
             WHERE digest IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET $1), 0)) \
         OR (digest IS NULL AND created_at < $2)";
    let chunks = format!("DELETE FROM read_model_snapshot_chunks WHERE snapshot_id IN ({DOOMED})");
    let headers = format!("DELETE FROM read_model_snapshots WHERE id IN ({DOOMED})");
    on_pool!(store, |pool| {
        sqlx::query(&chunks)
            .bind(keep - 1)
            .bind(stale_before_ms)
            .execute(pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        sqlx::query(&headers)
            .bind(keep - 1)
            .bind(stale_before_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
            .map_err(StoreError::from_sqlx)
    })
}

/// The stored chain link of each `(key, sequence)` asked for, by key: `Some(None)` for an
/// event stored without a link, absent when no such event is stored. One query per call.
pub(super) async fn links(
    store: &Store,
    wanted: &[(&str, u64)],
) -> Result<HashMap<String, (u64, Option<String>)>, StoreError> {
    count_query();
    let rows: Vec<(String, i64, Option<String>)> = match store {
        Store::Postgres { pool, .. } => {
            const SQL: &str = "SELECT e.aggregate_id, e.sequence, e.metadata ->> 'chain' \
                 FROM UNNEST($2::text[], $3::bigint[]) AS w(id, seq) \
                 JOIN events e ON e.aggregate_type = $1 AND e.aggregate_id = w.id \
                 AND e.sequence = w.seq";
            let ids: Vec<&str> = wanted.iter().map(|(id, _)| *id).collect();
            let sequences: Vec<i64> = wanted
                .iter()
                .map(|(_, s)| i64::try_from(*s).unwrap_or(i64::MAX))
                .collect();
            sqlx::query_as(SQL)
                .bind(aggregate_type())
                .bind(&ids)
                .bind(&sequences)
                .fetch_all(pool)
                .await
        }
        Store::Sqlite { pool, .. } => {
            // No arrays in SQLite: the pairs go as one JSON text, and CROSS JOIN keeps
            // them the outer loop, so each is one primary-key probe.
            const SQL: &str = "WITH w(id, seq) AS (SELECT json_extract(value, '$[0]'), \
                 json_extract(value, '$[1]') FROM json_each($2)) \
                 SELECT e.aggregate_id, e.sequence, e.metadata ->> 'chain' \
                 FROM w CROSS JOIN events e ON e.aggregate_type = $1 \
                 AND e.aggregate_id = w.id AND e.sequence = w.seq";
            let pairs = serde_json::to_string(&wanted).unwrap_or_default();
            sqlx::query_as(SQL)
                .bind(aggregate_type())
                .bind(pairs)
                .fetch_all(pool)
                .await
        }
    }
    .map_err(StoreError::from_sqlx)?;
    Ok(rows
        .into_iter()
        .map(|(id, sequence, link)| (id, (sequence as u64, link)))
        .collect())
}

/// SQLite: the rowid of the newest event (0 when there is none). SQLite has one writer
/// and rowids grow in insertion order, which is commit order.
pub(super) async fn sqlite_head(store: &Store) -> Result<i64, StoreError> {
    count_query();
    const SQL: &str = "SELECT COALESCE(MAX(rowid), 0) FROM events WHERE aggregate_type = $1";
    on_pool!(store, |pool| sqlx::query_scalar(SQL)
        .bind(aggregate_type())
        .fetch_one(pool)
        .await)
    .map_err(StoreError::from_sqlx)
}

/// SQLite: events after rowid `after`, in rowid order, at most `limit`, with the rowid
/// of the last one.
pub(super) async fn sqlite_after(
    store: &Store,
    after: i64,
    limit: u32,
) -> Result<(Vec<RecordedEvent>, Option<i64>), StoreError> {
    let Store::Sqlite { pool, .. } = store else {
        return Ok((Vec::new(), None));
    };
    count_query();
    let sql = format!(
        "SELECT {COLUMNS}, rowid FROM events WHERE aggregate_type = $1 AND rowid > $2 \
         ORDER BY rowid LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(aggregate_type())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    let mut last = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        last = Some(row.try_get::<i64, _>(6).map_err(StoreError::from_sqlx)?);
        events.push(decode_recorded_row(row)?);
    }
    Ok((events, last))
}

/// PostgreSQL: the current snapshot's xmin (every transaction below it has finished).
pub(super) async fn postgres_xmin(store: &Store) -> Result<Option<i64>, StoreError> {
    let Store::Postgres { pool, .. } = store else {
        return Ok(None);
    };
    count_query();
    sqlx::query_scalar(
        "SELECT CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint)",
    )
    .fetch_one(pool)
    .await
    .map(Some)
    .map_err(StoreError::from_sqlx)
}
