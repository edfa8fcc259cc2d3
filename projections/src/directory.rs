//! The widget directory and the secret key index: every client key's view, reachable by
//! id, by any public key it accepts and by the hash of any secret key it accepts.
//!
//! Reads are lock-free moka lookups. Writes (admin commands, replays, the cross-node
//! feed) are rare and serialised by one mutex, so a view's read-modify-write and its
//! index updates never interleave with another write to the same key.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use domain::SecretKeyHash;
use moka::sync::Cache;

use crate::view::{ClientKeyView, StoredEvent};

/// What [`Directory::apply`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Applied,
    /// The view already includes this sequence (an echo of a command we ran, a replay).
    AlreadyApplied,
    /// Events are missing before this one; the caller must reload the key's history.
    Gap {
        have: u64,
        got: u64,
    },
}

type Shared = Arc<ClientKeyView>;

#[derive(Debug)]
pub struct Directory {
    by_id: Cache<String, Shared>,
    by_public_key: Cache<String, Shared>,
    by_secret_hash: Cache<SecretKeyHash, Shared>,
    /// Ordered ids for admin paging; moka cannot iterate in order.
    ids: RwLock<BTreeSet<String>>,
    writer: Mutex<()>,
    ready: AtomicBool,
}

impl Default for Directory {
    fn default() -> Self {
        Self::new()
    }
}

impl Directory {
    /// Unbounded caches: this is the read model, not a cache of it, so nothing may be
    /// evicted (an evicted key would be a false 403).
    pub fn new() -> Self {
        Self {
            by_id: Cache::builder().build(),
            by_public_key: Cache::builder().build(),
            by_secret_hash: Cache::builder().build(),
            ids: RwLock::new(BTreeSet::new()),
            writer: Mutex::new(()),
            ready: AtomicBool::new(false),
        }
    }

    /// Applies the next event of a key. Out-of-order input is reported, never applied.
    pub fn apply(&self, stored: &StoredEvent) -> ApplyOutcome {
        let _write = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.by_id.get(stored.aggregate_id.as_str());
        let have = current.as_ref().map_or(0, |view| view.version());
        if stored.sequence <= have {
            return ApplyOutcome::AlreadyApplied;
        }
        if stored.sequence != have + 1 {
            return ApplyOutcome::Gap {
                have,
                got: stored.sequence,
            };
        }
        let next = match current.as_deref() {
            Some(view) => view.apply(stored),
            None => match ClientKeyView::fold([stored]) {
                Some(view) => view,
                None => {
                    tracing::error!(
                        aggregate_id = %stored.aggregate_id,
                        sequence = stored.sequence,
                        "first event of a client key is not its creation; not applied"
                    );
                    return ApplyOutcome::Gap {
                        have,
                        got: stored.sequence,
                    };
                }
            },
        };
        self.install(current, next);
        ApplyOutcome::Applied
    }

    /// Installs a view folded from the full history (start-up replay, catch-up after a
    /// gap). An older view never replaces a newer one.
    pub fn replace(&self, view: ClientKeyView) {
        let _write = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.by_id.get(view.state().id.as_str());
        if current
            .as_ref()
            .is_some_and(|c| c.version() >= view.version())
        {
            return;
        }
        self.install(current, view);
    }

    fn install(&self, old: Option<Shared>, new: ClientKeyView) {
        let new = Arc::new(new);
        let state = new.state();
        let id = state.id.as_str().to_owned();
        let public_keys: Vec<String> = std::iter::once(&state.public_key)
            .chain(state.previous_public_keys.iter().map(|p| &p.public_key))
            .map(|k| k.as_str().to_owned())
            .collect();
        let secret_hashes: Vec<SecretKeyHash> = std::iter::once(&state.secret_key)
            .chain(state.previous_secret_keys.iter().map(|p| &p.secret_key))
            .map(|f| f.hash)
            .collect();
        for key in &public_keys {
            self.by_public_key.insert(key.clone(), new.clone());
        }
        for hash in &secret_hashes {
            self.by_secret_hash.insert(*hash, new.clone());
        }
        // Keys dropped by this change (a rotation that pruned an expired one).
        if let Some(old) = old {
            let old_state = old.state();
            let old_public = std::iter::once(&old_state.public_key)
                .chain(old_state.previous_public_keys.iter().map(|p| &p.public_key));
            for key in old_public {
                if !public_keys.iter().any(|k| k == key.as_str()) {
                    self.by_public_key.invalidate(key.as_str());
                }
            }
            let old_secrets = std::iter::once(&old_state.secret_key)
                .chain(old_state.previous_secret_keys.iter().map(|p| &p.secret_key));
            for fingerprint in old_secrets {
                if !secret_hashes.contains(&fingerprint.hash) {
                    self.by_secret_hash.invalidate(&fingerprint.hash);
                }
            }
        }
        self.by_id.insert(id.clone(), new);
        self.ids
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id);
    }

    pub fn by_id(&self, id: &str) -> Option<Shared> {
        self.by_id.get(id)
    }

    /// The key that has (or recently had) this public key. The caller checks the grace
    /// window against its clock with [`domain::aggregate::KeyState::accepts_public_key`].
    pub fn by_public_key(&self, public_key: &str) -> Option<Shared> {
        self.by_public_key.get(public_key)
    }

    /// The key whose current or previous secret key has this hash.
    pub fn by_secret_hash(&self, hash: &SecretKeyHash) -> Option<Shared> {
        self.by_secret_hash.get(hash)
    }

    /// Views in id order, strictly after `after`, at most `limit`.
    pub fn list(&self, after: Option<&str>, limit: usize) -> Vec<Shared> {
        let ids = self
            .ids
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let range = match after {
            Some(after) => {
                ids.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            }
            None => ids.range::<str, _>(..),
        };
        range
            .filter_map(|id| self.by_id.get(id.as_str()))
            .take(limit)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.ids
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Set once the start-up replay is complete; until then the node answers 503.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
