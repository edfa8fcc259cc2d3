//! `widget-auth audit …`: the auditors' subcommands, run against the store itself. Each
//! calls one use case of [`crate::audit`] and prints its typed result, as JSON for
//! scripts (`--json`) or as text for people (see [`text`]).
//!
//! What `audit` prints on stdout is the program's output, so it is written to a locked
//! stdout rather than logged; logs and progress bars go to stderr.

mod text;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::audit::{self, KeyHistory, Point, StateAt};
use crate::checkpoint::Checkpoint;
use crate::config::{Settings, SIGNING_KEY_FILE};
use crate::store::Store;
use crate::tokens::SigningKeys;

#[derive(Debug, Args)]
pub(super) struct AuditArgs {
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
    /// Check the tamper-evidence chain over the whole store, or (with --checkpoint) that
    /// the store still extends a checkpoint kept outside it.
    Verify {
        /// A checkpoint printed by `audit checkpoint` (or GET /internal/v1/audit/checkpoint).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
    },
    /// Print a signed checkpoint of every key's head (JSON), to keep outside the database.
    Checkpoint,
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

/// Runs one audit command and prints its answer; the exit code says whether the answer
/// was "yes" (an intact chain, a known key, a token we minted).
pub(super) async fn run(settings: &Settings, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(settings).await?;
    let answer = command(&store, settings, &args).await;
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

async fn command(store: &Store, settings: &Settings, args: &AuditArgs) -> anyhow::Result<Answer> {
    let json = args.json;
    match &args.command {
        AuditCommand::Verify {
            checkpoint: Some(path),
        } => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the checkpoint {}", path.display()))?;
            let checkpoint: Checkpoint = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a checkpoint", path.display()))?;
            checkpoint
                .check_form()
                .with_context(|| format!("{} is not a checkpoint", path.display()))?;
            let keys = signing_keys(settings)?;
            let bar = progress_bar(None, "verifying against the checkpoint");
            let report = audit::verify_checkpoint(store, &keys, checkpoint).await?;
            bar.finish_and_clear();
            let output = if json {
                line(&report)?
            } else {
                text::checkpoint_verify(&report)
            };
            Ok(if report.intact() {
                Answer::ok(output)
            } else {
                Answer::failed(output)
            })
        }
        AuditCommand::Checkpoint => {
            let keys = signing_keys(settings)?;
            let bar = progress_bar(Some(store.count_events().await?), "checkpointing");
            let taken = audit::checkpoint(store, &keys, Utc::now()).await;
            bar.finish_and_clear();
            match taken {
                Ok(checkpoint) => Ok(Answer::ok(line(&checkpoint)?)),
                Err(audit::CheckpointError::Store(err)) => Err(err.into()),
                Err(refused) => Ok(Answer::failed(if json {
                    line(&serde_json::json!({ "error": refused.to_string() }))?
                } else {
                    format!("{refused}\n")
                })),
            }
        }
        AuditCommand::Verify { checkpoint: None } => {
            let total = store.count_events().await?;
            let bar = progress_bar(Some(total), "verifying");
            let report = audit::verify(store, |n| bar.set_position(n)).await?;
            bar.finish_and_clear();
            let output = if json {
                line(&report)?
            } else {
                format!("{}\n", text::verify(&report))
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
            let history = audit::history(store, &id)
                .await?
                .unwrap_or_else(|| KeyHistory {
                    client_key_id: id.clone(),
                    events: Vec::new(),
                });
            bar.finish_and_clear();
            Ok(Answer::ok(if json {
                line(&history)?
            } else {
                text::history(&history)
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
                    line(&view.to_admin_json())?
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
            let keys = signing_keys(settings)?;
            match audit::token_report(store, &keys, &settings.issuer, token.trim()).await {
                Ok(report) => Ok(Answer::ok(if json {
                    line(&report)?
                } else {
                    text::token(&report)
                })),
                Err(audit::TokenAuditError::Store(err)) => Err(err.into()),
                Err(refused) => Ok(Answer::failed(if json {
                    line(&serde_json::json!({ "error": refused.to_string() }))?
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
            let events = audit::export(store, &id).await?;
            bar.finish_and_clear();
            let lines: anyhow::Result<String> = events.iter().map(line).collect();
            Ok(Answer::ok(lines?))
        }
    }
}

/// The server's signing keys: they verify tokens and sign and verify checkpoints.
fn signing_keys(settings: &Settings) -> anyhow::Result<SigningKeys> {
    let path = settings
        .signing_key_file
        .clone()
        .unwrap_or_else(|| settings.data_dir.join(SIGNING_KEY_FILE));
    SigningKeys::load(&path).context(
        "loading the signing keys (WIDGET_AUTH_SIGNING_KEY_FILE or <data dir>/signing-key.pem)",
    )
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

/// One line of JSON for scripts. Written through `Value`, whose maps sort their keys:
/// the CLI prints canonical JSON (the form `chain.rs` hashes), as it always has, so two
/// runs over the same history print the same bytes, whatever a type's field order.
fn line(value: &impl Serialize) -> anyhow::Result<String> {
    let value = serde_json::to_value(value).context("rendering JSON")?;
    Ok(format!("{value}\n"))
}

fn pretty(value: &Value) -> String {
    format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    )
}
