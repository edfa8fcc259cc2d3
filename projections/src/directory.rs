//! The widget directory and the secret key index: every client key's view, reachable by
//! id, by any public key it accepts and by the hash of any secret key it accepts.
//!
//! The indexes are papaya maps: reads take no lock and write nothing shared (an epoch
//! guard in thread-local state), which is what an index read on every public request and
//! written only by admin changes wants. They were moka caches, whose every read records
//! itself for an eviction policy this index must never apply: 1,100 instructions a lookup
//! against papaya's 385 (callgrind, 100,000 keys; BENCHMARKS.md). Writes (admin
//! commands, replays, the cross-node feed) are serialised by one mutex, so a view's
//! read-modify-write and its index updates never interleave with another write to the
//! same key.
//!
//! The indexes hold a key's [`Slot`], not its view: a change to a key swaps the view in
//! its slot, and touches an index only when the set of accepted keys changed (creation,
//! rotation, pruning). Re-inserting every index on every change was most of what
//! applying an event cost (BENCHMARKS.md, "Admin commands").

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use domain::aggregate::KeyState;
use domain::{PublicKey, SecretKeyHash};
use papaya::HashMap;

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

/// One key's current view, shared by every index entry of that key.
#[derive(Debug)]
struct Slot(RwLock<Shared>);

impl Slot {
    fn view(&self) -> Shared {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn set(&self, view: Shared) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = view;
    }
}

/// A public key's bytes held inline. The index compares whole keys as it probes; with a
/// `String` key each comparison first follows a pointer to the heap, a cache miss on a
/// directory of many keys, on the lookup every public request makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct InlineKey([u8; PublicKey::LEN]);

impl InlineKey {
    /// `None` for text that cannot be a public key (no key is stored under it).
    fn new(public_key: &str) -> Option<Self> {
        public_key.as_bytes().try_into().ok().map(Self)
    }
}

#[derive(Debug)]
pub struct Directory {
    by_id: HashMap<String, Arc<Slot>>,
    by_public_key: HashMap<InlineKey, Arc<Slot>>,
    by_secret_hash: HashMap<SecretKeyHash, Arc<Slot>>,
    /// Ordered ids for admin paging; a hash map cannot iterate in order.
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
    /// Plain maps, not caches: this is the read model, not a cache of it, so nothing may
    /// be evicted (an evicted key would be a false 403).
    pub fn new() -> Self {
        Self {
            by_id: HashMap::new(),
            by_public_key: HashMap::new(),
            by_secret_hash: HashMap::new(),
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
        let slot = self.by_id.pin().get(stored.aggregate_id.as_str()).cloned();
        let current = slot.as_ref().map(|slot| slot.view());
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
        self.install(slot, Arc::new(next));
        ApplyOutcome::Applied
    }

    /// Installs a view folded from the full history (start-up replay, catch-up after a
    /// gap). An older view never replaces a newer one.
    pub fn replace(&self, view: ClientKeyView) {
        let _write = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.replace_locked(Arc::new(view));
    }

    /// [`Self::replace`] for many views (a read-model snapshot's chunk) under one
    /// acquisition of the writer lock.
    pub fn replace_all(&self, views: impl IntoIterator<Item = Shared>) {
        let _write = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for view in views {
            self.replace_locked(view);
        }
    }

    /// Makes room for `additional` more keys at once. Loading a snapshot of a million
    /// keys otherwise grows each index through every doubling, copying it each time.
    pub fn reserve(&self, additional: usize) {
        self.by_id.pin().reserve(additional);
        self.by_public_key.pin().reserve(additional);
        self.by_secret_hash.pin().reserve(additional);
    }

    /// Removes every key (a snapshot found bad halfway through loading, before the node
    /// is ready, so nothing was served from it; the full replay that follows rebuilds).
    pub fn clear(&self) {
        let _write = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.by_id.pin().clear();
        self.by_public_key.pin().clear();
        self.by_secret_hash.pin().clear();
        self.ids
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    fn replace_locked(&self, view: Shared) {
        let slot = self.by_id.pin().get(view.state().id.as_str()).cloned();
        if slot
            .as_ref()
            .is_some_and(|slot| slot.view().version() >= view.version())
        {
            return;
        }
        self.install(slot, view);
    }

    fn install(&self, slot: Option<Arc<Slot>>, new: Shared) {
        // Keys a change adds (a rotation) become reachable only once the slot holds the
        // view that accepts them, so the slot is filled before the indexes change.
        let (slot, old) = match slot {
            Some(slot) => {
                let old = slot.view();
                slot.set(Arc::clone(&new));
                (slot, Some(old))
            }
            None => {
                let slot = Arc::new(Slot(RwLock::new(Arc::clone(&new))));
                let id = new.state().id.as_str().to_owned();
                self.by_id.pin().insert(id.clone(), Arc::clone(&slot));
                self.ids
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(id);
                (slot, None)
            }
        };
        let old_state = old.as_ref().map(|view| view.state());
        let (added, dropped) = changes(
            old_state.into_iter().flat_map(public_keys),
            public_keys(new.state()),
        );
        for key in added {
            self.index_public_key(key, &slot);
        }
        for key in dropped.into_iter().filter_map(InlineKey::new) {
            self.by_public_key.pin().remove(&key);
        }
        let (added, dropped) = changes(
            old_state.into_iter().flat_map(secret_hashes),
            secret_hashes(new.state()),
        );
        for hash in added {
            self.by_secret_hash.pin().insert(hash, Arc::clone(&slot));
        }
        for hash in dropped {
            self.by_secret_hash.pin().remove(&hash);
        }
    }

    fn index_public_key(&self, key: &str, slot: &Arc<Slot>) {
        match InlineKey::new(key) {
            Some(inline) => {
                self.by_public_key.pin().insert(inline, Arc::clone(slot));
            }
            // Unreachable for a parsed `PublicKey`; logged rather than trusted.
            None => tracing::error!(
                len = key.len(),
                "a public key of unexpected length was not indexed"
            ),
        }
    }

    pub fn by_id(&self, id: &str) -> Option<Shared> {
        self.by_id.pin().get(id).map(|slot| slot.view())
    }

    /// The key that has (or recently had) this public key. The caller checks the grace
    /// window against its clock with [`domain::aggregate::KeyState::accepts_public_key`].
    pub fn by_public_key(&self, public_key: &str) -> Option<Shared> {
        let key = InlineKey::new(public_key)?;
        self.by_public_key.pin().get(&key).map(|slot| slot.view())
    }

    /// The key whose current or previous secret key has this hash.
    pub fn by_secret_hash(&self, hash: &SecretKeyHash) -> Option<Shared> {
        self.by_secret_hash.pin().get(hash).map(|slot| slot.view())
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
        range.filter_map(|id| self.by_id(id)).take(limit).collect()
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

/// What a change did to a set of accepted keys: the ones it added and the ones it dropped
/// (pruned after their grace). Both sets hold a handful of keys at most.
fn changes<T: PartialEq + Copy>(
    old: impl Iterator<Item = T>,
    new: impl Iterator<Item = T>,
) -> (Vec<T>, Vec<T>) {
    let (old, new): (Vec<T>, Vec<T>) = (old.collect(), new.collect());
    let added = new.iter().filter(|k| !old.contains(k)).copied().collect();
    let dropped = old.into_iter().filter(|k| !new.contains(k)).collect();
    (added, dropped)
}

/// Every public key a key accepts: its current one and those still in grace.
fn public_keys(state: &KeyState) -> impl Iterator<Item = &str> {
    std::iter::once(&state.public_key)
        .chain(state.previous_public_keys.iter().map(|p| &p.public_key))
        .map(|k| k.as_str())
}

/// The hashes of every secret key a key accepts.
fn secret_hashes(state: &KeyState) -> impl Iterator<Item = SecretKeyHash> + '_ {
    std::iter::once(&state.secret_key)
        .chain(state.previous_secret_keys.iter().map(|p| &p.secret_key))
        .map(|f| f.hash)
}
