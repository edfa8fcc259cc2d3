//! Starting and stopping the service: open the store, apply migrations, load the signing
//! keys, bind both listeners, build the read models in the background from the newest
//! snapshot and the events after it, or every event (`/readyz` turns 200 when that is
//! done), then on PostgreSQL run the cross-node feed ([`crate::feed`]) and write
//! snapshots periodically ([`crate::snapshot`]); [`serve`] is [`start`] plus waiting for
//! SIGTERM or Ctrl-C and shutting down gracefully (with a last snapshot).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use domain::{ClientKeyServices, Clock, SystemClock};
use projections::Directory;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::commands::CommandService;
use crate::config::{AdminCredential, Settings, SIGNING_KEY_FILE};
use crate::limits::RateLimiter;
use crate::state::{App, AppState};
use crate::store::Store;
use crate::tokens::SigningKeys;
use crate::{audit, connections, feed, http, ledger, snapshot, snapshotting};

/// How long start-up waits for the database (a container starting next to us).
const STORE_WAIT: Duration = Duration::from_secs(30);

/// A started server: its bound addresses, and the handle to stop it.
#[derive(Debug)]
pub struct RunningApp {
    pub public_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    pub admin_token: SecretString,
    pub state: AppState,
    /// The position the read models reflect (the shutdown snapshot records it).
    applied: snapshot::Applied,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningApp {
    /// Waits until the read models are built (or `timeout` passes).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.state.directory.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Stops accepting connections, lets in-flight requests finish for at most
    /// `WIDGET_AUTH_SHUTDOWN_GRACE_SECONDS` and closes what is left, writes a read-model
    /// snapshot (unless `WIDGET_AUTH_SNAPSHOTS=off`, the read models were never built, or
    /// the store's newest already reflects this position), then closes the store.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if self.state.settings.snapshots && self.state.directory.is_ready() {
            let written = snapshotting::write_at_shutdown(
                &self.state.store,
                &self.state.commands,
                &self.applied,
            )
            .await;
            if let Err(err) = written {
                tracing::warn!(error = %err, "no read-model snapshot written at shutdown");
            }
        }
        self.state.store.close().await;
    }
}

/// Starts the service on `settings`. Commands take their time from `clock` (the system
/// clock in production; tests pass one they move, instead of sleeping between commands).
pub async fn start(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<RunningApp> {
    let (admin_token, token_path) = settings.resolve_admin_token()?;
    if let Some(path) = token_path {
        tracing::info!(path = %path.display(), "admin token file (WIDGET_AUTH_ADMIN_TOKEN is unset)");
    }
    let tokens = Arc::new(load_signing_keys(&settings)?);
    let store = Arc::new(
        Store::open_with_pool(
            settings.database_url_str(),
            &settings.data_dir,
            settings.db_max_connections,
        )
        .await
        .context("opening the event store")?,
    );
    migrate_when_reachable(&store).await?;
    let directory = Arc::new(Directory::new());
    let services = ClientKeyServices::new(clock);
    let state = AppState::new(App {
        store: store.clone(),
        directory: directory.clone(),
        commands: CommandService::new(store.clone(), directory.clone(), services),
        admin: Arc::new(AdminCredential::new(&admin_token)),
        settings: Arc::new(settings.clone()),
        tokens,
        metrics: Arc::default(),
        limiter: Arc::new(RateLimiter::new(settings.rate_limits)),
    });
    let metrics = state.metrics.clone();

    let public = TcpListener::bind(settings.public_addr)
        .await
        .with_context(|| format!("binding WIDGET_AUTH_PUBLIC_ADDR {}", settings.public_addr))?;
    let internal = TcpListener::bind(settings.internal_addr)
        .await
        .with_context(|| {
            format!(
                "binding WIDGET_AUTH_INTERNAL_ADDR {}",
                settings.internal_addr
            )
        })?;
    let public_addr = public.local_addr()?;
    let internal_addr = internal.local_addr()?;
    let (shutdown, _) = watch::channel(false);
    let limits = connections::Limits::of(&settings);
    let mut tasks = vec![
        tokio::spawn(connections::serve(
            "public",
            public,
            http::public::router(state.clone()),
            limits,
            shutdown.subscribe(),
        )),
        tokio::spawn(connections::serve(
            "internal",
            internal,
            http::internal::router(state.clone()),
            limits,
            shutdown.subscribe(),
        )),
    ];
    tracing::info!(%public_addr, %internal_addr, store = store.kind(), "listening");

    // Listeners are up (so probes answer) before the replay; /readyz says 503 until done.
    // Then, on PostgreSQL, the cross-node feed keeps the read models current.
    let applied = snapshot::Applied::default();
    tasks.extend(feed::spawn(
        store.clone(),
        directory.clone(),
        feed::Reports {
            lag: metrics.projection_lag(),
            snapshots: metrics.snapshots(),
            applied: applied.clone(),
            use_snapshots: settings.snapshots,
        },
        shutdown.subscribe(),
    ));
    if settings.snapshots {
        tasks.push(tokio::spawn(snapshotting::keep_snapshotting(
            store.clone(),
            state.commands.clone(),
            applied.clone(),
            metrics.snapshots(),
            settings.snapshot_every,
            shutdown.subscribe(),
        )));
    }
    tasks.push(tokio::spawn(crate::metrics::keep_drained(
        metrics,
        shutdown.subscribe(),
    )));

    tasks.push(tokio::spawn(ledger::keep_pruned(
        state.store.clone(),
        shutdown.subscribe(),
    )));
    if let Some(dir) = settings.checkpoint_dir.clone() {
        tasks.push(tokio::spawn(audit::periodic::keep_checkpointing(
            state.store.clone(),
            state.tokens.clone(),
            dir,
            settings.checkpoint_every,
            shutdown.subscribe(),
        )));
    }

    Ok(RunningApp {
        public_addr,
        internal_addr,
        admin_token,
        state,
        applied,
        shutdown,
        tasks,
    })
}

/// `WIDGET_AUTH_SIGNING_KEY_FILE`, or in embedded mode a key generated into the data dir.
/// With PostgreSQL the file is required: several nodes must sign with one key, and a key
/// generated per node would make each node's tokens unverifiable on the others.
fn load_signing_keys(settings: &Settings) -> anyhow::Result<SigningKeys> {
    if let Some(path) = &settings.signing_key_file {
        return SigningKeys::load(path).context("WIDGET_AUTH_SIGNING_KEY_FILE");
    }
    let postgres = settings
        .database_url_str()
        .is_some_and(|url| url.starts_with("postgres://") || url.starts_with("postgresql://"));
    if postgres {
        anyhow::bail!(
            "WIDGET_AUTH_SIGNING_KEY_FILE must be set when DATABASE_URL is PostgreSQL: every node must sign with the same key"
        );
    }
    crate::store::files::private_dir(&settings.data_dir).with_context(|| {
        format!(
            "creating WIDGET_AUTH_DATA_DIR {}",
            settings.data_dir.display()
        )
    })?;
    let path = settings.data_dir.join(SIGNING_KEY_FILE);
    let keys = SigningKeys::load_or_generate(&path).context("signing key in the data dir")?;
    tracing::info!(path = %path.display(), kid = keys.active_kid(), "signing key");
    Ok(keys)
}

async fn migrate_when_reachable(store: &Store) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STORE_WAIT;
    loop {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(err) if err.is_unavailable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "store not reachable yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err).context("applying migrations"),
        }
    }
}

/// Runs until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = start(settings, Arc::new(SystemClock)).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
