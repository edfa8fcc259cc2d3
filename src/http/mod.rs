//! The two listeners: `public` (browsers and customer backends) and `internal`
//! (operators, auditors, probes). Shared here: health probes and the request span.

pub mod assets;
pub mod console;
pub mod docs;
pub mod edge;
pub mod error;
pub mod internal;
pub mod openapi;
pub mod public;
mod strict;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::Span;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-supplied request id we keep (it ends up in logs and event metadata).
pub(super) const MAX_REQUEST_ID: usize = 128;

static REQUEST_PREFIX: LazyLock<String> =
    LazyLock::new(|| format!("{:016x}", rand::random::<u64>()));
static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A request id unique across nodes and restarts without a random draw per request (a
/// UUID v4 costs a `getrandom` system call on the hot path): a random prefix chosen once
/// per process, then a counter.
fn new_request_id() -> HeaderValue {
    numbered_request_id(REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// The request id numbered `n`: the process's prefix, a dash, `n` in lower-case hex.
fn numbered_request_id(n: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // 16 hex digits, a dash, the counter's 1 to 16: written in place by hand (`write!`
    // through `fmt` cost 600 instructions a request, a tenth of config's handler).
    let mut buffer = [0u8; 33];
    buffer[..16].copy_from_slice(REQUEST_PREFIX.as_bytes());
    buffer[16] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, byte) in buffer[17..17 + digits].iter_mut().enumerate() {
        *byte = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buffer[..17 + digits])
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The request span: the request's id (the caller's `X-Request-Id` when it sends a sane
/// one, else a new one, echoed on the response), its method and `route` (the matched
/// route, never the raw URI: queries stay out of logs). Status and latency go on a
/// `response` event at debug level ([`log_response`]). Written by hand rather than with
/// tower-http's trace and request-id layers, which cost the config endpoint a fifth of
/// its throughput.
///
/// The span carries the id for everything logged inside it; handlers that record it
/// elsewhere (the internal listener's commands put it in event metadata) read it from
/// the request, where the internal listener's edge sets it.
///
/// Nothing is recorded into the span after it is made: the JSON log format keeps a
/// span's fields as a JSON string and `Span::record` parses it, inserts and serializes it
/// again, which under callgrind cost config 21,800 instructions a request at the default
/// `info` level (a request was 57,400 in all, 25,100 with logging at `warn`), for two
/// fields no line at `info` ever printed.
pub(super) fn request_span(method: &Method, route: Option<&str>, id: &HeaderValue) -> Span {
    tracing::info_span!(
        "request",
        // Plain `&str`s, not `%` (Display): recorded as they are, not through `fmt`.
        method = method.as_str(),
        path = route.unwrap_or("unmatched"),
        request_id = id.to_str().unwrap_or_default(),
    )
}

/// The `response` line of the request in `span`, at debug level, `started` being when
/// the edge took the request.
pub(super) fn log_response(span: &Span, response: &Response, started: Instant) {
    let status = response.status().as_u16();
    let latency_us = started.elapsed().as_micros() as u64;
    tracing::debug!(parent: span, status, latency_us, "response");
}

/// The caller's `X-Request-Id` when it sent a sane one, else a new one.
pub(super) fn request_id(request: &Request) -> HeaderValue {
    match request.headers().get(REQUEST_ID) {
        Some(id) if !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.to_str().is_ok() => {
            id.clone()
        }
        _ => new_request_id(),
    }
}

/// The credential of an `Authorization: Bearer <credential>` header. The scheme is
/// case-insensitive (RFC 9110 §11.1), so `bearer` from a customer's HTTP client counts.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

/// `/healthz` and `/readyz`, on both listeners.
pub fn probes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// Ready once the start-up replay has filled the read models: before that the node
/// would answer from a partial directory (false 403s), so load balancers must wait.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "`ready`: the read models are caught up", content_type = "text/plain", body = String),
        (status = 503, description = "`replaying events`", content_type = "text/plain", body = String),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    if state.directory.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "replaying events").into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_prefix_a_dash_and_the_counter_in_hex() {
        for n in [0, 1, 15, 16, 255, 0x1234_5678, u64::MAX >> 4, u64::MAX] {
            let id = numbered_request_id(n);
            assert_eq!(id.to_str().unwrap(), format!("{}-{n:x}", *REQUEST_PREFIX));
        }
        assert_eq!(REQUEST_PREFIX.len(), 16);
    }
}
