//! The public listener: what a visitor's browser and a customer's backend call.
//!
//! Every decision here is made from the in-memory read models (the widget directory and
//! the secret key index). The only store access is the token ledger, for the two
//! single-use rules (a visitor token exchanged once, a refresh token rotated once).
//!
//! What a session is and when a token still counts is decided in [`crate::sessions`];
//! handlers here parse the request, check its origin, ask `sessions`, write the ledger
//! and build the response.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use domain::{KeyStatus, RequestOrigin};
use projections::ClientKeyView;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::edge::{Answer, Edge, Listen, Routes};
use super::error::{to_plain_text, ApiError, JsonBody};
use super::openapi::{self, PublicConfig, Spec};
use crate::ledger::Spend;
use crate::metrics::Listener;
use crate::sessions::{self, Continuation, Identity, Refresh, SessionError};
use crate::state::AppState;
use crate::tokens::{Claims, TokenKind};

/// API.md: bodies over 16 KiB get 413.
const BODY_LIMIT: usize = 16 * 1024;

const CONFIG_PATH: &str = "/api/v1/widget/config";

/// The endpoints a browser calls: CORS preflight and `Vary: Origin` on every response.
const BROWSER_PATHS: [&str; 4] = [
    CONFIG_PATH,
    "/api/v1/widget/auth/guest",
    "/api/v1/widget/auth/exchange",
    "/api/v1/widget/auth/refresh",
];

/// Every public route with its OpenAPI description: the one list the router and
/// `/openapi.json` are both made of (see [`super::openapi`]).
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<openapi::PublicApi as utoipa::OpenApi>::openapi())
        .routes(routes!(config))
        .routes(routes!(guest))
        .routes(routes!(exchange))
        .routes(routes!(refresh))
        .routes(routes!(user_token))
        .routes(routes!(jwks))
        .routes(routes!(openapi_json))
        .routes(routes!(super::assets::widget_js))
        .merge(super::probes())
}

/// The public listener's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut openapi = routes().into_openapi();
    openapi::add_preflights(&mut openapi, &BROWSER_PATHS);
    openapi
}

static SPEC: Spec = Spec::new(|| openapi::to_bytes(&openapi()));

/// This listener's OpenAPI 3.1 document, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)))]
async fn openapi_json() -> Response {
    SPEC.response()
}

/// The public listener's service: the routes inside [`Edge`], as [`Public`] says.
pub fn router(state: AppState) -> PublicEdge {
    Edge::new(state, routes(), BODY_LIMIT)
}

pub type PublicEdge = Edge<Public>;

/// What every public response passes through, inside the request span ([`Edge`]):
/// - until the start-up replay is done the directory is partial, and answering from it
///   would turn known keys into false 403s, so the API says 503 instead;
/// - preflights answer here (they carry no body, so no client key: the per-key
///   allowlist is enforced on the actual request);
/// - browser endpoints get `Vary: Origin` on every response, errors included;
/// - errors become the contract's plain-text sentences.
#[derive(Debug)]
pub enum Public {}

impl Listen for Public {
    const LISTENER: Listener = Listener::Public;

    fn routes() -> &'static Routes {
        static ROUTES: LazyLock<Routes> = LazyLock::new(|| Routes::of(openapi()));
        &ROUTES
    }

    // Inlined into the edge: out of line, the request went in and the answer came out
    // by copy (about 300 instructions a config request).
    #[inline(always)]
    fn answer(state: &AppState, route: Option<&'static str>, request: Request) -> Answer {
        let path = request.uri().path();
        Answer::Here(if browser(route) && request.method() == Method::OPTIONS {
            preflight(request.headers())
        } else if path.starts_with("/api/") && !state.directory.is_ready() {
            ApiError::unavailable("starting up; retry shortly").into_plain_text()
        } else if path == CONFIG_PATH && request.method() == Method::GET {
            // Every page view asks for the config, and its answer needs nothing the
            // router adds: routing it cost about 4,000 instructions of its 31,000
            // (matching, `MatchedPath` and URL-parameter extensions, the boxed route
            // future, the extractors; BENCHMARKS.md).
            config_response(state, &request).unwrap_or_else(ApiError::into_plain_text)
        } else {
            return Answer::Route(request);
        })
    }

    #[inline(always)]
    fn finish(route: Option<&'static str>, response: Response) -> Response {
        let mut response = to_plain_text(response);
        if browser(route) {
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("Origin"));
        }
        response
    }
}

/// Whether `route` is one a browser calls (the route is the path itself: no public
/// route has a parameter).
fn browser(route: Option<&str>) -> bool {
    route.is_some_and(|route| BROWSER_PATHS.contains(&route))
}

fn preflight(request: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    if let Ok(Some(origin)) = single_origin(request) {
        if origin
            .to_str()
            .is_ok_and(|o| RequestOrigin::parse(o).is_ok())
        {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type"),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    response
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A browser request whose Origin is allowed for its client key.
struct Allowed {
    view: Arc<ClientKeyView>,
    /// The header exactly as sent: that is what `Access-Control-Allow-Origin` must echo.
    origin_header: HeaderValue,
    origin: RequestOrigin,
}

impl Allowed {
    fn cors(&self, mut response: Response) -> Response {
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.origin_header.clone(),
        );
        response
    }
}

/// The request's one `Origin` header. Two or more are malformed whatever their order:
/// taking the first (or the last) would let a proxy or client that adds its own header
/// decide which origin is checked.
fn single_origin(headers: &HeaderMap) -> Result<Option<&HeaderValue>, ApiError> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::forbidden("malformed Origin header"));
    }
    Ok(first)
}

fn request_origin(headers: &HeaderMap) -> Result<(HeaderValue, RequestOrigin), ApiError> {
    let Some(value) = single_origin(headers)? else {
        return Err(ApiError::forbidden("missing Origin header"));
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::forbidden("malformed Origin header"))?;
    if text == "null" {
        return Err(ApiError::forbidden("origin null is not allowed"));
    }
    let origin =
        RequestOrigin::parse(text).map_err(|_| ApiError::forbidden("malformed Origin header"))?;
    Ok((value.clone(), origin))
}

/// The key a public key names, if it is the current one or a previous one still in
/// grace. A malformed key gets the unknown key's answer: the directory holds only
/// well-formed keys, and refuses a text of the wrong length before hashing it, so the
/// lookup itself is the format check (it costs less than checking the format and
/// checksum first did, on every request).
fn key_for_public_key(state: &AppState, public_key: &str) -> Result<Arc<ClientKeyView>, ApiError> {
    let unknown = || ApiError::forbidden("unknown client_key");
    let view = state
        .directory
        .by_public_key(public_key)
        .ok_or_else(unknown)?;
    usable(&view, public_key)?;
    Ok(view)
}

/// Whether `view`, found under `public_key`, may be used with it now.
fn usable(view: &ClientKeyView, public_key: &str) -> Result<(), ApiError> {
    if !view.state().accepts_public_key(public_key, Utc::now) {
        return Err(ApiError::forbidden("unknown client_key"));
    }
    if view.state().status == KeyStatus::Disabled {
        return Err(ApiError::forbidden("client key disabled"));
    }
    Ok(())
}

fn allowed_origin(
    view: &ClientKeyView,
    headers: &HeaderMap,
) -> Result<(HeaderValue, RequestOrigin), ApiError> {
    let (header, origin) = request_origin(headers)?;
    check_origin(view, &origin)?;
    Ok((header, origin))
}

/// Counts a refused Origin in `/metrics` on the error's way out.
fn origin_refused(state: &AppState) -> impl Fn(&ApiError) + '_ {
    |_| state.metrics.origin_rejected()
}

fn check_origin(view: &ClientKeyView, origin: &RequestOrigin) -> Result<(), ApiError> {
    if view.state().origins.allows(origin) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "origin not in allowlist for this client_key",
        ))
    }
}

fn authorize_browser(
    state: &AppState,
    client_key: Option<&str>,
    headers: &HeaderMap,
) -> Result<Allowed, ApiError> {
    let client_key = client_key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing client_key"))?;
    // Origin syntax first: a request without a usable Origin is refused the same way
    // whatever key it names.
    let (origin_header, origin) = request_origin(headers).inspect_err(origin_refused(state))?;
    let view = key_for_public_key(state, client_key)?;
    check_origin(&view, &origin).inspect_err(origin_refused(state))?;
    Ok(Allowed {
        view,
        origin_header,
        origin,
    })
}

/// [`authorize_browser`] for config, which needs the key and the `Origin` header but not
/// the parsed origin (tokens carry it, config does not). The common case, an `Origin`
/// sent exactly as the allowlist holds it, is accepted without parsing it (about 800
/// instructions of config's cost); anything else, every refusal included, takes the
/// full check, so errors and their order are the same as on the other endpoints.
fn authorize_config(
    state: &AppState,
    client_key: Option<&str>,
    headers: &HeaderMap,
) -> Result<(Arc<ClientKeyView>, HeaderValue), ApiError> {
    if let (Some(key), Ok(Some(origin))) = (client_key, single_origin(headers)) {
        if let Some(view) = state.directory.by_public_key(key) {
            let listed = origin
                .to_str()
                .is_ok_and(|text| view.state().origins.lists_exactly(text));
            if listed && usable(&view, key).is_ok() {
                return Ok((view, origin.clone()));
            }
        }
    }
    let allowed = authorize_browser(state, client_key, headers)?;
    Ok((allowed.view, allowed.origin_header))
}

/// `client_key` from the query string. Keys are base62, so the common case borrows the
/// raw text; anything percent- or plus-encoded goes through the form decoder.
fn client_key_param(uri: &Uri) -> Option<Cow<'_, str>> {
    let raw = uri
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("client_key="))?;
    if raw.contains(['%', '+']) {
        return url::form_urlencoded::parse(format!("client_key={raw}").as_bytes())
            .next()
            .map(|(_, value)| Cow::Owned(value.into_owned()));
    }
    Some(Cow::Borrowed(raw))
}

/// Takes the whole request to read its URI and headers in place: the `Uri` and
/// `HeaderMap` extractors would clone both on the busiest endpoint.
#[utoipa::path(get, path = "/api/v1/widget/config", tag = "widget",
    summary = "The widget's public config",
    description = "Served from the read model. The `Origin` header must be in the key's allowlist.",
    params(
        ("client_key" = String, Query, description = "The public key, `pk_live_…`"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag of an earlier answer"),
    ),
    responses(
        (status = 200, description = "The config", body = PublicConfig, headers(
            ("ETag" = String, description = "The config's version tag"),
            ("Cache-Control" = String, description = "`no-cache`: revalidate with the ETag"),
            ("Access-Control-Allow-Origin" = String, description = "The request's Origin"),
            ("Vary" = String, description = "`Origin`"))),
        (status = 304, description = "Unchanged since the ETag in `If-None-Match`", headers(
            ("ETag" = String), ("Access-Control-Allow-Origin" = String), ("Vary" = String))),
        (status = 400, description = "`missing client_key`", content_type = "text/plain", body = String),
        (status = 403, description = "Origin absent, `null`, malformed or not allowed; key unknown or disabled (the body says which). No CORS headers.", content_type = "text/plain", body = String),
        (status = 503, description = "Starting up", content_type = "text/plain", body = String, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn config(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    config_response(&state, &request)
}

/// The config answer; [`PublicEdge`] calls it directly for a `GET`, the router (through
/// [`config`]) for a `HEAD`.
fn config_response(state: &AppState, request: &Request) -> Result<Response, ApiError> {
    let (uri, headers) = (request.uri(), request.headers());
    let client_key = client_key_param(uri);
    let (view, origin) = authorize_config(state, client_key.as_deref(), headers)?;
    let etag = HeaderValue::from_str(view.etag()).map_err(|e| ApiError::internal(&e))?;
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == view.etag() || t.trim() == "*")
        });
    // Sized once for every header this answer gets, here and on the way out (ETag,
    // Cache-Control, Content-Type, Content-Length, Access-Control-Allow-Origin, Vary,
    // X-Request-Id): a map left to grow is allocated twice and rehashed once.
    let mut headers = HeaderMap::with_capacity(8);
    let mut response = if not_modified {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Response::new(axum::body::Body::from(view.config_body().clone()))
    };
    headers.insert(header::ETAG, etag);
    // Revalidate every time (cheap with the ETag) so a config change shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    *response.headers_mut() = headers;
    Ok(response)
}

#[derive(Serialize, ToSchema)]
struct SessionResponse {
    token: String,
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    expires_in: u32,
    refresh_token: String,
    refresh_expires_in: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    visitor_id: Option<String>,
}

/// Signs `claims` and counts the token.
fn mint(state: &AppState, claims: &Claims) -> Result<String, ApiError> {
    let token = state
        .tokens
        .mint(claims)
        .map_err(|e| ApiError::internal(&e))?;
    state.metrics.token_minted(claims.kind);
    Ok(token)
}

/// A new session (and refresh token: the recorded successor when `continuing` a family,
/// else the first of a new family) for `identity` at the allowed origin, as the response
/// the widget receives.
fn session_response(
    state: &AppState,
    allowed: &Allowed,
    identity: &Identity,
    continuing: Option<&Continuation>,
    visitor_id: Option<String>,
) -> Result<Response, ApiError> {
    let now = Utc::now().timestamp();
    let pair = sessions::session_pair(
        &allowed.view,
        identity,
        &allowed.origin,
        continuing,
        &state.settings.issuer,
        now,
    );
    let body = SessionResponse {
        token: mint(state, &pair.session)?,
        token_type: "Bearer",
        expires_in: pair.expires_in,
        refresh_token: mint(state, &pair.refresh)?,
        refresh_expires_in: pair.refresh_expires_in,
        visitor_id,
    };
    Ok(allowed.cors(token_response(&body)))
}

/// Token responses must never be cached (API.md).
fn token_response(body: &impl Serialize) -> Response {
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The client's address for the abuse limits: the TCP peer, or, behind a trusted proxy,
/// what its `X-Forwarded-For` says (see [`crate::limits::TrustedProxies::client_ip`]).
/// Not worked out when the limits are off.
struct ClientIp(IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Without the connection's address (a router called without a listener) every
        // request counts as one unknown client.
        let unknown = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        if !state.limiter.enabled() {
            return Ok(Self(unknown));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(unknown, |ConnectInfo(addr)| addr.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        Ok(Self(
            state.settings.trusted_proxies.client_ip(peer, forwarded),
        ))
    }
}

/// Route labels of `widget_auth_rate_limited_total`.
const GUEST_ROUTE: &str = BROWSER_PATHS[1];
const USER_TOKEN_ROUTE: &str = "/api/v1/widget/auth/user-token";

#[derive(Deserialize, ToSchema)]
struct GuestRequest {
    #[schema(required = true)]
    client_key: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/widget/auth/guest", tag = "widget",
    summary = "A session for a new guest",
    description = "The `Origin` header must be in the key's allowlist.",
    request_body(content = GuestRequest, description = "JSON (also accepted as `text/plain`)"),
    responses(
        (status = 200, description = "A session JWT for `/connect` and its refresh token", body = SessionResponse, headers(
            ("Cache-Control" = String, description = "`no-store`"),
            ("Access-Control-Allow-Origin" = String, description = "The request's Origin"),
            ("Vary" = String, description = "`Origin`"))),
        (status = 400, description = "`missing client_key`, or a body that is not one JSON object of the right types", content_type = "text/plain", body = String),
        (status = 403, description = "Origin not allowed, key unknown or disabled, or guests switched off", content_type = "text/plain", body = String),
        (status = 413, description = "Body over 16 KiB", content_type = "text/plain", body = String),
        (status = 429, description = "`rate limit exceeded` (per key and per key and client IP)", content_type = "text/plain", body = String, headers(
            ("Retry-After" = u32, description = "Whole seconds, at least 1"),
            ("Access-Control-Allow-Origin" = String), ("Vary" = String))),
        (status = 503, description = "Starting up", content_type = "text/plain", body = String, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn guest(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    JsonBody(body): JsonBody<GuestRequest>,
) -> Result<Response, ApiError> {
    let allowed = authorize_browser(&state, body.client_key.as_deref(), &headers)?;
    let policy = &allowed.view.state().token_policy;
    let identity = Identity::guest(policy)?;
    // After every check that refuses (400/403), so a refused request spends no budget;
    // the 429 carries the allowed origin's CORS headers so the widget can read it.
    if let Err(limited) = state
        .limiter
        .guest(&allowed.view.state().id, ip, policy.limits())
    {
        state.metrics.rate_limited(GUEST_ROUTE);
        let mut response = allowed.cors(ApiError::from(limited).into_response());
        // A page may read only the safelisted response headers unless told otherwise, and
        // the widget needs `Retry-After` to know when to try again.
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
        return Ok(response);
    }
    let visitor_id = Some(identity.sub.clone());
    session_response(&state, &allowed, &identity, None, visitor_id)
}

/// `Authorization: Bearer sk_live_…`, checked before the body is read.
struct SecretKeyAuth(Arc<ClientKeyView>);

impl FromRequestParts<AppState> for SecretKeyAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = super::bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing secret key"))?;
        let view =
            sessions::authenticate_secret_key(&state.directory, presented.trim(), Utc::now())?;
        Ok(Self(view))
    }
}

#[derive(Deserialize, ToSchema)]
struct UserTokenRequest {
    #[schema(required = true)]
    client_key: Option<String>,
    #[schema(required = true)]
    user_id: Option<String>,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct VisitorTokenResponse {
    visitor_token: String,
    expires_in: u32,
}

#[utoipa::path(post, path = "/api/v1/widget/auth/user-token", tag = "backend",
    summary = "A visitor token for one of the customer's users (server to server)",
    description = "Authenticated with the key's secret key. No Origin check, no CORS headers.",
    security(("secret_key" = [])),
    request_body(content = UserTokenRequest),
    responses(
        (status = 200, description = "A short-lived JWT bound to `user_id`, for the widget to exchange", body = VisitorTokenResponse, headers(
            ("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`missing client_key or user_id`, or a malformed body", content_type = "text/plain", body = String),
        (status = 401, description = "Secret key missing, unknown, revoked, past its grace period, or of another client key", content_type = "text/plain", body = String, headers(
            ("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 403, description = "`client key disabled`", content_type = "text/plain", body = String),
        (status = 413, description = "Body over 16 KiB", content_type = "text/plain", body = String),
        (status = 429, description = "`rate limit exceeded` (per key)", content_type = "text/plain", body = String, headers(
            ("Retry-After" = u32, description = "Whole seconds, at least 1"))),
        (status = 503, description = "Starting up", content_type = "text/plain", body = String, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn user_token(
    State(state): State<AppState>,
    SecretKeyAuth(view): SecretKeyAuth,
    JsonBody(body): JsonBody<UserTokenRequest>,
) -> Result<Response, ApiError> {
    let (Some(client_key), Some(user_id)) = (
        body.client_key.filter(|k| !k.is_empty()),
        body.user_id.filter(|u| !u.is_empty()),
    ) else {
        return Err(ApiError::bad_request("missing client_key or user_id"));
    };
    // The secret key must belong to the client key named in the body.
    sessions::authorize_visitor_token(&view, &client_key, Utc::now)?;
    let identity = Identity::user(&user_id, body.name.as_deref(), body.email.as_deref())?;
    // Last, so a refused request (400/401/403) spends no budget.
    if let Err(limited) = state
        .limiter
        .user_token(&view.state().id, view.state().token_policy.limits())
    {
        state.metrics.rate_limited(USER_TOKEN_ROUTE);
        return Err(limited.into());
    }
    let visitor = sessions::visitor_claims(
        &view,
        &identity,
        &state.settings.issuer,
        Utc::now().timestamp(),
    );
    Ok(token_response(&VisitorTokenResponse {
        visitor_token: mint(&state, &visitor)?,
        expires_in: view.state().token_policy.visitor_token_ttl_seconds(),
    }))
}

/// Verifies a presented token of `kind` and finds its client key (see
/// [`sessions::verify_presented`]).
fn verify_presented(
    state: &AppState,
    token: &str,
    kind: TokenKind,
) -> Result<(Claims, Arc<ClientKeyView>), ApiError> {
    Ok(sessions::verify_presented(
        &state.tokens,
        &state.settings.issuer,
        &state.directory,
        token,
        kind,
        Utc::now().timestamp(),
    )?)
}

#[derive(Deserialize, ToSchema)]
struct ExchangeRequest {
    /// The visitor token from the customer's backend.
    #[schema(required = true)]
    token: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/widget/auth/exchange", tag = "widget",
    summary = "Exchange a visitor token for a session (once)",
    description = "The `Origin` header must be in the token's client key's allowlist.",
    request_body(content = ExchangeRequest, description = "JSON (also accepted as `text/plain`)"),
    responses(
        (status = 200, description = "A session for the identity in the visitor token", body = SessionResponse, headers(
            ("Cache-Control" = String, description = "`no-store`"),
            ("Access-Control-Allow-Origin" = String, description = "The request's Origin"),
            ("Vary" = String, description = "`Origin`"))),
        (status = 400, description = "Token missing, malformed, badly signed, expired, of another kind, already exchanged, or its key disabled or its sessions revoked", content_type = "text/plain", body = String),
        (status = 403, description = "Origin not in the key's current allowlist", content_type = "text/plain", body = String),
        (status = 413, description = "Body over 16 KiB", content_type = "text/plain", body = String),
        (status = 503, description = "Starting up, or the store is down (a single-use rule cannot be checked)", content_type = "text/plain", body = String, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn exchange(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ExchangeRequest>,
) -> Result<Response, ApiError> {
    let token = body
        .token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing token"))?;
    let (claims, view) = verify_presented(&state, &token, TokenKind::Visitor)?;
    let (origin_header, origin) =
        allowed_origin(&view, &headers).inspect_err(origin_refused(&state))?;
    // Last, so a refused request does not burn the token.
    let used = state
        .store
        .use_token(&claims.jti, "visitor", now_ms(), claims.exp)
        .await?;
    sessions::first_exchange(used)?;
    let visitor_id = claims.sub.clone();
    let allowed = Allowed {
        view,
        origin_header,
        origin,
    };
    let identity = Identity::exchanged(claims);
    session_response(&state, &allowed, &identity, None, Some(visitor_id))
}

#[derive(Deserialize, ToSchema)]
struct RefreshRequest {
    #[schema(required = true)]
    refresh_token: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/widget/auth/refresh", tag = "widget",
    summary = "Rotate a refresh token: a new session and the family's next refresh token",
    description = "Presenting a spent refresh token again (outside a 10 s retry grace) revokes its whole family.",
    request_body(content = RefreshRequest, description = "JSON (also accepted as `text/plain`)"),
    responses(
        (status = 200, description = "A new session and the rotated refresh token (no `visitor_id`)", body = SessionResponse, headers(
            ("Cache-Control" = String, description = "`no-store`"),
            ("Access-Control-Allow-Origin" = String, description = "The request's Origin"),
            ("Vary" = String, description = "`Origin`"))),
        (status = 400, description = "Token missing, malformed, badly signed, expired, of another kind or revoked; guests switched off for a guest family", content_type = "text/plain", body = String),
        (status = 403, description = "Origin absent, not allowed, or not the one the token was minted for", content_type = "text/plain", body = String),
        (status = 413, description = "Body over 16 KiB", content_type = "text/plain", body = String),
        (status = 503, description = "Starting up, or the store is down", content_type = "text/plain", body = String, headers(("Retry-After" = u32, description = "Seconds"))),
    ))]
async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RefreshRequest>,
) -> Result<Response, ApiError> {
    let token = body
        .refresh_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing refresh_token"))?;
    let (claims, view) = verify_presented(&state, &token, TokenKind::Refresh)?;
    let (origin_header, origin) =
        allowed_origin(&view, &headers).inspect_err(origin_refused(&state))?;
    let family = sessions::refresh_family(&claims, &origin).inspect_err(|err| {
        if matches!(err, SessionError::OriginMismatch) {
            state.metrics.origin_rejected();
        }
    })?;
    let now = now_ms();
    let now_secs = now.div_euclid(1000);
    sessions::may_continue(&claims, &view, now_secs)?;
    // The successor is decided before the write and recorded by it: the same statement
    // spends the token, checks that neither the family nor (after the version decided
    // on here) the key was revoked, and stores what the token became.
    let successor = sessions::successor(&claims, &view, now_secs);
    let outcome = state
        .store
        .spend_refresh_token(&Spend {
            client_key: &claims.ck,
            seen_version: view.version() as i64,
            family: &family,
            spent_jti: &claims.jti,
            successor: &successor,
            now_ms: now,
            ends_at: successor.exp.max(claims.exp),
        })
        .await?;
    let successor = match sessions::after_spend(&claims, outcome, now) {
        Refresh::Rotated => successor,
        Refresh::Retry(recorded) => {
            tracing::debug!(family = %family, "refresh retried within the grace period");
            recorded
        }
        Refresh::Revoked => {
            return Err(SessionError::Revoked {
                kind: TokenKind::Refresh,
            }
            .into())
        }
        Refresh::KeyChanged => {
            return Err(ApiError::unavailable(
                "the client key changed moments ago; retry shortly",
            ))
        }
        Refresh::ReuseDetected(revocation) => {
            let revoked = state
                .store
                .revoke_refresh_family(
                    &family,
                    revocation.revoked_at,
                    revocation.generation,
                    revocation.ends_at,
                )
                .await?;
            if revoked {
                state.metrics.refresh_reuse_detected();
                tracing::warn!(
                    client_key = %claims.ck,
                    family = %family,
                    generation_replayed = ?revocation.generation,
                    "spent refresh token presented again; family revoked"
                );
            }
            return Err(SessionError::RefreshReused.into());
        }
    };
    // A revocation, disabling or policy change that reached this node while the write
    // was in flight still wins: nothing is handed out that it would refuse.
    let view = sessions::key_still_counts(&state.directory, &claims, TokenKind::Refresh)?;
    sessions::may_continue(&claims, &view, now_secs)?;
    let continuing = Continuation {
        family,
        started_at: sessions::family_started_at(&claims),
        successor,
    };
    let allowed = Allowed {
        view,
        origin_header,
        origin,
    };
    let identity = Identity::refreshed(claims);
    session_response(&state, &allowed, &identity, Some(&continuing), None)
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "tokens",
    summary = "The public keys that verify our tokens (RFC 7517)",
    responses((status = 200, description = "Every key that may have signed a live token, and the next one", content_type = "application/json", body = Object, headers(
        ("Cache-Control" = String, description = "`public, max-age=300`")))))]
async fn jwks(State(state): State<AppState>) -> Response {
    let body: Bytes = state.tokens.jwks_json();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::{Listen, Public};

    #[test]
    fn a_public_request_is_named_by_its_route_and_a_path_no_route_serves_by_none() {
        // Given the public listener's routes
        let routes = Public::routes();
        // Then each served path is named by its route
        for path in [
            "/api/v1/widget/config",
            "/api/v1/widget/auth/exchange",
            "/.well-known/jwks.json",
            "/widget/v1/widget.js",
            "/healthz",
        ] {
            assert_eq!(routes.route_of(path), Some(path));
        }
        // And a trailing slash, a missing or an extra segment is not (nor a made-up path)
        for path in [
            "/api/v1/widget/config/",
            "/api/v1/widget",
            "/api/v1/widget/config/extra",
            "/",
            "/api/v1/widget/config%00",
        ] {
            assert_eq!(routes.route_of(path), None, "{path}");
        }
    }
}
