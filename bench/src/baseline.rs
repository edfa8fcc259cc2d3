//! The yardstick: a bare axum server doing the least possible work for the same
//! requests, built from the same crates (axum, tokio, serde_json, aws-lc-rs).
//!
//! - `GET /api/v1/widget/config`: a HashMap lookup, an Origin compare, a pre-serialised
//!   1 KB JSON body with the same CORS headers.
//! - `POST /api/v1/widget/auth/guest`: parse `{"client_key"}`, the same lookup and
//!   compare, and two EdDSA JWTs signed with a key parsed once.
//!
//! Every other endpoint is compared against one of these two.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::Ed25519KeyPair;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

struct Entry {
    origin: String,
    body: Bytes,
}

struct Baseline {
    keys: HashMap<String, Entry>,
    signer: Ed25519KeyPair,
}

/// Serves until killed. `keys` holds `public_key origin` per line.
pub async fn serve(addr: &str, keys: &str, pem: &str) -> anyhow::Result<()> {
    let body = Bytes::from(serde_json::to_vec(&serde_json::json!({
        "padding": "x".repeat(1000),
    }))?);
    let mut map = HashMap::new();
    for line in keys.lines() {
        let mut fields = line.split(' ');
        if let (Some(pk), Some(origin)) = (fields.next(), fields.next()) {
            map.insert(
                pk.to_owned(),
                Entry {
                    origin: origin.to_owned(),
                    body: body.clone(),
                },
            );
        }
    }
    let der = pem_to_der(pem)?;
    let signer =
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = Arc::new(Baseline { keys: map, signer });
    let app = Router::new()
        .route("/api/v1/widget/config", get(config))
        .route("/api/v1/widget/auth/guest", post(guest))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(body)?)
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

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    ck: &'a str,
    kind: &'a str,
    ver: u64,
    origin: &'a str,
    guest: bool,
}

fn sign(signer: &Ed25519KeyPair, header: &str, claims: &Claims<'_>) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default()));
    let signature = signer.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
    token
}

async fn guest(
    State(state): State<Arc<Baseline>>,
    headers: HeaderMap,
    Json(body): Json<GuestRequest>,
) -> Response {
    let Some((_, origin)) = allowed(&state, &body.client_key, &headers) else {
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    };
    let now = chrono::Utc::now().timestamp();
    let visitor = format!("v_{}", uuid::Uuid::new_v4().simple());
    let origin_text = origin.to_str().unwrap_or_default();
    let claims = |kind: &'static str, aud: &'static str, ttl: i64| Claims {
        iss: "widget-auth",
        aud,
        sub: &visitor,
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        ck: "ck_baseline",
        kind,
        ver: 1,
        origin: origin_text,
        guest: true,
    };
    let token = sign(
        &state.signer,
        r#"{"alg":"EdDSA","typ":"session+jwt","kid":"k"}"#,
        &claims("session", "widget-auth/session", 900),
    );
    let refresh = sign(
        &state.signer,
        r#"{"alg":"EdDSA","typ":"refresh+jwt","kid":"k"}"#,
        &claims("refresh", "widget-auth/refresh", 604_800),
    );
    let body = serde_json::json!({
        "token": token, "token_type": "Bearer", "expires_in": 900,
        "refresh_token": refresh, "refresh_expires_in": 604_800, "visitor_id": visitor,
    });
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
