//! The token ledger: the only hot-path writes (DESIGN.md). A visitor token is exchanged
//! once, decided by one atomic insert in `token_ledger`. A refresh family is one row of
//! `refresh_family_heads`: its live token (the head), the token spent last and when, and
//! whether the family was revoked. Spending a refresh token is one conditional upsert of
//! that row which records its successor, so of any number of racing requests on any
//! number of nodes exactly one spends it, and a revoked family cannot be spent by the
//! same statement. Rows are pruned every hour once every token they cover has expired
//! (an expired token is refused by its signature check alone). Same tables and SQL on
//! SQLite and PostgreSQL, on the event store's pools: the methods extend [`Store`], so
//! callers keep writing `store.use_token(...)`. Concurrent exchanges and spends are
//! written together, one statement (PostgreSQL) or transaction (SQLite) per batch, by
//! the writers in `group.rs`, which the store starts when it opens.

pub(crate) mod group;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use self::group::LedgerWriters;
use self::group::{Failed, SpendRow};
use crate::metrics::count_query;
use crate::store::{is_unavailable, on_pool, Store, StoreError};

/// The ledger's writers have stopped: only while the store is being dropped.
#[derive(Debug, thiserror::Error)]
#[error("the token ledger's writers have stopped")]
struct WritersStopped;

/// A batch's failure as its callers get it, with the same unavailability as before the
/// writes were grouped (so the HTTP layer still answers 503 when the store is down).
fn store_error(failed: Failed) -> StoreError {
    match failed {
        Failed::Store(err) if is_unavailable(&err) => StoreError::Unavailable(Box::new(err)),
        Failed::Store(err) => StoreError::Other(Box::new(err)),
        Failed::Stopped => StoreError::Unavailable(Box::new(WritersStopped)),
    }
}

/// What the token ledger knew when a visitor token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// This is the token's first use; it is now recorded as used.
    First,
    /// The token was used before, at `used_at_ms`.
    Again { used_at_ms: i64 },
}

/// The refresh token that spending another one produced: what the ledger keeps to mint
/// it again, identically, for a client whose response was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedToken {
    pub jti: String,
    /// 0 for the token a guest mint or exchange started the family with, then +1 per
    /// rotation.
    pub generation: i64,
    pub iat: i64,
    pub exp: i64,
    /// The client key version it was minted under.
    pub ver: i64,
}

/// One refresh token being spent: `spent_jti` (of `generation`) is replaced by
/// `successor` as the family's head, at `now_ms`. `ends_at` is the latest `exp` of any
/// token of the family (the presented one's and the successor's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend<'a> {
    /// The client key id, and the version of it the caller decided on: the spend is
    /// refused if the store holds a later revocation or disabling of that key.
    pub client_key: &'a str,
    pub seen_version: i64,
    pub family: &'a str,
    pub spent_jti: &'a str,
    pub successor: &'a RecordedToken,
    pub now_ms: i64,
    pub ends_at: i64,
}

/// A refresh family as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRecord {
    /// The live token; `None` for a family revoked before it was ever rotated.
    pub head: Option<RecordedToken>,
    /// The token spent most recently (whose successor is `head`) and when.
    pub spent: Option<(String, i64)>,
    pub revoked: Option<FamilyRevoked>,
    /// No token of the family is valid after this (unix seconds).
    pub ends_at: i64,
}

/// Why and when a family was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRevoked {
    pub at: i64,
    pub reason: String,
    /// The generation whose replay revoked it, when known.
    pub generation: Option<i64>,
}

/// What spending a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendOutcome {
    /// The token was the live head of an unrevoked family (or started a family the
    /// ledger had not seen): it is spent and `successor` is the new head.
    Spent,
    /// Nothing was written: the token is not the live head, or the family is revoked.
    /// The family's row as it stands (`None`: the token was spent before this table
    /// existed, in `token_ledger`).
    NotSpent(Option<FamilyRecord>),
    /// Nothing was written: the store holds a `SessionsRevoked` or `ClientKeyDisabled`
    /// of the key newer than the version the caller checked (its read model lags).
    KeyChanged,
}

/// `refresh_family_heads` columns as read, in [`FAMILY_COLUMNS`] order.
type FamilyRow = (
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    i64,
);

const FAMILY_COLUMNS: &str = "head_jti, head_generation, head_iat, head_exp, head_ver, \
     spent_jti, spent_at_ms, revoked_at, revoked_reason, revoked_generation, ends_at";

fn family_record(row: FamilyRow) -> FamilyRecord {
    let (
        jti,
        generation,
        iat,
        exp,
        ver,
        spent_jti,
        spent_at_ms,
        revoked_at,
        reason,
        rev_gen,
        ends_at,
    ) = row;
    let head = match (jti, generation, iat, exp, ver) {
        (Some(jti), Some(generation), Some(iat), Some(exp), Some(ver)) => Some(RecordedToken {
            jti,
            generation,
            iat,
            exp,
            ver,
        }),
        _ => None,
    };
    FamilyRecord {
        head,
        spent: spent_jti.zip(spent_at_ms),
        revoked: revoked_at.map(|at| FamilyRevoked {
            at,
            reason: reason.unwrap_or_else(|| "reuse".to_owned()),
            generation: rev_gen,
        }),
        ends_at,
    }
}

impl Store {
    fn ledger_writers(&self) -> &LedgerWriters {
        match self {
            Store::Postgres { ledger, .. } | Store::Sqlite { ledger, .. } => ledger,
        }
    }

    /// Records the use of a single-use token in one atomic insert: of two nodes racing
    /// with the same `jti`, exactly one gets [`TokenUse::First`]. Concurrent calls share
    /// the insert (`group.rs`); a `jti` is in at most one of its rows.
    pub async fn use_token(
        &self,
        jti: &str,
        kind: &str,
        now_ms: i64,
        expires_at: i64,
    ) -> Result<TokenUse, StoreError> {
        let used = self
            .ledger_writers()
            .exchange(jti, kind, now_ms, expires_at)
            .await
            .map_err(store_error)?;
        Ok(match used {
            None => TokenUse::First,
            Some(used_at_ms) => TokenUse::Again { used_at_ms },
        })
    }

    /// Spends a refresh token, in one statement: the family's row is created (first
    /// rotation) or moved on (the token is its live head and the family is not revoked),
    /// recording the successor; otherwise nothing is written. Under any concurrency, on
    /// any number of nodes, one request spends a given token and the rest see
    /// [`SpendOutcome::NotSpent`] with the successor it recorded. A token spent before
    /// this table existed (its `jti` in `token_ledger`) is never spent again. Concurrent
    /// spends of distinct families share the statement (`group.rs`).
    pub async fn spend_refresh_token(&self, spend: &Spend<'_>) -> Result<SpendOutcome, StoreError> {
        let successor = spend.successor;
        let row = SpendRow {
            family: spend.family.to_owned(),
            head_jti: successor.jti.clone(),
            head_generation: successor.generation,
            head_iat: successor.iat,
            head_exp: successor.exp,
            head_ver: successor.ver,
            spent_jti: spend.spent_jti.to_owned(),
            spent_at_ms: spend.now_ms,
            ends_at: spend.ends_at,
            client_key: spend.client_key.to_owned(),
            seen_version: spend.seen_version,
        };
        let spent = self
            .ledger_writers()
            .spend(row)
            .await
            .map_err(store_error)?;
        if spent {
            return Ok(SpendOutcome::Spent);
        }
        // Why it was not spent, read after the write (and off the writers' path): a
        // racing spend that won is committed by now, so its successor is in the row.
        let record = self.refresh_family(spend.family).await?;
        if record.as_ref().is_some_and(|r| r.revoked.is_some()) {
            return Ok(SpendOutcome::NotSpent(record));
        }
        if self
            .key_changed_since(spend.client_key, spend.seen_version)
            .await?
        {
            return Ok(SpendOutcome::KeyChanged);
        }
        Ok(SpendOutcome::NotSpent(record))
    }

    /// Whether the store holds a revocation or disabling of `client_key` after
    /// `version` (the same test the spending statement makes).
    async fn key_changed_since(&self, client_key: &str, version: i64) -> Result<bool, StoreError> {
        count_query();
        const SQL: &str = "SELECT sequence FROM events WHERE aggregate_type = 'ClientKey' \
             AND aggregate_id = $1 AND sequence > $2 \
             AND event_type IN ('SessionsRevoked', 'ClientKeyDisabled') LIMIT 1";
        let found: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(SQL)
            .bind(client_key)
            .bind(version)
            .fetch_optional(pool)
            .await)
        .map_err(StoreError::from_sqlx)?;
        Ok(found.is_some())
    }

    /// A refresh family's row, if it was ever rotated or revoked.
    pub async fn refresh_family(&self, family: &str) -> Result<Option<FamilyRecord>, StoreError> {
        count_query();
        let sql = format!("SELECT {FAMILY_COLUMNS} FROM refresh_family_heads WHERE family = $1");
        let row: Option<FamilyRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(family)
            .fetch_optional(pool)
            .await)
        .map_err(StoreError::from_sqlx)?;
        Ok(row.map(family_record))
    }

    /// Revokes a refresh family at `now` (unix seconds) because `generation` was replayed,
    /// remembered until `ends_at` or the family's own end if later. Returns whether this
    /// call revoked it (`false`: it already was).
    pub async fn revoke_refresh_family(
        &self,
        family: &str,
        now: i64,
        generation: Option<i64>,
        ends_at: i64,
    ) -> Result<bool, StoreError> {
        count_query();
        const SQL: &str = "INSERT INTO refresh_family_heads AS f \
             (family, revoked_at, revoked_reason, revoked_generation, ends_at) \
             VALUES ($1, $2, 'reuse', $3, $4) \
             ON CONFLICT (family) DO UPDATE SET \
               revoked_at = excluded.revoked_at, revoked_reason = excluded.revoked_reason, \
               revoked_generation = excluded.revoked_generation, \
               ends_at = CASE WHEN f.ends_at > excluded.ends_at \
                         THEN f.ends_at ELSE excluded.ends_at END \
             WHERE f.revoked_at IS NULL";
        let revoked = on_pool!(self, |pool| sqlx::query(SQL)
            .bind(family)
            .bind(now)
            .bind(generation)
            .bind(ends_at)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(StoreError::from_sqlx)?;
        Ok(revoked == 1)
    }

    /// Forgets ledger rows of tokens that expired before `before` (unix seconds): an
    /// expired token is refused by its signature check alone.
    pub async fn prune_token_ledger(&self, before: i64) -> Result<u64, StoreError> {
        count_query();
        let mut removed = 0;
        for sql in [
            "DELETE FROM token_ledger WHERE expires_at < $1",
            "DELETE FROM refresh_families WHERE expires_at < $1",
            "DELETE FROM refresh_family_heads WHERE ends_at < $1",
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

#[cfg(test)]
mod tests;
