//! The token ledger: the only hot-path writes (DESIGN.md). A visitor token is exchanged
//! once and a refresh token rotated once, decided by one atomic insert in
//! `token_ledger`; a refresh family that was caught replaying is recorded in
//! `refresh_families`; and rows of tokens that have expired are pruned every hour (an
//! expired token is refused by its signature check alone). Same tables and SQL on
//! SQLite and PostgreSQL, on the event store's pools: the methods extend [`Store`], so
//! callers keep writing `store.use_token(...)`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::count_query;
use crate::store::{on_pool, Store, StoreError};

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

    /// Whether this refresh family was revoked (a rotated token was presented again).
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

    /// Revokes a refresh family until `expires_at` (unix seconds), when its last token
    /// expires anyway; revoking it again changes nothing.
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

/// How often used-token records of expired tokens are forgotten.
const LEDGER_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Keeps the token ledger small, every [`LEDGER_PRUNE_EVERY`] until `stop`: once a token
/// has expired its signature check refuses it, so its single-use record is no longer
/// needed.
pub async fn keep_pruned(store: Arc<Store>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(LEDGER_PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let before = chrono::Utc::now().timestamp() - 60;
        match store.prune_token_ledger(before).await {
            Ok(removed) => tracing::debug!(removed, "pruned the token ledger"),
            Err(err) => tracing::warn!(error = %err, "pruning the token ledger failed"),
        }
    }
}
