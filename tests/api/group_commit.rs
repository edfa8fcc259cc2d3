//! The group commit (`src/store/group_commit/`) against real databases, PostgreSQL and
//! SQLite: events that arrive together share one statement or transaction, and one
//! event's failure stays its own.
//!
//! Each test runs on a current-thread runtime and starts all its commits in one poll
//! (`join_all`), before the committers get to run: so they reliably form one group,
//! which is what makes the assertions about statements exact.

use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use domain::ClientKey;
use futures::future::join_all;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{PgPool, SqlitePool};
use widget_auth::store::group_commit::{GroupCommitRepository, GroupWriter};
use widget_auth::store::Store;

use crate::helpers::{StoreKind, TestStore};

async fn repository() -> (TestStore, PgPool, GroupCommitRepository<PgPool>) {
    let test_store = TestStore::new(StoreKind::Postgres).await;
    let url = test_store.database_url.clone().expect("a PostgreSQL store");
    Store::open(Some(&url), &test_store.data_dir)
        .await
        .expect("open")
        .migrate()
        .await
        .expect("migrate");
    let pool = PgPool::connect(&url).await.expect("connect");
    let repository = GroupCommitRepository::new(pool.clone());
    (test_store, pool, repository)
}

fn event(aggregate_id: &str, sequence: usize, payload: Value, metadata: Value) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        aggregate_type: "ClientKey".to_owned(),
        event_type: "OriginsChanged".to_owned(),
        event_version: "1.0".to_owned(),
        payload,
        metadata,
    }
}

fn origins(origin: &str) -> Value {
    json!({"OriginsChanged": {"origins": [origin]}})
}

async fn commit_together<W: GroupWriter>(
    repository: &GroupCommitRepository<W>,
    events: &[SerializedEvent],
) -> Vec<Result<(), PersistenceError>> {
    join_all(
        events
            .iter()
            .map(|e| repository.persist::<ClientKey>(std::slice::from_ref(e), None)),
    )
    .await
}

/// (rows, distinct writing transactions) among the events of `ids`.
async fn rows_and_transactions(pool: &PgPool, ids: &[&str]) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT txid) FROM events WHERE aggregate_id = ANY($1)")
        .bind(ids)
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "current_thread")]
async fn commits_that_arrive_together_share_one_statement_and_each_is_answered() {
    let (store, pool, repository) = repository().await;
    let ids: Vec<String> = (0..20).map(|i| format!("ck_group_{i}")).collect();
    let events: Vec<_> = ids
        .iter()
        .map(|id| event(id, 1, origins("https://a.test"), json!({"actor": "test"})))
        .collect();

    let results = commit_together(&repository, &events).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(rows_and_transactions(&pool, &ids).await, (20, 1));
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_event_whose_sequence_is_taken_fails_alone_and_the_rest_of_its_group_commits() {
    let (store, pool, repository) = repository().await;
    let first = event("ck_taken", 1, origins("https://first.test"), json!({}));
    repository
        .persist::<ClientKey>(&[first], None)
        .await
        .expect("the first writer commits");

    let results = commit_together(
        &repository,
        &[
            event("ck_taken", 1, origins("https://second.test"), json!({})),
            event("ck_free_a", 1, origins("https://a.test"), json!({})),
            event("ck_free_b", 1, origins("https://b.test"), json!({})),
        ],
    )
    .await;

    assert!(
        matches!(results[0], Err(PersistenceError::OptimisticLockError)),
        "{:?}",
        results[0]
    );
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
    let kept: String = sqlx::query_scalar(
        "SELECT payload #>> '{OriginsChanged,origins,0}' FROM events WHERE aggregate_id = 'ck_taken'",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(kept, "https://first.test");
    assert_eq!(
        rows_and_transactions(&pool, &["ck_free_a", "ck_free_b"]).await,
        (2, 1)
    );
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_idempotency_key_is_recorded_once_even_within_one_group() {
    let (store, pool, repository) = repository().await;
    let metadata = json!({"actor": "test", "idempotency_key": "retry-1"});

    let results = commit_together(
        &repository,
        &[
            event("ck_idem_a", 1, origins("https://a.test"), metadata.clone()),
            event("ck_idem_b", 1, origins("https://a.test"), metadata),
        ],
    )
    .await;

    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(PersistenceError::OptimisticLockError)),
        "{:?}",
        results[1]
    );
    assert_eq!(
        rows_and_transactions(&pool, &["ck_idem_a", "ck_idem_b"]).await,
        (1, 1)
    );
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_statement_error_is_retried_event_by_event_so_only_the_bad_event_fails() {
    let (store, pool, repository) = repository().await;
    // PostgreSQL's jsonb refuses the NUL character, so this event fails the whole
    // statement it is part of.
    let refused = event(
        "ck_nul",
        1,
        origins("https://a.test"),
        json!({"reason": "\u{0}"}),
    );

    let results = commit_together(
        &repository,
        &[
            event("ck_fine_a", 1, origins("https://a.test"), json!({})),
            refused,
            event("ck_fine_b", 1, origins("https://b.test"), json!({})),
        ],
    )
    .await;

    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(PersistenceError::UnknownError(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(
        rows_and_transactions(&pool, &["ck_fine_a", "ck_fine_b", "ck_nul"])
            .await
            .0,
        2
    );
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn two_events_of_one_key_that_arrive_together_commit_in_order_in_separate_statements() {
    let (store, pool, repository) = repository().await;

    let results = commit_together(
        &repository,
        &[
            event("ck_twice", 1, origins("https://a.test"), json!({})),
            event("ck_twice", 2, origins("https://b.test"), json!({})),
        ],
    )
    .await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(rows_and_transactions(&pool, &["ck_twice"]).await, (2, 2));
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_stopped_database_fails_the_commit_as_unavailable() {
    let (store, pool, repository) = repository().await;
    pool.close().await;

    let result = repository
        .persist::<ClientKey>(
            &[event("ck_down", 1, origins("https://a.test"), json!({}))],
            None,
        )
        .await;

    assert!(
        matches!(result, Err(PersistenceError::ConnectionError(_))),
        "{result:?}"
    );
    store.cleanup().await;
}

// SQLite: the same cases on the embedded store, whose group is one `BEGIN IMMEDIATE`
// transaction. SQLite keeps no writing transaction's id, so these check what each command
// is told and what the table holds.

async fn sqlite_repository() -> (TestStore, SqlitePool, GroupCommitRepository<SqlitePool>) {
    let test_store = TestStore::new(StoreKind::Sqlite).await;
    Store::open(None, &test_store.data_dir)
        .await
        .expect("open")
        .migrate()
        .await
        .expect("migrate");
    let options = SqliteConnectOptions::new()
        .filename(test_store.data_dir.join("widget-auth.sqlite3"))
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(5));
    let pool = SqlitePool::connect_with(options).await.expect("connect");
    let repository = GroupCommitRepository::new(pool.clone());
    (test_store, pool, repository)
}

/// `aggregate_id:sequence` of every stored event of `ids`, in order.
async fn sqlite_rows(pool: &SqlitePool, ids: &[&str]) -> Vec<String> {
    let placeholders = vec!["?"; ids.len()].join(", ");
    let sql = format!(
        "SELECT aggregate_id || ':' || sequence FROM events \
         WHERE aggregate_id IN ({placeholders}) ORDER BY aggregate_id, sequence"
    );
    let mut query = sqlx::query_scalar(&sql);
    for id in ids {
        query = query.bind(*id);
    }
    query.fetch_all(pool).await.expect("rows")
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_commits_that_arrive_together_are_each_answered_and_stored_once() {
    let (store, pool, repository) = sqlite_repository().await;
    let ids: Vec<String> = (0..64).map(|i| format!("ck_group_{i:02}")).collect();
    let events: Vec<_> = ids
        .iter()
        .map(|id| event(id, 1, origins("https://a.test"), json!({"actor": "test"})))
        .collect();

    let results = commit_together(&repository, &events).await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let expected: Vec<String> = ids.iter().map(|id| format!("{id}:1")).collect();
    assert_eq!(sqlite_rows(&pool, &ids).await, expected);
    // sqlite-es, which serves every read, sees the events as they were committed.
    let read = repository
        .get_events::<ClientKey>("ck_group_07")
        .await
        .expect("read");
    assert_eq!(read, vec![events[7].clone()]);
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_an_event_whose_sequence_is_taken_fails_alone_and_the_rest_of_its_group_commits() {
    let (store, pool, repository) = sqlite_repository().await;
    let first = event("ck_taken", 1, origins("https://first.test"), json!({}));
    repository
        .persist::<ClientKey>(&[first], None)
        .await
        .expect("the first writer commits");

    let results = commit_together(
        &repository,
        &[
            event("ck_taken", 1, origins("https://second.test"), json!({})),
            event("ck_free_a", 1, origins("https://a.test"), json!({})),
            event("ck_free_b", 1, origins("https://b.test"), json!({})),
        ],
    )
    .await;

    assert!(
        matches!(results[0], Err(PersistenceError::OptimisticLockError)),
        "{:?}",
        results[0]
    );
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
    let kept: String = sqlx::query_scalar(
        "SELECT payload ->> '$.OriginsChanged.origins[0]' FROM events WHERE aggregate_id = 'ck_taken'",
    )
    .fetch_one(&pool)
    .await
    .expect("row");
    assert_eq!(kept, "https://first.test");
    assert_eq!(
        sqlite_rows(&pool, &["ck_free_a", "ck_free_b", "ck_taken"]).await,
        ["ck_free_a:1", "ck_free_b:1", "ck_taken:1"]
    );
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_an_idempotency_key_is_recorded_once_even_within_one_group() {
    let (store, pool, repository) = sqlite_repository().await;
    let metadata = json!({"actor": "test", "idempotency_key": "retry-1"});

    let results = commit_together(
        &repository,
        &[
            event("ck_idem_a", 1, origins("https://a.test"), metadata.clone()),
            event("ck_idem_b", 1, origins("https://a.test"), metadata),
        ],
    )
    .await;

    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(PersistenceError::OptimisticLockError)),
        "{:?}",
        results[1]
    );
    assert_eq!(
        sqlite_rows(&pool, &["ck_idem_a", "ck_idem_b"]).await,
        ["ck_idem_a:1"]
    );
    store.cleanup().await;
}

#[test]
fn sqlite_an_insert_error_is_retried_event_by_event_so_only_the_bad_event_fails() {
    // Serializing and dropping the deeply nested metadata below recurse once per level:
    // more than a test thread's stack holds in a debug build.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(an_insert_error_fails_only_its_own_event())
        })
        .expect("thread")
        .join()
        .expect("the test passed");
}

async fn an_insert_error_fails_only_its_own_event() {
    let (store, pool, repository) = sqlite_repository().await;
    // The Idempotency-Key index reads every event's metadata as JSON, and SQLite refuses
    // JSON nested deeper than 1,000 levels ("malformed JSON"): this event fails the whole
    // insert it is part of.
    let too_deep = (0..1500).fold(json!(1), |inner, _| json!({ "a": inner }));
    let refused = event("ck_deep", 1, origins("https://a.test"), too_deep);

    let results = commit_together(
        &repository,
        &[
            event("ck_fine_a", 1, origins("https://a.test"), json!({})),
            refused,
            event("ck_fine_b", 1, origins("https://b.test"), json!({})),
        ],
    )
    .await;

    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(PersistenceError::UnknownError(_))),
        "{:?}",
        results[1]
    );
    assert_eq!(
        sqlite_rows(&pool, &["ck_deep", "ck_fine_a", "ck_fine_b"]).await,
        ["ck_fine_a:1", "ck_fine_b:1"]
    );
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_two_events_of_one_key_that_arrive_together_commit_in_order() {
    let (store, pool, repository) = sqlite_repository().await;

    let results = commit_together(
        &repository,
        &[
            event("ck_twice", 1, origins("https://a.test"), json!({})),
            event("ck_twice", 2, origins("https://b.test"), json!({})),
        ],
    )
    .await;

    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        sqlite_rows(&pool, &["ck_twice"]).await,
        ["ck_twice:1", "ck_twice:2"]
    );
    store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_a_closed_store_fails_the_commit_as_unavailable() {
    let (store, pool, repository) = sqlite_repository().await;
    pool.close().await;

    let result = repository
        .persist::<ClientKey>(
            &[event("ck_down", 1, origins("https://a.test"), json!({}))],
            None,
        )
        .await;

    assert!(
        matches!(result, Err(PersistenceError::ConnectionError(_))),
        "{result:?}"
    );
    store.cleanup().await;
}
