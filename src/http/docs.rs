//! `GET /docs` on the internal listener: the listener's OpenAPI document rendered by
//! Swagger UI, every asset compiled into the binary (see `assets/docs/README.md` for the
//! vendored package and its version), so the page works behind a firewall. The
//! `Content-Security-Policy` lets the page load nothing but this listener's own URLs.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiError;
use super::openapi::ErrorBody;
use crate::state::AppState;

/// Only this listener's own URLs. Swagger UI sets inline `style` attributes, hence
/// `'unsafe-inline'` for styles (which cannot fetch anything); images may be data URLs.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// Assets are named by content version, not hash, so a day's cache is the compromise
/// between fast reloads and seeing an upgrade.
const ASSET_CACHE: &str = "public, max-age=86400";

/// `(name, content type, bytes)` of every file the page loads.
const ASSETS: [(&str, &str, &[u8]); 3] = [
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/docs/swagger-ui-bundle.js"),
    ),
    (
        "swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/docs/swagger-ui.css"),
    ),
    (
        "init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/docs/init.js"),
    ),
];

const PAGE: &str = include_str!("../../assets/docs/index.html");

/// The page and its assets, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(asset))
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
    response
}

/// The API documentation page (no token needed: it shows only what `/openapi.json` does).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "The documentation page", content_type = "text/html", body = String, headers(
        ("Content-Security-Policy" = String, description = "Only this listener's own URLs"),
        ("Cache-Control" = String, description = "`no-cache`")))))]
async fn page() -> Response {
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

/// The files of the page, for the document (the handler looks names up in [`ASSETS`];
/// `every_asset_is_named_in_the_document` keeps the two lists equal).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
enum DocsAsset {
    #[serde(rename = "swagger-ui-bundle.js")]
    Bundle,
    #[serde(rename = "swagger-ui.css")]
    Css,
    #[serde(rename = "init.js")]
    Init,
}

/// A file of the documentation page.
#[utoipa::path(get, path = "/docs/{asset}", tag = "operations",
    params(("asset" = inline(DocsAsset), Path)),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"),
            (String = "text/css")), headers(("Cache-Control" = String))),
        (status = 404, description = "No such file", body = ErrorBody),
    ))]
async fn asset(Path(name): Path<String>) -> Response {
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
        let documented: Vec<String> = [DocsAsset::Bundle, DocsAsset::Css, DocsAsset::Init]
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

    #[test]
    fn the_page_loads_only_vendored_assets_and_the_listeners_document() {
        let init = std::str::from_utf8(ASSETS[2].2).unwrap_or_default();
        assert!(init.contains("url: \"/openapi.json\""));
        assert!(init.contains("validatorUrl: null"));
        for (name, _, _) in ASSETS.iter().take(2) {
            assert!(
                PAGE.contains(&format!("/docs/{name}")),
                "{name} not loaded by the page"
            );
        }
        assert!(PAGE.contains("/docs/init.js"));
        assert!(
            !PAGE.contains("http"),
            "the page must not name another host"
        );
    }
}
