//! What one event changed, given the key's state before it: a typed account computed by
//! the audit use cases ([`Change::of`]), and the one sentence people read for it (its
//! `Display`). Both edges that show changes (the CLI's history and token texts, and the
//! `summary` field of their JSON) render through that one `Display`, so the words never
//! differ between them; the use cases themselves never format anything.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use domain::aggregate::KeyState;
use domain::{ClientKeyEvent, OriginPattern, PublicKey, Text};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// What one event changed. Never holds a secret: secret keys appear by their last four
/// characters only.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Created {
        name: Text,
        public_key: PublicKey,
        secret_key_last_four: String,
        origins: Vec<OriginPattern>,
    },
    /// The allowlist was replaced: entries added (in the new list's order) and removed
    /// (in the old list's order); both empty when it was replaced by an equal list.
    Origins {
        added: Vec<OriginPattern>,
        removed: Vec<OriginPattern>,
    },
    /// The config was replaced; the leaves that differ (empty: unchanged).
    Config(Vec<FieldChange>),
    /// The token policy was replaced; the fields that differ (empty: unchanged).
    TokenPolicy(Vec<FieldChange>),
    SecretKeyRotated {
        previous_last_four: String,
        last_four: String,
        previous_valid_until: DateTime<Utc>,
    },
    PublicKeyRotated {
        previous: PublicKey,
        public_key: PublicKey,
        previous_valid_until: DateTime<Utc>,
    },
    /// Grace periods cut short: the previous keys that were still valid before it.
    GracePeriodsEnded {
        public_keys: Vec<PublicKey>,
        secret_keys_last_four: Vec<String>,
    },
    SessionsRevoked {
        user_id: Option<Text>,
        issued_at_or_before: i64,
    },
    Disabled,
    Enabled,
}

/// One leaf that differs between two versions of a nested value, by its dotted path in
/// the value's JSON form (the names API.md uses), with its old and new JSON values.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub path: String,
    pub old: Value,
    pub new: Value,
}

impl Change {
    /// What `event` changed, given the state before it (`None` before the creation).
    pub fn of(before: Option<&KeyState>, event: &ClientKeyEvent) -> Self {
        match event {
            ClientKeyEvent::ClientKeyCreated {
                name,
                public_key,
                secret_key,
                origins,
                ..
            } => Self::Created {
                name: name.clone(),
                public_key: public_key.clone(),
                secret_key_last_four: secret_key.last_four.clone(),
                origins: origins.entries().to_vec(),
            },
            ClientKeyEvent::OriginsChanged { origins } => {
                let old: &[OriginPattern] = before.map_or(&[], |s| s.origins.entries());
                let new = origins.entries();
                let missing_from = |list: &[OriginPattern], o: &OriginPattern| {
                    !list.iter().any(|other| other.as_str() == o.as_str())
                };
                Self::Origins {
                    added: new
                        .iter()
                        .filter(|o| missing_from(old, o))
                        .cloned()
                        .collect(),
                    removed: old
                        .iter()
                        .filter(|o| missing_from(new, o))
                        .cloned()
                        .collect(),
                }
            }
            // Configs and policies are compared in their JSON form: it names the fields
            // as API.md does, and a field added to the config is covered without a line here.
            ClientKeyEvent::ConfigUpdated { config } => Self::Config(changed_fields(
                before.map(|s| json_of(&s.config)),
                json_of(config),
            )),
            ClientKeyEvent::TokenPolicySet { policy } => Self::TokenPolicy(changed_fields(
                before.map(|s| json_of(&s.token_policy)),
                json_of(policy),
            )),
            ClientKeyEvent::SecretKeyRotated {
                secret_key,
                previous,
                previous_valid_until,
                ..
            } => Self::SecretKeyRotated {
                previous_last_four: previous.last_four.clone(),
                last_four: secret_key.last_four.clone(),
                previous_valid_until: *previous_valid_until,
            },
            ClientKeyEvent::PublicKeyRotated {
                public_key,
                previous,
                previous_valid_until,
                ..
            } => Self::PublicKeyRotated {
                previous: previous.clone(),
                public_key: public_key.clone(),
                previous_valid_until: *previous_valid_until,
            },
            ClientKeyEvent::PreviousKeysExpired { at } => Self::GracePeriodsEnded {
                public_keys: before
                    .map(|state| {
                        state
                            .previous_public_keys
                            .iter()
                            .filter(|p| *at < p.valid_until)
                            .map(|p| p.public_key.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                secret_keys_last_four: before
                    .map(|state| {
                        state
                            .previous_secret_keys
                            .iter()
                            .filter(|p| *at < p.valid_until)
                            .map(|p| p.secret_key.last_four.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            ClientKeyEvent::SessionsRevoked {
                user_id,
                issued_at_or_before,
            } => Self::SessionsRevoked {
                user_id: user_id.clone(),
                issued_at_or_before: *issued_at_or_before,
            },
            ClientKeyEvent::ClientKeyDisabled { .. } => Self::Disabled,
            ClientKeyEvent::ClientKeyEnabled { .. } => Self::Enabled,
        }
    }
}

/// The summary: a readable account of the change, the same on every edge.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created {
                name,
                public_key,
                secret_key_last_four,
                origins,
            } => write!(
                f,
                "created \"{}\" (public key {}, secret key \u{2026}{secret_key_last_four}, origins: {})",
                name.as_str(),
                public_key.as_str(),
                list(origins.iter().map(|o| o.as_str().to_owned()))
            ),
            Self::Origins { added, removed } if added.is_empty() && removed.is_empty() => {
                f.write_str("origins: unchanged")
            }
            Self::Origins { added, removed } => {
                let changes: Vec<String> = added
                    .iter()
                    .map(|o| format!("+{}", o.as_str()))
                    .chain(removed.iter().map(|o| format!("\u{2212}{}", o.as_str())))
                    .collect();
                write!(f, "origins: {}", changes.join(" "))
            }
            Self::Config(fields) => write_fields(f, "config", fields),
            Self::TokenPolicy(fields) => write_fields(f, "token policy", fields),
            Self::SecretKeyRotated {
                previous_last_four,
                last_four,
                previous_valid_until,
            } => write!(
                f,
                "secret key rotated (\u{2026}{previous_last_four} \u{2192} \u{2026}{last_four}, \
                 old valid until {})",
                time(previous_valid_until)
            ),
            Self::PublicKeyRotated {
                previous,
                public_key,
                previous_valid_until,
            } => write!(
                f,
                "public key rotated ({} \u{2192} {}, old valid until {})",
                previous.as_str(),
                public_key.as_str(),
                time(previous_valid_until)
            ),
            Self::GracePeriodsEnded {
                public_keys,
                secret_keys_last_four,
            } => {
                let ended = public_keys
                    .iter()
                    .map(|k| k.as_str().to_owned())
                    .chain(secret_keys_last_four.iter().map(|l| format!("\u{2026}{l}")));
                write!(f, "grace periods ended now for {}", list(ended))
            }
            Self::SessionsRevoked {
                user_id,
                issued_at_or_before,
            } => {
                let cut = DateTime::from_timestamp(*issued_at_or_before, 0)
                    .map_or_else(|| issued_at_or_before.to_string(), |t| time(&t));
                match user_id {
                    Some(user) => write!(
                        f,
                        "sessions of user {} issued at or before {cut} revoked",
                        user.as_str()
                    ),
                    None => write!(f, "all sessions issued at or before {cut} revoked"),
                }
            }
            Self::Disabled => f.write_str("disabled (tokens issued until now stay refused)"),
            Self::Enabled => f.write_str("enabled"),
        }
    }
}

/// In JSON a change is its summary, the field scripts have always read.
impl Serialize for Change {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `path old → new`.
impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} \u{2192} {}", self.path, self.old, self.new)
    }
}

fn write_fields(f: &mut fmt::Formatter<'_>, what: &str, fields: &[FieldChange]) -> fmt::Result {
    if fields.is_empty() {
        return write!(f, "{what}: unchanged");
    }
    let fields: Vec<String> = fields.iter().map(ToString::to_string).collect();
    write!(f, "{what}: {}", fields.join(", "))
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn list(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn json_of(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Every leaf that differs between two JSON values, in path order.
fn changed_fields(old: Option<Value>, new: Value) -> Vec<FieldChange> {
    fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<FieldChange>) {
        match (old, new) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(
                        &child,
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            (a, b) if a == b => {}
            (a, b) => out.push(FieldChange {
                path: path.to_owned(),
                old: a.clone(),
                new: b.clone(),
            }),
        }
    }
    let mut out = Vec::new();
    walk("", old.as_ref().unwrap_or(&Value::Null), &new, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn origins(list: &[&str]) -> Vec<OriginPattern> {
        list.iter()
            .map(|o| serde_json::from_value(json!(o)).expect("origin"))
            .collect()
    }

    #[test]
    fn an_origins_change_lists_additions_then_removals() {
        let change = Change::Origins {
            added: origins(&["https://c.test"]),
            removed: origins(&["https://b.test"]),
        };
        assert_eq!(
            change.to_string(),
            "origins: +https://c.test \u{2212}https://b.test"
        );
        let unchanged = Change::Origins {
            added: vec![],
            removed: vec![],
        };
        assert_eq!(unchanged.to_string(), "origins: unchanged");
    }

    #[test]
    fn nested_fields_are_compared_leaf_by_leaf_in_path_order() {
        let fields = changed_fields(
            Some(json!({"b": 1, "a": {"x": "same", "y": true}})),
            json!({"b": 2, "a": {"x": "same", "y": false}}),
        );
        assert_eq!(
            Change::TokenPolicy(fields).to_string(),
            "token policy: a.y true \u{2192} false, b 1 \u{2192} 2"
        );
        assert_eq!(
            Change::Config(changed_fields(Some(json!({"a": 1})), json!({"a": 1}))).to_string(),
            "config: unchanged"
        );
    }

    #[test]
    fn a_revocation_names_its_cut_off_in_whole_seconds() {
        let change = Change::SessionsRevoked {
            user_id: None,
            issued_at_or_before: 1_767_225_600,
        };
        assert_eq!(
            change.to_string(),
            "all sessions issued at or before 2026-01-01T00:00:00Z revoked"
        );
    }

    #[test]
    fn ending_no_grace_period_says_none() {
        let change = Change::GracePeriodsEnded {
            public_keys: vec![],
            secret_keys_last_four: vec!["abcd".to_owned()],
        };
        assert_eq!(
            change.to_string(),
            "grace periods ended now for \u{2026}abcd"
        );
        let none = Change::GracePeriodsEnded {
            public_keys: vec![],
            secret_keys_last_four: vec![],
        };
        assert_eq!(none.to_string(), "grace periods ended now for none");
    }

    #[test]
    fn a_change_serializes_as_its_summary() {
        assert_eq!(
            serde_json::to_value(Change::Enabled).expect("json"),
            json!("enabled")
        );
    }
}
