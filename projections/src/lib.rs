//! Read models folded from `ClientKey` events.
//!
//! The hot path (config, tokens) reads only these, never the event store. Folding is a
//! pure function written once ([`Fold`]; [`ClientKeyView::apply`] takes its step for one
//! event); the [`Directory`] holds the results in maps keyed the ways the hot path
//! looks keys up: by public key, by secret-key hash and by client key id.

pub mod directory;
pub mod fold;
pub mod view;

pub use directory::{ApplyOutcome, Directory};
pub use fold::Fold;
pub use view::{ClientKeyView, StoredEvent};
