//! Prometheus metrics for `GET /metrics` on the internal listener (served by
//! `http/internal.rs`), kept and rendered by `metrics` + `metrics-exporter-prometheus`.
//!
//! Two recorders, never the global one:
//! - each running app has its own ([`Metrics`], in the app state): requests, tokens,
//!   commands, refusals, readiness, projection lag, store health. Tests run many apps in
//!   one process, and each must count only its own traffic;
//! - the store, the feed and the group commit count into process-wide statics here
//!   ([`count_query`], [`count_group_commit`]), so those modules count without reaching
//!   for the app's state.
//!
//! `/metrics` renders both. The hot path never looks a metric up by name: every handle
//! is registered once and kept (the request handles per route and status in a small
//! cache, see [`RequestMetrics`]), so recording is an atomic add on a handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio::sync::watch;

use crate::tokens::TokenKind;

/// Seconds: 100 µs (a config hit from memory) to 10 s (a command waiting on a slow store).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Events per group-commit statement.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often histogram samples are folded into their buckets when nobody scrapes: the
/// exporter keeps raw samples until then, so without it memory would grow with traffic.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A recorder and its handle, both needed: handles register through the recorder, the
/// exposition and upkeep go through the handle.
fn recorder(buckets: &[(&str, &[f64])]) -> (PrometheusRecorder, PrometheusHandle) {
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        builder = match builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), values) {
            Ok(builder) => builder,
            // Only an empty bucket list is refused, and ours are constants.
            Err(_) => PrometheusBuilder::new(),
        };
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

/// Calls into the database by this process, all callers. The benchmark proves with the
/// `other` part that the hot path's refusals never reach the store.
static STORE_QUERIES: AtomicU64 = AtomicU64::new(0);

/// Store calls made by the feed (wake-ups and catch-up), so `/metrics` can tell
/// background reads from request-driven ones.
static FEED_QUERIES: AtomicU64 = AtomicU64::new(0);

/// `SELECT 1`s of the store health check `/metrics` runs, counted apart for the same reason.
static HEALTH_QUERIES: AtomicU64 = AtomicU64::new(0);

/// The process-wide recorder: the store's, the feed's and the group commit's metrics.
struct Process {
    handle: PrometheusHandle,
    queries_feed: Counter,
    queries_health: Counter,
    queries_other: Counter,
    group_statements: Counter,
    group_events: Counter,
    group_sizes: Histogram,
}

static PROCESS: LazyLock<Process> = LazyLock::new(|| {
    let (recorder, handle) = recorder(&[("widget_auth_group_commit_size", GROUP_BUCKETS)]);
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_counter!("widget_auth_store_queries_total", "Calls into the event store: by the cross-node feed, by the /metrics health check, and everything else (requests, start-up replay, maintenance).");
        metrics::describe_counter!(
            "widget_auth_group_commit_statements_total",
            "INSERT statements the PostgreSQL group commit sent."
        );
        metrics::describe_counter!(
            "widget_auth_group_commit_events_total",
            "Events those statements carried (divided by the statements: the mean group size)."
        );
        metrics::describe_histogram!(
            "widget_auth_group_commit_size",
            "Events per group-commit INSERT statement."
        );
        Process {
            queries_feed: metrics::counter!("widget_auth_store_queries_total", "caller" => "feed"),
            queries_health: metrics::counter!("widget_auth_store_queries_total", "caller" => "health"),
            queries_other: metrics::counter!("widget_auth_store_queries_total", "caller" => "other"),
            group_statements: metrics::counter!("widget_auth_group_commit_statements_total"),
            group_events: metrics::counter!("widget_auth_group_commit_events_total"),
            group_sizes: metrics::histogram!("widget_auth_group_commit_size"),
            handle,
        }
    })
});

/// Counts one call into the database (any store of this process).
pub(crate) fn count_query() {
    STORE_QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// Counts one read the cross-node feed starts (it is counted in [`count_query`] too).
pub(crate) fn count_feed_query() {
    FEED_QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// Counts one store health check (it is counted in [`count_query`] too).
pub(crate) fn count_health_query() {
    HEALTH_QUERIES.fetch_add(1, Ordering::Relaxed);
}

/// Counts one group commit statement carrying `events` events.
pub(crate) fn count_group_commit(events: usize) {
    let process = &*PROCESS;
    process.group_statements.increment(1);
    process.group_events.increment(events as u64);
    process.group_sizes.record(events as f64);
}

/// The process-wide part of the exposition.
fn render_process() -> String {
    let process = &*PROCESS;
    let (total, feed, health) = (
        STORE_QUERIES.load(Ordering::Relaxed),
        FEED_QUERIES.load(Ordering::Relaxed),
        HEALTH_QUERIES.load(Ordering::Relaxed),
    );
    process.queries_feed.absolute(feed);
    process.queries_health.absolute(health);
    process
        .queries_other
        .absolute(total.saturating_sub(feed).saturating_sub(health));
    process.handle.render()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    Public = 0,
    Internal = 1,
}

impl Listener {
    fn label(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Internal => "internal",
        }
    }
}

/// The request count and latency of one (listener, route, status).
#[derive(Debug)]
struct RequestHandles {
    count: Counter,
    latency: Histogram,
}

/// Request handles by listener, then route (the matched path, or `unmatched`), then
/// status. Routes and statuses are few, so after the first request of each the lookup is
/// a read lock and two small map probes; the registry is asked only on a miss.
#[derive(Debug, Default)]
struct RequestMetrics {
    routes: [RwLock<ByRoute>; 2],
}

/// One listener's request handles: route, then status. Hashed with foldhash, not the
/// default SipHash: the keys are the listener's own routes and statuses (unmatched paths
/// share one label), nothing a caller can flood, and the two probes run on every
/// request (SipHash made them about 300 instructions of config's cost).
type ByRoute = HashMap<Box<str>, HashMap<u16, RequestHandles, FastHash>, FastHash>;

type FastHash = foldhash::fast::RandomState;

/// One app's metrics. Cheap to record (a handle's atomic add), rendered on `/metrics`.
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    requests: RequestMetrics,
    /// `[listener][status class 1xx..5xx]`: the totals by class older dashboards read.
    responses: [[Counter; 5]; 2],
    tokens_minted: [Counter; 3],
    commands_committed: Counter,
    refresh_reuse: Counter,
    origin_rejections: Counter,
    rate_limited: RwLock<HashMap<&'static str, Counter>>,
    ready: Gauge,
    client_keys: Gauge,
    store_up: Gauge,
    lag: ProjectionLag,
    snapshot: SnapshotMetrics,
    /// Registered once the node knows of a snapshot: before that it has no age.
    snapshot_age: std::sync::OnceLock<Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// How far this node's read models trail the store, as the cross-node feed last saw it.
/// Written by the feed; stays 0 where there is no feed (SQLite applies every commit in
/// the process that made it).
#[derive(Debug, Clone)]
pub struct ProjectionLag {
    events: Gauge,
    seconds: Gauge,
}

impl ProjectionLag {
    /// What a catch-up found: `events` committed events this node had not applied yet,
    /// the oldest of them `seconds` old.
    pub fn set(&self, events: usize, seconds: f64) {
        self.events.set(events as f64);
        self.seconds.set(seconds.max(0.0));
    }
}

/// What `/metrics` says about read-model snapshots: when the one this node loaded or last
/// wrote (or found in the store) was taken, and how the start-up went.
#[derive(Debug, Clone)]
pub struct SnapshotMetrics {
    /// Unix ms of that snapshot; 0 while there is none.
    taken_at_ms: Arc<std::sync::atomic::AtomicI64>,
    startup_events: Gauge,
    startup_from_snapshot: Gauge,
}

impl SnapshotMetrics {
    /// The snapshot this node loaded or wrote, or found written by another node, was
    /// taken at `created_at_ms` (kept only when newer than the one known).
    pub fn taken_at(&self, created_at_ms: i64) {
        self.taken_at_ms.fetch_max(created_at_ms, Ordering::Relaxed);
    }

    /// The start-up replay read `events` events, after a snapshot or from the start.
    pub fn started(&self, events: u64, from_snapshot: bool) {
        self.startup_events.set(events as f64);
        self.startup_from_snapshot
            .set(f64::from(u8::from(from_snapshot)));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let (recorder, handle) =
            recorder(&[("widget_auth_http_request_duration_seconds", LATENCY_BUCKETS)]);
        let recorder = Arc::new(recorder);
        metrics::with_local_recorder(&*recorder, || {
            describe();
            let class = |listener: &'static str| {
                ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
                    metrics::counter!("widget_auth_http_responses_total", "listener" => listener, "class" => class)
                })
            };
            Self {
                requests: RequestMetrics::default(),
                responses: [class("public"), class("internal")],
                tokens_minted: ["visitor", "session", "refresh"].map(
                    |kind| metrics::counter!("widget_auth_tokens_minted_total", "kind" => kind),
                ),
                commands_committed: metrics::counter!("widget_auth_commands_committed_total"),
                refresh_reuse: metrics::counter!("widget_auth_refresh_reuse_detections_total"),
                origin_rejections: metrics::counter!("widget_auth_origin_rejections_total"),
                rate_limited: RwLock::default(),
                ready: metrics::gauge!("widget_auth_ready"),
                client_keys: metrics::gauge!("widget_auth_client_keys"),
                store_up: metrics::gauge!("widget_auth_store_up"),
                lag: ProjectionLag {
                    events: metrics::gauge!("widget_auth_projection_lag_events"),
                    seconds: metrics::gauge!("widget_auth_projection_lag_seconds"),
                },
                snapshot: SnapshotMetrics {
                    taken_at_ms: Arc::default(),
                    startup_events: metrics::gauge!("widget_auth_startup_replayed_events"),
                    startup_from_snapshot: metrics::gauge!("widget_auth_startup_from_snapshot"),
                },
                snapshot_age: std::sync::OnceLock::new(),
                recorder: recorder.clone(),
                handle,
            }
        })
    }

    pub fn token_minted(&self, kind: TokenKind) {
        let index = match kind {
            TokenKind::Visitor => 0,
            TokenKind::Session => 1,
            TokenKind::Refresh => 2,
        };
        self.tokens_minted[index].increment(1);
    }

    pub fn command_committed(&self) {
        self.commands_committed.increment(1);
    }

    /// A request refused with 429 on `route` (the limiter's name for it).
    pub fn rate_limited(&self, route: &'static str) {
        let known = self
            .rate_limited
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
            .cloned();
        let counter = known.unwrap_or_else(|| {
            let mut counters = self
                .rate_limited
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            counters
                .entry(route)
                .or_insert_with(|| {
                    metrics::with_local_recorder(
                        &*self.recorder,
                        || metrics::counter!("widget_auth_rate_limited_total", "route" => route),
                    )
                })
                .clone()
        });
        counter.increment(1);
    }

    /// A spent refresh token presented again: its family was revoked.
    pub fn refresh_reuse_detected(&self) {
        self.refresh_reuse.increment(1);
    }

    /// A browser endpoint refused the request's Origin (absent, `null`, malformed, not in
    /// the key's allowlist, or not the origin the token was minted for).
    pub fn origin_rejected(&self) {
        self.origin_rejections.increment(1);
    }

    /// Counts a response by status class (the older total, kept for dashboards).
    pub fn response(&self, listener: Listener, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[listener as usize][class].increment(1);
    }

    /// Counts one request of `route` (the matched path, `None` when no route matched)
    /// answered with `status` after `elapsed`, and its status class.
    pub fn request(&self, listener: Listener, route: Option<&str>, status: u16, elapsed: Duration) {
        self.response(listener, status);
        let route = route.unwrap_or("unmatched");
        let seconds = elapsed.as_secs_f64();
        let routes = &self.requests.routes[listener as usize];
        {
            let known = routes
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(handles) = known
                .get(route)
                .and_then(|by_status| by_status.get(&status))
            {
                handles.count.increment(1);
                handles.latency.record(seconds);
                return;
            }
        }
        let mut known = routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let handles = known
            .entry(route.into())
            .or_default()
            .entry(status)
            .or_insert_with(|| {
                metrics::with_local_recorder(&*self.recorder, || {
                    let (route, status) = (route.to_owned(), status.to_string());
                    RequestHandles {
                        count: metrics::counter!(
                            "widget_auth_http_requests_total",
                            "listener" => listener.label(),
                            "route" => route.clone(),
                            "status" => status.clone()
                        ),
                        latency: metrics::histogram!(
                            "widget_auth_http_request_duration_seconds",
                            "listener" => listener.label(),
                            "route" => route,
                            "status" => status
                        ),
                    }
                })
            });
        handles.count.increment(1);
        handles.latency.record(seconds);
    }

    /// Where the cross-node feed reports how far behind it found this node.
    pub fn projection_lag(&self) -> ProjectionLag {
        self.lag.clone()
    }

    /// Where start-up and the snapshot writer report (see [`SnapshotMetrics`]).
    pub fn snapshots(&self) -> SnapshotMetrics {
        self.snapshot.clone()
    }

    /// The Prometheus text exposition of every metric: this app's, then the process's.
    /// `ready`, `client_keys` and `store_up` are read by the caller at scrape time.
    pub fn render(&self, ready: bool, client_keys: usize, store_up: bool) -> String {
        self.ready.set(f64::from(u8::from(ready)));
        self.client_keys.set(client_keys as f64);
        self.store_up.set(f64::from(u8::from(store_up)));
        let taken_at_ms = self.snapshot.taken_at_ms.load(Ordering::Relaxed);
        if taken_at_ms > 0 {
            let age = self.snapshot_age.get_or_init(|| {
                metrics::with_local_recorder(&*self.recorder, || {
                    metrics::gauge!("widget_auth_snapshot_age_seconds")
                })
            });
            let now_ms = chrono::Utc::now().timestamp_millis();
            age.set((now_ms - taken_at_ms).max(0) as f64 / 1000.0);
        }
        let mut out = self.handle.render();
        out.push_str(&render_process());
        out
    }

    /// Folds histogram samples into their buckets (see [`UPKEEP_EVERY`]).
    fn upkeep(&self) {
        self.handle.run_upkeep();
        PROCESS.handle.run_upkeep();
    }
}

/// Every metric's help line, registered with the app's recorder.
fn describe() {
    metrics::describe_gauge!("widget_auth_ready", "1 once the read models are built.");
    metrics::describe_gauge!("widget_auth_client_keys", "Client keys in the read models.");
    metrics::describe_counter!(
        "widget_auth_http_requests_total",
        "Requests by listener, route (the matched path, or unmatched) and status."
    );
    metrics::describe_histogram!(
        "widget_auth_http_request_duration_seconds",
        Unit::Seconds,
        "Time from the request reaching the edge to its response, by listener, route and status."
    );
    metrics::describe_counter!(
        "widget_auth_http_responses_total",
        "Responses by listener and status class."
    );
    metrics::describe_counter!("widget_auth_tokens_minted_total", "Tokens minted by kind.");
    metrics::describe_counter!(
        "widget_auth_commands_committed_total",
        "Admin commands that recorded an event."
    );
    metrics::describe_counter!(
        "widget_auth_rate_limited_total",
        "Requests refused with 429 by the abuse limits, by route."
    );
    metrics::describe_counter!(
        "widget_auth_refresh_reuse_detections_total",
        "Spent refresh tokens presented again (each revoked its whole family)."
    );
    metrics::describe_counter!(
        "widget_auth_origin_rejections_total",
        "Browser requests refused with 403 for their Origin."
    );
    metrics::describe_gauge!(
        "widget_auth_store_up",
        "1 when the event store answered the health check of this scrape, else 0."
    );
    metrics::describe_gauge!(
        "widget_auth_projection_lag_events",
        "Committed events the cross-node feed last found this node had not applied yet (0 on SQLite)."
    );
    metrics::describe_gauge!(
        "widget_auth_projection_lag_seconds",
        Unit::Seconds,
        "Age of the oldest of those events when the feed found it (0 on SQLite)."
    );
    describe_snapshots();
}

/// Help lines of the snapshot metrics (part of [`describe`]).
fn describe_snapshots() {
    metrics::describe_gauge!(
        "widget_auth_snapshot_age_seconds",
        Unit::Seconds,
        "Age of the newest read-model snapshot this node loaded, wrote or found in the store (absent until there is one)."
    );
    metrics::describe_gauge!(
        "widget_auth_startup_replayed_events",
        "Events the start-up applied: those after the snapshot it started from that the snapshot did not hold, or every stored event after a full replay."
    );
    metrics::describe_gauge!(
        "widget_auth_startup_from_snapshot",
        "1 when this node built its read models from a snapshot plus later events, 0 after a full replay."
    );
}

/// Folds histogram samples into buckets every [`UPKEEP_EVERY`] until shutdown.
pub async fn keep_drained(metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stopped| *stopped) => return,
            _ = tick.tick() => metrics.upkeep(),
        }
    }
}
