//! `GET /metrics` after real traffic: request counts and latency histograms by listener,
//! route and status, tokens by kind, origin refusals, store health and projection lag,
//! as a Prometheus server would scrape them.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{StoreKind, TestApp};

crate::on_both_stores!(
    metrics_name_routes_statuses_and_kinds_after_traffic,
    metrics_never_label_by_raw_uri_and_keep_unknown_paths_in_one_series,
);

async fn scrape(app: &TestApp) -> String {
    let response = app
        .http
        .get(app.internal("/metrics"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("text")
}

/// The value of the sample named exactly `series` (name and labels as rendered).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn require(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no `{series}` in\n{text}"))
}

async fn metrics_name_routes_statuses_and_kinds_after_traffic(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = app.create_default_key().await;
    let public_key = key["public_key"].as_str().expect("pk");
    let id = key["id"].as_str().expect("id");
    app.key(id).await;

    // A guest session (a session and a refresh token), a visitor token.
    assert_eq!(
        app.guest(public_key, "https://acme.test").await.status(),
        StatusCode::OK
    );
    app.visitor_token(&key, "u1").await;
    // Config: allowed once, refused for its origin twice, refused for its key once.
    assert_eq!(
        app.config(public_key, Some("https://acme.test"))
            .await
            .status(),
        StatusCode::OK
    );
    for origin in [Some("https://evil.test"), None] {
        assert_eq!(
            app.config(public_key, origin).await.status(),
            StatusCode::FORBIDDEN
        );
    }
    let unknown = app
        .config(
            "pk_live_000000000000000000000000000000",
            Some("https://acme.test"),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::FORBIDDEN);

    let text = scrape(&app).await;
    let public = |route: &str, status: u16| {
        format!("widget_auth_http_requests_total{{listener=\"public\",route=\"{route}\",status=\"{status}\"}}")
    };
    assert_eq!(
        require(&text, &public("/api/v1/widget/auth/guest", 200)),
        1.0
    );
    assert_eq!(
        require(&text, &public("/api/v1/widget/auth/user-token", 200)),
        1.0
    );
    assert_eq!(require(&text, &public("/api/v1/widget/config", 200)), 1.0);
    assert_eq!(require(&text, &public("/api/v1/widget/config", 403)), 3.0);
    assert_eq!(
        require(
            &text,
            "widget_auth_http_requests_total{listener=\"internal\",route=\"/internal/v1/client-keys\",status=\"201\"}"
        ),
        1.0
    );
    assert_eq!(
        require(
            &text,
            "widget_auth_http_requests_total{listener=\"internal\",route=\"/internal/v1/client-keys/{id}\",status=\"200\"}"
        ),
        1.0
    );

    // The latency histogram: buckets (cumulative, ending in +Inf), a count and a sum.
    let series = "listener=\"public\",route=\"/api/v1/widget/config\",status=\"403\"";
    assert!(text.contains("# TYPE widget_auth_http_request_duration_seconds histogram"));
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with(&format!(
                "widget_auth_http_request_duration_seconds_bucket{{{series},le="
            ))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(buckets.len() >= 10, "too few buckets: {buckets:?}\n{text}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "not cumulative: {buckets:?}"
    );
    assert_eq!(
        require(
            &text,
            &format!("widget_auth_http_request_duration_seconds_bucket{{{series},le=\"+Inf\"}}")
        ),
        3.0
    );
    assert_eq!(
        require(
            &text,
            &format!("widget_auth_http_request_duration_seconds_count{{{series}}}")
        ),
        3.0
    );
    let sum = require(
        &text,
        &format!("widget_auth_http_request_duration_seconds_sum{{{series}}}"),
    );
    assert!(sum > 0.0 && sum < 30.0, "sum {sum}");

    // Tokens by kind, origin refusals (not the unknown key's 403), refusals counted.
    for (kind, n) in [("visitor", 1.0), ("session", 1.0), ("refresh", 1.0)] {
        assert_eq!(
            require(
                &text,
                &format!("widget_auth_tokens_minted_total{{kind=\"{kind}\"}}")
            ),
            n
        );
    }
    assert_eq!(require(&text, "widget_auth_origin_rejections_total"), 2.0);
    assert_eq!(
        require(&text, "widget_auth_refresh_reuse_detections_total"),
        0.0
    );

    // The store answered, the read models trail it by nothing, everything else is kept.
    assert_eq!(require(&text, "widget_auth_store_up"), 1.0);
    assert_eq!(require(&text, "widget_auth_projection_lag_events"), 0.0);
    assert_eq!(require(&text, "widget_auth_projection_lag_seconds"), 0.0);
    assert_eq!(require(&text, "widget_auth_ready"), 1.0);
    assert_eq!(require(&text, "widget_auth_client_keys"), 1.0);
    assert_eq!(require(&text, "widget_auth_commands_committed_total"), 1.0);
    for caller in ["other", "feed", "health"] {
        require(
            &text,
            &format!("widget_auth_store_queries_total{{caller=\"{caller}\"}}"),
        );
    }
    assert!(text.contains("# TYPE widget_auth_group_commit_size histogram"));
    require(&text, "widget_auth_group_commit_statements_total");
    require(&text, "widget_auth_group_commit_events_total");
    // The creation went through the group commit (on either store): one group of at
    // least one event.
    let groups = require(&text, "widget_auth_group_commit_size_count");
    assert!(groups >= 1.0, "{groups}");
    app.finish().await;
}

async fn metrics_never_label_by_raw_uri_and_keep_unknown_paths_in_one_series(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = app.create_default_key().await;
    let public_key = key["public_key"].as_str().expect("pk");
    // Probing paths: each distinct URI must not make a series of its own.
    for n in 0..5 {
        let response = app
            .http
            .get(app.public(&format!("/probe/{n}?client_key={public_key}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let response = app.admin_get("/internal/v1/nothing-here/7").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app
        .http
        .post(app.internal("/internal/v1/client-keys"))
        .json(&json!({"name": "x", "origins": []}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let text = scrape(&app).await;
    assert_eq!(
        require(
            &text,
            "widget_auth_http_requests_total{listener=\"public\",route=\"unmatched\",status=\"404\"}"
        ),
        5.0
    );
    assert_eq!(
        require(
            &text,
            "widget_auth_http_requests_total{listener=\"internal\",route=\"/internal/v1/client-keys\",status=\"401\"}"
        ),
        1.0
    );
    for leak in [
        "/probe/",
        public_key,
        "client_key=",
        "nothing-here",
        "__private",
    ] {
        assert!(!text.contains(leak), "`{leak}` in /metrics:\n{text}");
    }
    assert!(
        text.lines().any(|l| l
            .starts_with("widget_auth_http_requests_total{listener=\"internal\"")
            && l.contains("status=\"404\"")),
        "{text}"
    );
    app.finish().await;
}
