//! How events reach this node's read models from the store: the start-up replay now;
//! the cross-node feed (LISTEN/NOTIFY wake-ups plus periodic catch-up) builds on it.

use futures::StreamExt;
use projections::{ClientKeyView, Directory, StoredEvent};

use crate::store::{Store, StoreError};

/// Folds every stored event into `directory`, one key at a time (the stream is ordered
/// by key, then sequence), rendering each key's view once at the end of its history.
/// Returns the number of events read.
pub async fn replay_all(store: &Store, directory: &Directory) -> Result<u64, StoreError> {
    let mut events = store.replay_all();
    let mut current: Vec<StoredEvent> = Vec::new();
    let mut count = 0u64;
    while let Some(recorded) = events.next().await {
        let recorded = recorded?;
        count += 1;
        if current
            .first()
            .is_some_and(|first| first.aggregate_id != recorded.aggregate_id)
        {
            install(directory, &current);
            current.clear();
        }
        current.push(recorded.to_stored());
    }
    install(directory, &current);
    Ok(count)
}

fn install(directory: &Directory, history: &[StoredEvent]) {
    if history.is_empty() {
        return;
    }
    match ClientKeyView::fold(history) {
        Some(view) => directory.replace(view),
        None => tracing::error!(
            aggregate_id = %history[0].aggregate_id,
            "stored history does not start with a creation; key not served"
        ),
    }
}
