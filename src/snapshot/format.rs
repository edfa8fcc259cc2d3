//! The bytes of a read-model snapshot, pure (no I/O): a chunk is a JSON array of key
//! records (the fold's state, version, time and link of each key; the config body and
//! ETag are derived and rendered again on load), and the digest is a SHA-256 over the
//! header's fields and every chunk, length-prefixed like the chain's fields (`chain.rs`),
//! so no byte can move from one field or chunk to the next unnoticed.
//!
//! Digest input, in order: the tag [`DIGEST_TAG`], the format version, the creation time
//! (Unix ms), the position's txid and global position (all in decimal), then each chunk
//! as its index (decimal) and its bytes, then the number of keys and of chunks.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::aggregate::KeyState;
use projections::ClientKeyView;
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The version of this layout. A snapshot of any other version is ignored (full replay),
/// so changing the record, the digest or what a position means needs a new number.
pub const FORMAT_VERSION: i32 = 1;

/// Keys per chunk: what the writer holds in memory at once, and one row of the chunks
/// table (about 300 KB of JSON for typical keys, 1.2 KB each). Kept under the 512 KiB
/// above which the allocator gives each buffer pages of its own and hands them back to
/// the kernel once freed: at 1,000 keys a chunk every chunk read faulted in fresh,
/// zeroed pages for its row and its bytes (BENCHMARKS.md). A reader takes chunks of
/// any size, so this can change without a new format.
pub const CHUNK_KEYS: usize = 256;

/// The first field of every digest, so a digest of anything else never matches.
const DIGEST_TAG: &[u8] = b"widget-auth read-model snapshot";

/// The position in the event order a snapshot's views reflect at least. PostgreSQL: the
/// feed's transaction-aware cursor (`feed/postgres.rs`), every event of a finished
/// transaction up to it; SQLite: `txid` 0 and the events table's rowid (one writer, so
/// insertion order is commit order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub txid: i64,
    pub global: i64,
}

/// What the header of a snapshot records besides its digest and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format_version: i32,
    pub created_at_ms: i64,
    pub position: Position,
}

/// One key as a chunk stores it, borrowed from a view while writing.
#[derive(Serialize)]
struct RecordRef<'a> {
    state: &'a KeyState,
    version: u64,
    updated_at: Option<DateTime<Utc>>,
    link: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    state: KeyState,
    version: u64,
    updated_at: Option<DateTime<Utc>>,
    link: Option<String>,
}

/// Why a chunk cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("snapshot chunk is not a list of key records")]
pub struct ChunkError(#[source] serde_json::Error);

/// The bytes of one chunk.
pub fn encode_chunk(views: &[Arc<ClientKeyView>]) -> Vec<u8> {
    let records: Vec<RecordRef<'_>> = views
        .iter()
        .map(|view| RecordRef {
            state: view.state(),
            version: view.version(),
            updated_at: view.updated_at(),
            link: view.link(),
        })
        .collect();
    // Serializing plain data into memory cannot fail.
    serde_json::to_vec(&records).unwrap_or_default()
}

/// The views of one chunk, rendered, each already in the `Arc` the directory keeps it
/// in. Decoded record by record into a list of pointers sized up front: collecting the
/// records first held a second list of whole records per chunk (half a megabyte), which
/// the allocator returned to the kernel and faulted in again, zeroed, for the next chunk
/// (BENCHMARKS.md, "Start-up from a snapshot").
pub fn decode_chunk(body: &[u8]) -> Result<Vec<Arc<ClientKeyView>>, ChunkError> {
    struct Views;
    impl<'de> Visitor<'de> for Views {
        type Value = Vec<Arc<ClientKeyView>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of key records")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut records: A) -> Result<Self::Value, A::Error> {
            let mut views = Vec::with_capacity(CHUNK_KEYS);
            while let Some(r) = records.next_element::<Record>()? {
                views.push(Arc::new(ClientKeyView::restore(
                    r.state,
                    r.version,
                    r.updated_at,
                    r.link,
                )));
            }
            Ok(views)
        }
    }
    let mut json = serde_json::Deserializer::from_slice(body);
    let views = json.deserialize_seq(Views).map_err(ChunkError)?;
    json.end().map_err(ChunkError)?;
    Ok(views)
}

/// The running digest of a snapshot, fed the chunks in order.
#[derive(Debug, Clone)]
pub struct Digest(Sha256);

impl Digest {
    pub fn new(header: &Header) -> Self {
        let mut sha = Sha256::new();
        field(&mut sha, DIGEST_TAG);
        for number in [
            i64::from(header.format_version),
            header.created_at_ms,
            header.position.txid,
            header.position.global,
        ] {
            field(&mut sha, number.to_string().as_bytes());
        }
        Self(sha)
    }

    pub fn chunk(&mut self, index: u32, body: &[u8]) {
        field(&mut self.0, index.to_string().as_bytes());
        field(&mut self.0, body);
    }

    /// The digest as lower-case hex, sealing the counts.
    pub fn finish(mut self, keys: u64, chunks: u32) -> String {
        field(&mut self.0, keys.to_string().as_bytes());
        field(&mut self.0, chunks.to_string().as_bytes());
        hex::encode(self.0.finalize())
    }
}

fn field(sha: &mut Sha256, bytes: &[u8]) {
    sha.update((bytes.len() as u64).to_be_bytes());
    sha.update(bytes);
}

#[cfg(test)]
mod tests {
    use domain::{
        AllowList, ClientKeyEvent, ClientKeyId, OriginPattern, PublicKey, SecretKey, Text,
        TokenPolicy, WidgetConfig,
    };
    use projections::{Fold, StoredEvent};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn view(seed: u64, changes: u64) -> Arc<ClientKeyView> {
        let mut rng = StdRng::seed_from_u64(seed);
        let id = ClientKeyId::generate(&mut rng);
        let at = chrono::DateTime::from_timestamp(1_700_000_000 + seed as i64, 0);
        let origins = |n: u64| {
            AllowList::new(vec![OriginPattern::parse(&format!(
                "https://{n}.acme.test"
            ))
            .expect("valid")])
        };
        let mut fold = Fold::new();
        fold.push(StoredEvent {
            aggregate_id: id.as_str().to_owned(),
            sequence: 1,
            event: ClientKeyEvent::ClientKeyCreated {
                id: id.clone(),
                name: Text::parse("Acme Support").expect("valid"),
                public_key: PublicKey::generate(&mut rng),
                secret_key: SecretKey::generate(&mut rng).fingerprint(),
                origins: origins(0),
                config: WidgetConfig::default(),
                token_policy: TokenPolicy::default(),
                at: at.expect("valid time"),
            },
            at,
            link: Some(format!("{seed:064x}")),
        });
        for n in 1..=changes {
            fold.push(StoredEvent {
                aggregate_id: id.as_str().to_owned(),
                sequence: n + 1,
                event: ClientKeyEvent::OriginsChanged {
                    origins: origins(n),
                },
                // The last change has no time of its own: the view keeps the earlier one.
                at: (n < changes).then_some(at).flatten(),
                link: (n % 2 == 0).then(|| format!("{n:064x}")),
            });
        }
        Arc::new(fold.finish().expect("created"))
    }

    fn header() -> Header {
        Header {
            format_version: FORMAT_VERSION,
            created_at_ms: 1_700_000_000_000,
            position: Position {
                txid: 7,
                global: 42,
            },
        }
    }

    fn digest_of(header: &Header, chunks: &[&[u8]], keys: u64) -> String {
        let mut digest = Digest::new(header);
        for (index, chunk) in chunks.iter().enumerate() {
            digest.chunk(index as u32, chunk);
        }
        digest.finish(keys, chunks.len() as u32)
    }

    #[test]
    fn a_chunk_reads_back_into_equal_views() {
        let views = vec![view(1, 0), view(2, 3), view(3, 4)];
        let decoded = decode_chunk(&encode_chunk(&views)).expect("decodes");
        assert_eq!(decoded.len(), views.len());
        for (original, back) in views.iter().zip(&decoded) {
            assert_eq!(back.state(), original.state());
            assert_eq!(back.version(), original.version());
            assert_eq!(back.updated_at(), original.updated_at());
            assert_eq!(back.link(), original.link());
            assert_eq!(back.config_body(), original.config_body());
            assert_eq!(back.etag(), original.etag());
        }
    }

    #[test]
    fn a_truncated_or_foreign_chunk_is_refused() {
        let body = encode_chunk(&[view(1, 2), view(2, 2)]);
        assert!(decode_chunk(&body[..body.len() - 10]).is_err());
        assert!(decode_chunk(b"").is_err());
        assert!(decode_chunk(br#"[{"state": {}, "version": 1}]"#).is_err());
        let mut extra: serde_json::Value = serde_json::from_slice(&body).expect("json");
        extra[0]["secret"] = serde_json::json!("x");
        let extra = serde_json::to_vec(&extra).expect("json");
        assert!(decode_chunk(&extra).is_err(), "unknown fields are refused");
    }

    #[test]
    fn the_digest_covers_every_header_field_every_chunk_and_the_counts() {
        let (a, b) = (encode_chunk(&[view(1, 1)]), encode_chunk(&[view(2, 1)]));
        let base = digest_of(&header(), &[&a, &b], 2);
        assert_eq!(base.len(), 64);
        assert_eq!(base, digest_of(&header(), &[&a, &b], 2), "deterministic");

        let mut other = header();
        other.format_version += 1;
        assert_ne!(base, digest_of(&other, &[&a, &b], 2));
        let mut other = header();
        other.created_at_ms += 1;
        assert_ne!(base, digest_of(&other, &[&a, &b], 2));
        let mut other = header();
        other.position.txid += 1;
        assert_ne!(base, digest_of(&other, &[&a, &b], 2));
        let mut other = header();
        other.position.global += 1;
        assert_ne!(base, digest_of(&other, &[&a, &b], 2));

        assert_ne!(base, digest_of(&header(), &[&b, &a], 2), "chunk order");
        assert_ne!(base, digest_of(&header(), &[&a], 2), "a chunk missing");
        assert_ne!(base, digest_of(&header(), &[&a, &b], 3), "key count");
        let mut flipped = b.clone();
        flipped[5] ^= 1;
        assert_ne!(base, digest_of(&header(), &[&a, &flipped], 2), "one bit");
        // Bytes moved from the end of one chunk to the start of the next.
        let (moved_a, moved_b) = (&a[..a.len() - 1], [&a[a.len() - 1..], &b[..]].concat());
        assert_ne!(base, digest_of(&header(), &[moved_a, &moved_b], 2));
    }

    #[test]
    fn positions_order_like_the_feed() {
        let p = |txid, global| Position { txid, global };
        assert!(p(1, 100) < p(2, 1));
        assert!(p(2, 1) < p(2, 2));
    }
}
