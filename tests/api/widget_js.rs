//! `GET /widget/v1/widget.js`: the script a customer's page includes, served as committed
//! with a type browsers execute, a strong ETag answered with 304, and a cache lifetime.

use reqwest::StatusCode;

use crate::helpers::{StoreKind, TestApp};

crate::on_both_stores!(widget_js_is_served_with_its_type_a_strong_etag_and_a_cache_lifetime);

const COMMITTED: &str = include_str!("../../web/widget.js");

async fn widget_js_is_served_with_its_type_a_strong_etag_and_a_cache_lifetime(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let url = app.public("/widget/v1/widget.js");

    // A script tag sends no Origin: none is needed.
    let response = app.http.get(&url).send().await.expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        header("cache-control").as_deref(),
        Some("public, max-age=3600")
    );
    let etag = header("etag").expect("an ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 20,
        "a strong ETag, not {etag}"
    );
    assert_eq!(response.text().await.expect("body"), COMMITTED);

    // Revalidation: the same tag (also listed among others, or weakly) is a bodiless 304.
    for tags in [
        etag.clone(),
        format!("\"other\", {etag}"),
        format!("W/{etag}"),
    ] {
        let response = app
            .http
            .get(&url)
            .header("if-none-match", &tags)
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "for {tags}");
        assert_eq!(
            response.headers().get("etag").and_then(|v| v.to_str().ok()),
            Some(etag.as_str())
        );
        assert!(response.bytes().await.expect("body").is_empty());
    }

    // A stale tag gets the script again.
    let response = app
        .http
        .get(&url)
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.expect("body"), COMMITTED);

    app.finish().await;
}
