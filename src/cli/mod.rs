//! The command line: `serve` (the default), `migrate`, `snapshot` (writes a read-model
//! snapshot, see `snapshot/mod.rs`), `audit` (see [`audit`]), the
//! auditors' tools that read the event store directly (no server needed), and `keys`
//! (see [`keys`]), the operators' tools that call a running node's internal API; all
//! configured by the same environment variables as the server.

mod audit;
mod keys;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "widget-auth",
    version,
    about = "Backend for an embeddable chat widget"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the public and internal listeners (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Read the event history directly from the store (DATABASE_URL or WIDGET_AUTH_DATA_DIR).
    Audit(audit::AuditArgs),
    /// Manage client keys through a running node's internal API (--url, WIDGET_AUTH_ADMIN_URL).
    Keys(keys::KeysArgs),
    /// Write a read-model snapshot of the configured store now: builds the read models
    /// (from the newest usable snapshot and the events after it, or every event) and
    /// stores them, so the next node to start replays only what comes after.
    Snapshot,
}

/// The binary's entry point: parses the command line, sets up logging, runs the command,
/// and turns its outcome into the exit code (2 for a configuration error).
pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if matches!(command, Command::Audit(_) | Command::Keys(_)) {
        init_cli_logs();
    } else {
        crate::telemetry::init();
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            tracing::error!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Serve => crate::app::serve(settings)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Migrate => migrate(&settings).await.map(|()| ExitCode::SUCCESS),
        Command::Snapshot => snapshot(&settings).await.map(|()| ExitCode::SUCCESS),
        Command::Audit(args) => audit::run(&settings, args).await,
        Command::Keys(args) => {
            // An operator's tool: the node's sentence, not a log line.
            return keys::run(&settings, args).await.unwrap_or_else(|err| {
                keys::print_error(&err);
                ExitCode::FAILURE
            });
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let store = Store::open(settings.database_url_str(), &settings.data_dir).await?;
    store.migrate().await?;
    tracing::info!(store = store.kind(), "migrations applied");
    store.close().await;
    Ok(())
}

/// `widget-auth snapshot`: the same build a starting node does, then one write. The
/// position is the build's: every event up to it is in the views, even while nodes
/// commit meanwhile (`snapshot/mod.rs`).
async fn snapshot(settings: &Settings) -> anyhow::Result<()> {
    let store = Store::open(settings.database_url_str(), &settings.data_dir).await?;
    store.migrate().await?;
    let directory = projections::Directory::new();
    let started = std::time::Instant::now();
    let built = crate::feed::build(&store, &directory, settings.snapshots).await?;
    let written = crate::snapshot::write(&store, &directory, built.position).await?;
    tracing::info!(
        snapshot = written.id,
        keys = written.keys,
        events_replayed = built.events,
        from_snapshot = built.snapshot_taken_at_ms.is_some(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot done"
    );
    store.close().await;
    Ok(())
}

/// The audit tools talk to people on stdout; only warnings and errors are logged, to
/// stderr, so `--json` output stays parseable.
fn init_cli_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
