//! The operators' CLI, `widget-auth keys …`: the built binary against a running server's
//! internal listener, with the admin token found as an operator's shell finds it (the
//! data dir's `admin-token` file, or `WIDGET_AUTH_ADMIN_TOKEN`). Each command's effect is
//! checked on the server, not only in what the CLI prints.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{StoreKind, TestApp};

crate::on_both_stores!(
    create_prints_the_secret_key_once_with_a_warning,
    list_show_and_every_command_change_the_key_on_the_server,
    history_pages_through_every_event_in_order,
    refusals_exit_non_zero_with_the_servers_message,
);

/// What one run of the binary gave back.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "no JSON on stdout (exit {}): {} / {}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "exit {}: {} / {}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `widget-auth keys --url <internal> <args>` with only the data dir in its
/// environment (plus `extra_env`), as an operator on the node's machine would.
async fn keys_with(app: &TestApp, extra_env: &[(&str, &str)], args: &[&str]) -> Run {
    let url = app.internal("");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_widget-auth"));
    command
        .arg("keys")
        .arg("--url")
        .arg(&url)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WIDGET_AUTH_DATA_DIR", &app.store.data_dir);
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let output = command.output().await.expect("the binary runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn keys(app: &TestApp, args: &[&str]) -> Run {
    keys_with(app, &[], args).await
}

/// Creates a key through the CLI (`--json`) and returns its answer.
async fn create(app: &TestApp) -> Value {
    keys(
        app,
        &[
            "create",
            "--json",
            "--name",
            "Acme",
            "--origin",
            "https://acme.test",
        ],
    )
    .await
    .ok()
    .json()
}

async fn create_prints_the_secret_key_once_with_a_warning(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let run = keys(
        &app,
        &[
            "create",
            "--name",
            "Acme",
            "--origin",
            "https://acme.test",
            "--origin",
            "https://shop.acme.test",
            "--reason",
            "onboarding",
            "--idempotency-key",
            "create-acme-1",
        ],
    )
    .await
    .ok();
    let secret = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret key: "))
        .expect("the text names the secret key")
        .to_owned();
    assert!(secret.starts_with("sk_live_"), "{}", run.stdout);
    assert!(
        run.stderr.contains("will not be shown again"),
        "warning missing: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(&secret),
        "the warning repeats the secret"
    );
    let id = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("created client key "))
        .expect("the id")
        .to_owned();

    // The secret works: the key's backend can mint with it.
    let key = app.key(&id).await;
    assert_eq!(
        key["origins"],
        json!(["https://acme.test", "https://shop.acme.test"])
    );
    let response = app
        .user_token(
            &secret,
            &json!({"client_key": key["public_key"], "user_id": "u1"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // The reason reached the event's metadata.
    assert_eq!(app.events(&id).await[0]["metadata"]["reason"], "onboarding");

    // Retrying with the same Idempotency-Key answers the same key, without its secret.
    let retry = keys(
        &app,
        &[
            "create",
            "--json",
            "--name",
            "Acme",
            "--origin",
            "https://acme.test",
            "--origin",
            "https://shop.acme.test",
            "--reason",
            "onboarding",
            "--idempotency-key",
            "create-acme-1",
        ],
    )
    .await
    .ok();
    let body = retry.json();
    assert_eq!(body["id"], id.as_str());
    assert!(
        body.get("secret_key").is_none(),
        "secret shown twice: {body}"
    );
    assert!(!retry.stdout.contains(&secret) && !retry.stderr.contains(&secret));

    // `show` never includes it either.
    let shown = keys(&app, &["show", &id]).await.ok();
    assert!(!shown.stdout.contains(&secret));
    assert!(shown
        .stdout
        .contains(&format!("secret key:    …{}", &secret[secret.len() - 4..])));

    // Rotating prints the new secret once, with the warning; the JSON has it too.
    let rotated = keys(
        &app,
        &["rotate-secret", &id, "--grace-seconds", "0", "--json"],
    )
    .await
    .ok();
    let body = rotated.json();
    let new_secret = body["secret_key"].as_str().expect("the new secret");
    assert!(new_secret.starts_with("sk_live_") && new_secret != secret);
    assert_eq!(body["version"], 2);
    assert!(rotated.stderr.contains("will not be shown again"));
    let response = app
        .user_token(
            new_secret,
            &json!({"client_key": key["public_key"], "user_id": "u1"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .user_token(
            &secret,
            &json!({"client_key": key["public_key"], "user_id": "u1"}),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "grace 0 ends the old one"
    );
    app.finish().await;
}

async fn list_show_and_every_command_change_the_key_on_the_server(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = create(&app).await;
    let id = created["id"].as_str().expect("id");
    let second = create(&app).await;

    // list: both keys, in JSON and as text; paging with --limit.
    let listed = keys(&app, &["list", "--json"]).await.ok().json();
    let ids: Vec<&str> = listed["client_keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&id) && ids.contains(&second["id"].as_str().expect("id")));
    let page = keys(&app, &["list", "--json", "--limit", "1"])
        .await
        .ok()
        .json();
    assert_eq!(page["client_keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["next_after"], page["client_keys"][0]["id"]);
    let text = keys(&app, &["list", "--limit", "1"]).await.ok().stdout;
    assert!(text.contains("more: --after "), "{text}");
    let text = keys(&app, &["list"]).await.ok().stdout;
    assert!(text.contains(id) && text.contains("active"), "{text}");

    // show: the server's state, JSON and text.
    let shown = keys(&app, &["show", id, "--json"]).await.ok().json();
    assert_eq!(shown, app.key(id).await);
    let text = keys(&app, &["show", id]).await.ok().stdout;
    assert!(text.contains("origins:       https://acme.test"), "{text}");

    // origins, with a reason and the right expected version.
    let run = keys(
        &app,
        &[
            "origins",
            id,
            "https://a.test",
            "https://*.b.test",
            "--reason",
            "new shops",
            "--expected-version",
            "1",
        ],
    )
    .await
    .ok();
    assert!(
        run.stdout.contains("OriginsChanged, now at version 2"),
        "{}",
        run.stdout
    );
    assert_eq!(
        app.key(id).await["origins"],
        json!(["https://a.test", "https://*.b.test"])
    );
    assert_eq!(app.events(id).await[1]["metadata"]["reason"], "new shops");

    // config, inline JSON.
    let body = keys(
        &app,
        &[
            "config",
            id,
            r##"{"branding": {"primary_color": "#112233"}, "copy": {"title": "Hi"}}"##,
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(body["version"], 3);
    assert_eq!(
        app.key(id).await["config"]["branding"]["primary_color"],
        "#112233"
    );

    // policy, from a file.
    let file = app.store.data_dir.join("policy.json");
    std::fs::write(
        &file,
        r#"{"visitor_token_ttl_seconds": 120, "session_ttl_seconds": 600, "refresh_ttl_seconds": 7200, "guests_allowed": false}"#,
    )
    .expect("write policy");
    let at_file = format!("@{}", file.display());
    let body = keys(&app, &["policy", id, &at_file, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(body["event"], "TokenPolicySet");
    let policy = &app.key(id).await["token_policy"];
    assert_eq!(policy["visitor_token_ttl_seconds"], 120);
    assert_eq!(policy["guests_allowed"], false);

    // rotate-public: the new key is printed and the old one keeps working for the grace.
    let old_public = app.key(id).await["public_key"].clone();
    let run = keys(&app, &["rotate-public", id, "--grace-seconds", "3600"])
        .await
        .ok();
    let new_public = app.key(id).await["public_key"].clone();
    assert_ne!(new_public, old_public);
    assert!(run.stdout.contains(&format!(
        "new public key: {}",
        new_public.as_str().expect("pk")
    )));
    assert!(
        run.stdout.contains("previous key valid until: "),
        "{}",
        run.stdout
    );
    let config = app
        .config(old_public.as_str().expect("pk"), Some("https://a.test"))
        .await;
    assert_eq!(
        config.status(),
        StatusCode::OK,
        "the old key is in its grace period"
    );

    // expire-previous ends that grace now.
    let body = keys(&app, &["expire-previous", id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(body["event"], "PreviousKeysExpired");
    let config = app
        .config(old_public.as_str().expect("pk"), Some("https://a.test"))
        .await;
    assert_eq!(config.status(), StatusCode::FORBIDDEN);

    // revoke-sessions, for one user and for all.
    let body = keys(&app, &["revoke-sessions", id, "--user-id", "u1", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(body["event"], "SessionsRevoked");
    assert!(app.key(id).await["user_sessions_revoked_at_or_before"]["u1"].is_number());
    keys(&app, &["revoke-sessions", id]).await.ok();
    assert!(!app.key(id).await["sessions_revoked_at_or_before"].is_null());

    // disable and enable: the widget is refused, then served again.
    let run = keys(&app, &["disable", id, "--reason", "unpaid"])
        .await
        .ok();
    assert!(run.stdout.contains("ClientKeyDisabled"), "{}", run.stdout);
    assert_eq!(app.key(id).await["status"], "disabled");
    let config = app
        .config(new_public.as_str().expect("pk"), Some("https://a.test"))
        .await;
    assert_eq!(config.status(), StatusCode::FORBIDDEN);
    let body = keys(&app, &["enable", id, "--json"]).await.ok().json();
    assert_eq!(body["event"], "ClientKeyEnabled");
    let config = app
        .config(new_public.as_str().expect("pk"), Some("https://a.test"))
        .await;
    assert_eq!(config.status(), StatusCode::OK);

    // A command that changes nothing says so and leaves the version.
    let version = app.key(id).await["version"].clone();
    let run = keys(&app, &["enable", id]).await.ok();
    assert!(run.stdout.contains("nothing to change"), "{}", run.stdout);
    assert_eq!(app.key(id).await["version"], version);
    app.finish().await;
}

async fn history_pages_through_every_event_in_order(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = create(&app).await;
    let id = created["id"].as_str().expect("id");
    for n in 0..6 {
        let origin = format!("https://s{n}.acme.test");
        keys(
            &app,
            &["origins", id, &origin, "--reason", &format!("step {n}")],
        )
        .await
        .ok();
    }
    // Pages of 2: four requests for seven events, all of them, in order.
    let history = keys(&app, &["history", id, "--page-size", "2", "--json"])
        .await
        .ok()
        .json();
    let sequences: Vec<u64> = history["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["sequence"].as_u64())
        .collect();
    assert_eq!(sequences, (1..=7).collect::<Vec<u64>>());
    assert_eq!(history["events"][0]["type"], "ClientKeyCreated");
    assert_eq!(history["events"][6]["metadata"]["reason"], "step 5");
    assert!(
        !history.to_string().contains("sk_live_"),
        "a secret in the history"
    );

    // --after skips what was seen; the text names type, actor and reason.
    let later = keys(&app, &["history", id, "--after", "5", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(later["events"].as_array().map(Vec::len), Some(2));
    let text = keys(&app, &["history", id]).await.ok().stdout;
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(text
        .lines()
        .last()
        .is_some_and(|l| l.contains("OriginsChanged")
            && l.contains("reason: step 5")
            && l.contains(" by ")));
    app.finish().await;
}

async fn refusals_exit_non_zero_with_the_servers_message(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = create(&app).await;
    let id = created["id"].as_str().expect("id");

    // Unknown key.
    let run = keys(&app, &["show", "ck_doesnotexist000000"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("client key not found"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    let run = keys(&app, &["disable", "ck_doesnotexist000000"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("client key not found"),
        "{}",
        run.stderr
    );

    // Invalid origin: the server's 400 names the entry; nothing changed.
    let run = keys(&app, &["origins", id, "https://acme.test/path"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("https://acme.test/path"),
        "{}",
        run.stderr
    );
    assert_eq!(app.key(id).await["version"], 1);
    let run = keys(
        &app,
        &["create", "--name", "Bad", "--origin", "ftp://acme.test"],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("ftp://acme.test"), "{}", run.stderr);

    // Stale expected version: 409 with the server's sentence.
    let run = keys(&app, &["disable", id, "--expected-version", "7"]).await;
    assert_eq!(run.code, 1);
    let (status, body) = crate::helpers::status_json(
        app.admin_post(
            &format!("/internal/v1/client-keys/{id}/commands"),
            &json!({"type": "disable", "expected_version": 7}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let message = body["message"].as_str().expect("message");
    assert!(run.stderr.contains(message), "{} vs {message}", run.stderr);
    assert_eq!(app.key(id).await["status"], "active");

    // A config the server refuses, and JSON the CLI cannot read.
    let run = keys(
        &app,
        &["config", id, r#"{"branding": {"primary_color": "red"}}"#],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("primary_color"), "{}", run.stderr);
    let run = keys(&app, &["config", id, "{not json"]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not JSON"), "{}", run.stderr);

    // Wrong token: the server's 401 sentence, and the token is never echoed.
    let wrong = "wrong-token-wrong-token-wrong-token-0123";
    let run = keys_with(&app, &[("WIDGET_AUTH_ADMIN_TOKEN", wrong)], &["list"]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("missing or invalid admin token"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(wrong) && !run.stdout.contains(wrong));
    // The right token from the environment works without the data dir's file.
    let run = keys_with(
        &app,
        &[
            ("WIDGET_AUTH_ADMIN_TOKEN", app.admin_token.as_str()),
            ("WIDGET_AUTH_DATA_DIR", "/nonexistent-widget-auth"),
        ],
        &["list", "--json"],
    )
    .await
    .ok();
    assert_eq!(run.json()["client_keys"].as_array().map(Vec::len), Some(1));
    assert!(!run.stderr.contains(&app.admin_token));

    // No token anywhere: a sentence saying where it looked.
    let run = keys_with(
        &app,
        &[("WIDGET_AUTH_DATA_DIR", "/nonexistent-widget-auth")],
        &["list"],
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("WIDGET_AUTH_ADMIN_TOKEN"),
        "{}",
        run.stderr
    );

    // Nothing listening: a clear sentence, not a stack of transport errors.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_widget-auth"));
    let output = command
        .args(["keys", "list", "--url", &format!("http://{closed}")])
        .env_clear()
        .env("WIDGET_AUTH_ADMIN_TOKEN", app.admin_token.as_str())
        .output()
        .await
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the widget-auth node at"),
        "{stderr}"
    );
    assert!(!stderr.contains(&app.admin_token));
    app.finish().await;
}
