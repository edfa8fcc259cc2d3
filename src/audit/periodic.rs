//! A node writing signed checkpoints on its own (`WIDGET_AUTH_CHECKPOINT_DIR`): one at
//! start, then one every `WIDGET_AUTH_CHECKPOINT_MINUTES`, each a file operators ship off
//! the machine (a checkpoint kept where an attacker writes proves nothing).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::CheckpointError;
use crate::store::Store;
use crate::tokens::SigningKeys;

/// Writes a checkpoint now and then every `every` into `dir` until `stop`. A broken
/// chain is logged as an error and no file written (a checkpoint must not vouch for it);
/// an unreachable store is retried at the next tick.
pub async fn keep_checkpointing(
    store: Arc<Store>,
    keys: Arc<SigningKeys>,
    dir: PathBuf,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        match write_one(&store, &keys, &dir).await {
            Ok(path) => tracing::info!(path = %path.display(), "wrote an audit checkpoint"),
            Err(WriteError::Refused(refused)) => {
                tracing::error!(error = %refused, "no audit checkpoint written");
            }
            Err(WriteError::Io(err)) => tracing::error!(
                dir = %dir.display(),
                error = %err,
                "could not write the audit checkpoint (WIDGET_AUTH_CHECKPOINT_DIR)"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Refused(#[from] CheckpointError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `checkpoint-<at>.json`, written to a temporary name and renamed, so a reader (the
/// operators' shipper) never sees half a file.
async fn write_one(store: &Store, keys: &SigningKeys, dir: &Path) -> Result<PathBuf, WriteError> {
    let checkpoint = super::checkpoint(store, keys, Utc::now()).await?;
    let json = serde_json::to_vec(&checkpoint).map_err(std::io::Error::other)?;
    let name = format!("checkpoint-{}.json", checkpoint.at.replace(':', "-"));
    let path = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(&partial, json)?;
        std::fs::File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, &path)?;
        Ok::<_, std::io::Error>(path)
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(WriteError::Io)
}
