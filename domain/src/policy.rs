//! The token policy of a client key: how long each kind of token lives and whether
//! anonymous visitors may get one. Bounds come from API.md; a policy outside them
//! cannot be constructed.

use serde::{Deserialize, Serialize};

use crate::limits::RateLimits;

pub const VISITOR_TTL_BOUNDS: (u32, u32) = (10, 600);
pub const SESSION_TTL_BOUNDS: (u32, u32) = (60, 86_400);
pub const REFRESH_TTL_BOUNDS: (u32, u32) = (3_600, 7_776_000);
/// A refresh family's absolute lifetime: 1 h to 365 days, and never shorter than the
/// policy's refresh lifetime (checked in [`TokenPolicy::with_refresh_absolute_ttl`]).
pub const REFRESH_ABSOLUTE_TTL_BOUNDS: (u32, u32) = (3_600, 31_536_000);
/// API.md: a family lives 30 days unless the policy says otherwise.
pub const DEFAULT_REFRESH_ABSOLUTE_TTL_SECONDS: u32 = 30 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be between {min} and {max} seconds")]
pub struct PolicyError {
    pub field: &'static str,
    pub min: u32,
    pub max: u32,
}

/// Lifetimes and guest access for one client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy")]
pub struct TokenPolicy {
    visitor_token_ttl_seconds: u32,
    session_ttl_seconds: u32,
    refresh_ttl_seconds: u32,
    /// How long a refresh family may live from its first token, however often rotated.
    refresh_absolute_ttl_seconds: u32,
    guests_allowed: bool,
    /// Abuse limits; a policy recorded before they existed gets the defaults.
    limits: RateLimits,
}

impl Default for TokenPolicy {
    /// API.md: visitor 60 s, session 15 min, refresh 7 days, guests allowed.
    fn default() -> Self {
        Self {
            visitor_token_ttl_seconds: 60,
            session_ttl_seconds: 15 * 60,
            refresh_ttl_seconds: 7 * 24 * 3600,
            refresh_absolute_ttl_seconds: DEFAULT_REFRESH_ABSOLUTE_TTL_SECONDS,
            guests_allowed: true,
            limits: RateLimits::default(),
        }
    }
}

impl TokenPolicy {
    /// A policy with the default absolute refresh lifetime (30 days, or the refresh
    /// lifetime when that is longer, so every valid refresh lifetime has a valid default);
    /// [`Self::with_refresh_absolute_ttl`] sets another.
    pub fn new(
        visitor_token_ttl_seconds: u32,
        session_ttl_seconds: u32,
        refresh_ttl_seconds: u32,
        guests_allowed: bool,
    ) -> Result<Self, PolicyError> {
        check(
            "visitor_token_ttl_seconds",
            visitor_token_ttl_seconds,
            VISITOR_TTL_BOUNDS,
        )?;
        check(
            "session_ttl_seconds",
            session_ttl_seconds,
            SESSION_TTL_BOUNDS,
        )?;
        check(
            "refresh_ttl_seconds",
            refresh_ttl_seconds,
            REFRESH_TTL_BOUNDS,
        )?;
        Ok(Self {
            visitor_token_ttl_seconds,
            session_ttl_seconds,
            refresh_ttl_seconds,
            refresh_absolute_ttl_seconds: DEFAULT_REFRESH_ABSOLUTE_TTL_SECONDS
                .max(refresh_ttl_seconds),
            guests_allowed,
            limits: RateLimits::default(),
        })
    }

    /// This policy with refresh families ending `seconds` after their first token:
    /// within [`REFRESH_ABSOLUTE_TTL_BOUNDS`] and not shorter than the refresh lifetime
    /// (a refresh token could otherwise outlive its own family).
    pub fn with_refresh_absolute_ttl(self, seconds: u32) -> Result<Self, PolicyError> {
        let (min, max) = REFRESH_ABSOLUTE_TTL_BOUNDS;
        check(
            "refresh_absolute_ttl_seconds",
            seconds,
            (min.max(self.refresh_ttl_seconds), max),
        )?;
        Ok(Self {
            refresh_absolute_ttl_seconds: seconds,
            ..self
        })
    }

    /// This policy with other abuse limits (the limits are checked by [`RateLimits`]).
    pub fn with_limits(self, limits: RateLimits) -> Self {
        Self { limits, ..self }
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    pub fn visitor_token_ttl_seconds(&self) -> u32 {
        self.visitor_token_ttl_seconds
    }
    pub fn session_ttl_seconds(&self) -> u32 {
        self.session_ttl_seconds
    }
    pub fn refresh_ttl_seconds(&self) -> u32 {
        self.refresh_ttl_seconds
    }
    pub fn refresh_absolute_ttl_seconds(&self) -> u32 {
        self.refresh_absolute_ttl_seconds
    }
    pub fn guests_allowed(&self) -> bool {
        self.guests_allowed
    }
}

fn check(field: &'static str, value: u32, (min, max): (u32, u32)) -> Result<(), PolicyError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(PolicyError { field, min, max })
    }
}

/// The wire shape: any field left out keeps its default, unknown fields are refused.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TokenPolicy)]
pub(crate) struct RawPolicy {
    visitor_token_ttl_seconds: Option<u32>,
    session_ttl_seconds: Option<u32>,
    refresh_ttl_seconds: Option<u32>,
    /// Absent in policies recorded before it existed: those load with the default.
    refresh_absolute_ttl_seconds: Option<u32>,
    guests_allowed: Option<bool>,
    /// The abuse limits (API.md "Abuse limits"); a field left out keeps its default.
    #[schema(inline)]
    limits: Option<RateLimits>,
}

impl TryFrom<RawPolicy> for TokenPolicy {
    type Error = PolicyError;
    fn try_from(raw: RawPolicy) -> Result<Self, Self::Error> {
        let default = TokenPolicy::default();
        let policy = TokenPolicy::new(
            raw.visitor_token_ttl_seconds
                .unwrap_or(default.visitor_token_ttl_seconds),
            raw.session_ttl_seconds
                .unwrap_or(default.session_ttl_seconds),
            raw.refresh_ttl_seconds
                .unwrap_or(default.refresh_ttl_seconds),
            raw.guests_allowed.unwrap_or(default.guests_allowed),
        )?
        .with_limits(raw.limits.unwrap_or_default());
        match raw.refresh_absolute_ttl_seconds {
            Some(seconds) => policy.with_refresh_absolute_ttl(seconds),
            None => Ok(policy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_the_one_api_md_promises() {
        let policy = TokenPolicy::default();
        assert_eq!(
            (
                policy.visitor_token_ttl_seconds(),
                policy.session_ttl_seconds(),
                policy.refresh_ttl_seconds(),
                policy.guests_allowed()
            ),
            (60, 900, 604_800, true)
        );
    }

    #[test]
    fn each_bound_is_inclusive() {
        assert!(TokenPolicy::new(10, 60, 3600, false).is_ok());
        assert!(TokenPolicy::new(600, 86_400, 7_776_000, true).is_ok());
    }

    #[test]
    fn a_lifetime_outside_its_bounds_is_refused_naming_the_field() {
        assert_eq!(
            TokenPolicy::new(9, 900, 3600, true),
            Err(PolicyError {
                field: "visitor_token_ttl_seconds",
                min: 10,
                max: 600
            })
        );
        assert_eq!(
            TokenPolicy::new(60, 86_401, 3600, true).unwrap_err().field,
            "session_ttl_seconds"
        );
        assert_eq!(
            TokenPolicy::new(60, 900, 3599, true).unwrap_err().field,
            "refresh_ttl_seconds"
        );
    }

    #[test]
    fn a_partial_policy_keeps_the_defaults_for_what_it_leaves_out() {
        let policy: TokenPolicy = serde_json::from_str(r#"{"guests_allowed": false}"#).unwrap();
        assert_eq!(policy, TokenPolicy::new(60, 900, 604_800, false).unwrap());
    }

    #[test]
    fn the_absolute_refresh_lifetime_defaults_to_thirty_days_or_the_refresh_lifetime() {
        assert_eq!(
            TokenPolicy::default().refresh_absolute_ttl_seconds(),
            2_592_000
        );
        let long = TokenPolicy::new(60, 900, 7_776_000, true).unwrap();
        assert_eq!(long.refresh_absolute_ttl_seconds(), 7_776_000);
    }

    #[test]
    fn the_absolute_refresh_lifetime_is_bounded_and_never_below_the_refresh_lifetime() {
        let policy = TokenPolicy::new(60, 900, 86_400, true).unwrap();
        assert_eq!(
            policy
                .with_refresh_absolute_ttl(86_400)
                .unwrap()
                .refresh_absolute_ttl_seconds(),
            86_400
        );
        assert!(policy.with_refresh_absolute_ttl(31_536_000).is_ok());
        assert_eq!(
            policy.with_refresh_absolute_ttl(86_399),
            Err(PolicyError {
                field: "refresh_absolute_ttl_seconds",
                min: 86_400,
                max: 31_536_000
            })
        );
        assert_eq!(
            policy
                .with_refresh_absolute_ttl(31_536_001)
                .unwrap_err()
                .max,
            31_536_000
        );
        let short = TokenPolicy::new(60, 900, 3600, true).unwrap();
        assert_eq!(short.with_refresh_absolute_ttl(3599).unwrap_err().min, 3600);
    }

    #[test]
    fn a_policy_recorded_before_the_absolute_lifetime_existed_still_loads() {
        let old: TokenPolicy = serde_json::from_str(
            r#"{"visitor_token_ttl_seconds": 60, "session_ttl_seconds": 900,
                "refresh_ttl_seconds": 7776000, "guests_allowed": true}"#,
        )
        .unwrap();
        assert_eq!(old.refresh_absolute_ttl_seconds(), 7_776_000);
        let json = serde_json::to_value(old).unwrap();
        assert_eq!(json["refresh_absolute_ttl_seconds"], 7_776_000);
    }

    #[test]
    fn deserializing_enforces_the_bounds_and_refuses_unknown_fields() {
        let err = serde_json::from_str::<TokenPolicy>(r#"{"session_ttl_seconds": 5}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("session_ttl_seconds must be between 60 and 86400 seconds"),
            "{err}"
        );
        let err = serde_json::from_str::<TokenPolicy>(r#"{"ttl": 5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `ttl`"), "{err}");
    }

    #[test]
    fn a_policy_recorded_before_limits_existed_loads_with_the_default_limits() {
        let policy: TokenPolicy = serde_json::from_str(
            r#"{"visitor_token_ttl_seconds": 60, "session_ttl_seconds": 900, "refresh_ttl_seconds": 604800, "guests_allowed": true}"#,
        )
        .expect("an old event's policy still loads");
        assert_eq!(policy.limits(), &RateLimits::default());
    }

    #[test]
    fn limits_in_a_policy_are_checked_and_shown_with_defaults_filled_in() {
        let policy: TokenPolicy =
            serde_json::from_str(r#"{"limits": {"guest_per_ip_per_minute": 2}}"#).expect("valid");
        assert_eq!(policy.limits().guest_per_ip_per_minute(), 2);
        let shown = serde_json::to_value(policy).expect("serializes");
        assert_eq!(
            shown["limits"],
            serde_json::json!({"guest_per_ip_per_minute": 2, "guest_per_key_per_minute": 6000, "user_token_per_key_per_minute": 6000})
        );
        let round_trip: TokenPolicy = serde_json::from_value(shown).expect("reads back");
        assert_eq!(round_trip, policy);
        let err = serde_json::from_str::<TokenPolicy>(r#"{"limits": {"burst": 3}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `burst`"), "{err}");
    }
}
