//! The `ClientKey` aggregate: the rules for changing a client key, and the fold that
//! rebuilds its state from events. The same fold serves the command side, the read
//! models and the auditors' point-in-time replays, so all three agree by construction.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::commands::ClientKeyCommand;
use crate::config::{Text, WidgetConfig};
use crate::errors::{ClientKeyError, MAX_GRACE_SECONDS, MAX_ORIGINS};
use crate::events::ClientKeyEvent;
use crate::keys::{ClientKeyId, PublicKey, SecretKeyFingerprint};
use crate::origin::AllowList;
use crate::policy::TokenPolicy;
use crate::services::ClientKeyServices;

/// A client key: `None` until created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientKey {
    state: Option<KeyState>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    #[default]
    Active,
    Disabled,
}

/// A rotated-out public key that still works until `valid_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousPublicKey {
    pub public_key: PublicKey,
    pub valid_until: DateTime<Utc>,
}

/// A rotated-out secret key (as its fingerprint) that still works until `valid_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecretKey {
    pub secret_key: SecretKeyFingerprint,
    pub valid_until: DateTime<Utc>,
}

/// Everything true about a created client key. Fields are public for the read models;
/// only [`ClientKey::apply`] changes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    pub id: ClientKeyId,
    pub name: Text,
    pub public_key: PublicKey,
    pub previous_public_keys: Vec<PreviousPublicKey>,
    pub secret_key: SecretKeyFingerprint,
    pub previous_secret_keys: Vec<PreviousSecretKey>,
    pub origins: AllowList,
    pub config: WidgetConfig,
    pub token_policy: TokenPolicy,
    pub status: KeyStatus,
    pub created_at: DateTime<Utc>,
    /// Key-wide cut-off: tokens with `iat` at or before it are refused.
    pub sessions_revoked_at_or_before: Option<i64>,
    /// Per-user cut-offs, same rule.
    pub user_sessions_revoked_at_or_before: BTreeMap<String, i64>,
}

impl KeyState {
    /// Whether a public key is this key's current one, or a previous one still in grace.
    /// `now` is asked only for a previous key: the current one, which nearly every public
    /// request names, needs no clock read. The key is the request's text as sent: only a
    /// well-formed key can equal one of these, so it needs no parsing (and no copy) first.
    pub fn accepts_public_key(&self, key: &str, now: impl FnOnce() -> DateTime<Utc>) -> bool {
        if self.public_key.as_str() == key {
            return true;
        }
        let mut in_grace = self
            .previous_public_keys
            .iter()
            .filter(|p| p.public_key.as_str() == key)
            .peekable();
        if in_grace.peek().is_none() {
            return false;
        }
        let now = now();
        in_grace.any(|p| now < p.valid_until)
    }

    /// Whether a token of `user` issued at `iat` was revoked by `revoke_sessions` or `disable`.
    pub fn is_revoked(&self, user: &str, iat: i64) -> bool {
        let key_wide = self
            .sessions_revoked_at_or_before
            .is_some_and(|cut| iat <= cut);
        let per_user = self
            .user_sessions_revoked_at_or_before
            .get(user)
            .is_some_and(|cut| iat <= *cut);
        key_wide || per_user
    }
}

impl ClientKey {
    pub fn state(&self) -> Option<&KeyState> {
        self.state.as_ref()
    }

    /// Rebuilds a key from its history (the domain tests; the service folds views
    /// through `projections::Fold` instead).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a ClientKeyEvent>) -> Self {
        let mut key = Self::default();
        for event in events {
            key.apply(event.clone());
        }
        key
    }

    /// A created key in a state folded elsewhere (a read model at a known version).
    pub fn from_state(state: KeyState) -> Self {
        Self { state: Some(state) }
    }

    /// The decision: at most one event per command, so each event is one operator act
    /// with its own metadata (actor, reason, idempotency key).
    pub fn decide(
        &self,
        command: ClientKeyCommand,
        now: DateTime<Utc>,
    ) -> Result<Option<ClientKeyEvent>, ClientKeyError> {
        let existing = || self.state.as_ref().ok_or(ClientKeyError::NotFound);
        let event = match command {
            ClientKeyCommand::Create {
                id,
                name,
                public_key,
                secret_key,
                origins,
                config,
                token_policy,
            } => {
                if self.state.is_some() {
                    return Err(ClientKeyError::AlreadyExists);
                }
                check_origins(&origins)?;
                ClientKeyEvent::ClientKeyCreated {
                    id,
                    name,
                    public_key,
                    secret_key,
                    origins,
                    config,
                    token_policy,
                    at: now,
                }
            }
            ClientKeyCommand::ChangeOrigins { origins } => {
                existing()?;
                check_origins(&origins)?;
                ClientKeyEvent::OriginsChanged { origins }
            }
            ClientKeyCommand::UpdateConfig { config } => {
                existing()?;
                ClientKeyEvent::ConfigUpdated { config }
            }
            ClientKeyCommand::SetTokenPolicy { policy } => {
                existing()?;
                ClientKeyEvent::TokenPolicySet { policy }
            }
            ClientKeyCommand::RotateSecretKey {
                new_secret_key,
                grace_seconds,
            } => {
                let state = existing()?;
                let valid_until = grace_end(now, grace_seconds)?;
                let reused = state.secret_key.hash == new_secret_key.hash
                    || state
                        .previous_secret_keys
                        .iter()
                        .any(|p| p.secret_key.hash == new_secret_key.hash);
                if reused {
                    return Err(ClientKeyError::KeyReused);
                }
                ClientKeyEvent::SecretKeyRotated {
                    secret_key: new_secret_key,
                    previous: state.secret_key.clone(),
                    previous_valid_until: valid_until,
                    at: now,
                }
            }
            ClientKeyCommand::RotatePublicKey {
                new_public_key,
                grace_seconds,
            } => {
                let state = existing()?;
                let valid_until = grace_end(now, grace_seconds)?;
                let reused = state.public_key == new_public_key
                    || state
                        .previous_public_keys
                        .iter()
                        .any(|p| p.public_key == new_public_key);
                if reused {
                    return Err(ClientKeyError::KeyReused);
                }
                ClientKeyEvent::PublicKeyRotated {
                    public_key: new_public_key,
                    previous: state.public_key.clone(),
                    previous_valid_until: valid_until,
                    at: now,
                }
            }
            ClientKeyCommand::ExpirePreviousKeys => {
                let state = existing()?;
                let any_in_grace = state
                    .previous_public_keys
                    .iter()
                    .any(|p| now < p.valid_until)
                    || state
                        .previous_secret_keys
                        .iter()
                        .any(|p| now < p.valid_until);
                if !any_in_grace {
                    return Ok(None);
                }
                ClientKeyEvent::PreviousKeysExpired { at: now }
            }
            ClientKeyCommand::RevokeSessions { user_id } => {
                existing()?;
                ClientKeyEvent::SessionsRevoked {
                    user_id,
                    issued_at_or_before: now.timestamp(),
                }
            }
            ClientKeyCommand::Disable => {
                if existing()?.status == KeyStatus::Disabled {
                    return Ok(None);
                }
                ClientKeyEvent::ClientKeyDisabled { at: now }
            }
            ClientKeyCommand::Enable => {
                if existing()?.status == KeyStatus::Active {
                    return Ok(None);
                }
                ClientKeyEvent::ClientKeyEnabled { at: now }
            }
        };
        Ok(Some(event))
    }
}

fn check_origins(origins: &AllowList) -> Result<(), ClientKeyError> {
    if origins.len() > MAX_ORIGINS {
        return Err(ClientKeyError::TooManyOrigins);
    }
    // Checked on new allowlists only, never when parsing: an entry stored before this
    // rule must still replay.
    if let Some(entry) = origins
        .entries()
        .iter()
        .find(|entry| entry.is_wildcard_over_public_suffix())
    {
        return Err(ClientKeyError::PublicSuffixWildcard(entry.to_string()));
    }
    Ok(())
}

fn grace_end(now: DateTime<Utc>, grace_seconds: u32) -> Result<DateTime<Utc>, ClientKeyError> {
    if grace_seconds > MAX_GRACE_SECONDS {
        return Err(ClientKeyError::GraceOutOfRange);
    }
    Ok(now + Duration::seconds(i64::from(grace_seconds)))
}

impl Aggregate for ClientKey {
    /// Frozen: it names every row of this aggregate in the event store.
    const TYPE: &'static str = "ClientKey";
    type Command = ClientKeyCommand;
    type Event = ClientKeyEvent;
    type Error = ClientKeyError;
    type Services = ClientKeyServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command, services.now())? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match self.state.as_mut() {
            Some(state) => state.apply(event),
            None => self.state = KeyState::created(event),
        }
    }
}

impl KeyState {
    /// The state a creation event starts; `None` for any other event.
    pub fn created(event: ClientKeyEvent) -> Option<Self> {
        let ClientKeyEvent::ClientKeyCreated {
            id,
            name,
            public_key,
            secret_key,
            origins,
            config,
            token_policy,
            at,
        } = event
        else {
            return None;
        };
        Some(Self {
            id,
            name,
            public_key,
            previous_public_keys: Vec::new(),
            secret_key,
            previous_secret_keys: Vec::new(),
            origins,
            config,
            token_policy,
            status: KeyStatus::Active,
            created_at: at,
            sessions_revoked_at_or_before: None,
            user_sessions_revoked_at_or_before: BTreeMap::new(),
        })
    }

    /// The fold step for every event after creation.
    pub fn apply(&mut self, event: ClientKeyEvent) {
        match event {
            // A second creation never passes `decide`; a stored one changes nothing.
            ClientKeyEvent::ClientKeyCreated { .. } => {}
            ClientKeyEvent::OriginsChanged { origins } => self.origins = origins,
            ClientKeyEvent::ConfigUpdated { config } => self.config = config,
            ClientKeyEvent::TokenPolicySet { policy } => self.token_policy = policy,
            ClientKeyEvent::SecretKeyRotated {
                secret_key,
                previous,
                previous_valid_until,
                at,
            } => {
                self.previous_secret_keys.retain(|p| at < p.valid_until);
                self.previous_secret_keys.push(PreviousSecretKey {
                    secret_key: previous,
                    valid_until: previous_valid_until,
                });
                self.secret_key = secret_key;
            }
            ClientKeyEvent::PublicKeyRotated {
                public_key,
                previous,
                previous_valid_until,
                at,
            } => {
                self.previous_public_keys.retain(|p| at < p.valid_until);
                self.previous_public_keys.push(PreviousPublicKey {
                    public_key: previous,
                    valid_until: previous_valid_until,
                });
                self.public_key = public_key;
            }
            ClientKeyEvent::PreviousKeysExpired { .. } => {
                self.previous_public_keys.clear();
                self.previous_secret_keys.clear();
            }
            ClientKeyEvent::SessionsRevoked {
                user_id,
                issued_at_or_before,
            } => match user_id {
                Some(user) => {
                    let cut = self
                        .user_sessions_revoked_at_or_before
                        .entry(user.as_str().to_owned())
                        .or_insert(issued_at_or_before);
                    *cut = (*cut).max(issued_at_or_before);
                }
                None => raise_cut_off(&mut self.sessions_revoked_at_or_before, issued_at_or_before),
            },
            ClientKeyEvent::ClientKeyDisabled { at } => {
                self.status = KeyStatus::Disabled;
                // Tokens minted before a disable stay refused after a later enable.
                raise_cut_off(&mut self.sessions_revoked_at_or_before, at.timestamp());
            }
            ClientKeyEvent::ClientKeyEnabled { .. } => self.status = KeyStatus::Active,
        }
    }
}

fn raise_cut_off(cut_off: &mut Option<i64>, at: i64) {
    *cut_off = Some(cut_off.map_or(at, |current| current.max(at)));
}
