//! The one streaming fold of stored events into views. Start-up replay
//! ([`replay_all`]), the reload of one key after a gap ([`reload`]: the feed and the
//! command service) and the auditors' state at a past point ([`fold_key`]) all read the
//! store as a stream and push each event, by value, into a [`projections::Fold`]: the
//! same pure step the read models apply one event at a time. A long history is never
//! held in memory, and each key's view is rendered once, at the end of its history.

use futures::stream::{BoxStream, StreamExt};
use projections::{ApplyOutcome, ClientKeyView, Directory, Fold};

use crate::store::{RecordedEvent, Store, StoreError};

/// Folds every stored event into `directory`, one key at a time (the stream is ordered
/// by key, then sequence). Returns the number of events read.
pub async fn replay_all(store: &Store, directory: &Directory) -> Result<u64, StoreError> {
    fold_stream(
        store.replay_all(),
        |_| true,
        |id, fold| match fold.finish() {
            Some(view) => directory.replace(view),
            None => tracing::error!(
                aggregate_id = %id,
                "stored history does not start with a creation; key not served"
            ),
        },
    )
    .await
}

/// Rebuilds one key's view in `directory` from its full history (a gap: this node
/// missed an event).
pub async fn reload(
    store: &Store,
    directory: &Directory,
    aggregate_id: &str,
) -> Result<(), StoreError> {
    if let Some(view) = fold_key(store, aggregate_id, |_| true).await?.view {
        directory.replace(view);
    }
    Ok(())
}

/// Applies `events` (in the store's order) to `directory` one by one; a gap (an event
/// missing before the one at hand) reloads that key's whole history, which then also
/// covers its later events here.
pub async fn apply_in_order(
    store: &Store,
    directory: &Directory,
    events: &[RecordedEvent],
) -> Result<(), StoreError> {
    let mut reloaded: Vec<&str> = Vec::new();
    for recorded in events {
        if reloaded.contains(&recorded.aggregate_id.as_str()) {
            continue;
        }
        if let ApplyOutcome::Gap { have, got } = directory.apply(&recorded.to_stored()) {
            tracing::debug!(client_key = %recorded.aggregate_id, have, got, "gap; reloading the key");
            reload(store, directory, &recorded.aggregate_id).await?;
            reloaded.push(&recorded.aggregate_id);
        }
    }
    Ok(())
}

/// What one key's history folded into.
#[derive(Debug)]
pub struct KeyFold {
    /// Events read from the store, including the first one past the point (so zero
    /// means the key has no history at all).
    pub events_read: u64,
    /// The view after the last event within the point; `None` when no event was within
    /// it, or the history does not start with a creation.
    pub view: Option<ClientKeyView>,
}

/// Folds one key's history from its start for as long as `within` accepts its events
/// (an auditor's point in time, or the whole history).
pub async fn fold_key(
    store: &Store,
    aggregate_id: &str,
    within: impl FnMut(&RecordedEvent) -> bool,
) -> Result<KeyFold, StoreError> {
    let mut folded = None;
    let events_read = fold_stream(store.stream_history(aggregate_id), within, |_, fold| {
        folded = fold.finish();
    })
    .await?;
    Ok(KeyFold {
        events_read,
        view: folded,
    })
}

/// Folds `events` (ordered by key, then sequence) one key at a time, handing each key's
/// fold to `done` as soon as its history ends. Stops at the first event `within`
/// refuses. Returns the events read, the refused one included.
async fn fold_stream(
    mut events: BoxStream<'_, Result<RecordedEvent, StoreError>>,
    mut within: impl FnMut(&RecordedEvent) -> bool,
    mut done: impl FnMut(String, Fold),
) -> Result<u64, StoreError> {
    let mut current: Option<(String, Fold)> = None;
    let mut read = 0u64;
    while let Some(recorded) = events.next().await {
        let recorded = recorded?;
        read += 1;
        if !within(&recorded) {
            break;
        }
        match current.as_mut() {
            Some((id, fold)) if *id == recorded.aggregate_id => fold.push(recorded.into_stored()),
            _ => {
                if let Some((id, fold)) = current.take() {
                    done(id, fold);
                }
                let id = recorded.aggregate_id.clone();
                let mut fold = Fold::new();
                fold.push(recorded.into_stored());
                current = Some((id, fold));
            }
        }
    }
    if let Some((id, fold)) = current {
        done(id, fold);
    }
    Ok(read)
}
