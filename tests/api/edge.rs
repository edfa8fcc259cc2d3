//! The edge held as an attacker would try it (API.md "Operating contract", "Public
//! endpoints", "Internal (admin) API"): slow and silent clients are cut off, connections
//! beyond the cap wait, shutdown does not wait behind a half-sent request, bodies are
//! exactly one JSON object, two `Origin` headers are malformed, unknown admin paths need
//! the token, no-op commands remember their Idempotency-Key.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use widget_auth::config::ConnectionTimeouts;

use crate::helpers::{status_json, StoreKind, TestApp};

const ORIGIN: &str = "https://acme.test";
/// Slack for a loaded machine on top of a deadline under test.
const MARGIN: Duration = Duration::from_secs(3);

crate::on_both_stores!(
    a_half_sent_head_is_cut_off_after_the_contract_s_ten_seconds,
    a_slow_or_silent_request_head_is_cut_off_on_both_listeners,
    a_trickled_body_is_cut_off_with_a_408,
    a_trickled_chunked_body_is_cut_off_with_a_408,
    an_idle_keep_alive_connection_is_closed,
    connections_beyond_the_cap_wait_in_the_accept_queue_then_are_served,
    stop_answers_in_flight_requests_and_closes_half_sent_ones_after_the_grace,
    a_public_body_must_be_exactly_one_json_object,
    two_origin_headers_are_a_malformed_origin_whatever_their_order,
    an_admin_body_must_be_exactly_one_json_object,
    unknown_admin_paths_answer_401_without_the_token_and_404_with_it,
    a_no_op_command_remembers_its_idempotency_key_across_restarts,
    wildcards_over_a_public_suffix_are_refused_naming_the_entry,
);

fn short(timeouts: &mut ConnectionTimeouts) {
    timeouts.request_head = Duration::from_secs(1);
    timeouts.whole_request = Duration::from_secs(2);
}

/// Reads until the server closes the connection (or `limit` passes): whether it closed,
/// after how long, and what it sent.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> (bool, Duration, String) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + limit),
            stream.read(&mut buffer),
        )
        .await
        {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    };
    (
        closed,
        started.elapsed(),
        String::from_utf8_lossy(&received).into_owned(),
    )
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connects")
}

async fn a_half_sent_head_is_cut_off_after_the_contract_s_ten_seconds(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let mut stream = connect(app.app.public_addr).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: widget-auth\r\nX-Slow: ")
        .await
        .expect("sent");
    let (closed, after, received) =
        until_closed(&mut stream, Duration::from_secs(10) + MARGIN).await;
    assert!(closed, "a half-sent head still open after {after:?}");
    assert!(
        after >= Duration::from_secs(8),
        "the contract gives a client 10 s for its head; closed after {after:?}"
    );
    assert!(!received.contains("200 OK"), "{received}");
    app.finish().await;
}

async fn a_slow_or_silent_request_head_is_cut_off_on_both_listeners(store: StoreKind) {
    let app = TestApp::spawn_with_settings(store, |s| short(&mut s.timeouts)).await;
    for addr in [app.app.public_addr, app.app.internal_addr] {
        let mut half = connect(addr).await;
        half.write_all(b"POST /api/v1/widget/auth/guest HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("sent");
        let mut silent = connect(addr).await;
        for stream in [&mut half, &mut silent] {
            let (closed, after, _) = until_closed(stream, Duration::from_secs(1) + MARGIN).await;
            assert!(closed, "{addr}: still open after {after:?}");
        }
    }
    // The listeners still serve everyone else.
    let response = app
        .http
        .get(app.public("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    app.finish().await;
}

async fn a_trickled_body_is_cut_off_with_a_408(store: StoreKind) {
    let app = TestApp::spawn_with_settings(store, |s| short(&mut s.timeouts)).await;
    let key = app.create_default_key().await;
    let body = json!({"client_key": key["public_key"]}).to_string();
    let mut stream = connect(app.app.public_addr).await;
    let head = format!(
        "POST /api/v1/widget/auth/guest HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len() + 1000
    );
    stream.write_all(head.as_bytes()).await.expect("sent");
    let (read, mut write) = stream.into_split();
    // One byte every 100 ms: each frame arrives well inside any per-read timeout, the
    // whole body never does.
    let trickle = tokio::spawn(async move {
        for byte in body.bytes().chain(std::iter::repeat(b' ')) {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    expect_408_within_the_whole_request_time(read, trickle).await;
    app.finish().await;
}

/// Requests without a body get no whole-request timer (the head is the whole request);
/// a chunked body announces no length, so this is the case that tells "has a body"
/// from "has a Content-Length".
async fn a_trickled_chunked_body_is_cut_off_with_a_408(store: StoreKind) {
    let app = TestApp::spawn_with_settings(store, |s| short(&mut s.timeouts)).await;
    let mut stream = connect(app.app.public_addr).await;
    let head = format!(
        "POST /api/v1/widget/auth/guest HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("sent");
    let (read, mut write) = stream.into_split();
    // One one-byte chunk every 100 ms, never the last chunk.
    let trickle = tokio::spawn(async move {
        loop {
            if write.write_all(b"1\r\n \r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    expect_408_within_the_whole_request_time(read, trickle).await;
    app.finish().await;
}

/// Reads until the server closes: it must, within the whole-request time (2 s here)
/// and a margin, after answering 408. Stops the `trickle` writing the body.
async fn expect_408_within_the_whole_request_time(
    mut read: tokio::net::tcp::OwnedReadHalf,
    trickle: tokio::task::JoinHandle<()>,
) {
    let started = Instant::now();
    let mut received = Vec::new();
    let limit = Duration::from_secs(2) + MARGIN;
    let closed = tokio::time::timeout(limit, read.read_to_end(&mut received))
        .await
        .is_ok();
    trickle.abort();
    let received = String::from_utf8_lossy(&received);
    assert!(
        closed,
        "a trickled body still open after {:?}",
        started.elapsed()
    );
    assert!(
        received.starts_with("HTTP/1.1 408"),
        "answered: {received:?}"
    );
}

async fn an_idle_keep_alive_connection_is_closed(store: StoreKind) {
    let app = TestApp::spawn_with_settings(store, |s| {
        short(&mut s.timeouts);
        s.timeouts.idle_keep_alive = Duration::from_secs(4);
    })
    .await;
    let mut stream = connect(app.app.public_addr).await;
    let mut buffer = [0u8; 1024];
    for round in 0..2 {
        if round == 1 {
            // Idle for twice the head's deadline: a keep-alive client may come back.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("sent");
        let n = stream.read(&mut buffer).await.expect("an answer");
        let answer = String::from_utf8_lossy(&buffer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "round {round}: {answer}"
        );
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "kept alive: {answer}"
        );
    }
    let (closed, after, _) = until_closed(&mut stream, Duration::from_secs(4) + MARGIN).await;
    assert!(
        closed,
        "an idle keep-alive connection still open after {after:?}"
    );
    assert!(
        after >= Duration::from_secs(3),
        "closed after {after:?} idle, before the idle time of 4 s"
    );
    app.finish().await;
}

async fn connections_beyond_the_cap_wait_in_the_accept_queue_then_are_served(store: StoreKind) {
    let app = TestApp::spawn_with_settings(store, |s| s.max_connections = 2).await;
    let holders = [
        connect(app.app.public_addr).await,
        connect(app.app.public_addr).await,
    ];
    let http = reqwest::Client::new();
    let url = app.public("/healthz");
    let third = tokio::spawn(async move { http.get(url).send().await.map(|r| r.status()) });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served while two held the cap of 2"
    );
    // The internal listener has its own cap.
    let internal = app
        .http
        .get(app.internal("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(internal.status(), StatusCode::OK);
    drop(holders);
    let status = tokio::time::timeout(MARGIN, third)
        .await
        .expect("served once a slot was free")
        .expect("task")
        .expect("answered");
    assert_eq!(status, StatusCode::OK);
    app.finish().await;
}

async fn stop_answers_in_flight_requests_and_closes_half_sent_ones_after_the_grace(
    store: StoreKind,
) {
    let grace = Duration::from_secs(1);
    let app = TestApp::spawn_with_settings(store, |s| s.shutdown_grace = grace).await;
    let key = app.create_default_key().await;
    let body = json!({"client_key": key["public_key"]}).to_string();
    // In flight: the head and half the body are in when shutdown starts.
    let mut in_flight = connect(app.app.public_addr).await;
    let head = format!(
        "POST /api/v1/widget/auth/guest HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (first, rest) = body.split_at(body.len() / 2);
    in_flight
        .write_all(format!("{head}{first}").as_bytes())
        .await
        .expect("sent");
    // Half-sent: a head that never ends.
    let mut half = connect(app.app.public_addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let store = app.store.clone();
    let started = Instant::now();
    let stopping = tokio::spawn(app.app.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    in_flight.write_all(rest.as_bytes()).await.expect("sent");
    let (_, _, answer) = until_closed(&mut in_flight, grace + MARGIN).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the in-flight request is answered during the grace: {answer:?}"
    );
    tokio::time::timeout(grace + MARGIN, stopping)
        .await
        .expect("stop returns once the grace is over")
        .expect("task");
    let stopped_after = started.elapsed();
    let (closed, _, _) = until_closed(&mut half, Duration::from_millis(500)).await;
    assert!(
        closed,
        "the half-sent request is closed at the end of the grace"
    );
    assert!(
        stopped_after < grace + MARGIN,
        "stopped after {stopped_after:?}"
    );
    store.cleanup().await;
}

/// Status and text of a public response.
async fn text(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

async fn a_public_body_must_be_exactly_one_json_object(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = app.create_default_key().await;
    let pk = key["public_key"].as_str().expect("pk").to_owned();
    let one = json!({"client_key": pk}).to_string();
    let cases = [
        (format!("{one} xx"), "after the JSON object"),
        (format!("{one}{one}"), "after the JSON object"),
        (format!("[\"{pk}\"]"), "expected a JSON object"),
        (format!("\"{pk}\""), "expected a JSON object"),
        ("42".to_owned(), "expected a JSON object"),
        ("null".to_owned(), "expected a JSON object"),
        (String::new(), "expected a JSON object"),
    ];
    for content_type in ["application/json", "text/plain"] {
        for (body, says) in &cases {
            let (status, message) = text(
                app.http
                    .post(app.public("/api/v1/widget/auth/guest"))
                    .header("origin", ORIGIN)
                    .header("content-type", content_type)
                    .body(body.clone())
                    .send()
                    .await
                    .expect("sent"),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body:?}: {message}");
            assert!(
                message.starts_with("invalid JSON body") && message.contains(says),
                "{body:?}: {message}"
            );
        }
        let (status, _) = text(
            app.http
                .post(app.public("/api/v1/widget/auth/guest"))
                .header("origin", ORIGIN)
                .header("content-type", content_type)
                .body(format!("\n {one} \r\n\t"))
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "whitespace around the object is fine"
        );
    }
    // The same on an endpoint authenticated by the secret key.
    let response = app
        .http
        .post(app.public("/api/v1/widget/auth/user-token"))
        .bearer_auth(key["secret_key"].as_str().expect("sk"))
        .body(format!(r#"["{pk}", "u-1"]"#))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    app.finish().await;
}

async fn two_origin_headers_are_a_malformed_origin_whatever_their_order(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = app.create_default_key().await;
    let pk = key["public_key"].as_str().expect("pk");
    for pair in [
        [ORIGIN, "https://evil.test"],
        ["https://evil.test", ORIGIN],
        [ORIGIN, ORIGIN],
    ] {
        let config = app
            .http
            .get(app.public("/api/v1/widget/config"))
            .query(&[("client_key", pk)])
            .header("origin", pair[0])
            .header("origin", pair[1])
            .send()
            .await
            .expect("sent");
        assert!(config
            .headers()
            .get("access-control-allow-origin")
            .is_none());
        assert_eq!(
            text(config).await,
            (StatusCode::FORBIDDEN, "malformed Origin header".to_owned()),
            "{pair:?}"
        );
        let guest = app
            .http
            .post(app.public("/api/v1/widget/auth/guest"))
            .header("origin", pair[0])
            .header("origin", pair[1])
            .json(&json!({"client_key": pk}))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            text(guest).await,
            (StatusCode::FORBIDDEN, "malformed Origin header".to_owned()),
            "{pair:?}"
        );
        let preflight = app
            .http
            .request(
                reqwest::Method::OPTIONS,
                app.public("/api/v1/widget/auth/guest"),
            )
            .header("origin", pair[0])
            .header("origin", pair[1])
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("sent");
        assert!(
            preflight
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{pair:?}"
        );
    }
    // One Origin still works.
    assert_eq!(app.guest(pk, ORIGIN).await.status(), StatusCode::OK);
    app.finish().await;
}

async fn an_admin_body_must_be_exactly_one_json_object(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let url = app.internal(&format!("/internal/v1/client-keys/{id}/commands"));
    let cases = [
        (
            r#"{"type":"disable"}{"type":"enable"}"#,
            "after the JSON object",
        ),
        (r#"{"type":"disable"} xx"#, "after the JSON object"),
        (r#"[{"type":"disable"}]"#, "expected a JSON object"),
        (r#""disable""#, "expected a JSON object"),
        (
            r#"{"type":"update_config","config":{"agent":["Ada","https://acme.test/a.png"]}}"#,
            "expected a JSON object",
        ),
    ];
    for (body, says) in cases {
        let response = app
            .http
            .post(&url)
            .bearer_auth(&app.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("sent");
        let (status, json) = status_json(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
        assert_eq!(json["error"], "invalid_request", "{body}: {json}");
        let message = json["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    let created = app
        .http
        .post(app.internal("/internal/v1/client-keys"))
        .bearer_auth(&app.admin_token)
        .header("content-type", "application/json")
        .body(r#"["Acme", ["https://acme.test"]]"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::BAD_REQUEST);
    let key = app.key(&id).await;
    assert_eq!(key["status"], "active", "no command was applied");
    assert_eq!(app.events(&id).await.len(), 1, "only the creation");
    app.finish().await;
}

async fn unknown_admin_paths_answer_401_without_the_token_and_404_with_it(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    for path in [
        "/internal/v1",
        "/internal/v1/",
        "/internal/v1/nothing-here",
        "/internal/v1/client-keys/x/y/z",
        "/internal/v1/client-keys",
    ] {
        let anonymous = app.http.get(app.internal(path)).send().await.expect("sent");
        let (status, json) = status_json(anonymous).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(json["error"], "unauthorized", "{path}");
        let wrong = app
            .http
            .get(app.internal(path))
            .bearer_auth("wrong-token-wrong-token-wrong-token")
            .send()
            .await
            .expect("sent");
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in [
        "/internal/v1/nothing-here",
        "/internal/v1/client-keys/x/y/z",
    ] {
        let (status, json) = status_json(app.admin_get(path).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(json["error"], "not_found", "{path}");
    }
    // Outside /internal/v1 nothing needs the token.
    for (path, status) in [
        ("/healthz", StatusCode::OK),
        ("/metrics", StatusCode::OK),
        ("/internal/v1x", StatusCode::NOT_FOUND),
    ] {
        let response = app.http.get(app.internal(path)).send().await.expect("sent");
        assert_eq!(response.status(), status, "{path}");
    }
    app.finish().await;
}

async fn a_no_op_command_remembers_its_idempotency_key_across_restarts(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let path = format!("/internal/v1/client-keys/{id}/commands");
    let enable = json!({"type": "enable"});
    let key = [("idempotency-key", "enable-once")];
    let first = app.admin_post_with(&path, &enable, &key).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (status, first) = status_json(first).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        first["event"],
        Value::Null,
        "enabling an active key changes nothing"
    );

    let app = app.restart().await;
    let again = app.admin_post_with(&path, &enable, &key).await;
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let (status, again) = status_json(again).await;
    assert_eq!((status, &again), (StatusCode::OK, &first));

    let other = app
        .admin_post_with(&path, &json!({"type": "disable"}), &key)
        .await;
    let (status, body) = status_json(other).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "idempotency_key_reused");
    assert_eq!(
        app.key(&id).await["status"],
        "active",
        "the disable never ran"
    );
    assert_eq!(app.events(&id).await.len(), 1);
    app.finish().await;
}

async fn wildcards_over_a_public_suffix_are_refused_naming_the_entry(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    for entry in ["https://*.co.uk", "https://*.github.io", "https://*.com"] {
        let response = app
            .admin_post(
                "/internal/v1/client-keys",
                &json!({"name": "Acme", "origins": ["https://acme.test", entry]}),
            )
            .await;
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{entry}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(entry), "{entry}: {message}");
    }
    let id = app.create_default_key().await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, body) = status_json(
        app.command(
            &id,
            json!({"type": "change_origins", "origins": ["https://*.github.io"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("https://*.github.io"));
    let (status, _) = status_json(
        app.command(
            &id,
            json!({"type": "change_origins", "origins": ["https://*.acme.github.io", "https://*.acme.co.uk"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "a site's own subdomains are fine");
    app.finish().await;
}
