//! widget-auth nodes as separate processes (the built binary) sharing one PostgreSQL, an
//! admin token and a signing key, each with its own data dir and ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;

use crate::cluster::Cluster;
use crate::common::TestDatabase;

/// What the nodes of one test share.
#[derive(Debug)]
pub struct Deployment {
    pub database_url: String,
    pub admin_token: String,
    signing_key_file: PathBuf,
    root: PathBuf,
    /// Dropped last: stops the throwaway cluster, if the test has one.
    _cluster: Option<Cluster>,
    /// The database created on the shared server, dropped with the deployment (also
    /// when the test fails).
    shared_database: Option<TestDatabase>,
}

impl Deployment {
    fn new(database_url: String, cluster: Option<Cluster>, shared: Option<TestDatabase>) -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let root = std::env::temp_dir().join(format!("widget-auth-nodes-{unique}"));
        std::fs::create_dir_all(&root).expect("create test dir");
        let signing_key_file = root.join("signing.pem");
        let pem = widget_auth::tokens::SigningKeys::generate_pem().expect("generate a key");
        std::fs::write(&signing_key_file, pem).expect("write the signing key");
        Self {
            database_url,
            admin_token: format!("test-admin-{unique}"),
            signing_key_file,
            root,
            _cluster: cluster,
            shared_database: shared,
        }
    }

    /// On a fresh database of the shared PostgreSQL server.
    pub async fn on_shared_server() -> Self {
        let database = TestDatabase::create("wa_nodes").await;
        Self::new(database.url.clone(), None, Some(database))
    }

    /// On a throwaway cluster, returned alongside so the test can stop and start it.
    pub fn with_cluster(cluster: Cluster) -> Self {
        let url = cluster.url();
        Self::new(url, Some(cluster), None)
    }

    pub fn cluster(&self) -> &Cluster {
        self._cluster
            .as_ref()
            .expect("a deployment with its own cluster")
    }

    /// Starts node `name` (its data dir is kept across restarts) and waits until ready.
    pub async fn node(&self, name: &str) -> Node {
        let node = self.spawn(name);
        node.wait_ready(Duration::from_secs(30)).await;
        node
    }

    /// Starts node `name` without waiting for it to be ready.
    pub fn spawn(&self, name: &str) -> Node {
        let data_dir = self.root.join(name);
        std::fs::create_dir_all(&data_dir).expect("node data dir");
        let log_path = self
            .root
            .join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let log = std::fs::File::create(&log_path).expect("node log file");
        let child = Command::new(env!("CARGO_BIN_EXE_widget-auth"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("WIDGET_AUTH_DATA_DIR", &data_dir)
            .env("WIDGET_AUTH_ADMIN_TOKEN", &self.admin_token)
            .env("WIDGET_AUTH_SIGNING_KEY_FILE", &self.signing_key_file)
            .env("WIDGET_AUTH_PUBLIC_ADDR", "127.0.0.1:0")
            .env("WIDGET_AUTH_INTERNAL_ADDR", "127.0.0.1:0")
            .env("WIDGET_AUTH_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,widget_auth=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("the widget-auth binary starts");
        let mut node = Node {
            name: name.to_owned(),
            child,
            log_path,
            internal: String::new(),
            public: String::new(),
            http: reqwest::Client::new(),
            admin_token: self.admin_token.clone(),
        };
        (node.internal, node.public) = node.wait_for_addresses();
        node
    }

    /// Drops the test's database on the shared server (its files go on drop).
    pub async fn cleanup(self) {
        if let Some(database) = &self.shared_database {
            database.drop_now().await;
        }
    }

    /// A direct connection to the deployment's database.
    pub async fn sql(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.database_url)
            .await
            .expect("connect to the test database")
    }
}

impl Drop for Deployment {
    /// Also when a test fails: node data dirs and logs are not left behind.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    child: Child,
    log_path: PathBuf,
    /// `http://127.0.0.1:port` of the internal listener.
    pub internal: String,
    /// `http://127.0.0.1:port` of the public listener.
    pub public: String,
    pub http: reqwest::Client,
    admin_token: String,
}

impl Node {
    /// Reads the bound addresses from the node's "listening" log line (both listeners
    /// bind port 0, so parallel tests never race for ports).
    fn wait_for_addresses(&mut self) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            for line in log.lines() {
                let Ok(entry) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if entry["fields"]["message"] == "listening" {
                    let fields = &entry["fields"];
                    if let (Some(internal), Some(public)) = (
                        fields["internal_addr"].as_str(),
                        fields["public_addr"].as_str(),
                    ) {
                        return (format!("http://{internal}"), format!("http://{public}"));
                    }
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("node {} exited with {status}:\n{log}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not bind:\n{log}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.get("/readyz").await.status() == StatusCode::OK {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {} not ready:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no shutdown, no flush, nothing.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.internal))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.internal))
            .bearer_auth(&self.admin_token)
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }

    /// POSTs to a public endpoint from `https://acme.test` (the origin `create_key` allows).
    pub async fn public_post(&self, path: &str, body: &Value, bearer: Option<&str>) -> Response {
        let mut request = self
            .http
            .post(format!("{}{path}", self.public))
            .header("origin", "https://acme.test")
            .json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    /// The widget config as a browser on `https://acme.test` gets it.
    pub async fn public_config(&self, public_key: &str) -> Response {
        self.http
            .get(format!("{}/api/v1/widget/config", self.public))
            .query(&[("client_key", public_key)])
            .header("origin", "https://acme.test")
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a key and returns the whole 201 body (keys included).
    pub async fn create_key_full(&self, name: &str) -> Value {
        let response = self
            .post(
                "/internal/v1/client-keys",
                &json!({"name": name, "origins": ["https://acme.test"]}),
                &[],
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("json")
    }

    pub async fn create_key(&self, name: &str) -> String {
        let response = self
            .post(
                "/internal/v1/client-keys",
                &json!({"name": name, "origins": ["https://acme.test"]}),
                &[],
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        body["id"].as_str().expect("id").to_owned()
    }

    pub async fn command(&self, id: &str, body: Value, headers: &[(&str, &str)]) -> Response {
        self.post(
            &format!("/internal/v1/client-keys/{id}/commands"),
            &body,
            headers,
        )
        .await
    }

    /// The key's version as this node's read model has it (the admin GET reads only the
    /// in-memory directory), or `None` if this node does not know the key.
    pub async fn version(&self, id: &str) -> Option<u64> {
        let response = self.get(&format!("/internal/v1/client-keys/{id}")).await;
        if response.status() != StatusCode::OK {
            return None;
        }
        let body: Value = response.json().await.expect("json");
        body["version"].as_u64()
    }

    /// Polls until this node has the key at `version` or later; panics after `timeout`.
    /// Returns how long it took.
    pub async fn wait_for_version(&self, id: &str, version: u64, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.version(id).await.is_some_and(|v| v >= version) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "node {} did not see {id} at version {version} within {timeout:?} (has {:?}):\n{}",
                self.name,
                self.version(id).await,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
