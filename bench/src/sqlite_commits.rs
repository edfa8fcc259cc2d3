//! SQLite's own single-row commit rate: the yardstick for admin commands on the embedded
//! store, as pgbench's is on PostgreSQL.
//!
//! `writers` connections to a fresh file opened with exactly the server's settings (WAL,
//! `synchronous=FULL`, `busy_timeout` 5 s: src/store/mod.rs, `open_sqlite`), each
//! committing one-row INSERTs back to back for the run's duration. SQLite is embedded,
//! so its work runs in the process that commits: the runner starts this load as a child
//! pinned to the core widget-auth gets (`bench sqlite-commits`), which is what the
//! server's own commits have.
//!
//! The runner uses one writer (`scenarios.rs`, `SQLITE_WRITERS`): SQLite lets one writer
//! in at a time, so what one connection reaches committing back to back is its
//! single-row rate. By hand (`bench sqlite-commits --writers N`) several writers take
//! turns in one of two ways:
//! - [`Turns::Contending`]: they all go at SQLite, and the losers wait in its busy
//!   handler (which sleeps in steps of up to 100 ms); a writer that waits out the
//!   `busy_timeout` is refused with SQLITE_BUSY, counted apart from the commits;
//! - [`Turns::Queued`]: they queue in the process for the write lock, so SQLite never
//!   sees two at once.
//!
//! Both commit less than one writer alone (on the 2-core development VM, 3,640 a second
//! for one writer, 3,380 for 64 contending, 2,200 for 64 queued).

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

/// What one run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitRate {
    pub commits_per_sec: f64,
    pub p99_us: f64,
    /// INSERTs refused with SQLITE_BUSY (a contending writer that waited out the 5 s
    /// `busy_timeout`); not commits, so not in the rate.
    pub busy: u64,
}

impl CommitRate {
    /// The one line the child prints and the runner reads.
    pub fn line(&self) -> String {
        format!(
            "commits/s {:.1} p99_us {:.0} busy {}",
            self.commits_per_sec, self.p99_us, self.busy
        )
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        let mut field = |name: &str| {
            (fields.next() == Some(name))
                .then(|| fields.next())
                .flatten()
        };
        Some(Self {
            commits_per_sec: f64::from_str(field("commits/s")?).ok()?,
            p99_us: f64::from_str(field("p99_us")?).ok()?,
            busy: u64::from_str(field("busy")?).ok()?,
        })
    }
}

/// How the writers take turns at SQLite's single write lock (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Turns {
    Queued,
    Contending,
}

impl Turns {
    pub fn arg(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Contending => "contending",
        }
    }
}

/// The server's settings, on `file` (created).
fn options(file: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .disable_statement_logging()
}

/// Commits one-row INSERT transactions from `writers` connections into `file` (which
/// must not exist) for `seconds`.
pub async fn run(
    file: &Path,
    writers: u32,
    seconds: f64,
    turns: Turns,
) -> anyhow::Result<CommitRate> {
    if file.exists() {
        anyhow::bail!(
            "{} exists; the yardstick needs a fresh file",
            file.display()
        );
    }
    let options = options(file);
    let mut first = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {}", file.display()))?;
    sqlx::query("CREATE TABLE bench_single_row (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .execute(&mut first)
        .await?;
    let mut connections = vec![first];
    for _ in 1..writers.max(1) {
        connections.push(sqlx::SqliteConnection::connect_with(&options).await?);
    }
    let write_lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut conn| {
            let write_lock = write_lock.clone();
            tokio::spawn(async move {
                let (mut latencies, mut busy) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    // From the writer's first wish to commit, queueing included, as wrk
                    // times a request.
                    let at = Instant::now();
                    let turn = match turns {
                        Turns::Queued => Some(write_lock.lock().await),
                        Turns::Contending => None,
                    };
                    // Autocommit: each INSERT is its own transaction, as in pgbench's
                    // single-row script.
                    let done = sqlx::query("INSERT INTO bench_single_row (v) VALUES (1)")
                        .execute(&mut conn)
                        .await;
                    drop(turn);
                    match done {
                        Ok(_) => latencies.push(at.elapsed().as_micros() as u32),
                        // SQLITE_BUSY: the busy_timeout ran out.
                        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") => {
                            busy += 1;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                let _ = conn.close().await;
                anyhow::Ok((latencies, busy))
            })
        })
        .collect();
    let (mut latencies, mut busy) = (Vec::new(), 0);
    for task in tasks {
        let (done, refused) = task.await??;
        latencies.extend(done);
        busy += refused;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    Ok(CommitRate {
        commits_per_sec: latencies.len() as f64 / elapsed,
        p99_us: f64::from(p99),
        busy,
    })
}

/// Prints the one line [`measure`] reads from the child's stdout.
#[allow(clippy::print_stdout)]
pub fn report(rate: &CommitRate) {
    println!("{}", rate.line());
}

/// Runs the load in a child pinned to `core` (see the module comment) on a fresh file in
/// `dir`, and returns what it measured.
pub fn measure(
    core: usize,
    dir: &Path,
    writers: u32,
    seconds: u32,
    turns: Turns,
) -> anyhow::Result<CommitRate> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join(format!(
        "yardstick-{}.sqlite3",
        uuid::Uuid::new_v4().simple()
    ));
    let output = std::process::Command::new("taskset")
        .args(["-c", &core.to_string()])
        .arg(std::env::current_exe()?)
        .arg("sqlite-commits")
        .arg("--file")
        .arg(&file)
        .args(["--writers", &writers.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .args(["--turns", turns.arg()])
        .output()
        .context("starting the SQLite commit load")?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = file.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(name);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().find_map(CommitRate::parse).with_context(|| {
        format!(
            "the SQLite commit load printed no rate: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second of the load on a temporary file commits, and its line parses back.
    #[tokio::test]
    async fn the_load_commits_and_reports() {
        let dir = std::env::temp_dir().join(format!(
            "widget-auth-bench-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("t.sqlite3");
        let rate = run(&file, 4, 0.5, Turns::Contending).await.expect("ran");
        // The settings the yardstick claims are the ones the file has.
        let mut conn = sqlx::SqliteConnection::connect_with(&options(&file))
            .await
            .expect("opened");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .expect("journal mode");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut conn)
            .await
            .expect("synchronous");
        let _ = conn.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        // 2 is FULL.
        assert_eq!((mode.as_str(), synchronous), ("wal", 2));
        assert!(rate.commits_per_sec > 0.0, "{rate:?}");
        let parsed = CommitRate::parse(&rate.line()).expect("parsed");
        assert!((parsed.commits_per_sec - rate.commits_per_sec).abs() < 0.1);
    }
}
