//! The command line: `serve` (the default) and `migrate`.

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
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(err) => {
            tracing::error!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => crate::serve(settings).await,
        Command::Migrate => migrate(&settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
