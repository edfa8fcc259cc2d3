//! One client key as the read side sees it: the aggregate's state, its version, and the
//! public config response body rendered once per change (not once per request).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use domain::aggregate::KeyState;
use domain::ClientKeyEvent;
use serde::Serialize;
use serde_json::json;

/// An event as read back from the store, with its position in the key's history.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub aggregate_id: String,
    pub sequence: u64,
    pub event: ClientKeyEvent,
    /// When the command that recorded it ran (from the event's metadata).
    pub at: Option<DateTime<Utc>>,
    /// Its tamper-evidence link (from the metadata; `None` on events written before the
    /// chain existed).
    pub link: Option<String>,
}

/// A created client key at some version.
#[derive(Debug, Clone)]
pub struct ClientKeyView {
    state: KeyState,
    version: u64,
    updated_at: Option<DateTime<Utc>>,
    config_body: Bytes,
    etag: String,
    /// The chain link of the event at `version`, when it has one: the next command on
    /// this key links to it (see the widget-auth crate's `chain.rs`), so a node deciding
    /// from this view needs no read to extend the chain.
    link: Option<String>,
}

impl ClientKeyView {
    /// A view of `state` as of `version`, its config body rendered now (once per
    /// change, never per request). Folds build views through this ([`crate::fold`]).
    pub(crate) fn render(
        state: KeyState,
        version: u64,
        updated_at: Option<DateTime<Utc>>,
        link: Option<String>,
    ) -> Self {
        let config_body = Bytes::from(render_config(&state, version));
        let etag = format!("\"{}.{}\"", state.id.as_str(), version);
        Self {
            state,
            version,
            updated_at,
            config_body,
            etag,
            link,
        }
    }

    /// A view read back from a read-model snapshot: the state a fold reached at
    /// `version`, with that event's time and link. The body and ETag are rendered again
    /// (they are derived, so a snapshot never stores them).
    pub fn restore(
        state: KeyState,
        version: u64,
        updated_at: Option<DateTime<Utc>>,
        link: Option<String>,
    ) -> Self {
        Self::render(state, version, updated_at, link)
    }

    pub fn state(&self) -> &KeyState {
        &self.state
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The chain link of the event at [`Self::version`], if it has one.
    pub fn link(&self) -> Option<&str> {
        self.link.as_deref()
    }

    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }

    /// The `GET /api/v1/widget/config` body, ready to send.
    pub fn config_body(&self) -> &Bytes {
        &self.config_body
    }

    /// Strong ETag of the config body: it changes exactly when the key's version does.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The admin and auditor representation: everything but secrets.
    pub fn to_admin_json(&self) -> serde_json::Value {
        let s = self.state();
        json!({
            "id": s.id,
            "name": s.name,
            "status": s.status,
            "version": self.version,
            "created_at": s.created_at,
            "updated_at": self.updated_at,
            "public_key": s.public_key,
            "previous_public_keys": s.previous_public_keys,
            "secret_key_last_four": s.secret_key.last_four,
            "previous_secret_keys": s.previous_secret_keys.iter().map(|p| json!({
                "last_four": p.secret_key.last_four,
                "valid_until": p.valid_until,
            })).collect::<Vec<_>>(),
            "origins": s.origins,
            "config": s.config,
            "token_policy": s.token_policy,
            "sessions_revoked_at_or_before": s.sessions_revoked_at_or_before,
            "user_sessions_revoked_at_or_before": s.user_sessions_revoked_at_or_before,
        })
    }
}

fn render_config(state: &KeyState, version: u64) -> Vec<u8> {
    let config = &state.config;
    // Serialized straight from the state it borrows: building a `serde_json::Value`
    // first cloned every string of the config on each change (and on each key of the
    // start-up replay).
    let body = ConfigBody {
        agent: AgentBody {
            avatar_url: config.agent.avatar_url.as_ref(),
            display_name: config.agent.display_name.as_ref().unwrap_or(&state.name),
        },
        branding: &config.branding,
        client_key: &state.public_key,
        copy: &config.copy,
        guests_allowed: state.token_policy.guests_allowed(),
        locale: &config.locale,
        version,
    };
    // Serializing plain data into memory cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The public config body (API.md), fields in the order the endpoint has always sent.
#[derive(Serialize)]
struct ConfigBody<'a> {
    agent: AgentBody<'a>,
    branding: &'a domain::config::Branding,
    client_key: &'a domain::PublicKey,
    copy: &'a domain::config::Copy,
    guests_allowed: bool,
    locale: &'a domain::Locale,
    version: u64,
}

#[derive(Serialize)]
struct AgentBody<'a> {
    avatar_url: Option<&'a domain::HttpsUrl>,
    display_name: &'a domain::Text,
}
