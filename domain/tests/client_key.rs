//! Given/when/then tests of the `ClientKey` aggregate: every command and every rejection.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::test::TestFramework;
use domain::{
    AllowList, ClientKey, ClientKeyCommand, ClientKeyError, ClientKeyEvent, ClientKeyId,
    ClientKeyServices, FixedClock, OriginPattern, PublicKey, RateLimits, SecretKey,
    SecretKeyFingerprint, Text, TokenPolicy, WidgetConfig,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

type Framework = TestFramework<ClientKey>;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn services() -> ClientKeyServices {
    ClientKeyServices::new(Arc::new(FixedClock(now())))
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn id() -> ClientKeyId {
    ClientKeyId::generate(&mut rng(1))
}

fn public_key(seed: u64) -> PublicKey {
    PublicKey::generate(&mut rng(seed))
}

fn secret(seed: u64) -> SecretKeyFingerprint {
    SecretKey::generate(&mut rng(seed)).fingerprint()
}

fn origins(entries: &[&str]) -> AllowList {
    AllowList::new(
        entries
            .iter()
            .map(|e| OriginPattern::parse(e).expect("valid origin"))
            .collect(),
    )
}

fn text(s: &str) -> Text {
    Text::parse(s).expect("valid text")
}

fn create_command() -> ClientKeyCommand {
    ClientKeyCommand::Create {
        id: id(),
        name: text("Acme"),
        public_key: public_key(10),
        secret_key: secret(20),
        origins: origins(&["https://acme.test"]),
        config: WidgetConfig::default(),
        token_policy: TokenPolicy::default(),
    }
}

fn created() -> ClientKeyEvent {
    ClientKeyEvent::ClientKeyCreated {
        id: id(),
        name: text("Acme"),
        public_key: public_key(10),
        secret_key: secret(20),
        origins: origins(&["https://acme.test"]),
        config: WidgetConfig::default(),
        token_policy: TokenPolicy::default(),
        at: now(),
    }
}

fn disabled() -> ClientKeyEvent {
    ClientKeyEvent::ClientKeyDisabled { at: now() }
}

#[test]
fn creating_a_key_records_it_with_its_secret_as_a_fingerprint_only() {
    Framework::with(services())
        .given_no_previous_events()
        .when(create_command())
        .then_expect_events(vec![created()]);
}

#[test]
fn the_created_event_never_holds_the_plaintext_secret() {
    let secret = SecretKey::generate(&mut rng(20));
    let json = serde_json::to_string(&created()).expect("serializable");
    assert!(!json.contains(secret.expose_secret()));
    assert!(json.contains(&secret.hash().to_hex()));
}

#[test]
fn creating_a_key_twice_is_refused() {
    Framework::with(services())
        .given(vec![created()])
        .when(create_command())
        .then_expect_error(ClientKeyError::AlreadyExists);
}

#[test]
fn creating_a_key_with_more_than_a_hundred_origins_is_refused() {
    let many: Vec<String> = (0..101).map(|i| format!("https://site{i}.test")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let ClientKeyCommand::Create {
        id,
        name,
        public_key,
        secret_key,
        config,
        token_policy,
        ..
    } = create_command()
    else {
        unreachable!()
    };
    Framework::with(services())
        .given_no_previous_events()
        .when(ClientKeyCommand::Create {
            id,
            name,
            public_key,
            secret_key,
            origins: origins(&refs),
            config,
            token_policy,
        })
        .then_expect_error(ClientKeyError::TooManyOrigins);
}

#[test]
fn every_command_on_a_key_that_does_not_exist_is_refused() {
    let commands = vec![
        ClientKeyCommand::ChangeOrigins {
            origins: origins(&[]),
        },
        ClientKeyCommand::UpdateConfig {
            config: WidgetConfig::default(),
        },
        ClientKeyCommand::SetTokenPolicy {
            policy: TokenPolicy::default(),
        },
        ClientKeyCommand::RotateSecretKey {
            new_secret_key: secret(21),
            grace_seconds: 0,
        },
        ClientKeyCommand::RotatePublicKey {
            new_public_key: public_key(11),
            grace_seconds: 0,
        },
        ClientKeyCommand::ExpirePreviousKeys,
        ClientKeyCommand::RevokeSessions { user_id: None },
        ClientKeyCommand::Disable,
        ClientKeyCommand::Enable,
    ];
    for command in commands {
        Framework::with(services())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(ClientKeyError::NotFound);
    }
}

#[test]
fn changing_origins_replaces_the_allowlist() {
    let new = origins(&["https://*.acme.test", "http://localhost:*"]);
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::ChangeOrigins {
            origins: new.clone(),
        })
        .then_expect_events(vec![ClientKeyEvent::OriginsChanged { origins: new }]);
}

#[test]
fn a_new_key_whose_wildcard_covers_a_public_suffix_is_refused_naming_the_entry() {
    let ClientKeyCommand::Create {
        id,
        name,
        public_key,
        secret_key,
        config,
        token_policy,
        ..
    } = create_command()
    else {
        unreachable!()
    };
    Framework::with(services())
        .given_no_previous_events()
        .when(ClientKeyCommand::Create {
            id,
            name,
            public_key,
            secret_key,
            origins: origins(&["https://app.acme.test", "https://*.CO.UK"]),
            config,
            token_policy,
        })
        .then_expect_error(ClientKeyError::PublicSuffixWildcard(
            "https://*.co.uk".to_owned(),
        ));
}

#[test]
fn changing_origins_to_a_wildcard_over_a_private_public_suffix_is_refused() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::ChangeOrigins {
            origins: origins(&["https://*.github.io"]),
        })
        .then_expect_error(ClientKeyError::PublicSuffixWildcard(
            "https://*.github.io".to_owned(),
        ));
}

#[test]
fn a_wildcard_under_a_registrable_domain_of_a_public_suffix_is_accepted() {
    let new = origins(&["https://*.acme.co.uk", "https://*.acme.github.io"]);
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::ChangeOrigins {
            origins: new.clone(),
        })
        .then_expect_events(vec![ClientKeyEvent::OriginsChanged { origins: new }]);
}

#[test]
fn changing_to_more_than_a_hundred_origins_is_refused() {
    let many: Vec<String> = (0..101).map(|i| format!("https://site{i}.test")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::ChangeOrigins {
            origins: origins(&refs),
        })
        .then_expect_error(ClientKeyError::TooManyOrigins);
}

#[test]
fn updating_the_config_replaces_it() {
    let config: WidgetConfig =
        serde_json::from_str(r#"{"agent":{"display_name":"Ada"}}"#).expect("valid config");
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::UpdateConfig {
            config: config.clone(),
        })
        .then_expect_events(vec![ClientKeyEvent::ConfigUpdated { config }]);
}

#[test]
fn setting_the_token_policy_records_it() {
    let policy = TokenPolicy::new(30, 600, 3600, false).expect("in bounds");
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::SetTokenPolicy { policy })
        .then_expect_events(vec![ClientKeyEvent::TokenPolicySet { policy }]);
}

#[test]
fn setting_a_policy_with_an_absolute_refresh_lifetime_records_it() {
    let policy: TokenPolicy = serde_json::from_str(
        r#"{"refresh_ttl_seconds": 86400, "refresh_absolute_ttl_seconds": 604800}"#,
    )
    .expect("in bounds");
    assert_eq!(policy.refresh_absolute_ttl_seconds(), 604_800);
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::SetTokenPolicy { policy })
        .then_expect_events(vec![ClientKeyEvent::TokenPolicySet { policy }]);
}

#[test]
fn setting_a_token_policy_with_limits_records_the_limits() {
    let limits = RateLimits::new(2, 100, 50).expect("in bounds");
    let policy = TokenPolicy::default().with_limits(limits);
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::SetTokenPolicy { policy })
        .then_expect_events(vec![ClientKeyEvent::TokenPolicySet { policy }]);
}

#[test]
fn an_absolute_refresh_lifetime_out_of_bounds_never_reaches_the_aggregate() {
    for (body, message) in [
        (
            r#"{"refresh_absolute_ttl_seconds": 3599}"#,
            "refresh_absolute_ttl_seconds must be between 604800 and 31536000 seconds",
        ),
        (
            r#"{"refresh_ttl_seconds": 3600, "refresh_absolute_ttl_seconds": 31536001}"#,
            "refresh_absolute_ttl_seconds must be between 3600 and 31536000 seconds",
        ),
        (
            r#"{"refresh_ttl_seconds": 864000, "refresh_absolute_ttl_seconds": 863999}"#,
            "refresh_absolute_ttl_seconds must be between 864000 and 31536000 seconds",
        ),
    ] {
        let err = serde_json::from_str::<TokenPolicy>(body).expect_err(body);
        assert!(err.to_string().contains(message), "{body}: {err}");
    }
}

#[test]
fn a_policy_event_recorded_before_the_absolute_lifetime_existed_replays_with_the_default() {
    let old: ClientKeyEvent = serde_json::from_value(serde_json::json!({
        "TokenPolicySet": {"policy": {
            "visitor_token_ttl_seconds": 30, "session_ttl_seconds": 600,
            "refresh_ttl_seconds": 3600, "guests_allowed": false
        }}
    }))
    .expect("an old event still loads");
    let expected = TokenPolicy::new(30, 600, 3600, false).expect("in bounds");
    assert_eq!(expected.refresh_absolute_ttl_seconds(), 2_592_000);
    assert_eq!(old, ClientKeyEvent::TokenPolicySet { policy: expected });
    // Setting the same policy again on a key that replayed the old event records it.
    Framework::with(services())
        .given(vec![created(), old])
        .when(ClientKeyCommand::SetTokenPolicy { policy: expected })
        .then_expect_events(vec![ClientKeyEvent::TokenPolicySet { policy: expected }]);
}

#[test]
fn rotating_the_secret_key_keeps_the_old_one_valid_for_the_grace_period() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::RotateSecretKey {
            new_secret_key: secret(21),
            grace_seconds: 3600,
        })
        .then_expect_events(vec![ClientKeyEvent::SecretKeyRotated {
            secret_key: secret(21),
            previous: secret(20),
            previous_valid_until: now() + Duration::seconds(3600),
            at: now(),
        }]);
}

#[test]
fn rotating_with_a_grace_longer_than_a_week_is_refused() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::RotateSecretKey {
            new_secret_key: secret(21),
            grace_seconds: 604_801,
        })
        .then_expect_error(ClientKeyError::GraceOutOfRange);
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::RotatePublicKey {
            new_public_key: public_key(11),
            grace_seconds: 604_801,
        })
        .then_expect_error(ClientKeyError::GraceOutOfRange);
}

#[test]
fn rotating_to_the_current_key_is_refused() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::RotateSecretKey {
            new_secret_key: secret(20),
            grace_seconds: 0,
        })
        .then_expect_error(ClientKeyError::KeyReused);
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::RotatePublicKey {
            new_public_key: public_key(10),
            grace_seconds: 0,
        })
        .then_expect_error(ClientKeyError::KeyReused);
}

#[test]
fn rotating_the_public_key_keeps_the_old_one_valid_for_the_grace_period() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::RotatePublicKey {
            new_public_key: public_key(11),
            grace_seconds: 60,
        })
        .then_expect_events(vec![ClientKeyEvent::PublicKeyRotated {
            public_key: public_key(11),
            previous: public_key(10),
            previous_valid_until: now() + Duration::seconds(60),
            at: now(),
        }]);
}

#[test]
fn a_rotated_public_key_is_accepted_until_its_grace_ends() {
    let key = ClientKey::from_events(&[
        created(),
        ClientKeyEvent::PublicKeyRotated {
            public_key: public_key(11),
            previous: public_key(10),
            previous_valid_until: now() + Duration::seconds(60),
            at: now(),
        },
    ]);
    let state = key.state().expect("created");
    assert!(state.accepts_public_key(public_key(11).as_str(), now));
    assert!(state.accepts_public_key(public_key(10).as_str(), || now() + Duration::seconds(59)));
    assert!(!state.accepts_public_key(public_key(10).as_str(), || now() + Duration::seconds(60)));
}

#[test]
fn expiring_previous_keys_ends_every_grace_period_now() {
    Framework::with(services())
        .given(vec![
            created(),
            ClientKeyEvent::SecretKeyRotated {
                secret_key: secret(21),
                previous: secret(20),
                previous_valid_until: now() + Duration::seconds(3600),
                at: now(),
            },
        ])
        .when(ClientKeyCommand::ExpirePreviousKeys)
        .then_expect_events(vec![ClientKeyEvent::PreviousKeysExpired { at: now() }]);
}

#[test]
fn expiring_previous_keys_when_none_is_in_grace_records_nothing() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::ExpirePreviousKeys)
        .then_expect_events(vec![]);
}

#[test]
fn revoking_sessions_records_the_cut_off_in_whole_seconds() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::RevokeSessions {
            user_id: Some(text("user-42")),
        })
        .then_expect_events(vec![ClientKeyEvent::SessionsRevoked {
            user_id: Some(text("user-42")),
            issued_at_or_before: now().timestamp(),
        }]);
}

#[test]
fn revoked_sessions_refuse_tokens_issued_at_or_before_the_cut_off_only() {
    let cut = now().timestamp();
    let key = ClientKey::from_events(&[
        created(),
        ClientKeyEvent::SessionsRevoked {
            user_id: Some(text("u1")),
            issued_at_or_before: cut,
        },
    ]);
    let state = key.state().expect("created");
    assert!(state.is_revoked("u1", cut));
    assert!(!state.is_revoked("u1", cut + 1));
    assert!(!state.is_revoked("u2", cut));
}

#[test]
fn disabling_a_key_records_it_and_revokes_earlier_tokens_for_good() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::Disable)
        .then_expect_events(vec![disabled()]);
    let key = ClientKey::from_events(&[
        created(),
        disabled(),
        ClientKeyEvent::ClientKeyEnabled { at: now() },
    ]);
    let state = key.state().expect("created");
    assert_eq!(state.status, domain::KeyStatus::Active);
    assert!(state.is_revoked("anyone", now().timestamp()));
}

#[test]
fn disabling_a_disabled_key_records_nothing() {
    Framework::with(services())
        .given(vec![created(), disabled()])
        .when(ClientKeyCommand::Disable)
        .then_expect_events(vec![]);
}

#[test]
fn enabling_a_disabled_key_records_it() {
    Framework::with(services())
        .given(vec![created(), disabled()])
        .when(ClientKeyCommand::Enable)
        .then_expect_events(vec![ClientKeyEvent::ClientKeyEnabled { at: now() }]);
}

#[test]
fn enabling_an_active_key_records_nothing() {
    Framework::with(services())
        .given(vec![created()])
        .when(ClientKeyCommand::Enable)
        .then_expect_events(vec![]);
}

#[test]
fn a_second_rotation_drops_previous_keys_whose_grace_already_ended() {
    let later = now() + Duration::seconds(120);
    let key = ClientKey::from_events(&[
        created(),
        ClientKeyEvent::SecretKeyRotated {
            secret_key: secret(21),
            previous: secret(20),
            previous_valid_until: now() + Duration::seconds(60),
            at: now(),
        },
        ClientKeyEvent::SecretKeyRotated {
            secret_key: secret(22),
            previous: secret(21),
            previous_valid_until: later + Duration::seconds(60),
            at: later,
        },
    ]);
    let previous: Vec<_> = key
        .state()
        .expect("created")
        .previous_secret_keys
        .iter()
        .map(|p| p.secret_key.clone())
        .collect();
    assert_eq!(previous, vec![secret(21)]);
}
