//! The command line: `serve` (the default), `migrate`, and `audit`, the auditors' tools
//! that read the event store directly (no server needed), configured by the same
//! environment variables as the server.
//!
//! What `audit` prints on stdout is the program's output (people read the text form,
//! scripts the `--json` one), so it is written to a locked stdout rather than logged;
//! logs and progress bars go to stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::audit::{self, Point, StateAt};
use crate::config::Settings;
use crate::store::Store;
use crate::tokens::SigningKeys;

/// The signing key file in the data dir when `WIDGET_AUTH_SIGNING_KEY_FILE` is unset.
const SIGNING_KEY_FILE: &str = "signing-key.pem";

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
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Every event of a client key, in order, with who, when, why and what changed.
    History {
        /// A client key id (ck_…) or one of its public keys, current or previous (pk_live_…).
        key: String,
    },
    /// The client key as it was at a time or right after an event.
    State {
        /// A client key id (ck_…) or one of its public keys (pk_live_…).
        key: String,
        /// An RFC 3339 time, like 2026-01-31T12:00:00Z.
        #[arg(
            long,
            conflicts_with = "at_sequence",
            required_unless_present = "at_sequence"
        )]
        at: Option<String>,
        /// A sequence number: the state right after that event.
        #[arg(long)]
        at_sequence: Option<u64>,
    },
    /// Check a token we minted (expiry ignored) and show what was in force when it was minted.
    Token {
        /// The JWT.
        token: String,
    },
    /// Check the tamper-evidence chain over the whole store.
    Verify,
    /// A client key's history for archiving, one JSON object per line.
    Export {
        key: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ExportFormat {
    Jsonl,
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    if matches!(command, Command::Audit(_)) {
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
        Command::Serve => crate::serve(settings).await.map(|()| ExitCode::SUCCESS),
        Command::Migrate => migrate(&settings).await.map(|()| ExitCode::SUCCESS),
        Command::Audit(args) => run_audit(&settings, args).await,
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

/// What an audit command answered: its output, and whether the answer was "yes".
struct Answer {
    output: String,
    ok: bool,
}

impl Answer {
    fn ok(output: String) -> Self {
        Self { output, ok: true }
    }

    fn failed(output: String) -> Self {
        Self { output, ok: false }
    }
}

async fn run_audit(settings: &Settings, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(settings).await?;
    let answer = audit_command(&store, settings, &args).await;
    store.close().await;
    let answer = answer?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(answer.output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `audit export … | head` closing the pipe early is not an error.
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(err).context("writing to stdout")
        }
        _ => {}
    }
    Ok(if answer.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The store the server uses, which must already exist: an audit of a mistyped data dir
/// should say so, not report an empty, freshly created store as intact.
async fn open_existing_store(settings: &Settings) -> anyhow::Result<Store> {
    if settings.database_url_str().is_none() {
        let file = settings.data_dir.join("widget-auth.sqlite3");
        anyhow::ensure!(
            file.exists(),
            "no event store at {} (set WIDGET_AUTH_DATA_DIR or DATABASE_URL)",
            file.display()
        );
    }
    Store::open(settings.database_url_str(), &settings.data_dir)
        .await
        .context("opening the event store")
}

async fn audit_command(
    store: &Store,
    settings: &Settings,
    args: &AuditArgs,
) -> anyhow::Result<Answer> {
    let json = args.json;
    match &args.command {
        AuditCommand::Verify => {
            let total = store.count_events().await?;
            let bar = progress_bar(Some(total), "verifying");
            let report = audit::verify(store, |n| bar.set_position(n)).await?;
            bar.finish_and_clear();
            let output = if json {
                line(&report.to_json())
            } else {
                format!("{}\n", report.to_text())
            };
            Ok(if report.intact() {
                Answer::ok(output)
            } else {
                Answer::failed(output)
            })
        }
        AuditCommand::History { key } => {
            let Some(id) = resolve(store, key).await? else {
                return Ok(unknown_key(key));
            };
            let bar = progress_bar(None, "replaying");
            let entries = audit::history(store, &id).await?.unwrap_or_default();
            bar.finish_and_clear();
            Ok(Answer::ok(if json {
                let entries: Vec<Value> = entries.iter().map(|e| e.to_json()).collect();
                line(&serde_json::json!({ "client_key_id": id, "events": entries }))
            } else {
                history_text(&id, &entries)
            }))
        }
        AuditCommand::State {
            key,
            at,
            at_sequence,
        } => {
            let point = match (at, at_sequence) {
                (_, Some(sequence)) => Point::Sequence(*sequence),
                (Some(at), None) => Point::Time(
                    DateTime::parse_from_rfc3339(at)
                        .with_context(|| {
                            format!("--at {at:?} is not an RFC 3339 time like 2026-01-31T12:00:00Z")
                        })?
                        .with_timezone(&Utc),
                ),
                (None, None) => anyhow::bail!("give --at or --at-sequence"),
            };
            let Some(id) = resolve(store, key).await? else {
                return Ok(unknown_key(key));
            };
            let bar = progress_bar(None, "replaying");
            let state = audit::state_at(store, &id, point).await?;
            bar.finish_and_clear();
            Ok(match state {
                StateAt::Found(view) => Answer::ok(if json {
                    line(&view.to_admin_json())
                } else {
                    pretty(&view.to_admin_json())
                }),
                StateAt::UnknownKey => unknown_key(key),
                StateAt::NotYetCreated => {
                    Answer::failed(format!("{id} did not exist at that point\n"))
                }
            })
        }
        AuditCommand::Token { token } => {
            let path = settings
                .signing_key_file
                .clone()
                .unwrap_or_else(|| settings.data_dir.join(SIGNING_KEY_FILE));
            let keys = SigningKeys::load(&path).context(
                "loading the signing keys (WIDGET_AUTH_SIGNING_KEY_FILE or <data dir>/signing-key.pem)",
            )?;
            match audit::token_report(store, &keys, &settings.issuer, token.trim()).await {
                Ok(report) => Ok(Answer::ok(if json {
                    line(&report)
                } else {
                    token_text(&report)
                })),
                Err(audit::TokenAuditError::Store(err)) => Err(err.into()),
                Err(refused) => Ok(Answer::failed(if json {
                    line(&serde_json::json!({ "error": refused.to_string() }))
                } else {
                    format!("{refused}\n")
                })),
            }
        }
        AuditCommand::Export { key, format } => {
            let ExportFormat::Jsonl = format;
            let Some(id) = resolve(store, key).await? else {
                return Ok(unknown_key(key));
            };
            let bar = progress_bar(None, "exporting");
            let events = store.history(&id, 0, None).await?;
            bar.finish_and_clear();
            Ok(Answer::ok(
                events
                    .iter()
                    .map(|e| line(&audit::export_json(e)))
                    .collect(),
            ))
        }
    }
}

async fn resolve(store: &Store, key: &str) -> anyhow::Result<Option<String>> {
    let bar = if key.starts_with("pk_") {
        progress_bar(
            Some(store.count_events().await?),
            "looking up the public key",
        )
    } else {
        ProgressBar::hidden()
    };
    let id = audit::resolve_key(store, key, |n| bar.set_position(n)).await?;
    bar.finish_and_clear();
    Ok(id)
}

fn unknown_key(key: &str) -> Answer {
    Answer::failed(format!("no client key {key} in this store\n"))
}

/// A progress bar on stderr, drawn only when stderr is a terminal (never in scripts or
/// logs). `None` for a spinner when the length is unknown.
fn progress_bar(total: Option<u64>, message: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
            .with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {human_pos}/{human_len} events ({per_sec}, {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
        None => {
            let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                .with_style(ProgressStyle::default_spinner());
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        }
    };
    bar.set_message(message);
    bar
}

fn line(value: &Value) -> String {
    format!("{value}\n")
}

fn pretty(value: &Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    )
}

fn history_text(id: &str, entries: &[audit::HistoryEntry]) -> String {
    let mut out = format!("{id}: {} events\n", entries.len());
    for entry in entries {
        let recorded = &entry.recorded;
        let metadata = &recorded.metadata;
        let reason = metadata
            .reason
            .as_deref()
            .map(|r| format!("  reason: {r}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:>5}  {}  {:<20} by {}  request {}{reason}\n       {}\n",
            recorded.sequence,
            metadata
                .at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            recorded.event.name(),
            metadata.actor,
            if metadata.request_id.is_empty() {
                "-"
            } else {
                &metadata.request_id
            },
            entry.summary,
        ));
    }
    out
}

fn token_text(report: &Value) -> String {
    let token = &report["token"];
    let in_force = &report["in_force"];
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let origins: Vec<String> = in_force["origins"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    let policy = &in_force["token_policy"];
    let previous: Vec<String> = in_force["previous_public_keys"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    format!(
                        "{} (until {})",
                        text(&p["public_key"]),
                        text(&p["valid_until"])
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = format!(
        "{} token for {} minted {} (expires at unix {}), signature valid\n\
         client key {} at version {} (now at version {})\n\
         status: {}\n\
         origins: {}\n\
         token policy: visitor {}s, session {}s, refresh {}s, guests {}\n\
         public key: {}{}\n\
         secret key: …{}\n",
        text(&token["kind"]),
        text(&token["sub"]),
        text(&token["minted_at"]),
        text(&token["exp"]),
        text(&token["ck"]),
        text(&token["ver"]),
        text(&report["current_version"]),
        text(&in_force["status"]),
        origins.join(", "),
        text(&policy["visitor_token_ttl_seconds"]),
        text(&policy["session_ttl_seconds"]),
        text(&policy["refresh_ttl_seconds"]),
        if policy["guests_allowed"] == Value::Bool(true) {
            "allowed"
        } else {
            "not allowed"
        },
        text(&in_force["public_key"]),
        if previous.is_empty() {
            String::new()
        } else {
            format!(" (previous: {})", previous.join(", "))
        },
        text(&in_force["secret_key_last_four"]),
    );
    if let Some(origin) = token["origin"].as_str() {
        let allowed = report["origin_allowed_then"] == Value::Bool(true);
        out.push_str(&format!(
            "origin {origin}: {}\n",
            if allowed {
                "in the allowlist then"
            } else {
                "NOT in the allowlist then"
            }
        ));
    }
    if let Some(changes) = report["changes_since"].as_array() {
        if !changes.is_empty() {
            out.push_str("changes since:\n");
            for change in changes {
                out.push_str(&format!(
                    "{:>5}  {}  {}\n",
                    text(&change["sequence"]),
                    text(&change["type"]),
                    text(&change["summary"])
                ));
            }
        }
    }
    out
}
