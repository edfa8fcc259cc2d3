//! Abuse limits (API.md "Abuse limits"): the burst and the refill of each limit, per-key
//! limits across IPs, trusted and untrusted `X-Forwarded-For`, a 429 a page on an
//! allowed origin can read, refused requests spending no budget, the switch that turns
//! everything off, and the policy's `limits` validation.
//!
//! Keys get small limits through their token policy so the tests need few requests.

use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use widget_auth::limits::TrustedProxies;

use crate::helpers::{status_json, StoreKind, TestApp};

const ORIGIN: &str = "https://acme.test";

crate::on_both_stores!(
    guests_past_the_per_ip_burst_get_a_429_the_page_can_read,
    the_guest_budget_refills_at_its_rate,
    the_per_key_guest_limit_holds_across_ips,
    forwarded_for_counts_only_from_a_trusted_proxy,
    user_tokens_have_a_per_key_burst_and_refill,
    refused_requests_do_not_spend_the_budget,
    rate_limits_off_lets_everything_through,
    invalid_limits_are_refused_naming_the_field,
);

async fn key_with_limits(app: &TestApp, limits: Value) -> Value {
    app.create_key(json!({
        "name": "Acme",
        "origins": [ORIGIN],
        "token_policy": {"limits": limits},
    }))
    .await
}

fn public_key(key: &Value) -> &str {
    key["public_key"].as_str().expect("public key")
}

/// A guest mint as if from `client_ip`, relayed by a proxy on the test's loopback
/// address (which counts only when 127.0.0.1 is a trusted proxy).
async fn guest_from(app: &TestApp, key: &Value, forwarded_for: &str) -> Response {
    app.http
        .post(app.public("/api/v1/widget/auth/guest"))
        .header("origin", ORIGIN)
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"client_key": public_key(key)}))
        .send()
        .await
        .expect("request sent")
}

async fn user_token(app: &TestApp, key: &Value, user_id: &str) -> Response {
    app.user_token(
        key["secret_key"].as_str().expect("secret key"),
        &json!({"client_key": key["public_key"], "user_id": user_id}),
    )
    .await
}

fn retry_after(response: &Response) -> u64 {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in whole seconds")
}

/// Asserts `response` is the contract's 429 and returns its `Retry-After`.
async fn assert_limited(response: Response) -> (u64, reqwest::header::HeaderMap) {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let seconds = retry_after(&response);
    assert!(seconds >= 1, "Retry-After {seconds}");
    let headers = response.headers().clone();
    assert_eq!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.expect("body"), "rate limit exceeded");
    (seconds, headers)
}

/// Polls `attempt` (at most every 100 ms, for at most `within`) until it answers 200.
async fn succeeds_again_within<F, Fut>(within: Duration, mut attempt: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let start = Instant::now();
    loop {
        let status = attempt().await.status();
        if status == StatusCode::OK {
            return start.elapsed();
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(start.elapsed() < within, "still limited after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(app: &TestApp, line_prefix: &str) -> String {
    let text = app
        .http
        .get(app.internal("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .unwrap_or("")
        .to_owned()
}

async fn guests_past_the_per_ip_burst_get_a_429_the_page_can_read(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key_with_limits(&app, json!({"guest_per_ip_per_minute": 2})).await;
    for _ in 0..2 {
        let response = app.guest(public_key(&key), ORIGIN).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let (seconds, headers) = assert_limited(app.guest(public_key(&key), ORIGIN).await).await;
    // 2 per minute: the next one conforms about 30 s later.
    assert!((1..=30).contains(&seconds), "Retry-After {seconds}");
    // The widget on the allowed origin can read the 429.
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some(ORIGIN)
    );
    assert!(headers
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("Origin"))));
    // …including its Retry-After, which a page may read only when it is exposed.
    assert_eq!(
        headers
            .get("access-control-expose-headers")
            .and_then(|v| v.to_str().ok()),
        Some("retry-after")
    );
    assert_eq!(
        metric(
            &app,
            "widget_auth_rate_limited_total{route=\"/api/v1/widget/auth/guest\"}"
        )
        .await
        .rsplit(' ')
        .next(),
        Some("1")
    );
    app.finish().await;
}

async fn the_guest_budget_refills_at_its_rate(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    // 60 per minute: a burst of 10, then one a second.
    let key = key_with_limits(&app, json!({"guest_per_ip_per_minute": 60})).await;
    // The burst at once (one refills every second, so it must not take one).
    let burst =
        futures::future::join_all((0..10).map(|_| app.guest(public_key(&key), ORIGIN))).await;
    assert!(burst.iter().all(|r| r.status() == StatusCode::OK));
    let (seconds, _) = assert_limited(app.guest(public_key(&key), ORIGIN).await).await;
    assert_eq!(seconds, 1);
    succeeds_again_within(Duration::from_secs(3), || {
        app.guest(public_key(&key), ORIGIN)
    })
    .await;
    app.finish().await;
}

async fn trusting_loopback(store: StoreKind) -> TestApp {
    TestApp::spawn_with_settings(store, |settings| {
        settings.trusted_proxies = TrustedProxies::parse("127.0.0.1").expect("valid");
    })
    .await
}

async fn the_per_key_guest_limit_holds_across_ips(store: StoreKind) {
    let app = trusting_loopback(store).await;
    // 60 per minute per key: a burst of 10 whatever the IPs, then one a second.
    let key = key_with_limits(
        &app,
        json!({"guest_per_ip_per_minute": 6000, "guest_per_key_per_minute": 60}),
    )
    .await;
    let ips: Vec<String> = (0..10).map(|n| format!("198.51.100.{n}")).collect();
    let burst = futures::future::join_all(ips.iter().map(|ip| guest_from(&app, &key, ip))).await;
    assert!(burst.iter().all(|r| r.status() == StatusCode::OK));
    let (seconds, _) = assert_limited(guest_from(&app, &key, "198.51.100.200").await).await;
    assert_eq!(seconds, 1);
    succeeds_again_within(Duration::from_secs(3), || {
        guest_from(&app, &key, "198.51.100.201")
    })
    .await;
    // Another key is not affected.
    let other = key_with_limits(&app, json!({"guest_per_key_per_minute": 10})).await;
    assert_eq!(
        guest_from(&app, &other, "198.51.100.200").await.status(),
        StatusCode::OK
    );
    app.finish().await;
}

async fn forwarded_for_counts_only_from_a_trusted_proxy(store: StoreKind) {
    // Untrusted peer: every X-Forwarded-For is ignored, so "different IPs" share one budget.
    let app = TestApp::spawn(store).await;
    let key = key_with_limits(&app, json!({"guest_per_ip_per_minute": 2})).await;
    for ip in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(guest_from(&app, &key, ip).await.status(), StatusCode::OK);
    }
    assert_limited(guest_from(&app, &key, "198.51.100.3").await).await;
    app.finish().await;

    // Trusted peer: the rightmost untrusted X-Forwarded-For entry is the client.
    let app = trusting_loopback(store).await;
    let key = key_with_limits(&app, json!({"guest_per_ip_per_minute": 2})).await;
    for _ in 0..2 {
        assert_eq!(
            guest_from(&app, &key, "198.51.100.1").await.status(),
            StatusCode::OK
        );
    }
    assert_limited(guest_from(&app, &key, "198.51.100.1").await).await;
    // A client prepending a forged address is still itself (the proxy appended its
    // real address on the right).
    assert_limited(guest_from(&app, &key, "203.0.113.50, 198.51.100.1").await).await;
    // Another client behind the same proxy has its own budget.
    assert_eq!(
        guest_from(&app, &key, "198.51.100.2").await.status(),
        StatusCode::OK
    );
    app.finish().await;
}

async fn user_tokens_have_a_per_key_burst_and_refill(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    // 60 per minute: a burst of 10, then one a second; no per-IP limit applies.
    let key = key_with_limits(&app, json!({"user_token_per_key_per_minute": 60})).await;
    let users: Vec<String> = (0..10).map(|n| format!("user-{n}")).collect();
    let burst = futures::future::join_all(users.iter().map(|u| user_token(&app, &key, u))).await;
    assert!(burst.iter().all(|r| r.status() == StatusCode::OK));
    let limited = user_token(&app, &key, "user-10").await;
    // Server to server: no CORS headers.
    assert!(limited
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let (seconds, _) = assert_limited(limited).await;
    assert_eq!(seconds, 1);
    succeeds_again_within(Duration::from_secs(3), || user_token(&app, &key, "user-11")).await;
    // Another key's backend has its own budget.
    let other = key_with_limits(&app, json!({"user_token_per_key_per_minute": 60})).await;
    assert_eq!(
        user_token(&app, &other, "user-1").await.status(),
        StatusCode::OK
    );
    let counted = metric(
        &app,
        "widget_auth_rate_limited_total{route=\"/api/v1/widget/auth/user-token\"}",
    )
    .await;
    assert!(
        counted
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 1),
        "{counted}"
    );
    app.finish().await;
}

async fn refused_requests_do_not_spend_the_budget(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key_with_limits(
        &app,
        json!({"guest_per_ip_per_minute": 2, "user_token_per_key_per_minute": 10}),
    )
    .await;
    // Guest: refused for its origin (403) and its body (400), many times.
    for _ in 0..5 {
        let response = app.guest(public_key(&key), "https://evil.test").await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let response = app
            .post_public("/api/v1/widget/auth/guest", &json!({}), Some(ORIGIN))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    for _ in 0..2 {
        assert_eq!(
            app.guest(public_key(&key), ORIGIN).await.status(),
            StatusCode::OK
        );
    }
    assert_limited(app.guest(public_key(&key), ORIGIN).await).await;

    // User token: a bad body (400) and another key's secret (401) spend nothing.
    let other = key_with_limits(&app, json!({})).await;
    for _ in 0..15 {
        let response = app
            .user_token(
                key["secret_key"].as_str().expect("sk"),
                &json!({"client_key": key["public_key"]}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = app
            .user_token(
                other["secret_key"].as_str().expect("sk"),
                &json!({"client_key": key["public_key"], "user_id": "u"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    for n in 0..10 {
        let response = user_token(&app, &key, &format!("user-{n}")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_limited(user_token(&app, &key, "user-10").await).await;
    app.finish().await;
}

async fn rate_limits_off_lets_everything_through(store: StoreKind) {
    let app = TestApp::spawn_with_settings(store, |settings| settings.rate_limits = false).await;
    let key = key_with_limits(
        &app,
        json!({"guest_per_ip_per_minute": 1, "guest_per_key_per_minute": 1, "user_token_per_key_per_minute": 1}),
    )
    .await;
    for n in 0..15 {
        assert_eq!(
            app.guest(public_key(&key), ORIGIN).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            user_token(&app, &key, &format!("user-{n}")).await.status(),
            StatusCode::OK
        );
    }
    app.finish().await;
}

async fn invalid_limits_are_refused_naming_the_field(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key_with_limits(&app, json!({"guest_per_ip_per_minute": 5})).await;
    let id = key["id"].as_str().expect("id");
    // GET shows the whole effective policy, defaults filled in.
    let shown = app.key(id).await;
    assert_eq!(
        shown["token_policy"]["limits"],
        json!({"guest_per_ip_per_minute": 5, "guest_per_key_per_minute": 6000, "user_token_per_key_per_minute": 6000})
    );
    assert_eq!(shown["token_policy"]["visitor_token_ttl_seconds"], 60);

    for (limits, named) in [
        (
            json!({"guest_per_ip_per_minute": 0}),
            "guest_per_ip_per_minute",
        ),
        (
            json!({"guest_per_ip_per_minute": 6001}),
            "guest_per_ip_per_minute",
        ),
        (
            json!({"guest_per_key_per_minute": 600_001}),
            "guest_per_key_per_minute",
        ),
        (
            json!({"user_token_per_key_per_minute": -1}),
            "user_token_per_key_per_minute",
        ),
        (
            json!({"user_token_per_key_per_minute": 2.5}),
            "user_token_per_key_per_minute",
        ),
        (
            json!({"guest_per_key_per_minute": "10"}),
            "guest_per_key_per_minute",
        ),
        (json!({"per_second": 3}), "per_second"),
        (json!(5), "limits"),
    ] {
        let (status, body) = status_json(
            app.command(
                id,
                json!({"type": "set_token_policy", "policy": {"limits": limits}}),
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{limits}: {body}");
        let message = body["message"].as_str().unwrap_or("");
        assert!(message.contains(named), "{limits}: {message}");
    }
    // At creation too.
    let response = app
        .admin_post(
            "/internal/v1/client-keys",
            &json!({"name": "Acme", "origins": [ORIGIN], "token_policy": {"limits": {"guest_per_ip_per_minute": 0}}}),
        )
        .await;
    let (status, body) = status_json(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"]
        .as_str()
        .is_some_and(|m| m.contains("guest_per_ip_per_minute")));
    // Nothing of that changed the key: still the limits it was created with.
    assert_eq!(
        app.key(id).await["token_policy"]["limits"]["guest_per_ip_per_minute"],
        5
    );
    app.finish().await;
}
