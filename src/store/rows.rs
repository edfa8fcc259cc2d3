//! Rows of the events table into events: the columns every read selects, the decoding of
//! a row from either database, and upcasting. Every read of ours goes through here, so an
//! old `event_version` is upcast in one place.

use std::sync::LazyLock;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use domain::{ClientKey, ClientKeyEvent};
use serde::Deserialize;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{BoxError, EventMetadata, RecordedEvent, StoreError};

/// The domain's upcasters, for our own reads ([`RecordedEvent::decode`]); cqrs-es gets
/// its own list of the same upcasters in [`super::Store::open`].
static UPCASTERS: LazyLock<Vec<Box<dyn EventUpcaster>>> = LazyLock::new(domain::events::upcasters);

impl RecordedEvent {
    /// The one place stored events become domain events: older `event_version`s are
    /// upcast here, so every read of ours sees the current model.
    pub fn decode(serialized: SerializedEvent) -> Result<Self, StoreError> {
        let serialized = upcast(serialized);
        let corrupt = |source: BoxError| StoreError::Corrupt {
            aggregate_id: serialized.aggregate_id.clone(),
            sequence: serialized.sequence as u64,
            source,
        };
        // Deserializing from a borrowed `Value` spares a deep copy per event (replays of
        // a whole store go through here).
        let event =
            ClientKeyEvent::deserialize(&serialized.payload).map_err(|e| corrupt(Box::new(e)))?;
        let metadata =
            EventMetadata::deserialize(&serialized.metadata).map_err(|e| corrupt(Box::new(e)))?;
        Ok(Self {
            aggregate_id: serialized.aggregate_id,
            sequence: serialized.sequence as u64,
            event,
            metadata,
        })
    }
}

/// Applies the upcasters in order, as cqrs-es does on its loads.
fn upcast(serialized: SerializedEvent) -> SerializedEvent {
    UPCASTERS.iter().fold(serialized, |event, upcaster| {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            upcaster.upcast(event)
        } else {
            event
        }
    })
}

pub(crate) const COLUMNS: &str = "aggregate_id, sequence, event_type, event_version, \
     CAST(payload AS TEXT) AS payload, CAST(metadata AS TEXT) AS metadata";

/// Every event of every key, by key then sequence (the start-up replay, verify).
pub(crate) static REPLAY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence"
    )
});

/// One row of the events table, whichever database it came from, as stored.
pub(crate) fn decode_row<R>(row: &R) -> Result<SerializedEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |index: usize| row.try_get::<&str, _>(index).map_err(StoreError::from_sqlx);
    let aggregate_id = text(0)?;
    let sequence = row.try_get::<i64, _>(1).map_err(StoreError::from_sqlx)?;
    let parse = |index: usize| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(text(index)?).map_err(|e| StoreError::Corrupt {
            aggregate_id: aggregate_id.to_owned(),
            sequence: sequence as u64,
            source: Box::new(e),
        })
    };
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence: sequence as usize,
        aggregate_type: <ClientKey as cqrs_es::Aggregate>::TYPE.to_owned(),
        event_type: text(2)?.to_owned(),
        event_version: text(3)?.to_owned(),
        payload: parse(4)?,
        metadata: parse(5)?,
    })
}

/// One row decoded to the current model. An event stored at a version some upcaster
/// handles goes through [`RecordedEvent::decode`]; every other one (the common case, and
/// what long replays spend their time on) is parsed from the stored text directly, which
/// yields the same event without building a JSON tree first.
pub(crate) fn decode_recorded_row<R>(row: &R) -> Result<RecordedEvent, StoreError>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> &'r str: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let text = |index: usize| row.try_get::<&str, _>(index).map_err(StoreError::from_sqlx);
    let (event_type, event_version) = (text(2)?, text(3)?);
    if UPCASTERS
        .iter()
        .any(|upcaster| upcaster.can_upcast(event_type, event_version))
    {
        return decode_row(row).and_then(RecordedEvent::decode);
    }
    let aggregate_id = text(0)?;
    let sequence = row.try_get::<i64, _>(1).map_err(StoreError::from_sqlx)?;
    let corrupt = |e: serde_json::Error| StoreError::Corrupt {
        aggregate_id: aggregate_id.to_owned(),
        sequence: sequence as u64,
        source: Box::new(e),
    };
    Ok(RecordedEvent {
        event: serde_json::from_str(text(4)?).map_err(corrupt)?,
        metadata: serde_json::from_str(text(5)?).map_err(corrupt)?,
        aggregate_id: aggregate_id.to_owned(),
        sequence: sequence as u64,
    })
}
