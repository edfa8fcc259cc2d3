//! Read-model snapshots: a node started from a snapshot plus the events after it holds
//! exactly what a full replay builds (compared key by key, indexes included); a snapshot
//! that is corrupt, truncated, of another format or out of step with the events is not
//! used (full replay, still serving correctly); snapshots taken while another node
//! commits miss nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use projections::ClientKeyView;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{status_json, StoreKind, TestApp, TestStore};

crate::on_both_stores!(
    a_start_from_a_snapshot_plus_later_events_equals_a_full_replay,
    an_unusable_snapshot_falls_back_to_a_full_replay_that_serves_correctly,
    a_snapshot_recording_a_version_the_store_lacks_is_not_used,
    a_snapshot_missing_a_middle_chunk_is_taken_out_again_before_the_full_replay,
);

type Views = BTreeMap<String, Arc<ClientKeyView>>;

/// Every key's view in the node's read models, by id.
fn views(app: &TestApp) -> Views {
    app.app
        .state
        .directory
        .list(None, usize::MAX)
        .into_iter()
        .map(|view| (view.state().id.as_str().to_owned(), view))
        .collect()
}

/// The two nodes' read models agree key by key: state, version, time, link, the config
/// body and ETag, and the public-key and secret-key indexes lead to the same key.
fn assert_same(left: (&TestApp, &Views), right: (&TestApp, &Views)) {
    let (left_app, left) = left;
    let (right_app, right) = right;
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        right.keys().collect::<Vec<_>>(),
        "the same keys"
    );
    for (id, a) in left {
        let b = &right[id];
        assert_eq!(a.state(), b.state(), "state of {id}");
        assert_eq!(a.version(), b.version(), "version of {id}");
        assert_eq!(a.updated_at(), b.updated_at(), "updated_at of {id}");
        assert_eq!(a.link(), b.link(), "link of {id}");
        assert_eq!(a.config_body(), b.config_body(), "config body of {id}");
        assert_eq!(a.etag(), b.etag(), "etag of {id}");
        let state = a.state();
        let public_keys = std::iter::once(&state.public_key)
            .chain(state.previous_public_keys.iter().map(|p| &p.public_key));
        for public_key in public_keys {
            for app in [left_app, right_app] {
                let found = app.app.state.directory.by_public_key(public_key.as_str());
                assert_eq!(
                    found.map(|v| v.state().id.as_str().to_owned()).as_deref(),
                    Some(id.as_str()),
                    "public key index of {id}"
                );
            }
        }
        let hashes = std::iter::once(&state.secret_key)
            .chain(state.previous_secret_keys.iter().map(|p| &p.secret_key))
            .map(|f| f.hash);
        for hash in hashes {
            for app in [left_app, right_app] {
                let found = app.app.state.directory.by_secret_hash(&hash);
                assert_eq!(
                    found.map(|v| v.state().id.as_str().to_owned()).as_deref(),
                    Some(id.as_str()),
                    "secret key index of {id}"
                );
            }
        }
    }
}

/// A gauge's value on the node's `/metrics`, `None` when it is not there.
async fn gauge(app: &TestApp, name: &str) -> Option<f64> {
    let body = app
        .http
        .get(app.internal("/metrics"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// How the node built its read models: (from a snapshot, events applied at start-up).
async fn startup(app: &TestApp) -> (bool, u64) {
    let from = gauge(app, "widget_auth_startup_from_snapshot")
        .await
        .expect("from-snapshot gauge");
    let events = gauge(app, "widget_auth_startup_replayed_events")
        .await
        .expect("replayed-events gauge");
    (from == 1.0, events as u64)
}

async fn count(store: &TestStore, sql: &str) -> u64 {
    store.raw_rows(sql).await[0].parse().expect("a count")
}

async fn stored_events(store: &TestStore) -> u64 {
    count(store, "SELECT CAST(COUNT(*) AS TEXT) FROM events").await
}

async fn create(app: &TestApp, name: &str) -> String {
    app.create_key(json!({"name": name, "origins": ["https://acme.test"]}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn command(app: &TestApp, id: &str, body: Value) {
    let (status, body) = status_json(app.command(id, body).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Three changes on each key (origins, config, and a secret-key rotation, which adds a
/// previous key to the index). Returns the events recorded.
async fn grow(app: &TestApp, ids: &[String], round: usize) -> u64 {
    for id in ids {
        command(
            app,
            id,
            json!({"type": "change_origins", "origins": [format!("https://{round}.acme.test")]}),
        )
        .await;
        command(
            app,
            id,
            json!({"type": "update_config", "config": {"agent": {"display_name": format!("Ada {round}")}}}),
        )
        .await;
        command(
            app,
            id,
            json!({"type": "rotate_secret_key", "grace_seconds": 3600}),
        )
        .await;
    }
    3 * ids.len() as u64
}

/// Deletes the newest snapshot, so the one before it is the newest.
async fn drop_newest_snapshot(store: &TestStore) {
    let newest = "(SELECT MAX(id) FROM read_model_snapshots)";
    store
        .execute(&format!(
            "DELETE FROM read_model_snapshot_chunks WHERE snapshot_id = {newest}"
        ))
        .await;
    assert_eq!(
        store
            .execute(&format!(
                "DELETE FROM read_model_snapshots WHERE id = {newest}"
            ))
            .await,
        1
    );
}

async fn a_start_from_a_snapshot_plus_later_events_equals_a_full_replay(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(create(&app, &format!("Acme {n}")).await);
    }
    grow(&app, &ids, 1).await;
    let (code, _, stderr) = app.store.cli(&["snapshot"]).await;
    assert_eq!(code, 0, "{stderr}");

    // After the snapshot: changes to some keys, and keys it has never seen.
    let mut later = grow(&app, &ids[..3], 2).await;
    for n in 6..8 {
        ids.push(create(&app, &format!("Acme {n}")).await);
        later += 1;
    }
    later += grow(&app, &ids[6..], 3).await;
    let live = views(&app);
    let store = app.store.clone();
    app.app.stop().await;
    // The shutdown wrote a snapshot of everything; without it the CLI's is the newest.
    drop_newest_snapshot(&store).await;

    let from_snapshot = TestApp::spawn_on(store.clone()).await;
    assert_eq!(startup(&from_snapshot).await, (true, later));
    let age = gauge(&from_snapshot, "widget_auth_snapshot_age_seconds")
        .await
        .expect("an age once a snapshot is loaded");
    assert!((0.0..60.0).contains(&age), "{age}");
    // A key created after the snapshot is served.
    let newest_key = from_snapshot.key(&ids[7]).await;
    let public_key = newest_key["public_key"].as_str().expect("pk");
    assert_eq!(
        from_snapshot
            .config(public_key, Some("https://3.acme.test"))
            .await
            .status(),
        StatusCode::OK
    );
    let full = TestApp::spawn_on_with_settings(store.clone(), |s| s.snapshots = false).await;
    assert_eq!(
        startup(&full).await,
        (false, stored_events(&store).await),
        "WIDGET_AUTH_SNAPSHOTS=off replays every event"
    );
    assert_same(
        (&from_snapshot, &views(&from_snapshot)),
        (&full, &views(&full)),
    );
    assert_same((&full, &live), (&full, &views(&full)));
    from_snapshot.app.stop().await;
    full.finish().await;
}

async fn an_unusable_snapshot_falls_back_to_a_full_replay_that_serves_correctly(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(create(&app, &format!("Acme {n}")).await);
    }
    grow(&app, &ids, 1).await;
    let public_key = app.key(&ids[0]).await["public_key"]
        .as_str()
        .expect("pk")
        .to_owned();
    let store = app.store.clone();
    app.app.stop().await;
    let events = stored_events(&store).await;
    let reference = TestApp::spawn_on_with_settings(store.clone(), |s| s.snapshots = false).await;
    let good = views(&reference);

    let newest = "(SELECT MAX(id) FROM read_model_snapshots)";
    let chunks =
        format!("UPDATE read_model_snapshot_chunks SET body = {{}} WHERE snapshot_id = {newest}");
    let (edited, truncated) = match kind {
        // Still valid JSON of valid keys, only their names changed: the digest catches it.
        StoreKind::Postgres => (
            "convert_to(replace(convert_from(body, 'UTF8'), 'Acme', 'Evil'), 'UTF8')",
            "substring(body from 1 for length(body) / 2)",
        ),
        StoreKind::Sqlite => (
            "CAST(replace(CAST(body AS TEXT), 'Acme', 'Evil') AS BLOB)",
            "substr(body, 1, length(body) / 2)",
        ),
    };
    let cases = [
        ("content edited", chunks.replace("{}", edited)),
        ("chunk truncated", chunks.replace("{}", truncated)),
        (
            "chunk missing",
            format!("DELETE FROM read_model_snapshot_chunks WHERE snapshot_id = {newest}"),
        ),
        (
            "another format",
            format!("UPDATE read_model_snapshots SET format_version = 0 WHERE id = {newest}"),
        ),
        (
            "another digest",
            format!(
                "UPDATE read_model_snapshots SET digest = '{}' WHERE id = {newest}",
                "0".repeat(64)
            ),
        ),
    ];
    for (case, sql) in cases {
        assert!(
            store.execute(&sql).await >= 1,
            "{case}: the snapshot was edited"
        );
        let app = TestApp::spawn_on(store.clone()).await;
        assert_eq!(startup(&app).await, (false, events), "{case}: full replay");
        assert_same((&reference, &good), (&app, &views(&app)));
        assert!(
            views(&app)
                .values()
                .all(|v| v.state().name.as_str().starts_with("Acme")),
            "{case}: nothing from the snapshot is served"
        );
        assert_eq!(
            app.config(&public_key, Some("https://1.acme.test"))
                .await
                .status(),
            StatusCode::OK,
            "{case}"
        );
        // Its shutdown writes a good snapshot again (the newest was not one it trusts),
        // which the next node starts from.
        app.app.stop().await;
        let next = TestApp::spawn_on(store.clone()).await;
        assert_eq!(startup(&next).await, (true, 0), "{case}: a good one again");
        assert_same((&reference, &good), (&next, &views(&next)));
        next.app.stop().await;
    }
    reference.finish().await;
}

/// Chunks are installed as they pass; one missing after others were installed is found
/// only then, and what was installed must not survive into the full replay's read
/// models (renamed keys would show the snapshot's names).
async fn a_snapshot_missing_a_middle_chunk_is_taken_out_again_before_the_full_replay(
    kind: StoreKind,
) {
    let app = TestApp::spawn(kind).await;
    let keys = 2 * widget_auth::snapshot::format::CHUNK_KEYS + 1;
    let mut ids = Vec::with_capacity(keys);
    for n in 0..keys {
        ids.push(create(&app, &format!("Acme {n}")).await);
    }
    let store = app.store.clone();
    // Its shutdown writes the snapshot: three chunks.
    app.app.stop().await;
    let newest = "(SELECT MAX(id) FROM read_model_snapshots)";
    assert_eq!(
        count(
            &store,
            &format!(
                "SELECT CAST(COUNT(*) AS TEXT) FROM read_model_snapshot_chunks \
                 WHERE snapshot_id = {newest}"
            )
        )
        .await,
        3
    );
    // The events now say "Acme …" under other names than the snapshot's first chunk
    // does, as they would after any edit: if chunk 0 stayed installed, its views (of
    // the same versions) would win over the replay's.
    let renamed = match kind {
        StoreKind::Postgres => "UPDATE events SET payload = jsonb_set(payload, \
             '{ClientKeyCreated,name}', to_jsonb('Replayed ' || (payload #>> '{ClientKeyCreated,name}'))) \
             WHERE event_type = 'ClientKeyCreated'",
        StoreKind::Sqlite => "UPDATE events SET payload = json_set(payload, \
             '$.ClientKeyCreated.name', 'Replayed ' || json_extract(payload, '$.ClientKeyCreated.name')) \
             WHERE event_type = 'ClientKeyCreated'",
    };
    assert_eq!(store.execute(renamed).await, keys as u64);
    assert_eq!(
        store
            .execute(&format!(
                "DELETE FROM read_model_snapshot_chunks WHERE snapshot_id = {newest} AND chunk = 1"
            ))
            .await,
        1
    );
    let app = TestApp::spawn_on(store.clone()).await;
    assert_eq!(startup(&app).await, (false, keys as u64), "full replay");
    let served = views(&app);
    assert_eq!(served.len(), keys);
    assert!(
        served
            .values()
            .all(|v| v.state().name.as_str().starts_with("Replayed Acme")),
        "no view of the snapshot's first chunk is left"
    );
    app.finish().await;
}

async fn a_snapshot_recording_a_version_the_store_lacks_is_not_used(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let id = create(&app, "Acme").await;
    grow(&app, std::slice::from_ref(&id), 1).await;
    let store = app.store.clone();
    app.app.stop().await;
    // The store loses the key's newest event (restored from an older backup than its
    // snapshots): the snapshot's view is ahead of the events and must not be served.
    assert_eq!(
        store
            .execute(&format!(
                "DELETE FROM events WHERE aggregate_id = '{id}' AND sequence = 4"
            ))
            .await,
        1
    );
    let app = TestApp::spawn_on(store.clone()).await;
    assert_eq!(startup(&app).await, (false, 3));
    assert_eq!(app.key(&id).await["version"], 3);
    app.app.stop().await;

    // A stored link edited at the version a snapshot records: out of step as well.
    let relinked = match kind {
        StoreKind::Postgres => format!(
            "UPDATE events SET metadata = jsonb_set(metadata, '{{chain}}', '\"{}\"') \
             WHERE aggregate_id = '{id}' AND sequence = 3",
            "f".repeat(64)
        ),
        StoreKind::Sqlite => format!(
            "UPDATE events SET metadata = json_set(metadata, '$.chain', '{}') \
             WHERE aggregate_id = '{id}' AND sequence = 3",
            "f".repeat(64)
        ),
    };
    assert_eq!(store.execute(&relinked).await, 1);
    let app = TestApp::spawn_on(store.clone()).await;
    assert_eq!(startup(&app).await, (false, 3));
    assert_eq!(
        app.app.state.directory.by_id(&id).expect("served").link(),
        Some("f".repeat(64).as_str())
    );
    app.finish().await;
}

/// Commands on node A (admin API) while `widget-auth snapshot` runs again and again
/// against the same PostgreSQL: each run starts from the previous run's snapshot, taken
/// mid-stream, and catches up. A node started afterwards from the newest holds exactly
/// what a full replay builds, and what A holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_taken_while_another_node_commits_miss_nothing() {
    let a = TestApp::spawn(StoreKind::Postgres).await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(create(&a, &format!("Acme {n}")).await);
    }
    let (http, base, token) = (a.http.clone(), a.internal(""), a.admin_token.clone());
    let commands = {
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            for round in 0..12 {
                let batch = ids.iter().map(|id| {
                    http.post(format!("{base}/internal/v1/client-keys/{id}/commands"))
                        .bearer_auth(&token)
                        .json(&json!({"type": "update_config", "config": {"agent": {"display_name": format!("Ada {round}")}}}))
                        .send()
                });
                for response in futures::future::join_all(batch).await {
                    assert_eq!(response.expect("sent").status(), StatusCode::OK);
                    sent += 1;
                }
            }
            sent
        })
    };
    let mut snapshots = 0;
    while !commands.is_finished() || snapshots < 2 {
        let (code, _, stderr) = a.store.cli(&["snapshot"]).await;
        assert_eq!(code, 0, "{stderr}");
        snapshots += 1;
    }
    let sent = commands.await.expect("commands ran");
    assert_eq!(sent, 12 * ids.len());
    let store = a.store.clone();

    let c = TestApp::spawn_on(store.clone()).await;
    assert!(startup(&c).await.0, "started from a snapshot");
    let d = TestApp::spawn_on_with_settings(store.clone(), |s| s.snapshots = false).await;
    assert!(!startup(&d).await.0, "a full replay");
    let (from_snapshot, full) = (views(&c), views(&d));
    assert_same((&c, &from_snapshot), (&d, &full));
    assert_same((&a, &views(&a)), (&d, &full));
    for id in &ids {
        assert_eq!(full[id].version(), 13, "every command is in");
    }
    c.app.stop().await;
    d.app.stop().await;
    a.finish().await;
}
