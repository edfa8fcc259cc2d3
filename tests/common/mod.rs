//! What both black-box test binaries (`tests/api`, `tests/nodes`) need from the machine:
//! free loopback ports, the shared PostgreSQL server, PostgreSQL's own tools, and fresh
//! databases on that server that go away when the test does, also when it fails.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::path::PathBuf;
use std::process::Command;
use std::sync::{LazyLock, Mutex};

use sqlx::Connection;

/// A loopback port nothing listens on right now (for servers that must be told a port
/// before they start: the real binary, a throwaway PostgreSQL cluster).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The shared PostgreSQL server; tests create databases of their own on it.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The directory of PostgreSQL's server tools (`initdb`, `pg_ctl`), as the installed
/// `pg_config` reports it, so the tests follow whatever version the machine has.
pub static PG_BINDIR: LazyLock<PathBuf> = LazyLock::new(|| {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|dir| dir.join("initdb").exists());
    // Debian's `pg_config` (from libpq-dev) may be absent or name the client's bin
    // directory; the server tools then live in the newest /usr/lib/postgresql/<v>/bin.
    from_pg_config
        .or_else(|| {
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
                .filter(|bin| bin.join("initdb").exists())
                .collect();
            versions.sort();
            versions.pop()
        })
        .expect("PostgreSQL's initdb: set PG_BINDIR or install the server")
});

/// A fresh database on the shared server, dropped when the last handle to it goes
/// (normally at the end of the test, and also while a failing test unwinds).
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    dropped: Mutex<bool>,
}

impl TestDatabase {
    pub async fn create(prefix: &str) -> Self {
        let admin = postgres_admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL is running for the tests");
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base)
            .to_owned();
        Self {
            url: format!("{base}/{name}"),
            name,
            dropped: Mutex::new(false),
        }
    }

    /// Drops the database now (its servers' connections are cut: `WITH (FORCE)`).
    pub async fn drop_now(&self) {
        if !std::mem::replace(
            &mut *self.dropped.lock().unwrap_or_else(|e| e.into_inner()),
            true,
        ) {
            drop_database(&self.name).await;
        }
    }
}

async fn drop_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::mem::replace(
            self.dropped.get_mut().unwrap_or_else(|e| e.into_inner()),
            true,
        ) {
            return;
        }
        // Drop cannot await, and it may run inside the test's runtime: a thread of its
        // own with a runtime of its own does the async work and is waited for.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(drop_database(&name));
            }
        })
        .join();
    }
}
