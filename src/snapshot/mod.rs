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
//! Chunks are installed as they pass, so memory holds the views once, not twice; the
//! digest and the counts are known only after the last one, so a snapshot found bad
//! there is taken out again ([`Directory::clear`]) before the full replay. The node is
//! not ready meanwhile: nothing is served from a snapshot that has not passed whole.

pub mod format;
mod sql;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;

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
    #[error("decoding chunk {index} stopped (the node is shutting down)")]
    Stopped { index: u32 },
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

/// A snapshot read back, checked against the store and installed.
#[derive(Debug)]
pub struct Loaded {
    pub id: i64,
    pub keys: u64,
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

/// Loads the newest sealed snapshot into `directory`, checking it as it goes (see the
/// module docs), and returns what it recorded; `None` when there is none. On any error
/// the directory is emptied again, so the full replay that follows starts clean.
pub async fn load(store: &Store, directory: &Directory) -> Result<Option<Loaded>, SnapshotError> {
    let Some(sealed) = sql::newest(store).await? else {
        return Ok(None);
    };
    let loaded = load_sealed(store, directory, &sealed).await;
    if loaded.is_err() {
        directory.clear();
    }
    loaded.map(Some)
}

/// Chunks decoded or checked ahead of the one being installed: decoding (JSON, and
/// rendering each config body) runs on the blocking pool, so on every core, and the
/// chain-link queries of the next chunks are in flight while this one is installed.
/// Bounds the bodies held at once to this many chunks.
const AHEAD: usize = 8;

async fn load_sealed(
    store: &Store,
    directory: &Directory,
    sealed: &sql::Sealed,
) -> Result<Loaded, SnapshotError> {
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
    let chunks = u32::try_from(sealed.chunks).unwrap_or(u32::MAX);
    directory.reserve(usize::try_from(sealed.keys).unwrap_or(0));
    let spent = Spent::default();
    let started = std::time::Instant::now();
    let mut checked = sql::chunks(store, sealed.id, chunks)
        .map(|row| {
            let spent = &spent;
            async move {
                let (index, body) = row?;
                let decoding = std::time::Instant::now();
                let (body, decoded) = tokio::task::spawn_blocking(move || {
                    let decoded = format::decode_chunk(&body);
                    (body, decoded)
                })
                .await
                .map_err(|_| Unusable::Stopped { index })?;
                spent.add(&spent.decoding, decoding);
                let chunk = decoded.map_err(|source| Unusable::Chunk { index, source })?;
                let checking = std::time::Instant::now();
                check_links(store, &chunk).await?;
                spent.add(&spent.checking_links, checking);
                Ok::<_, SnapshotError>((index, body, chunk))
            }
        })
        .buffered(AHEAD);
    let mut digest = Digest::new(&header);
    let (mut expected, mut keys, mut last_id) = (0u32, 0u64, None::<String>);
    loop {
        let waiting = std::time::Instant::now();
        let Some(next) = checked.next().await else {
            break;
        };
        spent.add(&spent.waiting, waiting);
        let installing = std::time::Instant::now();
        let (index, body, chunk) = next?;
        if index != expected {
            return Err(Unusable::MissingChunk {
                index: expected,
                chunks: sealed.chunks,
            }
            .into());
        }
        digest.chunk(index, &body);
        check_order(last_id.as_deref(), &chunk)?;
        if let Some(last) = chunk.last() {
            last_id = Some(last.state().id.as_str().to_owned());
        }
        keys += chunk.len() as u64;
        directory.replace_all(chunk);
        expected += 1;
        spent.add(&spent.installing, installing);
    }
    drop(checked);
    tracing::info!(
        snapshot = sealed.id,
        keys,
        chunks = expected,
        elapsed_ms = started.elapsed().as_millis() as u64,
        waiting_ms = spent.ms(&spent.waiting),
        installing_ms = spent.ms(&spent.installing),
        decoding_ms = spent.ms(&spent.decoding),
        checking_links_ms = spent.ms(&spent.checking_links),
        "read-model snapshot read"
    );
    if expected != chunks {
        return Err(Unusable::MissingChunk {
            index: expected,
            chunks: sealed.chunks,
        }
        .into());
    }
    if keys != u64::try_from(sealed.keys).unwrap_or(u64::MAX) {
        return Err(Unusable::KeyCount {
            found: keys,
            recorded: sealed.keys,
        }
        .into());
    }
    if digest.finish(keys, chunks) != sealed.digest {
        return Err(Unusable::Digest.into());
    }
    Ok(Loaded {
        id: sealed.id,
        keys,
        position: header.position,
        created_at_ms: header.created_at_ms,
    })
}

/// Where loading a snapshot spent its time, logged once it is read: the consumer's
/// waiting for the next checked chunk and installing it, and (summed over the chunks in
/// flight, so they overlap) decoding chunks and querying their links.
#[derive(Debug, Default)]
struct Spent {
    waiting: AtomicU64,
    installing: AtomicU64,
    decoding: AtomicU64,
    checking_links: AtomicU64,
}

impl Spent {
    fn add(&self, counter: &AtomicU64, since: std::time::Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
    }

    fn ms(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed) / 1_000_000
    }
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
fn check_order(previous: Option<&str>, chunk: &[Arc<ClientKeyView>]) -> Result<(), Unusable> {
    let mut previous = previous;
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
async fn check_links(store: &Store, chunk: &[Arc<ClientKeyView>]) -> Result<(), SnapshotError> {
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
