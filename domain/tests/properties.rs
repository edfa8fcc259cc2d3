//! Property tests of the `ClientKey` aggregate: for any sequence of commands, at any
//! times, the state rebuilt from the recorded events (after the JSON round trip the
//! event store puts them through) is the state that applying them live gave.

use chrono::{DateTime, Duration, Utc};
use domain::errors::MAX_GRACE_SECONDS;
use domain::{
    AllowList, ClientKey, ClientKeyCommand, ClientKeyEvent, ClientKeyId, OriginPattern, PublicKey,
    SecretKey, SecretKeyFingerprint, Text, TokenPolicy, WidgetConfig,
};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

/// A small pool of each value, so reuse (a key rotated back in, a repeated origin) is
/// generated as often as fresh values.
fn public_key(seed: u8) -> PublicKey {
    PublicKey::generate(&mut StdRng::seed_from_u64(u64::from(seed % 4)))
}

fn secret(seed: u8) -> SecretKeyFingerprint {
    SecretKey::generate(&mut StdRng::seed_from_u64(100 + u64::from(seed % 4))).fingerprint()
}

fn origins(seed: u8) -> AllowList {
    const POOL: [&str; 5] = [
        "https://acme.test",
        "https://*.acme.test",
        "http://localhost:*",
        "https://*.co.uk",
        "https://shop.example:8443",
    ];
    let entries = (0..POOL.len())
        .filter(|i| seed & (1 << i) != 0)
        .map(|i| OriginPattern::parse(POOL[i]).expect("valid origin"))
        .collect();
    AllowList::new(entries)
}

fn policy(seed: u8) -> TokenPolicy {
    match seed % 3 {
        0 => TokenPolicy::default(),
        1 => TokenPolicy::new(60, 600, 7200, false).expect("valid policy"),
        _ => TokenPolicy::new(600, 86_400, 7_776_000, true).expect("valid policy"),
    }
}

fn text(s: &str) -> Text {
    Text::parse(s).expect("valid text")
}

/// One generated step: which command, a seed for its values, and how long after the
/// previous step it runs.
fn command(kind: u8, seed: u8) -> ClientKeyCommand {
    let grace = match seed % 4 {
        0 => 0,
        1 => 30,
        2 => 3600,
        _ => MAX_GRACE_SECONDS + u32::from(seed % 2),
    };
    match kind % 10 {
        0 => ClientKeyCommand::Create {
            id: ClientKeyId::generate(&mut StdRng::seed_from_u64(1)),
            name: text("Acme"),
            public_key: public_key(seed),
            secret_key: secret(seed),
            origins: origins(seed),
            config: WidgetConfig::default(),
            token_policy: policy(seed),
        },
        1 => ClientKeyCommand::ChangeOrigins {
            origins: origins(seed),
        },
        2 => {
            let mut config = WidgetConfig::default();
            config.agent.display_name = Some(text(&format!("Agent {}", seed % 3)));
            ClientKeyCommand::UpdateConfig { config }
        }
        3 => ClientKeyCommand::SetTokenPolicy {
            policy: policy(seed),
        },
        4 => ClientKeyCommand::RotateSecretKey {
            new_secret_key: secret(seed / 4),
            grace_seconds: grace,
        },
        5 => ClientKeyCommand::RotatePublicKey {
            new_public_key: public_key(seed / 4),
            grace_seconds: grace,
        },
        6 => ClientKeyCommand::ExpirePreviousKeys,
        7 => ClientKeyCommand::RevokeSessions {
            user_id: seed
                .is_multiple_of(2)
                .then(|| text(&format!("user-{}", seed % 3))),
        },
        8 => ClientKeyCommand::Disable,
        _ => ClientKeyCommand::Enable,
    }
}

fn steps() -> impl Strategy<Value = Vec<(u8, u8, u32)>> {
    // Mostly seconds apart, sometimes past a grace period.
    let gap = prop_oneof![0u32..120, 3000u32..4000, 0u32..700_000];
    prop::collection::vec((any::<u8>(), any::<u8>(), gap), 0..40)
}

/// What the event store does to an event: it is written as JSON and read back.
fn round_trip(event: &ClientKeyEvent) -> ClientKeyEvent {
    let stored = serde_json::to_string(event).expect("serialises");
    serde_json::from_str(&stored).expect("reads back")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn replaying_the_recorded_events_gives_the_live_state(steps in steps()) {
        // Half the histories open with a creation, so most get going.
        let mut live = ClientKey::default();
        let mut recorded = Vec::new();
        let mut now = start();
        for (i, (kind, seed, gap)) in steps.into_iter().enumerate() {
            now += Duration::seconds(i64::from(gap));
            let kind = if i == 0 && seed.is_multiple_of(2) { 0 } else { kind };
            let command = command(kind, seed);
            let decided = live.decide(command.clone(), now);
            // Deciding is pure: the same command on the same state decides the same.
            prop_assert_eq!(&live.decide(command, now), &decided);
            // A no-op or a refusal records nothing and changes nothing.
            if let Ok(Some(event)) = decided {
                prop_assert_eq!(round_trip(&event), event.clone());
                cqrs_es::Aggregate::apply(&mut live, event.clone());
                recorded.push(round_trip(&event));
            }
            prop_assert_eq!(&ClientKey::from_events(&recorded), &live);
        }
        // The state itself survives the JSON round trip (auditors' snapshots).
        let json = serde_json::to_string(&live).expect("state serialises");
        prop_assert_eq!(serde_json::from_str::<ClientKey>(&json).expect("reads back"), live);
    }

    #[test]
    fn an_aggregate_is_created_once_and_only_by_a_creation(steps in steps()) {
        let mut live = ClientKey::default();
        let mut now = start();
        for (kind, seed, gap) in steps {
            now += Duration::seconds(i64::from(gap));
            let was_created = live.state().is_some();
            let is_create = matches!(command(kind, seed), ClientKeyCommand::Create { .. });
            if let Ok(Some(event)) = live.decide(command(kind, seed), now) {
                prop_assert_eq!(
                    matches!(event, ClientKeyEvent::ClientKeyCreated { .. }),
                    !was_created
                );
                cqrs_es::Aggregate::apply(&mut live, event);
            } else if !was_created && !is_create {
                prop_assert!(live.state().is_none());
            }
            if let Some(state) = live.state() {
                // Invariants every state keeps: no previous key equals the current one,
                // and no public-suffix wildcard got into the allowlist.
                prop_assert!(state.previous_public_keys.iter().all(|p| p.public_key != state.public_key));
                prop_assert!(state.origins.entries().iter().all(|o| !o.is_wildcard_over_public_suffix()));
            }
        }
    }
}
