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

fn again(used_at_ms: i64, latest_in_family: bool) -> TokenUse {
    TokenUse::Again {
        used_at_ms,
        latest_in_family,
    }
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

    let next = session_pair(&view, &ada(), &origin(), Some(family.clone()), ISSUER, NOW);
    assert_eq!(next.refresh.fam, Some(family));
    assert_ne!(next.refresh.jti, first.refresh.jti);
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
        first_exchange(again(NOW * 1000, false)),
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

#[test]
fn a_refresh_token_used_for_the_first_time_rotates() {
    let policy = TokenPolicy::default();
    assert_eq!(
        rotation(TokenUse::First, NOW * 1000, &policy),
        Rotation::Rotate
    );
}

#[test]
fn a_spent_refresh_token_presented_within_the_grace_is_a_retry() {
    let (policy, now_ms) = (TokenPolicy::default(), NOW * 1000);
    for used_at_ms in [now_ms, now_ms - REFRESH_RETRY_GRACE_MS] {
        assert_eq!(
            rotation(again(used_at_ms, true), now_ms, &policy),
            Rotation::RetryWithinGrace
        );
    }
}

#[test]
fn a_spent_refresh_token_presented_after_the_grace_revokes_its_family() {
    let (policy, now_ms) = (TokenPolicy::default(), NOW * 1000 + 999);
    let used_at_ms = now_ms - REFRESH_RETRY_GRACE_MS - 1;
    assert_eq!(
        rotation(again(used_at_ms, true), now_ms, &policy),
        Rotation::ReuseDetected(FamilyRevocation {
            revoked_at: NOW,
            expires_at: NOW + 7 * 24 * 3600,
        })
    );
}

#[test]
fn a_spent_refresh_token_that_already_has_a_successor_revokes_its_family_at_once() {
    let policy = TokenPolicy::default();
    let now_ms = NOW * 1000;
    assert!(matches!(
        rotation(again(now_ms, false), now_ms, &policy),
        Rotation::ReuseDetected(_)
    ));
}

#[test]
fn a_family_stays_revoked_as_long_as_its_refresh_tokens_could_live() {
    let policy = TokenPolicy::new(60, 900, 86_400, true).unwrap();
    assert_eq!(
        family_revocation(&policy, NOW * 1000 + 500),
        FamilyRevocation {
            revoked_at: NOW,
            expires_at: NOW + 86_400,
        }
    );
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
