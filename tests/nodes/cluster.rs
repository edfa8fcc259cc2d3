//! A throwaway PostgreSQL cluster (initdb + pg_ctl into a temp dir, on a free loopback
//! port) that a test may stop and start at will without disturbing the shared server.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::common::{free_port, PG_BINDIR};

#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    data: PathBuf,
    pub port: u16,
    /// initdb refuses to run as root; then the cluster belongs to the `postgres` user.
    run_as_postgres: bool,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl Cluster {
    /// initdb and start; blocks (a second or two).
    pub fn start() -> Self {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let root = std::env::temp_dir().join(format!("wa-pg-{}", &unique[..12]));
        std::fs::create_dir_all(&root).expect("create cluster dir");
        let run_as_postgres = is_root();
        if run_as_postgres {
            let chown = Command::new("chown")
                .args(["postgres:", root.to_str().expect("utf-8 path")])
                .status()
                .expect("chown runs");
            assert!(chown.success(), "chown the cluster dir to postgres");
        }
        let data = root.join("data");
        let mut cluster = Self {
            root,
            data,
            port: 0,
            run_as_postgres,
        };
        let data = cluster.data.to_str().expect("utf-8 path").to_owned();
        let out = cluster.pg(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", describe(&out));
        // A port taken between picking and binding is retried with another.
        for _ in 0..5 {
            cluster.port = free_port();
            if cluster.try_start() {
                return cluster;
            }
        }
        panic!("PostgreSQL did not start: {}", cluster.log());
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg(&self, tool: &str, args: &[&str]) -> Output {
        let program = PG_BINDIR.join(tool);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|e| panic!("PostgreSQL tools in {}: {e}", PG_BINDIR.display()))
    }

    fn try_start(&self) -> bool {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={} \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.root.display()
        );
        let log = self.root.join("postgres.log");
        self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().expect("utf-8"),
                "-o",
                &options,
                "-l",
                log.to_str().expect("utf-8"),
                "-w",
                "-t",
                "30",
                "start",
            ],
        )
        .status
        .success()
    }

    /// Starts it again on the same port, after [`Cluster::stop`].
    pub fn restart(&self) {
        assert!(self.try_start(), "PostgreSQL restarts: {}", self.log());
    }

    /// Fast shutdown: open connections are terminated, as when a database is stopped
    /// for maintenance.
    pub fn stop(&self) {
        let out = self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().expect("utf-8"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", describe(&out));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn describe(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
