//! Settings: defaults, overridden by environment variables (API.md "Operating contract").
//! Secrets are typed so they never reach `Debug` output or logs. A bad value fails start-up
//! with a sentence naming the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::limits::TrustedProxies;

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Where browsers and customer backends connect (`WIDGET_AUTH_PUBLIC_ADDR`).
    pub public_addr: SocketAddr,
    /// Operators, auditors and metrics (`WIDGET_AUTH_INTERNAL_ADDR`); loopback by default.
    pub internal_addr: SocketAddr,
    /// `WIDGET_AUTH_ADMIN_TOKEN`; when `None` one is generated into the data dir.
    pub admin_token: Option<SecretString>,
    pub data_dir: PathBuf,
    pub signing_key_file: Option<PathBuf>,
    /// `DATABASE_URL`; may hold a password, hence secret.
    pub database_url: Option<SecretString>,
    /// `WIDGET_AUTH_RATE_LIMITS=off` turns the abuse limits off.
    pub rate_limits: bool,
    /// `WIDGET_AUTH_TRUSTED_PROXIES`: peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Most PostgreSQL connections this node opens (`WIDGET_AUTH_DB_MAX_CONNECTIONS`).
    pub db_max_connections: u32,
    /// `iss` of every token we mint and the only issuer we accept (`WIDGET_AUTH_ISSUER`).
    pub issuer: String,
    /// Connections served at once per listener (`WIDGET_AUTH_MAX_CONNECTIONS`); further
    /// ones wait in the accept queue.
    pub max_connections: usize,
    /// How long SIGTERM waits for in-flight requests (`WIDGET_AUTH_SHUTDOWN_GRACE_SECONDS`).
    pub shutdown_grace: Duration,
    /// The connection deadlines of API.md "Operating contract". Not environment
    /// variables: the contract fixes them; tests shorten them to stay fast.
    pub timeouts: ConnectionTimeouts,
    /// Where this node writes a signed audit checkpoint at start and then every
    /// `checkpoint_every` (`WIDGET_AUTH_CHECKPOINT_DIR`; unset: none written), for
    /// operators to ship off the machine.
    pub checkpoint_dir: Option<PathBuf>,
    /// `WIDGET_AUTH_CHECKPOINT_MINUTES`, 1 to 10080 (a week), default 60.
    pub checkpoint_every: std::time::Duration,
    /// `WIDGET_AUTH_SNAPSHOTS`: `off` makes the node replay every event at start and write
    /// no read-model snapshot (see `snapshot/mod.rs`).
    pub snapshots: bool,
    /// `WIDGET_AUTH_SNAPSHOT_MINUTES`, 1 to 10080, default 15: how often a node writes a
    /// read-model snapshot (skipped when the store's newest one is younger).
    pub snapshot_every: std::time::Duration,
}

/// How long a client may take, per connection (API.md "Operating contract").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// From a new connection, or from the first byte of a later request, to the end of
    /// that request's head.
    pub request_head: Duration,
    /// From the end of a request's head to its answer, the body included.
    pub whole_request: Duration,
    /// How long a kept-alive connection may sit between an answer and the next request.
    pub idle_keep_alive: Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        Self {
            request_head: Duration::from_secs(10),
            whole_request: Duration::from_secs(30),
            idle_keep_alive: Duration::from_secs(60),
        }
    }
}

/// Shortest `WIDGET_AUTH_ADMIN_TOKEN` accepted (a generated one is 256 random bits).
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn database_url_str(&self) -> Option<&str> {
        self.database_url.as_ref().map(ExposeSecret::expose_secret)
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let addr = |variable: &'static str, default: &str| -> Result<SocketAddr, ConfigError> {
            get(variable)
                .as_deref()
                .unwrap_or(default)
                .parse()
                .map_err(|e| ConfigError {
                    variable,
                    problem: format!("not a socket address like 127.0.0.1:8080 ({e})"),
                })
        };
        let rate_limits = match get("WIDGET_AUTH_RATE_LIMITS").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(ConfigError {
                    variable: "WIDGET_AUTH_RATE_LIMITS",
                    problem: format!("must be `on` or `off`, not `{other}`"),
                })
            }
        };
        let snapshots = match get("WIDGET_AUTH_SNAPSHOTS").as_deref() {
            None | Some("on") => true,
            Some("off") => false,
            Some(other) => {
                return Err(ConfigError {
                    variable: "WIDGET_AUTH_SNAPSHOTS",
                    problem: format!("must be `on` or `off`, not `{other}`"),
                })
            }
        };
        let number = |variable: &'static str,
                      default: u64,
                      bounds: std::ops::RangeInclusive<u64>| {
            match get(variable) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| bounds.contains(n))
                    .ok_or_else(|| ConfigError {
                        variable,
                        problem: format!(
                            "must be a number from {} to {}, not `{value}`",
                            bounds.start(),
                            bounds.end()
                        ),
                    }),
            }
        };
        let admin_token = get("WIDGET_AUTH_ADMIN_TOKEN");
        if let Some(token) = &admin_token {
            if token.chars().count() < MIN_ADMIN_TOKEN_CHARS {
                return Err(ConfigError {
                    variable: "WIDGET_AUTH_ADMIN_TOKEN",
                    problem: format!(
                        "must be at least {MIN_ADMIN_TOKEN_CHARS} characters long (it has {}); unset it to have one generated",
                        token.chars().count()
                    ),
                });
            }
        }
        Ok(Self {
            public_addr: addr("WIDGET_AUTH_PUBLIC_ADDR", "0.0.0.0:8080")?,
            internal_addr: addr("WIDGET_AUTH_INTERNAL_ADDR", "127.0.0.1:8081")?,
            admin_token: admin_token.map(SecretString::from),
            data_dir: get("WIDGET_AUTH_DATA_DIR")
                .map_or_else(|| PathBuf::from("./data"), PathBuf::from),
            signing_key_file: get("WIDGET_AUTH_SIGNING_KEY_FILE").map(PathBuf::from),
            database_url: get("DATABASE_URL").map(SecretString::from),
            rate_limits,
            trusted_proxies: match get("WIDGET_AUTH_TRUSTED_PROXIES") {
                None => TrustedProxies::default(),
                Some(value) => TrustedProxies::parse(&value).map_err(|problem| ConfigError {
                    variable: "WIDGET_AUTH_TRUSTED_PROXIES",
                    problem: format!("must be comma-separated IP addresses or CIDRs: {problem}"),
                })?,
            },
            db_max_connections: match get("WIDGET_AUTH_DB_MAX_CONNECTIONS") {
                None => crate::store::DEFAULT_PG_CONNECTIONS,
                Some(value) => value
                    .parse()
                    .ok()
                    .filter(|n| (2..=1000).contains(n))
                    .ok_or_else(|| ConfigError {
                        variable: "WIDGET_AUTH_DB_MAX_CONNECTIONS",
                        problem: format!("must be a number from 2 to 1000, not `{value}`"),
                    })?,
            },
            issuer: get("WIDGET_AUTH_ISSUER").unwrap_or_else(|| "widget-auth".to_owned()),
            max_connections: usize::try_from(number(
                "WIDGET_AUTH_MAX_CONNECTIONS",
                10_000,
                1..=1_000_000,
            )?)
            .unwrap_or(usize::MAX),
            shutdown_grace: Duration::from_secs(number(
                "WIDGET_AUTH_SHUTDOWN_GRACE_SECONDS",
                10,
                0..=3600,
            )?),
            timeouts: ConnectionTimeouts::default(),
            checkpoint_dir: get("WIDGET_AUTH_CHECKPOINT_DIR").map(PathBuf::from),
            checkpoint_every: match get("WIDGET_AUTH_CHECKPOINT_MINUTES") {
                None => std::time::Duration::from_secs(60 * 60),
                Some(value) => value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=10_080).contains(n))
                    .map(|minutes| std::time::Duration::from_secs(minutes * 60))
                    .ok_or_else(|| ConfigError {
                        variable: "WIDGET_AUTH_CHECKPOINT_MINUTES",
                        problem: format!(
                            "must be a number of minutes from 1 to 10080, not `{value}`"
                        ),
                    })?,
            },
            snapshots,
            snapshot_every: Duration::from_secs(
                60 * number("WIDGET_AUTH_SNAPSHOT_MINUTES", 15, 1..=10_080)?,
            ),
        })
    }
}

/// The admin bearer token as the server holds it: only its hash, compared in constant
/// time, and the actor name events record for it (derived from the hash, so auditors can
/// tell credentials apart without ever seeing one).
pub struct AdminCredential {
    hash: [u8; 32],
    actor: String,
}

impl std::fmt::Debug for AdminCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredential")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

impl AdminCredential {
    pub fn new(token: &SecretString) -> Self {
        let hash: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
        let actor = format!("admin:{}", &hex::encode(hash)[..12]);
        Self { hash, actor }
    }

    pub fn verify(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.hash).into()
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }
}

/// File name of the generated admin token inside the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// File name of the signing key generated inside the data dir (embedded mode, when
/// `WIDGET_AUTH_SIGNING_KEY_FILE` is unset).
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";

impl Settings {
    /// `WIDGET_AUTH_ADMIN_TOKEN`, or the token saved in the data dir, generated (mode
    /// 0600) on first start. Returns the path when the token came from the file so the
    /// caller can say where it is (never the token itself).
    pub fn resolve_admin_token(&self) -> Result<(SecretString, Option<PathBuf>), ConfigError> {
        if let Some(token) = &self.admin_token {
            return Ok((token.clone(), None));
        }
        let problem = |what: &str, e: std::io::Error| ConfigError {
            variable: "WIDGET_AUTH_DATA_DIR",
            problem: format!(
                "{what} {}: {e}",
                path_display(&self.data_dir.join(ADMIN_TOKEN_FILE))
            ),
        };
        let path = self.data_dir.join(ADMIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                return Ok((SecretString::from(text.trim().to_owned()), Some(path)))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(problem("cannot read", e)),
        }
        crate::store::files::private_dir(&self.data_dir)
            .map_err(|e| problem("cannot create the directory of", e))?;
        let token: String = {
            use rand::Rng;
            let random: String = rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(40)
                .map(char::from)
                .collect();
            format!("wa_admin_{random}")
        };
        write_private(&path, token.as_bytes()).map_err(|e| problem("cannot write", e))?;
        Ok((SecretString::from(token), Some(path)))
    }
}

fn path_display(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Creates `path` readable by its owner only, refusing to overwrite an existing file.
pub fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn no_environment_gives_the_documented_defaults() {
        let s = settings(&[]).expect("defaults are valid");
        assert_eq!(s.public_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(s.internal_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert!(s.admin_token.is_none() && s.database_url.is_none() && s.rate_limits);
    }

    #[test]
    fn connection_limits_default_to_the_contract_and_refuse_nonsense() {
        let s = settings(&[]).expect("defaults are valid");
        assert_eq!(s.max_connections, 10_000);
        assert_eq!(s.shutdown_grace, Duration::from_secs(10));
        assert_eq!(s.timeouts.request_head, Duration::from_secs(10));
        assert_eq!(s.timeouts.whole_request, Duration::from_secs(30));
        assert_eq!(s.timeouts.idle_keep_alive, Duration::from_secs(60));
        let s = settings(&[
            ("WIDGET_AUTH_MAX_CONNECTIONS", "50"),
            ("WIDGET_AUTH_SHUTDOWN_GRACE_SECONDS", "0"),
        ])
        .expect("valid");
        assert_eq!((s.max_connections, s.shutdown_grace), (50, Duration::ZERO));
        let err = settings(&[("WIDGET_AUTH_MAX_CONNECTIONS", "0")]).unwrap_err();
        assert_eq!(err.variable, "WIDGET_AUTH_MAX_CONNECTIONS");
        let err = settings(&[("WIDGET_AUTH_SHUTDOWN_GRACE_SECONDS", "soon")]).unwrap_err();
        assert_eq!(err.variable, "WIDGET_AUTH_SHUTDOWN_GRACE_SECONDS");
    }

    #[test]
    fn a_short_admin_token_is_refused_naming_the_variable() {
        let err = settings(&[("WIDGET_AUTH_ADMIN_TOKEN", "a")]).unwrap_err();
        assert_eq!(err.variable, "WIDGET_AUTH_ADMIN_TOKEN");
        assert!(err.to_string().contains("at least 32 characters"), "{err}");
        assert!(
            !err.to_string().contains("`a`"),
            "the token is never echoed: {err}"
        );
        let ok = "x".repeat(32);
        assert!(settings(&[("WIDGET_AUTH_ADMIN_TOKEN", &ok)]).is_ok());
    }

    #[test]
    fn a_bad_address_names_the_variable() {
        let err = settings(&[("WIDGET_AUTH_INTERNAL_ADDR", "localhost")]).unwrap_err();
        assert_eq!(err.variable, "WIDGET_AUTH_INTERNAL_ADDR");
        assert!(err.to_string().starts_with("WIDGET_AUTH_INTERNAL_ADDR: "));
    }

    #[test]
    fn snapshots_can_be_turned_off_and_their_interval_set() {
        let defaults = settings(&[]).expect("valid");
        assert!(defaults.snapshots);
        assert_eq!(defaults.snapshot_every.as_secs(), 15 * 60);
        let set = settings(&[
            ("WIDGET_AUTH_SNAPSHOTS", "off"),
            ("WIDGET_AUTH_SNAPSHOT_MINUTES", "5"),
        ])
        .expect("valid");
        assert!(!set.snapshots);
        assert_eq!(set.snapshot_every.as_secs(), 300);
        assert!(settings(&[("WIDGET_AUTH_SNAPSHOTS", "sometimes")]).is_err());
        for bad in ["0", "10081", "often"] {
            let err = settings(&[("WIDGET_AUTH_SNAPSHOT_MINUTES", bad)]).expect_err(bad);
            assert!(
                err.to_string().contains("WIDGET_AUTH_SNAPSHOT_MINUTES"),
                "{err}"
            );
        }
    }

    #[test]
    fn rate_limits_can_be_turned_off_and_nothing_else() {
        assert!(
            !settings(&[("WIDGET_AUTH_RATE_LIMITS", "off")])
                .expect("valid")
                .rate_limits
        );
        assert!(settings(&[("WIDGET_AUTH_RATE_LIMITS", "maybe")]).is_err());
    }

    #[test]
    fn trusted_proxies_are_ips_or_cidrs_and_a_bad_entry_names_the_variable() {
        assert!(settings(&[]).expect("valid").trusted_proxies.is_empty());
        let s =
            settings(&[("WIDGET_AUTH_TRUSTED_PROXIES", "172.16.0.0/12, 10.0.0.5")]).expect("valid");
        assert_eq!(
            s.trusted_proxies,
            TrustedProxies::parse("172.16.0.0/12,10.0.0.5").expect("valid")
        );
        let err = settings(&[("WIDGET_AUTH_TRUSTED_PROXIES", "10.0.0.0/8,balancer")]).unwrap_err();
        assert_eq!(err.variable, "WIDGET_AUTH_TRUSTED_PROXIES");
        assert!(err.to_string().contains("`balancer`"), "{err}");
    }

    #[test]
    fn secrets_do_not_appear_in_debug_output() {
        let s = settings(&[
            (
                "WIDGET_AUTH_ADMIN_TOKEN",
                "admin-token-value-long-enough-for-32",
            ),
            ("DATABASE_URL", "postgres://u:hunter2@db/x"),
        ])
        .expect("valid");
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("admin-token-value-long-enough-for-32") && !debug.contains("hunter2"),
            "{debug}"
        );
        assert_eq!(
            s.admin_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned())
                .as_deref(),
            Some("admin-token-value-long-enough-for-32")
        );
    }

    #[test]
    fn checkpoints_are_written_only_with_a_dir_and_every_hour_unless_told() {
        let defaults = settings(&[]).expect("valid");
        assert_eq!(defaults.checkpoint_dir, None);
        assert_eq!(defaults.checkpoint_every.as_secs(), 3600);
        let set = settings(&[
            ("WIDGET_AUTH_CHECKPOINT_DIR", "/var/lib/checkpoints"),
            ("WIDGET_AUTH_CHECKPOINT_MINUTES", "15"),
        ])
        .expect("valid");
        assert_eq!(
            set.checkpoint_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/checkpoints"))
        );
        assert_eq!(set.checkpoint_every.as_secs(), 900);
        for bad in ["0", "10081", "often"] {
            let err = settings(&[("WIDGET_AUTH_CHECKPOINT_MINUTES", bad)]).expect_err(bad);
            assert!(
                err.to_string().contains("WIDGET_AUTH_CHECKPOINT_MINUTES"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_generated_admin_token_is_saved_owner_only_and_reused() {
        let dir = std::env::temp_dir().join(format!("wa-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Settings {
            data_dir: dir.clone(),
            ..settings(&[]).expect("valid")
        };
        let (first, path) = s.resolve_admin_token().expect("generated");
        let path = path.expect("came from the file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, _) = s.resolve_admin_token().expect("reused");
        assert_eq!(first.expose_secret(), second.expose_secret());
        assert!(first.expose_secret().starts_with("wa_admin_"));
        let credential = AdminCredential::new(&first);
        assert!(credential.verify(first.expose_secret()));
        assert!(!credential.verify("wa_admin_wrong"));
        assert!(!format!("{credential:?}").contains(first.expose_secret()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
