//! Auditors' tools: the `widget-auth audit` CLI (the built binary, on the store the server
//! wrote) and `GET /internal/v1/audit/verify`, after a history written through the admin
//! API; tampering done directly in the database; an older event version replayed.

use reqwest::StatusCode;
use serde_json::{json, Value};
use widget_auth::tokens::{Claims, SigningKeys};

use crate::helpers::{status_json, StoreKind, TestApp, TestClock, TestStore};

crate::on_both_stores!(
    history_lists_every_change_with_its_metadata_and_no_secret,
    state_at_replays_the_key_as_it_was_at_each_point,
    a_token_minted_between_two_changes_shows_the_policy_then_in_force,
    export_writes_the_events_entries_with_their_chain_links,
    verify_reports_rows_edited_or_deleted_in_the_database,
    an_older_event_version_is_upcast_on_every_replay,
);

/// Runs `widget-auth audit …` and parses its `--json` output.
async fn audit_json(store: &TestStore, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["audit", "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = store.cli(&all).await;
    let value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!("audit {args:?} printed no JSON (exit {code}): {stdout} / {stderr}")
    });
    (code, value)
}

async fn ok(app: &TestApp, id: &str, body: Value) -> Value {
    let (status, body) = status_json(app.command(id, body).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Creates a key and changes it three times: origins (with a reason), the secret key,
/// the token policy. Returns the creation body.
async fn write_history(app: &TestApp) -> Value {
    let created = app
        .create_key(json!({"name": "Acme", "origins": ["https://a.test", "https://b.test"]}))
        .await;
    let id = created["id"].as_str().expect("id");
    ok(
        app,
        id,
        json!({"type": "change_origins", "origins": ["https://a.test", "https://c.test"], "reason": "new shop"}),
    )
    .await;
    ok(
        app,
        id,
        json!({"type": "rotate_secret_key", "grace_seconds": 3600}),
    )
    .await;
    ok(
        app,
        id,
        json!({"type": "set_token_policy", "policy": {"visitor_token_ttl_seconds": 120, "guests_allowed": false}}),
    )
    .await;
    created
}

async fn history_lists_every_change_with_its_metadata_and_no_secret(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = write_history(&app).await;
    let id = created["id"].as_str().expect("id");
    let secret = created["secret_key"].as_str().expect("sk");

    let (code, history) = audit_json(&app.store, &["history", id]).await;
    assert_eq!(code, 0);
    assert_eq!(history["client_key_id"], id);
    let events = history["events"].as_array().expect("events");
    let summary: Vec<(u64, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["sequence"].as_u64().expect("sequence"),
                e["type"].as_str().expect("type"),
                e["summary"].as_str().expect("summary"),
            )
        })
        .collect();
    assert_eq!(summary[0].0, 1);
    assert_eq!(summary[0].1, "ClientKeyCreated");
    assert_eq!(
        summary[1],
        (
            2,
            "OriginsChanged",
            "origins: +https://c.test \u{2212}https://b.test"
        )
    );
    assert_eq!(summary[2].1, "SecretKeyRotated");
    assert!(
        summary[2].2.starts_with(&format!(
            "secret key rotated (\u{2026}{} \u{2192} \u{2026}",
            &secret[secret.len() - 4..]
        )),
        "{}",
        summary[2].2
    );
    assert_eq!(
        summary[3],
        (
            4,
            "TokenPolicySet",
            "token policy: guests_allowed true \u{2192} false, visitor_token_ttl_seconds 60 \u{2192} 120"
        )
    );
    assert_eq!(events[1]["metadata"]["reason"], "new shop");
    assert!(events[1]["metadata"]["actor"]
        .as_str()
        .expect("actor")
        .starts_with("admin:"));
    assert!(!events[1]["metadata"]["request_id"]
        .as_str()
        .expect("request id")
        .is_empty());
    assert_eq!(events[3]["chain"].as_str().map(str::len), Some(64));

    // The text form, looked up by the public key, says the same to people.
    let public_key = created["public_key"].as_str().expect("pk");
    let (code, text, _) = app.store.cli(&["audit", "history", public_key]).await;
    assert_eq!(code, 0);
    assert!(text.contains("origins: +https://c.test \u{2212}https://b.test"));
    assert!(text.contains("reason: new shop"));
    assert!(!text.contains(secret), "a secret key leaked: {text}");

    // A rotated-out public key still leads to its client key.
    let rotated = ok(
        &app,
        id,
        json!({"type": "rotate_public_key", "grace_seconds": 0}),
    )
    .await;
    assert_ne!(rotated["public_key"], created["public_key"]);
    let (code, by_old_key) = audit_json(&app.store, &["history", public_key]).await;
    assert_eq!(code, 0);
    assert_eq!(by_old_key["client_key_id"], id);
    assert_eq!(by_old_key["events"].as_array().map(Vec::len), Some(5));

    let (code, _, _) = app
        .store
        .cli(&["audit", "history", "ck_doesnotexist000000"])
        .await;
    assert_eq!(code, 1);
    app.finish().await;
}

async fn state_at_replays_the_key_as_it_was_at_each_point(store: StoreKind) {
    let clock = std::sync::Arc::new(TestClock::system());
    let app = TestApp::spawn_with_clock(store, clock.clone()).await;
    let created = app
        .create_key(json!({"name": "Acme", "origins": ["https://a.test"]}))
        .await;
    let id = created["id"].as_str().expect("id");
    // Command times are whole seconds (they are compared with JWT `iat`): two seconds
    // apart on the server's clock, each event has its own time.
    for origins in [
        json!(["https://a.test", "https://b.test"]),
        json!(["https://b.test"]),
    ] {
        clock.advance(std::time::Duration::from_secs(2));
        ok(
            &app,
            id,
            json!({"type": "change_origins", "origins": origins}),
        )
        .await;
    }
    let events = app.events(id).await;
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["metadata"]["at"].as_str().expect("at"))
        .collect();

    for (sequence, at, origins) in [
        (1, times[0], json!(["https://a.test"])),
        (2, times[1], json!(["https://a.test", "https://b.test"])),
        (3, times[2], json!(["https://b.test"])),
    ] {
        let (code, by_time) = audit_json(&app.store, &["state", id, "--at", at]).await;
        assert_eq!(code, 0);
        assert_eq!(by_time["version"], sequence);
        assert_eq!(by_time["origins"], origins);
        let seq = sequence.to_string();
        let (code, by_sequence) =
            audit_json(&app.store, &["state", id, "--at-sequence", &seq]).await;
        assert_eq!(code, 0);
        assert_eq!(by_sequence, by_time);
        // The HTTP endpoint runs the same replay and answers the same document.
        let (status, http) = status_json(
            app.admin_get(&format!(
                "/internal/v1/client-keys/{id}/state?at_sequence={sequence}"
            ))
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(http, by_time);
    }
    assert_eq!(
        audit_json(&app.store, &["state", id, "--at-sequence", "3"])
            .await
            .1,
        app.key(id).await,
        "the latest point is the current state"
    );

    let (code, _, stdout_err) = app
        .store
        .cli(&["audit", "state", id, "--at", "2000-01-01T00:00:00Z"])
        .await;
    assert_eq!(code, 1, "{stdout_err}");
    let (code, _, stderr) = app
        .store
        .cli(&["audit", "state", id, "--at", "yesterday"])
        .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("RFC 3339"), "{stderr}");
    app.finish().await;
}

async fn a_token_minted_between_two_changes_shows_the_policy_then_in_force(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = write_history(&app).await;
    let id = created["id"].as_str().expect("id");
    // A real session at version 4: the customer backend vouches for a user with the
    // original secret key (still in its rotation grace), and the widget on
    // https://c.test exchanges the visitor token.
    let visitor = app.visitor_token(&created, "user-4").await;
    let (status, session) = status_json(app.exchange(&visitor, Some("https://c.test")).await).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = session["token"].as_str().expect("session token").to_owned();
    let claims: Claims =
        serde_json::from_value(crate::helpers::jwt_part(&token, 1)).expect("claims");
    // A change after the token: the report must show version 4, not the current one.
    ok(
        &app,
        id,
        json!({"type": "change_origins", "origins": ["https://d.test"]}),
    )
    .await;

    let (code, report) = audit_json(&app.store, &["token", &token]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["token"]["ck"], id);
    assert_eq!(report["token"]["ver"], 4);
    assert_eq!(report["token"]["kind"], "session");
    assert_eq!(report["signature"], "valid");
    let in_force = &report["in_force"];
    assert_eq!(
        in_force["origins"],
        json!(["https://a.test", "https://c.test"])
    );
    assert_eq!(in_force["token_policy"]["visitor_token_ttl_seconds"], 120);
    assert_eq!(in_force["token_policy"]["guests_allowed"], false);
    assert_eq!(in_force["public_key"], created["public_key"]);
    assert_eq!(
        in_force["previous_secret_keys"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(report["origin_allowed_then"], true);
    assert_eq!(report["current_version"], 5);
    assert_eq!(
        report["changes_since"][0]["summary"],
        "origins: +https://d.test \u{2212}https://a.test \u{2212}https://c.test"
    );

    let (code, text, _) = app.store.cli(&["audit", "token", &token]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("origins: https://a.test, https://c.test"),
        "{text}"
    );
    assert!(text.contains("guests not allowed"), "{text}");

    // A token signed by a key that is not ours is refused, not explained.
    let stranger = SigningKeys::from_pem(&SigningKeys::generate_pem().expect("pem")).expect("key");
    let forged = stranger.mint(&claims).expect("mint");
    let (code, refused) = audit_json(&app.store, &["token", &forged]).await;
    assert_eq!(code, 1);
    assert_eq!(
        refused["error"],
        "not a token we minted: token signing key unknown"
    );
    app.finish().await;
}

async fn export_writes_the_events_entries_with_their_chain_links(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = write_history(&app).await;
    let id = created["id"].as_str().expect("id");
    let (code, stdout, _) = app
        .store
        .cli(&["audit", "export", id, "--format", "jsonl"])
        .await;
    assert_eq!(code, 0);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let api = app.events(id).await;
    assert_eq!(lines.len(), 4);
    let mut previous = None;
    for (mut line, entry) in lines.into_iter().zip(api) {
        let chain = line
            .as_object_mut()
            .and_then(|o| o.remove("chain"))
            .expect("chain");
        assert_eq!(chain.as_str().map(str::len), Some(64));
        assert_ne!(Some(chain.clone()), previous);
        previous = Some(chain);
        assert_eq!(line, entry, "export is the /events entry plus chain");
    }
    app.finish().await;
}

async fn verify_reports_rows_edited_or_deleted_in_the_database(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = write_history(&app).await;
    let id = created["id"].as_str().expect("id");
    let other = app.create_default_key().await;

    let (code, text, _) = app.store.cli(&["audit", "verify"]).await;
    assert_eq!((code, text.trim()), (0, "intact, 5 events"));
    let (status, body) = status_json(app.admin_get("/internal/v1/audit/verify").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"intact": true, "events": 5, "legacy_events": 0, "broken": null})
    );

    // An edit of the allowlist recorded at sequence 2.
    let where_2 = format!("WHERE aggregate_id = '{id}' AND sequence = 2");
    let original = app
        .store
        .raw_rows(&format!(
            "SELECT CAST(payload AS TEXT) FROM events {where_2}"
        ))
        .await
        .remove(0);
    let edit = match store {
        StoreKind::Sqlite => format!(
            "UPDATE events SET payload = json_set(payload, '$.OriginsChanged.origins', \
             json('[\"https://evil.test\"]')) {where_2}"
        ),
        StoreKind::Postgres => format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{OriginsChanged,origins}}', \
             '[\"https://evil.test\"]') {where_2}"
        ),
    };
    assert_eq!(app.store.execute(&edit).await, 1);
    let (code, report) = audit_json(&app.store, &["verify"]).await;
    assert_eq!(code, 1);
    assert_eq!(report["intact"], false);
    assert_eq!(
        (
            &report["broken"]["client_key_id"],
            &report["broken"]["sequence"],
            &report["broken"]["problem"]
        ),
        (&json!(id), &json!(2), &json!("edited"))
    );
    let (_, http) = status_json(app.admin_get("/internal/v1/audit/verify").await).await;
    assert_eq!(http, report, "the endpoint and the CLI agree");
    let (_, text, _) = app.store.cli(&["audit", "verify"]).await;
    assert!(
        text.starts_with(&format!("BROKEN at {id} sequence 2 (edited)")),
        "{text}"
    );

    // Putting the original back (as text: PostgreSQL re-orders it) makes it whole again.
    let restore = format!(
        "UPDATE events SET payload = '{}' {where_2}",
        original.replace('\'', "''")
    );
    assert_eq!(app.store.execute(&restore).await, 1);
    assert_eq!(audit_json(&app.store, &["verify"]).await.1["intact"], true);

    // Deleting an event from the middle of a history.
    let delete = format!("DELETE FROM events WHERE aggregate_id = '{id}' AND sequence = 3");
    assert_eq!(app.store.execute(&delete).await, 1);
    let (code, report) = audit_json(&app.store, &["verify"]).await;
    assert_eq!(code, 1);
    assert_eq!(report["broken"]["client_key_id"], id);
    assert_eq!(report["broken"]["sequence"], 3);
    assert_eq!(report["broken"]["problem"], "deleted");
    let (_, http) = status_json(app.admin_get("/internal/v1/audit/verify").await).await;
    assert_eq!(http["broken"], report["broken"]);

    // The other key's history is untouched: keys sort by id, so it may be checked before
    // or after the broken one, but it is never the one reported.
    assert_ne!(report["broken"]["client_key_id"], other["id"]);

    let response = app
        .http
        .get(app.internal("/internal/v1/audit/verify"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.finish().await;
}

async fn an_older_event_version_is_upcast_on_every_replay(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = app
        .create_key(json!({"name": "Acme", "origins": ["https://acme.test"]}))
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    let test_store = app.store.clone();
    app.app.stop().await;

    // Make the key's history one written before the chain and in OriginsChanged 0.9's
    // shape: strip the creation's link, then append a 0.9 event as an old release wrote it.
    let strip = match store {
        StoreKind::Sqlite => "UPDATE events SET metadata = json_remove(metadata, '$.chain')",
        StoreKind::Postgres => "UPDATE events SET metadata = metadata - 'chain'",
    };
    assert_eq!(test_store.execute(strip).await, 1);
    let insert = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('ClientKey', '{id}', 2, 'OriginsChanged', '0.9', \
         '{{\"OriginsChanged\": {{\"allowed_origins\": [\"https://old.test\"]}}}}', \
         '{{\"actor\": \"admin:legacy\", \"at\": \"2026-01-02T03:04:05.000Z\", \"request_id\": \"r-old\"}}')"
    );
    assert_eq!(test_store.execute(&insert).await, 1);

    // The server's start-up replay reads it as the current event.
    let app = TestApp::spawn_on(test_store).await;
    let key = app.key(&id).await;
    assert_eq!(key["origins"], json!(["https://old.test"]));
    assert_eq!(key["version"], 2);

    // So does `audit state`, and the summary sees the change.
    let (code, state) = audit_json(&app.store, &["state", &id, "--at-sequence", "2"]).await;
    assert_eq!(code, 0);
    assert_eq!(state["origins"], json!(["https://old.test"]));
    let (_, history) = audit_json(&app.store, &["history", &id]).await;
    assert_eq!(
        history["events"][1]["summary"],
        "origins: +https://old.test \u{2212}https://acme.test"
    );
    assert_eq!(history["events"][1]["chain"], Value::Null);

    // The command side loads it too (cqrs-es has the same upcasters), and the first
    // chained event seals the legacy prefix.
    let changed = ok(
        &app,
        &id,
        json!({"type": "change_origins", "origins": ["https://old.test", "https://new.test"]}),
    )
    .await;
    assert_eq!(changed["version"], 3);
    let (code, report) = audit_json(&app.store, &["verify"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        report,
        json!({"intact": true, "events": 3, "legacy_events": 2, "broken": null})
    );
    let (_, text, _) = app.store.cli(&["audit", "verify"]).await;
    assert!(
        text.starts_with("intact, 3 events (2 legacy events"),
        "{text}"
    );

    // The stored row was never rewritten, and editing it now breaks the seal at event 3.
    let stored = app
        .store
        .raw_rows(&format!(
            "SELECT event_version FROM events WHERE aggregate_id = '{id}' AND sequence = 2"
        ))
        .await;
    assert_eq!(stored, ["0.9"]);
    let tamper = match store {
        StoreKind::Sqlite => format!(
            "UPDATE events SET payload = json_set(payload, '$.OriginsChanged.allowed_origins', \
             json('[\"https://evil.test\"]')) WHERE aggregate_id = '{id}' AND sequence = 2"
        ),
        StoreKind::Postgres => format!(
            "UPDATE events SET payload = jsonb_set(payload, '{{OriginsChanged,allowed_origins}}', \
             '[\"https://evil.test\"]') WHERE aggregate_id = '{id}' AND sequence = 2"
        ),
    };
    assert_eq!(app.store.execute(&tamper).await, 1);
    let (_, report) = audit_json(&app.store, &["verify"]).await;
    assert_eq!(report["broken"]["sequence"], 3);
    assert_eq!(report["broken"]["problem"], "edited");
    app.finish().await;
}

/// Events seeded by [`replaying_100k_events_for_verify_and_state`].
const MEASURED_EVENTS: u64 = 100_000;

/// The rates README reports: 100,000 events of one key, seeded straight into SQLite with
/// valid links, then `verify` and `state` timed in-process and through the binary.
/// Measures, never asserts speed: `cargo test --release --test api replaying_100k -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it in release with --ignored --nocapture"]
async fn replaying_100k_events_for_verify_and_state() {
    use std::time::Instant;
    use widget_auth::audit::{self, Point, StateAt};
    use widget_auth::chain::{self, Hasher, LinkInput};
    use widget_auth::store::Store;

    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let created = app.create_default_key().await;
    let id = created["id"].as_str().expect("id").to_owned();
    let store = app.store.clone();
    app.app.stop().await;

    let seeding = Instant::now();
    let url = format!(
        "sqlite://{}",
        store.data_dir.join("widget-auth.sqlite3").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    let first: String =
        sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = ? AND sequence = 1")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .expect("creation");
    let first: Value = serde_json::from_str(&first).expect("json");
    let mut previous = chain::stored_link(&first).expect("chained").to_owned();
    let mut hasher = Hasher::default();
    // A mix of what operators do: allowlist edits, config updates, policy changes.
    let payloads = [
        json!({"OriginsChanged": {"origins": ["https://a.test", "https://*.a.test"]}}),
        json!({"ConfigUpdated": {"config": {
            "agent": {"display_name": "Ada", "avatar_url": null},
            "branding": {"primary_color": "#0A7CFF", "background_color": "#FFFFFF",
                         "text_color": "#111827", "launcher_position": "bottom-right"},
            "copy": {"title": "Chat with us", "greeting": "Hi!", "input_placeholder": "Type…",
                     "offline_message": "We are offline."},
            "locale": "en"}}}),
        json!({"TokenPolicySet": {"policy": {"visitor_token_ttl_seconds": 120,
            "session_ttl_seconds": 900, "refresh_ttl_seconds": 604800, "guests_allowed": true}}}),
        json!({"OriginsChanged": {"origins": ["https://b.test"]}}),
    ];
    let types = [
        "OriginsChanged",
        "ConfigUpdated",
        "TokenPolicySet",
        "OriginsChanged",
    ];
    let mut tx = pool.begin().await.expect("begin");
    let mut rows = Vec::with_capacity(500);
    for sequence in 2..=MEASURED_EVENTS {
        let which = (sequence % 4) as usize;
        let mut metadata = json!({
            "actor": "admin:bench",
            "at": "2026-01-01T00:00:00.000Z",
            "request_id": format!("bench-{sequence}"),
        });
        let link = hasher.link(
            &previous,
            &LinkInput {
                aggregate_id: &id,
                sequence,
                event_type: types[which],
                event_version: "1.0",
                payload: &payloads[which],
                metadata: &metadata,
            },
        );
        metadata["chain"] = json!(link);
        previous = link;
        rows.push((sequence, which, metadata.to_string()));
        if rows.len() == 500 || sequence == MEASURED_EVENTS {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata) ",
            );
            insert.push_values(rows.drain(..), |mut row, (sequence, which, metadata)| {
                row.push_bind("ClientKey")
                    .push_bind(&id)
                    .push_bind(sequence as i64)
                    .push_bind(types[which])
                    .push_bind("1.0")
                    .push_bind(payloads[which].to_string())
                    .push_bind(metadata);
            });
            insert.build().execute(&mut *tx).await.expect("insert");
        }
    }
    tx.commit().await.expect("commit");
    pool.close().await;
    let seeded = seeding.elapsed();

    let settings = store.settings();
    let opened = Store::open(settings.database_url_str(), &settings.data_dir)
        .await
        .expect("open");
    let started = Instant::now();
    let report = audit::verify(&opened, |_| {}).await.expect("verify");
    let verify_time = started.elapsed();
    assert!(report.intact(), "{report:?}");
    assert_eq!(report.events, MEASURED_EVENTS);

    let started = Instant::now();
    let state = audit::state_at(&opened, &id, Point::Sequence(MEASURED_EVENTS))
        .await
        .expect("state");
    let state_time = started.elapsed();
    let StateAt::Found(view) = state else {
        panic!("the key exists")
    };
    assert_eq!(view.version(), MEASURED_EVENTS);
    opened.close().await;

    let started = Instant::now();
    let (code, text, _) = store.cli(&["audit", "verify"]).await;
    let cli_verify = started.elapsed();
    assert_eq!((code, text.trim()), (0, "intact, 100000 events"));
    let started = Instant::now();
    let (code, _, _) = store
        .cli(&["audit", "--json", "state", &id, "--at-sequence", "100000"])
        .await;
    let cli_state = started.elapsed();
    assert_eq!(code, 0);

    let rate = |d: std::time::Duration| MEASURED_EVENTS as f64 / d.as_secs_f64();
    println!(
        "seeded {MEASURED_EVENTS} events in {seeded:.2?}\n\
         verify (in-process): {verify_time:.2?} = {:.0} events/s\n\
         state  (in-process): {state_time:.2?} = {:.0} events/s\n\
         widget-auth audit verify (whole process): {cli_verify:.2?} = {:.0} events/s\n\
         widget-auth audit state  (whole process): {cli_state:.2?} = {:.0} events/s",
        rate(verify_time),
        rate(state_time),
        rate(cli_verify),
        rate(cli_state),
    );
    store.cleanup().await;
}
