//! What happened to a client key. Events carry everything the read models need, so a
//! projection never loads anything; they never carry a secret (only its fingerprint).
//!
//! Names and the serialized shape are frozen once released: a change ships as a new
//! `event_version` with an upcaster for the old one.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::config::{Text, WidgetConfig};
use crate::keys::{ClientKeyId, PublicKey, SecretKeyFingerprint};
use crate::origin::AllowList;
use crate::policy::TokenPolicy;

/// The current schema version of every event type.
pub const EVENT_VERSION: &str = "1.0";

// One per admin request, never in bulk on a hot path: boxing the large variant would
// only make matching noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientKeyEvent {
    ClientKeyCreated {
        id: ClientKeyId,
        name: Text,
        public_key: PublicKey,
        secret_key: SecretKeyFingerprint,
        origins: AllowList,
        config: WidgetConfig,
        token_policy: TokenPolicy,
        at: DateTime<Utc>,
    },
    OriginsChanged {
        origins: AllowList,
    },
    ConfigUpdated {
        config: WidgetConfig,
    },
    TokenPolicySet {
        policy: TokenPolicy,
    },
    SecretKeyRotated {
        secret_key: SecretKeyFingerprint,
        previous: SecretKeyFingerprint,
        previous_valid_until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    PublicKeyRotated {
        public_key: PublicKey,
        previous: PublicKey,
        previous_valid_until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    PreviousKeysExpired {
        at: DateTime<Utc>,
    },
    /// Tokens of this key (or of `user_id` only) issued at or before `issued_at_or_before`
    /// (unix seconds, compared with `iat`) may no longer be exchanged or refreshed.
    SessionsRevoked {
        user_id: Option<Text>,
        issued_at_or_before: i64,
    },
    ClientKeyDisabled {
        at: DateTime<Utc>,
    },
    ClientKeyEnabled {
        at: DateTime<Utc>,
    },
}

impl ClientKeyEvent {
    /// The stable name stored in the event store's `event_type` column.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClientKeyCreated { .. } => "ClientKeyCreated",
            Self::OriginsChanged { .. } => "OriginsChanged",
            Self::ConfigUpdated { .. } => "ConfigUpdated",
            Self::TokenPolicySet { .. } => "TokenPolicySet",
            Self::SecretKeyRotated { .. } => "SecretKeyRotated",
            Self::PublicKeyRotated { .. } => "PublicKeyRotated",
            Self::PreviousKeysExpired { .. } => "PreviousKeysExpired",
            Self::SessionsRevoked { .. } => "SessionsRevoked",
            Self::ClientKeyDisabled { .. } => "ClientKeyDisabled",
            Self::ClientKeyEnabled { .. } => "ClientKeyEnabled",
        }
    }
}

impl DomainEvent for ClientKeyEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}
