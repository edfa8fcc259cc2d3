//! Read models folded from `ClientKey` events.
//!
//! The hot path (config, tokens) reads only these, never the event store. Folding is a
//! pure function ([`ClientKeyView::apply`]); the [`Directory`] wraps the results in moka
//! caches keyed the ways the hot path looks keys up: by public key, by secret-key hash
//! and by client key id.

pub mod directory;
pub mod view;

pub use directory::{ApplyOutcome, Directory};
pub use view::{ClientKeyView, StoredEvent};
