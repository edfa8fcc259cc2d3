//! What every handler shares: the store, the read models, the command service, the
//! signing keys, settings and metrics, behind one `Arc`.

use std::sync::Arc;

use projections::Directory;

use crate::commands::CommandService;
use crate::config::{AdminCredential, Settings};
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tokens::SigningKeys;

/// What every handler can reach: one `Arc`, because axum clones the state for each
/// middleware and handler call, and a clone of many `Arc`s is many atomic operations on
/// the hot path.
#[derive(Debug, Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

#[derive(Debug)]
pub struct App {
    pub store: Arc<Store>,
    pub directory: Arc<Directory>,
    pub commands: CommandService,
    pub admin: Arc<AdminCredential>,
    pub settings: Arc<Settings>,
    pub tokens: Arc<SigningKeys>,
    pub metrics: Arc<Metrics>,
    /// Abuse limits on token minting (per node, in memory).
    pub limiter: Arc<RateLimiter>,
}
