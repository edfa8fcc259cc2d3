//! The internal admin API: commands, validation, concurrency, idempotency, history.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{status_json, StoreKind, TestApp};

crate::on_both_stores!(
    creating_a_key_returns_its_keys_once_and_serves_a_neutral_default,
    the_secret_key_is_never_stored_or_shown_again,
    invalid_origins_are_refused_naming_the_entry,
    invalid_configs_are_refused_naming_the_field,
    token_policies_outside_their_bounds_are_refused,
    malformed_command_bodies_get_a_sentence,
    unknown_keys_are_404_everywhere,
    the_admin_api_needs_the_admin_token,
    a_stale_expected_version_is_a_409,
    a_retried_command_with_an_idempotency_key_is_answered_once,
    an_idempotency_key_reused_for_another_body_is_refused,
    concurrent_commands_on_one_key_keep_sequences_contiguous,
    concurrent_commands_with_the_same_expected_version_have_one_winner,
    sixty_four_concurrent_commands_on_distinct_keys_each_commit_once,
    concurrent_creations_under_one_idempotency_key_create_one_key,
    a_restart_keeps_keys_configs_and_idempotency_records,
    rotating_keys_returns_the_new_key_and_keeps_the_old_in_grace,
    every_command_records_its_event_with_metadata,
    history_pages_and_point_in_time_state_replay_the_events,
    client_keys_are_listed_in_pages,
    no_op_commands_record_nothing,
    metrics_count_keys_tokens_and_responses,
);

async fn creating_a_key_returns_its_keys_once_and_serves_a_neutral_default(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = app
        .create_key(json!({"name": "Acme Support", "origins": ["https://Acme.test:443/", "http://localhost:*"]}))
        .await;
    let id = created["id"].as_str().expect("id");
    assert!(id.starts_with("ck_"));
    assert!(domain::PublicKey::parse(created["public_key"].as_str().expect("pk")).is_ok());
    assert!(domain::SecretKey::parse(created["secret_key"].as_str().expect("sk")).is_ok());
    assert_eq!(created["version"], 1);

    let key = app.key(id).await;
    assert_eq!(
        key["origins"],
        json!(["https://acme.test", "http://localhost:*"])
    );
    assert_eq!(key["config"]["agent"]["display_name"], Value::Null);
    assert_eq!(
        key["token_policy"],
        json!({
            "visitor_token_ttl_seconds": 60, "session_ttl_seconds": 900,
            "refresh_ttl_seconds": 604800, "refresh_absolute_ttl_seconds": 2592000,
            "guests_allowed": true,
            "limits": {"guest_per_ip_per_minute": 30, "guest_per_key_per_minute": 6000, "user_token_per_key_per_minute": 6000}
        })
    );
    assert_eq!(key["status"], "active");
    assert_eq!(key["version"], 1);
    app.finish().await;
}

async fn the_secret_key_is_never_stored_or_shown_again(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = app.create_default_key().await;
    let id = created["id"].as_str().expect("id");
    let secret = created["secret_key"].as_str().expect("sk").to_owned();
    let rotated: Value = app
        .command(
            id,
            json!({"type": "rotate_secret_key", "grace_seconds": 60}),
        )
        .await
        .json()
        .await
        .expect("json");
    let new_secret = rotated["secret_key"].as_str().expect("new sk").to_owned();

    let shown = [
        app.admin_get(&format!("/internal/v1/client-keys/{id}"))
            .await
            .text()
            .await
            .expect("text"),
        app.admin_get(&format!("/internal/v1/client-keys/{id}/events"))
            .await
            .text()
            .await
            .expect("text"),
        app.admin_get("/internal/v1/client-keys")
            .await
            .text()
            .await
            .expect("text"),
        app.admin_get(&format!(
            "/internal/v1/client-keys/{id}/state?at_sequence=2"
        ))
        .await
        .text()
        .await
        .expect("text"),
    ];
    let stored = app
        .store
        .raw_rows("SELECT CAST(payload AS TEXT) || CAST(metadata AS TEXT) FROM events")
        .await;
    for text in shown.iter().chain(stored.iter()) {
        assert!(
            !text.contains(&secret) && !text.contains(&new_secret),
            "a secret key leaked: {text}"
        );
    }
    assert_eq!(
        app.key(id).await["secret_key_last_four"],
        new_secret[new_secret.len() - 4..]
    );
    app.finish().await;
}

async fn invalid_origins_are_refused_naming_the_entry(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    for bad in [
        "ftp://acme.test",
        "https://acme.test/path",
        "https://user@acme.test",
        "https://acme.test?q=1",
        "null",
        "https://*.com",
    ] {
        let response = app
            .admin_post(
                "/internal/v1/client-keys",
                &json!({"name": "x", "origins": ["https://ok.test", bad]}),
            )
            .await;
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        let message = body["message"].as_str().expect("message");
        assert!(
            message.contains(bad) && message.contains("origins[1]"),
            "{bad}: {message}"
        );
    }
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, body) = status_json(
        app.command(
            &id,
            json!({"type": "change_origins", "origins": ["https://a.test#x"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"]
        .as_str()
        .expect("message")
        .contains("https://a.test#x"));
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(
        app.events(&id).await.len(),
        1,
        "a refused command records nothing"
    );
    app.finish().await;
}

async fn invalid_configs_are_refused_naming_the_field(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let cases = [
        (
            json!({"branding": {"primary_color": "red"}}),
            "config.branding.primary_color",
        ),
        (
            json!({"agent": {"avatar_url": "http://cdn.acme.test/a.png"}}),
            "config.agent.avatar_url",
        ),
        (
            json!({"copy": {"title": "x".repeat(501)}}),
            "config.copy.title",
        ),
        (json!({"copy": {"titel": "Hi"}}), "titel"),
        (json!({"theme": "dark"}), "theme"),
    ];
    for (config, named) in cases {
        let (status, body) = status_json(
            app.command(&id, json!({"type": "update_config", "config": config}))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{config}");
        assert!(
            body["message"].as_str().expect("message").contains(named),
            "{named}: {body}"
        );
    }
    let ok = json!({"agent": {"display_name": "Ada", "avatar_url": "https://cdn.acme.test/ada.png"},
                    "branding": {"primary_color": "#00aa00"}, "locale": "pt-BR"});
    let (status, body) = status_json(
        app.command(&id, json!({"type": "update_config", "config": ok}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["version"].clone()),
        (StatusCode::OK, json!(2))
    );
    let key = app.key(&id).await;
    assert_eq!(key["config"]["branding"]["primary_color"], "#00AA00");
    assert_eq!(key["config"]["agent"]["display_name"], "Ada");
    app.finish().await;
}

async fn token_policies_outside_their_bounds_are_refused(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (policy, field) in [
        (
            json!({"visitor_token_ttl_seconds": 9}),
            "visitor_token_ttl_seconds",
        ),
        (json!({"session_ttl_seconds": 86401}), "session_ttl_seconds"),
        (json!({"refresh_ttl_seconds": 3599}), "refresh_ttl_seconds"),
        (
            json!({"refresh_ttl_seconds": 7776001}),
            "refresh_ttl_seconds",
        ),
        (json!({"session_ttl_seconds": -5}), "session_ttl_seconds"),
        (
            json!({"refresh_absolute_ttl_seconds": 3599}),
            "refresh_absolute_ttl_seconds must be between 604800 and 31536000 seconds",
        ),
        (
            json!({"refresh_ttl_seconds": 86400, "refresh_absolute_ttl_seconds": 86399}),
            "refresh_absolute_ttl_seconds must be between 86400 and 31536000 seconds",
        ),
        (
            json!({"refresh_absolute_ttl_seconds": 31536001}),
            "refresh_absolute_ttl_seconds",
        ),
    ] {
        let (status, body) = status_json(
            app.command(&id, json!({"type": "set_token_policy", "policy": policy}))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{policy}");
        assert!(
            body["message"].as_str().expect("message").contains(field),
            "{body}"
        );
    }
    let policy = json!({"visitor_token_ttl_seconds": 10, "session_ttl_seconds": 60, "refresh_ttl_seconds": 3600, "guests_allowed": false});
    let (status, _) = status_json(
        app.command(
            &id,
            json!({"type": "set_token_policy", "policy": policy.clone()}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The effective policy: the absolute refresh lifetime and the limits it left out are
    // filled in with their defaults.
    let mut effective = policy.clone();
    effective["refresh_absolute_ttl_seconds"] = json!(2_592_000);
    effective["limits"] = json!({"guest_per_ip_per_minute": 30, "guest_per_key_per_minute": 6000, "user_token_per_key_per_minute": 6000});
    assert_eq!(app.key(&id).await["token_policy"], effective);
    let policy = json!({"refresh_ttl_seconds": 3600, "refresh_absolute_ttl_seconds": 3600});
    let (status, _) = status_json(
        app.command(&id, json!({"type": "set_token_policy", "policy": policy}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.key(&id).await["token_policy"]["refresh_absolute_ttl_seconds"],
        3600
    );
    let created = app
        .admin_post(
            "/internal/v1/client-keys",
            &json!({"name": "x", "origins": [], "token_policy": {"session_ttl_seconds": 30}}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::BAD_REQUEST);
    app.finish().await;
}

async fn malformed_command_bodies_get_a_sentence(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = app.internal(&format!("/internal/v1/client-keys/{id}/commands"));
    let cases: [(&str, &str); 8] = [
        ("not json", "invalid JSON body"),
        ("[1, 2]", "expected a JSON object"),
        (r#"{"grace_seconds": 5}"#, "missing field `type`"),
        (r#"{"type": "explode"}"#, "unknown command type `explode`"),
        (
            r#"{"type": "rotate_secret_key"}"#,
            "missing field `grace_seconds`",
        ),
        (
            r#"{"type": "rotate_secret_key", "grace_seconds": 604801}"#,
            "grace_seconds must be between 0 and 604800",
        ),
        (
            r#"{"type": "disable", "force": true}"#,
            "unknown field `force`",
        ),
        (
            r#"{"type": "disable", "expected_version": "one"}"#,
            "expected_version",
        ),
    ];
    for (body, says) in cases {
        let response = app
            .http
            .post(&url)
            .bearer_auth(&app.admin_token)
            .body(body)
            .send()
            .await
            .expect("sent");
        let (status, json) = status_json(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            json["message"].as_str().expect("message").contains(says),
            "{body}: {json}"
        );
    }
    let huge =
        json!({"type": "update_config", "config": {"copy": {"title": "x".repeat(70 * 1024)}}});
    assert_eq!(
        app.command(&id, huge).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(app.events(&id).await.len(), 1);
    app.finish().await;
}

async fn unknown_keys_are_404_everywhere(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    for id in ["ck_00000000000000000000", "not-an-id"] {
        let (status, body) = status_json(app.command(id, json!({"type": "disable"})).await).await;
        assert_eq!(
            (status, body["error"].clone()),
            (StatusCode::NOT_FOUND, json!("not_found")),
            "{id}"
        );
        for path in ["", "/events", "/state?at_sequence=1"] {
            let response = app
                .admin_get(&format!("/internal/v1/client-keys/{id}{path}"))
                .await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{id}{path}");
        }
    }
    app.finish().await;
}

async fn the_admin_api_needs_the_admin_token(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let url = app.internal("/internal/v1/client-keys");
    let none = app.http.get(&url).send().await.expect("sent");
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = app
        .http
        .post(&url)
        .bearer_auth("wa_admin_guess")
        .json(&json!({"name": "x", "origins": []}))
        .send()
        .await
        .expect("sent");
    let (status, body) = status_json(wrong).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    let basic = app
        .http
        .get(&url)
        .basic_auth("admin", Some(&app.admin_token))
        .send()
        .await
        .expect("sent");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            app.http
                .get(app.internal(probe))
                .send()
                .await
                .expect("sent")
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            app.http
                .get(app.public(probe))
                .send()
                .await
                .expect("sent")
                .status(),
            StatusCode::OK
        );
    }
    assert!(app
        .admin_get("/internal/v1/client-keys")
        .await
        .json::<Value>()
        .await
        .expect("json")["client_keys"]
        .as_array()
        .expect("list")
        .is_empty());
    app.finish().await;
}

async fn a_stale_expected_version_is_a_409(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let ok = app
        .command(
            &id,
            json!({"type": "change_origins", "origins": ["https://b.test"], "expected_version": 1}),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let stale = app
        .command(
            &id,
            json!({"type": "change_origins", "origins": ["https://c.test"], "expected_version": 1}),
        )
        .await;
    let (status, body) = status_json(stale).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::CONFLICT, json!("version_conflict"))
    );
    assert_eq!(app.key(&id).await["origins"], json!(["https://b.test"]));
    app.finish().await;
}

async fn a_retried_command_with_an_idempotency_key_is_answered_once(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let path = "/internal/v1/client-keys";
    let body = json!({"name": "Acme", "origins": ["https://acme.test"]});
    let first = app
        .admin_post_with(path, &body, &[("idempotency-key", "create-acme-1")])
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let retry = app
        .admin_post_with(path, &body, &[("idempotency-key", "create-acme-1")])
        .await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(
        (&retry["id"], &retry["public_key"], &retry["version"]),
        (&first["id"], &first["public_key"], &first["version"])
    );
    assert!(
        retry.get("secret_key").is_none(),
        "the secret is shown once only"
    );
    let listed = app
        .admin_get(path)
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(listed["client_keys"].as_array().expect("list").len(), 1);

    let id = first["id"].as_str().expect("id");
    let command_path = format!("/internal/v1/client-keys/{id}/commands");
    let rotate = json!({"type": "rotate_public_key", "grace_seconds": 0});
    let a: Value = app
        .admin_post_with(&command_path, &rotate, &[("idempotency-key", "rot-1")])
        .await
        .json()
        .await
        .expect("json");
    let b: Value = app
        .admin_post_with(&command_path, &rotate, &[("idempotency-key", "rot-1")])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (&a["version"], &a["public_key"]),
        (&b["version"], &b["public_key"])
    );
    assert_eq!(app.events(id).await.len(), 2);
    app.finish().await;
}

async fn an_idempotency_key_reused_for_another_body_is_refused(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/internal/v1/client-keys/{id}/commands");
    let first = app
        .admin_post_with(
            &path,
            &json!({"type": "change_origins", "origins": ["https://b.test"]}),
            &[("idempotency-key", "k")],
        )
        .await;
    assert_eq!(first.status(), StatusCode::OK);
    let other = app
        .admin_post_with(
            &path,
            &json!({"type": "change_origins", "origins": ["https://evil.test"]}),
            &[("idempotency-key", "k")],
        )
        .await;
    let (status, body) = status_json(other).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::CONFLICT, json!("idempotency_key_reused"))
    );
    assert_eq!(app.key(&id).await["origins"], json!(["https://b.test"]));
    app.finish().await;
}

async fn concurrent_commands_on_one_key_keep_sequences_contiguous(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let requests = (0..16).map(|i| {
        let body = json!({"type": "change_origins", "origins": [format!("https://site{i}.test")]});
        app.command(&id, body)
    });
    let responses = futures::future::join_all(requests).await;
    let mut versions: Vec<u64> = Vec::new();
    for response in responses {
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        versions.push(body["version"].as_u64().expect("version"));
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (2..=17).collect::<Vec<u64>>(),
        "every command applied exactly once"
    );
    let sequences: Vec<u64> = app
        .events(&id)
        .await
        .iter()
        .map(|e| e["sequence"].as_u64().expect("seq"))
        .collect();
    assert_eq!(sequences, (1..=17).collect::<Vec<u64>>());
    assert_eq!(app.key(&id).await["version"], 17);
    app.finish().await;
}

async fn concurrent_commands_with_the_same_expected_version_have_one_winner(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let requests = (0..8).map(|i| {
        app.command(&id, json!({"type": "change_origins", "origins": [format!("https://s{i}.test")], "expected_version": 1}))
    });
    let statuses: Vec<StatusCode> = futures::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(app.events(&id).await.len(), 2);
    app.finish().await;
}

/// 64 commands at once on 64 keys: the group commit writes them together (in one group
/// or a few) and each is answered with its own key's new version.
async fn sixty_four_concurrent_commands_on_distinct_keys_each_commit_once(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let mut ids = Vec::new();
    for _ in 0..64 {
        let created = app.create_default_key().await;
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    let requests = ids.iter().enumerate().map(|(i, id)| {
        let body = json!({"type": "change_origins", "origins": [format!("https://site{i}.test")]});
        app.command(id, body)
    });
    let responses = futures::future::join_all(requests).await;

    for (response, id) in responses.into_iter().zip(&ids) {
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            (body["id"].as_str(), &body["version"]),
            (Some(id.as_str()), &json!(2))
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let events = app.events(id).await;
        let sequences: Vec<&Value> = events.iter().map(|e| &e["sequence"]).collect();
        assert_eq!(sequences, [&json!(1), &json!(2)], "{id}");
        assert_eq!(
            events[1]["payload"]["origins"],
            json!([format!("https://site{i}.test")])
        );
    }
    let stored = app
        .store
        .raw_rows("SELECT aggregate_id FROM events WHERE sequence = 2")
        .await;
    assert_eq!(
        stored.len(),
        64,
        "every command's event stored exactly once"
    );
    app.finish().await;
}

/// Retries of one creation racing each other: their events are on distinct new keys, so
/// they can share a group, where the Idempotency-Key index keeps only the first. Every
/// retry is answered with the key that one created.
async fn concurrent_creations_under_one_idempotency_key_create_one_key(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let path = "/internal/v1/client-keys";
    let body = json!({"name": "Acme", "origins": ["https://acme.test"]});
    let requests =
        (0..8).map(|_| app.admin_post_with(path, &body, &[("idempotency-key", "create-race")]));
    let responses = futures::future::join_all(requests).await;

    let mut answers = Vec::new();
    for response in responses {
        let replayed = response.headers().contains_key("idempotent-replayed");
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        answers.push((replayed, body));
    }
    let first: Vec<&Value> = answers.iter().filter(|(r, _)| !r).map(|(_, b)| b).collect();
    assert_eq!(first.len(), 1, "one creation answered as new: {answers:?}");
    assert!(first[0]["secret_key"].is_string());
    for (replayed, answer) in &answers {
        assert_eq!(answer["id"], first[0]["id"], "{answers:?}");
        if *replayed {
            assert!(
                answer.get("secret_key").is_none(),
                "the secret is shown once"
            );
        }
    }
    let created = app
        .store
        .raw_rows("SELECT aggregate_id FROM events WHERE event_type = 'ClientKeyCreated'")
        .await;
    assert_eq!(created, [first[0]["id"].as_str().expect("id")]);
    app.finish().await;
}

async fn a_restart_keeps_keys_configs_and_idempotency_records(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/internal/v1/client-keys/{id}/commands");
    let body = json!({"type": "update_config", "config": {"copy": {"title": "Talk to Acme"}}});
    let first: Value = app
        .admin_post_with(&path, &body, &[("idempotency-key", "cfg-1")])
        .await
        .json()
        .await
        .expect("json");
    let before = app.key(&id).await;
    let token = app.admin_token.clone();

    let app = app.restart().await;
    assert_eq!(
        app.admin_token, token,
        "the generated admin token is kept in the data dir"
    );
    assert_eq!(app.key(&id).await, before);
    let retry = app
        .admin_post_with(&path, &body, &[("idempotency-key", "cfg-1")])
        .await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = retry.json().await.expect("json");
    assert_eq!(retry["version"], first["version"]);
    assert_eq!(app.events(&id).await.len(), 2);
    app.finish().await;
}

async fn rotating_keys_returns_the_new_key_and_keeps_the_old_in_grace(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let created = app.create_default_key().await;
    let id = created["id"].as_str().expect("id");
    let (status, rotated) = status_json(
        app.command(
            id,
            json!({"type": "rotate_public_key", "grace_seconds": 3600}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["public_key"], created["public_key"]);
    assert!(rotated["previous_valid_until"].is_string());
    let key = app.key(id).await;
    assert_eq!(key["public_key"], rotated["public_key"]);
    assert_eq!(
        key["previous_public_keys"][0]["public_key"],
        created["public_key"]
    );

    let (_, secret) = status_json(
        app.command(
            id,
            json!({"type": "rotate_secret_key", "grace_seconds": 0, "reason": "routine"}),
        )
        .await,
    )
    .await;
    assert!(domain::SecretKey::parse(secret["secret_key"].as_str().expect("sk")).is_ok());
    let (status, expired) = status_json(
        app.command(id, json!({"type": "expire_previous_keys"}))
            .await,
    )
    .await;
    assert_eq!(
        (status, expired["event"].clone()),
        (StatusCode::OK, json!("PreviousKeysExpired"))
    );
    let key = app.key(id).await;
    assert_eq!(key["previous_public_keys"], json!([]));
    assert_eq!(key["previous_secret_keys"], json!([]));
    app.finish().await;
}

async fn every_command_records_its_event_with_metadata(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let commands = [
        (
            json!({"type": "change_origins", "origins": ["https://*.acme.test"]}),
            "OriginsChanged",
        ),
        (
            json!({"type": "update_config", "config": {}}),
            "ConfigUpdated",
        ),
        (
            json!({"type": "set_token_policy", "policy": {"guests_allowed": false}}),
            "TokenPolicySet",
        ),
        (
            json!({"type": "rotate_secret_key", "grace_seconds": 60}),
            "SecretKeyRotated",
        ),
        (
            json!({"type": "rotate_public_key", "grace_seconds": 60}),
            "PublicKeyRotated",
        ),
        (
            json!({"type": "expire_previous_keys"}),
            "PreviousKeysExpired",
        ),
        (
            json!({"type": "revoke_sessions", "user_id": "user-7"}),
            "SessionsRevoked",
        ),
        (json!({"type": "revoke_sessions"}), "SessionsRevoked"),
        (json!({"type": "disable"}), "ClientKeyDisabled"),
        (json!({"type": "enable"}), "ClientKeyEnabled"),
    ];
    for (i, (mut command, event)) in commands.into_iter().enumerate() {
        command["reason"] = json!(format!("step {i}"));
        let path = format!("/internal/v1/client-keys/{id}/commands");
        let response = app
            .admin_post_with(&path, &command, &[("x-request-id", &format!("req-{i}"))])
            .await;
        let (status, body) = status_json(response).await;
        assert_eq!(
            (status, body["event"].clone(), body["version"].clone()),
            (StatusCode::OK, json!(event), json!(i + 2))
        );
    }
    let events = app.events(&id).await;
    assert_eq!(events.len(), 11);
    let actor = events[0]["metadata"]["actor"].as_str().expect("actor");
    assert!(actor.starts_with("admin:"), "{actor}");
    for (i, event) in events.iter().skip(1).enumerate() {
        assert_eq!(event["metadata"]["reason"], json!(format!("step {i}")));
        assert_eq!(event["metadata"]["request_id"], json!(format!("req-{i}")));
        assert_eq!(event["metadata"]["actor"], actor);
        assert!(event["metadata"]["at"].is_string());
    }
    assert_eq!(events[7]["payload"]["user_id"], "user-7");
    let key = app.key(&id).await;
    assert_eq!(key["status"], "active");
    assert!(key["sessions_revoked_at_or_before"].is_i64());
    assert!(key["user_sessions_revoked_at_or_before"]["user-7"].is_i64());
    app.finish().await;
}

async fn history_pages_and_point_in_time_state_replay_the_events(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for i in 0..4 {
        app.command(
            &id,
            json!({"type": "change_origins", "origins": [format!("https://v{i}.test")]}),
        )
        .await;
    }
    let page: Value = app
        .admin_get(&format!(
            "/internal/v1/client-keys/{id}/events?after=1&limit=2"
        ))
        .await
        .json()
        .await
        .expect("json");
    let sequences: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["sequence"].as_u64().expect("seq"))
        .collect();
    assert_eq!(
        (sequences, page["next_after"].clone()),
        (vec![2, 3], json!(3))
    );
    let last: Value = app
        .admin_get(&format!(
            "/internal/v1/client-keys/{id}/events?after=3&limit=2"
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(last["events"].as_array().expect("events").len(), 2);
    assert_eq!(last["next_after"], Value::Null);
    assert_eq!(last["events"][0]["type"], "OriginsChanged");
    assert_eq!(
        last["events"][0]["payload"]["origins"],
        json!(["https://v2.test"])
    );

    let at_3: Value = app
        .admin_get(&format!(
            "/internal/v1/client-keys/{id}/state?at_sequence=3"
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (at_3["version"].clone(), at_3["origins"].clone()),
        (json!(3), json!(["https://v1.test"]))
    );
    let at_1: Value = app
        .admin_get(&format!(
            "/internal/v1/client-keys/{id}/state?at_sequence=1"
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(at_1["origins"], json!(["https://acme.test"]));
    let now = app
        .admin_get(&format!(
            "/internal/v1/client-keys/{id}/state?at=2999-01-01T00:00:00Z"
        ))
        .await
        .json::<Value>()
        .await
        .expect("json");
    assert_eq!(now, app.key(&id).await);
    let before = app
        .admin_get(&format!(
            "/internal/v1/client-keys/{id}/state?at=2000-01-01T00:00:00Z"
        ))
        .await;
    assert_eq!(before.status(), StatusCode::NOT_FOUND);
    for bad in [
        "",
        "?at_sequence=x",
        "?at=yesterday",
        "?at_sequence=1&at=2026-01-01T00:00:00Z",
    ] {
        assert_eq!(
            app.admin_get(&format!("/internal/v1/client-keys/{id}/state{bad}"))
                .await
                .status(),
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    assert_eq!(
        app.admin_get(&format!("/internal/v1/client-keys/{id}/events?limit=1001"))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    app.finish().await;
}

async fn client_keys_are_listed_in_pages(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let created = app
            .create_key(json!({"name": format!("k{i}"), "origins": []}))
            .await;
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    ids.sort();
    let first: Value = app
        .admin_get("/internal/v1/client-keys?limit=2")
        .await
        .json()
        .await
        .expect("json");
    let page: Vec<&str> = first["client_keys"]
        .as_array()
        .expect("list")
        .iter()
        .map(|k| k["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        page,
        ids[..2].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(first["next_after"], json!(ids[1]));
    let rest: Value = app
        .admin_get(&format!(
            "/internal/v1/client-keys?after={}&limit=10",
            ids[1]
        ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rest["client_keys"].as_array().expect("list").len(), 3);
    assert_eq!(rest["next_after"], Value::Null);
    assert!(rest["client_keys"][0].get("secret_key").is_none());
    app.finish().await;
}

async fn no_op_commands_record_nothing(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for command in [
        json!({"type": "enable"}),
        json!({"type": "expire_previous_keys"}),
    ] {
        let (status, body) = status_json(app.command(&id, command).await).await;
        assert_eq!(
            (status, body["version"].clone(), body["event"].clone()),
            (StatusCode::OK, json!(1), Value::Null)
        );
    }
    assert_eq!(app.events(&id).await.len(), 1);
    app.finish().await;
}

async fn metrics_count_keys_tokens_and_responses(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = app.create_default_key().await;
    let guest = app
        .guest(key["public_key"].as_str().expect("pk"), "https://acme.test")
        .await;
    assert_eq!(guest.status(), StatusCode::OK);
    let refused = app
        .config(
            key["public_key"].as_str().expect("pk"),
            Some("https://evil.test"),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let response = app
        .http
        .get(app.internal("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK, "no admin token needed");
    let text = response.text().await.expect("text");
    for line in [
        "widget_auth_ready 1",
        "widget_auth_client_keys 1",
        "widget_auth_tokens_minted_total{kind=\"session\"} 1",
        "widget_auth_tokens_minted_total{kind=\"refresh\"} 1",
        "widget_auth_commands_committed_total 1",
        "widget_auth_http_responses_total{listener=\"public\",class=\"2xx\"} 1",
        "widget_auth_http_responses_total{listener=\"public\",class=\"4xx\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    app.finish().await;
}
