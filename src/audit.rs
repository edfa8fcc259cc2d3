//! Auditors' reads: a key's full history with metadata, and its state at any past point
//! rebuilt by replaying that history through the same fold the read models use.

use chrono::{DateTime, Utc};
use projections::ClientKeyView;
use serde_json::{json, Value};

use crate::store::{RecordedEvent, Store, StoreError};

/// A past moment: right after an event, or as things stood at a time.
#[derive(Debug, Clone, Copy)]
pub enum Point {
    Sequence(u64),
    Time(DateTime<Utc>),
}

#[derive(Debug)]
pub enum StateAt {
    Found(Box<ClientKeyView>),
    UnknownKey,
    NotYetCreated,
}

/// One page of a key's events as API.md shapes it, or `None` for an unknown key.
pub async fn events_page(
    store: &Store,
    id: &str,
    after: u64,
    limit: u64,
) -> Result<Option<Value>, StoreError> {
    let mut events = store.history(id, after, Some(limit + 1)).await?;
    if events.is_empty() && store.history(id, 0, Some(1)).await?.is_empty() {
        return Ok(None);
    }
    let more = events.len() as u64 > limit;
    events.truncate(limit as usize);
    let next_after = if more {
        events.last().map(|e| e.sequence)
    } else {
        None
    };
    let events: Vec<Value> = events.iter().map(event_json).collect();
    Ok(Some(json!({ "events": events, "next_after": next_after })))
}

/// An event as auditors see it: the payload without the enum wrapper, the metadata
/// fields API.md lists.
pub fn event_json(recorded: &RecordedEvent) -> Value {
    let payload = match serde_json::to_value(&recorded.event) {
        Ok(Value::Object(mut wrapper)) => {
            wrapper.remove(recorded.event.name()).unwrap_or(Value::Null)
        }
        _ => Value::Null,
    };
    let metadata = &recorded.metadata;
    json!({
        "sequence": recorded.sequence,
        "type": recorded.event.name(),
        "payload": payload,
        "metadata": {
            "actor": metadata.actor,
            "at": metadata.at,
            "request_id": metadata.request_id,
            "reason": metadata.reason,
        },
    })
}

/// The key right after event N, or as it stood at a time, by replaying its history.
pub async fn state_at(store: &Store, id: &str, point: Point) -> Result<StateAt, StoreError> {
    let history = store.history(id, 0, None).await?;
    if history.is_empty() {
        return Ok(StateAt::UnknownKey);
    }
    let stored: Vec<_> = history
        .iter()
        .take_while(|e| match point {
            Point::Sequence(n) => e.sequence <= n,
            Point::Time(t) => e.metadata.at <= t,
        })
        .map(RecordedEvent::to_stored)
        .collect();
    Ok(match ClientKeyView::fold(&stored) {
        Some(view) => StateAt::Found(Box::new(view)),
        None => StateAt::NotYetCreated,
    })
}
