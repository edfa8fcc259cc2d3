//! The token ledger's grouped writes (`src/ledger/group.rs`): concurrent exchanges and
//! refreshes share a statement (PostgreSQL) or a transaction (SQLite), and every
//! single-use rule of API.md holds as it did one request at a time.
//!
//! The HTTP tests race requests through the real server. The store-level tests call the
//! ledger on a current-thread runtime, starting every call in one poll (`join_all`)
//! before the writers get to run, so the calls reliably form one batch: that is what
//! makes the assertions about shared transactions exact.

use std::collections::BTreeSet;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use widget_auth::ledger::{RecordedToken, Spend, SpendOutcome, TokenUse};
use widget_auth::store::Store;

use crate::helpers::{jwt_part, status_json, StoreKind, TestApp, TestStore};

const ORIGIN: &str = "https://acme.test";

crate::on_both_stores!(
    concurrent_exchanges_of_one_visitor_token_give_exactly_one_session,
    concurrent_exchanges_of_distinct_tokens_all_succeed_and_record_each_jti_once,
    concurrent_refreshes_of_one_token_record_exactly_one_new_head,
    concurrent_refreshes_of_distinct_families_all_rotate,
);

async fn key(app: &TestApp) -> Value {
    app.create_key(json!({"name": "Acme", "origins": [ORIGIN]}))
        .await
}

fn claim(token: &str, name: &str) -> String {
    jwt_part(token, 1)[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} claim"))
        .to_owned()
}

fn refresh_token(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

/// `SELECT CAST(count(*) AS TEXT) …` as a number (the raw helper reads text).
async fn count(app: &TestApp, sql: &str) -> usize {
    app.store.raw_rows(sql).await[0].parse().expect("a count")
}

async fn concurrent_exchanges_of_one_visitor_token_give_exactly_one_session(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let visitor = app.visitor_token(&key, "user-1").await;

    let answers = join_all((0..24).map(|_| app.exchange(&visitor, Some(ORIGIN)))).await;
    let mut statuses = Vec::new();
    for response in answers {
        let status = response.status();
        let body = response.text().await.expect("text");
        if status != StatusCode::OK {
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::BAD_REQUEST, "visitor token already exchanged")
            );
        }
        statuses.push(status);
    }
    let winners = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(winners, 1, "exactly one exchange wins: {statuses:?}");
    let jti = claim(&visitor, "jti");
    assert_eq!(
        count(
            &app,
            &format!("SELECT CAST(count(*) AS TEXT) FROM token_ledger WHERE jti = '{jti}'")
        )
        .await,
        1
    );
    app.finish().await;
}

async fn concurrent_exchanges_of_distinct_tokens_all_succeed_and_record_each_jti_once(
    store: StoreKind,
) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let mut visitors = Vec::new();
    for i in 0..40 {
        visitors.push(app.visitor_token(&key, &format!("user-{i}")).await);
    }

    let answers = join_all(visitors.iter().map(|v| app.exchange(v, Some(ORIGIN)))).await;
    for response in answers {
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let jtis: BTreeSet<String> = visitors.iter().map(|v| claim(v, "jti")).collect();
    assert_eq!(jtis.len(), 40);
    let listed = jtis
        .iter()
        .map(|j| format!("'{j}'"))
        .collect::<Vec<_>>()
        .join(",");
    let recorded = app
        .store
        .raw_rows(&format!(
            "SELECT jti FROM token_ledger WHERE jti IN ({listed})"
        ))
        .await;
    assert_eq!(recorded.len(), 40, "each jti once");
    assert_eq!(recorded.into_iter().collect::<BTreeSet<_>>(), jtis);
    // Every one of them is spent now.
    let again = join_all(visitors.iter().map(|v| app.exchange(v, Some(ORIGIN)))).await;
    assert!(again.iter().all(|r| r.status() == StatusCode::BAD_REQUEST));
    app.finish().await;
}

async fn concurrent_refreshes_of_one_token_record_exactly_one_new_head(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let visitor = app.visitor_token(&key, "user-7").await;
    let (status, session) = status_json(app.exchange(&visitor, Some(ORIGIN)).await).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let r0 = refresh_token(&session);
    let family = claim(&r0, "fam");

    let answers = join_all((0..24).map(|_| app.refresh(&r0, Some(ORIGIN)))).await;
    let mut successors = BTreeSet::new();
    for response in answers {
        // Within the retry grace every loser gets the winner's successor (API.md).
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        successors.insert(refresh_token(&body));
    }
    assert_eq!(successors.len(), 1, "one successor: {successors:?}");
    let r1 = successors.into_iter().next().expect("one");
    let heads = app
        .store
        .raw_rows(&format!(
            "SELECT head_jti || ' ' || CAST(head_generation AS TEXT) || ' ' || spent_jti \
             FROM refresh_family_heads WHERE family = '{family}'"
        ))
        .await;
    assert_eq!(
        heads,
        vec![format!("{} 1 {}", claim(&r1, "jti"), claim(&r0, "jti"))]
    );
    app.finish().await;
}

async fn concurrent_refreshes_of_distinct_families_all_rotate(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let mut tokens = Vec::new();
    for i in 0..40 {
        let visitor = app.visitor_token(&key, &format!("user-{i}")).await;
        let (status, session) = status_json(app.exchange(&visitor, Some(ORIGIN)).await).await;
        assert_eq!(status, StatusCode::OK, "{session}");
        tokens.push(refresh_token(&session));
    }

    let answers = join_all(tokens.iter().map(|t| app.refresh(t, Some(ORIGIN)))).await;
    let mut heads = BTreeSet::new();
    for (presented, response) in tokens.iter().zip(answers) {
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let successor = refresh_token(&body);
        assert_eq!(claim(&successor, "fam"), claim(presented, "fam"));
        heads.insert(format!(
            "{} {}",
            claim(&successor, "fam"),
            claim(&successor, "jti")
        ));
    }
    let families = tokens
        .iter()
        .map(|t| format!("'{}'", claim(t, "fam")))
        .collect::<Vec<_>>()
        .join(",");
    let recorded: BTreeSet<String> = app
        .store
        .raw_rows(&format!(
            "SELECT family || ' ' || head_jti FROM refresh_family_heads \
             WHERE family IN ({families})"
        ))
        .await
        .into_iter()
        .collect();
    assert_eq!(
        recorded, heads,
        "each family's head is the successor it returned"
    );
    app.finish().await;
}

/// A migrated store opened directly, as the server opens it.
async fn open(kind: StoreKind) -> (TestStore, Store) {
    let test_store = TestStore::new(kind).await;
    let store = Store::open(test_store.database_url.as_deref(), &test_store.data_dir)
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    (test_store, store)
}

const NOW_MS: i64 = 1_800_000_000_000;

fn successor(jti: &str) -> RecordedToken {
    RecordedToken {
        jti: jti.to_owned(),
        generation: 1,
        iat: NOW_MS / 1000,
        exp: NOW_MS / 1000 + 3600,
        ver: 1,
    }
}

fn spend<'a>(family: &'a str, spent_jti: &'a str, successor: &'a RecordedToken) -> Spend<'a> {
    Spend {
        client_key: "ck_ledger_group_test",
        seen_version: 1,
        family,
        spent_jti,
        successor,
        now_ms: NOW_MS,
        ends_at: successor.exp,
    }
}

/// Distinct transactions that wrote the rows `sql` selects `xmin` of (PostgreSQL).
async fn transactions(store: &TestStore, sql: &str) -> usize {
    let distinct: BTreeSet<String> = store.raw_rows(sql).await.into_iter().collect();
    distinct.len()
}

async fn exchanges_that_arrive_together_share_one_write(kind: StoreKind) {
    let (test_store, store) = open(kind).await;
    let jtis: Vec<String> = (0..20).map(|i| format!("jti-together-{i}")).collect();
    // Three rounds of all of them: of the copies of a jti exactly one may be first,
    // wherever the copies land. 60 calls fit one writer's gathering (64), so no second
    // writer takes a later round to the database ahead of the first.
    let calls = (0..3)
        .flat_map(|_| &jtis)
        .map(|jti| store.use_token(jti, "visitor", NOW_MS, NOW_MS / 1000 + 600));
    let used = join_all(calls).await;

    for (i, jti) in jtis.iter().enumerate() {
        let copies: Vec<_> = used.iter().skip(i).step_by(jtis.len()).collect();
        let firsts = copies
            .iter()
            .filter(|u| matches!(u, Ok(TokenUse::First)))
            .count();
        assert_eq!(firsts, 1, "{jti}: {copies:?}");
        assert!(
            copies.iter().all(|u| matches!(
                u,
                Ok(TokenUse::First) | Ok(TokenUse::Again { used_at_ms: NOW_MS })
            )),
            "{jti}: {copies:?}"
        );
    }
    if kind == StoreKind::Postgres {
        // The first round came in one batch, so one statement wrote every jti.
        let sql = "SELECT xmin::text FROM token_ledger WHERE jti LIKE 'jti-together-%'";
        assert_eq!(transactions(&test_store, sql).await, 1);
    }
    drop(store);
    test_store.cleanup().await;
}

async fn spends_that_arrive_together_share_one_write_and_one_token_is_spent_once(kind: StoreKind) {
    let (test_store, store) = open(kind).await;
    let families: Vec<String> = (0..30).map(|i| format!("fam-together-{i}")).collect();
    let successors: Vec<RecordedToken> = (0..30).map(|i| successor(&format!("next-{i}"))).collect();
    // Also four racing spends of one more family's token, each proposing its own
    // successor: exactly one may be recorded. (34 calls: one writer gathers them all.)
    let racing: Vec<RecordedToken> = (0..4).map(|i| successor(&format!("racer-{i}"))).collect();
    let spends: Vec<Spend> = families
        .iter()
        .zip(&successors)
        .map(|(family, next)| spend(family, "r0", next))
        .chain(
            racing
                .iter()
                .map(|next| spend("fam-raced", "raced-r0", next)),
        )
        .collect();

    let outcomes = join_all(spends.iter().map(|s| store.spend_refresh_token(s))).await;

    let (distinct, raced) = outcomes.split_at(30);
    assert!(
        distinct
            .iter()
            .all(|o| matches!(o, Ok(SpendOutcome::Spent))),
        "{distinct:?}"
    );
    let winners: Vec<&RecordedToken> = racing
        .iter()
        .zip(raced)
        .filter(|(_, o)| matches!(o, Ok(SpendOutcome::Spent)))
        .map(|(next, _)| next)
        .collect();
    assert_eq!(winners.len(), 1, "{raced:?}");
    for outcome in raced {
        match outcome {
            Ok(SpendOutcome::Spent) => {}
            Ok(SpendOutcome::NotSpent(Some(record))) => {
                assert_eq!(
                    record.head.as_ref(),
                    Some(winners[0]),
                    "the winner's successor"
                );
                assert_eq!(record.spent, Some(("raced-r0".to_owned(), NOW_MS)));
            }
            other => panic!("a loser sees the recorded successor: {other:?}"),
        }
    }
    let heads = test_store
        .raw_rows("SELECT head_jti FROM refresh_family_heads WHERE family LIKE 'fam-%'")
        .await;
    assert_eq!(heads.len(), 31, "one row per family: {heads:?}");
    if kind == StoreKind::Postgres {
        let sql = "SELECT xmin::text FROM refresh_family_heads WHERE family LIKE 'fam-together-%'";
        assert_eq!(transactions(&test_store, sql).await, 1);
    }
    drop(store);
    test_store.cleanup().await;
}

#[tokio::test(flavor = "current_thread")]
async fn exchanges_that_arrive_together_share_one_write_on_sqlite() {
    exchanges_that_arrive_together_share_one_write(StoreKind::Sqlite).await;
}

#[tokio::test(flavor = "current_thread")]
async fn exchanges_that_arrive_together_share_one_write_on_postgres() {
    exchanges_that_arrive_together_share_one_write(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "current_thread")]
async fn spends_that_arrive_together_share_one_write_on_sqlite() {
    spends_that_arrive_together_share_one_write_and_one_token_is_spent_once(StoreKind::Sqlite)
        .await;
}

#[tokio::test(flavor = "current_thread")]
async fn spends_that_arrive_together_share_one_write_on_postgres() {
    spends_that_arrive_together_share_one_write_and_one_token_is_spent_once(StoreKind::Postgres)
        .await;
}

/// PostgreSQL refuses a NUL in text: the whole statement fails, and the batch is written
/// again one request at a time, so only the request carrying it fails.
#[tokio::test(flavor = "current_thread")]
async fn a_request_the_statement_refuses_fails_alone_on_postgres() {
    let (test_store, store) = open(StoreKind::Postgres).await;
    let mut jtis: Vec<String> = (0..10).map(|i| format!("jti-alone-{i}")).collect();
    jtis.push("jti-bad-\0".to_owned());
    let next = successor("next-alone");
    let families = ["fam-alone-0", "fam-bad-\0"];
    let spends: Vec<Spend> = families.iter().map(|f| spend(f, "r0", &next)).collect();

    let (used, spent) = futures::join!(
        join_all(jtis.iter().map(|jti| store.use_token(
            jti,
            "visitor",
            NOW_MS,
            NOW_MS / 1000 + 600
        ))),
        join_all(spends.iter().map(|spend| store.spend_refresh_token(spend))),
    );

    let (bad, good) = used.split_last().expect("eleven");
    assert!(
        good.iter().all(|u| matches!(u, Ok(TokenUse::First))),
        "{good:?}"
    );
    let bad = bad.as_ref().expect_err("a NUL is refused");
    assert!(!bad.is_unavailable(), "{bad}");
    assert!(matches!(spent[0], Ok(SpendOutcome::Spent)), "{spent:?}");
    assert!(
        matches!(&spent[1], Err(err) if !err.is_unavailable()),
        "{spent:?}"
    );
    drop(store);
    test_store.cleanup().await;
}
