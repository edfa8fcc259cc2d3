//! What happened to a client key. Events carry everything the read models need, so a
//! projection never loads anything; they never carry a secret (only its fingerprint).
//!
//! Names and the serialized shape are frozen once released: a change ships as a new
//! `event_version` with an upcaster for the old one.

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SemanticVersionEventUpcaster};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{Text, WidgetConfig};
use crate::keys::{ClientKeyId, PublicKey, SecretKeyFingerprint};
use crate::origin::AllowList;
use crate::policy::TokenPolicy;

/// The current schema version of every event type.
pub const EVENT_VERSION: &str = "1.0";

/// Upcasters from every older `event_version` to [`EVENT_VERSION`], oldest first (cqrs-es
/// applies them in order). The store decodes its own reads through these and registers
/// the same list on the cqrs-es event store, so auditors' replays, the read models and
/// command-side loads all see one current model. Stored rows are never rewritten: the
/// tamper-evidence chain covers them as written.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![Box::new(SemanticVersionEventUpcaster::new(
        "OriginsChanged",
        EVENT_VERSION,
        Box::new(origins_changed_from_0_9),
    ))]
}

/// `OriginsChanged` 0.9 named its list `allowed_origins` (the design drafts' shape). No
/// store we shipped holds it; the upcaster keeps the path exercised end to end and is the
/// template for the next real schema change.
fn origins_changed_from_0_9(mut payload: Value) -> Value {
    if let Some(body) = payload
        .get_mut("OriginsChanged")
        .and_then(Value::as_object_mut)
    {
        if let Some(origins) = body.remove("allowed_origins") {
            body.insert("origins".to_owned(), origins);
        }
    }
    payload
}

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

#[cfg(test)]
mod tests {
    use cqrs_es::persist::SerializedEvent;
    use serde_json::json;

    use super::*;

    fn stored(event_type: &str, event_version: &str, payload: Value) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: "ck_1".to_owned(),
            sequence: 2,
            aggregate_type: "ClientKey".to_owned(),
            event_type: event_type.to_owned(),
            event_version: event_version.to_owned(),
            payload,
            metadata: json!({}),
        }
    }

    fn upcast(mut event: SerializedEvent) -> SerializedEvent {
        for upcaster in upcasters() {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        event
    }

    #[test]
    fn origins_changed_0_9_reads_as_the_current_event() {
        let old = stored(
            "OriginsChanged",
            "0.9",
            json!({"OriginsChanged": {"allowed_origins": ["https://a.test"]}}),
        );
        let event: ClientKeyEvent =
            serde_json::from_value(upcast(old).payload).expect("decodes after upcasting");
        let ClientKeyEvent::OriginsChanged { origins } = event else {
            panic!("not OriginsChanged: {event:?}");
        };
        assert_eq!(
            origins
                .entries()
                .iter()
                .map(|o| o.as_str())
                .collect::<Vec<_>>(),
            ["https://a.test"]
        );
    }

    #[test]
    fn current_events_pass_through_unchanged() {
        let payload = json!({"OriginsChanged": {"origins": ["https://a.test"]}});
        let current = stored("OriginsChanged", EVENT_VERSION, payload.clone());
        let after = upcast(current);
        assert_eq!(after.payload, payload);
        assert_eq!(after.event_version, EVENT_VERSION);
    }
}
