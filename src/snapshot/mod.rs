//! Read-model snapshots: every key's view and the position in the event order they
//! reflect, stored in the event store's database (so every node can start from one),
//! and loaded at start-up so a node replays only the events after it (`feed/mod.rs`).
//!
//! **The position.** A snapshot is only as good as the promise "every event up to here is
//! in these views". On PostgreSQL that is the feed's transaction-aware cursor (see
//! `feed/mod.rs`: a bare global position could pass an event whose transaction has not
//! committed yet), published by the feed only after it applied everything up to it
//! ([`Applied`]). On SQLite (one writer) it is the events table's rowid, read while every
//! command of this node is paused between its commit and its read-model update
//! ([`crate::commands::CommandService::paused`]), so nothing at or below it is still on
//! its way into the views. Views are read after the position, so they may hold later
//! events too; replaying after the position applies those again, which the directory
//! ignores by version.
//!
//! **Writing** ([`write`]): a header, then chunks of [`format::CHUNK_KEYS`] keys in id
//! order, each its own statement (bounded memory, and no long transaction holding back
//! the feed's high-water mark), then the header is sealed with the digest. Only sealed
//! snapshots load. The newest [`KEEP`] are kept. Nodes write every
//! `WIDGET_AUTH_SNAPSHOT_MINUTES` (skipped when the store's newest is younger, whoever
//! wrote it, or nothing happened since), on clean shutdown, and on
//! `widget-auth snapshot`.
//!
//! **Loading** ([`load`]): the newest sealed snapshot is used only if it is of
//! [`format::FORMAT_VERSION`], every chunk is there and decodes, the digest matches, its
//! position is not ahead of the store, and for every key the stored event at the
//! recorded version carries the recorded chain link (`chain.rs`), checked one query per
//! chunk. Anything else is [`Unusable`]: the node logs a `warn` and replays every event.
//! Nothing is installed before the whole snapshot passed.

pub mod format;
mod sql;

use std::sync::{Arc, Mutex};

use projections::{ClientKeyView, Directory};

pub use self::format::Position;
use self::format::{Digest, Header, CHUNK_KEYS, FORMAT_VERSION};
use crate::store::{Store, StoreError};

/// Sealed snapshots kept in the store; older ones are deleted after each write.
pub const KEEP: i64 = 3;

/// Events per read while replaying after a snapshot on SQLite.
const AFTER_BATCH: u32 = 1000;

/// SQLite: the events after rowid `after`, a batch at a time, with the last rowid read.
pub(crate) async fn sqlite_after(
    store: &Store,
    after: i64,
) -> Result<(Vec<crate::store::RecordedEvent>, Option<i64>), StoreError> {
    sql::sqlite_after(store, after, AFTER_BATCH).await
}

/// SQLite: the newest event's rowid, the position a replay of everything reflects.
/// The newest sealed snapshot's header, if any.
pub(crate) async fn newest(store: &Store) -> Result<Option<sql::Sealed>, StoreError> {
    sql::newest(store).await
}

pub(crate) async fn sqlite_head(store: &Store) -> Result<i64, StoreError> {
    sql::sqlite_head(store).await
}

/// An unsealed snapshot older than this was left by a writer that died; it is deleted.
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::hours(1);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the read-model snapshot cannot be used: {0}")]
    Unusable(#[from] Unusable),
    /// The read models are not built yet (no position to record).
    #[error("the read models are not built yet")]
    NotReady,
}

/// Why a stored snapshot is not used (the node replays every event instead).
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("format version {found}, this build reads {FORMAT_VERSION}")]
    Format { found: i32 },
    #[error("chunk {index} of {chunks} is missing")]
    MissingChunk { index: u32, chunks: i64 },
    #[error("chunk {index} cannot be read")]
    Chunk {
        index: u32,
        #[source]
        source: format::ChunkError,
    },
    #[error("it holds {found} keys, its header says {recorded}")]
    KeyCount { found: u64, recorded: i64 },
    #[error("its keys are not in strictly increasing id order at {client_key}")]
    Order { client_key: String },
    #[error("its digest does not match its contents")]
    Digest,
    #[error("its position is ahead of the events in the store")]
    Ahead,
    #[error(
        "client key {client_key} is recorded at version {version}, which the store does not hold"
    )]
    MissingEvent { client_key: String, version: u64 },
    #[error("client key {client_key} at version {version} has another chain link in the store")]
    Link { client_key: String, version: u64 },
}

/// A snapshot read back and checked against the store, not yet installed.
#[derive(Debug)]
pub struct Loaded {
    pub id: i64,
    pub views: Vec<ClientKeyView>,
    pub position: Position,
    pub created_at_ms: i64,
}

/// What a write recorded.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub id: i64,
    pub keys: u64,
    pub chunks: u32,
    pub position: Position,
    pub created_at_ms: i64,
}

/// The position up to which this node's feed has applied every event (PostgreSQL), set
/// once the start-up replay is done (`None` before); and the snapshot this node loaded
/// or wrote, which it knows to be good.
#[derive(Debug, Clone, Default)]
pub struct Applied(Arc<Mutex<(Option<Position>, Option<i64>)>>);

impl Applied {
    pub fn set(&self, position: Position) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(position);
    }

    pub fn get(&self) -> Option<Position> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Remembers snapshot `id` as one this node checked or wrote.
    pub fn trust(&self, id: i64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(id);
    }

    pub(crate) fn trusts(&self, id: i64) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1 == Some(id)
    }
}

/// Writes a snapshot of `directory` recorded at `position`, which the caller guarantees
/// the views reflect at least (see the module docs), then prunes older ones.
pub async fn write(
    store: &Store,
    directory: &Directory,
    position: Position,
) -> Result<Written, StoreError> {
    let header = Header {
        format_version: FORMAT_VERSION,
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        position,
    };
    let id = sql::begin(store, &header).await?;
    let mut digest = Digest::new(&header);
    let (mut after, mut chunks, mut keys) = (None::<String>, 0u32, 0u64);
    loop {
        let views = directory.list(after.as_deref(), CHUNK_KEYS);
        let Some(last) = views.last() else { break };
        after = Some(last.state().id.as_str().to_owned());
        let body = format::encode_chunk(&views);
        digest.chunk(chunks, &body);
        sql::put_chunk(store, id, chunks, &body).await?;
        keys += views.len() as u64;
        chunks += 1;
    }
    sql::seal(store, id, keys, chunks, &digest.finish(keys, chunks)).await?;
    let pruned = sql::prune(
        store,
        KEEP,
        (chrono::Utc::now() - ABANDONED_AFTER).timestamp_millis(),
    )
    .await?;
    tracing::info!(
        snapshot = id,
        keys,
        chunks,
        position_txid = position.txid,
        position = position.global,
        pruned,
        "read-model snapshot written"
    );
    Ok(Written {
        id,
        keys,
        chunks,
        position,
        created_at_ms: header.created_at_ms,
    })
}

/// The newest sealed snapshot, checked (see the module docs); `None` when there is none.
pub async fn load(store: &Store) -> Result<Option<Loaded>, SnapshotError> {
    let Some(sealed) = sql::newest(store).await? else {
        return Ok(None);
    };
    let header = sealed.header;
    if header.format_version != FORMAT_VERSION {
        return Err(Unusable::Format {
            found: header.format_version,
        }
        .into());
    }
    if is_ahead(store, header.position).await? {
        return Err(Unusable::Ahead.into());
    }
    let mut digest = Digest::new(&header);
    let mut views: Vec<ClientKeyView> = Vec::new();
    let chunks = u32::try_from(sealed.chunks).unwrap_or(u32::MAX);
    for index in 0..chunks {
        let body = sql::chunk(store, sealed.id, index)
            .await?
            .ok_or(Unusable::MissingChunk {
                index,
                chunks: sealed.chunks,
            })?;
        digest.chunk(index, &body);
        let chunk =
            format::decode_chunk(&body).map_err(|source| Unusable::Chunk { index, source })?;
        drop(body);
        check_order(views.last(), &chunk)?;
        check_links(store, &chunk).await?;
        views.extend(chunk);
    }
    if views.len() as u64 != u64::try_from(sealed.keys).unwrap_or(u64::MAX) {
        return Err(Unusable::KeyCount {
            found: views.len() as u64,
            recorded: sealed.keys,
        }
        .into());
    }
    if digest.finish(views.len() as u64, chunks) != sealed.digest {
        return Err(Unusable::Digest.into());
    }
    Ok(Some(Loaded {
        id: sealed.id,
        views,
        position: header.position,
        created_at_ms: header.created_at_ms,
    }))
}

/// Whether `position` names events the store has not got (a snapshot from another
/// database, or a store restored from an older backup than its snapshots).
async fn is_ahead(store: &Store, position: Position) -> Result<bool, StoreError> {
    Ok(match sql::postgres_xmin(store).await? {
        // The feed's cursor is always below the xmin it was read under.
        Some(xmin) => position.txid >= xmin,
        None => position.txid != 0 || position.global > sql::sqlite_head(store).await?,
    })
}

/// Ids must strictly increase (the writer lists them in order): no key twice.
fn check_order(previous: Option<&ClientKeyView>, chunk: &[ClientKeyView]) -> Result<(), Unusable> {
    let mut previous = previous.map(|view| view.state().id.as_str());
    for view in chunk {
        let id = view.state().id.as_str();
        if previous.is_some_and(|p| p >= id) {
            return Err(Unusable::Order {
                client_key: id.to_owned(),
            });
        }
        previous = Some(id);
    }
    Ok(())
}

/// Every view's version must be a stored event carrying the view's link.
async fn check_links(store: &Store, chunk: &[ClientKeyView]) -> Result<(), SnapshotError> {
    let wanted: Vec<(&str, u64)> = chunk
        .iter()
        .map(|view| (view.state().id.as_str(), view.version()))
        .collect();
    let stored = sql::links(store, &wanted).await?;
    for view in chunk {
        let (client_key, version) = (view.state().id.as_str(), view.version());
        match stored.get(client_key) {
            Some((sequence, link)) if *sequence == version => {
                if link.as_deref() != view.link() {
                    return Err(Unusable::Link {
                        client_key: client_key.to_owned(),
                        version,
                    }
                    .into());
                }
            }
            _ => {
                return Err(Unusable::MissingEvent {
                    client_key: client_key.to_owned(),
                    version,
                }
                .into())
            }
        }
    }
    Ok(())
}
