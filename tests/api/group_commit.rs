//! The PostgreSQL group commit (`src/store/group_commit.rs`) against a real database: events
//! that arrive together share one statement, and one event's failure stays its own.
//!
//! Each test runs on a current-thread runtime and starts all its commits in one poll
//! (`join_all`), before the committers get to run: so they reliably form one group,
//! which is what makes the assertions about statements exact.

use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use domain::ClientKey;
use futures::future::join_all;
use serde_json::{json, Value};
use sqlx::PgPool;
use widget_auth::store::group_commit::GroupCommitRepository;
use widget_auth::store::Store;

use crate::helpers::{StoreKind, TestStore};

async fn repository() -> (TestStore, PgPool, GroupCommitRepository) {
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

async fn commit_together(
    repository: &GroupCommitRepository,
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
