//! Ready time with and without a read-model snapshot (`widget-auth bench startup`): keys
//! × events seeded straight into a fresh PostgreSQL database (the replay measurement's
//! seeding), then the node started three ways, each to `/readyz` 200:
//!
//! 1. `WIDGET_AUTH_SNAPSHOTS=off`: the full replay;
//! 2. `widget-auth snapshot` (a full replay and a write), timed as a whole;
//! 3. snapshots on: the node loads and checks that snapshot and replays the events
//!    after it (none here, the worst case for the load, the best for the replay).
//!
//! The server is killed (SIGKILL) after each start, so it writes no shutdown snapshot.
//! With `--keep` the seeded database stays (its URL is printed); `--database URL` starts
//! from such a database's newest snapshot only, so a change to the loader is timed in
//! a minute instead of the seeding's several.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::Connection;

use crate::{free_port, seed, wait_ok, Server};

#[derive(Debug, Clone)]
pub struct StartupPlan {
    pub keys: usize,
    pub events_per_key: usize,
    pub binary: PathBuf,
    /// Leave the seeded database in place (see [`run`]).
    pub keep: bool,
    /// A database kept by an earlier run, used as it is.
    pub database: Option<String>,
}

/// One start: seconds to `/readyz` 200 from spawning the process, and what its "read
/// models ready" log line says (events applied, its own elapsed time, from a snapshot).
#[derive(Debug)]
struct Start {
    wall: f64,
    events: u64,
    built: f64,
    from_snapshot: bool,
}

pub async fn run(plan: &StartupPlan) -> anyhow::Result<String> {
    let work = std::env::temp_dir().join(format!("wa-bench-startup-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let pem = work.join("signing.pem");
    std::fs::write(&pem, widget_auth::tokens::SigningKeys::generate_pem()?)?;
    let result = match &plan.database {
        Some(url) => measure(plan, &work, url, &pem, false).await,
        None => {
            let name = format!("wa_bench_startup_{}", std::process::id());
            let url = seed::create_database(&name).await?;
            let result = measure(plan, &work, &url, &pem, true).await;
            if plan.keep {
                eprintln!("kept the seeded database: --database '{url}'");
            } else {
                seed::drop_database(&name).await;
            }
            result
        }
    };
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn measure(
    plan: &StartupPlan,
    work: &Path,
    url: &str,
    pem: &Path,
    fresh: bool,
) -> anyhow::Result<String> {
    let status = Command::new(&plan.binary)
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .status()?;
    if !status.success() {
        bail!("widget-auth migrate failed");
    }
    let mut conn = sqlx::PgConnection::connect(url).await?;
    if !fresh {
        let sealed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM read_model_snapshots WHERE digest IS NOT NULL",
        )
        .fetch_one(&mut conn)
        .await?;
        if sealed > 0 {
            let snapshot = start(plan, work, url, pem, "on").await?;
            if !snapshot.from_snapshot {
                bail!("the node did not start from the snapshot");
            }
            return Ok(format!(
                "Start from the newest snapshot of a kept database: ready in {:.1} s \
                 (read models built in {:.1} s, {} events applied after it).\n",
                snapshot.wall, snapshot.built, snapshot.events
            ));
        }
    }
    let events = if fresh {
        eprintln!(
            "seeding {} keys x {} events",
            plan.keys, plan.events_per_key
        );
        let seeding = Instant::now();
        let events = seed::events_directly(url, plan.keys, plan.events_per_key).await?;
        eprintln!(
            "seeded {events} events in {:.0} s",
            seeding.elapsed().as_secs_f64()
        );
        // Fresh statistics, as a database that has been running has them.
        sqlx::query("VACUUM ANALYZE events")
            .execute(&mut conn)
            .await?;
        events
    } else {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&mut conn)
            .await?;
        stored as u64
    };

    let full = start(plan, work, url, pem, "off").await?;
    if full.events != events || full.from_snapshot {
        bail!("the full replay applied {} of {events} events", full.events);
    }
    let writing = Instant::now();
    let status = Command::new(&plan.binary)
        .arg("snapshot")
        .env("DATABASE_URL", url)
        .env("WIDGET_AUTH_SIGNING_KEY_FILE", pem)
        .env("WIDGET_AUTH_DATA_DIR", work.join("data"))
        .env("WIDGET_AUTH_SNAPSHOTS", "off")
        .env("RUST_LOG", "warn")
        .status()?;
    if !status.success() {
        bail!("widget-auth snapshot failed");
    }
    let snapshot_seconds = writing.elapsed().as_secs_f64();
    let size: i64 = sqlx::query_scalar(
        "SELECT pg_total_relation_size('read_model_snapshot_chunks') \
         + pg_total_relation_size('read_model_snapshots')",
    )
    .fetch_one(&mut conn)
    .await?;
    let snapshot = start(plan, work, url, pem, "on").await?;
    if !snapshot.from_snapshot {
        bail!("the node did not start from the snapshot");
    }
    Ok(format!(
        "| keys × events | events | start | ready (spawn to /readyz 200) | read models built (log) | events applied |\n\
         |---|---|---|---|---|---|\n\
         | {keys} × {per} | {events} | full replay (`WIDGET_AUTH_SNAPSHOTS=off`) | {:.1} s | {:.1} s | {} |\n\
         | {keys} × {per} | {events} | from the snapshot | {:.1} s | {:.1} s | {} |\n\n\
         Writing the snapshot with `widget-auth snapshot` (a full replay, then the write): {snapshot_seconds:.1} s; \
         stored size {:.0} MiB.\n",
        full.wall,
        full.built,
        full.events,
        snapshot.wall,
        snapshot.built,
        snapshot.events,
        size as f64 / (1024.0 * 1024.0),
        keys = plan.keys,
        per = plan.events_per_key,
    ))
}

async fn start(
    plan: &StartupPlan,
    work: &Path,
    url: &str,
    pem: &Path,
    snapshots: &str,
) -> anyhow::Result<Start> {
    let (public, internal) = (free_port(), free_port());
    let spawned = Instant::now();
    let mut server = Server {
        child: Command::new(&plan.binary)
            .env("DATABASE_URL", url)
            .env("WIDGET_AUTH_SIGNING_KEY_FILE", pem)
            .env("WIDGET_AUTH_DATA_DIR", work.join("data"))
            .env("WIDGET_AUTH_PUBLIC_ADDR", format!("127.0.0.1:{public}"))
            .env("WIDGET_AUTH_INTERNAL_ADDR", format!("127.0.0.1:{internal}"))
            .env(
                "WIDGET_AUTH_ADMIN_TOKEN",
                "bench-startup-admin-token-0123456789abcdef",
            )
            .env("WIDGET_AUTH_SNAPSHOTS", snapshots)
            .env("WIDGET_AUTH_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting widget-auth")?,
        base: format!("http://127.0.0.1:{public}"),
    };
    let stdout = server.child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || -> Option<(u64, f64, bool)> {
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
                    fields["from_snapshot"].as_bool()?,
                ));
            }
        }
        None
    });
    wait_ok(
        &format!("http://127.0.0.1:{internal}/readyz"),
        Duration::from_secs(1800),
    )
    .await?;
    let wall = spawned.elapsed().as_secs_f64();
    let (events, built, from_snapshot) =
        tokio::task::spawn_blocking(move || reader.join().ok().flatten())
            .await?
            .context("no ready log line")?;
    drop(server);
    Ok(Start {
        wall,
        events,
        built,
        from_snapshot,
    })
}
