//! Prometheus metrics for `GET /metrics` on the internal listener. Plain atomics: the
//! counters sit on the hot path, so recording must cost a relaxed increment, no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::tokens::TokenKind;
use crate::AppState;

#[derive(Debug, Clone, Copy)]
pub enum Listener {
    Public = 0,
    Internal = 1,
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// `[listener][status class 1xx..5xx]`.
    responses: [[AtomicU64; 5]; 2],
    tokens_minted: [AtomicU64; 3],
    commands_committed: AtomicU64,
}

impl Metrics {
    pub fn token_minted(&self, kind: TokenKind) {
        let index = match kind {
            TokenKind::Visitor => 0,
            TokenKind::Session => 1,
            TokenKind::Refresh => 2,
        };
        self.tokens_minted[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn command_committed(&self) {
        self.commands_committed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn response(&self, listener: Listener, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[listener as usize][class].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, ready: bool, client_keys: usize) -> String {
        let mut out = String::with_capacity(1024);
        let _ = writeln!(out, "# HELP widget_auth_ready 1 once the read models are built.\n# TYPE widget_auth_ready gauge\nwidget_auth_ready {}", u8::from(ready));
        let _ = writeln!(out, "# HELP widget_auth_client_keys Client keys in the read models.\n# TYPE widget_auth_client_keys gauge\nwidget_auth_client_keys {client_keys}");
        let _ = writeln!(out, "# HELP widget_auth_http_responses_total Responses by listener and status class.\n# TYPE widget_auth_http_responses_total counter");
        for (listener, name) in [
            (Listener::Public, "public"),
            (Listener::Internal, "internal"),
        ] {
            for (class, counter) in self.responses[listener as usize].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "widget_auth_http_responses_total{{listener=\"{name}\",class=\"{}xx\"}} {}",
                    class + 1,
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(out, "# HELP widget_auth_tokens_minted_total Tokens minted by kind.\n# TYPE widget_auth_tokens_minted_total counter");
        for (kind, counter) in ["visitor", "session", "refresh"]
            .iter()
            .zip(&self.tokens_minted)
        {
            let _ = writeln!(
                out,
                "widget_auth_tokens_minted_total{{kind=\"{kind}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let (total, feed) = (crate::store::store_queries(), crate::feed::feed_queries());
        let _ = writeln!(out, "# HELP widget_auth_store_queries_total Calls into the event store: by the cross-node feed, and everything else (requests, start-up replay, maintenance).\n# TYPE widget_auth_store_queries_total counter\nwidget_auth_store_queries_total{{caller=\"feed\"}} {feed}\nwidget_auth_store_queries_total{{caller=\"other\"}} {}", total.saturating_sub(feed));
        let (groups, grouped) = crate::group_commit::group_commits();
        let _ = writeln!(out, "# HELP widget_auth_group_commit_statements_total INSERT statements the PostgreSQL group commit sent.\n# TYPE widget_auth_group_commit_statements_total counter\nwidget_auth_group_commit_statements_total {groups}\n# HELP widget_auth_group_commit_events_total Events those statements carried (divided by the statements: the mean group size).\n# TYPE widget_auth_group_commit_events_total counter\nwidget_auth_group_commit_events_total {grouped}");
        let _ = writeln!(out, "# HELP widget_auth_commands_committed_total Admin commands that recorded an event.\n# TYPE widget_auth_commands_committed_total counter\nwidget_auth_commands_committed_total {}", self.commands_committed.load(Ordering::Relaxed));
        out
    }
}

/// Counts every response of the internal listener.
pub async fn count_internal(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    state
        .metrics
        .response(Listener::Internal, response.status().as_u16());
    response
}

pub async fn render(State(state): State<AppState>) -> Response {
    let body = state
        .metrics
        .render(state.directory.is_ready(), state.directory.len());
    axum::response::IntoResponse::into_response((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    ))
}
