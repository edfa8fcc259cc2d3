//! A client key's abuse limits (API.md "Abuse limits"): how many guest tokens one IP and
//! the whole key may mint per minute, and how many visitor tokens the key's backend may
//! mint. They live in the token policy's optional `limits` object; every field has a
//! default, and a value outside its bounds cannot be constructed. How the limits are
//! enforced (buckets, bursts, memory) is the server's business, not the domain's.

use serde::{Deserialize, Serialize};

pub const GUEST_PER_IP_BOUNDS: (u32, u32) = (1, 6_000);
pub const GUEST_PER_KEY_BOUNDS: (u32, u32) = (1, 600_000);
pub const USER_TOKEN_PER_KEY_BOUNDS: (u32, u32) = (1, 600_000);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be an integer from {min} to {max}")]
pub struct LimitsError {
    pub field: &'static str,
    pub min: u32,
    pub max: u32,
}

/// Requests per minute a client key allows, each within its API.md bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawLimits")]
pub struct RateLimits {
    guest_per_ip_per_minute: u32,
    guest_per_key_per_minute: u32,
    user_token_per_key_per_minute: u32,
}

impl Default for RateLimits {
    /// API.md: 30 guests per minute per IP, 6000 per key, 6000 visitor tokens per key.
    fn default() -> Self {
        Self {
            guest_per_ip_per_minute: 30,
            guest_per_key_per_minute: 6_000,
            user_token_per_key_per_minute: 6_000,
        }
    }
}

impl RateLimits {
    pub fn new(
        guest_per_ip_per_minute: u32,
        guest_per_key_per_minute: u32,
        user_token_per_key_per_minute: u32,
    ) -> Result<Self, LimitsError> {
        check(
            "guest_per_ip_per_minute",
            guest_per_ip_per_minute,
            GUEST_PER_IP_BOUNDS,
        )?;
        check(
            "guest_per_key_per_minute",
            guest_per_key_per_minute,
            GUEST_PER_KEY_BOUNDS,
        )?;
        check(
            "user_token_per_key_per_minute",
            user_token_per_key_per_minute,
            USER_TOKEN_PER_KEY_BOUNDS,
        )?;
        Ok(Self {
            guest_per_ip_per_minute,
            guest_per_key_per_minute,
            user_token_per_key_per_minute,
        })
    }

    pub fn guest_per_ip_per_minute(&self) -> u32 {
        self.guest_per_ip_per_minute
    }
    pub fn guest_per_key_per_minute(&self) -> u32 {
        self.guest_per_key_per_minute
    }
    pub fn user_token_per_key_per_minute(&self) -> u32 {
        self.user_token_per_key_per_minute
    }
}

fn check(field: &'static str, value: u32, (min, max): (u32, u32)) -> Result<(), LimitsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(LimitsError { field, min, max })
    }
}

/// The wire shape: a missing field keeps its default, unknown fields are refused.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    /// Guest tokens per minute from one client IP (1–6000, default 30).
    #[schema(minimum = 1, maximum = 6000)]
    guest_per_ip_per_minute: Option<u32>,
    /// Guest tokens per minute for the whole key (1–600000, default 6000).
    #[schema(minimum = 1, maximum = 600000)]
    guest_per_key_per_minute: Option<u32>,
    /// Visitor tokens per minute the key's backend may mint (1–600000, default 6000).
    #[schema(minimum = 1, maximum = 600000)]
    user_token_per_key_per_minute: Option<u32>,
}

impl TryFrom<RawLimits> for RateLimits {
    type Error = LimitsError;
    fn try_from(raw: RawLimits) -> Result<Self, Self::Error> {
        let default = RateLimits::default();
        RateLimits::new(
            raw.guest_per_ip_per_minute
                .unwrap_or(default.guest_per_ip_per_minute),
            raw.guest_per_key_per_minute
                .unwrap_or(default.guest_per_key_per_minute),
            raw.user_token_per_key_per_minute
                .unwrap_or(default.user_token_per_key_per_minute),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limits_are_the_ones_api_md_promises() {
        let limits = RateLimits::default();
        assert_eq!(
            (
                limits.guest_per_ip_per_minute(),
                limits.guest_per_key_per_minute(),
                limits.user_token_per_key_per_minute()
            ),
            (30, 6_000, 6_000)
        );
    }

    #[test]
    fn each_bound_is_inclusive() {
        assert!(RateLimits::new(1, 1, 1).is_ok());
        assert!(RateLimits::new(6_000, 600_000, 600_000).is_ok());
    }

    #[test]
    fn a_limit_outside_its_bounds_is_refused_naming_the_field() {
        assert_eq!(
            RateLimits::new(0, 6_000, 6_000),
            Err(LimitsError {
                field: "guest_per_ip_per_minute",
                min: 1,
                max: 6_000
            })
        );
        assert_eq!(
            RateLimits::new(6_001, 6_000, 6_000).unwrap_err().field,
            "guest_per_ip_per_minute"
        );
        assert_eq!(
            RateLimits::new(30, 600_001, 6_000).unwrap_err().field,
            "guest_per_key_per_minute"
        );
        assert_eq!(
            RateLimits::new(30, 6_000, 0).unwrap_err().field,
            "user_token_per_key_per_minute"
        );
    }

    #[test]
    fn a_partial_object_keeps_the_defaults_for_what_it_leaves_out() {
        let limits: RateLimits =
            serde_json::from_str(r#"{"guest_per_ip_per_minute": 2}"#).expect("valid");
        assert_eq!(limits, RateLimits::new(2, 6_000, 6_000).expect("in bounds"));
    }

    #[test]
    fn deserializing_refuses_zero_negative_fractional_and_unknown_values() {
        for (body, expected) in [
            (
                r#"{"guest_per_ip_per_minute": 0}"#,
                "guest_per_ip_per_minute must be an integer from 1 to 6000",
            ),
            (r#"{"guest_per_key_per_minute": -5}"#, "expected u32"),
            (r#"{"user_token_per_key_per_minute": 1.5}"#, "expected u32"),
            (r#"{"guest_per_ip_per_minute": "10"}"#, "expected u32"),
            (r#"{"per_minute": 10}"#, "unknown field `per_minute`"),
        ] {
            let err = serde_json::from_str::<RateLimits>(body).unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }
}
