//! The real binary as a user runs it: `cargo run` with no setup, `migrate`, SIGTERM.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::free_port;
use crate::helpers::{postgres_admin_url, StoreKind, TestStore};

struct Server {
    child: Child,
    public: String,
    internal: String,
}

fn start_binary(store: &TestStore, extra_env: &[(&str, &str)]) -> Server {
    start_binary_with(
        store,
        extra_env,
        Command::new(env!("CARGO_BIN_EXE_widget-auth")),
    )
}

/// The binary under a shell that first sets a permissive umask (`exec` keeps the pid, so
/// SIGTERM reaches the server).
fn start_binary_with_umask(store: &TestStore, extra_env: &[(&str, &str)], umask: &str) -> Server {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        &format!("umask {umask} && exec \"$0\""),
        env!("CARGO_BIN_EXE_widget-auth"),
    ]);
    start_binary_with(store, extra_env, command)
}

fn start_binary_with(
    store: &TestStore,
    extra_env: &[(&str, &str)],
    mut command: Command,
) -> Server {
    let (public, internal) = (free_port(), free_port());
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WIDGET_AUTH_DATA_DIR", &store.data_dir)
        .env("WIDGET_AUTH_PUBLIC_ADDR", format!("127.0.0.1:{public}"))
        .env("WIDGET_AUTH_INTERNAL_ADDR", format!("127.0.0.1:{internal}"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = &store.database_url {
        command.env("DATABASE_URL", url);
        command.env("WIDGET_AUTH_SIGNING_KEY_FILE", store.signing_key_path());
    }
    for (name, value) in extra_env {
        command.env(name, value);
    }
    Server {
        child: command.spawn().expect("binary starts"),
        public: format!("http://127.0.0.1:{public}"),
        internal: format!("http://127.0.0.1:{internal}"),
    }
}

async fn wait_ready(http: &reqwest::Client, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http.get(format!("{}/readyz", server.internal)).send().await {
            if response.status() == StatusCode::OK {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the client key "Acme" for `https://acme.test` through the admin API.
async fn create_acme_key(http: &reqwest::Client, server: &Server, token: &str) -> Value {
    http.post(format!("{}/internal/v1/client-keys", server.internal))
        .bearer_auth(token)
        .json(&json!({"name": "Acme", "origins": ["https://acme.test"]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json")
}

/// Sends SIGTERM and returns the exit status and everything the process printed.
fn terminate(mut server: Server) -> (std::process::ExitStatus, String) {
    let pid = server.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    if let Some(mut stdout) = server.child.stdout.take() {
        let _ = stdout.read_to_string(&mut output);
    }
    if let Some(mut stderr) = server.child.stderr.take() {
        let _ = stderr.read_to_string(&mut output);
    }
    (status, output)
}

crate::on_both_stores!(
    the_binary_serves_with_no_setup_logs_no_secret_and_stops_on_sigterm,
    sigterm_exits_within_the_grace_despite_a_half_sent_request,
    a_short_admin_token_is_refused_at_start_naming_the_variable,
    the_data_dir_and_its_files_are_owner_only_whatever_the_umask,
);

async fn sigterm_exits_within_the_grace_despite_a_half_sent_request(store: StoreKind) {
    use tokio::io::AsyncWriteExt as _;
    let store = TestStore::new(store).await;
    let server = start_binary(&store, &[("WIDGET_AUTH_SHUTDOWN_GRACE_SECONDS", "2")]);
    let http = reqwest::Client::new();
    wait_ready(&http, &server).await;
    let address = server.public.trim_start_matches("http://").to_owned();
    let mut half = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connects");
    half.write_all(
        b"POST /api/v1/widget/auth/guest HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"cl",
    )
    .await
    .expect("sent");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (status, output) = terminate(server);
    let took = started.elapsed();
    assert!(status.success(), "exit 0 on SIGTERM: {status:?}\n{output}");
    assert!(
        took < Duration::from_secs(2 + 3),
        "SIGTERM took {took:?} with a 2 s grace"
    );
    assert!(output.contains("shutdown grace over"), "{output}");
    drop(half);
    store.cleanup().await;
}

async fn a_short_admin_token_is_refused_at_start_naming_the_variable(store: StoreKind) {
    let store = TestStore::new(store).await;
    let token = "short-admin-token";
    let mut server = start_binary(&store, &[("WIDGET_AUTH_ADMIN_TOKEN", token)]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "started with a short admin token"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    for pipe in [
        server
            .child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read>),
        server
            .child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read>),
    ]
    .into_iter()
    .flatten()
    {
        let mut pipe = pipe;
        let _ = pipe.read_to_string(&mut output);
    }
    assert!(!status.success(), "{output}");
    assert!(
        output.contains("WIDGET_AUTH_ADMIN_TOKEN") && output.contains("at least 32 characters"),
        "{output}"
    );
    assert!(
        !output.contains(token),
        "the token is never printed: {output}"
    );
    store.cleanup().await;
}

async fn the_data_dir_and_its_files_are_owner_only_whatever_the_umask(kind: StoreKind) {
    use std::os::unix::fs::PermissionsExt;
    let store = TestStore::new(kind).await;
    let mut fresh = store.clone();
    fresh.data_dir = store.data_dir.join("fresh");
    // On PostgreSQL the shared signing key stays where the store put it.
    let key_file = store.signing_key_path().display().to_string();
    let extra: Vec<(&str, &str)> = match kind {
        StoreKind::Postgres => vec![("WIDGET_AUTH_SIGNING_KEY_FILE", key_file.as_str())],
        StoreKind::Sqlite => vec![],
    };
    let server = start_binary_with_umask(&fresh, &extra, "000");
    let http = reqwest::Client::new();
    wait_ready(&http, &server).await;
    let token = std::fs::read_to_string(fresh.data_dir.join("admin-token")).expect("token");
    let created = http
        .post(format!("{}/internal/v1/client-keys", server.internal))
        .bearer_auth(token.trim())
        .json(&json!({"name": "Acme", "origins": ["https://acme.test"]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(created.status(), StatusCode::CREATED);
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&fresh.data_dir), 0o700, "the data dir");
    let mut expected = vec!["admin-token"];
    if kind == StoreKind::Sqlite {
        expected.extend([
            "widget-auth.sqlite3",
            "widget-auth.sqlite3-wal",
            "widget-auth.sqlite3-shm",
            "signing-key.pem",
        ]);
    }
    let mut found: Vec<String> = std::fs::read_dir(&fresh.data_dir)
        .expect("listable")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    for name in &expected {
        assert!(
            found.contains(&(*name).to_owned()),
            "{name} missing: {found:?}"
        );
    }
    for name in &found {
        assert_eq!(mode(&fresh.data_dir.join(name)), 0o600, "{name}");
    }
    let (status, output) = terminate(server);
    assert!(status.success(), "{output}");
    store.cleanup().await;
}

async fn the_binary_serves_with_no_setup_logs_no_secret_and_stops_on_sigterm(store: StoreKind) {
    let store = TestStore::new(store).await;
    let server = start_binary(&store, &[]);
    let http = reqwest::Client::new();
    wait_ready(&http, &server).await;
    let token_path = store.data_dir.join("admin-token");
    let token =
        std::fs::read_to_string(&token_path).expect("admin token generated in the data dir");
    let created = create_acme_key(&http, &server, token.trim()).await;
    let id = created["id"].as_str().expect("id");
    let rotated: Value = http
        .post(format!(
            "{}/internal/v1/client-keys/{id}/commands",
            server.internal
        ))
        .bearer_auth(token.trim())
        .json(&json!({"type": "rotate_secret_key", "grace_seconds": 10}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        http.get(format!("{}/healthz", server.public))
            .send()
            .await
            .expect("sent")
            .status(),
        StatusCode::OK
    );

    let (status, output) = terminate(server);
    assert!(
        status.success(),
        "graceful exit on SIGTERM: {status:?}\n{output}"
    );
    assert!(
        output.contains(&token_path.display().to_string()),
        "the token's path is printed"
    );
    for secret in [
        token.trim(),
        created["secret_key"].as_str().expect("sk"),
        rotated["secret_key"].as_str().expect("sk"),
    ] {
        assert!(!output.contains(secret), "a secret appeared in the logs");
    }
    assert!(
        output.contains("command committed"),
        "debug logs were captured"
    );
    store.cleanup().await;
}

/// The JSON log format as a log shipper reads it: every line one JSON object, the
/// request's line carrying its id, method, route, status and latency.
#[tokio::test]
async fn json_logs_give_each_response_its_request_id_route_status_and_latency() {
    // Given the binary logging JSON at debug, and a client key
    let store = TestStore::new(StoreKind::Sqlite).await;
    let server = start_binary(&store, &[("WIDGET_AUTH_LOG_FORMAT", "json")]);
    let http = reqwest::Client::new();
    wait_ready(&http, &server).await;
    let token = std::fs::read_to_string(store.data_dir.join("admin-token")).expect("token");
    let created = create_acme_key(&http, &server, token.trim()).await;
    let public_key = created["public_key"].as_str().expect("pk");

    // When a browser asks for the config with its own request id, and once from an
    // origin the key does not allow
    for (id, origin, expected) in [
        ("trace-me-1", "https://acme.test", 200),
        ("trace-me-2", "https://evil.test", 403),
    ] {
        let response = http
            .get(format!(
                "{}/api/v1/widget/config?client_key={public_key}",
                server.public
            ))
            .header("Origin", origin)
            .header("X-Request-Id", id)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), expected);
    }
    let (_, output) = terminate(server);

    // Then every line parses, and each request has its response line
    let lines: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for (id, expected) in [("trace-me-1", 200), ("trace-me-2", 403)] {
        let response = lines
            .iter()
            .find(|line| {
                line["fields"]["message"] == "response" && line["span"]["request_id"] == id
            })
            .unwrap_or_else(|| panic!("no response line for {id}:\n{output}"));
        assert_eq!(response["span"]["method"], "GET");
        assert_eq!(response["span"]["path"], "/api/v1/widget/config");
        assert_eq!(response["fields"]["status"], expected);
        assert!(response["fields"]["latency_us"].is_u64(), "{response}");
    }
    assert!(
        !output.contains("client_key="),
        "the query string stays out of the logs"
    );
    store.cleanup().await;
}

#[tokio::test]
async fn migrate_prepares_a_fresh_postgres_database_and_is_repeatable() {
    let store = TestStore::new(StoreKind::Postgres).await;
    for _ in 0..2 {
        let status = Command::new(env!("CARGO_BIN_EXE_widget-auth"))
            .arg("migrate")
            .env(
                "DATABASE_URL",
                store.database_url.as_deref().expect("postgres"),
            )
            .env("WIDGET_AUTH_DATA_DIR", &store.data_dir)
            .status()
            .expect("runs");
        assert!(status.success());
    }
    let tables = store
        .raw_rows("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' AND tablename = 'events'")
        .await;
    assert_eq!(tables, vec!["events".to_owned()]);
    let _ = postgres_admin_url();
    store.cleanup().await;
}
