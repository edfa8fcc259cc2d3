//! The session rules as given/when/then: a client key in a directory, a token or a
//! ledger answer, and what the rule decides.

use chrono::TimeZone as _;
use domain::{
    AllowList, ClientKeyEvent, ClientKeyId, OriginPattern, PublicKey, SecretKeyFingerprint, Text,
    WidgetConfig,
};
use projections::StoredEvent;

use super::*;

const ISSUER: &str = "widget-auth";
const NOW: i64 = 1_800_000_000;
const ORIGIN: &str = "https://shop.acme.test";

/// A client key with its keys, as the directory holds it.
struct Fixture {
    directory: Directory,
    public_key: PublicKey,
    secret_key: SecretKey,
    id: ClientKeyId,
    sequence: u64,
}

impl Fixture {
    fn new() -> Self {
        Self::with_policy(TokenPolicy::default())
    }

    fn with_policy(token_policy: TokenPolicy) -> Self {
        let mut rng = rand::rng();
        let (id, public_key, secret_key) = (
            ClientKeyId::generate(&mut rng),
            PublicKey::generate(&mut rng),
            SecretKey::generate(&mut rng),
        );
        let mut fixture = Self {
            directory: Directory::new(),
            public_key: public_key.clone(),
            secret_key: secret_key.clone(),
            id: id.clone(),
            sequence: 0,
        };
        fixture.then(ClientKeyEvent::ClientKeyCreated {
            id,
            name: Text::parse("Acme Support").unwrap(),
            public_key,
            secret_key: secret_key.fingerprint(),
            origins: AllowList::new(vec![OriginPattern::parse(ORIGIN).unwrap()]),
            config: WidgetConfig::default(),
            token_policy,
            at: at(NOW - 3600),
        });
        fixture
    }

    fn then(&mut self, event: ClientKeyEvent) {
        self.sequence += 1;
        self.directory.apply(&StoredEvent {
            aggregate_id: self.id.as_str().to_owned(),
            sequence: self.sequence,
            event,
            at: None,
            link: None,
        });
    }

    fn view(&self) -> Arc<ClientKeyView> {
        self.directory.by_id(self.id.as_str()).expect("created")
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).unwrap()
}

/// Verification checks lifetimes against the real clock as well as `now`.
fn real_now() -> i64 {
    Utc::now().timestamp()
}

fn origin() -> RequestOrigin {
    RequestOrigin::parse(ORIGIN).unwrap()
}

fn signing_keys() -> SigningKeys {
    SigningKeys::from_pem(&SigningKeys::generate_pem().unwrap()).unwrap()
}

fn ada() -> Identity {
    Identity::user("user-42", Some("Ada"), Some("ada@acme.test")).unwrap()
}

fn again(used_at_ms: i64) -> TokenUse {
    TokenUse::Again { used_at_ms }
}

#[test]
fn a_guest_session_carries_its_key_version_origin_and_guest_flag() {
    let fixture = Fixture::new();
    let view = fixture.view();
    let guest = Identity::guest(&view.state().token_policy).unwrap();
    let pair = session_pair(&view, &guest, &origin(), None, ISSUER, NOW);

    let session = &pair.session;
    assert_eq!(session.kind, TokenKind::Session);
    assert_eq!(session.aud, TokenKind::Session.audience());
    assert_eq!(session.iss, ISSUER);
    assert_eq!(session.ck, fixture.id.as_str());
    assert_eq!(session.ver, 1);
    assert_eq!(session.origin.as_deref(), Some(ORIGIN));
    assert_eq!(session.guest, Some(true));
    assert!(session.sub.starts_with("v_"), "{}", session.sub);
    assert_eq!((session.iat, session.nbf), (NOW, NOW));
    assert_eq!(session.exp, NOW + 15 * 60);
    assert_eq!(session.fam, None);
    assert_eq!(pair.expires_in, 15 * 60);
}

#[test]
fn a_new_session_starts_a_refresh_family_and_a_refresh_continues_it() {
    let view = Fixture::new().view();
    let first = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW);
    let family = first.refresh.fam.clone().expect("a family");
    assert_eq!(first.refresh.kind, TokenKind::Refresh);
    assert_eq!(first.refresh.origin.as_deref(), Some(ORIGIN));
    assert_eq!(first.refresh.exp, NOW + 7 * 24 * 3600);
    assert_eq!(first.refresh_expires_in, 7 * 24 * 3600);

    assert_eq!((first.refresh.fst, first.refresh.gen), (Some(NOW), Some(0)));

    let later = NOW + 3600;
    let successor = successor(&first.refresh, &view, later);
    let continuing = Continuation {
        family: family.clone(),
        started_at: family_started_at(&first.refresh),
        successor: successor.clone(),
    };
    let next = session_pair(&view, &ada(), &origin(), Some(&continuing), ISSUER, later);
    assert_eq!(next.refresh.fam, Some(family));
    assert_eq!(next.refresh.jti, successor.jti);
    assert_ne!(next.refresh.jti, first.refresh.jti);
    assert_eq!(
        (next.refresh.fst, next.refresh.gen, next.refresh.iat),
        (Some(NOW), Some(1), later)
    );
    assert_eq!(next.refresh.exp, later + 7 * 24 * 3600);
    assert_eq!(next.refresh_expires_in, 7 * 24 * 3600);
}

#[test]
fn a_recorded_successor_minted_again_is_the_very_same_token() {
    let view = Fixture::new().view();
    let keys = signing_keys();
    let first = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW);
    let continuing = Continuation {
        family: first.refresh.fam.clone().unwrap(),
        started_at: NOW,
        successor: successor(&first.refresh, &view, NOW + 10),
    };
    let once = session_pair(
        &view,
        &ada(),
        &origin(),
        Some(&continuing),
        ISSUER,
        NOW + 10,
    );
    let again = session_pair(
        &view,
        &ada(),
        &origin(),
        Some(&continuing),
        ISSUER,
        NOW + 19,
    );
    assert_eq!(
        keys.mint(&once.refresh).unwrap(),
        keys.mint(&again.refresh).unwrap()
    );
    assert_ne!(once.session.jti, again.session.jti, "a fresh session token");
    assert_eq!(again.refresh_expires_in, once.refresh_expires_in - 9);
}

#[test]
fn no_successor_outlives_the_familys_absolute_lifetime() {
    let policy = TokenPolicy::new(60, 900, 7 * 86_400, true)
        .unwrap()
        .with_refresh_absolute_ttl(10 * 86_400)
        .unwrap();
    let view = Fixture::with_policy(policy).view();
    let first = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW);
    assert_eq!(first.refresh.exp, NOW + 7 * 86_400);
    let day_five = NOW + 5 * 86_400;
    let next = successor(&first.refresh, &view, day_five);
    assert_eq!(next.exp, NOW + 10 * 86_400, "capped at the family's end");
    assert_eq!(family_ends_at(&first.refresh, &policy), NOW + 10 * 86_400);
    assert_eq!(may_continue(&first.refresh, &view, day_five), Ok(()));
    assert_eq!(
        may_continue(&first.refresh, &view, NOW + 10 * 86_400),
        Err(SessionError::FamilyEnded)
    );
}

#[test]
fn a_refresh_token_minted_before_families_had_a_start_counts_from_its_own_iat() {
    let view = Fixture::new().view();
    let mut legacy = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW).refresh;
    (legacy.fst, legacy.gen) = (None, None);
    assert_eq!(family_started_at(&legacy), NOW);
    assert_eq!(successor(&legacy, &view, NOW + 1).generation, 1);
}

#[test]
fn guests_off_ends_guest_families_and_keeps_signed_in_ones() {
    let mut fixture = Fixture::new();
    let view = fixture.view();
    let guest = Identity::guest(&view.state().token_policy).unwrap();
    let guest_refresh = session_pair(&view, &guest, &origin(), None, ISSUER, NOW).refresh;
    let user_refresh = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW).refresh;
    assert_eq!(may_continue(&guest_refresh, &view, NOW + 1), Ok(()));
    fixture.then(ClientKeyEvent::TokenPolicySet {
        policy: TokenPolicy::new(60, 900, 604_800, false).unwrap(),
    });
    let view = fixture.view();
    let refused = may_continue(&guest_refresh, &view, NOW + 1).unwrap_err();
    assert_eq!(refused, SessionError::GuestFamilyEnded);
    assert_eq!(
        refused.to_string(),
        "guests are not allowed for this client_key"
    );
    assert_eq!(may_continue(&user_refresh, &view, NOW + 1), Ok(()));
}

#[test]
fn every_token_of_a_pair_has_its_own_id() {
    let view = Fixture::new().view();
    let pair = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW);
    assert_ne!(pair.session.jti, pair.refresh.jti);
    assert_eq!(pair.session.jti.len(), 32);
}

#[test]
fn a_visitor_token_carries_the_user_for_the_policys_visitor_lifetime_and_no_origin() {
    let view = Fixture::new().view();
    let visitor = visitor_claims(&view, &ada(), ISSUER, NOW);
    assert_eq!(visitor.kind, TokenKind::Visitor);
    assert_eq!(visitor.sub, "user-42");
    assert_eq!(visitor.guest, Some(false));
    assert_eq!(visitor.name.as_deref(), Some("Ada"));
    assert_eq!(visitor.email.as_deref(), Some("ada@acme.test"));
    assert_eq!(visitor.exp, NOW + 60);
    assert_eq!(visitor.origin, None);
}

#[test]
fn a_guest_is_refused_when_the_policy_allows_none() {
    let policy = TokenPolicy::new(60, 900, 86_400, false).unwrap();
    assert_eq!(
        Identity::guest(&policy),
        Err(SessionError::GuestsNotAllowed)
    );
}

#[test]
fn a_bad_profile_value_is_refused_naming_its_field() {
    let refused = |user_id: &str, name: Option<&str>, email: Option<&str>| {
        Identity::user(user_id, name, email)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused(&"x".repeat(256), None, None),
        "user_id must be 1 to 255 characters without control characters"
    );
    assert_eq!(
        refused("u", None, Some("nope")),
        "email is not an email address"
    );
    assert_eq!(
        refused("u", Some("A\nB"), Some("nope")),
        "email is not an email address",
        "email is checked before name"
    );
    assert_eq!(
        refused("u", Some(&"n".repeat(501)), None),
        "name must be at most 500 characters without control characters"
    );
}

#[test]
fn an_empty_name_or_email_is_no_name_or_email() {
    let user = Identity::user("u", Some(""), Some("")).unwrap();
    assert_eq!((user.name, user.email), (None, None));
}

#[test]
fn an_exchanged_visitor_is_never_a_guest_and_a_refreshed_guest_stays_one() {
    let view = Fixture::new().view();
    let mut visitor = visitor_claims(&view, &ada(), ISSUER, NOW);
    visitor.guest = Some(true);
    assert!(!Identity::exchanged(visitor).guest);

    let guest = Identity::guest(&view.state().token_policy).unwrap();
    let pair = session_pair(&view, &guest, &origin(), None, ISSUER, NOW);
    assert_eq!(Identity::refreshed(pair.refresh), guest);
}

#[test]
fn a_presented_token_is_verified_and_found_with_its_key() {
    let now = real_now();
    let (fixture, keys) = (Fixture::new(), signing_keys());
    let visitor = visitor_claims(&fixture.view(), &ada(), ISSUER, now);
    let token = keys.mint(&visitor).unwrap();
    let (claims, view) = verify_presented(
        &keys,
        ISSUER,
        &fixture.directory,
        &token,
        TokenKind::Visitor,
        now,
    )
    .unwrap();
    assert_eq!(claims, visitor);
    assert_eq!(view.state().id, fixture.id);
}

#[test]
fn a_token_of_another_kind_is_invalid_and_says_so() {
    let now = real_now();
    let (fixture, keys) = (Fixture::new(), signing_keys());
    let visitor = visitor_claims(&fixture.view(), &ada(), ISSUER, now);
    let token = keys.mint(&visitor).unwrap();
    let err = verify_presented(
        &keys,
        ISSUER,
        &fixture.directory,
        &token,
        TokenKind::Refresh,
        now,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            SessionError::InvalidToken {
                kind: TokenKind::Refresh,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("invalid refresh token: "),
        "{err}"
    );
}

#[test]
fn a_token_whose_key_is_gone_is_refused() {
    let now = real_now();
    let (fixture, keys) = (Fixture::new(), signing_keys());
    let visitor = visitor_claims(&fixture.view(), &ada(), ISSUER, now);
    let token = keys.mint(&visitor).unwrap();
    let err = verify_presented(
        &keys,
        ISSUER,
        &Directory::new(),
        &token,
        TokenKind::Visitor,
        now,
    )
    .unwrap_err();
    assert_eq!(
        err,
        SessionError::ClientKeyGone {
            kind: TokenKind::Visitor
        }
    );
    assert_eq!(
        err.to_string(),
        "invalid visitor token: its client key no longer exists"
    );
}

#[test]
fn a_disabled_key_refuses_its_tokens() {
    let now = real_now();
    let (mut fixture, keys) = (Fixture::new(), signing_keys());
    let pair = session_pair(&fixture.view(), &ada(), &origin(), None, ISSUER, now);
    let token = keys.mint(&pair.refresh).unwrap();
    fixture.then(ClientKeyEvent::ClientKeyDisabled { at: at(now) });
    let err = verify_presented(
        &keys,
        ISSUER,
        &fixture.directory,
        &token,
        TokenKind::Refresh,
        now,
    )
    .unwrap_err();
    assert_eq!(err, SessionError::TokenOfDisabledKey);
    assert_eq!(err.to_string(), "client key disabled");
}

#[test]
fn a_token_issued_at_or_before_its_users_revocation_is_revoked() {
    let now = real_now();
    let (mut fixture, keys) = (Fixture::new(), signing_keys());
    let pair = session_pair(&fixture.view(), &ada(), &origin(), None, ISSUER, now);
    let token = keys.mint(&pair.refresh).unwrap();
    fixture.then(ClientKeyEvent::SessionsRevoked {
        user_id: Some(Text::parse("user-42").unwrap()),
        issued_at_or_before: now,
    });
    let err = verify_presented(
        &keys,
        ISSUER,
        &fixture.directory,
        &token,
        TokenKind::Refresh,
        now + 1,
    )
    .unwrap_err();
    assert_eq!(
        err,
        SessionError::Revoked {
            kind: TokenKind::Refresh
        }
    );
    assert_eq!(err.to_string(), "refresh token revoked");

    let later = session_pair(&fixture.view(), &ada(), &origin(), None, ISSUER, now + 1);
    let token = keys.mint(&later.refresh).unwrap();
    assert!(verify_presented(
        &keys,
        ISSUER,
        &fixture.directory,
        &token,
        TokenKind::Refresh,
        now + 1
    )
    .is_ok());
}

#[test]
fn a_visitor_token_is_exchanged_once() {
    assert_eq!(first_exchange(TokenUse::First), Ok(()));
    assert_eq!(
        first_exchange(again(NOW * 1000)),
        Err(SessionError::AlreadyExchanged)
    );
}

#[test]
fn a_refresh_token_counts_only_from_the_origin_it_was_minted_for() {
    let view = Fixture::new().view();
    let pair = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW);
    assert_eq!(
        refresh_family(&pair.refresh, &origin()),
        Ok(pair.refresh.fam.clone().unwrap())
    );
    let elsewhere = RequestOrigin::parse("https://evil.test").unwrap();
    assert_eq!(
        refresh_family(&pair.refresh, &elsewhere),
        Err(SessionError::OriginMismatch)
    );
}

#[test]
fn a_refresh_token_without_a_family_is_malformed() {
    let view = Fixture::new().view();
    let mut refresh = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW).refresh;
    refresh.fam = None;
    let err = refresh_family(&refresh, &origin()).unwrap_err();
    assert_eq!(err.to_string(), "invalid refresh token: token malformed");
}

/// A family's ledger row after `spent` was spent at `spent_at_ms` for `head`.
fn record(spent: &Claims, spent_at_ms: i64, head: &RecordedToken) -> FamilyRecord {
    FamilyRecord {
        head: Some(head.clone()),
        spent: Some((spent.jti.clone(), spent_at_ms)),
        revoked: None,
        ends_at: head.exp,
    }
}

/// A family's first refresh token and the successor recorded for it at `NOW`.
fn rotated_once() -> (Claims, RecordedToken) {
    let view = Fixture::new().view();
    let first = session_pair(&view, &ada(), &origin(), None, ISSUER, NOW).refresh;
    let head = successor(&first, &view, NOW);
    (first, head)
}

#[test]
fn the_request_that_spends_a_refresh_token_rotates_it() {
    let (first, _) = rotated_once();
    assert_eq!(
        after_spend(&first, SpendOutcome::Spent, NOW * 1000),
        Refresh::Rotated
    );
}

#[test]
fn the_latest_spent_token_within_the_grace_gets_the_same_successor_again() {
    let (first, head) = rotated_once();
    for now_ms in [NOW * 1000, NOW * 1000 + REFRESH_RETRY_GRACE_MS] {
        let outcome = SpendOutcome::NotSpent(Some(record(&first, NOW * 1000, &head)));
        assert_eq!(
            after_spend(&first, outcome, now_ms),
            Refresh::Retry(head.clone())
        );
    }
}

#[test]
fn the_latest_spent_token_after_the_grace_revokes_its_family() {
    let (first, head) = rotated_once();
    let now_ms = NOW * 1000 + REFRESH_RETRY_GRACE_MS + 1;
    let outcome = SpendOutcome::NotSpent(Some(record(&first, NOW * 1000, &head)));
    assert_eq!(
        after_spend(&first, outcome, now_ms),
        Refresh::ReuseDetected(FamilyRevocation {
            revoked_at: NOW + 10,
            generation: Some(0),
            ends_at: head.exp,
        })
    );
}

#[test]
fn an_older_generation_revokes_its_family_at_once_even_within_the_grace() {
    let view = Fixture::new().view();
    let (first, head) = rotated_once();
    // The successor was itself spent: the family moved on, `first` is two generations old.
    let second = session_pair(
        &view,
        &ada(),
        &origin(),
        Some(&Continuation {
            family: first.fam.clone().unwrap(),
            started_at: NOW,
            successor: head.clone(),
        }),
        ISSUER,
        NOW,
    )
    .refresh;
    let third = successor(&second, &view, NOW + 1);
    let outcome = SpendOutcome::NotSpent(Some(record(&second, NOW * 1000 + 1000, &third)));
    assert!(matches!(
        after_spend(&first, outcome, NOW * 1000 + 1500),
        Refresh::ReuseDetected(FamilyRevocation {
            generation: Some(0),
            ..
        })
    ));
}

#[test]
fn a_token_of_a_revoked_family_is_refused_without_a_new_detection() {
    let (first, head) = rotated_once();
    let mut revoked = record(&first, NOW * 1000, &head);
    revoked.revoked = Some(crate::ledger::FamilyRevoked {
        at: NOW,
        reason: "reuse".to_owned(),
        generation: Some(0),
    });
    assert_eq!(
        after_spend(&first, SpendOutcome::NotSpent(Some(revoked)), NOW * 1000),
        Refresh::Revoked
    );
}

#[test]
fn a_revocation_lasts_until_the_latest_token_of_its_family_expires() {
    let (first, head) = rotated_once();
    // The row knows the family's latest `exp`, however the policy changed since.
    let mut row = record(&first, NOW * 1000, &head);
    row.ends_at = NOW + 90 * 86_400;
    let Refresh::ReuseDetected(revocation) = after_spend(
        &first,
        SpendOutcome::NotSpent(Some(row)),
        NOW * 1000 + 60_000,
    ) else {
        panic!("reuse")
    };
    assert_eq!(revocation.ends_at, NOW + 90 * 86_400);
    // A token spent only in the old single-use ledger: as long as any refresh lifetime.
    let Refresh::ReuseDetected(legacy) =
        after_spend(&first, SpendOutcome::NotSpent(None), NOW * 1000)
    else {
        panic!("reuse")
    };
    assert_eq!(legacy.ends_at, NOW + 7_776_000);
}

#[test]
fn the_current_secret_key_is_accepted() {
    let fixture = Fixture::new();
    let view = authenticate_secret_key(
        &fixture.directory,
        fixture.secret_key.expose_secret(),
        at(NOW),
    )
    .unwrap();
    assert_eq!(view.state().id, fixture.id);
}

#[test]
fn a_previous_secret_key_is_accepted_until_its_grace_ends() {
    let mut fixture = Fixture::new();
    let old = fixture.secret_key.clone();
    let new = SecretKey::generate(&mut rand::rng());
    fixture.then(ClientKeyEvent::SecretKeyRotated {
        secret_key: new.fingerprint(),
        previous: old.fingerprint(),
        previous_valid_until: at(NOW + 60),
        at: at(NOW),
    });
    let state = fixture.view();
    let state = state.state();
    assert!(accepts_secret_key(state, &old.hash(), at(NOW + 59)));
    assert!(!accepts_secret_key(state, &old.hash(), at(NOW + 60)));
    assert!(accepts_secret_key(state, &new.hash(), at(NOW + 60)));
    assert_eq!(
        authenticate_secret_key(&fixture.directory, old.expose_secret(), at(NOW + 60)).unwrap_err(),
        SessionError::InvalidSecretKey
    );
}

#[test]
fn an_unknown_or_malformed_secret_key_is_invalid() {
    let fixture = Fixture::new();
    let unknown = SecretKey::generate(&mut rand::rng());
    for presented in [unknown.expose_secret(), "sk_live_nope", ""] {
        assert_eq!(
            authenticate_secret_key(&fixture.directory, presented, at(NOW)).unwrap_err(),
            SessionError::InvalidSecretKey,
            "{presented}"
        );
    }
    let fingerprint: SecretKeyFingerprint = unknown.fingerprint();
    assert!(!accepts_secret_key(
        fixture.view().state(),
        &fingerprint.hash,
        at(NOW)
    ));
}

#[test]
fn a_secret_key_mints_visitor_tokens_only_for_its_own_enabled_key() {
    let mut fixture = Fixture::new();
    let view = fixture.view();
    let now = || at(NOW);
    assert_eq!(
        authorize_visitor_token(&view, fixture.public_key.as_str(), now),
        Ok(())
    );
    let other = PublicKey::generate(&mut rand::rng());
    for client_key in [other.as_str(), "pk_live_nope"] {
        assert_eq!(
            authorize_visitor_token(&view, client_key, now),
            Err(SessionError::SecretKeyOfAnotherKey)
        );
    }
    fixture.then(ClientKeyEvent::ClientKeyDisabled { at: at(NOW) });
    assert_eq!(
        authorize_visitor_token(&fixture.view(), fixture.public_key.as_str(), now),
        Err(SessionError::KeyDisabled)
    );
}

#[test]
fn a_key_revoked_after_the_version_decided_on_spends_nothing_and_asks_for_a_retry() {
    let (first, _) = rotated_once();
    assert_eq!(
        after_spend(&first, SpendOutcome::KeyChanged, NOW * 1000),
        Refresh::KeyChanged
    );
}

#[test]
fn token_ids_are_32_hex_digits_led_by_the_millisecond_and_never_repeat() {
    // Given ids made a few milliseconds apart
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let first: Vec<String> = (0..1_000).map(|_| new_token_id()).collect();
    std::thread::sleep(std::time::Duration::from_millis(3));
    let later = new_token_id();

    // Then each is 32 lower-case hex digits, the first 12 the time it was made
    for id in first.iter().chain([&later]) {
        assert_eq!(id.len(), 32, "{id}");
        assert!(
            id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "{id}"
        );
    }
    let ms = u128::from_str_radix(&first[0][..12], 16).expect("hex");
    assert!((before..before + 1_000).contains(&ms), "{ms} vs {before}");
    // And an id made later sorts after every earlier one (the ledger's keys go in at
    // the index's right edge), while ids of the same millisecond still differ
    assert!(first.iter().all(|id| *id < later));
    let distinct: std::collections::HashSet<_> = first.iter().collect();
    assert_eq!(distinct.len(), first.len());
}
