//! The public listener: what a visitor's browser and a customer's backend call.
//!
//! Every decision here is made from the in-memory read models (the widget directory and
//! the secret key index). The only store access is the token ledger, for the two
//! single-use rules (a visitor token exchanged once, a refresh token rotated once).
//!
//! What a session is and when a token still counts is decided in [`crate::sessions`];
//! handlers here parse the request, check its origin, ask `sessions`, write the ledger
//! and build the response.

use std::sync::Arc;

use std::borrow::Cow;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use chrono::Utc;
use domain::{KeyStatus, RequestOrigin};
use projections::ClientKeyView;
use serde::{Deserialize, Serialize};

use super::error::{to_plain_text, ApiError, JsonBody};
use crate::metrics::Listener;
use crate::sessions::{self, Identity, Rotation, SessionError};
use crate::state::AppState;
use crate::tokens::{Claims, TokenKind};

/// API.md: bodies over 16 KiB get 413.
const BODY_LIMIT: usize = 16 * 1024;

/// The endpoints a browser calls: CORS preflight and `Vary: Origin` on every response.
const BROWSER_PATHS: [&str; 4] = [
    "/api/v1/widget/config",
    "/api/v1/widget/auth/guest",
    "/api/v1/widget/auth/exchange",
    "/api/v1/widget/auth/refresh",
];

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(BROWSER_PATHS[0], get(config))
        .route(BROWSER_PATHS[1], post(guest))
        .route(BROWSER_PATHS[2], post(exchange))
        .route(BROWSER_PATHS[3], post(refresh))
        .route("/api/v1/widget/auth/user-token", post(user_token))
        .route("/.well-known/jwks.json", get(jwks))
        .merge(super::probes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        // One middleware for everything the public edge adds: every layer here is cloned
        // and polled for each request on the hot path.
        .layer(middleware::from_fn_with_state(state.clone(), public_edge))
        .with_state(state)
}

/// What every public response passes through:
/// - until the start-up replay is done the directory is partial, and answering from it
///   would turn known keys into false 403s, so the API says 503 instead;
/// - preflights answer here (they carry no body, so no client key: the per-key
///   allowlist is enforced on the actual request);
/// - browser endpoints get `Vary: Origin` on every response, errors included;
/// - errors become the contract's plain-text sentences; responses are counted;
/// - all of it inside the request span (request id, method, route, status, latency).
async fn public_edge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    super::in_request_span(request, |request| async move {
        let started = std::time::Instant::now();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let path = request.uri().path();
        let browser = BROWSER_PATHS.contains(&path);
        let response = if browser && request.method() == Method::OPTIONS {
            preflight(request.headers())
        } else if path.starts_with("/api/") && !state.directory.is_ready() {
            ApiError::unavailable("starting up; retry shortly").into_response()
        } else {
            next.run(request).await
        };
        let mut response = to_plain_text(response);
        if browser {
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("Origin"));
        }
        state.metrics.request(
            Listener::Public,
            route.as_ref().map(MatchedPath::as_str),
            response.status().as_u16(),
            started.elapsed(),
        );
        response
    })
    .await
}

fn preflight(request: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    if let Some(origin) = request.get(header::ORIGIN) {
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

fn request_origin(headers: &HeaderMap) -> Result<(HeaderValue, RequestOrigin), ApiError> {
    let Some(value) = headers.get(header::ORIGIN) else {
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
/// grace. A malformed key gets the unknown key's answer without any lookup.
fn key_for_public_key(state: &AppState, public_key: &str) -> Result<Arc<ClientKeyView>, ApiError> {
    let unknown = || ApiError::forbidden("unknown client_key");
    let parsed = domain::PublicKey::parse(public_key).map_err(|_| unknown())?;
    let view = state
        .directory
        .by_public_key(public_key)
        .ok_or_else(unknown)?;
    if !view.state().accepts_public_key(&parsed, Utc::now) {
        return Err(unknown());
    }
    if view.state().status == KeyStatus::Disabled {
        return Err(ApiError::forbidden("client key disabled"));
    }
    Ok(view)
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
async fn config(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (uri, headers) = (request.uri(), request.headers());
    let client_key = client_key_param(uri);
    let allowed = authorize_browser(&state, client_key.as_deref(), headers)?;
    let view = &allowed.view;
    let etag = HeaderValue::from_str(view.etag()).map_err(|e| ApiError::internal(&e))?;
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == view.etag() || t.trim() == "*")
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            view.config_body().clone(),
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    // Revalidate every time (cheap with the ETag) so a config change shows at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(allowed.cors(response))
}

#[derive(Serialize)]
struct SessionResponse {
    token: String,
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

/// A new session (and refresh token, of `family` or a new family) for `identity` at the
/// allowed origin, as the response the widget receives.
fn session_response(
    state: &AppState,
    allowed: &Allowed,
    identity: &Identity,
    family: Option<String>,
    visitor_id: Option<String>,
) -> Result<Response, ApiError> {
    let now = Utc::now().timestamp();
    let pair = sessions::session_pair(
        &allowed.view,
        identity,
        &allowed.origin,
        family,
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

#[derive(Deserialize)]
struct GuestRequest {
    client_key: Option<String>,
}

async fn guest(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<GuestRequest>,
) -> Result<Response, ApiError> {
    let allowed = authorize_browser(&state, body.client_key.as_deref(), &headers)?;
    let identity = Identity::guest(&allowed.view.state().token_policy)?;
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

#[derive(Deserialize)]
struct UserTokenRequest {
    client_key: Option<String>,
    user_id: Option<String>,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Serialize)]
struct VisitorTokenResponse {
    visitor_token: String,
    expires_in: u32,
}

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

#[derive(Deserialize)]
struct ExchangeRequest {
    token: Option<String>,
}

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
        .use_token(&claims.jti, "visitor", None, now_ms(), claims.exp)
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

#[derive(Deserialize)]
struct RefreshRequest {
    refresh_token: Option<String>,
}

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
    if state.store.refresh_family_revoked(&family).await? {
        return Err(SessionError::Revoked {
            kind: TokenKind::Refresh,
        }
        .into());
    }
    let now = now_ms();
    let used = state
        .store
        .use_token(&claims.jti, "refresh", Some(&family), now, claims.exp)
        .await?;
    match sessions::rotation(used, now, &view.state().token_policy) {
        Rotation::Rotate => {}
        Rotation::RetryWithinGrace => {
            tracing::debug!("refresh retried within the grace period");
        }
        Rotation::ReuseDetected(revocation) => {
            state
                .store
                .revoke_refresh_family(&family, revocation.revoked_at, revocation.expires_at)
                .await?;
            tracing::warn!(client_key = %claims.ck, "rotated refresh token presented again; family revoked");
            return Err(SessionError::RefreshReused.into());
        }
    }
    let allowed = Allowed {
        view,
        origin_header,
        origin,
    };
    let identity = Identity::refreshed(claims);
    session_response(&state, &allowed, &identity, Some(family), None)
}

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
