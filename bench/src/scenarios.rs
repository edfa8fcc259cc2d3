//! The measurements, run alternately against widget-auth and its yardstick, and the
//! report they produce.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use rand::seq::SliceRandom;
use sqlx::{Connection, Row};
use widget_auth::tokens::{Claims, SigningKeys, TokenKind};

use crate::seed::{self, SeededKey};
use crate::wrk::{self, Run};
use crate::{free_port, rss_kib, wait_ok, Plan, Server};

const SERVER_CORE: usize = 0;
const LOAD_CORE: usize = 1;

struct Ours {
    server: Server,
    internal: String,
    admin_token: String,
}

fn start_ours(
    root: &Path,
    work: &Path,
    database_url: &str,
    pem: &Path,
    log: &str,
) -> anyhow::Result<Ours> {
    start_ours_with(root, work, database_url, pem, log, &[])
}

/// widget-auth as [`start_ours`] starts it, with `env` set on top (the abuse limits on,
/// for the scenario that measures them; every other scenario runs with them off, since a
/// load from one IP is exactly what they refuse).
fn start_ours_with(
    root: &Path,
    work: &Path,
    database_url: &str,
    pem: &Path,
    log: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Ours> {
    let (public, internal) = (free_port(), free_port());
    let admin_token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let child = Command::new("taskset")
        .args(["-c", &SERVER_CORE.to_string()])
        .arg(root.join("target/release/widget-auth"))
        .env("DATABASE_URL", database_url)
        .env("WIDGET_AUTH_SIGNING_KEY_FILE", pem)
        .env("WIDGET_AUTH_DATA_DIR", work.join("data"))
        .env("WIDGET_AUTH_PUBLIC_ADDR", format!("127.0.0.1:{public}"))
        .env("WIDGET_AUTH_INTERNAL_ADDR", format!("127.0.0.1:{internal}"))
        .env("WIDGET_AUTH_ADMIN_TOKEN", &admin_token)
        .env("WIDGET_AUTH_RATE_LIMITS", "off")
        // Pool size for the admin comparison: pgbench's 64 clients plus these must fit
        // in PostgreSQL's default 100 connections (the pool stays open while pgbench runs).
        .env("WIDGET_AUTH_DB_MAX_CONNECTIONS", "30")
        .env("WIDGET_AUTH_LOG_FORMAT", "json")
        .env("RUST_LOG", log)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting widget-auth")?;
    Ok(Ours {
        server: Server {
            child,
            base: format!("http://127.0.0.1:{public}"),
        },
        internal: format!("http://127.0.0.1:{internal}"),
        admin_token,
    })
}

fn start_baseline(work: &Path, keys_file: &Path, pem: &Path) -> anyhow::Result<Server> {
    let port = free_port();
    let child = Command::new("taskset")
        .args(["-c", &SERVER_CORE.to_string()])
        .arg(std::env::current_exe()?)
        .args(["baseline", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--keys")
        .arg(keys_file)
        .arg("--pem")
        .arg(pem)
        .current_dir(work)
        .spawn()
        .context("starting the baseline")?;
    Ok(Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    })
}

/// One request per line: `METHOD\tPATH\tName:value|Name:value\tBODY`. The Lua script
/// pre-formats them all and sends them in file order, each once per pass.
fn request_file(work: &Path, name: &str, lines: &[String]) -> anyhow::Result<PathBuf> {
    let data = work.join(format!("{name}.requests"));
    std::fs::write(&data, lines.join("\n") + "\n")?;
    let script = work.join(format!("{name}.lua"));
    std::fs::write(
        &script,
        format!(
            r#"local reqs = {{}}
for line in io.lines("{}") do
  local method, path, headers, body = line:match("^(%S+)\t([^\t]*)\t([^\t]*)\t(.*)$")
  local h = {{}}
  for name, value in headers:gmatch("([^|:]+):([^|]*)") do h[name] = value end
  if body == "" then body = nil else h["Content-Type"] = "application/json" end
  reqs[#reqs + 1] = wrk.format(method, path, h, body)
end
local i = 0
request = function()
  i = i + 1
  if i > #reqs then i = 1 end
  return reqs[i]
end
"#,
            data.display()
        ),
    )?;
    Ok(script)
}

fn config_line(key: &SeededKey, extra: &str) -> String {
    format!(
        "GET\t/api/v1/widget/config?client_key={}\tOrigin:{}{extra}\t",
        key.public_key, key.origin
    )
}

fn guest_line(key: &SeededKey) -> String {
    format!(
        "POST\t/api/v1/widget/auth/guest\tOrigin:{}\t{{\"client_key\":\"{}\"}}",
        key.origin, key.public_key
    )
}

/// A guest mint relayed by a proxy on 127.0.0.1 for client number `i` (an address in
/// 10.0.0.0/8): the limited server trusts the proxy, so each line is a visitor of its
/// own, as behind a real balancer.
fn forwarded_guest_line(key: &SeededKey, i: usize) -> String {
    format!(
        "POST\t/api/v1/widget/auth/guest\tOrigin:{}|X-Forwarded-For:10.{}.{}.{}\t{{\"client_key\":\"{}\"}}",
        key.origin,
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff,
        key.public_key
    )
}

/// Each key from 8 visitors: a (key, IP) pair comes round every 8 passes over the keys,
/// well inside the default 30 per minute per IP, so the limits-on side answers 200 to
/// everything and the comparison measures the limiter's cost, not cheaper 429s.
const VISITORS_PER_KEY: usize = 8;

/// The scenario comparing widget-auth with itself: abuse limits on against off.
const LIMITS_SCENARIO: &str = "guest, limits on vs off";

/// Medians and latencies of one side of a comparison.
#[derive(Debug, Default, Clone)]
struct Side {
    runs: Vec<Run>,
}

impl Side {
    fn median(&self, f: impl Fn(&Run) -> f64) -> f64 {
        let mut values: Vec<f64> = self.runs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or_default()
    }
    fn rps(&self) -> f64 {
        self.median(|r| r.rps)
    }
    fn p50(&self) -> f64 {
        self.median(|r| r.p50_us)
    }
    fn p99(&self) -> f64 {
        self.median(|r| r.p99_us)
    }
    fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.non_2xx).sum()
    }
}

struct Comparison {
    name: &'static str,
    yardstick: &'static str,
    base: Side,
    ours: Side,
    /// Minimum throughput ratio and maximum p99 ratio, when the issue sets them.
    target: Option<(f64, Option<f64>)>,
    /// Non-2xx answers are the point (the unknown-key flood).
    expect_errors: bool,
}

struct Scenario {
    name: &'static str,
    yardstick: &'static str,
    base_script: PathBuf,
    ours_script: PathBuf,
    target: Option<(f64, Option<f64>)>,
    expect_errors: bool,
}

fn visitor_claims(key: &SeededKey, kind: TokenKind, i: usize) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: "widget-auth".to_owned(),
        aud: kind.audience().to_owned(),
        sub: format!("user-{i}"),
        iat: now,
        nbf: now,
        exp: now + 3600,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        ck: key.id.clone(),
        kind,
        ver: 1,
        origin: (kind == TokenKind::Refresh).then(|| key.origin.clone()),
        guest: Some(false),
        name: None,
        email: None,
        fam: (kind == TokenKind::Refresh).then(|| uuid::Uuid::new_v4().simple().to_string()),
        fst: (kind == TokenKind::Refresh).then_some(now),
        gen: (kind == TokenKind::Refresh).then_some(0),
    }
}

/// Single-use tokens for one run: enough for the run, never reused.
fn token_requests(
    keys: &[SeededKey],
    signer: &SigningKeys,
    kind: TokenKind,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    (0..count)
        .map(|i| {
            let key = &keys[i % keys.len()];
            let token = signer.mint(&visitor_claims(key, kind, i))?;
            Ok(match kind {
                TokenKind::Refresh => format!(
                    "POST\t/api/v1/widget/auth/refresh\tOrigin:{}\t{{\"refresh_token\":\"{token}\"}}",
                    key.origin
                ),
                _ => format!("POST\t/api/v1/widget/auth/exchange\tOrigin:{}\t{{\"token\":\"{token}\"}}", key.origin),
            })
        })
        .collect()
}

/// Store calls widget-auth made for anything but its cross-node feed, from `/metrics`.
async fn store_queries(internal: &str) -> anyhow::Result<u64> {
    counter(
        internal,
        "widget_auth_store_queries_total{caller=\"other\"}",
    )
    .await
}

/// One counter from widget-auth's `/metrics`.
async fn counter(internal: &str, name: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{internal}/metrics"))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no {name} in /metrics"))
}

/// What the admin runs cost widget-auth in PostgreSQL statements.
#[derive(Debug, Default, Clone, Copy)]
struct CommitCounters {
    commands: u64,
    groups: u64,
    queries: u64,
}

impl CommitCounters {
    async fn read(internal: &str) -> anyhow::Result<Self> {
        Ok(Self {
            commands: counter(internal, "widget_auth_group_commit_events_total").await?,
            groups: counter(internal, "widget_auth_group_commit_statements_total").await?,
            queries: store_queries(internal).await?,
        })
    }

    fn since(self, before: Self) -> Self {
        Self {
            commands: self.commands - before.commands,
            groups: self.groups - before.groups,
            queries: self.queries - before.queries,
        }
    }
}

/// The transaction postgres-es commits an event with (BEGIN, one INSERT into a table
/// shaped like `events`, COMMIT): PostgreSQL's own ceiling for our commit pattern.
const EVENT_SHAPED: &str = "\\set k random(1, 1000000000)\nBEGIN;\nINSERT INTO bench_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ('ClientKey', :k, 1, 'OriginsChanged', '1.0', '{\"OriginsChanged\":{\"origins\":[\"https://a.test\"]}}', '{\"actor\":\"bench\",\"request_id\":\"r\"}') ON CONFLICT DO NOTHING;\nCOMMIT;\n";

fn pgbench(database: &str, connections: u32, seconds: u32, work: &Path) -> anyhow::Result<f64> {
    pgbench_script(
        database,
        connections,
        seconds,
        work,
        "single-row",
        "INSERT INTO bench_single_row (v) VALUES (1);\n",
    )
}

fn pgbench_script(
    database: &str,
    connections: u32,
    seconds: u32,
    work: &Path,
    name: &str,
    sql: &str,
) -> anyhow::Result<f64> {
    let script = work.join(format!("{name}.sql"));
    std::fs::write(&script, sql)?;
    let output = Command::new("taskset")
        .env("PGSSLMODE", "disable")
        .args([
            "-c",
            &LOAD_CORE.to_string(),
            "pgbench",
            "-n",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
        ])
        .arg(format!("-c{connections}"))
        .arg("-j1")
        .arg(format!("-T{seconds}"))
        .arg("-f")
        .arg(&script)
        .arg(database)
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| {
            format!(
                "pgbench printed no tps: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

pub async fn run_all(plan: &Plan, root: &Path) -> anyhow::Result<String> {
    let work = std::env::temp_dir().join(format!("widget-auth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let pem = work.join("signing.pem");
    std::fs::write(&pem, SigningKeys::generate_pem()?)?;
    let signer = SigningKeys::load(&pem)?;
    let database = format!("wa_bench_{}", std::process::id());
    let database_url = seed::create_database(&database).await?;

    let ours = start_ours(root, &work, &database_url, &pem, "warn")?;
    wait_ok(
        &format!("{}/readyz", ours.internal),
        Duration::from_secs(60),
    )
    .await?;
    eprintln!("seeding {} client keys through the admin API", plan.keys);
    let started = Instant::now();
    let mut keys = seed::through_admin(&ours.internal, &ours.admin_token, plan.keys).await?;
    let seeding = started.elapsed();
    keys.shuffle(&mut rand::rng());
    let keys_file = work.join("keys.txt");
    std::fs::write(
        &keys_file,
        keys.iter()
            .map(|k| format!("{} {}\n", k.public_key, k.origin))
            .collect::<String>(),
    )?;
    let baseline = start_baseline(&work, &keys_file, &pem)?;
    wait_ok(
        &format!("{}/healthz", baseline.base),
        Duration::from_secs(30),
    )
    .await?;

    let config: Vec<String> = keys.iter().map(|k| config_line(k, "")).collect();
    let revalidate: Vec<String> = keys
        .iter()
        .map(|k| config_line(k, &format!("|If-None-Match:\"{}.1\"", k.id)))
        .collect();
    let guests: Vec<String> = keys.iter().map(guest_line).collect();
    let forwarded_guests: Vec<String> = (0..keys.len() * VISITORS_PER_KEY)
        .map(|i| forwarded_guest_line(&keys[i % keys.len()], i))
        .collect();
    // The limits-on twin of `ours`, on the same database (it replays the seeded keys).
    let limited = if plan.runs(LIMITS_SCENARIO) {
        let limited = start_ours_with(
            root,
            &work.join("limited"),
            &database_url,
            &pem,
            "warn",
            &[
                ("WIDGET_AUTH_RATE_LIMITS", "on"),
                ("WIDGET_AUTH_TRUSTED_PROXIES", "127.0.0.1"),
            ],
        )?;
        wait_ok(
            &format!("{}/readyz", limited.internal),
            Duration::from_secs(60),
        )
        .await?;
        Some(limited)
    } else {
        None
    };
    let user_tokens: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            format!(
                "POST\t/api/v1/widget/auth/user-token\tAuthorization:Bearer {}\t{{\"client_key\":\"{}\",\"user_id\":\"user-{i}\"}}",
                k.secret_key, k.public_key
            )
        })
        .collect();
    let mut rng = rand::rng();
    let flood: Vec<String> = (0..keys.len().max(1000))
        .map(|_| {
            format!(
                "GET\t/api/v1/widget/config?client_key={}\tOrigin:https://flood.bench.test\t",
                domain::PublicKey::generate(&mut rng).as_str()
            )
        })
        .collect();
    let base_config = request_file(&work, "base-config", &config)?;
    let base_flood = request_file(&work, "base-flood", &flood)?;
    let base_guest = request_file(&work, "base-guest", &guests)?;
    let mut scenarios = [
        Scenario {
            name: "config (allowed origin)",
            yardstick: "baseline GET",
            base_script: base_config.clone(),
            ours_script: base_config.clone(),
            target: Some((0.95, Some(1.1))),
            expect_errors: false,
        },
        Scenario {
            name: "config 304 revalidation",
            yardstick: "baseline GET",
            base_script: base_config.clone(),
            ours_script: request_file(&work, "revalidate", &revalidate)?,
            target: None,
            expect_errors: false,
        },
        Scenario {
            name: "guest",
            yardstick: "baseline POST",
            base_script: base_guest.clone(),
            ours_script: base_guest.clone(),
            target: Some((0.90, None)),
            expect_errors: false,
        },
        Scenario {
            name: LIMITS_SCENARIO,
            yardstick: "widget-auth, limits off",
            base_script: request_file(&work, "guest-forwarded", &forwarded_guests)?,
            ours_script: request_file(&work, "guest-forwarded", &forwarded_guests)?,
            target: Some((0.97, None)),
            expect_errors: false,
        },
        Scenario {
            name: "user-token",
            yardstick: "baseline POST",
            base_script: base_guest.clone(),
            ours_script: request_file(&work, "user-token", &user_tokens)?,
            target: None,
            expect_errors: false,
        },
        Scenario {
            name: "exchange",
            yardstick: "baseline POST",
            base_script: base_guest.clone(),
            ours_script: PathBuf::new(),
            target: None,
            expect_errors: false,
        },
        Scenario {
            name: "refresh",
            yardstick: "baseline POST",
            base_script: base_guest.clone(),
            ours_script: PathBuf::new(),
            target: None,
            expect_errors: false,
        },
        Scenario {
            name: "unknown-key flood",
            yardstick: "baseline GET (unknown keys)",
            base_script: base_flood.clone(),
            ours_script: base_flood.clone(),
            target: Some((0.95, None)),
            expect_errors: true,
        },
    ];
    let mut comparisons: Vec<Comparison> = scenarios
        .iter()
        .map(|s| Comparison {
            name: s.name,
            yardstick: s.yardstick,
            base: Side::default(),
            ours: Side::default(),
            target: s.target,
            expect_errors: s.expect_errors,
        })
        .collect();
    let tokens_per_run = (plan.seconds as usize * 20_000).max(1_000);
    let mut flood_queries = (0u64, 0u64);
    for round in 0..plan.rounds {
        for (index, scenario) in scenarios.iter_mut().enumerate() {
            if !plan.runs(scenario.name) {
                continue;
            }
            if scenario.name == "exchange" || scenario.name == "refresh" {
                let kind = if scenario.name == "exchange" {
                    TokenKind::Visitor
                } else {
                    TokenKind::Refresh
                };
                let lines = token_requests(&keys, &signer, kind, tokens_per_run)?;
                scenario.ours_script =
                    request_file(&work, &format!("{}-{round}", scenario.name), &lines)?;
            }
            let measure_flood = scenario.name == "unknown-key flood";
            let sides = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for is_ours in sides {
                let (url, script) = match (is_ours, &limited) {
                    (true, Some(limited)) if scenario.name == LIMITS_SCENARIO => {
                        (&limited.server.base, &scenario.ours_script)
                    }
                    (false, _) if scenario.name == LIMITS_SCENARIO => {
                        (&ours.server.base, &scenario.base_script)
                    }
                    (true, _) => (&ours.server.base, &scenario.ours_script),
                    (false, _) => (&baseline.base, &scenario.base_script),
                };
                eprintln!(
                    "round {round}: {} on {}",
                    scenario.name,
                    if is_ours { "widget-auth" } else { "baseline" }
                );
                let before = if measure_flood && is_ours {
                    Some(store_queries(&ours.internal).await?)
                } else {
                    None
                };
                let run = wrk::run(LOAD_CORE, url, script, plan.connections, plan.seconds)?;
                if let Some(before) = before {
                    flood_queries.0 += run.requests;
                    flood_queries.1 += store_queries(&ours.internal).await? - before;
                }
                let side = if is_ours {
                    &mut comparisons[index].ours
                } else {
                    &mut comparisons[index].base
                };
                side.runs.push(run);
            }
        }
    }

    // Admin commands spread over many keys against PostgreSQL's own single-row commit rate.
    {
        let mut conn = sqlx::PgConnection::connect(&database_url).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_single_row (id bigserial PRIMARY KEY, v int NOT NULL)").execute(&mut conn).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_events (LIKE events INCLUDING ALL)")
            .execute(&mut conn)
            .await?;
    }
    let commands: Vec<String> = keys
        .iter()
        .map(|k| {
            format!(
                "POST\t/internal/v1/client-keys/{}/commands\tAuthorization:Bearer {}\t{{\"type\":\"change_origins\",\"origins\":[\"{}\"]}}",
                k.id, ours.admin_token, k.origin
            )
        })
        .collect();
    let commands_script = request_file(&work, "commands", &commands)?;
    let mut admin = (Vec::new(), Vec::new(), 0u64, Vec::new());
    let mut commit_counters = CommitCounters::default();
    for round in 0..plan.rounds * usize::from(plan.runs("admin")) {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_ours in order {
            eprintln!(
                "round {round}: admin commands on {}",
                if is_ours { "widget-auth" } else { "pgbench" }
            );
            if is_ours {
                let before = CommitCounters::read(&ours.internal).await?;
                let run = wrk::run(
                    LOAD_CORE,
                    &ours.internal,
                    &commands_script,
                    plan.connections,
                    plan.seconds,
                )?;
                let spent = CommitCounters::read(&ours.internal).await?.since(before);
                commit_counters.commands += spent.commands;
                commit_counters.groups += spent.groups;
                commit_counters.queries += spent.queries;
                admin.2 += run.non_2xx;
                admin.1.push(run.rps);
            } else {
                admin.3.push(pgbench_script(
                    &database,
                    plan.connections,
                    plan.seconds,
                    &work,
                    "event-shaped",
                    EVENT_SHAPED,
                )?);
                admin
                    .0
                    .push(pgbench(&database, plan.connections, plan.seconds, &work)?);
            }
        }
    }
    let ours_rss_loaded = rss_kib(ours.server.child.id()).unwrap_or_default();
    drop(limited);
    drop(ours);
    drop(baseline);
    seed::drop_database(&database).await;

    let replay = if plan.runs("replay") {
        measure_replay(plan, root, &work, &pem).await?
    } else {
        Replay::default()
    };
    let memory = if plan.runs("memory") {
        measure_memory(plan, root, &work, &pem).await?
    } else {
        Memory::default()
    };
    let _ = std::fs::remove_dir_all(&work);
    Ok(render(
        plan,
        &comparisons,
        flood_queries,
        &admin,
        commit_counters,
        &replay,
        &memory,
        seeding,
        ours_rss_loaded,
    ))
}

#[derive(Default)]
struct Replay {
    events: u64,
    keys: usize,
    plain: Vec<f64>,
    ours: Vec<f64>,
}

/// Seconds for a plain sqlx stream of the same query the start-up replay runs.
async fn plain_stream(database_url: &str) -> anyhow::Result<(u64, f64)> {
    let mut conn = sqlx::PgConnection::connect(database_url).await?;
    let started = Instant::now();
    let mut rows = sqlx::query(
        "SELECT aggregate_id, sequence, event_type, event_version, CAST(payload AS TEXT) AS payload, \
         CAST(metadata AS TEXT) AS metadata FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence",
    )
    .bind("ClientKey")
    .fetch(&mut conn);
    let mut count = 0u64;
    let mut bytes = 0usize;
    while let Some(row) = rows.next().await {
        let row = row?;
        let payload: String = row.try_get(4)?;
        let metadata: String = row.try_get(5)?;
        bytes += payload.len() + metadata.len();
        count += 1;
    }
    std::hint::black_box(bytes);
    Ok((count, started.elapsed().as_secs_f64()))
}

/// Starts widget-auth on a database and returns (events, seconds) of its start-up replay,
/// read from its own "read models ready" log line, and the server.
async fn our_replay(
    root: &Path,
    work: &Path,
    database_url: &str,
    pem: &Path,
) -> anyhow::Result<(u64, f64, Server)> {
    let mut ours = start_ours(root, work, database_url, pem, "info")?;
    let stdout = ours.server.child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || -> Option<(u64, f64)> {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("read models ready") {
                let value: serde_json::Value = serde_json::from_str(&line).ok()?;
                let fields = &value["fields"];
                return Some((
                    fields["events"].as_u64()?,
                    fields["elapsed_ms"].as_f64()? / 1000.0,
                ));
            }
        }
        None
    });
    wait_ok(
        &format!("{}/readyz", ours.internal),
        Duration::from_secs(600),
    )
    .await?;
    let (events, seconds) = tokio::task::spawn_blocking(move || reader.join().ok().flatten())
        .await?
        .context("no ready log line")?;
    Ok((events, seconds, ours.server))
}

async fn measure_replay(
    plan: &Plan,
    root: &Path,
    work: &Path,
    pem: &Path,
) -> anyhow::Result<Replay> {
    let name = format!("wa_bench_replay_{}", std::process::id());
    let url = seed::create_database(&name).await?;
    migrate(root, &url)?;
    let per_key = 20;
    let keys = plan.replay_events.div_ceil(per_key);
    eprintln!(
        "seeding {} events for the replay measurement",
        keys * per_key
    );
    let events = seed::events_directly(&url, keys, per_key).await?;
    let mut replay = Replay {
        events,
        keys,
        plain: Vec::new(),
        ours: Vec::new(),
    };
    for round in 0..plan.rounds.max(2) {
        for is_ours in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            if is_ours {
                let (seen, seconds, _server) = our_replay(root, work, &url, pem).await?;
                if seen != events {
                    bail!("the replay read {seen} events, expected {events}");
                }
                replay.ours.push(seen as f64 / seconds);
            } else {
                let (seen, seconds) = plain_stream(&url).await?;
                replay.plain.push(seen as f64 / seconds);
            }
        }
    }
    seed::drop_database(&name).await;
    Ok(replay)
}

fn migrate(root: &Path, database_url: &str) -> anyhow::Result<()> {
    let status = Command::new(root.join("target/release/widget-auth"))
        .arg("migrate")
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .status()?;
    if !status.success() {
        bail!("widget-auth migrate failed");
    }
    Ok(())
}

#[derive(Default)]
struct Memory {
    empty_kib: u64,
    loaded: Vec<(usize, u64)>,
}

async fn measure_memory(
    plan: &Plan,
    root: &Path,
    work: &Path,
    pem: &Path,
) -> anyhow::Result<Memory> {
    let mut memory = Memory {
        empty_kib: 0,
        loaded: Vec::new(),
    };
    for keys in std::iter::once(0).chain(plan.memory_keys.iter().copied()) {
        let name = format!("wa_bench_memory_{}_{keys}", std::process::id());
        let url = seed::create_database(&name).await?;
        migrate(root, &url)?;
        if keys > 0 {
            eprintln!("seeding {keys} keys for the memory measurement");
            seed::events_directly(&url, keys, 1).await?;
        }
        let (_, _, server) = our_replay(root, work, &url, pem).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_kib(server.child.id())?;
        drop(server);
        seed::drop_database(&name).await;
        if keys == 0 {
            memory.empty_kib = rss;
        } else {
            memory.loaded.push((keys, rss));
        }
    }
    Ok(memory)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

#[allow(clippy::too_many_arguments)]
fn render(
    plan: &Plan,
    comparisons: &[Comparison],
    flood_queries: (u64, u64),
    admin: &(Vec<f64>, Vec<f64>, u64, Vec<f64>),
    commits: CommitCounters,
    replay: &Replay,
    memory: &Memory,
    seeding: Duration,
    loaded_rss: u64,
) -> String {
    let median = |values: &[f64]| {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(out, "Reproduce with `cargo run --release -p bench` (about ten minutes; needs the local PostgreSQL; installs `wrk` from Debian's packages if missing).\n");
    let _ = writeln!(
        out,
        "Run of {} at commit `{commit}` on {} cores ({cpu}). Each server pinned to core {SERVER_CORE} (only one under load at a time), wrk (1 thread, {} connections) pinned to core {LOAD_CORE}, PostgreSQL 15 unpinned. {} rounds of {} s per side, baseline and widget-auth alternating (order flipped every round); medians reported. widget-auth runs on PostgreSQL with `WIDGET_AUTH_RATE_LIMITS=off`, except the limits-on side of `{LIMITS_SCENARIO}` (`WIDGET_AUTH_RATE_LIMITS=on`, `WIDGET_AUTH_TRUSTED_PROXIES=127.0.0.1`, each request from its own `X-Forwarded-For` address; both sides are widget-auth on the same database); it and pgbench connect to PostgreSQL without TLS (`sslmode=disable`). {} client keys seeded through the admin API ({:.1} s).{}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        plan.connections,
        plan.rounds,
        plan.seconds,
        plan.keys,
        seeding.as_secs_f64(),
        if plan.smoke { " **Smoke run: sizes are tiny; the numbers mean nothing.**" } else { "" },
    );
    let _ = writeln!(out, "## Hot path\n");
    let _ = writeln!(out, "| scenario | yardstick | yardstick req/s | widget-auth req/s | ratio | yardstick p50 / p99 ms | widget-auth p50 / p99 ms | p99 ratio | target | |");
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|---|");
    for c in comparisons {
        let ratio = c.ours.rps() / c.base.rps().max(1e-9);
        let p99_ratio = c.ours.p99() / c.base.p99().max(1e-9);
        let (target, ok) = match c.target {
            Some((min, Some(max_p99))) => (
                format!("≥ {min} × rate, p99 ≤ {max_p99} ×"),
                ratio >= min && p99_ratio <= max_p99,
            ),
            Some((min, None)) => (format!("≥ {min} × rate"), ratio >= min),
            None => ("—".to_owned(), true),
        };
        let errors_ok = c.expect_errors || c.ours.errors() == 0;
        let mark = if c.target.is_some() || !errors_ok {
            verdict(ok && errors_ok)
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {} / {} | {} / {} | {:.2} | {} | {} |",
            c.name,
            c.yardstick,
            c.base.rps(),
            c.ours.rps(),
            ratio,
            ms(c.base.p50()),
            ms(c.base.p99()),
            ms(c.ours.p50()),
            ms(c.ours.p99()),
            p99_ratio,
            target,
            mark
        );
    }
    let unexpected: Vec<String> = comparisons
        .iter()
        .filter(|c| !c.expect_errors && (c.ours.errors() > 0 || c.base.errors() > 0))
        .map(|c| {
            format!(
                "{}: widget-auth {} / yardstick {} non-2xx answers",
                c.name,
                c.ours.errors(),
                c.base.errors()
            )
        })
        .collect();
    if unexpected.is_empty() {
        let _ = writeln!(
            out,
            "\nEvery answer in the scenarios above was 2xx/3xx (the flood's are 403 by design)."
        );
    } else {
        let _ = writeln!(
            out,
            "\nUnexpected non-2xx answers: {}.",
            unexpected.join("; ")
        );
    }
    let (requests, queries) = flood_queries;
    let _ = writeln!(
        out,
        "\nStore queries during the unknown-key floods: {queries} for {requests} requests (widget-auth's own counter, `widget_auth_store_queries_total{{caller=\"other\"}}` in `/metrics`, read before and after each flood; the cross-node feed's catch-up is counted apart). Target: zero — {}.",
        verdict(queries == 0)
    );
    let (pg, ours, errors, shaped) = admin;
    let admin_ratio = median(ours) / median(pg).max(1e-9);
    let _ = writeln!(out, "\n## Admin commands\n");
    let _ = writeln!(out, "| | commits/s (median) | ratio to single-row |\n|---|---:|---:|\n| PostgreSQL single-row INSERT (pgbench, {} clients) | {:.0} | 1.00 |\n| PostgreSQL, one event committed the way postgres-es commits it (pgbench: BEGIN, INSERT into a copy of `events`, COMMIT) | {:.0} | {:.2} |\n| widget-auth `change_origins` spread over {} keys ({} connections) | {:.0} | {:.2} |\n\nTarget ≥ 0.5 × single-row — {}. Non-2xx answers: {errors}.", plan.connections, median(pg), median(shaped), median(shaped) / median(pg).max(1e-9), plan.keys, plan.connections, median(ours), admin_ratio, verdict(admin_ratio >= 0.5));
    let per_command = |n: u64| n as f64 / commits.commands.max(1) as f64;
    let _ = writeln!(out, "\nOver the widget-auth runs ({} events committed, from `/metrics`): {} group-commit `INSERT` statements, a mean group of {:.1} events; {:.2} store statements per command in all (the insert, loads of keys this node had not written yet, the batched `NOTIFY`s).", commits.commands, commits.groups, commits.commands as f64 / commits.groups.max(1) as f64, per_command(commits.queries));
    let replay_ratio = median(&replay.ours) / median(&replay.plain).max(1e-9);
    let _ = writeln!(out, "\n## Start-up replay\n");
    let _ = writeln!(out, "{} events ({} keys × 20) seeded straight into PostgreSQL.\n\n| | events/s (median) |\n|---|---:|\n| plain sqlx stream of the same query | {:.0} |\n| widget-auth start-up replay (decode, fold, render, index) | {:.0} |\n\nRatio {:.2}, target ≥ 0.5 — {}.", replay.events, replay.keys, median(&replay.plain), median(&replay.ours), replay_ratio, verdict(replay_ratio >= 0.5));
    let _ = writeln!(out, "\n## Memory\n");
    let _ = writeln!(out, "Resident set size after the start-up replay, keys seeded straight into PostgreSQL (one creation event each, default config).\n\n| client keys | RSS | growth per key | target ≤ 5 KB |\n|---:|---:|---:|---|\n| 0 | {} KiB | | |", memory.empty_kib);
    for (keys, rss) in &memory.loaded {
        let per_key = (rss.saturating_sub(memory.empty_kib) as f64 * 1024.0) / *keys as f64;
        let _ = writeln!(
            out,
            "| {keys} | {rss} KiB | {:.0} B | {} |",
            per_key,
            verdict(per_key <= 5_000.0)
        );
    }
    let _ = writeln!(out, "\n(The load-test server, with {} keys and every token ledger write of the run behind it, ended at {} KiB.)", plan.keys, loaded_rss);
    // The profiles behind the numbers, kept beside the runner so one command writes the
    // whole report.
    let _ = write!(out, "\n{}", include_str!("../ANALYSIS.md"));
    out
}
