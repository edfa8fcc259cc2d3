//! The OpenAPI 3.1 documents of the two listeners, generated from the code.
//!
//! Each listener's routes are registered through `utoipa_axum`'s `OpenApiRouter` with
//! `routes!`, which takes the path and method from the handler's `#[utoipa::path]`: the
//! router and its document come from one list, so a route cannot exist without its
//! description or the reverse. Request and response schemas are derived from the Rust
//! types that parse and build them (`ToSchema`); the few bodies the handlers build as
//! `serde_json::Value` are described by the types below, which schemathesis checks
//! against the real responses in CI (`tests/schemathesis/run.sh`).

use std::sync::LazyLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use domain::{
    ClientKeyId, HttpsUrl, KeyStatus, Locale, OriginPattern, PublicKey, Text, TokenPolicy,
    WidgetConfig,
};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// The security scheme of `POST /api/v1/widget/auth/user-token`.
pub const SECRET_KEY: &str = "secret_key";
/// The security scheme of everything under `/internal/v1`.
pub const ADMIN_TOKEN: &str = "admin_token";

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "widget-auth public API",
        description = "What a visitor's browser (the widget) and a customer's backend call. \
            Error bodies are short `text/plain` sentences. Request bodies are one JSON \
            object; `Content-Type: text/plain` with a JSON body is accepted too (browsers \
            send it without a CORS preflight). Browser endpoints check the `Origin` header \
            against the client key's allowlist, answer CORS preflights (`OPTIONS`) with 204 \
            and send `Vary: Origin` on every response.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "widget", description = "Called by the widget in a visitor's browser"),
        (name = "backend", description = "Called by the customer's backend"),
        (name = "tokens", description = "Verifying tokens"),
        (name = "operations", description = "Probes and this document")
    )
)]
pub struct PublicApi;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "widget-auth internal (admin) API",
        description = "Operators' commands on client keys and auditors' reads of their \
            history. Every request under `/internal/v1` needs `Authorization: Bearer <admin \
            token>` (401 otherwise, also for paths that do not exist). Errors are JSON \
            `{\"error\", \"message\"}`. When the store is unavailable, commands answer 503 \
            with `Retry-After`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "client keys", description = "Commands and current state"),
        (name = "audit", description = "History, past state and the event chain"),
        (name = "operations", description = "Probes, metrics, this document and its page")
    )
)]
pub struct InternalApi;

/// Both bearer schemes, on both documents (each operation names the one it needs).
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECRET_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The client key's secret key, `sk_live_…`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (`WIDGET_AUTH_ADMIN_TOKEN`, or the data dir's `admin-token`)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the CORS preflight (`OPTIONS`) to each browser path. Preflights are answered by
/// the public edge middleware, not by a handler, so `routes!` cannot describe them; the
/// same `BROWSER_PATHS` list drives both.
pub fn add_preflights(openapi: &mut utoipa::openapi::OpenApi, paths: &[&str]) {
    use utoipa::openapi::path::OperationBuilder;
    use utoipa::openapi::{Header, ResponseBuilder};
    let header = |description: &str| {
        let mut header = Header::new(String::schema());
        header.description = Some(description.to_owned());
        header
    };
    for path in paths {
        let Some(item) = openapi.paths.paths.get_mut(*path) else {
            continue;
        };
        let response = ResponseBuilder::new()
            .description(
                "No body. The CORS headers are sent when the Origin is well formed; the \
                 key's allowlist is enforced on the actual request.",
            )
            .header(
                "Access-Control-Allow-Origin",
                header("The request's Origin"),
            )
            .header(
                "Access-Control-Allow-Methods",
                header("`GET, POST, OPTIONS`"),
            )
            .header("Access-Control-Allow-Headers", header("`content-type`"))
            .header("Access-Control-Max-Age", header("Seconds"))
            .header("Vary", header("`Origin`"))
            .build();
        item.options = Some(
            OperationBuilder::new()
                .summary(Some("CORS preflight"))
                .tag("widget")
                .response("204", response)
                .build(),
        );
    }
}

/// A document rendered once per process as the body of `GET /openapi.json`.
#[derive(Debug)]
pub struct Spec(LazyLock<Bytes>);

impl Spec {
    pub const fn new(build: fn() -> Bytes) -> Self {
        Self(LazyLock::new(build))
    }

    pub fn response(&self) -> Response {
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            Bytes::clone(&self.0),
        )
            .into_response()
    }
}

/// Serializes a document (infallible for utoipa's own types).
pub fn to_bytes(openapi: &utoipa::openapi::OpenApi) -> Bytes {
    Bytes::from(openapi.to_json().unwrap_or_default())
}

/// An error on the internal listener.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code (`invalid_request`, `unauthorized`, `not_found`, `conflict`, …).
    pub error: String,
    /// A sentence saying what is wrong.
    pub message: String,
}

/// `GET /api/v1/widget/config`: what the widget renders.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicConfig {
    pub client_key: PublicKey,
    pub agent: PublicAgent,
    pub branding: domain::config::Branding,
    pub copy: domain::config::Copy,
    pub locale: Locale,
    pub guests_allowed: bool,
    /// The client key's version (its latest event's sequence).
    pub version: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublicAgent {
    /// The configured name, or the client key's name.
    pub display_name: Text,
    pub avatar_url: Option<HttpsUrl>,
}

/// `POST /internal/v1/client-keys`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClientKey {
    pub name: Text,
    pub origins: Vec<OriginPattern>,
    /// Without it, a neutral default config whose agent name is the key's `name`.
    pub config: Option<WidgetConfig>,
    /// Without it: visitor 60 s, session 15 min, refresh 7 days, guests allowed.
    pub token_policy: Option<TokenPolicy>,
    /// Why, recorded in the event's metadata.
    pub reason: Option<Text>,
}

/// A created key. `secret_key` is shown here once (absent on an idempotent replay).
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientKeyCreated {
    pub id: ClientKeyId,
    pub public_key: PublicKey,
    pub secret_key: Option<String>,
    pub version: u64,
}

/// One command on a key, tagged by `type`. Each may carry `reason` and
/// `expected_version` (409 when stale).
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
// Only ever a schema, never a value: variant sizes cost nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Replaces the allowlist.
    ChangeOrigins {
        origins: Vec<OriginPattern>,
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
    /// Replaces the public config.
    UpdateConfig {
        config: WidgetConfig,
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
    SetTokenPolicy {
        policy: TokenPolicy,
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
    /// Answers the new `secret_key`; the old one keeps working for `grace_seconds`.
    RotateSecretKey {
        #[schema(maximum = 604800)]
        grace_seconds: u32,
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
    /// Answers the new `public_key`; the old one keeps working for `grace_seconds`.
    RotatePublicKey {
        #[schema(maximum = 604800)]
        grace_seconds: u32,
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
    /// Ends every grace period now.
    ExpirePreviousKeys {
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
    /// Refuses refresh and exchange of the key's tokens (or that user's) issued until now.
    RevokeSessions {
        user_id: Option<Text>,
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
    Disable {
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
    Enable {
        reason: Option<Text>,
        expected_version: Option<u64>,
    },
}

/// The answer to a command. `event` is null when the command changed nothing.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandResult {
    pub id: ClientKeyId,
    pub version: u64,
    pub event: Option<String>,
    /// After `rotate_public_key`.
    pub public_key: Option<PublicKey>,
    /// After `rotate_secret_key`: shown once.
    pub secret_key: Option<String>,
    pub secret_key_last_four: Option<String>,
    pub previous_valid_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// A key as operators see it: everything but secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientKeyState {
    pub id: ClientKeyId,
    pub name: Text,
    pub status: KeyStatus,
    pub version: u64,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub public_key: PublicKey,
    pub previous_public_keys: Vec<PreviousPublicKey>,
    pub secret_key_last_four: String,
    pub previous_secret_keys: Vec<PreviousSecretKey>,
    pub origins: Vec<OriginPattern>,
    pub config: WidgetConfig,
    /// The whole effective policy, defaults filled in.
    pub token_policy: TokenPolicy,
    /// Tokens of this key issued at or before this Unix time are refused.
    pub sessions_revoked_at_or_before: Option<i64>,
    /// The same cut-off per user id.
    pub user_sessions_revoked_at_or_before: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviousPublicKey {
    pub public_key: PublicKey,
    pub valid_until: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviousSecretKey {
    pub last_four: String,
    pub valid_until: chrono::DateTime<chrono::Utc>,
}

/// `GET /internal/v1/client-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientKeysPage {
    pub client_keys: Vec<ClientKeyState>,
    /// The `after` of the next page; null on the last one.
    pub next_after: Option<ClientKeyId>,
}

/// `GET /internal/v1/audit/verify` ([`crate::audit::VerifyReport`]'s JSON).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyReportBody {
    /// The first broken link; null when intact.
    pub broken: Option<crate::chain::Broken>,
    /// Events checked.
    pub events: u64,
    pub intact: bool,
    /// Of those, events written before the chain existed.
    pub legacy_events: u64,
}

#[cfg(test)]
mod tests {
    fn paths(openapi: &utoipa::openapi::OpenApi) -> Vec<String> {
        openapi.paths.paths.keys().cloned().collect()
    }

    #[test]
    fn the_public_document_describes_every_public_route_of_api_md() {
        let openapi = crate::http::public::openapi();
        assert!(matches!(
            openapi.openapi,
            utoipa::openapi::OpenApiVersion::Version31
        ));
        let paths = paths(&openapi);
        for path in [
            "/api/v1/widget/config",
            "/api/v1/widget/auth/guest",
            "/api/v1/widget/auth/user-token",
            "/api/v1/widget/auth/exchange",
            "/api/v1/widget/auth/refresh",
            "/.well-known/jwks.json",
            "/healthz",
            "/readyz",
            "/openapi.json",
        ] {
            assert!(
                paths.contains(&path.to_owned()),
                "{path} missing: {paths:?}"
            );
        }
        assert!(!paths.iter().any(|p| p.starts_with("/internal")));
    }

    #[test]
    fn the_internal_document_describes_every_internal_route_of_api_md() {
        let paths = paths(&crate::http::internal::openapi());
        for path in [
            "/internal/v1/client-keys",
            "/internal/v1/client-keys/{id}",
            "/internal/v1/client-keys/{id}/commands",
            "/internal/v1/client-keys/{id}/events",
            "/internal/v1/client-keys/{id}/state",
            "/internal/v1/audit/verify",
            "/healthz",
            "/readyz",
            "/metrics",
            "/openapi.json",
            "/docs",
            "/console",
            "/console/{asset}",
        ] {
            assert!(
                paths.contains(&path.to_owned()),
                "{path} missing: {paths:?}"
            );
        }
        assert!(!paths.iter().any(|p| p.starts_with("/api")));
    }

    /// The router and the document are one list only if every route goes through
    /// `routes!`: a plain `.route(…)` would serve a path the document does not describe.
    #[test]
    fn no_route_is_registered_outside_the_documented_router() {
        for (file, source) in [
            ("http/mod.rs", include_str!("mod.rs")),
            ("http/public.rs", include_str!("public.rs")),
            ("http/internal.rs", include_str!("internal.rs")),
            ("http/docs.rs", include_str!("docs.rs")),
            ("http/console.rs", include_str!("console.rs")),
            ("app.rs", include_str!("../app.rs")),
        ] {
            for needle in [".route(", ".route_service(", ".nest_service("] {
                assert!(
                    !source.contains(needle),
                    "{file} registers a route with `{needle}`: use `routes!` so the OpenAPI document describes it"
                );
            }
        }
    }
}
