//! `cargo run --release -p bench`: widget-auth side by side with a bare axum baseline,
//! measured alternately in one run, written to BENCHMARKS.md as ratios.
//!
//! Layout of a run: every server pinned to core 0 (only one is under load at a time),
//! wrk pinned to core 1, PostgreSQL unpinned. widget-auth runs once per store (`--store`:
//! PostgreSQL, the embedded SQLite, or both at once). Each scenario runs several rounds;
//! each round runs the baseline and every widget-auth back to back (the order flips
//! every round), and the report gives medians.

// A command-line tool: progress lines on stderr are its interface, not server logging.
#![allow(clippy::print_stderr)]

mod baseline;
mod scenarios;
mod seed;
mod soak;
mod sqlite_commits;
mod startup;
mod wrk;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Benchmark widget-auth against a bare axum baseline and write BENCHMARKS.md")]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Client keys seeded through the admin API.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Rounds per scenario (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Events in the start-up replay measurement.
    #[arg(long, default_value_t = 1_000_000)]
    replay_events: usize,
    /// Key counts for the memory measurement.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    memory_keys: Vec<usize>,
    /// A seconds-long run with tiny sizes that checks the harness works (asserts
    /// nothing about speed) and writes to target/ instead of BENCHMARKS.md.
    #[arg(long)]
    smoke: bool,
    /// Run only these parts (comma-separated): hot-path scenarios whose name contains
    /// one of the words, `admin`, `replay`, `memory`. For working on one number; the
    /// report (to target/ unless --out) leaves the other parts empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the report.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which store widget-auth runs on: `postgres` (the local server), `sqlite` (the
    /// embedded default: no DATABASE_URL, a fresh data directory) or `both`, side by side
    /// in one run. The replay and memory parts seed PostgreSQL and run only with it.
    #[arg(long, value_enum, default_value_t = StoreChoice::Both)]
    store: StoreChoice,
    /// Measure this widget-auth binary instead of building the release one (CI's smoke
    /// run uses the debug build its tests made).
    #[arg(long)]
    binary: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreChoice {
    Postgres,
    Sqlite,
    Both,
}

/// A store widget-auth runs on in the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

impl StoreKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Sqlite => "SQLite",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Sqlite => "sqlite",
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Ready time at KEYS × EVENTS_PER_KEY on PostgreSQL with and without a read-model
    /// snapshot (to target/STARTUP.md unless --out).
    Startup {
        #[arg(long, default_value_t = 1_000_000)]
        keys: usize,
        #[arg(long, default_value_t = 20)]
        events_per_key: usize,
        /// Measure this widget-auth binary instead of building target/release/widget-auth.
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Keep the seeded database (its URL is printed) for later runs with --database.
        #[arg(long)]
        keep: bool,
        /// Start from this database as it is, kept by an earlier --keep run: no seeding,
        /// and only the start from its newest snapshot is measured (when it has none, the
        /// whole run). Seeding 1,000,000 keys takes minutes; this re-times a change to
        /// the loader in one.
        #[arg(long)]
        database: Option<String>,
    },
    /// Run the bare axum baseline server (the runner starts it itself).
    Baseline {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        pem: PathBuf,
    },
    /// A bounded mixed load on one node on 127.0.0.1 for some minutes, limits on:
    /// reports unexpected answers, p99 per endpoint and resident memory at start and end
    /// (to target/SOAK.<store>.md unless --out).
    Soak {
        /// How long to run.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// `sqlite` (embedded) or `postgres` (the local server).
        #[arg(long, default_value = "sqlite", value_parser = ["sqlite", "postgres"])]
        store: String,
        /// Client keys seeded through the admin API.
        #[arg(long, default_value_t = 200)]
        keys: usize,
        /// Concurrent visitor journeys (the load's bound).
        #[arg(long, default_value_t = 16)]
        workers: usize,
        /// Connections trickling a request head one byte a second.
        #[arg(long, default_value_t = 50)]
        slow_clients: usize,
        /// Soak this widget-auth binary instead of building target/release/widget-auth.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    /// SQLite's own single-row commit rate: WRITERS connections committing one-row INSERTs
    /// into a fresh FILE with the server's settings, printed as one line (the runner starts
    /// it itself, pinned to the server's core, as the admin yardstick on SQLite).
    SqliteCommits {
        #[arg(long)]
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        writers: u32,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        #[arg(long, value_enum, default_value_t = sqlite_commits::Turns::Contending)]
        turns: sqlite_commits::Turns,
    },
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if let Some(Sub::Baseline { addr, keys, pem }) = &args.command {
        let keys = std::fs::read_to_string(keys)?;
        let pem = std::fs::read_to_string(pem)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(baseline::serve(addr, &keys, &pem));
    }
    if let Some(Sub::SqliteCommits {
        file,
        writers,
        seconds,
        turns,
    }) = &args.command
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let rate = runtime.block_on(sqlite_commits::run(file, *writers, *seconds, *turns))?;
        sqlite_commits::report(&rate);
        return Ok(());
    }
    if let Some(Sub::Soak {
        minutes,
        store,
        keys,
        workers,
        slow_clients,
        binary,
    }) = &args.command
    {
        let root = workspace_root();
        let binary = match binary {
            Some(path) => path.clone(),
            None => {
                build_server(&root)?;
                root.join("target/release/widget-auth")
            }
        };
        let plan = soak::SoakPlan {
            minutes: *minutes,
            postgres: store == "postgres",
            keys: *keys,
            workers: *workers,
            slow_clients: *slow_clients,
            binary,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let report = runtime.block_on(soak::run(&plan))?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| root.join(format!("target/SOAK.{store}.md")));
        std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("{report}\nwrote {}", out.display());
        return Ok(());
    }
    if let Some(Sub::Startup {
        keys,
        events_per_key,
        binary,
        keep,
        database,
    }) = &args.command
    {
        let root = workspace_root();
        let binary = match binary {
            Some(path) => path.clone(),
            None => {
                build_server(&root)?;
                root.join("target/release/widget-auth")
            }
        };
        let plan = startup::StartupPlan {
            keys: *keys,
            events_per_key: *events_per_key,
            binary,
            keep: *keep,
            database: database.clone(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let report = runtime.block_on(startup::run(&plan))?;
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| root.join("target/STARTUP.md"));
        std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("{report}\nwrote {}", out.display());
        return Ok(());
    }
    if args.smoke {
        args.keys = args.keys.min(200);
        args.rounds = 1;
        args.seconds = 1;
        args.replay_events = args.replay_events.min(20_000);
        args.memory_keys = vec![1_000];
    }
    let root = workspace_root();
    let out = args.out.clone().unwrap_or_else(|| {
        if args.smoke {
            root.join("target/BENCHMARKS.smoke.md")
        } else if !args.only.is_empty() {
            root.join("target/BENCHMARKS.partial.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    });
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => {
            build_server(&root)?;
            server_binary(&root)
        }
    };
    let plan = args_to_plan(&args, binary);
    ensure_tools(plan.stores.contains(&StoreKind::Postgres))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(scenarios::run_all(&plan))?;
    std::fs::write(&out, report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// What the scenarios need from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub keys: usize,
    pub rounds: usize,
    pub seconds: u32,
    pub connections: u32,
    pub replay_events: usize,
    pub memory_keys: Vec<usize>,
    pub smoke: bool,
    pub only: Vec<String>,
    /// The stores widget-auth runs on, PostgreSQL first when both.
    pub stores: Vec<StoreKind>,
    /// The widget-auth binary measured.
    pub binary: PathBuf,
}

impl Plan {
    /// Whether the part or hot-path scenario named `name` is to run.
    pub fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|word| name.contains(word.as_str()))
    }
}

fn args_to_plan(args: &Args, binary: PathBuf) -> Plan {
    Plan {
        keys: args.keys,
        rounds: args.rounds,
        seconds: args.seconds,
        connections: args.connections,
        replay_events: args.replay_events,
        memory_keys: args.memory_keys.clone(),
        smoke: args.smoke,
        only: args.only.clone(),
        stores: match args.store {
            StoreChoice::Postgres => vec![StoreKind::Postgres],
            StoreChoice::Sqlite => vec![StoreKind::Sqlite],
            StoreChoice::Both => vec![StoreKind::Postgres, StoreKind::Sqlite],
        },
        binary,
    }
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The release build of widget-auth that `build_server` makes: under CARGO_TARGET_DIR
/// when cargo was told to build elsewhere.
pub fn server_binary(root: &std::path::Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release/widget-auth")
}

/// wrk, taskset and (for PostgreSQL) pgbench: installed from Debian's packages when missing.
fn ensure_tools(postgres: bool) -> anyhow::Result<()> {
    let missing = |tool: &str| {
        Command::new("which")
            .arg(tool)
            .stdout(Stdio::null())
            .status()
            .map_or(true, |s| !s.success())
    };
    let mut packages = Vec::new();
    if missing("wrk") {
        packages.push("wrk");
    }
    if missing("taskset") {
        packages.push("util-linux");
    }
    if postgres && missing("pgbench") {
        packages.push("postgresql-contrib");
    }
    if packages.is_empty() {
        return Ok(());
    }
    eprintln!("installing {packages:?}");
    let updated = Command::new("apt-get").args(["update", "-qq"]).status()?;
    let installed = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&packages)
        .status()?;
    if !(updated.success() && installed.success()) {
        bail!("could not install {packages:?}; install them and retry");
    }
    Ok(())
}

fn build_server(root: &std::path::Path) -> anyhow::Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "widget-auth"])
        .current_dir(root)
        .status()
        .context("building widget-auth")?;
    if !status.success() {
        bail!("cargo build --release --bin widget-auth failed");
    }
    Ok(())
}

/// A child process killed when dropped.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Polls `url` until it answers 200.
pub async fn wait_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resident set size of a process, from /proc.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS not found")
}
