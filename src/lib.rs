//! widget-auth: the backend an embeddable chat widget talks to before it opens its
//! realtime connection.
//!
//! [`start`] opens the store, binds both listeners, and replays the event history into
//! the read models in the background; `/readyz` turns 200 when that replay is done.
//! [`serve`] is `start` plus waiting for SIGTERM or Ctrl-C and shutting down gracefully.

pub mod audit;
pub mod chain;
pub mod cli;
pub mod commands;
pub mod config;
pub mod feed;
pub mod http;
pub mod store;
pub mod telemetry;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use domain::{ClientKeyServices, SystemClock};
use projections::Directory;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::commands::CommandService;
use crate::config::{AdminCredential, Settings};
use crate::store::Store;

/// How long start-up waits for the database (a container starting next to us).
const STORE_WAIT: Duration = Duration::from_secs(30);

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub directory: Arc<Directory>,
    pub commands: CommandService,
    pub admin: Arc<AdminCredential>,
    pub settings: Arc<Settings>,
}

/// A started server: its bound addresses, and the handle to stop it.
#[derive(Debug)]
pub struct RunningApp {
    pub public_addr: SocketAddr,
    pub internal_addr: SocketAddr,
    pub admin_token: SecretString,
    pub state: AppState,
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

    /// Stops accepting connections, lets in-flight requests finish, closes the store.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.state.store.close().await;
    }
}

pub async fn start(settings: Settings) -> anyhow::Result<RunningApp> {
    let (admin_token, token_path) = settings.resolve_admin_token()?;
    if let Some(path) = token_path {
        tracing::info!(path = %path.display(), "admin token file (WIDGET_AUTH_ADMIN_TOKEN is unset)");
    }
    let store = Arc::new(
        Store::open(settings.database_url_str(), &settings.data_dir)
            .await
            .context("opening the event store")?,
    );
    migrate_when_reachable(&store).await?;
    let directory = Arc::new(Directory::new());
    let services = ClientKeyServices::new(Arc::new(SystemClock));
    let state = AppState {
        store: store.clone(),
        directory: directory.clone(),
        commands: CommandService::new(store.clone(), directory.clone(), services),
        admin: Arc::new(AdminCredential::new(&admin_token)),
        settings: Arc::new(settings.clone()),
    };

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
    let mut tasks = Vec::new();
    for (name, listener, router) in [
        ("public", public, http::public_router(state.clone())),
        ("internal", internal, http::internal::router(state.clone())),
    ] {
        let mut stop = shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            let graceful = async move {
                let _ = stop.wait_for(|stopped| *stopped).await;
            };
            if let Err(err) = axum::serve(listener, router)
                .with_graceful_shutdown(graceful)
                .await
            {
                tracing::error!(listener = name, error = %err, "listener failed");
            }
        }));
    }
    tracing::info!(%public_addr, %internal_addr, store = store.kind(), "listening");

    // Listeners are up (so probes answer) before the replay; /readyz says 503 until done.
    tasks.push(tokio::spawn(async move {
        let started = std::time::Instant::now();
        loop {
            match feed::replay_all(&store, &directory).await {
                Ok(events) => {
                    directory.mark_ready();
                    tracing::info!(
                        events,
                        keys = directory.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "read models ready"
                    );
                    return;
                }
                Err(err) => {
                    tracing::error!(error = %err, "replaying events failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }));

    Ok(RunningApp {
        public_addr,
        internal_addr,
        admin_token,
        state,
        shutdown,
        tasks,
    })
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
    let app = start(settings).await?;
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
