//! Starting the server on a fresh store and one client helper per endpoint.
//! Logs are silent unless `TEST_LOG` is set.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::Connection;
use widget_auth::app::RunningApp;
use widget_auth::config::Settings;

pub use crate::common::postgres_admin_url;
use crate::common::TestDatabase;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// Where a test's data lives; survives restarts of the server within the test. Its
/// PostgreSQL database is dropped when the last clone goes, also when the test fails.
#[derive(Debug, Clone)]
pub struct TestStore {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    database: Option<Arc<TestDatabase>>,
}

impl TestStore {
    pub async fn new(kind: StoreKind) -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let data_dir = std::env::temp_dir().join(format!("widget-auth-test-{unique}"));
        let database = match kind {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => Some(Arc::new(TestDatabase::create("wa_test").await)),
        };
        let database_url = database.as_ref().map(|db| db.url.clone());
        // PostgreSQL deployments must name a shared signing key file; embedded ones
        // generate their own into the data dir.
        std::fs::create_dir_all(&data_dir).expect("data dir");
        if database_url.is_some() {
            let pem = widget_auth::tokens::SigningKeys::generate_pem().expect("a signing key");
            std::fs::write(data_dir.join("shared-signing-key.pem"), pem).expect("write key");
        }
        Self {
            data_dir,
            database_url,
            database,
        }
    }

    /// The PEM this store's server signs with.
    pub fn signing_key_path(&self) -> PathBuf {
        match self.database_url {
            Some(_) => self.data_dir.join("shared-signing-key.pem"),
            None => self.data_dir.join(widget_auth::config::SIGNING_KEY_FILE),
        }
    }

    pub fn signing_keys(&self) -> widget_auth::tokens::SigningKeys {
        widget_auth::tokens::SigningKeys::load(&self.signing_key_path())
            .expect("signing key readable")
    }

    pub fn settings(&self) -> Settings {
        let mut settings = Settings::from_lookup(|_| None).expect("defaults are valid");
        settings.public_addr = "127.0.0.1:0".parse().expect("addr");
        settings.internal_addr = "127.0.0.1:0".parse().expect("addr");
        settings.data_dir = self.data_dir.clone();
        settings.database_url = self.database_url.clone().map(Into::into);
        if self.database_url.is_some() {
            settings.signing_key_file = Some(self.signing_key_path());
        }
        settings
    }

    /// Runs SQL directly against the store (to inspect what was really written).
    pub async fn raw_rows(&self, sql: &str) -> Vec<String> {
        match &self.database_url {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::query_scalar::<_, String>(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("query")
            }
            None => {
                let url = format!(
                    "sqlite://{}",
                    self.data_dir.join("widget-auth.sqlite3").display()
                );
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("connect");
                sqlx::query_scalar::<_, String>(sql)
                    .fetch_all(&mut conn)
                    .await
                    .expect("query")
            }
        }
    }

    /// Runs a statement directly against the store (an auditor's adversary editing rows)
    /// and returns the number of rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        match &self.database_url {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .expect("statement")
                    .rows_affected()
            }
            None => {
                let url = format!(
                    "sqlite://{}",
                    self.data_dir.join("widget-auth.sqlite3").display()
                );
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .expect("connect");
                sqlx::query(sql)
                    .execute(&mut conn)
                    .await
                    .expect("statement")
                    .rows_affected()
            }
        }
    }

    /// Runs `widget-auth <args>` (the built binary) on this store, as an auditor would:
    /// only the store's environment variables. Returns exit code, stdout and stderr.
    pub async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_widget-auth"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("WIDGET_AUTH_DATA_DIR", &self.data_dir);
        if let Some(url) = &self.database_url {
            command.env("DATABASE_URL", url);
            command.env("WIDGET_AUTH_SIGNING_KEY_FILE", self.signing_key_path());
        }
        let output = command.output().await.expect("the binary runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    pub async fn cleanup(self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
        if let Some(database) = &self.database {
            database.drop_now().await;
        }
    }
}

/// The clock a test hands the server for its commands: the machine's time unless the
/// test moves it, so a test that needs events seconds apart advances it instead of
/// sleeping.
#[derive(Debug, Default)]
pub struct TestClock {
    /// Added to the machine's time.
    offset_ms: std::sync::atomic::AtomicI64,
}

impl TestClock {
    pub fn system() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).expect("a short advance");
        self.offset_ms
            .fetch_add(by, std::sync::atomic::Ordering::SeqCst);
    }
}

impl domain::Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now()
            + chrono::Duration::milliseconds(
                self.offset_ms.load(std::sync::atomic::Ordering::SeqCst),
            )
    }
}

pub struct TestApp {
    pub app: RunningApp,
    pub store: TestStore,
    pub http: reqwest::Client,
    pub admin_token: String,
}

pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        widget_auth::telemetry::init();
    }
}

impl TestApp {
    pub async fn spawn(kind: StoreKind) -> Self {
        Self::spawn_on(TestStore::new(kind).await).await
    }

    /// A server whose commands take their time from `clock` (see [`TestClock`]).
    pub async fn spawn_with_clock(kind: StoreKind, clock: Arc<TestClock>) -> Self {
        Self::spawn_on_with_clock(TestStore::new(kind).await, clock).await
    }

    /// Starts a server on an existing store (a restart).
    pub async fn spawn_on(store: TestStore) -> Self {
        Self::spawn_on_with_clock(store, Arc::new(TestClock::system())).await
    }

    /// A server whose settings `adjust` changes first (trusted proxies, limits off).
    pub async fn spawn_with_settings(kind: StoreKind, adjust: impl FnOnce(&mut Settings)) -> Self {
        let store = TestStore::new(kind).await;
        let mut settings = store.settings();
        adjust(&mut settings);
        Self::start(store, settings, Arc::new(TestClock::system())).await
    }

    /// Starts a server on an existing store with settings `adjust` changed first.
    pub async fn spawn_on_with_settings(
        store: TestStore,
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = store.settings();
        adjust(&mut settings);
        Self::start(store, settings, Arc::new(TestClock::system())).await
    }

    async fn spawn_on_with_clock(store: TestStore, clock: Arc<TestClock>) -> Self {
        let settings = store.settings();
        Self::start(store, settings, clock).await
    }

    async fn start(store: TestStore, settings: Settings, clock: Arc<TestClock>) -> Self {
        init_logs();
        let app = widget_auth::app::start(settings, clock)
            .await
            .expect("server starts");
        assert!(
            app.wait_ready(Duration::from_secs(30)).await,
            "server became ready"
        );
        let admin_token = app.admin_token.expose_secret().to_owned();
        Self {
            app,
            store,
            http: reqwest::Client::new(),
            admin_token,
        }
    }

    /// Stops the server, keeping its store for a restart.
    pub async fn restart(self) -> Self {
        let store = self.store.clone();
        self.app.stop().await;
        Self::spawn_on(store).await
    }

    pub async fn finish(self) {
        let store = self.store.clone();
        self.app.stop().await;
        store.cleanup().await;
    }

    pub fn internal(&self, path: &str) -> String {
        format!("http://{}{}", self.app.internal_addr, path)
    }

    pub fn public(&self, path: &str) -> String {
        format!("http://{}{}", self.app.public_addr, path)
    }

    pub async fn admin_get(&self, path: &str) -> Response {
        self.http
            .get(self.internal(path))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Response {
        self.admin_post_with(path, body, &[]).await
    }

    pub async fn admin_post_with(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut request = self
            .http
            .post(self.internal(path))
            .bearer_auth(&self.admin_token)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }

    /// Creates a key and returns the 201 body.
    pub async fn create_key(&self, body: Value) -> Value {
        let response = self.admin_post("/internal/v1/client-keys", &body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "create failed");
        response.json().await.expect("json body")
    }

    pub async fn create_default_key(&self) -> Value {
        self.create_key(json!({"name": "Acme", "origins": ["https://acme.test"]}))
            .await
    }

    pub async fn command(&self, id: &str, body: Value) -> Response {
        self.admin_post(&format!("/internal/v1/client-keys/{id}/commands"), &body)
            .await
    }

    pub async fn key(&self, id: &str) -> Value {
        let response = self
            .admin_get(&format!("/internal/v1/client-keys/{id}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json body")
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let response = self
            .admin_get(&format!("/internal/v1/client-keys/{id}/events?limit=1000"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json body");
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

/// The public endpoints, as a browser or a customer backend calls them.
impl TestApp {
    pub async fn config(&self, client_key: &str, origin: Option<&str>) -> Response {
        let mut request = self
            .http
            .get(self.public("/api/v1/widget/config"))
            .query(&[("client_key", client_key)]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.expect("request sent")
    }

    /// POSTs a JSON body to a public endpoint, from `origin` when given.
    pub async fn post_public(&self, path: &str, body: &Value, origin: Option<&str>) -> Response {
        let mut request = self.http.post(self.public(path)).json(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.expect("request sent")
    }

    pub async fn guest(&self, client_key: &str, origin: &str) -> Response {
        self.post_public(
            "/api/v1/widget/auth/guest",
            &json!({"client_key": client_key}),
            Some(origin),
        )
        .await
    }

    pub async fn user_token(&self, secret_key: &str, body: &Value) -> Response {
        self.http
            .post(self.public("/api/v1/widget/auth/user-token"))
            .bearer_auth(secret_key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn exchange(&self, token: &str, origin: Option<&str>) -> Response {
        self.post_public(
            "/api/v1/widget/auth/exchange",
            &json!({"token": token}),
            origin,
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str, origin: Option<&str>) -> Response {
        self.post_public(
            "/api/v1/widget/auth/refresh",
            &json!({"refresh_token": refresh_token}),
            origin,
        )
        .await
    }

    /// A visitor token for `user_id`, minted with the key's secret.
    pub async fn visitor_token(&self, key: &Value, user_id: &str) -> String {
        let response = self
            .user_token(
                key["secret_key"].as_str().expect("sk"),
                &json!({"client_key": key["public_key"], "user_id": user_id, "name": "Ada", "email": "ada@acme.test"}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        body["visitor_token"]
            .as_str()
            .expect("visitor token")
            .to_owned()
    }
}

/// The JSON of a JWT segment (0 header, 1 claims), decoded without verification.
pub fn jwt_part(token: &str, index: usize) -> Value {
    use base64::Engine;
    let segment = token.split('.').nth(index).expect("a JWT segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("json segment")
}

/// Status and JSON body of a response.
pub async fn status_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Declares each listed `async fn(StoreKind)` as a test on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::StoreKind::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::helpers::StoreKind::Postgres).await
                }
            )*
        }
    };
}
