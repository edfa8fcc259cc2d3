//! Several widget-auth processes on one PostgreSQL: the cross-node feed, concurrency
//! between nodes, start-up, and store faults (a stopped database, a killed node).
//!
//! Each test runs two real processes (the built binary) with their own data dirs and
//! ports, sharing the database, the admin token and the signing key. Tests that stop the
//! database get a throwaway cluster of their own (initdb + pg_ctl in a temp dir); the
//! others use a fresh database on the shared server. Every wait is a bounded poll.

mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod node;
mod refresh;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;

use cluster::Cluster;
use node::{Deployment, Node};

/// The propagation bound the project promises (p99).
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);
/// Bound for a single event to reach another node: the promise is about p99, so one
/// sample on a loaded CI machine gets room (the catch-up alone delivers within ~1 s).
const CONVERGE: Duration = Duration::from_secs(5);
/// Generous bound for "eventually" after faults (reconnect back-off, catch-up tick).
const RECOVERY: Duration = Duration::from_secs(15);

fn rename(display_name: &str) -> Value {
    json!({"type": "update_config", "config": {"agent": {"display_name": display_name}}})
}

async fn status_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The sequences of a key's events as node `node` reads them from the store.
async fn sequences(node: &Node, id: &str) -> Vec<u64> {
    let response = node
        .get(&format!("/internal/v1/client-keys/{id}/events?limit=1000"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stdout)]
async fn a_command_on_one_node_is_visible_on_the_other_within_a_second() {
    let deployment = Deployment::on_shared_server().await;
    let (a, b) = tokio::join!(deployment.node("a"), deployment.node("b"));
    let id = a.create_key("Acme").await;
    b.wait_for_version(&id, 1, CONVERGE).await;

    // Alternate writers, so both directions are measured; time from the writer's
    // response to the other node's read model showing the new version.
    let mut samples = Vec::new();
    for i in 0..100 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let (status, body) =
            status_json(writer.command(&id, rename(&format!("Ada {i}")), &[]).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let version = body["version"].as_u64().expect("version");
        samples.push(reader.wait_for_version(&id, version, CONVERGE).await);
    }
    samples.sort();
    let (p50, p90, p99) = (
        percentile(&samples, 50.0),
        percentile(&samples, 90.0),
        percentile(&samples, 99.0),
    );
    println!(
        "propagation over {} commands: p50 {p50:?}, p90 {p90:?}, p99 {p99:?}, max {:?}",
        samples.len(),
        samples[samples.len() - 1]
    );
    assert!(
        p99 <= PROPAGATION_BOUND,
        "p99 {p99:?} is over {PROPAGATION_BOUND:?}"
    );
    deployment.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_command_from_two_nodes_at_once_has_one_winner_and_sequences_stay_contiguous() {
    let deployment = Deployment::on_shared_server().await;
    let (a, b) = tokio::join!(deployment.node("a"), deployment.node("b"));
    let id = a.create_key("Acme").await;
    b.wait_for_version(&id, 1, CONVERGE).await;
    let mut version = 1;

    // With expected_version: one wins, the other is told the version moved.
    for round in 0..5 {
        let mut body = rename(&format!("Ada {round}"));
        body["expected_version"] = json!(version);
        let (from_a, from_b) =
            tokio::join!(a.command(&id, body.clone(), &[]), b.command(&id, body, &[]));
        let mut answers = vec![status_json(from_a).await, status_json(from_b).await];
        answers.sort_by_key(|(status, _)| *status);
        assert_eq!(answers[0].0, StatusCode::OK, "{answers:?}");
        assert_eq!(answers[0].1["version"], version + 1);
        assert_eq!(answers[1].0, StatusCode::CONFLICT, "{answers:?}");
        assert_eq!(answers[1].1["error"], "version_conflict");
        version += 1;
    }

    // Without it: both are applied, one after the other, on fresh state.
    for round in 0..5 {
        let (from_a, from_b) = tokio::join!(
            a.command(&id, rename(&format!("A {round}")), &[]),
            b.command(&id, rename(&format!("B {round}")), &[])
        );
        let (status_a, body_a) = status_json(from_a).await;
        let (status_b, body_b) = status_json(from_b).await;
        assert_eq!((status_a, status_b), (StatusCode::OK, StatusCode::OK));
        let mut versions = [
            body_a["version"].as_u64().expect("version"),
            body_b["version"].as_u64().expect("version"),
        ];
        versions.sort_unstable();
        assert_eq!(versions, [version + 1, version + 2]);
        version += 2;
    }

    // One Idempotency-Key sent to both nodes at once: recorded once, same answer twice.
    let headers = [("Idempotency-Key", "rename-to-grace-once")];
    let (from_a, from_b) = tokio::join!(
        a.command(&id, rename("Grace"), &headers),
        b.command(&id, rename("Grace"), &headers)
    );
    let replayed = [&from_a, &from_b]
        .iter()
        .filter(|r| r.headers().get("idempotent-replayed").is_some())
        .count();
    let (status_a, body_a) = status_json(from_a).await;
    let (status_b, body_b) = status_json(from_b).await;
    assert_eq!((status_a, status_b), (StatusCode::OK, StatusCode::OK));
    assert_eq!(body_a["version"], version + 1);
    assert_eq!(body_b["version"], version + 1);
    assert_eq!(replayed, 1, "exactly one of the two answers is a replay");
    version += 1;
    let (status, again) = status_json(b.command(&id, rename("Grace"), &headers).await).await;
    assert_eq!(
        (status, &again["version"]),
        (StatusCode::OK, &json!(version))
    );

    let mut sql = deployment.sql().await;
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE metadata ->> 'idempotency_key' = 'rename-to-grace-once'",
    )
    .fetch_one(&mut sql)
    .await
    .expect("count");
    assert_eq!(recorded, 1);
    let _ = sql.close().await;

    assert_eq!(sequences(&a, &id).await, (1..=version).collect::<Vec<_>>());
    a.wait_for_version(&id, version, CONVERGE).await;
    b.wait_for_version(&id, version, CONVERGE).await;
    deployment.cleanup().await;
}

/// DESIGN.md's classic gap: an event whose transaction took the lower global position
/// but commits after a later one. With wake-ups switched off only the catch-up can
/// deliver it; a reader that checkpointed past the hole would lose it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catch_up_never_checkpoints_past_an_event_still_being_committed() {
    let deployment = Deployment::on_shared_server().await;
    let (a, b) = tokio::join!(deployment.node("a"), deployment.node("b"));
    let x = a.create_key("X").await;
    let y = a.create_key("Y").await;
    let (status, _) = status_json(a.command(&x, rename("X 2"), &[]).await).await;
    assert_eq!(status, StatusCode::OK);
    b.wait_for_version(&x, 2, CONVERGE).await;
    b.wait_for_version(&y, 1, CONVERGE).await;

    // Rows inserted by hand send no wake-up: only the catch-up can deliver them.
    let mut sql = deployment.sql().await;
    // X's third event takes its global position now and commits last.
    let mut slow = sql.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         SELECT aggregate_type, aggregate_id, 3, event_type, event_version, payload, metadata \
         FROM events WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(&x)
    .execute(&mut *slow)
    .await
    .expect("insert");
    let (status, _) = status_json(a.command(&y, rename("Y 2"), &[]).await).await;
    assert_eq!(status, StatusCode::OK);
    // Let both nodes' catch-up run a few times while the hole is open (not an assertion:
    // the assertions below hold however long this is).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    slow.commit().await.expect("commit");

    for node in [&a, &b] {
        node.wait_for_version(&x, 3, RECOVERY).await;
        node.wait_for_version(&y, 2, RECOVERY).await;
    }
    deployment.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starting_while_another_writes_misses_nothing() {
    let deployment = Deployment::on_shared_server().await;
    let a = Arc::new(deployment.node("a").await);
    let writer = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..40 {
                ids.push(a.create_key(&format!("Key {i}")).await);
            }
            ids
        })
    };
    // Start B while keys are being created: some are in its replay, some arrive during
    // it, some after it. Each key has a single event, so a missed one is never repaired
    // by a later event of the same key.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = deployment.node("b").await;
    let ids = writer.await.expect("writer");
    for id in &ids {
        b.wait_for_version(id, 1, RECOVERY).await;
    }
    deployment.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_stopped_nodes_serve_from_memory_answer_503_and_recover_by_themselves() {
    let deployment = Deployment::with_cluster(Cluster::start());
    let (a, b) = tokio::join!(deployment.node("a"), deployment.node("b"));
    let key = a.create_key_full("Acme").await;
    let id = key["id"].as_str().expect("id").to_owned();
    let public_key = key["public_key"].as_str().expect("pk").to_owned();
    let secret_key = key["secret_key"].as_str().expect("sk").to_owned();
    b.wait_for_version(&id, 1, CONVERGE).await;
    let session: Value = status_json(
        a.public_post(
            "/api/v1/widget/auth/guest",
            &json!({"client_key": public_key}),
            None,
        )
        .await,
    )
    .await
    .1;

    deployment.cluster().stop();

    // The hot path answers from memory on both nodes; the single-use endpoints refuse
    // with 503 rather than risk a second use.
    for node in [&a, &b] {
        assert_eq!(
            node.public_config(&public_key).await.status(),
            StatusCode::OK,
            "node {}",
            node.name
        );
        let guest = node
            .public_post(
                "/api/v1/widget/auth/guest",
                &json!({"client_key": public_key}),
                None,
            )
            .await;
        assert_eq!(guest.status(), StatusCode::OK, "node {}", node.name);
        let user = node
            .public_post(
                "/api/v1/widget/auth/user-token",
                &json!({"client_key": public_key, "user_id": "u1"}),
                Some(&secret_key),
            )
            .await;
        let (status, body) = status_json(user).await;
        assert_eq!(status, StatusCode::OK, "node {}", node.name);
        let exchange = node
            .public_post(
                "/api/v1/widget/auth/exchange",
                &json!({"token": body["visitor_token"]}),
                None,
            )
            .await;
        assert_eq!(
            exchange.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "node {}",
            node.name
        );
        assert!(exchange.headers().contains_key("retry-after"));
        let refresh = node
            .public_post(
                "/api/v1/widget/auth/refresh",
                &json!({"refresh_token": session["refresh_token"]}),
                None,
            )
            .await;
        assert_eq!(
            refresh.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "node {}",
            node.name
        );
    }

    // Reads come from memory; the nodes stay ready.
    for node in [&a, &b] {
        assert_eq!(node.version(&id).await, Some(1), "node {}", node.name);
        assert_eq!(node.get("/readyz").await.status(), StatusCode::OK);
    }
    // Commands fail promptly with 503 and Retry-After (the pool's acquire timeout), on
    // both nodes, never a hang or a 500.
    for node in [&a, &b] {
        let started = Instant::now();
        let response = node.command(&id, rename("Down"), &[]).await;
        let elapsed = started.elapsed();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        let (_, body) = status_json(response).await;
        assert_eq!(body["error"], "unavailable");
        assert!(elapsed < Duration::from_secs(8), "503 took {elapsed:?}");
    }

    deployment.cluster().restart();

    // No restart of the nodes: the next command succeeds once the pool reconnects, and
    // the other node learns of it (re-LISTEN or catch-up) by itself.
    let deadline = Instant::now() + RECOVERY;
    let version = loop {
        let (status, body) = status_json(a.command(&id, rename("Back"), &[]).await).await;
        if status == StatusCode::OK {
            break body["version"].as_u64().expect("version");
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            Instant::now() < deadline,
            "commands still fail after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(version, 2, "the refused commands recorded nothing");
    b.wait_for_version(&id, 2, RECOVERY).await;

    // Wake-ups work again in both directions (the listener re-LISTENed).
    for (writer, reader) in [(&b, &a), (&a, &b)] {
        let (status, body) = status_json(writer.command(&id, rename("Again"), &[]).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let version = body["version"].as_u64().expect("version");
        reader.wait_for_version(&id, version, RECOVERY).await;
    }
    // The catch-up can deliver the events above before the listener's back-off (up to
    // 2 s) has let it re-LISTEN, so wait for that separately.
    let deadline = Instant::now() + RECOVERY;
    while !b.log().contains("listening for events again") {
        assert!(
            Instant::now() < deadline,
            "node b never re-listened:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sequences(&a, &id).await, vec![1, 2, 3, 4]);
    drop((a, b));
    deployment.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_right_after_a_commit_loses_nothing() {
    let deployment = Deployment::with_cluster(Cluster::start());
    let (a, b) = tokio::join!(deployment.node("a"), deployment.node("b"));
    let id = a.create_key("Acme").await;
    let (status, body) = status_json(a.command(&id, rename("Ada"), &[]).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    a.kill();

    b.wait_for_version(&id, 2, CONVERGE).await;
    let a = deployment.node("a").await;
    assert_eq!(
        a.version(&id).await,
        Some(2),
        "the restarted node replayed it"
    );
    assert_eq!(sequences(&a, &id).await, vec![1, 2]);
    drop((a, b));
    deployment.cleanup().await;
}

/// A node decides from its own last write of a key when it can; when another node wrote
/// since, it must notice (conflict or version check) and decide on the stored state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_overtaken_by_another_decides_on_the_stored_state() {
    let deployment = Deployment::on_shared_server().await;
    let (a, b) = tokio::join!(deployment.node("a"), deployment.node("b"));
    let id = a.create_key("Acme").await;
    let version = |body: &Value| body["version"].as_u64().expect("version");
    let (status, body) = status_json(a.command(&id, rename("A"), &[]).await).await;
    assert_eq!((status, version(&body)), (StatusCode::OK, 2));
    b.wait_for_version(&id, 2, CONVERGE).await;
    let (status, body) = status_json(b.command(&id, rename("B"), &[]).await).await;
    assert_eq!((status, version(&body)), (StatusCode::OK, 3));

    // A last wrote version 2; the client knows version 3 and says so.
    let mut expecting = rename("A again");
    expecting["expected_version"] = json!(3);
    let (status, body) = status_json(a.command(&id, expecting, &[]).await).await;
    assert_eq!((status, version(&body)), (StatusCode::OK, 4), "{body}");

    // B is behind A now; without an expected version it retries on fresh state.
    let (status, body) = status_json(b.command(&id, rename("B again"), &[]).await).await;
    assert_eq!((status, version(&body)), (StatusCode::OK, 5), "{body}");
    let mut stale = rename("stale");
    stale["expected_version"] = json!(4);
    let (status, body) = status_json(a.command(&id, stale, &[]).await).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::CONFLICT, json!("version_conflict"))
    );

    a.wait_for_version(&id, 5, CONVERGE).await;
    assert_eq!(sequences(&a, &id).await, vec![1, 2, 3, 4, 5]);
    let verify = a.get("/internal/v1/audit/verify").await;
    let (status, report) = status_json(verify).await;
    assert_eq!(
        (status, report["broken"].clone()),
        (StatusCode::OK, Value::Null),
        "{report}"
    );
    drop((a, b));
    deployment.cleanup().await;
}
