//! `/console` on the internal listener: served without a token, under a Content-Security-Policy
//! that lets the page load and call nothing but this listener (no inline script), and listed
//! in the internal OpenAPI document. A static page: one store is enough. What the page does
//! in a browser is tested in `tests/browser/console.test.js`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{StoreKind, TestApp};

/// The policy's directives by name.
fn directives(csp: &str) -> Vec<(String, String)> {
    csp.split(';')
        .filter_map(|d| {
            let d = d.trim();
            let (name, value) = d.split_once(' ').unwrap_or((d, ""));
            (!name.is_empty()).then(|| (name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_without_a_token_under_a_strict_policy() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let page = app
        .http
        .get(app.internal("/console"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(
        headers["content-type"].to_str().ok(),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let csp = headers["content-security-policy"].to_str().expect("csp");
    let policy = directives(csp);
    let get = |name: &str| {
        policy
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("default-src"), Some("'self'"), "{csp}");
    assert_eq!(get("script-src"), Some("'self'"), "{csp}");
    assert_eq!(get("connect-src"), Some("'self'"), "{csp}");
    assert_eq!(get("frame-ancestors"), Some("'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe"),
        "no inline or eval allowance: {csp}"
    );
    let body = page.text().await.expect("body");
    assert!(body.contains("<script type=\"module\" src=\"/console/app.js\"></script>"));

    // Its files too, each with the same policy; no token anywhere.
    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("views.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
    ] {
        let response = app
            .http
            .get(app.internal(&format!("/console/{file}")))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(
            response.headers()["content-type"].to_str().ok(),
            Some(content_type)
        );
        assert_eq!(response.headers()["content-security-policy"], csp);
    }

    // Nothing else is reachable under /console, however the name is spelt.
    for path in [
        "/console/index.html",
        "/console/..%2Fopenapi.json",
        "/console/%2e%2e%2fmetrics",
        "/console/app.js.map",
    ] {
        let response = app.http.get(app.internal(path)).send().await.expect("sent");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let error: Value = response.json().await.expect("a JSON error");
        assert_eq!(error["error"], "not_found", "{path}");
    }

    // The page is the internal listener's alone.
    let public = app
        .http
        .get(app.public("/console"))
        .send()
        .await
        .expect("sent");
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_document_lists_the_console_and_its_files() {
    let app = TestApp::spawn(StoreKind::Sqlite).await;
    let spec: Value = app
        .http
        .get(app.internal("/openapi.json"))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("a JSON document");
    let page = &spec["paths"]["/console"]["get"];
    assert!(
        page["responses"]["200"]["content"]["text/html"].is_object(),
        "{page}"
    );
    assert!(page["responses"]["200"]["headers"]["Content-Security-Policy"].is_object());
    // No token: the operation names no security requirement.
    assert!(page["security"].is_null(), "{page}");
    let asset = &spec["paths"]["/console/{asset}"]["get"];
    let names = asset["parameters"][0]["schema"]["enum"]
        .as_array()
        .expect("the files are listed");
    for file in ["app.js", "api.js", "views.js", "console.css"] {
        assert!(names.iter().any(|n| n == file), "{file} not in {names:?}");
    }
    assert!(asset["responses"]["404"].is_object());
    app.finish().await;
}
