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
    let (public, internal) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_widget-auth"));
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

crate::on_both_stores!(the_binary_serves_with_no_setup_logs_no_secret_and_stops_on_sigterm);

async fn the_binary_serves_with_no_setup_logs_no_secret_and_stops_on_sigterm(store: StoreKind) {
    let store = TestStore::new(store).await;
    let server = start_binary(&store, &[]);
    let http = reqwest::Client::new();
    wait_ready(&http, &server).await;
    let token_path = store.data_dir.join("admin-token");
    let token =
        std::fs::read_to_string(&token_path).expect("admin token generated in the data dir");
    let created: Value = http
        .post(format!("{}/internal/v1/client-keys", server.internal))
        .bearer_auth(token.trim())
        .json(&json!({"name": "Acme", "origins": ["https://acme.test"]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
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
