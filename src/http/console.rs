//! `GET /console` on the internal listener: the operator and auditor console, a page of
//! plain ES modules and one stylesheet from `assets/console/`, compiled into the binary
//! (no build step, nothing fetched from elsewhere). The page needs no token: it holds
//! nothing but code; the admin token is typed in (or given in the URL fragment, which a
//! browser never sends) and only the page's own `fetch` calls to `/internal/v1` carry it.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::ErrorBody;
use crate::state::AppState;

/// Only this listener's own URLs, and no inline script or style at all: the page's
/// scripts are files, and it sets styles through the CSSOM, which a policy does not
/// restrict. `connect-src 'self'` keeps the token from being sent anywhere else even if
/// a script were injected; images are the page's own or data URLs (never a customer's
/// avatar URL: the preview draws an initial instead).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'none'";

/// Assets are not named by content hash, so a revalidation on every load keeps an
/// upgraded binary's page and modules from mixing with cached old ones.
const ASSET_CACHE: &str = "no-cache";

/// `(name, content type, bytes)` of every file the page loads.
const ASSETS: [(&str, &str, &[u8]); 7] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console/console.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/api.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/dom.js"),
    ),
    (
        "diff.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/diff.js"),
    ),
    (
        "preview.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/preview.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console/views.js"),
    ),
];

const PAGE: &str = include_str!("../../assets/console/index.html");

/// The page and its assets, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(console_page))
        .routes(routes!(console_asset))
}

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The fragment never leaves the browser, but a page URL with a key id in it should
    // not travel in a Referer either.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

// Handler names are the OpenAPI operation ids: `page` and `asset` belong to `/docs`.

/// The operator and auditor console (no token needed: the page holds only code; it asks
/// for the admin token and sends it only to `/internal/v1`).
#[utoipa::path(get, path = "/console", tag = "operations",
    responses((status = 200, description = "The console page", content_type = "text/html", body = String, headers(
        ("Content-Security-Policy" = String, description = "Only this listener's own URLs, no inline script"),
        ("Cache-Control" = String, description = "`no-cache`")))))]
async fn console_page() -> Response {
    secured(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            PAGE,
        )
            .into_response(),
    )
}

/// The files of the console, for the document (the handler looks names up in
/// [`ASSETS`]; `every_asset_is_named_in_the_document` keeps the two lists equal).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
enum ConsoleAsset {
    #[serde(rename = "console.css")]
    Css,
    #[serde(rename = "app.js")]
    App,
    #[serde(rename = "api.js")]
    Api,
    #[serde(rename = "dom.js")]
    Dom,
    #[serde(rename = "diff.js")]
    Diff,
    #[serde(rename = "preview.js")]
    Preview,
    #[serde(rename = "views.js")]
    Views,
}

/// A file of the console page.
#[utoipa::path(get, path = "/console/{asset}", tag = "operations",
    params(("asset" = inline(ConsoleAsset), Path)),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css")), headers(("Cache-Control" = String))),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
async fn console_asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, bytes)) => secured(
            (
                [
                    (header::CONTENT_TYPE, *content_type),
                    (header::CACHE_CONTROL, ASSET_CACHE),
                ],
                *bytes,
            )
                .into_response(),
        ),
        None => ApiError::not_found("no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_named_in_the_document() {
        let named: Vec<String> = ASSETS.iter().map(|(name, _, _)| name.to_string()).collect();
        let documented: Vec<String> = [
            ConsoleAsset::Css,
            ConsoleAsset::App,
            ConsoleAsset::Api,
            ConsoleAsset::Dom,
            ConsoleAsset::Diff,
            ConsoleAsset::Preview,
            ConsoleAsset::Views,
        ]
        .iter()
        .map(|a| {
            serde_json::to_value(a)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        })
        .collect();
        assert_eq!(named, documented);
    }

    /// Every module the page or another module imports is one the binary serves, by a
    /// relative path (so never from another host), and the page names no other host.
    #[test]
    fn the_page_loads_only_its_own_assets() {
        assert!(PAGE.contains("/console/console.css"));
        assert!(PAGE.contains("/console/app.js"));
        assert!(
            !PAGE.contains("http"),
            "the page must not name another host"
        );
        assert!(!PAGE.contains("<script>"), "no inline script");
        assert!(!PAGE.contains("style="), "no inline style");
        for (name, _, bytes) in ASSETS {
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            assert!(!text.contains("@import"), "{name} imports a stylesheet");
            assert!(!text.contains("import("), "{name} imports dynamically");
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let file = line
                    .split("from './")
                    .nth(1)
                    .and_then(|rest| rest.split('\'').next())
                    .unwrap_or_else(|| panic!("{name}: not a relative import: {line}"));
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == file),
                    "{name} imports {file}, which is not served"
                );
            }
        }
    }
}
