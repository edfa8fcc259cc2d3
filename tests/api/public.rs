//! The public widget API: config, guest, user-token, exchange, refresh, JWKS, CORS, and
//! the adversarial cases (forged tokens, hostile origins, bad bodies).

use base64::Engine;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use widget_auth::tokens::{Claims, TokenKind};

use crate::helpers::{jwt_part, status_json, StoreKind, TestApp};

const ORIGIN: &str = "https://acme.test";

crate::on_both_stores!(
    config_is_served_to_allowed_origins_with_cors_and_an_etag,
    config_refuses_requests_without_a_client_key,
    config_refuses_hostile_and_unknown_origins_without_cors,
    config_refuses_unknown_malformed_and_disabled_keys,
    wildcard_and_port_wildcard_origins_are_allowed,
    preflights_echo_well_formed_origins_only,
    a_guest_gets_a_session_and_a_refresh_token_for_its_origin,
    guests_can_be_switched_off,
    public_bodies_that_are_not_json_get_a_400_and_big_ones_a_413,
    a_customer_backend_mints_a_visitor_token_with_its_secret_key,
    user_token_refuses_bad_secret_keys_with_401,
    user_token_validates_its_body_and_refuses_disabled_keys,
    rotated_secret_and_public_keys_work_until_their_grace_ends,
    a_visitor_token_is_exchanged_once_for_a_session,
    exchange_refuses_forged_expired_and_wrong_kind_tokens,
    exchange_and_refresh_refuse_revoked_and_disabled_sessions,
    refresh_rotates_and_reuse_of_a_rotated_token_revokes_the_family,
    refresh_is_bound_to_the_origin_it_was_minted_for,
    the_jwks_lists_the_key_that_signs_every_token,
    every_answer_echoes_the_callers_request_id_or_gets_a_new_one,
);

async fn key_with(app: &TestApp, origins: Value) -> Value {
    app.create_key(json!({"name": "Acme Support", "origins": origins}))
        .await
}

async fn default_key(app: &TestApp) -> Value {
    key_with(app, json!([ORIGIN])).await
}

fn pk(key: &Value) -> &str {
    key["public_key"].as_str().expect("public key")
}

fn id(key: &Value) -> &str {
    key["id"].as_str().expect("id")
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn text(response: Response) -> (StatusCode, String) {
    let status = response.status();
    (status, response.text().await.expect("text body"))
}

async fn config_is_served_to_allowed_origins_with_cors_and_an_etag(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let response = app.config(pk(&key), Some(ORIGIN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert_eq!(header(&response, "vary"), Some("Origin"));
    assert!(header(&response, "access-control-allow-credentials").is_none());
    let etag = header(&response, "etag").expect("etag").to_owned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["client_key"], pk(&key));
    assert_eq!(
        body["agent"],
        json!({"display_name": "Acme Support", "avatar_url": null})
    );
    assert_eq!(body["branding"]["launcher_position"], "bottom-right");
    assert!(body["copy"]["greeting"].is_string());
    assert_eq!(
        (
            body["locale"].clone(),
            body["guests_allowed"].clone(),
            body["version"].clone()
        ),
        (json!("en"), json!(true), json!(1))
    );

    let revalidated = app
        .http
        .get(app.public("/api/v1/widget/config"))
        .query(&[("client_key", pk(&key))])
        .header("origin", ORIGIN)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("sent");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&revalidated, "etag"), Some(etag.as_str()));
    assert_eq!(
        header(&revalidated, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let encoded = format!(
        "/api/v1/widget/config?x=1&client_key={}",
        pk(&key).replacen('_', "%5F", 1)
    );
    let decoded = app
        .http
        .get(app.public(&encoded))
        .header("origin", ORIGIN)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        decoded.status(),
        StatusCode::OK,
        "a percent-encoded key is decoded"
    );

    app.command(
        id(&key),
        json!({"type": "update_config", "config": {"agent": {"display_name": "Ada"}}}),
    )
    .await;
    let changed = app.config(pk(&key), Some(ORIGIN)).await;
    assert_ne!(
        header(&changed, "etag"),
        Some(etag.as_str()),
        "a change is visible at once"
    );
    let body: Value = changed.json().await.expect("json");
    assert_eq!(
        (
            body["agent"]["display_name"].clone(),
            body["version"].clone()
        ),
        (json!("Ada"), json!(2))
    );
    app.finish().await;
}

async fn config_refuses_requests_without_a_client_key(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    for url in [
        "/api/v1/widget/config",
        "/api/v1/widget/config?client_key=",
        "/api/v1/widget/config?other=1",
    ] {
        let response = app
            .http
            .get(app.public(url))
            .header("origin", ORIGIN)
            .send()
            .await
            .expect("sent");
        assert_eq!(header(&response, "vary"), Some("Origin"));
        assert_eq!(
            header(&response, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            text(response).await,
            (StatusCode::BAD_REQUEST, "missing client_key".to_owned()),
            "{url}"
        );
    }
    app.finish().await;
}

async fn config_refuses_hostile_and_unknown_origins_without_cors(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key_with(
        &app,
        json!([
            "https://example.com",
            "https://*.example.com",
            "http://localhost:3000"
        ]),
    )
    .await;
    let cases: [(Option<&str>, &str); 13] = [
        (None, "missing Origin header"),
        (Some("null"), "origin null is not allowed"),
        (Some("not an origin"), "malformed Origin header"),
        (Some("https://user@example.com"), "malformed Origin header"),
        (Some("https://example.com/path"), "malformed Origin header"),
        (
            Some("https://example.com.evil.net"),
            "origin not in allowlist for this client_key",
        ),
        (
            Some("https://evil-example.com"),
            "origin not in allowlist for this client_key",
        ),
        (
            Some("https://notexample.com"),
            "origin not in allowlist for this client_key",
        ),
        (
            Some("http://example.com"),
            "origin not in allowlist for this client_key",
        ),
        (
            Some("https://example.com:8443"),
            "origin not in allowlist for this client_key",
        ),
        (
            Some("http://localhost:3001"),
            "origin not in allowlist for this client_key",
        ),
        (
            Some("https://localhost:3000"),
            "origin not in allowlist for this client_key",
        ),
        (
            Some("https://example.co"),
            "origin not in allowlist for this client_key",
        ),
    ];
    for (origin, message) in cases {
        let response = app.config(pk(&key), origin).await;
        assert!(
            header(&response, "access-control-allow-origin").is_none(),
            "{origin:?}"
        );
        assert_eq!(header(&response, "vary"), Some("Origin"));
        assert_eq!(
            text(response).await,
            (StatusCode::FORBIDDEN, message.to_owned()),
            "{origin:?}"
        );
    }
    for allowed in [
        "https://example.com",
        "https://EXAMPLE.com:443",
        "https://a.b.example.com",
        "http://localhost:3000",
    ] {
        assert_eq!(
            app.config(pk(&key), Some(allowed)).await.status(),
            StatusCode::OK,
            "{allowed}"
        );
    }
    app.finish().await;
}

async fn config_refuses_unknown_malformed_and_disabled_keys(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let mut tampered = pk(&key).to_owned();
    let last = tampered.pop().expect("non-empty");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let unknown = domain::PublicKey::generate(&mut rand::rng());
    for candidate in [
        tampered.as_str(),
        unknown.as_str(),
        "pk_live_short",
        key["secret_key"].as_str().expect("sk"),
    ] {
        let response = app.config(candidate, Some(ORIGIN)).await;
        assert!(header(&response, "access-control-allow-origin").is_none());
        assert_eq!(
            text(response).await,
            (StatusCode::FORBIDDEN, "unknown client_key".to_owned())
        );
    }
    app.command(id(&key), json!({"type": "disable"})).await;
    assert_eq!(
        text(app.config(pk(&key), Some(ORIGIN)).await).await,
        (StatusCode::FORBIDDEN, "client key disabled".to_owned())
    );
    assert_eq!(
        text(app.guest(pk(&key), ORIGIN).await).await,
        (StatusCode::FORBIDDEN, "client key disabled".to_owned())
    );
    app.command(id(&key), json!({"type": "enable"})).await;
    assert_eq!(
        app.config(pk(&key), Some(ORIGIN)).await.status(),
        StatusCode::OK
    );
    app.finish().await;
}

async fn wildcard_and_port_wildcard_origins_are_allowed(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key_with(&app, json!(["https://*.acme.test", "http://localhost:*"])).await;
    for origin in [
        "https://app.acme.test",
        "https://a.b.c.acme.test",
        "http://localhost:5173",
        "http://localhost",
    ] {
        let response = app.config(pk(&key), Some(origin)).await;
        assert_eq!(response.status(), StatusCode::OK, "{origin}");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some(origin)
        );
    }
    for origin in [
        "https://acme.test",
        "https://evilacme.test",
        "https://acme.test.evil.net",
        "http://app.acme.test",
    ] {
        assert_eq!(
            app.config(pk(&key), Some(origin)).await.status(),
            StatusCode::FORBIDDEN,
            "{origin}"
        );
    }
    app.finish().await;
}

async fn preflights_echo_well_formed_origins_only(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    for path in [
        "/api/v1/widget/config",
        "/api/v1/widget/auth/guest",
        "/api/v1/widget/auth/exchange",
        "/api/v1/widget/auth/refresh",
    ] {
        let response = app
            .http
            .request(reqwest::Method::OPTIONS, app.public(path))
            .header("origin", "https://anything.test")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            Some("https://anything.test")
        );
        assert!(header(&response, "access-control-allow-methods")
            .expect("methods")
            .contains("POST"));
        assert_eq!(
            header(&response, "access-control-allow-headers"),
            Some("content-type")
        );
        assert!(header(&response, "access-control-max-age").is_some());
        assert_eq!(header(&response, "vary"), Some("Origin"));
        assert!(header(&response, "access-control-allow-credentials").is_none());
    }
    let hostile = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            app.public("/api/v1/widget/auth/guest"),
        )
        .header("origin", "null")
        .send()
        .await
        .expect("sent");
    assert_eq!(hostile.status(), StatusCode::NO_CONTENT);
    assert!(header(&hostile, "access-control-allow-origin").is_none());
    app.finish().await;
}

async fn a_guest_gets_a_session_and_a_refresh_token_for_its_origin(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let response = app.guest(pk(&key), "https://ACME.test:443").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("https://ACME.test:443")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        (
            body["token_type"].clone(),
            body["expires_in"].clone(),
            body["refresh_expires_in"].clone()
        ),
        (json!("Bearer"), json!(900), json!(604800))
    );
    let visitor_id = body["visitor_id"].as_str().expect("visitor id");

    let token = body["token"].as_str().expect("token");
    let header_json = jwt_part(token, 0);
    assert_eq!(
        (header_json["alg"].clone(), header_json["typ"].clone()),
        (json!("EdDSA"), json!("session+jwt"))
    );
    let claims = jwt_part(token, 1);
    assert_eq!(claims["kind"], "session");
    assert_eq!(claims["aud"], TokenKind::Session.audience());
    assert_eq!(claims["iss"], "widget-auth");
    assert_eq!(claims["sub"], visitor_id);
    assert_eq!(claims["guest"], true);
    assert_eq!(
        claims["origin"], ORIGIN,
        "the normalised origin it was minted for"
    );
    assert_eq!(claims["ck"], id(&key));
    assert_eq!(claims["ver"], 1);
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        900
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].is_string());

    let refresh = jwt_part(body["refresh_token"].as_str().expect("refresh"), 1);
    assert_eq!(
        (refresh["kind"].clone(), refresh["sub"].clone()),
        (json!("refresh"), json!(visitor_id))
    );
    assert!(refresh["fam"].is_string());
    assert_ne!(refresh["jti"], claims["jti"]);
    let other: Value = app
        .guest(pk(&key), ORIGIN)
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(
        other["visitor_id"], body["visitor_id"],
        "a fresh identity per guest"
    );
    app.finish().await;
}

async fn guests_can_be_switched_off(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    app.command(
        id(&key),
        json!({"type": "set_token_policy", "policy": {"guests_allowed": false}}),
    )
    .await;
    let response = app.guest(pk(&key), ORIGIN).await;
    assert_eq!(
        text(response).await,
        (
            StatusCode::FORBIDDEN,
            "guests are not allowed for this client_key".to_owned()
        )
    );
    let config: Value = app
        .config(pk(&key), Some(ORIGIN))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(config["guests_allowed"], false);
    app.finish().await;
}

async fn public_bodies_that_are_not_json_get_a_400_and_big_ones_a_413(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let url = app.public("/api/v1/widget/auth/guest");
    let send = |body: String, content_type: &'static str| {
        app.http
            .post(&url)
            .header("origin", ORIGIN)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (status, message) = text(
        send("{not json".to_owned(), "application/json")
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.starts_with("invalid JSON body"), "{message}");
    let (status, message) = text(
        send(r#"{"client_key": 42}"#.to_owned(), "application/json")
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("client_key"), "{message}");
    let (status, message) = text(
        send("{}".to_owned(), "application/json")
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(
        (status, message.as_str()),
        (StatusCode::BAD_REQUEST, "missing client_key")
    );
    let plain = send(json!({"client_key": pk(&key)}).to_string(), "text/plain")
        .await
        .expect("sent");
    assert_eq!(
        plain.status(),
        StatusCode::OK,
        "JSON sent as text/plain (no preflight) is accepted"
    );
    let huge = json!({"client_key": pk(&key), "padding": "x".repeat(17 * 1024)}).to_string();
    assert_eq!(
        send(huge, "application/json").await.expect("sent").status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    for path in [
        "/api/v1/widget/auth/exchange",
        "/api/v1/widget/auth/refresh",
    ] {
        let response = app
            .http
            .post(app.public(path))
            .header("origin", ORIGIN)
            .body("[]")
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    app.finish().await;
}

async fn a_customer_backend_mints_a_visitor_token_with_its_secret_key(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let response = app
        .http
        .post(app.public("/api/v1/widget/auth/user-token"))
        .bearer_auth(key["secret_key"].as_str().expect("sk"))
        .header("origin", "https://evil.test")
        .json(&json!({"client_key": pk(&key), "user_id": "user-42", "name": "Ada", "email": "ada@acme.test"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header(&response, "access-control-allow-origin").is_none(),
        "not a browser endpoint"
    );
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["expires_in"], 60);
    let token = body["visitor_token"].as_str().expect("token");
    assert_eq!(jwt_part(token, 0)["typ"], "visitor+jwt");
    let claims = jwt_part(token, 1);
    assert_eq!(
        (
            claims["kind"].clone(),
            claims["sub"].clone(),
            claims["guest"].clone()
        ),
        (json!("visitor"), json!("user-42"), json!(false))
    );
    assert_eq!(
        (claims["name"].clone(), claims["email"].clone()),
        (json!("Ada"), json!("ada@acme.test"))
    );
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        60
    );
    assert!(claims.get("origin").is_none());
    app.finish().await;
}

async fn user_token_refuses_bad_secret_keys_with_401(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let other = key_with(&app, json!(["https://other.test"])).await;
    let body = json!({"client_key": pk(&key), "user_id": "u1"});
    let missing = app
        .http
        .post(app.public("/api/v1/widget/auth/user-token"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        text(missing).await,
        (StatusCode::UNAUTHORIZED, "missing secret key".to_owned())
    );
    let mut tampered = key["secret_key"].as_str().expect("sk").to_owned();
    tampered.replace_range(10..11, if &tampered[10..11] == "a" { "b" } else { "a" });
    let unknown = domain::SecretKey::generate(&mut rand::rng());
    for bad in [
        tampered.as_str(),
        unknown.expose_secret(),
        pk(&key),
        "sk_live_nope",
        "",
    ] {
        let response = app.user_token(bad, &body).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    let crossed = app
        .user_token(other["secret_key"].as_str().expect("sk"), &body)
        .await;
    assert_eq!(
        text(crossed).await,
        (
            StatusCode::UNAUTHORIZED,
            "secret key does not belong to this client_key".to_owned()
        )
    );
    let lower_case_scheme = app
        .http
        .post(app.public("/api/v1/widget/auth/user-token"))
        .header(
            "authorization",
            format!("bearer {}", key["secret_key"].as_str().expect("sk")),
        )
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        lower_case_scheme.status(),
        StatusCode::OK,
        "the scheme is case-insensitive"
    );
    let basic = app
        .http
        .post(app.public("/api/v1/widget/auth/user-token"))
        .basic_auth("x", key["secret_key"].as_str())
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    app.finish().await;
}

async fn user_token_validates_its_body_and_refuses_disabled_keys(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let sk = key["secret_key"].as_str().expect("sk");
    for body in [
        json!({"client_key": pk(&key)}),
        json!({"user_id": "u1"}),
        json!({"client_key": "", "user_id": "u1"}),
        json!({}),
    ] {
        assert_eq!(
            text(app.user_token(sk, &body).await).await,
            (
                StatusCode::BAD_REQUEST,
                "missing client_key or user_id".to_owned()
            ),
            "{body}"
        );
    }
    let (status, _) = text(
        app.user_token(
            sk,
            &json!({"client_key": pk(&key), "user_id": "x".repeat(256)}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = text(
        app.user_token(
            sk,
            &json!({"client_key": pk(&key), "user_id": "u", "email": "nope"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = text(
        app.user_token(sk, &json!({"client_key": pk(&key), "user_id": 7}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.command(id(&key), json!({"type": "disable"})).await;
    let response = app
        .user_token(sk, &json!({"client_key": pk(&key), "user_id": "u1"}))
        .await;
    assert_eq!(
        text(response).await,
        (StatusCode::FORBIDDEN, "client key disabled".to_owned())
    );
    app.finish().await;
}

async fn rotated_secret_and_public_keys_work_until_their_grace_ends(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let old_sk = key["secret_key"].as_str().expect("sk");
    let (_, rotated) = status_json(
        app.command(
            id(&key),
            json!({"type": "rotate_secret_key", "grace_seconds": 3600}),
        )
        .await,
    )
    .await;
    let new_sk = rotated["secret_key"].as_str().expect("new sk");
    let body = json!({"client_key": pk(&key), "user_id": "u1"});
    assert_eq!(
        app.user_token(old_sk, &body).await.status(),
        StatusCode::OK,
        "old key in grace"
    );
    assert_eq!(app.user_token(new_sk, &body).await.status(), StatusCode::OK);
    app.command(id(&key), json!({"type": "expire_previous_keys"}))
        .await;
    assert_eq!(
        app.user_token(old_sk, &body).await.status(),
        StatusCode::UNAUTHORIZED,
        "grace ended"
    );
    let (_, again) = status_json(
        app.command(
            id(&key),
            json!({"type": "rotate_secret_key", "grace_seconds": 0}),
        )
        .await,
    )
    .await;
    assert_eq!(
        app.user_token(new_sk, &body).await.status(),
        StatusCode::UNAUTHORIZED,
        "no grace"
    );
    assert_eq!(
        app.user_token(again["secret_key"].as_str().expect("sk"), &body)
            .await
            .status(),
        StatusCode::OK
    );

    let (_, public) = status_json(
        app.command(
            id(&key),
            json!({"type": "rotate_public_key", "grace_seconds": 600}),
        )
        .await,
    )
    .await;
    let new_pk = public["public_key"].as_str().expect("new pk");
    assert_eq!(
        app.config(pk(&key), Some(ORIGIN)).await.status(),
        StatusCode::OK,
        "old public key in grace"
    );
    let fresh: Value = app
        .config(new_pk, Some(ORIGIN))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(fresh["client_key"], new_pk);
    app.command(id(&key), json!({"type": "expire_previous_keys"}))
        .await;
    assert_eq!(
        app.config(pk(&key), Some(ORIGIN)).await.status(),
        StatusCode::FORBIDDEN
    );
    app.finish().await;
}

async fn a_visitor_token_is_exchanged_once_for_a_session(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let visitor = app.visitor_token(&key, "user-42").await;
    let wrong_origin = app.exchange(&visitor, Some("https://evil.test")).await;
    assert!(header(&wrong_origin, "access-control-allow-origin").is_none());
    assert_eq!(
        text(wrong_origin).await,
        (
            StatusCode::FORBIDDEN,
            "origin not in allowlist for this client_key".to_owned()
        )
    );
    assert_eq!(
        app.exchange(&visitor, None).await.status(),
        StatusCode::FORBIDDEN
    );

    let response = app.exchange(&visitor, Some(ORIGIN)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a refused origin did not burn the token"
    );
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["visitor_id"], "user-42");
    let claims = jwt_part(body["token"].as_str().expect("token"), 1);
    assert_eq!(
        (
            claims["sub"].clone(),
            claims["guest"].clone(),
            claims["kind"].clone()
        ),
        (json!("user-42"), json!(false), json!("session"))
    );
    assert_eq!(
        (
            claims["name"].clone(),
            claims["email"].clone(),
            claims["origin"].clone()
        ),
        (json!("Ada"), json!("ada@acme.test"), json!(ORIGIN))
    );

    let again = app.exchange(&visitor, Some(ORIGIN)).await;
    assert_eq!(
        text(again).await,
        (
            StatusCode::BAD_REQUEST,
            "visitor token already exchanged".to_owned()
        )
    );
    let raced = futures::future::join_all((0..6).map(|_| async {
        let token = app.visitor_token(&key, "racer").await;
        let attempts =
            futures::future::join_all((0..4).map(|_| app.exchange(&token, Some(ORIGIN)))).await;
        attempts
            .iter()
            .filter(|r| r.status() == StatusCode::OK)
            .count()
    }))
    .await;
    assert_eq!(
        raced,
        vec![1; 6],
        "exactly one of concurrent exchanges wins"
    );
    app.finish().await;
}

fn forge(app: &TestApp, key: &Value, kind: TokenKind, adjust: impl FnOnce(&mut Claims)) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut claims = Claims {
        iss: "widget-auth".to_owned(),
        aud: kind.audience().to_owned(),
        sub: "user-1".to_owned(),
        iat: now,
        nbf: now,
        exp: now + 60,
        jti: uuid::Uuid::new_v4().to_string(),
        ck: id(key).to_owned(),
        kind,
        ver: 1,
        origin: None,
        guest: Some(false),
        name: None,
        email: None,
        fam: None,
        fst: None,
        gen: None,
    };
    adjust(&mut claims);
    app.store.signing_keys().mint(&claims).expect("mint")
}

fn b64(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn exchange_refuses_forged_expired_and_wrong_kind_tokens(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let genuine = forge(&app, &key, TokenKind::Visitor, |_| {});
    let parts: Vec<&str> = genuine.split('.').collect();
    let mut claims = jwt_part(&genuine, 1);
    claims["sub"] = json!("admin");
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "visitor+jwt"})),
        parts[1]
    );
    // HS256 "signed" with the public key from our JWKS as the HMAC secret.
    let jwks: Value = app
        .http
        .get(app.public("/.well-known/jwks.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let x = jwks["keys"][0]["x"].as_str().expect("x").to_owned();
    let hs_header =
        b64(&json!({"alg": "HS256", "typ": "visitor+jwt", "kid": jwks["keys"][0]["kid"]}));
    let signing_input = format!("{hs_header}.{}", parts[1]);
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, x.as_bytes()),
        signing_input.as_bytes(),
    );
    let hs256 = format!(
        "{signing_input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.as_ref())
    );
    let other_key = widget_auth::tokens::SigningKeys::from_pem(
        &widget_auth::tokens::SigningKeys::generate_pem().expect("pem"),
    )
    .expect("keys");
    let foreign = other_key.mint(&jwt_claims(&genuine)).expect("mint");

    let cases = [
        (tampered, "signature"),
        (alg_none, "invalid visitor token"),
        (hs256, "invalid visitor token"),
        (foreign, "invalid visitor token"),
        (
            forge(&app, &key, TokenKind::Visitor, |c| {
                c.exp = c.iat - 120;
            }),
            "expired",
        ),
        (
            forge(&app, &key, TokenKind::Visitor, |c| {
                c.nbf = c.iat + 600;
                c.exp = c.iat + 900;
            }),
            "not yet valid",
        ),
        (
            forge(&app, &key, TokenKind::Session, |_| {}),
            "invalid visitor token",
        ),
        (
            forge(&app, &key, TokenKind::Refresh, |c| {
                c.fam = Some("f".to_owned());
            }),
            "invalid visitor token",
        ),
        (
            forge(&app, &key, TokenKind::Visitor, |c| {
                c.iss = "someone-else".to_owned();
            }),
            "invalid visitor token",
        ),
        ("not.a.jwt".to_owned(), "invalid visitor token"),
        ("".to_owned(), "missing token"),
    ];
    for (token, says) in cases {
        let (status, message) = text(app.exchange(&token, Some(ORIGIN)).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{says}: {message}");
        assert!(message.contains(says), "expected `{says}` in `{message}`");
        assert!(
            token.is_empty() || !message.contains(&token),
            "the token is never echoed"
        );
    }
    assert_eq!(
        app.exchange(&genuine, Some(ORIGIN)).await.status(),
        StatusCode::OK,
        "the untampered token works"
    );
    // A session token is not a visitor token, and a visitor token is not a refresh token.
    let session: Value = app
        .guest(pk(&key), ORIGIN)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        app.exchange(session["token"].as_str().expect("t"), Some(ORIGIN))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.refresh(session["token"].as_str().expect("t"), Some(ORIGIN))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    app.finish().await;
}

fn jwt_claims(token: &str) -> Claims {
    serde_json::from_value(jwt_part(token, 1)).expect("claims")
}

async fn exchange_and_refresh_refuse_revoked_and_disabled_sessions(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let past = |c: &mut Claims| {
        c.iat -= 30;
        c.nbf -= 30;
    };
    let before_revoke = forge(&app, &key, TokenKind::Visitor, |c| {
        past(c);
        c.sub = "u1".to_owned();
    });
    let other_user = forge(&app, &key, TokenKind::Visitor, |c| {
        past(c);
        c.sub = "u2".to_owned();
    });
    let refresh_u1 = forge(&app, &key, TokenKind::Refresh, |c| {
        past(c);
        c.sub = "u1".to_owned();
        c.origin = Some(ORIGIN.to_owned());
        c.fam = Some("fam-1".to_owned());
    });
    app.command(
        id(&key),
        json!({"type": "revoke_sessions", "user_id": "u1"}),
    )
    .await;
    assert_eq!(
        text(app.exchange(&before_revoke, Some(ORIGIN)).await).await,
        (StatusCode::BAD_REQUEST, "visitor token revoked".to_owned())
    );
    assert_eq!(
        text(app.refresh(&refresh_u1, Some(ORIGIN)).await).await,
        (StatusCode::BAD_REQUEST, "refresh token revoked".to_owned())
    );
    assert_eq!(
        app.exchange(&other_user, Some(ORIGIN)).await.status(),
        StatusCode::OK,
        "only u1 was revoked"
    );

    let session: Value = app
        .guest(pk(&key), ORIGIN)
        .await
        .json()
        .await
        .expect("json");
    let refresh_token = session["refresh_token"].as_str().expect("rt").to_owned();
    let later_visitor = app.visitor_token(&key, "u3").await;
    app.command(id(&key), json!({"type": "disable"})).await;
    assert_eq!(
        text(app.refresh(&refresh_token, Some(ORIGIN)).await).await,
        (StatusCode::BAD_REQUEST, "client key disabled".to_owned())
    );
    assert_eq!(
        text(app.exchange(&later_visitor, Some(ORIGIN)).await).await,
        (StatusCode::BAD_REQUEST, "client key disabled".to_owned())
    );
    app.command(id(&key), json!({"type": "enable"})).await;
    let (status, message) = text(app.refresh(&refresh_token, Some(ORIGIN)).await).await;
    assert_eq!(
        (status, message.as_str()),
        (StatusCode::BAD_REQUEST, "refresh token revoked"),
        "tokens from before a disable stay dead"
    );
    app.finish().await;
}

async fn refresh_rotates_and_reuse_of_a_rotated_token_revokes_the_family(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let visitor = app.visitor_token(&key, "user-9").await;
    let first: Value = app
        .exchange(&visitor, Some(ORIGIN))
        .await
        .json()
        .await
        .expect("json");
    let r1 = first["refresh_token"].as_str().expect("r1").to_owned();

    let response = app.refresh(&r1, Some(ORIGIN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some(ORIGIN)
    );
    let second: Value = response.json().await.expect("json");
    assert!(second.get("visitor_id").is_none());
    let r2 = second["refresh_token"].as_str().expect("r2").to_owned();
    assert_ne!(r1, r2, "the refresh token rotates");
    let session = jwt_part(second["token"].as_str().expect("token"), 1);
    assert_eq!(
        (
            session["sub"].clone(),
            session["name"].clone(),
            session["guest"].clone()
        ),
        (json!("user-9"), json!("Ada"), json!(false))
    );
    assert_eq!(jwt_part(&r2, 1)["fam"], jwt_part(&r1, 1)["fam"]);

    // A retry of the token just rotated (its response was lost) is tolerated briefly.
    let retry = app.refresh(&r1, Some(ORIGIN)).await;
    assert_eq!(
        retry.status(),
        StatusCode::OK,
        "immediate retry of the latest rotated token"
    );
    let third: Value = app
        .refresh(&r2, Some(ORIGIN))
        .await
        .json()
        .await
        .expect("json");
    let r3 = third["refresh_token"].as_str().expect("r3").to_owned();
    // r1 is now two rotations old: presenting it is theft, and the whole family dies.
    let (status, message) = text(app.refresh(&r1, Some(ORIGIN)).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("already used"), "{message}");
    assert_eq!(
        text(app.refresh(&r3, Some(ORIGIN)).await).await,
        (StatusCode::BAD_REQUEST, "refresh token revoked".to_owned())
    );
    app.finish().await;
}

async fn refresh_is_bound_to_the_origin_it_was_minted_for(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key_with(&app, json!([ORIGIN, "https://shop.acme.test"])).await;
    let session: Value = app
        .guest(pk(&key), ORIGIN)
        .await
        .json()
        .await
        .expect("json");
    let refresh_token = session["refresh_token"].as_str().expect("rt");
    let elsewhere = app
        .refresh(refresh_token, Some("https://shop.acme.test"))
        .await;
    assert!(header(&elsewhere, "access-control-allow-origin").is_none());
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        text(app.refresh(refresh_token, None).await).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        text(app.refresh(refresh_token, Some("https://evil.test")).await)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    app.command(
        id(&key),
        json!({"type": "change_origins", "origins": ["https://shop.acme.test"]}),
    )
    .await;
    let removed = app.refresh(refresh_token, Some(ORIGIN)).await;
    assert_eq!(
        text(removed).await,
        (
            StatusCode::FORBIDDEN,
            "origin not in allowlist for this client_key".to_owned()
        )
    );
    app.command(
        id(&key),
        json!({"type": "change_origins", "origins": [ORIGIN]}),
    )
    .await;
    assert_eq!(
        app.refresh(refresh_token, Some(ORIGIN)).await.status(),
        StatusCode::OK,
        "403s did not burn the token"
    );
    app.finish().await;
}

async fn the_jwks_lists_the_key_that_signs_every_token(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let response = app
        .http
        .get(app.public("/.well-known/jwks.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let jwks: Value = response.json().await.expect("json");
    let session: Value = app
        .guest(pk(&key), ORIGIN)
        .await
        .json()
        .await
        .expect("json");
    let kid = jwt_part(session["token"].as_str().expect("token"), 0)["kid"].clone();
    let listed = &jwks["keys"][0];
    assert_eq!(
        (
            listed["kid"].clone(),
            listed["kty"].clone(),
            listed["crv"].clone(),
            listed["alg"].clone()
        ),
        (kid, json!("OKP"), json!("Ed25519"), json!("EdDSA"))
    );
    assert!(listed.get("d").is_none(), "no private key material");

    // A JWT library other than ours verifies our tokens against our JWKS.
    let visitor = app.visitor_token(&key, "u-pyjwt").await;
    let exchanged: Value = app
        .exchange(&visitor, Some(ORIGIN))
        .await
        .json()
        .await
        .expect("json");
    for (token, aud) in [
        (
            session["token"].as_str().expect("t"),
            TokenKind::Session.audience(),
        ),
        (
            exchanged["refresh_token"].as_str().expect("t"),
            TokenKind::Refresh.audience(),
        ),
        (visitor.as_str(), TokenKind::Visitor.audience()),
    ] {
        let output = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/verify_with_pyjwt.py"
            ))
            .args([&jwks.to_string(), token, aud, "widget-auth"])
            .output()
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "PyJWT refused our token: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let verified: Value = serde_json::from_str(stdout.trim()).expect("claims json");
        assert_eq!(verified["ck"], id(&key));
    }
    // And PyJWT refuses a tampered one (so the check above can fail).
    let mut parts: Vec<String> = visitor.split('.').map(str::to_owned).collect();
    let mut claims = jwt_part(&visitor, 1);
    claims["sub"] = json!("someone-else");
    parts[1] = b64(&claims);
    let tampered = parts.join(".");
    let output = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/verify_with_pyjwt.py"
        ))
        .args([
            &jwks.to_string(),
            tampered.as_str(),
            TokenKind::Visitor.audience(),
            "widget-auth",
        ])
        .output()
        .expect("python3 runs");
    assert!(!output.status.success());
    app.finish().await;
}

/// With the store gone, the single-use endpoints refuse with 503 rather than risk a
/// second use, while everything served from memory keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_exchange_and_refresh_answer_503_and_the_rest_keeps_serving() {
    use sqlx::Connection;
    let app = TestApp::spawn(StoreKind::Postgres).await;
    let key = default_key(&app).await;
    let visitor = app.visitor_token(&key, "u1").await;
    let session: Value = app
        .guest(pk(&key), ORIGIN)
        .await
        .json()
        .await
        .expect("json");
    let database = app
        .store
        .database_url
        .clone()
        .expect("postgres")
        .rsplit('/')
        .next()
        .expect("db name")
        .to_owned();
    let mut admin = sqlx::PgConnection::connect(&crate::helpers::postgres_admin_url())
        .await
        .expect("connect");
    let cut = [
        format!("ALTER DATABASE {database} ALLOW_CONNECTIONS false"),
        format!("SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE datname = '{database}'"),
    ];
    for sql in &cut {
        sqlx::query(sql)
            .execute(&mut admin)
            .await
            .expect("cut the store off");
    }

    for response in [
        app.exchange(&visitor, Some(ORIGIN)).await,
        app.refresh(session["refresh_token"].as_str().expect("rt"), Some(ORIGIN))
            .await,
    ] {
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(header(&response, "retry-after").is_some());
    }
    let command = app.command(id(&key), json!({"type": "disable"})).await;
    assert_eq!(command.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(header(&command, "retry-after").is_some());
    assert_eq!(
        app.config(pk(&key), Some(ORIGIN)).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.guest(pk(&key), ORIGIN).await.status(), StatusCode::OK);
    assert_eq!(
        app.user_token(
            key["secret_key"].as_str().expect("sk"),
            &json!({"client_key": pk(&key), "user_id": "u2"})
        )
        .await
        .status(),
        StatusCode::OK
    );

    sqlx::query(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .expect("restore");
    assert_eq!(
        app.exchange(&visitor, Some(ORIGIN)).await.status(),
        StatusCode::OK,
        "the 503 did not burn the token"
    );
    app.finish().await;
}

/// Both kinds of answer carry the id: those the edge makes itself (config, its refusals,
/// preflights, the internal listener's 401) outside any request span, and those of the
/// router.
async fn every_answer_echoes_the_callers_request_id_or_gets_a_new_one(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = default_key(&app).await;
    let config = format!("/api/v1/widget/config?client_key={}", pk(&key));
    let unknown = "/api/v1/widget/config?client_key=pk_live_nobody";
    let requests = [
        (reqwest::Method::GET, app.public(&config), 200),
        (reqwest::Method::GET, app.public(unknown), 403),
        (reqwest::Method::OPTIONS, app.public(&config), 204),
        (
            reqwest::Method::GET,
            app.public("/api/v1/nothing-here"),
            404,
        ),
        (
            reqwest::Method::GET,
            app.internal("/internal/v1/client-keys"),
            401,
        ),
        (
            reqwest::Method::GET,
            app.public("/.well-known/jwks.json"),
            200,
        ),
    ];
    let mut minted = Vec::new();
    for (method, url, status) in requests {
        let send = |id: Option<&str>| {
            let request = app
                .http
                .request(method.clone(), &url)
                .header("origin", ORIGIN)
                .header("access-control-request-method", "GET");
            match id {
                Some(id) => request.header("x-request-id", id),
                None => request,
            }
            .send()
        };
        let echoed = send(Some("trace-me-7")).await.expect("sent");
        assert_eq!(echoed.status().as_u16(), status, "{method} {url}");
        assert_eq!(header(&echoed, "x-request-id"), Some("trace-me-7"), "{url}");

        let long = "x".repeat(129);
        for id in [None, Some(long.as_str())] {
            let response = send(id).await.expect("sent");
            assert_eq!(response.status().as_u16(), status, "{method} {url}");
            let new = header(&response, "x-request-id").expect("an id").to_owned();
            let (prefix, counter) = new.split_once('-').expect("prefix-counter");
            assert_eq!(prefix.len(), 16, "{new}");
            assert!(
                (prefix.to_owned() + counter)
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit()),
                "{new}"
            );
            minted.push(new);
        }
    }
    let distinct: std::collections::HashSet<_> = minted.iter().collect();
    assert_eq!(
        distinct.len(),
        minted.len(),
        "every new id is new: {minted:?}"
    );
    app.finish().await;
}
