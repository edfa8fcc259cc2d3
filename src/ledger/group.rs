//! Group commit for the token ledger's hot-path writes: exchanges (`token_ledger`) and
//! refresh spends (`refresh_family_heads`).
//!
//! One request, one autocommit statement costs one WAL flush on PostgreSQL and one fsync
//! on SQLite, and that flush, not the statement, is what capped exchange and refresh
//! (BENCHMARKS.md). Here requests that arrive while others are being written are gathered
//! (up to [`MAX_BATCH`]) and written together, each caller told its own result through
//! a oneshot:
//!
//! - PostgreSQL: one `INSERT … SELECT … FROM UNNEST` per batch, so one round trip and one
//!   flush. A statement is atomic and sees the same conflicts a single-row one would, so
//!   a batch decides exactly what its requests would have decided one by one, and across
//!   nodes the rows' unique keys still serialise racing writers.
//! - SQLite: one writer task (SQLite has one writer) runs a batch as one
//!   `BEGIN IMMEDIATE … COMMIT` holding today's single-row statements, one fsync.
//!
//! This module knows pools and rows only (no `Store`, no `StoreError`), so the store can
//! own and start it without an import loop; `ledger/mod.rs` turns its answers into the
//! ledger's types.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use sqlx::{PgPool, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::metrics::count_query;

/// Requests per statement (or SQLite transaction) at most: past this the flush is
/// already shared and a larger batch only lengthens the latency of all of its requests.
const MAX_BATCH: usize = 64;

/// PostgreSQL statements in flight at once, per kind of request; while one batch is
/// written the next gathers. One: measured with the benchmark's 64 connections (2 cores,
/// the database beside the server), a statement's own time, the flush included, was what
/// spread the tail, and it grows with the statements in flight: with four writers the
/// batches averaged 7 requests and a statement took 2.2 ms (p99 4.1 to 4.8 ms), with one
/// they averaged 23 and took 1.8 ms (p99 2.9 ms), which moved exchange's p99 from 1.61 ×
/// to 1.28 × the crypto-only endpoint's and refresh's from 1.50 × to 1.32 ×, at the same
/// rate. At 16 connections one writer did as well or better (BENCHMARKS.md).
const PG_WRITERS: usize = 1;

/// Whether a driver error means the database could not be reached (the store decides;
/// passed in so that this module does not import the store that starts it).
pub type Unavailable = fn(&sqlx::Error) -> bool;

/// Why a request got no answer from the ledger.
#[derive(Debug, Clone)]
pub enum Failed {
    /// The statement (or transaction) that carried it failed. Shared by every request
    /// of a batch that failed as a whole: the driver's error is not `Clone`.
    Store(Arc<sqlx::Error>),
    /// The writers have stopped (the store is being dropped).
    Stopped,
}

type Answer<T> = oneshot::Sender<Result<T, Failed>>;

/// A single-use token presented once more: `None` back if this is its first use (now
/// recorded), else when it was used.
struct Exchange {
    jti: String,
    kind: String,
    now_ms: i64,
    expires_at: i64,
    done: Answer<Option<i64>>,
}

/// A refresh token being spent; the columns of `refresh_family_heads` it would write,
/// and the key version its caller checked. `true` back if it was spent.
#[derive(Debug)]
pub struct SpendRow {
    pub family: String,
    pub head_jti: String,
    pub head_generation: i64,
    pub head_iat: i64,
    pub head_exp: i64,
    pub head_ver: i64,
    pub spent_jti: String,
    pub spent_at_ms: i64,
    pub ends_at: i64,
    pub client_key: String,
    pub seen_version: i64,
}

struct Spend {
    row: SpendRow,
    done: Answer<bool>,
}

/// The queues to the ledger's writers. The writers start with it (on the current tokio
/// runtime) and stop once it is dropped and they have answered what was queued.
pub struct LedgerWriters {
    exchanges: mpsc::UnboundedSender<Exchange>,
    spends: mpsc::UnboundedSender<Spend>,
}

impl std::fmt::Debug for LedgerWriters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerWriters")
    }
}

impl LedgerWriters {
    pub fn postgres(pool: PgPool, unavailable: Unavailable) -> Self {
        let (exchanges, exchange_queue) = mpsc::unbounded_channel();
        let (spends, spend_queue) = mpsc::unbounded_channel();
        let exchange_queue = Arc::new(Mutex::new(exchange_queue));
        let spend_queue = Arc::new(Mutex::new(spend_queue));
        for _ in 0..PG_WRITERS {
            tokio::spawn(pg_writer(
                pool.clone(),
                Arc::clone(&exchange_queue),
                unavailable,
            ));
            tokio::spawn(pg_writer(
                pool.clone(),
                Arc::clone(&spend_queue),
                unavailable,
            ));
        }
        Self { exchanges, spends }
    }

    pub fn sqlite(pool: SqlitePool, unavailable: Unavailable) -> Self {
        let (exchanges, exchange_queue) = mpsc::unbounded_channel();
        let (spends, spend_queue) = mpsc::unbounded_channel();
        tokio::spawn(sqlite_writer(
            pool,
            exchange_queue,
            spend_queue,
            unavailable,
        ));
        Self { exchanges, spends }
    }

    /// Records the use of `jti`: `None` if this was its first use, else when it was used.
    pub async fn exchange(
        &self,
        jti: &str,
        kind: &str,
        now_ms: i64,
        expires_at: i64,
    ) -> Result<Option<i64>, Failed> {
        let (done, answer) = oneshot::channel();
        let exchange = Exchange {
            jti: jti.to_owned(),
            kind: kind.to_owned(),
            now_ms,
            expires_at,
            done,
        };
        self.exchanges.send(exchange).map_err(|_| Failed::Stopped)?;
        answer.await.unwrap_or(Err(Failed::Stopped))
    }

    /// Spends a refresh token: whether this request moved its family on.
    pub async fn spend(&self, row: SpendRow) -> Result<bool, Failed> {
        let (done, answer) = oneshot::channel();
        self.spends
            .send(Spend { row, done })
            .map_err(|_| Failed::Stopped)?;
        answer.await.unwrap_or(Err(Failed::Stopped))
    }
}

/// Splits `candidates` into a batch of at most `max` with one request per key and what
/// is left for the next batch, both in arrival order. PostgreSQL refuses an
/// `ON CONFLICT DO UPDATE` that touches one row twice, and two inserts of one `jti` in one
/// statement could not both be told apart in what it returns; a repeat waits for the
/// next batch, where it sees what the first one wrote, exactly as if it had come later.
fn one_per_key<T>(candidates: Vec<T>, max: usize, key: impl Fn(&T) -> &str) -> (Vec<T>, Vec<T>) {
    let mut seen = HashSet::with_capacity(candidates.len().min(max));
    let (mut batch, mut rest) = (Vec::new(), Vec::new());
    for candidate in candidates {
        if batch.len() < max && seen.insert(key(&candidate).to_owned()) {
            batch.push(candidate);
        } else {
            rest.push(candidate);
        }
    }
    (batch, rest)
}

/// Moves what has queued into `into`, up to `max` in all, without waiting.
fn drain<T>(queue: &mut mpsc::UnboundedReceiver<T>, into: &mut Vec<T>, max: usize) {
    while into.len() < max {
        match queue.try_recv() {
            Ok(next) => into.push(next),
            Err(_) => return,
        }
    }
}

/// A kind of request PostgreSQL writes a batch of in one statement.
trait PgBatch: Sized + Send + 'static {
    type Output: Send;
    /// At most one request per key shares a statement.
    fn key(&self) -> &str;
    /// Writes the batch (one key each): `Err` if the writing statement failed (nothing
    /// was written), else each request's own result in batch order.
    fn write(
        pool: &PgPool,
        batch: &[Self],
    ) -> impl Future<Output = Result<Vec<Result<Self::Output, Failed>>, sqlx::Error>> + Send;
    fn answer(self, result: Result<Self::Output, Failed>);
}

/// Takes what has queued (waiting for the first request only), writes it, answers each
/// request, and goes again; repeats of a key wait here for the next batch.
async fn pg_writer<B: PgBatch>(
    pool: PgPool,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<B>>>,
    unavailable: Unavailable,
) {
    let mut deferred: Vec<B> = Vec::new();
    loop {
        let mut candidates = std::mem::take(&mut deferred);
        if candidates.is_empty() {
            let mut queue = queue.lock().await;
            match queue.recv().await {
                Some(first) => candidates.push(first),
                None => return,
            }
            drain(&mut queue, &mut candidates, MAX_BATCH);
        } else if let Ok(mut queue) = queue.try_lock() {
            // Never wait for the queue with requests in hand: another writer may be
            // waiting on an empty queue while holding it.
            drain(&mut queue, &mut candidates, MAX_BATCH);
        }
        let (mut batch, rest) = one_per_key(candidates, MAX_BATCH, B::key);
        deferred = rest;
        // Rows in key order, so that two batches in flight (here or on another node)
        // that share keys take their row locks in the same order and cannot deadlock.
        batch.sort_by(|a, b| a.key().cmp(b.key()));
        pg_commit(&pool, batch, unavailable).await;
    }
}

async fn pg_commit<B: PgBatch>(pool: &PgPool, batch: Vec<B>, unavailable: Unavailable) {
    match B::write(pool, &batch).await {
        Ok(results) => {
            for (request, result) in batch.into_iter().zip(results) {
                request.answer(result);
            }
        }
        // One request the statement chokes on must not fail those it happened to share
        // the statement with: a failure that is not about reaching the database is
        // retried one request at a time, so only that request sees it. (The statement
        // failed as a whole, so nothing of it was written.)
        Err(err) if batch.len() > 1 && !unavailable(&err) => {
            tracing::warn!(error = %err, requests = batch.len(), "a token ledger batch failed; writing its requests one by one");
            for request in batch {
                let result = match B::write(pool, std::slice::from_ref(&request)).await {
                    Ok(mut results) => results.pop().unwrap_or(Err(Failed::Stopped)),
                    Err(err) => Err(Failed::Store(Arc::new(err))),
                };
                request.answer(result);
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for request in batch {
                request.answer(Err(Failed::Store(Arc::clone(&err))));
            }
        }
    }
}

const PG_EXCHANGE: &str = "INSERT INTO token_ledger (jti, kind, family, used_at_ms, expires_at) \
     SELECT j, k, NULL, u, e FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
     AS r(j, k, u, e) \
     ON CONFLICT (jti) DO NOTHING RETURNING jti";

const PG_USED_AT: &str = "SELECT jti, used_at_ms FROM token_ledger WHERE jti = ANY($1::text[])";

impl PgBatch for Exchange {
    type Output = Option<i64>;

    fn key(&self) -> &str {
        &self.jti
    }

    async fn write(
        pool: &PgPool,
        batch: &[Self],
    ) -> Result<Vec<Result<Option<i64>, Failed>>, sqlx::Error> {
        count_query();
        let inserted: Vec<String> = sqlx::query_scalar(PG_EXCHANGE)
            .bind(batch.iter().map(|e| e.jti.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind(batch.iter().map(|e| e.now_ms).collect::<Vec<_>>())
            .bind(batch.iter().map(|e| e.expires_at).collect::<Vec<_>>())
            .fetch_all(pool)
            .await?;
        let inserted: HashSet<&str> = inserted.iter().map(String::as_str).collect();
        let again: Vec<&str> = batch
            .iter()
            .map(|e| e.jti.as_str())
            .filter(|jti| !inserted.contains(jti))
            .collect();
        // Every jti the insert did not return was used before (the conflicting row is
        // committed: the insert waited for it), so one look-up answers all of them.
        // Its failure is theirs alone: the first uses are recorded and stand.
        let used_at: Result<Vec<(String, i64)>, Failed> = if again.is_empty() {
            Ok(Vec::new())
        } else {
            count_query();
            sqlx::query_as(PG_USED_AT)
                .bind(&again)
                .fetch_all(pool)
                .await
                .map_err(|err| Failed::Store(Arc::new(err)))
        };
        Ok(batch
            .iter()
            .map(|e| {
                if inserted.contains(e.jti.as_str()) {
                    return Ok(None);
                }
                let used_at = used_at.as_ref().map_err(Clone::clone)?;
                used_at
                    .iter()
                    .find(|(jti, _)| *jti == e.jti)
                    .map(|(_, at)| Some(*at))
                    .ok_or_else(|| Failed::Store(Arc::new(sqlx::Error::RowNotFound)))
            })
            .collect())
    }

    fn answer(self, result: Result<Option<i64>, Failed>) {
        // The caller may have gone (its client hung up); what was written stands.
        let _ = self.done.send(result);
    }
}

/// The spend for a whole batch, row by row what [`SQLITE_SPEND`] does for one: the row is
/// created (first rotation) or moved on (the presented token is its live head and the
/// family is not revoked) unless the token was spent in the legacy `token_ledger` or
/// the key was revoked or disabled after the version the caller checked.
/// The spend statement on either database, from its row source (`select`) and how that
/// source names the spent token, the key and the version the caller checked: one text
/// for the guards and the upsert, so the two databases cannot drift apart.
macro_rules! spend_statement {
    (select: $select:literal, spent_jti: $sj:literal, client_key: $ck:literal, seen: $seen:literal) => {
        concat!(
            "INSERT INTO refresh_family_heads AS f \
             (family, head_jti, head_generation, head_iat, head_exp, head_ver, \
              spent_jti, spent_at_ms, ends_at) ",
            $select,
            " WHERE NOT EXISTS (SELECT 1 FROM token_ledger WHERE jti = ",
            $sj,
            ") AND NOT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'ClientKey' \
             AND aggregate_id = ",
            $ck,
            " AND sequence > ",
            $seen,
            " AND event_type IN ('SessionsRevoked', 'ClientKeyDisabled')) \
             ON CONFLICT (family) DO UPDATE SET \
               head_jti = excluded.head_jti, head_generation = excluded.head_generation, \
               head_iat = excluded.head_iat, head_exp = excluded.head_exp, \
               head_ver = excluded.head_ver, spent_jti = excluded.spent_jti, \
               spent_at_ms = excluded.spent_at_ms, \
               ends_at = CASE WHEN f.ends_at > excluded.ends_at \
                         THEN f.ends_at ELSE excluded.ends_at END \
             WHERE f.head_jti = excluded.spent_jti AND f.revoked_at IS NULL \
             RETURNING family"
        )
    };
}

const PG_SPEND: &str = spend_statement!(
    select: "SELECT r.fam, r.hj, r.hg, r.hi, r.he, r.hv, r.sj, r.sa, r.ea \
     FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], \
                 $6::bigint[], $7::text[], $8::bigint[], $9::bigint[], $10::text[], \
                 $11::bigint[]) \
       AS r(fam, hj, hg, hi, he, hv, sj, sa, ea, ck, seen)",
    spent_jti: "r.sj",
    client_key: "r.ck",
    seen: "r.seen"
);

impl PgBatch for Spend {
    type Output = bool;

    fn key(&self) -> &str {
        &self.row.family
    }

    async fn write(
        pool: &PgPool,
        batch: &[Self],
    ) -> Result<Vec<Result<bool, Failed>>, sqlx::Error> {
        count_query();
        let text = |f: fn(&SpendRow) -> &str| batch.iter().map(|s| f(&s.row)).collect::<Vec<_>>();
        let int = |f: fn(&SpendRow) -> i64| batch.iter().map(|s| f(&s.row)).collect::<Vec<_>>();
        let spent: Vec<String> = sqlx::query_scalar(PG_SPEND)
            .bind(text(|r| &r.family))
            .bind(text(|r| &r.head_jti))
            .bind(int(|r| r.head_generation))
            .bind(int(|r| r.head_iat))
            .bind(int(|r| r.head_exp))
            .bind(int(|r| r.head_ver))
            .bind(text(|r| &r.spent_jti))
            .bind(int(|r| r.spent_at_ms))
            .bind(int(|r| r.ends_at))
            .bind(text(|r| &r.client_key))
            .bind(int(|r| r.seen_version))
            .fetch_all(pool)
            .await?;
        // One request per family in a batch, so the families returned are the spends.
        let spent: HashSet<&str> = spent.iter().map(String::as_str).collect();
        Ok(batch
            .iter()
            .map(|s| Ok(spent.contains(s.row.family.as_str())))
            .collect())
    }

    fn answer(self, result: Result<bool, Failed>) {
        let _ = self.done.send(result);
    }
}

/// SQLite's one writer: takes whatever has queued of either kind (waiting for the first
/// request only) and writes it as one transaction.
async fn sqlite_writer(
    pool: SqlitePool,
    mut exchanges: mpsc::UnboundedReceiver<Exchange>,
    mut spends: mpsc::UnboundedReceiver<Spend>,
    unavailable: Unavailable,
) {
    loop {
        let (mut exchange_batch, mut spend_batch) = (Vec::new(), Vec::new());
        tokio::select! {
            Some(first) = exchanges.recv() => exchange_batch.push(first),
            Some(first) = spends.recv() => spend_batch.push(first),
            else => return,
        }
        drain(&mut exchanges, &mut exchange_batch, MAX_BATCH);
        drain(&mut spends, &mut spend_batch, MAX_BATCH);
        sqlite_commit(&pool, exchange_batch, spend_batch, unavailable).await;
    }
}

async fn sqlite_commit(
    pool: &SqlitePool,
    exchanges: Vec<Exchange>,
    spends: Vec<Spend>,
    unavailable: Unavailable,
) {
    match sqlite_write(pool, &exchanges, &spends).await {
        Ok((used, spent)) => {
            for (exchange, used) in exchanges.into_iter().zip(used) {
                exchange.answer(Ok(used));
            }
            for (spend, spent) in spends.into_iter().zip(spent) {
                spend.answer(Ok(spent));
            }
        }
        // As on PostgreSQL: the transaction was rolled back, so each request is written
        // again on its own and only the one at fault sees the error.
        Err(err) if exchanges.len() + spends.len() > 1 && !unavailable(&err) => {
            tracing::warn!(error = %err, requests = exchanges.len() + spends.len(), "a token ledger batch failed; writing its requests one by one");
            for exchange in exchanges {
                let result = sqlite_write(pool, std::slice::from_ref(&exchange), &[]).await;
                exchange.answer(
                    result
                        .map(|(mut used, _)| used.pop().flatten())
                        .map_err(|err| Failed::Store(Arc::new(err))),
                );
            }
            for spend in spends {
                let result = sqlite_write(pool, &[], std::slice::from_ref(&spend)).await;
                spend.answer(
                    result
                        .map(|(_, spent)| spent.first().copied().unwrap_or(false))
                        .map_err(|err| Failed::Store(Arc::new(err))),
                );
            }
        }
        Err(err) => {
            let err = Arc::new(err);
            for exchange in exchanges {
                exchange.answer(Err(Failed::Store(Arc::clone(&err))));
            }
            for spend in spends {
                spend.answer(Err(Failed::Store(Arc::clone(&err))));
            }
        }
    }
}

const SQLITE_EXCHANGE: &str =
    "INSERT INTO token_ledger (jti, kind, family, used_at_ms, expires_at) \
     VALUES ($1, $2, NULL, $3, $4) ON CONFLICT (jti) DO NOTHING";
const SQLITE_USED_AT: &str = "SELECT used_at_ms FROM token_ledger WHERE jti = $1";
// `INSERT … SELECT … WHERE` (not VALUES) for the legacy check; SQLite needs the WHERE
// anyway to parse the upsert after a SELECT.
const SQLITE_SPEND: &str = spend_statement!(
    select: "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9",
    spent_jti: "$7",
    client_key: "$10",
    seen: "$11"
);

/// Writes a batch as one transaction, its requests one after another in arrival order.
/// Each statement sees what the ones before it wrote, so a repeated `jti` or family in
/// one batch is decided exactly as if it had come in a later transaction: no need to
/// split repeats off as on PostgreSQL. Nothing is answered before the commit.
async fn sqlite_write(
    pool: &SqlitePool,
    exchanges: &[Exchange],
    spends: &[Spend],
) -> Result<(Vec<Option<i64>>, Vec<bool>), sqlx::Error> {
    count_query();
    // IMMEDIATE: take the write lock now (waiting up to the busy timeout) rather than
    // at the first write, where SQLite may refuse a deferred transaction outright.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut used = Vec::with_capacity(exchanges.len());
    for exchange in exchanges {
        used.push(sqlite_exchange(&mut tx, exchange).await?);
    }
    let mut spent = Vec::with_capacity(spends.len());
    for spend in spends {
        let row = &spend.row;
        let family: Option<String> = sqlx::query_scalar(SQLITE_SPEND)
            .bind(&row.family)
            .bind(&row.head_jti)
            .bind(row.head_generation)
            .bind(row.head_iat)
            .bind(row.head_exp)
            .bind(row.head_ver)
            .bind(&row.spent_jti)
            .bind(row.spent_at_ms)
            .bind(row.ends_at)
            .bind(&row.client_key)
            .bind(row.seen_version)
            .fetch_optional(&mut *tx)
            .await?;
        spent.push(family.is_some());
    }
    tx.commit().await?;
    Ok((used, spent))
}

async fn sqlite_exchange(
    conn: &mut SqliteConnection,
    exchange: &Exchange,
) -> Result<Option<i64>, sqlx::Error> {
    let inserted = sqlx::query(SQLITE_EXCHANGE)
        .bind(&exchange.jti)
        .bind(&exchange.kind)
        .bind(exchange.now_ms)
        .bind(exchange.expires_at)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    sqlx::query_scalar(SQLITE_USED_AT)
        .bind(&exchange.jti)
        .fetch_one(&mut *conn)
        .await
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::one_per_key;

    fn split(keys: &[&'static str], max: usize) -> (Vec<&'static str>, Vec<&'static str>) {
        one_per_key(keys.to_vec(), max, |k| *k)
    }

    #[test]
    fn a_repeated_key_waits_for_the_next_batch_in_arrival_order() {
        assert_eq!(
            split(&["a", "b", "a", "c", "b", "a"], 64),
            (vec!["a", "b", "c"], vec!["a", "b", "a"])
        );
    }

    #[test]
    fn distinct_keys_share_one_batch_up_to_the_limit() {
        assert_eq!(
            split(&["a", "b", "c", "d", "e"], 3),
            (vec!["a", "b", "c"], vec!["d", "e"])
        );
    }

    #[test]
    fn repeats_drain_one_per_batch_so_each_sees_the_one_before() {
        let mut waiting = vec!["f"; 4];
        waiting.push("g");
        let mut batches = Vec::new();
        while !waiting.is_empty() {
            let (batch, rest) = one_per_key(waiting, 64, |k| *k);
            batches.push(batch);
            waiting = rest;
        }
        assert_eq!(
            batches,
            vec![vec!["f", "g"], vec!["f"], vec!["f"], vec!["f"]]
        );
    }

    #[test]
    fn an_empty_queue_makes_an_empty_batch() {
        assert_eq!(split(&[], 64), (vec![], vec![]));
    }
}
