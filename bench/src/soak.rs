//! `bench soak`: a bounded mixed load on one widget-auth node on 127.0.0.1, for minutes,
//! with the abuse limits on: config, guest, user-token, exchange, refresh and admin
//! commands from a fixed number of workers, plus slow clients trickling a request head and
//! an unknown-key flood. It reports every unexpected answer (the only expected refusals
//! are the flood's 403s and 429s from the one abusive IP), p50/p99 per endpoint and the
//! server's resident memory at the start and the end.
//!
//! Visitors arrive through a "proxy" on 127.0.0.1 (trusted by the node) with an
//! `X-Forwarded-For` address each, as behind a balancer; one abusive address mints
//! guests as fast as it can and is expected to be held at its limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::Rng as _;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;

use crate::seed::{self, SeededKey};
use crate::{free_port, rss_kib, wait_ok, Server};

/// What a soak run is asked to do.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub minutes: f64,
    pub postgres: bool,
    pub keys: usize,
    pub workers: usize,
    pub slow_clients: usize,
    /// The widget-auth binary to run.
    pub binary: std::path::PathBuf,
}

/// Latencies and answers of one endpoint.
#[derive(Debug, Default)]
struct Endpoint {
    latencies_us: Vec<u32>,
    ok: u64,
    expected_refusals: u64,
    errors: u64,
    /// Up to a few unexpected answers, to say what went wrong.
    samples: Vec<String>,
}

#[derive(Debug, Default)]
struct Tally(Mutex<BTreeMap<&'static str, Endpoint>>);

impl Tally {
    fn record(&self, endpoint: &'static str, started: Instant, outcome: Outcome) {
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map.entry(endpoint).or_default();
        entry.latencies_us.push(micros);
        match outcome {
            Outcome::Ok => entry.ok += 1,
            Outcome::Expected => entry.expected_refusals += 1,
            Outcome::Error(what) => {
                entry.errors += 1;
                if entry.samples.len() < 3 {
                    entry.samples.push(what);
                }
            }
        }
    }
}

enum Outcome {
    Ok,
    Expected,
    Error(String),
}

/// Sends `request`, records it under `endpoint`, and returns the JSON body of a 200.
/// `expected` is the one refusal status this request may get by design.
async fn call(
    tally: &Tally,
    endpoint: &'static str,
    request: reqwest::RequestBuilder,
    expected: Option<u16>,
) -> Option<Value> {
    let started = Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            tally.record(
                endpoint,
                started,
                Outcome::Error(format!("transport: {err}")),
            );
            return None;
        }
    };
    let status = response.status().as_u16();
    let body = response.bytes().await;
    let outcome = match (&body, status) {
        (Err(err), _) => Outcome::Error(format!("body: {err}")),
        (Ok(_), 200 | 304) => Outcome::Ok,
        (Ok(_), s) if Some(s) == expected => Outcome::Expected,
        (Ok(bytes), s) => Outcome::Error(format!("{s} {}", String::from_utf8_lossy(bytes))),
    };
    let ok = matches!(outcome, Outcome::Ok) && status == 200;
    tally.record(endpoint, started, outcome);
    if ok {
        body.ok().and_then(|b| serde_json::from_slice(&b).ok())
    } else {
        None
    }
}

struct Node {
    server: Server,
    internal: String,
    admin_token: String,
}

fn start_node(
    binary: &Path,
    work: &Path,
    database_url: Option<&str>,
    pem: &Path,
) -> anyhow::Result<Node> {
    let (public, internal) = (free_port(), free_port());
    let admin_token = format!("soak-{}", uuid::Uuid::new_v4().simple());
    let mut command = Command::new(binary);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WIDGET_AUTH_DATA_DIR", work.join("data"))
        .env("WIDGET_AUTH_PUBLIC_ADDR", format!("127.0.0.1:{public}"))
        .env("WIDGET_AUTH_INTERNAL_ADDR", format!("127.0.0.1:{internal}"))
        .env("WIDGET_AUTH_ADMIN_TOKEN", &admin_token)
        .env("WIDGET_AUTH_RATE_LIMITS", "on")
        .env("WIDGET_AUTH_TRUSTED_PROXIES", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = database_url {
        command
            .env("DATABASE_URL", url)
            .env("WIDGET_AUTH_SIGNING_KEY_FILE", pem);
    }
    let child = command.spawn().context("starting widget-auth")?;
    Ok(Node {
        server: Server {
            child,
            base: format!("http://127.0.0.1:{public}"),
        },
        internal: format!("http://127.0.0.1:{internal}"),
        admin_token,
    })
}

/// A visitor's address behind the trusted proxy (never the abusive one).
fn visitor_ip(rng: &mut impl rand::Rng) -> String {
    format!(
        "10.{}.{}.{}",
        rng.random_range(0..=255u8),
        rng.random_range(0..=255u8),
        rng.random_range(1..=254u8)
    )
}

const ABUSER: &str = "192.0.2.66";

struct Context {
    client: reqwest::Client,
    public: String,
    internal: String,
    admin_token: String,
    keys: Vec<SeededKey>,
    tally: Tally,
    stop: AtomicBool,
}

/// One worker: a visitor's whole journey, again and again, with an admin change now and
/// then.
async fn worker(ctx: Arc<Context>, n: usize) {
    let mut round = 0usize;
    while !ctx.stop.load(Ordering::Relaxed) {
        round += 1;
        let (key, ip, user) = {
            let mut rng = rand::rng();
            let key = ctx.keys[rng.random_range(0..ctx.keys.len())].clone();
            (key, visitor_ip(&mut rng), format!("user-{n}-{round}"))
        };
        let public = |path: &str| format!("{}{path}", ctx.public);
        let browser = |request: reqwest::RequestBuilder| {
            request
                .header("origin", &key.origin)
                .header("x-forwarded-for", &ip)
        };
        call(
            &ctx.tally,
            "config",
            browser(ctx.client.get(public("/api/v1/widget/config")))
                .query(&[("client_key", &key.public_key)]),
            None,
        )
        .await;
        let guest = call(
            &ctx.tally,
            "guest",
            browser(ctx.client.post(public("/api/v1/widget/auth/guest")))
                .json(&json!({"client_key": key.public_key})),
            None,
        )
        .await;
        if let Some(refresh_token) = guest.as_ref().and_then(|g| g["refresh_token"].as_str()) {
            call(
                &ctx.tally,
                "refresh",
                browser(ctx.client.post(public("/api/v1/widget/auth/refresh")))
                    .json(&json!({"refresh_token": refresh_token})),
                None,
            )
            .await;
        }
        let visitor = call(
            &ctx.tally,
            "user-token",
            ctx.client
                .post(public("/api/v1/widget/auth/user-token"))
                .bearer_auth(&key.secret_key)
                .json(&json!({"client_key": key.public_key, "user_id": user, "name": "Ada"})),
            None,
        )
        .await;
        if let Some(token) = visitor.as_ref().and_then(|v| v["visitor_token"].as_str()) {
            call(
                &ctx.tally,
                "exchange",
                browser(ctx.client.post(public("/api/v1/widget/auth/exchange")))
                    .json(&json!({"token": token})),
                None,
            )
            .await;
        }
        if round.is_multiple_of(20) {
            let body = if round.is_multiple_of(40) {
                json!({"type": "update_config", "config": {"copy": {"title": format!("Round {round}")}}, "reason": "soak"})
            } else {
                json!({"type": "change_origins", "origins": [key.origin], "reason": "soak"})
            };
            call(
                &ctx.tally,
                "admin command",
                ctx.client
                    .post(format!(
                        "{}/internal/v1/client-keys/{}/commands",
                        ctx.internal, key.id
                    ))
                    .bearer_auth(&ctx.admin_token)
                    .json(&body),
                None,
            )
            .await;
        }
    }
}

/// Guests from one address as fast as one connection goes: held at its limit (429).
async fn abuser(ctx: Arc<Context>) {
    let key = ctx.keys[0].clone();
    while !ctx.stop.load(Ordering::Relaxed) {
        call(
            &ctx.tally,
            "guest (abusive IP)",
            ctx.client
                .post(format!("{}/api/v1/widget/auth/guest", ctx.public))
                .header("origin", &key.origin)
                .header("x-forwarded-for", ABUSER)
                .json(&json!({"client_key": key.public_key})),
            Some(429),
        )
        .await;
    }
}

/// Well-formed keys nobody created: 403 by design, never a store query.
async fn flood(ctx: Arc<Context>) {
    while !ctx.stop.load(Ordering::Relaxed) {
        let key = domain::PublicKey::generate(&mut rand::rng());
        call(
            &ctx.tally,
            "unknown-key flood",
            ctx.client
                .get(format!("{}/api/v1/widget/config", ctx.public))
                .query(&[("client_key", key.as_str())])
                .header("origin", "https://flood.soak.test"),
            Some(403),
        )
        .await;
    }
}

/// Connections that send a request head one byte a second. Counts the connections
/// opened and the ones the server closed (a write failing); reopens closed ones.
async fn slow_client(ctx: Arc<Context>, opened: Arc<AtomicU64>, closed: Arc<AtomicU64>) {
    let addr = ctx.public.trim_start_matches("http://").to_owned();
    let head =
        b"GET /api/v1/widget/config?client_key=pk_live_slow HTTP/1.1\r\nHost: soak\r\nX-Slow: ";
    while !ctx.stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let mut sent = 0usize;
        while !ctx.stop.load(Ordering::Relaxed) {
            let byte = head.get(sent).copied().unwrap_or(b'a');
            if stream.write_all(&[byte]).await.is_err() {
                closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)]) / 1000.0
}

async fn rate_limited_total(client: &reqwest::Client, internal: &str) -> u64 {
    let Ok(response) = client.get(format!("{internal}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("widget_auth_rate_limited_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs the soak and returns its report (Markdown).
pub async fn run(plan: &SoakPlan) -> anyhow::Result<String> {
    let work = std::env::temp_dir().join(format!("widget-auth-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let pem = work.join("signing.pem");
    std::fs::write(&pem, widget_auth::tokens::SigningKeys::generate_pem()?)?;
    let database = format!("wa_soak_{}", std::process::id());
    let database_url = if plan.postgres {
        Some(seed::create_database(&database).await?)
    } else {
        None
    };
    let result = soak(plan, &work, database_url.as_deref(), &pem).await;
    if plan.postgres {
        seed::drop_database(&database).await;
    }
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn soak(
    plan: &SoakPlan,
    work: &Path,
    database_url: Option<&str>,
    pem: &Path,
) -> anyhow::Result<String> {
    let node = start_node(&plan.binary, work, database_url, pem)?;
    wait_ok(
        &format!("{}/readyz", node.internal),
        Duration::from_secs(60),
    )
    .await?;
    eprintln!("soak: seeding {} keys", plan.keys);
    let keys = seed::through_admin(&node.internal, &node.admin_token, plan.keys.max(1)).await?;
    let pid = node.server.child.id();
    let rss_start = rss_kib(pid)?;
    let ctx = Arc::new(Context {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(plan.workers + 8)
            .timeout(Duration::from_secs(30))
            .build()?,
        public: node.server.base.clone(),
        internal: node.internal.clone(),
        admin_token: node.admin_token.clone(),
        keys,
        tally: Tally::default(),
        stop: AtomicBool::new(false),
    });
    let (opened, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for n in 0..plan.workers {
        tasks.push(tokio::spawn(worker(ctx.clone(), n)));
    }
    tasks.push(tokio::spawn(abuser(ctx.clone())));
    tasks.push(tokio::spawn(flood(ctx.clone())));
    for _ in 0..plan.slow_clients {
        tasks.push(tokio::spawn(slow_client(
            ctx.clone(),
            opened.clone(),
            closed.clone(),
        )));
    }
    let duration = Duration::from_secs_f64(plan.minutes * 60.0);
    let started = Instant::now();
    let mut rss_peak = rss_start;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(5).min(duration.saturating_sub(started.elapsed())))
            .await;
        rss_peak = rss_peak.max(rss_kib(pid).unwrap_or_default());
        eprintln!(
            "soak: {:.0} s, RSS {} KiB",
            started.elapsed().as_secs_f64(),
            rss_kib(pid).unwrap_or_default()
        );
    }
    ctx.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let elapsed = started.elapsed();
    let rss_end = rss_kib(pid)?;
    let limited = rate_limited_total(&ctx.client, &node.internal).await;
    let alive = ctx
        .client
        .get(format!("{}/healthz", node.internal))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    drop(node);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Soak of {:.1} min on {} ({} keys, {} workers, 1 abusive IP, 1 unknown-key flood connection, {} slow clients), limits on, at {}.\n",
        elapsed.as_secs_f64() / 60.0,
        if plan.postgres { "PostgreSQL" } else { "SQLite" },
        plan.keys,
        plan.workers,
        plan.slow_clients,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
    );
    let _ = writeln!(
        out,
        "| endpoint | requests | 200/304 | expected refusals | errors | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let mut errors = 0;
    let mut samples = Vec::new();
    let tally = std::mem::take(
        &mut *ctx
            .tally
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for (name, mut endpoint) in tally {
        endpoint.latencies_us.sort_unstable();
        errors += endpoint.errors;
        samples.extend(endpoint.samples.iter().map(|s| format!("{name}: {s}")));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {:.2} | {:.2} |",
            endpoint.latencies_us.len(),
            endpoint.ok,
            endpoint.expected_refusals,
            endpoint.errors,
            percentile(&endpoint.latencies_us, 0.50),
            percentile(&endpoint.latencies_us, 0.99),
        );
    }
    let _ = writeln!(
        out,
        "\nUnexpected answers: {errors}{}. Rate-limited (429) per `/metrics`: {limited}. Slow clients: {} connections opened, {} closed by the server. Resident memory: {rss_start} KiB at the start (after seeding), {rss_end} KiB at the end (peak sampled {rss_peak} KiB). Server alive at the end: {alive}.",
        if samples.is_empty() {
            String::new()
        } else {
            format!(" (e.g. {})", samples.join("; "))
        },
        opened.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
    );
    Ok(out)
}
