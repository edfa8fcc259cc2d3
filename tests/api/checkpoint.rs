//! Signed checkpoints: `GET /internal/v1/audit/checkpoint`, `POST /internal/v1/audit/verify`
//! and `widget-auth audit checkpoint` / `audit verify --checkpoint`, against an adversary
//! with write access to the database (rows deleted, rewritten with every link recomputed
//! by the crate's own chain functions, links stripped) and one who edits the checkpoint.

use reqwest::StatusCode;
use serde_json::{json, Value};
use widget_auth::chain::{Hasher, LinkInput, GENESIS};
use widget_auth::store::Store;

use crate::helpers::{status_json, StoreKind, TestApp, TestClock, TestStore};

crate::on_both_stores!(
    a_fresh_checkpoint_verifies_and_still_does_after_the_store_grows,
    a_history_cut_short_rewritten_or_gone_is_named_against_the_checkpoint,
    an_edited_checkpoint_is_not_intact,
    a_checkpoint_signed_by_a_key_no_longer_in_the_jwks_is_reported_as_such,
    the_cli_round_trip_exits_non_zero_when_not_intact_and_python_verifies_the_signature,
    verify_reports_a_key_stripped_of_every_link,
    a_node_with_a_checkpoint_dir_writes_one_at_start_that_verifies,
);

async fn checkpoint(app: &TestApp) -> Value {
    let (status, body) = status_json(app.admin_get("/internal/v1/audit/checkpoint").await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn verify(app: &TestApp, checkpoint: &Value) -> Value {
    let (status, body) = status_json(
        app.admin_post("/internal/v1/audit/verify", checkpoint)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `(client_key, problem)` of every problem, in the report's order.
fn problems(report: &Value) -> Vec<(String, String)> {
    report["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["client_key"].as_str().unwrap_or("-").to_owned(),
                p["problem"].as_str().expect("problem").to_owned(),
            )
        })
        .collect()
}

async fn change_origins(app: &TestApp, id: &str, origin: &str) {
    let (status, body) = status_json(
        app.command(id, json!({"type": "change_origins", "origins": [origin]}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A key with `changes` allowlist changes after its creation; returns its id.
async fn key_with_history(app: &TestApp, changes: usize) -> String {
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for n in 0..changes {
        change_origins(app, &id, &format!("https://{n}.test")).await;
    }
    id
}

/// Rewrites every stored `chain` of a key as the crate computes it from the rows as they
/// are now: an attacker covering an edit by re-linking the whole history.
async fn relink(store: &TestStore, kind: StoreKind, id: &str) {
    let settings = store.settings();
    let opened = Store::open(settings.database_url_str(), &settings.data_dir)
        .await
        .expect("open");
    let history = opened.raw_history(id, 0, None).await.expect("history");
    opened.close().await;
    let mut hasher = Hasher::default();
    let mut previous = GENESIS.to_owned();
    for event in &history {
        previous = hasher.link(&previous, &LinkInput::of(event));
        let set = match kind {
            StoreKind::Sqlite => format!("json_set(metadata, '$.chain', '{previous}')"),
            StoreKind::Postgres => format!("jsonb_set(metadata, '{{chain}}', '\"{previous}\"')"),
        };
        let sql = format!(
            "UPDATE events SET metadata = {set} WHERE aggregate_id = '{id}' AND sequence = {}",
            event.sequence
        );
        assert_eq!(store.execute(&sql).await, 1);
    }
}

fn edit_created_origins(kind: StoreKind, id: &str) -> String {
    let set = match kind {
        StoreKind::Sqlite => {
            "json_set(payload, '$.ClientKeyCreated.origins', json('[\"https://evil.test\"]'))"
        }
        StoreKind::Postgres => {
            "jsonb_set(payload, '{ClientKeyCreated,origins}', '[\"https://evil.test\"]')"
        }
    };
    format!("UPDATE events SET payload = {set} WHERE aggregate_id = '{id}' AND sequence = 1")
}

async fn a_fresh_checkpoint_verifies_and_still_does_after_the_store_grows(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let a = key_with_history(&app, 2).await;
    let b = key_with_history(&app, 0).await;
    let taken = checkpoint(&app).await;
    assert_eq!(taken["format"], "widget-auth-checkpoint/1");
    assert_eq!((&taken["keys"], &taken["events"]), (&json!(2), &json!(4)));
    let jwks: Value = app
        .http
        .get(app.public("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(
        taken["kid"], jwks["keys"][0]["kid"],
        "the JWKS key verifies it"
    );
    let mut expected = [(a.clone(), 3), (b.clone(), 1)];
    expected.sort();
    let heads: Vec<(String, u64)> = taken["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .map(|h| {
            assert_eq!(h["link"].as_str().map(str::len), Some(64));
            (
                h["client_key"].as_str().expect("key").to_owned(),
                h["sequence"].as_u64().expect("sequence"),
            )
        })
        .collect();
    assert_eq!(heads, expected);
    // The newest link of a key is its stored chain head.
    let a_head = taken["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .find(|h| h["client_key"] == a.as_str())
        .expect("a's head");
    let stored = app
        .store
        .raw_rows(&format!(
            "SELECT CAST(metadata AS TEXT) FROM events WHERE aggregate_id = '{a}' AND sequence = 3"
        ))
        .await;
    let stored: Value = serde_json::from_str(&stored[0]).expect("metadata");
    assert_eq!(a_head["link"], stored["chain"]);

    let report = verify(&app, &taken).await;
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["signature"], "valid");
    assert_eq!(report["problems"], json!([]));
    assert_eq!(
        (&report["keys"], &report["new_keys"]),
        (&json!(2), &json!(0))
    );

    // The store goes on: a key changed after the checkpoint and a new key extend it.
    change_origins(&app, &b, "https://later.test").await;
    key_with_history(&app, 1).await;
    let report = verify(&app, &taken).await;
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["new_keys"], 1);
    assert_eq!(report["events"], 7);

    // Not a checkpoint: a clear 400, and no admin token: 401.
    let mut other_format = taken.clone();
    other_format["format"] = json!("widget-auth-checkpoint/0");
    for body in [json!({"format": "x"}), other_format] {
        let (status, error) =
            status_json(app.admin_post("/internal/v1/audit/verify", &body).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert!(error["message"]
            .as_str()
            .expect("message")
            .starts_with("invalid"));
    }
    let response = app
        .http
        .get(app.internal("/internal/v1/audit/checkpoint"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.finish().await;
}

async fn a_history_cut_short_rewritten_or_gone_is_named_against_the_checkpoint(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let cut = key_with_history(&app, 2).await;
    let rewritten = key_with_history(&app, 2).await;
    let gone = key_with_history(&app, 1).await;
    let untouched = key_with_history(&app, 1).await;
    let taken = checkpoint(&app).await;

    // The newest event of one key deleted.
    let sql = format!("DELETE FROM events WHERE aggregate_id = '{cut}' AND sequence = 3");
    assert_eq!(app.store.execute(&sql).await, 1);
    // Another key's allowlist at sequence 2 edited, and every link recomputed.
    let set = match kind {
        StoreKind::Sqlite => {
            "json_set(payload, '$.OriginsChanged.origins', json('[\"https://evil.test\"]'))"
        }
        StoreKind::Postgres => {
            "jsonb_set(payload, '{OriginsChanged,origins}', '[\"https://evil.test\"]')"
        }
    };
    let sql = format!(
        "UPDATE events SET payload = {set} WHERE aggregate_id = '{rewritten}' AND sequence = 2"
    );
    assert_eq!(app.store.execute(&sql).await, 1);
    relink(&app.store, kind, &rewritten).await;
    // A whole key removed.
    let sql = format!("DELETE FROM events WHERE aggregate_id = '{gone}'");
    assert_eq!(app.store.execute(&sql).await, 2);

    // The chain alone sees nothing wrong: each history is consistent.
    let (_, plain) = status_json(app.admin_get("/internal/v1/audit/verify").await).await;
    assert_eq!(plain["intact"], true, "{plain}");

    let report = verify(&app, &taken).await;
    assert_eq!(report["intact"], false);
    assert_eq!(report["signature"], "valid");
    let mut found = problems(&report);
    found.sort();
    let mut expected = vec![
        (cut.clone(), "cut_short".to_owned()),
        (rewritten.clone(), "rewritten".to_owned()),
        (gone.clone(), "missing".to_owned()),
    ];
    expected.sort();
    assert_eq!(found, expected, "{report}");
    assert!(!found.iter().any(|(key, _)| *key == untouched));
    let by_key = |key: &str| {
        report["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .find(|p| p["client_key"] == key)
            .cloned()
            .expect("named")
    };
    assert_eq!(by_key(&cut)["sequence"], 3);
    assert!(by_key(&cut)["message"]
        .as_str()
        .expect("message")
        .contains("ends at 2"));
    assert_eq!(by_key(&rewritten)["sequence"], 3);
    assert_eq!(by_key(&gone)["sequence"], 2);

    // A checkpoint taken now commits to the tampered store: it verifies against itself,
    // and the CLI agrees with the endpoint about the old one.
    let now = checkpoint(&app).await;
    assert_eq!(verify(&app, &now).await["intact"], true);
    let path = app.store.data_dir.join("old-checkpoint.json");
    std::fs::write(&path, taken.to_string()).expect("write");
    let path = path.display().to_string();
    let (code, stdout, stderr) = app
        .store
        .cli(&["audit", "--json", "verify", "--checkpoint", &path])
        .await;
    assert_eq!(code, 1, "{stderr}");
    let cli: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(cli, report, "the CLI and the endpoint agree");
    app.finish().await;
}

async fn an_edited_checkpoint_is_not_intact(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let a = key_with_history(&app, 2).await;
    key_with_history(&app, 0).await;
    let taken = checkpoint(&app).await;
    let index = taken["heads"]
        .as_array()
        .expect("heads")
        .iter()
        .position(|h| h["client_key"] == a.as_str())
        .expect("a's head");

    // A head's link replaced: the root no longer matches, and the key is named.
    let mut edited = taken.clone();
    edited["heads"][index]["link"] = json!("0".repeat(64));
    let report = verify(&app, &edited).await;
    assert_eq!(report["intact"], false);
    assert_eq!(report["signature"], "valid");
    assert_eq!(
        problems(&report),
        [
            ("-".to_owned(), "checkpoint_edited".to_owned()),
            (a.clone(), "rewritten".to_owned()),
        ]
    );

    // A head lowered to hide events: the sums no longer match the signed counts.
    let mut lowered = taken.clone();
    lowered["heads"][index]["sequence"] = json!(2);
    let report = verify(&app, &lowered).await;
    assert_eq!(
        problems(&report),
        [
            ("-".to_owned(), "checkpoint_edited".to_owned()),
            (a.clone(), "rewritten".to_owned()),
        ]
    );

    // A head dropped, and the counts and root edited to match: the signature fails.
    let mut dropped = taken.clone();
    let head = dropped["heads"]
        .as_array_mut()
        .expect("heads")
        .remove(index);
    let remaining: Vec<widget_auth::checkpoint::Head> =
        serde_json::from_value(dropped["heads"].clone()).expect("heads");
    dropped["keys"] = json!(1);
    dropped["events"] = json!(1);
    dropped["root"] = json!(widget_auth::checkpoint::root_of(&remaining));
    let report = verify(&app, &dropped).await;
    assert_eq!(report["intact"], false);
    assert_eq!(report["signature"], "invalid");
    assert_eq!(
        problems(&report),
        [("-".to_owned(), "signature_invalid".to_owned())]
    );
    assert_eq!(report["new_keys"], 1, "{head}: now seen as a new key");

    // Edits to the signed fields: the signature fails.
    for (field, value) in [
        ("at", json!("2020-01-01T00:00:00Z")),
        ("signature", json!("AAAA")),
    ] {
        let mut edited = taken.clone();
        edited[field] = value;
        let report = verify(&app, &edited).await;
        assert_eq!(report["signature"], "invalid", "{field}");
        assert_eq!(report["intact"], false);
    }
    app.finish().await;
}

async fn a_checkpoint_signed_by_a_key_no_longer_in_the_jwks_is_reported_as_such(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    key_with_history(&app, 1).await;
    let taken = checkpoint(&app).await;
    // The operator replaces the signing key and drops the old one from the file.
    let store = app.store.clone();
    app.app.stop().await;
    let pem = widget_auth::tokens::SigningKeys::generate_pem().expect("pem");
    std::fs::write(store.signing_key_path(), pem).expect("write");
    let app = TestApp::spawn_on(store).await;

    let report = verify(&app, &taken).await;
    assert_eq!(report["intact"], false);
    assert_eq!(report["signature"], "unknown_kid");
    assert_eq!(report["kid"], taken["kid"]);
    assert_eq!(
        problems(&report),
        [("-".to_owned(), "signing_key_unknown".to_owned())]
    );
    assert!(report["problems"][0]["message"]
        .as_str()
        .expect("message")
        .contains("not in the JWKS"));
    // The store itself still matches the heads: that part is reported as checked.
    assert_eq!(report["keys"], 1);
    app.finish().await;
}

async fn the_cli_round_trip_exits_non_zero_when_not_intact_and_python_verifies_the_signature(
    kind: StoreKind,
) {
    let app = TestApp::spawn(kind).await;
    let a = key_with_history(&app, 2).await;
    key_with_history(&app, 1).await;
    let (code, stdout, stderr) = app.store.cli(&["audit", "checkpoint"]).await;
    assert_eq!(code, 0, "{stderr}");
    let taken: Value = serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!((&taken["keys"], &taken["events"]), (&json!(2), &json!(5)));
    let path = app.store.data_dir.join("checkpoint.json");
    std::fs::write(&path, &stdout).expect("write");
    let file = path.display().to_string();

    let (code, text, stderr) = app
        .store
        .cli(&["audit", "verify", "--checkpoint", &file])
        .await;
    assert_eq!(code, 0, "{text}{stderr}");
    assert!(
        text.starts_with("intact: the store extends the checkpoint of"),
        "{text}"
    );
    // The server accepts the CLI's checkpoint: both sign with the same key.
    assert_eq!(verify(&app, &taken).await["intact"], true);

    // A third party with the public JWKS alone (Python, `cryptography`).
    let jwks = app
        .http
        .get(app.public("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .text()
        .await
        .expect("text");
    let jwks_file = app.store.data_dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks).expect("write");
    let python = |checkpoint: &std::path::Path| {
        std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/verify_checkpoint.py"
            ))
            .arg(&jwks_file)
            .arg(checkpoint)
            .output()
            .expect("python3 runs")
    };
    let output = python(&path);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok 2 keys, 5 events"
    );
    let mut edited = taken.clone();
    edited["heads"][0]["sequence"] = json!(9);
    let edited_path = app.store.data_dir.join("edited.json");
    std::fs::write(&edited_path, edited.to_string()).expect("write");
    assert!(!python(&edited_path).status.success());

    // The newest event of a key deleted: exit 1, the key named.
    let sql = format!("DELETE FROM events WHERE aggregate_id = '{a}' AND sequence = 3");
    assert_eq!(app.store.execute(&sql).await, 1);
    let (code, text, _) = app
        .store
        .cli(&["audit", "verify", "--checkpoint", &file])
        .await;
    assert_eq!(code, 1, "{text}");
    assert!(
        text.starts_with("NOT INTACT against the checkpoint of"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{a} sequence 3 (cut_short)")),
        "{text}"
    );

    // Not a checkpoint file: an error that says so, not a verdict.
    std::fs::write(&path, "{}").expect("write");
    let (code, stdout, stderr) = app
        .store
        .cli(&["audit", "verify", "--checkpoint", &file])
        .await;
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(stderr.contains("is not a checkpoint"), "{stderr}");
    app.finish().await;
}

async fn verify_reports_a_key_stripped_of_every_link(kind: StoreKind) {
    let clock = std::sync::Arc::new(TestClock::system());
    let app = TestApp::spawn_with_clock(kind, clock.clone()).await;
    key_with_history(&app, 1).await;
    // Command times are whole seconds: the victim is written after the chain began.
    clock.advance(std::time::Duration::from_secs(2));
    let victim = key_with_history(&app, 1).await;
    let taken = checkpoint(&app).await;

    let strip = match kind {
        StoreKind::Sqlite => format!(
            "UPDATE events SET metadata = json_remove(metadata, '$.chain') \
             WHERE aggregate_id = '{victim}'"
        ),
        StoreKind::Postgres => format!(
            "UPDATE events SET metadata = metadata - 'chain' WHERE aggregate_id = '{victim}'"
        ),
    };
    assert_eq!(app.store.execute(&strip).await, 2);
    assert_eq!(
        app.store
            .execute(&edit_created_origins(kind, &victim))
            .await,
        1
    );

    let (_, report) = status_json(app.admin_get("/internal/v1/audit/verify").await).await;
    assert_eq!(report["intact"], false, "{report}");
    assert_eq!(report["broken"]["client_key_id"], victim.as_str());
    assert_eq!(report["broken"]["problem"], "chain_stripped");
    assert_eq!(report["broken"]["sequence"], 2);
    let (code, text, _) = app.store.cli(&["audit", "verify"]).await;
    assert_eq!(code, 1);
    assert!(
        text.starts_with(&format!("BROKEN at {victim} sequence 2 (chain_stripped)")),
        "{text}"
    );
    // No checkpoint is signed over it, and the one taken before names the key.
    let (status, refused) = status_json(app.admin_get("/internal/v1/audit/checkpoint").await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(refused["error"], "chain_broken");
    let report = verify(&app, &taken).await;
    let found = problems(&report);
    assert!(
        found.contains(&(victim.clone(), "rewritten".to_owned())),
        "{report}"
    );
    assert!(found.contains(&(victim.clone(), "chain_stripped".to_owned())));
    app.finish().await;
}

async fn a_node_with_a_checkpoint_dir_writes_one_at_start_that_verifies(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    key_with_history(&app, 2).await;
    key_with_history(&app, 0).await;
    let store = app.store.clone();
    app.app.stop().await;

    let dir = store.data_dir.join("checkpoints");
    let mut settings = store.settings();
    settings.checkpoint_dir = Some(dir.clone());
    let node = widget_auth::app::start(settings, std::sync::Arc::new(TestClock::system()))
        .await
        .expect("starts");
    // Written at start (then every WIDGET_AUTH_CHECKPOINT_MINUTES): wait for the file.
    let mut written = Vec::new();
    for _ in 0..300 {
        written = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        if !written.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    node.stop().await;
    assert_eq!(written.len(), 1, "one checkpoint file in {}", dir.display());
    let name = written[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("checkpoint-") && !name.contains(':'),
        "{name}"
    );
    let taken: Value =
        serde_json::from_str(&std::fs::read_to_string(&written[0]).expect("read")).expect("json");
    assert_eq!((&taken["keys"], &taken["events"]), (&json!(2), &json!(4)));
    let file = written[0].display().to_string();
    let (code, text, stderr) = store.cli(&["audit", "verify", "--checkpoint", &file]).await;
    assert_eq!(code, 0, "{text}{stderr}");
    store.cleanup().await;
}

/// The figures README reports: 100,000 keys with 10 events each (1,000,000 events),
/// seeded straight into SQLite with valid links, then a checkpoint taken, the store
/// verified against it, and the plain chain check, all in-process. Measures, never
/// asserts speed:
/// `cargo test --release --test api checkpointing_100k -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check: run it in release with --ignored --nocapture"]
async fn checkpointing_100k_keys_and_1m_events() {
    use std::time::Instant;
    use widget_auth::audit;

    const KEYS: u64 = 100_000;
    const PER_KEY: u64 = 10;
    let store = TestStore::new(StoreKind::Sqlite).await;
    let settings = store.settings();
    // Creates the database and its tables.
    let opened = Store::open(None, &settings.data_dir).await.expect("open");
    opened.migrate().await.expect("migrate");
    opened.close().await;

    let seeding = Instant::now();
    let url = format!(
        "sqlite://{}",
        store.data_dir.join("widget-auth.sqlite3").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("connect");
    let payload = json!({"OriginsChanged": {"origins": ["https://a.test", "https://*.a.test"]}});
    let payload_text = payload.to_string();
    let mut hasher = Hasher::default();
    let mut tx = pool.begin().await.expect("begin");
    let mut rows: Vec<(String, u64, String)> = Vec::with_capacity(500);
    for key in 0..KEYS {
        let id = format!("ck_bench{key:012}");
        let mut previous = GENESIS.to_owned();
        for sequence in 1..=PER_KEY {
            let mut metadata = json!({
                "actor": "admin:bench",
                "at": "2026-01-01T00:00:00.000Z",
                "request_id": format!("bench-{key}-{sequence}"),
            });
            previous = hasher.link(
                &previous,
                &LinkInput {
                    aggregate_id: &id,
                    sequence,
                    event_type: "OriginsChanged",
                    event_version: "1.0",
                    payload: &payload,
                    metadata: &metadata,
                },
            );
            metadata["chain"] = json!(previous);
            rows.push((id.clone(), sequence, metadata.to_string()));
            if rows.len() == 500 {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                     event_version, payload, metadata) ",
                );
                insert.push_values(rows.drain(..), |mut row, (id, sequence, metadata)| {
                    row.push_bind("ClientKey")
                        .push_bind(id)
                        .push_bind(sequence as i64)
                        .push_bind("OriginsChanged")
                        .push_bind("1.0")
                        .push_bind(payload_text.clone())
                        .push_bind(metadata);
                });
                insert.build().execute(&mut *tx).await.expect("insert");
            }
        }
    }
    tx.commit().await.expect("commit");
    pool.close().await;
    let seeded = seeding.elapsed();

    let opened = Store::open(None, &settings.data_dir).await.expect("open");
    let keys = widget_auth::tokens::SigningKeys::from_pem(
        &widget_auth::tokens::SigningKeys::generate_pem().expect("pem"),
    )
    .expect("key");
    let started = Instant::now();
    let taken = audit::checkpoint(&opened, &keys, chrono::Utc::now())
        .await
        .expect("checkpoint");
    let checkpoint_time = started.elapsed();
    assert_eq!((taken.keys, taken.events), (KEYS, KEYS * PER_KEY));
    let size = serde_json::to_vec(&taken).expect("json").len();

    let started = Instant::now();
    let report = audit::verify_checkpoint(&opened, &keys, taken)
        .await
        .expect("verify");
    let verify_time = started.elapsed();
    assert!(report.intact(), "{:?}", report.problems.first());

    let started = Instant::now();
    let plain = audit::verify(&opened, |_| {}).await.expect("verify");
    let plain_time = started.elapsed();
    assert!(plain.intact());
    opened.close().await;

    let rate = |d: std::time::Duration| (KEYS * PER_KEY) as f64 / d.as_secs_f64();
    let report = format!(
        "seeded {KEYS} keys / {} events in {seeded:.2?}\n\
         checkpoint: {checkpoint_time:.2?} = {:.0} events/s, {:.1} MB of JSON\n\
         verify --checkpoint: {verify_time:.2?} = {:.0} events/s\n\
         plain verify: {plain_time:.2?} = {:.0} events/s",
        KEYS * PER_KEY,
        rate(checkpoint_time),
        size as f64 / 1e6,
        rate(verify_time),
        rate(plain_time),
    );
    println!("{report}");
    store.cleanup().await;
}
