//! The internal (admin) listener: operators' commands on client keys and auditors' reads
//! of their history. Every `/internal/v1` request needs the admin bearer token.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::{
    AllowList, ClientKeyCommand, ClientKeyEvent, ClientKeyId, OriginPattern, PublicKey, SecretKey,
    Text, TokenPolicy, WidgetConfig,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::edge::{Answer, Edge, Listen, Routes};
use super::error::{from_value, ApiError, JsonBody};
use super::openapi::{
    self, ClientKeyCreated, ClientKeyState, ClientKeysPage, Command, CommandResult,
    CreateClientKey, ErrorBody, Spec,
};
use crate::audit;
use crate::commands::{CommandContext, Outcome};
use crate::metrics::Listener;
use crate::state::AppState;
use crate::store::EventMetadata;

/// Admin bodies carry whole configs; still bounded so a bad client cannot exhaust memory.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;
const MAX_PAGE: u64 = 1000;
/// A checkpoint carries every key's head (about 130 bytes each): room for a million keys.
const CHECKPOINT_BODY_LIMIT: usize = 160 * 1024 * 1024;

/// The `/internal/v1` routes with their OpenAPI descriptions (the admin check is layered
/// on in [`router`]: it needs the state, the document does not).
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_client_key, list_client_keys))
        .routes(routes!(get_client_key))
        .routes(routes!(run_command))
        .routes(routes!(client_key_events))
        .routes(routes!(client_key_state))
        .routes(routes!(verify_chain))
        .routes(routes!(take_checkpoint))
        .merge(
            // A checkpoint carries every key's head: this one route takes large bodies.
            OpenApiRouter::new()
                .routes(routes!(verify_against_checkpoint))
                .layer(DefaultBodyLimit::max(CHECKPOINT_BODY_LIMIT)),
        )
}

/// Every internal route with its OpenAPI description: the one list the router and
/// `/openapi.json` are both made of (see [`super::openapi`]).
fn routes(v1: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<openapi::InternalApi as utoipa::OpenApi>::openapi())
        .nest("/internal/v1", v1)
        .merge(super::probes())
        .routes(routes!(render_metrics))
        .routes(routes!(openapi_json))
        .merge(super::docs::routes())
        .merge(super::console::routes())
}

/// The internal listener's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(v1_routes()).into_openapi()
}

static SPEC: Spec = Spec::new(|| openapi::to_bytes(&openapi()));

/// This listener's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    SPEC.response()
}

/// The internal listener's service: the routes inside [`Edge`], as [`Internal`] says.
pub fn router(state: AppState) -> InternalEdge {
    let v1 = v1_routes().fallback(|| async { ApiError::not_found("no such endpoint") });
    // The checkpoint route's own, larger limit is set inside, closer to its handler.
    Edge::new(state, routes(v1), ADMIN_BODY_LIMIT)
}

pub type InternalEdge = Edge<Internal>;

/// What every internal request passes through:
/// - its request id set on the request before the span is made (commands record it in
///   their events' metadata);
/// - the admin check, before routing: without the token, a path under `/internal/v1`
///   that does not exist answers exactly like one that does (no route discovery).
#[derive(Debug)]
pub enum Internal {}

impl Listen for Internal {
    const LISTENER: Listener = Listener::Internal;

    fn routes() -> &'static Routes {
        static ROUTES: LazyLock<Routes> = LazyLock::new(|| Routes::of(openapi()));
        &ROUTES
    }

    fn prepare(request: &mut Request) {
        let id = super::request_id(request);
        request.headers_mut().insert(super::REQUEST_ID, id);
    }

    fn answer(state: &AppState, _route: Option<&'static str>, request: Request) -> Answer {
        if admitted(state, &request) {
            Answer::Route(request)
        } else {
            Answer::Here(ApiError::unauthorized("missing or invalid admin token").into_response())
        }
    }
}

/// Every request under `/internal/v1` needs the admin token, whether or not its path
/// names an endpoint; probes, metrics, docs and the console outside it need none.
fn admitted(state: &AppState, request: &Request) -> bool {
    let guarded = request
        .uri()
        .path()
        .strip_prefix("/internal/v1")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    !guarded || super::bearer(request.headers()).is_some_and(|token| state.admin.verify(token))
}

/// Longest the store health check of a scrape may take before it counts as down.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /metrics`: the Prometheus text exposition, with the store's health checked now.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
async fn render_metrics(State(state): State<AppState>) -> Response {
    let store_up = matches!(
        tokio::time::timeout(HEALTH_TIMEOUT, state.store.health_check()).await,
        Ok(Ok(()))
    );
    let body = state
        .metrics
        .render(state.directory.is_ready(), state.directory.len(), store_up);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

fn parse_id(id: &str) -> Result<ClientKeyId, ApiError> {
    ClientKeyId::parse(id).map_err(|_| ApiError::not_found("client key not found"))
}

/// Actor, time, request id, reason and the idempotency record for a command.
fn command_context(
    state: &AppState,
    headers: &HeaderMap,
    reason: Option<Text>,
    expected_version: Option<u64>,
    fingerprint: &[u8],
) -> Result<CommandContext, ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().ok().map(str::trim).unwrap_or("");
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::bad_request(
                    "Idempotency-Key must be 1 to 255 visible characters",
                ));
            }
            Some(key.to_owned())
        }
    };
    let request_id = headers
        .get(super::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        // `to_str` holds only visible ASCII, so any byte is a character boundary: cut it
        // there rather than collect it a `char` at a time.
        .map(|v| v[..v.len().min(super::MAX_REQUEST_ID)].to_owned())
        .unwrap_or_default();
    Ok(CommandContext {
        metadata: EventMetadata {
            actor: state.admin.actor().to_owned(),
            at: state.commands.services().now(),
            request_id,
            reason: reason.map(String::from),
            idempotency_key,
            request_hash: Some(hex::encode(Sha256::digest(fingerprint))),
            chain: None,
        },
        expected_version,
    })
}

/// Pulls the fields every admin body may carry (`reason`, `expected_version`) out of it,
/// so the rest can be parsed strictly (unknown fields refused).
fn take_common(body: &mut Value) -> Result<(Option<Text>, Option<u64>), ApiError> {
    let Some(object) = body.as_object_mut() else {
        return Err(ApiError::bad_request(
            "invalid JSON body: expected a JSON object",
        ));
    };
    let reason = match object.remove("reason") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            from_value::<Text>(value)
                .map_err(|e| ApiError::bad_request(format!("reason: {}", e.message)))?,
        ),
    };
    let expected_version = match object.remove("expected_version") {
        None | Some(Value::Null) => None,
        Some(value) => Some(from_value::<u64>(value).map_err(|_| {
            ApiError::bad_request("expected_version must be a non-negative integer")
        })?),
    };
    Ok((reason, expected_version))
}

fn canonical(body: &Value, scope: &str) -> Vec<u8> {
    // serde_json's map is ordered, so equal bodies serialize equally.
    let mut bytes = scope.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(body.to_string().as_bytes());
    bytes
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: Text,
    origins: Vec<OriginPattern>,
    #[serde(default)]
    config: WidgetConfig,
    #[serde(default)]
    token_policy: TokenPolicy,
}

#[utoipa::path(post, path = "/client-keys", tag = "client keys",
    summary = "Create a client key",
    security(("admin_token" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "1 to 255 characters: a retry with it returns the first answer")),
    request_body(content = CreateClientKey),
    responses(
        (status = 201, description = "Created; `secret_key` is shown here once", body = ClientKeyCreated),
        (status = 400, description = "Invalid body, origin entry, config or policy (the message names it)", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 409, description = "The Idempotency-Key belongs to another request", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn create_client_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let fingerprint = canonical(&body, "create");
    let (reason, _) = take_common(&mut body)?;
    let request: CreateRequest = from_value(body)?;
    // The domain's rule for names; the length and character rules held while parsing.
    let name = Text::parse_non_empty(request.name.as_str())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: name: {e}")))?;
    let context = command_context(&state, &headers, reason, None, &fingerprint)?;
    let (id, public_key, secret_key) = {
        let mut rng = rand::rng();
        (
            ClientKeyId::generate(&mut rng),
            PublicKey::generate(&mut rng),
            SecretKey::generate(&mut rng),
        )
    };
    let command = ClientKeyCommand::Create {
        id: id.clone(),
        name,
        public_key: public_key.clone(),
        secret_key: secret_key.fingerprint(),
        origins: AllowList::new(request.origins),
        config: request.config,
        token_policy: request.token_policy,
    };
    let outcome = state
        .commands
        .execute(id.as_str(), command, context)
        .await?;
    if outcome.event.is_some() && !outcome.replayed {
        state.metrics.command_committed();
    }
    if outcome.replayed {
        // The secret was shown once, to the first attempt; the store never had it.
        let (id, public_key) = match outcome.event.as_ref().map(|e| &e.event) {
            Some(ClientKeyEvent::ClientKeyCreated { id, public_key, .. }) => {
                (id.clone(), public_key.clone())
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    "this Idempotency-Key belongs to another request",
                ))
            }
        };
        let body = json!({ "id": id, "public_key": public_key, "version": outcome.version });
        return Ok(replayed((StatusCode::CREATED, Json(body)).into_response()));
    }
    let body = json!({
        "id": id,
        "public_key": public_key,
        "secret_key": secret_key.expose_secret(),
        "version": outcome.version,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// The command types of API.md, in the order the docs list them.
const COMMAND_TYPES: &str = "change_origins, update_config, set_token_policy, rotate_secret_key, \
     rotate_public_key, expire_previous_keys, revoke_sessions, disable, enable";

// One body struct per command type. Dispatching on `type` by hand (instead of a serde
// internally tagged enum, which buffers its input) keeps the path of a bad field in the
// error message: `config.branding.primary_color: must be a colour like #1A2B3C`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Origins {
    origins: Vec<OriginPattern>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    config: WidgetConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    policy: TokenPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Grace {
    grace_seconds: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    user_id: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Nothing {}

#[utoipa::path(post, path = "/client-keys/{id}/commands", tag = "client keys",
    summary = "Run one command on a client key",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The client key's id"), ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 characters: a retry with it returns the first answer")),
    request_body(content = Command),
    responses(
        (status = 200, description = "Applied (or it changed nothing: `event` is null)", body = CommandResult),
        (status = 400, description = "Invalid command (the message names the field)", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "Unknown client key", body = ErrorBody),
        (status = 409, description = "`expected_version` is stale, or the Idempotency-Key belongs to another request", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn run_command(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let fingerprint = canonical(&body, id.as_str());
    let (reason, expected_version) = take_common(&mut body)?;
    let kind = match body.as_object_mut().and_then(|o| o.remove("type")) {
        Some(Value::String(kind)) => kind,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid JSON body: type: expected a string",
            ))
        }
        None => {
            return Err(ApiError::bad_request(
                "invalid JSON body: missing field `type`",
            ))
        }
    };
    let mut new_secret = None;
    let command = match kind.as_str() {
        "change_origins" => ClientKeyCommand::ChangeOrigins {
            origins: AllowList::new(from_value::<Origins>(body)?.origins),
        },
        "update_config" => ClientKeyCommand::UpdateConfig {
            config: from_value::<Config>(body)?.config,
        },
        "set_token_policy" => ClientKeyCommand::SetTokenPolicy {
            policy: from_value::<Policy>(body)?.policy,
        },
        "rotate_secret_key" => {
            let grace_seconds = from_value::<Grace>(body)?.grace_seconds;
            let secret = SecretKey::generate(&mut rand::rng());
            let command = ClientKeyCommand::RotateSecretKey {
                new_secret_key: secret.fingerprint(),
                grace_seconds,
            };
            new_secret = Some(secret);
            command
        }
        "rotate_public_key" => ClientKeyCommand::RotatePublicKey {
            grace_seconds: from_value::<Grace>(body)?.grace_seconds,
            new_public_key: PublicKey::generate(&mut rand::rng()),
        },
        "revoke_sessions" => ClientKeyCommand::RevokeSessions {
            user_id: from_value::<Revoke>(body)?.user_id,
        },
        simple @ ("expire_previous_keys" | "disable" | "enable") => {
            from_value::<Nothing>(body)?;
            match simple {
                "expire_previous_keys" => ClientKeyCommand::ExpirePreviousKeys,
                "disable" => ClientKeyCommand::Disable,
                _ => ClientKeyCommand::Enable,
            }
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown command type `{other}`; expected one of {COMMAND_TYPES}"
            )))
        }
    };
    let context = command_context(&state, &headers, reason, expected_version, &fingerprint)?;
    let outcome = state
        .commands
        .execute(id.as_str(), command, context)
        .await?;
    if outcome.event.is_some() && !outcome.replayed {
        state.metrics.command_committed();
    }
    let mut body = command_response(&id, &outcome);
    if let (Some(secret), false) = (new_secret, outcome.replayed) {
        body["secret_key"] = json!(secret.expose_secret());
    }
    let response = Json(body).into_response();
    Ok(if outcome.replayed {
        replayed(response)
    } else {
        response
    })
}

fn command_response(id: &ClientKeyId, outcome: &Outcome) -> Value {
    let mut body = json!({
        "id": id,
        "version": outcome.version,
        "event": outcome.event.as_ref().map(|e| e.event.name()),
    });
    match outcome.event.as_ref().map(|e| &e.event) {
        Some(ClientKeyEvent::PublicKeyRotated {
            public_key,
            previous_valid_until,
            ..
        }) => {
            body["public_key"] = json!(public_key);
            body["previous_valid_until"] = json!(previous_valid_until);
        }
        Some(ClientKeyEvent::SecretKeyRotated {
            secret_key,
            previous_valid_until,
            ..
        }) => {
            body["secret_key_last_four"] = json!(secret_key.last_four);
            body["previous_valid_until"] = json!(previous_valid_until);
        }
        _ => {}
    }
    body
}

#[utoipa::path(get, path = "/client-keys/{id}", tag = "client keys",
    summary = "A client key's current state (no secrets)",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The client key's id")),
    responses(
        (status = 200, description = "The key", body = ClientKeyState),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "Unknown client key", body = ErrorBody),
    ))]
async fn get_client_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    state
        .directory
        .by_id(id.as_str())
        .map(|view| Json(view.to_admin_json()))
        .ok_or_else(|| ApiError::not_found("client key not found"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<u64>,
}

#[utoipa::path(get, path = "/client-keys", tag = "client keys",
    summary = "Client keys, a page at a time, in id order",
    security(("admin_token" = [])),
    params(
        ("after" = Option<String>, Query, description = "The `next_after` of the previous page"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Page size, default 100"),
    ),
    responses(
        (status = 200, description = "One page", body = ClientKeysPage),
        (status = 400, description = "Bad `limit` or an unknown parameter", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
    ))]
async fn list_client_keys(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let views = state
        .directory
        .list(query.after.as_deref(), limit as usize + 1);
    let more = views.len() > limit as usize;
    let page: Vec<Value> = views
        .iter()
        .take(limit as usize)
        .map(|v| v.to_admin_json())
        .collect();
    let next_after = if more {
        page.last().map(|v| v["id"].clone())
    } else {
        None
    };
    Ok(Json(
        json!({ "client_keys": page, "next_after": next_after }),
    ))
}

fn page_limit(limit: Option<u64>) -> Result<u64, ApiError> {
    match limit {
        None => Ok(100),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::bad_request("limit must be between 1 and 1000")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<u64>,
}

#[utoipa::path(get, path = "/client-keys/{id}/events", tag = "audit",
    summary = "A key's events in order, a page at a time",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The client key's id"),
        ("after" = Option<u64>, Query, description = "Events with a greater sequence (default 0)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Page size, default 100"),
    ),
    responses(
        (status = 200, description = "One page", body = crate::audit::EventsPage),
        (status = 400, description = "Bad `after`, `limit` or an unknown parameter", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "Unknown client key", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn client_key_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<audit::EventsPage>, ApiError> {
    let id = parse_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let page =
        audit::events_page(&state.store, id.as_str(), query.after.unwrap_or(0), limit).await?;
    match page {
        Some(page) => Ok(Json(page)),
        None => Err(ApiError::not_found("client key not found")),
    }
}

#[utoipa::path(get, path = "/client-keys/{id}/state", tag = "audit",
    summary = "A key as it stood right after event N, or at a time, rebuilt from its history",
    description = "Give exactly one of `at_sequence` and `at`.",
    security(("admin_token" = [])),
    params(("id" = String, Path, description = "The client key's id"),
        ("at_sequence" = Option<u64>, Query, description = "An event's sequence"),
        ("at" = Option<String>, Query, format = DateTime, description = "An RFC 3339 time"),
    ),
    responses(
        (status = 200, description = "The key then", body = ClientKeyState),
        (status = 400, description = "Neither or both points, or a malformed one", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 404, description = "Unknown client key, or it did not exist yet", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn client_key_state(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let point = match (query.get("at_sequence"), query.get("at")) {
        (Some(sequence), None) => audit::Point::Sequence(
            sequence
                .parse()
                .map_err(|_| ApiError::bad_request("at_sequence must be a positive integer"))?,
        ),
        (None, Some(at)) => audit::Point::Time(
            DateTime::parse_from_rfc3339(at)
                .map_err(|_| {
                    ApiError::bad_request("at must be an RFC 3339 time like 2026-01-31T12:00:00Z")
                })?
                .with_timezone(&Utc),
        ),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of at_sequence or at",
            ))
        }
    };
    match audit::state_at(&state.store, id.as_str(), point).await? {
        audit::StateAt::Found(view) => Ok(Json(view.to_admin_json())),
        audit::StateAt::UnknownKey => Err(ApiError::not_found("client key not found")),
        audit::StateAt::NotYetCreated => Err(ApiError::not_found(
            "the client key did not exist at that point",
        )),
    }
}

/// The tamper-evidence chain over the whole store, checked now (the same code as
/// `widget-auth audit verify`). A broken chain is still a 200: the check itself worked.
#[utoipa::path(get, path = "/audit/verify", tag = "audit",
    summary = "Check the tamper-evidence chain over the whole store now",
    description = "A broken chain is still a 200 (`intact: false`, `broken` names the first bad event).",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The report", body = openapi::VerifyReportBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 503, description = "The store is unavailable", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn verify_chain(
    State(state): State<AppState>,
) -> Result<Json<audit::VerifyReport>, ApiError> {
    let report = audit::verify(&state.store, |_| {}).await?;
    if let Some(broken) = &report.broken {
        tracing::warn!(
            client_key = %broken.client_key_id,
            sequence = broken.sequence,
            problem = broken.problem.code(),
            "event chain broken"
        );
    }
    Ok(Json(report))
}

/// A signed checkpoint of every key's head (the same code as `widget-auth audit
/// checkpoint`). Refused with a 409 when the chain is already broken: a checkpoint must
/// not vouch for a tampered history.
#[utoipa::path(get, path = "/audit/checkpoint", tag = "audit",
    summary = "A signed checkpoint committing to every client key's head now",
    description = "`{format, at, events, keys, root, kid, signature, heads}`: keep it outside the database and verify the store against it later.",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The checkpoint", body = Object),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 409, description = "`chain_broken`: the stored chain is already broken", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn take_checkpoint(
    State(state): State<AppState>,
) -> Result<Json<crate::checkpoint::Checkpoint>, ApiError> {
    let now = state.commands.services().now();
    match audit::checkpoint(&state.store, &state.tokens, now).await {
        Ok(checkpoint) => Ok(Json(checkpoint)),
        Err(audit::CheckpointError::Store(err)) => Err(err.into()),
        Err(refused @ audit::CheckpointError::Broken(_)) => {
            tracing::warn!(error = %refused, "checkpoint refused");
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "chain_broken",
                refused.to_string(),
            ))
        }
    }
}

/// The store checked against a checkpoint an auditor kept (the same code as `widget-auth
/// audit verify --checkpoint`). Not intact is still a 200: the check itself worked.
#[utoipa::path(post, path = "/audit/verify", tag = "audit",
    summary = "Check the store against a checkpoint kept outside it",
    description = "Intact only when the signature verifies and every key's history still passes through the checkpoint's sequence and link; `problems` names each key that does not.",
    security(("admin_token" = [])),
    request_body(content = Object, description = "A checkpoint from `GET /internal/v1/audit/checkpoint`", content_type = "application/json"),
    responses(
        (status = 200, description = "`{intact, problems: [{client_key, sequence, problem}], ...}`", body = Object),
        (status = 400, description = "The body is not a checkpoint", body = ErrorBody),
        (status = 401, description = "Admin token missing or wrong", body = ErrorBody, headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn verify_against_checkpoint(
    State(state): State<AppState>,
    JsonBody(checkpoint): JsonBody<crate::checkpoint::Checkpoint>,
) -> Result<Json<audit::CheckpointReport>, ApiError> {
    checkpoint
        .check_form()
        .map_err(|e| ApiError::bad_request(format!("invalid checkpoint: {e}")))?;
    let report = audit::verify_checkpoint(&state.store, &state.tokens, checkpoint).await?;
    if !report.intact() {
        tracing::warn!(
            problems = report.problems.len(),
            checkpoint_at = %report.checkpoint_at,
            "the store no longer extends the checkpoint"
        );
    }
    Ok(Json(report))
}

#[cfg(test)]
mod tests {
    use super::{Internal, Listen};

    fn route_of(path: &str) -> Option<&'static str> {
        Internal::routes().route_of(path)
    }

    #[test]
    fn a_request_is_named_by_the_route_template_that_serves_it() {
        // Given paths of routes with and without parameters
        // Then each is named by its template, as `MatchedPath` would name it
        assert_eq!(
            route_of("/internal/v1/client-keys/ck_9f2a/commands"),
            Some("/internal/v1/client-keys/{id}/commands")
        );
        assert_eq!(
            route_of("/internal/v1/client-keys/ck_9f2a"),
            Some("/internal/v1/client-keys/{id}")
        );
        assert_eq!(
            route_of("/internal/v1/client-keys"),
            Some("/internal/v1/client-keys")
        );
        assert_eq!(route_of("/metrics"), Some("/metrics"));
        assert_eq!(route_of("/docs/app.js"), Some("/docs/{asset}"));
        // An empty id reaches its route, as in the router (whose handler answers 404)
        assert_eq!(
            route_of("/internal/v1/client-keys//commands"),
            Some("/internal/v1/client-keys/{id}/commands")
        );
    }

    #[test]
    fn a_path_no_route_serves_has_no_name() {
        // Given paths no route serves: unknown, a trailing slash, an extra segment
        for path in [
            "/internal/v1/nope",
            "/metrics/",
            "/internal/v1/client-keys/ck_1/commands/more",
            "/",
        ] {
            // Then none is named
            assert_eq!(route_of(path), None, "{path}");
        }
    }
}
