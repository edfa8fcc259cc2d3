//! Prometheus metrics for `GET /metrics` on the internal listener (served by
//! `http/internal.rs`). Counters only: plain atomics, because they sit on the hot path,
//! so recording must cost a relaxed increment, no lock. The per-process counters of the
//! store, the feed and the group commit are statics here, so those modules count without
//! reaching for the app's state.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::tokens::TokenKind;

/// Every call into the database by this process, for `/metrics`: the benchmark proves
/// with it that the hot path's refusals never reach the store.
static STORE_QUERIES: AtomicU64 = AtomicU64::new(0);

/// Store calls made by the feed (wake-ups and catch-up), so `/metrics` can tell
/// background reads from request-driven ones.
static FEED_QUERIES: AtomicU64 = AtomicU64::new(0);

/// Statements the group commit sent and events they carried (their ratio is the mean
/// group size: how much sharing the load is getting).
static GROUPS: AtomicU64 = AtomicU64::new(0);
static GROUPED_EVENTS: AtomicU64 = AtomicU64::new(0);

/// Counts one call into the database (any store of this process).
pub(crate) fn count_query() {
    STORE_QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// Calls into the database so far (all stores of this process).
pub fn store_queries() -> u64 {
    STORE_QUERIES.load(Ordering::Relaxed)
}

/// Counts one read the cross-node feed starts (it is counted in [`store_queries`] too).
pub(crate) fn count_feed_query() {
    FEED_QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// Reads the cross-node feed has started so far.
pub fn feed_queries() -> u64 {
    FEED_QUERIES.load(Ordering::Relaxed)
}

/// Counts one group commit statement carrying `events` events.
pub(crate) fn count_group_commit(events: usize) {
    GROUPS.fetch_add(1, Ordering::Relaxed);
    GROUPED_EVENTS.fetch_add(events as u64, Ordering::Relaxed);
}

/// (statements, events) committed by group commit so far in this process.
pub fn group_commits() -> (u64, u64) {
    (
        GROUPS.load(Ordering::Relaxed),
        GROUPED_EVENTS.load(Ordering::Relaxed),
    )
}

#[derive(Debug, Clone, Copy)]
pub enum Listener {
    Public = 0,
    Internal = 1,
}

/// The routes that answer 429 (API.md "Abuse limits"), as `route` label values.
const RATE_LIMITED_ROUTES: [&str; 2] = [
    "/api/v1/widget/auth/guest",
    "/api/v1/widget/auth/user-token",
];

#[derive(Debug, Default)]
pub struct Metrics {
    /// `[listener][status class 1xx..5xx]`.
    responses: [[AtomicU64; 5]; 2],
    tokens_minted: [AtomicU64; 3],
    commands_committed: AtomicU64,
    refresh_reuse_detections: AtomicU64,
    /// Requests refused with 429, by [`RATE_LIMITED_ROUTES`] (and any other route last).
    rate_limited: [AtomicU64; RATE_LIMITED_ROUTES.len() + 1],
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

    /// A spent refresh token came back and its family was revoked (API.md: counted in
    /// `/metrics`).
    pub fn refresh_reuse_detected(&self) {
        self.refresh_reuse_detections
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn command_committed(&self) {
        self.commands_committed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request on `route` refused by the abuse limits.
    pub fn rate_limited(&self, route: &'static str) {
        let index = RATE_LIMITED_ROUTES
            .iter()
            .position(|r| *r == route)
            .unwrap_or(RATE_LIMITED_ROUTES.len());
        self.rate_limited[index].fetch_add(1, Ordering::Relaxed);
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
        let _ = writeln!(out, "# HELP widget_auth_rate_limited_total Requests refused with 429 by the abuse limits, by route.\n# TYPE widget_auth_rate_limited_total counter");
        for (route, counter) in RATE_LIMITED_ROUTES
            .iter()
            .chain(&["other"])
            .zip(&self.rate_limited)
        {
            let _ = writeln!(
                out,
                "widget_auth_rate_limited_total{{route=\"{route}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let (total, feed) = (store_queries(), feed_queries());
        let _ = writeln!(out, "# HELP widget_auth_store_queries_total Calls into the event store: by the cross-node feed, and everything else (requests, start-up replay, maintenance).\n# TYPE widget_auth_store_queries_total counter\nwidget_auth_store_queries_total{{caller=\"feed\"}} {feed}\nwidget_auth_store_queries_total{{caller=\"other\"}} {}", total.saturating_sub(feed));
        let (groups, grouped) = group_commits();
        let _ = writeln!(out, "# HELP widget_auth_group_commit_statements_total INSERT statements the PostgreSQL group commit sent.\n# TYPE widget_auth_group_commit_statements_total counter\nwidget_auth_group_commit_statements_total {groups}\n# HELP widget_auth_group_commit_events_total Events those statements carried (divided by the statements: the mean group size).\n# TYPE widget_auth_group_commit_events_total counter\nwidget_auth_group_commit_events_total {grouped}");
        let _ = writeln!(out, "# HELP widget_auth_commands_committed_total Admin commands that recorded an event.\n# TYPE widget_auth_commands_committed_total counter\nwidget_auth_commands_committed_total {}", self.commands_committed.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP widget_auth_refresh_reuse_detections_total Refresh families revoked because a spent refresh token was presented again.\n# TYPE widget_auth_refresh_reuse_detections_total counter\nwidget_auth_refresh_reuse_detections_total {}", self.refresh_reuse_detections.load(Ordering::Relaxed));
        out
    }
}
