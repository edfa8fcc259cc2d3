//! Property tests of the read models: after any interleaving of several keys' events,
//! with echoes (events delivered again), gaps and stale full reloads mixed in, the
//! directory holds for each key exactly the view a fresh fold of that key's events gives,
//! and its indexes find the key by every public key and secret hash it accepts, and by
//! no other.

use chrono::{DateTime, Duration, Utc};
use domain::{
    AllowList, ClientKey, ClientKeyCommand, ClientKeyId, OriginPattern, PublicKey, SecretKey,
    SecretKeyFingerprint, Text, TokenPolicy, WidgetConfig,
};
use projections::{ApplyOutcome, ClientKeyView, Directory, Fold, StoredEvent};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const KEYS: u64 = 3;

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn text(s: &str) -> Text {
    Text::parse(s).expect("valid text")
}

/// Each key draws its keys from its own small pool (ids are unique across keys in the
/// service, and so are generated keys), so rotating back to an old key happens often.
fn public_key(key: u64, seed: u8) -> PublicKey {
    PublicKey::generate(&mut StdRng::seed_from_u64(key * 100 + u64::from(seed % 4)))
}

fn secret(key: u64, seed: u8) -> SecretKeyFingerprint {
    SecretKey::generate(&mut StdRng::seed_from_u64(
        10_000 + key * 100 + u64::from(seed % 4),
    ))
    .fingerprint()
}

fn id(key: u64) -> ClientKeyId {
    ClientKeyId::generate(&mut StdRng::seed_from_u64(1_000_000 + key))
}

fn command(key: u64, kind: u8, seed: u8) -> ClientKeyCommand {
    let grace = [0, 30, 3600, 86_400][usize::from(seed % 4)];
    match kind % 9 {
        0 => ClientKeyCommand::Create {
            id: id(key),
            name: text("Acme"),
            public_key: public_key(key, seed),
            secret_key: secret(key, seed),
            origins: AllowList::new(vec![
                OriginPattern::parse("https://acme.test").expect("valid origin")
            ]),
            config: WidgetConfig::default(),
            token_policy: TokenPolicy::default(),
        },
        1 => ClientKeyCommand::ChangeOrigins {
            origins: AllowList::new(vec![OriginPattern::parse(
                ["https://a.test", "https://*.b.test", "http://localhost:*"][usize::from(seed % 3)],
            )
            .expect("valid origin")]),
        },
        2 => {
            let mut config = WidgetConfig::default();
            config.agent.display_name = Some(text(&format!("Agent {}", seed % 3)));
            ClientKeyCommand::UpdateConfig { config }
        }
        3 => ClientKeyCommand::RotateSecretKey {
            new_secret_key: secret(key, seed / 4),
            grace_seconds: grace,
        },
        4 => ClientKeyCommand::RotatePublicKey {
            new_public_key: public_key(key, seed / 4),
            grace_seconds: grace,
        },
        5 => ClientKeyCommand::ExpirePreviousKeys,
        6 => ClientKeyCommand::RevokeSessions {
            user_id: seed.is_multiple_of(2).then(|| text("user-1")),
        },
        7 => ClientKeyCommand::Disable,
        _ => ClientKeyCommand::Enable,
    }
}

/// One step of the generated run.
#[derive(Debug, Clone)]
enum Step {
    /// Key `key` runs a command `gap` seconds after the previous step.
    Command {
        key: u8,
        kind: u8,
        seed: u8,
        gap: u32,
    },
    /// An event the directory already has arrives again (the feed echoing a command).
    Echo { key: u8, back: u8 },
    /// An event arrives with one missing before it.
    Skip { key: u8 },
    /// A reload installs a view folded from a prefix of the history.
    StaleReload { key: u8, back: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    let gap = prop_oneof![0u32..120, 3000u32..4000, 80_000u32..90_000];
    prop_oneof![
        6 => (any::<u8>(), any::<u8>(), any::<u8>(), gap)
            .prop_map(|(key, kind, seed, gap)| Step::Command { key, kind, seed, gap }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(key, back)| Step::Echo { key, back }),
        1 => any::<u8>().prop_map(|key| Step::Skip { key }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(key, back)| Step::StaleReload { key, back }),
    ]
}

struct KeyRun {
    live: ClientKey,
    events: Vec<StoredEvent>,
}

fn fold(events: &[StoredEvent]) -> Option<ClientKeyView> {
    let mut fold = Fold::new();
    for event in events {
        fold.push(event.clone());
    }
    fold.finish()
}

fn same_view(a: &ClientKeyView, b: &ClientKeyView) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.state(), b.state());
    prop_assert_eq!(a.version(), b.version());
    prop_assert_eq!(a.link(), b.link());
    prop_assert_eq!(a.updated_at(), b.updated_at());
    prop_assert_eq!(a.config_body(), b.config_body());
    prop_assert_eq!(a.etag(), b.etag());
    prop_assert_eq!(a.to_admin_json(), b.to_admin_json());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_directory_after_any_event_sequence_equals_a_fresh_fold(
        steps in prop::collection::vec(step(), 0..60)
    ) {
        let directory = Directory::new();
        let mut runs: Vec<KeyRun> = (0..KEYS)
            .map(|_| KeyRun { live: ClientKey::default(), events: Vec::new() })
            .collect();
        let mut now = start();
        for step in steps {
            match step {
                Step::Command { key, kind, seed, gap } => {
                    now += Duration::seconds(i64::from(gap));
                    let k = u64::from(key) % KEYS;
                    let run = &mut runs[k as usize];
                    // A key's first command is its creation.
                    let kind = if run.live.state().is_none() { 0 } else { kind };
                    if let Ok(Some(event)) = run.live.decide(command(k, kind, seed), now) {
                        cqrs_es::Aggregate::apply(&mut run.live, event.clone());
                        let sequence = run.events.len() as u64 + 1;
                        let stored = StoredEvent {
                            aggregate_id: id(k).as_str().to_owned(),
                            sequence,
                            event,
                            // Events from before the chain have no link; some no time.
                            at: (!seed.is_multiple_of(5)).then_some(now),
                            link: (!seed.is_multiple_of(3)).then(|| format!("link-{k}-{sequence}")),
                        };
                        prop_assert_eq!(directory.apply(&stored), ApplyOutcome::Applied);
                        run.events.push(stored);
                    }
                }
                Step::Echo { key, back } => {
                    let run = &runs[usize::from(key) % KEYS as usize];
                    if !run.events.is_empty() {
                        let i = run.events.len() - 1 - usize::from(back) % run.events.len();
                        prop_assert_eq!(directory.apply(&run.events[i]), ApplyOutcome::AlreadyApplied);
                    }
                }
                Step::Skip { key } => {
                    let k = u64::from(key) % KEYS;
                    let run = &runs[k as usize];
                    if let Some(last) = run.events.last() {
                        let mut ahead = last.clone();
                        ahead.sequence += 2;
                        prop_assert_eq!(
                            directory.apply(&ahead),
                            ApplyOutcome::Gap { have: last.sequence, got: last.sequence + 2 }
                        );
                    }
                }
                Step::StaleReload { key, back } => {
                    let run = &runs[usize::from(key) % KEYS as usize];
                    if !run.events.is_empty() {
                        let len = run.events.len() - usize::from(back) % run.events.len();
                        if let Some(view) = fold(&run.events[..len]) {
                            directory.replace(view);
                        }
                    }
                }
            }
        }

        prop_assert_eq!(directory.len(), runs.iter().filter(|r| !r.events.is_empty()).count());
        for (k, run) in runs.iter().enumerate() {
            let k = k as u64;
            let Some(expected) = fold(&run.events) else {
                prop_assert!(directory.by_id(id(k).as_str()).is_none());
                continue;
            };
            let held = directory.by_id(id(k).as_str()).expect("a created key is in the directory");
            same_view(&held, &expected)?;
            // The borrowing fold and the streaming one agree, and both match the
            // aggregate the commands were decided on.
            let borrowed = ClientKeyView::fold(&run.events).expect("created");
            same_view(&borrowed, &expected)?;
            prop_assert_eq!(Some(expected.state()), run.live.state());

            let state = expected.state();
            for seed in 0..4u8 {
                let pk = public_key(k, seed);
                let accepted = state.public_key == pk
                    || state.previous_public_keys.iter().any(|p| p.public_key == pk);
                let found = directory.by_public_key(pk.as_str()).map(|v| v.state().id.clone());
                prop_assert_eq!(found, accepted.then(|| id(k)), "public key {}", pk.as_str());
                let hash = secret(k, seed).hash;
                let accepted = state.secret_key.hash == hash
                    || state.previous_secret_keys.iter().any(|p| p.secret_key.hash == hash);
                let found = directory.by_secret_hash(&hash).map(|v| v.state().id.clone());
                prop_assert_eq!(found, accepted.then(|| id(k)));
            }
        }
    }
}
