//! `widget-auth keys …`: the operators' subcommands, run against a running node's internal
//! HTTP API (not the store: commands must go through the node, which checks them, records
//! who made them and updates every node's read models).
//!
//! Each subcommand is one call (or, for `history`, one call per page) of API.md's
//! `/internal/v1` endpoints. What the node answers is printed as text for people or, with
//! `--json`, as the node's JSON for scripts. A new secret key is printed once, with a
//! warning on stderr that it cannot be shown again. Errors exit 1 with the node's own
//! message; the admin token is sent only in the `Authorization` header, never printed.

use std::io::{IsTerminal, Read as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::config::{Settings, ADMIN_TOKEN_FILE};

/// How long one call may take before the CLI gives up on the node.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub(super) struct KeysArgs {
    /// The node's internal listener.
    #[arg(
        long,
        global = true,
        env = "WIDGET_AUTH_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    url: String,
    /// Print the node's JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: KeysCommand,
}

/// What every command that changes a key may carry.
#[derive(Debug, Args)]
struct Change {
    /// Why: recorded in the event's metadata for auditors.
    #[arg(long)]
    reason: Option<String>,
    /// Refuse (409) unless the key is still at this version.
    #[arg(long)]
    expected_version: Option<u64>,
    /// Makes a retried command return the first answer instead of applying twice.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a client key; prints its secret key, once.
    Create {
        /// A name for people (also the widget's default agent name).
        #[arg(long)]
        name: String,
        /// An allowed origin, like https://shop.example.com (repeat for more).
        #[arg(long = "origin", required = true)]
        origins: Vec<String>,
        /// The public config: a JSON object, @FILE, or - for stdin.
        #[arg(long)]
        config: Option<String>,
        /// The token policy: a JSON object, @FILE, or - for stdin.
        #[arg(long)]
        policy: Option<String>,
        /// Why: recorded in the event's metadata for auditors.
        #[arg(long)]
        reason: Option<String>,
        /// Makes a retried creation return the first answer instead of creating twice.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List client keys, a page at a time.
    List {
        /// Start after this client key id (the previous page's `next_after`).
        #[arg(long)]
        after: Option<String>,
        /// Keys per page (1 to 1000).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Show one client key's current state (secrets are never included).
    Show { id: String },
    /// Replace the allowed origins.
    Origins {
        id: String,
        /// Every origin the key allows from now on.
        #[arg(required = true)]
        origins: Vec<String>,
        #[command(flatten)]
        change: Change,
    },
    /// Replace the public widget config.
    Config {
        id: String,
        /// The config: a JSON object, @FILE, or - for stdin.
        config: String,
        #[command(flatten)]
        change: Change,
    },
    /// Replace the token policy.
    Policy {
        id: String,
        /// The policy: a JSON object, @FILE, or - for stdin.
        policy: String,
        #[command(flatten)]
        change: Change,
    },
    /// Issue a new secret key; prints it, once. The old one works for the grace period.
    RotateSecret {
        id: String,
        /// Seconds the old secret key keeps working (0 to 604800).
        #[arg(long)]
        grace_seconds: u32,
        #[command(flatten)]
        change: Change,
    },
    /// Issue a new public key. The old one works for the grace period.
    RotatePublic {
        id: String,
        /// Seconds the old public key keeps working (0 to 604800).
        #[arg(long)]
        grace_seconds: u32,
        #[command(flatten)]
        change: Change,
    },
    /// End every grace period of previous keys now.
    ExpirePrevious {
        id: String,
        #[command(flatten)]
        change: Change,
    },
    /// Refuse refresh and exchange of every token issued until now (of one user, or all).
    RevokeSessions {
        id: String,
        /// Only this user's tokens.
        #[arg(long)]
        user_id: Option<String>,
        #[command(flatten)]
        change: Change,
    },
    /// Disable the key: its widget and tokens are refused until it is enabled.
    Disable {
        id: String,
        #[command(flatten)]
        change: Change,
    },
    /// Enable a disabled key.
    Enable {
        id: String,
        #[command(flatten)]
        change: Change,
    },
    /// Every event of the key, in order, fetched page by page.
    History {
        id: String,
        /// Start after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Events per request (1 to 1000).
        #[arg(long, default_value_t = 500)]
        page_size: u64,
    },
}

/// Runs one `keys` command and prints its answer; any refusal or failure is an error
/// (the caller prints it and exits 1).
pub(super) async fn run(settings: &Settings, args: KeysArgs) -> anyhow::Result<ExitCode> {
    let client = Admin::new(&args.url, admin_token(settings)?)?;
    let output = command(&client, args.command, args.json).await?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(err).context("writing to stdout")
        }
        _ => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `WIDGET_AUTH_ADMIN_TOKEN`, or the token the node saved in its data dir. Never
/// generated here: a new file would not be the node's token.
fn admin_token(settings: &Settings) -> anyhow::Result<SecretString> {
    if let Some(token) = &settings.admin_token {
        return Ok(token.clone());
    }
    let path = settings.data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(SecretString::from(text.trim().to_owned())),
        Ok(_) => bail!("the admin token file {} is empty", path.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "no admin token: set WIDGET_AUTH_ADMIN_TOKEN, or WIDGET_AUTH_DATA_DIR to the node's data dir (there is no {})",
            path.display()
        ),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// The internal API as the CLI calls it: one client, the base URL and the token.
struct Admin {
    http: reqwest::Client,
    base: String,
    token: SecretString,
}

/// A successful answer: the JSON body, and whether it replays an earlier answer
/// (`Idempotent-Replayed: true`).
struct Answer {
    body: Value,
    replayed: bool,
}

impl Admin {
    fn new(url: &str, token: SecretString) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base)
            .with_context(|| format!("--url {base} is not a URL like http://127.0.0.1:8081"))?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("widget-auth-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base, token })
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Answer> {
        self.call(Method::GET, path, query, None, None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let mut request = self
            .http
            .request(method, format!("{}/internal/v1{path}", self.base))
            .query(query)
            .bearer_auth(self.token.expose_secret());
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|err| unreachable(&self.base, &err))?;
        let status = response.status();
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let text = response
            .text()
            .await
            .map_err(|err| unreachable(&self.base, &err))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            bail!("{}", refusal(status, body.as_ref(), &text));
        }
        let body = body.with_context(|| format!("the node answered {status} without JSON"))?;
        Ok(Answer { body, replayed })
    }

    /// `POST /client-keys/{id}/commands` with `command` and the common fields.
    async fn command(
        &self,
        id: &str,
        mut command: Value,
        change: Change,
    ) -> anyhow::Result<Answer> {
        if let Some(reason) = change.reason {
            command["reason"] = json!(reason);
        }
        if let Some(version) = change.expected_version {
            command["expected_version"] = json!(version);
        }
        self.call(
            Method::POST,
            &format!("/client-keys/{}/commands", segment(id)),
            &[],
            Some(&command),
            change.idempotency_key.as_deref(),
        )
        .await
    }
}

/// The sentence for a failed call: the node's `message` when it sent one.
fn refusal(status: StatusCode, body: Option<&Value>, text: &str) -> String {
    match body.and_then(|b| b["message"].as_str()) {
        Some(message) => format!("{message} ({status})"),
        None if text.trim().is_empty() => format!("the node answered {status}"),
        None => format!("the node answered {status}: {}", text.trim()),
    }
}

/// A transport failure said as a sentence an operator can act on.
fn unreachable(base: &str, err: &reqwest::Error) -> anyhow::Error {
    if err.is_connect() {
        anyhow::anyhow!(
            "cannot reach the widget-auth node at {base}: is it running, and is --url (or WIDGET_AUTH_ADMIN_URL) its internal listener?"
        )
    } else if err.is_timeout() {
        anyhow::anyhow!(
            "the widget-auth node at {base} did not answer within {} s",
            REQUEST_TIMEOUT.as_secs()
        )
    } else {
        anyhow::anyhow!("calling the widget-auth node at {base} failed: {err}")
    }
}

/// An id as one URL path segment: an id with `/` or `?` in it must not reach another path.
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// A JSON object given inline, as `@FILE`, or as `-` (stdin).
fn json_argument(what: &str, source: &str) -> anyhow::Result<Value> {
    let text = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .with_context(|| format!("reading the {what} from stdin"))?;
        text
    } else if let Some(file) = source.strip_prefix('@') {
        std::fs::read_to_string(PathBuf::from(file))
            .with_context(|| format!("reading the {what} from {file}"))?
    } else {
        source.to_owned()
    };
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("the {what} is not JSON (give a JSON object, @FILE or -)"))?;
    if !value.is_object() {
        bail!("the {what} must be a JSON object");
    }
    Ok(value)
}

async fn command(admin: &Admin, command: KeysCommand, json_out: bool) -> anyhow::Result<String> {
    let answer = match command {
        KeysCommand::Create {
            name,
            origins,
            config,
            policy,
            reason,
            idempotency_key,
        } => {
            let mut body = json!({ "name": name, "origins": origins });
            if let Some(config) = config {
                body["config"] = json_argument("config", &config)?;
            }
            if let Some(policy) = policy {
                body["token_policy"] = json_argument("policy", &policy)?;
            }
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            let answer = admin
                .call(
                    Method::POST,
                    "/client-keys",
                    &[],
                    Some(&body),
                    idempotency_key.as_deref(),
                )
                .await?;
            return Ok(secret_answer(&answer, json_out, created_text));
        }
        KeysCommand::List { after, limit } => {
            let mut query = Vec::new();
            if let Some(after) = after {
                query.push(("after", after));
            }
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let answer = admin.get("/client-keys", &query).await?;
            return Ok(if json_out {
                json_line(&answer.body)
            } else {
                list_text(&answer.body)
            });
        }
        KeysCommand::Show { id } => {
            let answer = admin
                .get(&format!("/client-keys/{}", segment(&id)), &[])
                .await?;
            return Ok(if json_out {
                json_line(&answer.body)
            } else {
                show_text(&answer.body)
            });
        }
        KeysCommand::History {
            id,
            after,
            page_size,
        } => return history(admin, &id, after, page_size, json_out).await,
        KeysCommand::RotateSecret {
            id,
            grace_seconds,
            change,
        } => {
            let command = json!({"type": "rotate_secret_key", "grace_seconds": grace_seconds});
            let answer = admin.command(&id, command, change).await?;
            return Ok(secret_answer(&answer, json_out, changed_text));
        }
        KeysCommand::Origins {
            id,
            origins,
            change,
        } => {
            let command = json!({"type": "change_origins", "origins": origins});
            admin.command(&id, command, change).await?
        }
        KeysCommand::Config { id, config, change } => {
            let command =
                json!({"type": "update_config", "config": json_argument("config", &config)?});
            admin.command(&id, command, change).await?
        }
        KeysCommand::Policy { id, policy, change } => {
            let command =
                json!({"type": "set_token_policy", "policy": json_argument("policy", &policy)?});
            admin.command(&id, command, change).await?
        }
        KeysCommand::RotatePublic {
            id,
            grace_seconds,
            change,
        } => {
            let command = json!({"type": "rotate_public_key", "grace_seconds": grace_seconds});
            admin.command(&id, command, change).await?
        }
        KeysCommand::ExpirePrevious { id, change } => {
            admin
                .command(&id, json!({"type": "expire_previous_keys"}), change)
                .await?
        }
        KeysCommand::RevokeSessions {
            id,
            user_id,
            change,
        } => {
            let mut command = json!({"type": "revoke_sessions"});
            if let Some(user_id) = user_id {
                command["user_id"] = json!(user_id);
            }
            admin.command(&id, command, change).await?
        }
        KeysCommand::Disable { id, change } => {
            admin
                .command(&id, json!({"type": "disable"}), change)
                .await?
        }
        KeysCommand::Enable { id, change } => {
            admin
                .command(&id, json!({"type": "enable"}), change)
                .await?
        }
    };
    Ok(if json_out {
        json_line(&answer.body)
    } else {
        changed_text(&answer)
    })
}

/// The answer of a call that may carry a new secret key: printed once (stdout), with the
/// warning that it will not be shown again (stderr, so `--json` output stays parseable).
fn secret_answer(answer: &Answer, json_out: bool, text: fn(&Answer) -> String) -> String {
    if answer.body["secret_key"].is_string() {
        warn(
            "warning: this secret key is shown once and will not be shown again; store it now (a secret manager, your backend's configuration)",
        );
    }
    if json_out {
        json_line(&answer.body)
    } else {
        text(answer)
    }
}

/// Prints a failed command's reason on stderr as one sentence (`error: …`).
pub(super) fn print_error(err: &anyhow::Error) {
    warn(&format!("error: {err:#}"));
}

/// A line on stderr for people (warnings and notes, never the program's output).
fn warn(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

fn json_line(value: &Value) -> String {
    format!("{value}\n")
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or("-")
}

fn created_text(answer: &Answer) -> String {
    let body = &answer.body;
    let mut out = format!(
        "created client key {}\nversion:    {}\npublic key: {}\n",
        str_of(body, "id"),
        body["version"],
        str_of(body, "public_key"),
    );
    match body["secret_key"].as_str() {
        Some(secret) => out.push_str(&format!("secret key: {secret}\n")),
        None if answer.replayed => out.push_str(
            "secret key: not shown (this replays an earlier request with the same Idempotency-Key; its secret key was shown then)\n",
        ),
        None => {}
    }
    out
}

/// What a command changed, in a sentence or two.
fn changed_text(answer: &Answer) -> String {
    let body = &answer.body;
    let mut out = match body["event"].as_str() {
        Some(event) => format!(
            "{}: {event}, now at version {}",
            str_of(body, "id"),
            body["version"]
        ),
        None => format!(
            "{}: nothing to change, still at version {}",
            str_of(body, "id"),
            body["version"]
        ),
    };
    if answer.replayed {
        out.push_str(" (replayed: this Idempotency-Key was used before)");
    }
    out.push('\n');
    if let Some(public_key) = body["public_key"].as_str() {
        out.push_str(&format!("new public key: {public_key}\n"));
    }
    if let Some(secret) = body["secret_key"].as_str() {
        out.push_str(&format!("new secret key: {secret}\n"));
    } else if let Some(last_four) = body["secret_key_last_four"].as_str() {
        out.push_str(&format!(
            "new secret key: …{last_four} (shown only when first issued)\n"
        ));
    }
    if let Some(until) = body["previous_valid_until"].as_str() {
        out.push_str(&format!("previous key valid until: {until}\n"));
    }
    out
}

fn list_text(body: &Value) -> String {
    let keys = body["client_keys"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if keys.is_empty() {
        return "no client keys\n".to_owned();
    }
    let mut out = String::new();
    for key in keys {
        out.push_str(&format!(
            "{}  {:<8}  v{:<4}  {}  {}\n",
            str_of(key, "id"),
            str_of(key, "status"),
            key["version"].as_u64().unwrap_or_default(),
            str_of(key, "public_key"),
            str_of(key, "name"),
        ));
    }
    if let Some(next) = body["next_after"].as_str() {
        out.push_str(&format!("more: --after {next}\n"));
    }
    out
}

fn show_text(key: &Value) -> String {
    let list = |field: &str| -> String {
        let items: Vec<String> = key[field]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    format!(
        "id:            {}\nname:          {}\nstatus:        {}\nversion:       {}\ncreated:       {}\nupdated:       {}\npublic key:    {}\nprevious public keys: {}\nsecret key:    …{}\nprevious secret keys: {}\norigins:       {}\ntoken policy:  {}\nconfig:        {}\n",
        str_of(key, "id"),
        str_of(key, "name"),
        str_of(key, "status"),
        key["version"],
        str_of(key, "created_at"),
        str_of(key, "updated_at"),
        str_of(key, "public_key"),
        list("previous_public_keys"),
        str_of(key, "secret_key_last_four"),
        list("previous_secret_keys"),
        list("origins"),
        key["token_policy"],
        key["config"],
    )
}

/// Pages through `/events` until `next_after` is null, with a spinner on a terminal.
async fn history(
    admin: &Admin,
    id: &str,
    after: u64,
    page_size: u64,
    json_out: bool,
) -> anyhow::Result<String> {
    let spinner = spinner();
    let path = format!("/client-keys/{}/events", segment(id));
    let mut events = Vec::new();
    let mut after = after;
    loop {
        let page = admin
            .get(
                &path,
                &[
                    ("after", after.to_string()),
                    ("limit", page_size.to_string()),
                ],
            )
            .await;
        let page = match page {
            Ok(page) => page.body,
            Err(err) => {
                spinner.finish_and_clear();
                return Err(err);
            }
        };
        if let Some(batch) = page["events"].as_array() {
            events.extend(batch.iter().cloned());
        }
        spinner.set_message(format!("{} events", events.len()));
        match page["next_after"].as_u64() {
            Some(next) if next > after => after = next,
            _ => break,
        }
    }
    spinner.finish_and_clear();
    if json_out {
        return Ok(json_line(&json!({ "id": id, "events": events })));
    }
    if events.is_empty() {
        return Ok(format!("{id}: no events\n"));
    }
    let mut out = String::new();
    for event in &events {
        let metadata = &event["metadata"];
        out.push_str(&format!(
            "{:>5}  {}  {:<24}  by {}",
            event["sequence"].as_u64().unwrap_or_default(),
            str_of(metadata, "at"),
            str_of(event, "type"),
            str_of(metadata, "actor"),
        ));
        if let Some(reason) = metadata["reason"].as_str() {
            out.push_str(&format!("  reason: {reason}"));
        }
        out.push('\n');
    }
    Ok(out)
}

/// A spinner on stderr, drawn only when stderr is a terminal (never in scripts or logs).
fn spinner() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("{spinner} loading history: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}
