//! Signed checkpoints (API.md "Audit checkpoints"): a commitment to every client key's head
//! — its last sequence and the chain link there — that an auditor keeps outside the
//! database and later checks the store against. The per-key chain cannot see a history
//! cut short at its end or rewritten with every link recomputed; a checkpoint can.
//!
//! What is committed, so a third party can check it with the public JWKS alone:
//! - each head's leaf is `SHA-256(0x00 || field(client key id) || field(sequence in
//!   decimal) || field(link as 64 lower-case hex))`, `field` being the bytes prefixed by
//!   their length as 8 bytes big-endian (as `chain.rs` hashes events);
//! - `root` is the RFC 9162 §2.1 Merkle tree hash over the leaves in byte order of the
//!   client key id (interior nodes `SHA-256(0x01 || left || right)`, the empty tree
//!   `SHA-256("")`), as lower-case hex;
//! - the signature is Ed25519 by the token signing key `kid`, over
//!   [`crate::tokens::CHECKPOINT_CONTEXT`] (`widget-auth-checkpoint/1\n`) followed by
//!   [`Checkpoint::signed_body`]: `at=…\nevents=…\nkeys=…\nroot=…\nkid=…\n`, base64url
//!   without padding. A JWS signing input is base64url and dots only, so it can never
//!   begin with that line: a checkpoint signature never verifies as a JWT, nor the reverse.
//!
//! The heads travel in the checkpoint (about 130 bytes each: 13 MB at 100,000 keys), so
//! verify can name every key that no longer matches; the root and the signature make any
//! edit of them visible.

use chrono::DateTime;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `format` of every checkpoint this release writes and reads.
pub const FORMAT: &str = "widget-auth-checkpoint/1";

/// One key's head: the store's history of that key passes through `link` at `sequence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub client_key: String,
    pub sequence: u64,
    pub link: String,
}

impl Head {
    /// The RFC 9162 leaf hash of this head (see the module docs).
    pub fn leaf_hash(&self) -> [u8; 32] {
        let mut sha = Sha256::new();
        sha.update([0x00]);
        for bytes in [
            self.client_key.as_bytes(),
            self.sequence.to_string().as_bytes(),
            self.link.as_bytes(),
        ] {
            sha.update((bytes.len() as u64).to_be_bytes());
            sha.update(bytes);
        }
        sha.finalize().into()
    }
}

/// RFC 9162 §2.1.1 Merkle tree hash over leaf hashes, in the order given. Recursion depth
/// is log2 of the leaf count, so a million keys is 20 frames.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            // The largest power of two smaller than n.
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let mut sha = Sha256::new();
            sha.update([0x01]);
            sha.update(merkle_root(&leaves[..k]));
            sha.update(merkle_root(&leaves[k..]));
            sha.finalize().into()
        }
    }
}

/// The root over heads, which must already be sorted by client key id.
pub fn root_of(heads: &[Head]) -> String {
    let leaves: Vec<[u8; 32]> = heads.iter().map(Head::leaf_hash).collect();
    hex::encode(merkle_root(&leaves))
}

/// A checkpoint as written and read (the JSON of `GET /internal/v1/audit/checkpoint`).
/// `at` stays the text it was signed as, so a checkpoint re-serialized by another tool
/// still verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub format: String,
    /// When it was taken, RFC 3339.
    pub at: String,
    /// Events in the store then (the sum of the heads' sequences).
    pub events: u64,
    /// Client keys in the store then (the number of heads).
    pub keys: u64,
    /// The Merkle root over `heads`, lower-case hex.
    pub root: String,
    /// The JWKS key that verifies `signature`.
    pub kid: String,
    /// Ed25519, base64url without padding.
    pub signature: String,
    /// Every key's head, sorted by client key id.
    pub heads: Vec<Head>,
}

/// Why a document is not a checkpoint this release can check (a 400, or the CLI's error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedCheckpoint {
    #[error("format must be \"{FORMAT}\", found {0:?}")]
    Format(String),
    #[error("at must be an RFC 3339 time")]
    At,
    #[error("root must be 64 lower-case hex characters")]
    Root,
    #[error("kid must be a base64url JWKS key id")]
    Kid,
}

impl Checkpoint {
    /// The bytes signed after the context line. Only valid fields reach here (see
    /// [`Checkpoint::check_form`]), none of which can hold a newline, so each line is
    /// exactly one field.
    pub fn signed_body(&self) -> Vec<u8> {
        format!(
            "at={}\nevents={}\nkeys={}\nroot={}\nkid={}\n",
            self.at, self.events, self.keys, self.root, self.kid
        )
        .into_bytes()
    }

    /// Refuses a document whose signed fields could not have been written by us (and so
    /// could be ambiguous as signed text).
    pub fn check_form(&self) -> Result<(), MalformedCheckpoint> {
        if self.format != FORMAT {
            return Err(MalformedCheckpoint::Format(self.format.clone()));
        }
        if DateTime::parse_from_rfc3339(&self.at).is_err() || self.at.contains('\n') {
            return Err(MalformedCheckpoint::At);
        }
        if self.root.len() != 64
            || !self
                .root
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(MalformedCheckpoint::Root);
        }
        if self.kid.is_empty()
            || !self
                .kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(MalformedCheckpoint::Kid);
        }
        Ok(())
    }

    /// Whether the heads are what the signed fields commit to: sorted by key id without
    /// duplicates, as many as `keys`, their sequences summing to `events`, hashing to `root`.
    pub fn heads_match(&self) -> bool {
        let sorted = self
            .heads
            .windows(2)
            .all(|pair| pair[0].client_key.as_bytes() < pair[1].client_key.as_bytes());
        let events = self
            .heads
            .iter()
            .try_fold(0u64, |sum, head| sum.checked_add(head.sequence));
        sorted
            && self.heads.len() as u64 == self.keys
            && events == Some(self.events)
            && root_of(&self.heads) == self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 / RFC 9162 reference leaves and tree heads (the Certificate Transparency
    /// test vectors): the roots of the first 1..=8 leaves.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn leaf(data: &[u8]) -> [u8; 32] {
        let mut sha = Sha256::new();
        sha.update([0x00]);
        sha.update(data);
        sha.finalize().into()
    }

    #[test]
    fn the_merkle_root_matches_the_rfc_reference_tree_heads() {
        assert_eq!(
            hex::encode(merkle_root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let leaves: Vec<[u8; 32]> = LEAVES
            .iter()
            .map(|h| leaf(&hex::decode(h).expect("hex")))
            .collect();
        for (n, root) in ROOTS.iter().enumerate() {
            assert_eq!(
                hex::encode(merkle_root(&leaves[..=n])),
                *root,
                "size {}",
                n + 1
            );
        }
    }

    fn head(key: &str, sequence: u64) -> Head {
        Head {
            client_key: key.to_owned(),
            sequence,
            link: "ab".repeat(32),
        }
    }

    #[test]
    fn every_field_of_a_head_changes_its_leaf_and_bytes_cannot_move_between_fields() {
        let base = head("ck_1", 12).leaf_hash();
        assert_ne!(head("ck_2", 12).leaf_hash(), base);
        assert_ne!(head("ck_1", 13).leaf_hash(), base);
        assert_ne!(
            Head {
                link: "cd".repeat(32),
                ..head("ck_1", 12)
            }
            .leaf_hash(),
            base
        );
        // "ck_1" + "12" against "ck_11" + "2".
        assert_ne!(head("ck_11", 2).leaf_hash(), base);
    }

    fn checkpoint(heads: Vec<Head>) -> Checkpoint {
        Checkpoint {
            format: FORMAT.to_owned(),
            at: "2026-12-01T00:00:00Z".to_owned(),
            events: heads.iter().map(|h| h.sequence).sum(),
            keys: heads.len() as u64,
            root: root_of(&heads),
            kid: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".to_owned(),
            signature: String::new(),
            heads,
        }
    }

    #[test]
    fn heads_match_only_sorted_counted_and_hashing_to_the_root() {
        let good = checkpoint(vec![head("ck_a", 2), head("ck_b", 5)]);
        assert!(good.heads_match());
        assert_eq!(
            good.signed_body(),
            format!(
                "at=2026-12-01T00:00:00Z\nevents=7\nkeys=2\nroot={}\nkid={}\n",
                good.root, good.kid
            )
            .into_bytes()
        );

        let mut lowered = good.clone();
        lowered.heads[1].sequence = 4;
        let mut unsorted = good.clone();
        unsorted.heads.swap(0, 1);
        let mut dropped = good.clone();
        dropped.heads.pop();
        for edited in [lowered, unsorted, dropped] {
            assert!(!edited.heads_match(), "{edited:?}");
        }
    }

    #[test]
    fn a_field_that_could_smuggle_a_line_is_refused() {
        let good = checkpoint(vec![head("ck_a", 1)]);
        assert_eq!(good.check_form(), Ok(()));
        let cases = [
            Checkpoint {
                format: "widget-auth-checkpoint/2".to_owned(),
                ..good.clone()
            },
            Checkpoint {
                at: "2026-12-01T00:00:00Z\nevents=1".to_owned(),
                ..good.clone()
            },
            Checkpoint {
                root: "AB".repeat(32),
                ..good.clone()
            },
            Checkpoint {
                kid: "a\nroot=00".to_owned(),
                ..good.clone()
            },
        ];
        for case in cases {
            assert!(case.check_form().is_err(), "{case:?}");
        }
    }
}
