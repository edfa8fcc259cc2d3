//! The Idempotency-Keys of commands that recorded no event (`idempotent_noops`): an
//! event carries its command's key in its metadata, a command that changed nothing has
//! no event to carry it, so its key and answer get a row of their own, in the same store
//! (it survives restarts and every node sees it).

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{on_pool, Store, StoreError};
use crate::metrics::count_query;

/// What a no-op command answered, under its Idempotency-Key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoopRecord {
    pub request_hash: String,
    pub aggregate_id: String,
    pub version: u64,
}

impl Store {
    /// The no-op answer recorded under `key`, if any.
    pub async fn find_noop(&self, key: &str) -> Result<Option<NoopRecord>, StoreError> {
        count_query();
        let sql = "SELECT request_hash, aggregate_id, version FROM idempotent_noops WHERE idempotency_key = $1";
        on_pool!(self, |pool| {
            let row = sqlx::query(sql)
                .bind(key)
                .fetch_optional(pool)
                .await
                .map_err(StoreError::from_sqlx)?;
            row.map(|row| {
                Ok(NoopRecord {
                    request_hash: row.try_get(0).map_err(StoreError::from_sqlx)?,
                    aggregate_id: row.try_get(1).map_err(StoreError::from_sqlx)?,
                    version: u64::try_from(
                        row.try_get::<i64, _>(2).map_err(StoreError::from_sqlx)?,
                    )
                    .unwrap_or_default(),
                })
            })
            .transpose()
        })
    }

    /// Records `record` under `key` unless the key is already taken, and returns what is
    /// recorded under it afterwards (ours, or the one a concurrent request got in first).
    pub async fn record_noop(
        &self,
        key: &str,
        record: &NoopRecord,
        at: DateTime<Utc>,
    ) -> Result<NoopRecord, StoreError> {
        count_query();
        let sql = "INSERT INTO idempotent_noops (idempotency_key, request_hash, aggregate_id, version, recorded_at) \
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING";
        let version = i64::try_from(record.version).unwrap_or(i64::MAX);
        on_pool!(self, |pool| sqlx::query(sql)
            .bind(key)
            .bind(&record.request_hash)
            .bind(&record.aggregate_id)
            .bind(version)
            .bind(at.to_rfc3339())
            .execute(pool)
            .await
            .map(|_| ())
            .map_err(StoreError::from_sqlx))?;
        Ok(self.find_noop(key).await?.unwrap_or_else(|| record.clone()))
    }
}
