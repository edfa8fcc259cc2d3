//! The yardstick: a bare axum server doing the least possible work for the same
//! requests, built from the same crates (axum, tokio, serde_json, and widget-auth's
//! token code on aws-lc-rs).
//!
//! - `GET /api/v1/widget/config`: a HashMap lookup, an Origin compare, a pre-serialised
//!   1 KB JSON body with the same CORS headers.
//! - `POST /api/v1/widget/auth/guest`: parse `{"client_key"}`, the same lookup and
//!   compare, and the session and refresh token widget-auth mints for a guest, with its
//!   claims and its own token code: the same bytes signed and sent, so only the server
//!   around them differs.
//! - `POST /api/v1/widget/auth/exchange` and `/refresh`: the cryptography of widget-auth's
//!   exchange and refresh and nothing else (no store): one token verified and two signed
//!   with widget-auth's own token code, so the work is identical, plus the lookup of the
//!   token's key and the Origin compare. The runner sends both sides the same file of
//!   single-use tokens; this side remembers none of them.
//!
//! Every other endpoint is compared against one of these.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use widget_auth::tokens::{Claims as TokenClaims, SigningKeys, TokenKind};

struct Entry {
    origin: String,
    /// The key's id, which its tokens carry as `ck`.
    id: String,
    body: Bytes,
}

struct Baseline {
    keys: HashMap<String, Entry>,
    /// Each key's allowed origin by key id: what a token's `ck` names.
    origins: HashMap<String, String>,
    tokens: SigningKeys,
}

/// Serves until killed. `keys` holds `public_key origin id` per line.
pub async fn serve(addr: &str, keys: &str, pem: &str) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(keys, pem)?).await?;
    Ok(())
}

fn router(keys: &str, pem: &str) -> anyhow::Result<Router> {
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "padding": "x".repeat(1000),
    }))?);
    let mut map = HashMap::new();
    let mut origins = HashMap::new();
    for line in keys.lines() {
        let mut fields = line.split(' ');
        if let (Some(pk), Some(origin), Some(id)) = (fields.next(), fields.next(), fields.next()) {
            origins.insert(id.to_owned(), origin.to_owned());
            map.insert(
                pk.to_owned(),
                Entry {
                    origin: origin.to_owned(),
                    id: id.to_owned(),
                    body: body.clone(),
                },
            );
        }
    }
    let tokens = SigningKeys::from_pem(pem)?;
    let state = Arc::new(Baseline {
        keys: map,
        origins,
        tokens,
    });
    Ok(Router::new()
        .route("/api/v1/widget/config", get(config))
        .route("/api/v1/widget/auth/guest", post(guest))
        .route("/api/v1/widget/auth/exchange", post(exchange))
        .route("/api/v1/widget/auth/refresh", post(refresh))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state))
}

fn allowed<'a>(
    state: &'a Baseline,
    key: &str,
    headers: &HeaderMap,
) -> Option<(&'a Entry, HeaderValue)> {
    let entry = state.keys.get(key)?;
    let origin = headers.get(header::ORIGIN)?;
    (origin.as_bytes() == entry.origin.as_bytes()).then(|| (entry, origin.clone()))
}

#[derive(Deserialize)]
struct ConfigQuery {
    client_key: String,
}

async fn config(
    State(state): State<Arc<Baseline>>,
    Query(q): Query<ConfigQuery>,
    headers: HeaderMap,
) -> Response {
    match allowed(&state, &q.client_key, &headers) {
        Some((entry, origin)) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
                (header::VARY, HeaderValue::from_static("Origin")),
            ],
            entry.body.clone(),
        )
            .into_response(),
        None => (StatusCode::FORBIDDEN, "forbidden").into_response(),
    }
}

#[derive(Deserialize)]
struct GuestRequest {
    client_key: String,
}

async fn guest(
    State(state): State<Arc<Baseline>>,
    headers: HeaderMap,
    Json(body): Json<GuestRequest>,
) -> Response {
    let Some((entry, origin)) = allowed(&state, &body.client_key, &headers) else {
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    };
    let now = chrono::Utc::now().timestamp();
    let visitor = format!("v_{}", uuid::Uuid::new_v4().simple());
    // widget-auth's guest claims (`sessions::session_pair`): a new visitor, a new family.
    let session = TokenClaims {
        iss: ISSUER.to_owned(),
        aud: TokenKind::Session.audience().to_owned(),
        sub: visitor.clone(),
        iat: now,
        nbf: now,
        exp: now + i64::from(SESSION_TTL),
        jti: uuid::Uuid::new_v4().simple().to_string(),
        ck: entry.id.clone(),
        kind: TokenKind::Session,
        ver: 1,
        origin: Some(origin.to_str().unwrap_or_default().to_owned()),
        guest: Some(true),
        name: None,
        email: None,
        fam: None,
        fst: None,
        gen: None,
    };
    let refresh = TokenClaims {
        aud: TokenKind::Refresh.audience().to_owned(),
        exp: now + i64::from(REFRESH_TTL),
        jti: uuid::Uuid::new_v4().simple().to_string(),
        kind: TokenKind::Refresh,
        fam: Some(uuid::Uuid::new_v4().simple().to_string()),
        fst: Some(now),
        gen: Some(0),
        ..session.clone()
    };
    signed_pair(&state, &session, &refresh, Some(visitor), origin)
}

#[derive(Deserialize)]
struct PresentedToken {
    #[serde(alias = "refresh_token")]
    token: String,
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

/// The issuer widget-auth runs with by default, which the runner's tokens carry.
const ISSUER: &str = "widget-auth";
const SESSION_TTL: u32 = 900;
const REFRESH_TTL: u32 = 604_800;

async fn exchange(
    State(state): State<Arc<Baseline>>,
    headers: HeaderMap,
    Json(body): Json<PresentedToken>,
) -> Response {
    crypto_only(&state, &headers, &body.token, TokenKind::Visitor)
}

async fn refresh(
    State(state): State<Arc<Baseline>>,
    headers: HeaderMap,
    Json(body): Json<PresentedToken>,
) -> Response {
    crypto_only(&state, &headers, &body.token, TokenKind::Refresh)
}

/// Verify `token` as `kind`, check the Origin against its key (and, for a refresh token,
/// against the origin it was minted for), sign a session and a refresh token: what
/// exchange and refresh cost before any store is involved.
fn crypto_only(state: &Baseline, headers: &HeaderMap, token: &str, kind: TokenKind) -> Response {
    let now = chrono::Utc::now().timestamp();
    let Ok(claims) = state.tokens.verify(token, kind, ISSUER, now) else {
        return (StatusCode::BAD_REQUEST, "token refused").into_response();
    };
    let Some(origin) = headers.get(header::ORIGIN).cloned() else {
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    };
    let allowed = state
        .origins
        .get(&claims.ck)
        .is_some_and(|o| o.as_bytes() == origin.as_bytes());
    let bound = claims
        .origin
        .as_deref()
        .is_none_or(|o| o.as_bytes() == origin.as_bytes());
    if !(allowed && bound) {
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    }
    let origin_text = origin.to_str().unwrap_or_default().to_owned();
    let session = TokenClaims {
        iss: ISSUER.to_owned(),
        aud: TokenKind::Session.audience().to_owned(),
        iat: now,
        nbf: now,
        exp: now + i64::from(SESSION_TTL),
        jti: uuid::Uuid::new_v4().simple().to_string(),
        kind: TokenKind::Session,
        origin: Some(origin_text.clone()),
        fam: None,
        fst: None,
        gen: None,
        ..claims.clone()
    };
    let generation = claims.gen.map_or(0, |g| g + 1);
    let refresh = TokenClaims {
        aud: TokenKind::Refresh.audience().to_owned(),
        exp: now + i64::from(REFRESH_TTL),
        jti: uuid::Uuid::new_v4().simple().to_string(),
        kind: TokenKind::Refresh,
        fam: Some(
            claims
                .fam
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        ),
        fst: Some(claims.fst.unwrap_or(now)),
        gen: Some(generation),
        ..session.clone()
    };
    let visitor_id = (kind == TokenKind::Visitor).then(|| claims.sub.clone());
    signed_pair(state, &session, &refresh, visitor_id, origin)
}

/// Signs `session` and `refresh` and answers them as widget-auth does.
fn signed_pair(
    state: &Baseline,
    session: &TokenClaims,
    refresh: &TokenClaims,
    visitor_id: Option<String>,
    origin: HeaderValue,
) -> Response {
    let (Ok(token), Ok(refresh_token)) = (state.tokens.mint(session), state.tokens.mint(refresh))
    else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "not signed").into_response();
    };
    let body = SessionResponse {
        token,
        token_type: "Bearer",
        expires_in: SESSION_TTL,
        refresh_token,
        refresh_expires_in: REFRESH_TTL,
        visitor_id,
    };
    session_response(body, origin)
}

/// A token response as widget-auth sends it: JSON, CORS for the one origin, never cached.
fn session_response(body: impl Serialize, origin: HeaderValue) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(kind: TokenKind, now: i64) -> TokenClaims {
        TokenClaims {
            iss: ISSUER.to_owned(),
            aud: kind.audience().to_owned(),
            sub: "user-1".to_owned(),
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: "j1".to_owned(),
            ck: "ck_one".to_owned(),
            kind,
            ver: 1,
            origin: (kind == TokenKind::Refresh).then(|| "https://a.test".to_owned()),
            guest: Some(false),
            name: None,
            email: None,
            fam: (kind == TokenKind::Refresh).then(|| "fam".to_owned()),
            fst: (kind == TokenKind::Refresh).then_some(now),
            gen: (kind == TokenKind::Refresh).then_some(0),
        }
    }

    /// The baseline on a free port with the key `pk_one` (id `ck_one`, origin
    /// `https://a.test`), signing with `pem`.
    async fn serve_one_key(pem: &str) -> std::net::SocketAddr {
        let app = router("pk_one https://a.test ck_one\n", pem).expect("router");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// The JSON body of a 2xx answer.
    async fn answered(
        sent: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
    ) -> serde_json::Value {
        sent.await
            .expect("sent")
            .error_for_status()
            .expect("200")
            .json()
            .await
            .expect("json")
    }

    /// The crypto-only endpoints accept what the runner sends widget-auth and answer with
    /// tokens widget-auth itself would accept: the work measured is the real one.
    #[tokio::test]
    async fn exchange_and_refresh_verify_one_token_and_sign_two() {
        let pem = SigningKeys::generate_pem().expect("pem");
        let keys = SigningKeys::from_pem(&pem).expect("keys");
        let addr = serve_one_key(&pem).await;
        let client = reqwest::Client::new();
        let now = chrono::Utc::now().timestamp();
        for (path, field, kind) in [
            ("exchange", "token", TokenKind::Visitor),
            ("refresh", "refresh_token", TokenKind::Refresh),
        ] {
            let presented = keys.mint(&claims(kind, now)).expect("minted");
            let send = |origin: &'static str| {
                client
                    .post(format!("http://{addr}/api/v1/widget/auth/{path}"))
                    .header("Origin", origin)
                    .json(&serde_json::json!({ field: presented }))
                    .send()
            };
            assert_eq!(send("https://b.test").await.expect("sent").status(), 403);
            let answer = answered(send("https://a.test")).await;
            let text = |name: &str| answer[name].as_str().expect("a token").to_owned();
            let session = keys
                .verify(&text("token"), TokenKind::Session, ISSUER, now)
                .expect("a session token");
            let next = keys
                .verify(&text("refresh_token"), TokenKind::Refresh, ISSUER, now)
                .expect("a refresh token");
            assert_eq!(session.origin.as_deref(), Some("https://a.test"));
            assert_eq!((next.ck.as_str(), next.sub.as_str()), ("ck_one", "user-1"));
            assert_eq!(
                next.gen,
                Some(if kind == TokenKind::Refresh { 1 } else { 0 })
            );
        }
    }

    /// The guest yardstick signs what widget-auth signs for a guest: a session token
    /// and the first refresh token of a new family, for the key's id and the origin.
    #[tokio::test]
    async fn guest_signs_the_contracts_session_and_refresh_token() {
        let pem = SigningKeys::generate_pem().expect("pem");
        let keys = SigningKeys::from_pem(&pem).expect("keys");
        let addr = serve_one_key(&pem).await;
        let send = |origin: &'static str| {
            reqwest::Client::new()
                .post(format!("http://{addr}/api/v1/widget/auth/guest"))
                .header("Origin", origin)
                .json(&serde_json::json!({ "client_key": "pk_one" }))
                .send()
        };
        assert_eq!(send("https://b.test").await.expect("sent").status(), 403);
        let answer = answered(send("https://a.test")).await;
        let now = chrono::Utc::now().timestamp();
        let text = |name: &str| answer[name].as_str().expect("a string").to_owned();
        let session = keys
            .verify(&text("token"), TokenKind::Session, ISSUER, now)
            .expect("a session token");
        let refresh = keys
            .verify(&text("refresh_token"), TokenKind::Refresh, ISSUER, now)
            .expect("a refresh token");
        for claims in [&session, &refresh] {
            assert_eq!(claims.ck, "ck_one");
            assert_eq!(claims.sub, text("visitor_id"));
            assert_eq!(claims.origin.as_deref(), Some("https://a.test"));
            assert_eq!(claims.guest, Some(true));
        }
        assert_eq!((session.fam.as_ref(), session.gen), (None, None));
        assert!(refresh.fam.is_some());
        assert_eq!((refresh.fst, refresh.gen), (Some(refresh.iat), Some(0)));
    }
}
