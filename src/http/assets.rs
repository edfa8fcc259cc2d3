//! Files served to browsers from the public listener: `widget.js`, which a customer's
//! page includes with a `<script>` tag. The file is `web/widget.js`, compiled into the
//! binary as committed (no build step), so every node serves the same bytes.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const WIDGET_JS: &str = include_str!("../../web/widget.js");

/// A strong `ETag`: the SHA-256 of the bytes compiled in, so it changes exactly when the
/// file does and is the same on every node of one build.
static WIDGET_JS_ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = Sha256::digest(WIDGET_JS.as_bytes());
    HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16])))
        .expect("hex is a valid header value")
});

/// `GET /widget/v1/widget.js`. No Origin check: a `<script>` tag sends none, and the
/// script holds no secret.
#[utoipa::path(get, path = "/widget/v1/widget.js", tag = "widget",
    summary = "The widget's script, for a customer's page to include",
    params(("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier response")),
    responses(
        (status = 200, description = "The script (`window.widgetAuth`)", content_type = "text/javascript; charset=utf-8", body = String, headers(
            ("ETag" = String, description = "Strong validator of the script's bytes"),
            ("Cache-Control" = String, description = "`public, max-age=3600`"))),
        (status = 304, description = "Not modified: the ETag still matches", headers(
            ("ETag" = String, description = "Strong validator of the script's bytes")))))]
pub async fn widget_js(headers: HeaderMap) -> Response {
    let etag = &*WIDGET_JS_ETAG;
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            )],
            WIDGET_JS,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag.clone());
    // `v1` names the interface, not one release: a new build of the service changes the
    // file under the same path. An hour of caching spares visitors a request on every
    // page view while bounding how long a fix takes to reach them; after that the ETag
    // makes the check a bodiless 304.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}
