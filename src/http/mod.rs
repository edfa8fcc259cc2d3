//! The two listeners: `public` (browsers and customer backends) and `internal`
//! (operators, auditors, probes). Shared here: health probes and the request span.

pub mod error;
pub mod internal;
pub mod public;

use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids unique across nodes and restarts without a random draw per request (a
/// UUID v4 costs a `getrandom` system call on the hot path): a random prefix chosen once
/// per process, then a counter.
#[derive(Debug, Clone, Copy)]
struct SequentialRequestId;

static REQUEST_PREFIX: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{:016x}", rand::random::<u64>()));
static REQUEST_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl MakeRequestId for SequentialRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = REQUEST_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        axum::http::HeaderValue::from_str(&format!("{}-{n:x}", *REQUEST_PREFIX))
            .ok()
            .map(RequestId::new)
    }
}

/// `/healthz` and `/readyz`, on both listeners.
pub fn probes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
}

/// Ready once the start-up replay has filled the read models: before that the node
/// would answer from a partial directory (false 403s), so load balancers must wait.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.directory.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "replaying events").into_response()
    }
}

/// Request id and the request span. Layer order matters: the id is set before the span
/// is made (so the span carries it) and copied to the response after.
pub fn with_request_span(router: Router) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            // The matched route, never the raw URI: queries and paths stay out of logs.
            let path = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            let request_id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("");
            tracing::info_span!(
                "request",
                method = %request.method(),
                path = %path,
                request_id = %request_id,
                status = tracing::field::Empty,
                latency_us = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(|response: &Response, latency: Duration, span: &Span| {
            span.record("status", response.status().as_u16());
            span.record("latency_us", latency.as_micros() as u64);
            tracing::debug!(
                status = response.status().as_u16(),
                latency_us = latency.as_micros() as u64,
                "response"
            );
        })
        .on_failure(());
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(SetRequestIdLayer::new(REQUEST_ID, SequentialRequestId))
}
