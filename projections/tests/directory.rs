//! The read models as pure folds: what the hot path would see after each event.

use chrono::{DateTime, Duration, Utc};
use domain::{
    AllowList, ClientKeyEvent, ClientKeyId, OriginPattern, PublicKey, SecretKey, SecretKeyHash,
    Text, TokenPolicy, WidgetConfig,
};
use projections::{ApplyOutcome, ClientKeyView, Directory, StoredEvent};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .expect("valid time")
        .with_timezone(&Utc)
}

fn id() -> ClientKeyId {
    ClientKeyId::generate(&mut StdRng::seed_from_u64(1))
}

fn public_key(seed: u64) -> PublicKey {
    PublicKey::generate(&mut StdRng::seed_from_u64(seed))
}

fn secret(seed: u64) -> SecretKey {
    SecretKey::generate(&mut StdRng::seed_from_u64(seed))
}

fn stored(sequence: u64, event: ClientKeyEvent) -> StoredEvent {
    StoredEvent {
        aggregate_id: id().as_str().to_owned(),
        sequence,
        event,
        at: Some(now()),
        link: None,
    }
}

fn created() -> StoredEvent {
    stored(
        1,
        ClientKeyEvent::ClientKeyCreated {
            id: id(),
            name: Text::parse("Acme Support").expect("valid"),
            public_key: public_key(10),
            secret_key: secret(20).fingerprint(),
            origins: AllowList::new(vec![
                OriginPattern::parse("https://acme.test").expect("valid")
            ]),
            config: WidgetConfig::default(),
            token_policy: TokenPolicy::default(),
            at: now(),
        },
    )
}

fn body(view: &ClientKeyView) -> serde_json::Value {
    serde_json::from_slice(view.config_body()).expect("json body")
}

#[test]
fn a_new_key_renders_a_neutral_config_named_after_the_key() {
    let view = ClientKeyView::fold([&created()]).expect("created");
    let body = body(&view);
    assert_eq!(body["agent"]["display_name"], "Acme Support");
    assert_eq!(body["client_key"], public_key(10).as_str());
    assert_eq!(body["guests_allowed"], true);
    assert_eq!(body["version"], 1);
    assert_eq!(body["branding"]["primary_color"], "#2563EB");
}

#[test]
fn a_history_that_does_not_start_with_a_creation_folds_to_nothing() {
    let orphan = stored(1, ClientKeyEvent::ClientKeyEnabled { at: now() });
    assert!(ClientKeyView::fold([&orphan]).is_none());
}

#[test]
fn the_config_body_and_etag_change_with_every_version() {
    let first = ClientKeyView::fold([&created()]).expect("created");
    let config: WidgetConfig =
        serde_json::from_str(r#"{"agent":{"display_name":"Ada"}}"#).expect("valid");
    let second = first.apply(&stored(2, ClientKeyEvent::ConfigUpdated { config }));
    assert_eq!(body(&second)["agent"]["display_name"], "Ada");
    assert_eq!(body(&second)["version"], 2);
    assert_ne!(first.etag(), second.etag());
}

#[test]
fn the_admin_view_never_contains_the_secret_key_or_its_hash() {
    let view = ClientKeyView::fold([&created()]).expect("created");
    let json = view.to_admin_json().to_string();
    assert!(!json.contains(secret(20).expose_secret()));
    assert!(!json.contains(&secret(20).hash().to_hex()));
    assert_eq!(
        view.to_admin_json()["secret_key_last_four"],
        secret(20).last_four()
    );
}

#[test]
fn the_directory_finds_a_key_by_public_key_and_by_secret_hash() {
    let directory = Directory::new();
    assert_eq!(directory.apply(&created()), ApplyOutcome::Applied);
    assert_eq!(
        directory
            .by_public_key(public_key(10).as_str())
            .map(|v| v.version()),
        Some(1)
    );
    assert!(directory.by_secret_hash(&secret(20).hash()).is_some());
    assert!(directory
        .by_secret_hash(&SecretKeyHash::of("sk_live_unknown"))
        .is_none());
    assert!(directory.by_public_key(public_key(11).as_str()).is_none());
}

#[test]
fn the_directory_ignores_replayed_events_and_reports_gaps() {
    let directory = Directory::new();
    directory.apply(&created());
    assert_eq!(directory.apply(&created()), ApplyOutcome::AlreadyApplied);
    let third = stored(3, ClientKeyEvent::ClientKeyDisabled { at: now() });
    assert_eq!(
        directory.apply(&third),
        ApplyOutcome::Gap { have: 1, got: 3 }
    );
    assert_eq!(directory.by_id(id().as_str()).map(|v| v.version()), Some(1));
}

#[test]
fn a_rotated_public_key_stays_findable_during_its_grace_and_the_view_says_until_when() {
    let directory = Directory::new();
    directory.apply(&created());
    directory.apply(&stored(
        2,
        ClientKeyEvent::PublicKeyRotated {
            public_key: public_key(11),
            previous: public_key(10),
            previous_valid_until: now() + Duration::seconds(60),
            at: now(),
        },
    ));
    let old = directory
        .by_public_key(public_key(10).as_str())
        .expect("still indexed");
    assert!(old
        .state()
        .accepts_public_key(public_key(10).as_str(), || now() + Duration::seconds(59)));
    assert!(!old
        .state()
        .accepts_public_key(public_key(10).as_str(), || now() + Duration::seconds(60)));
    assert_eq!(
        directory
            .by_public_key(public_key(11).as_str())
            .map(|v| v.version()),
        Some(2)
    );
}

#[test]
fn expiring_previous_keys_removes_them_from_the_indexes() {
    let directory = Directory::new();
    directory.apply(&created());
    directory.apply(&stored(
        2,
        ClientKeyEvent::SecretKeyRotated {
            secret_key: secret(21).fingerprint(),
            previous: secret(20).fingerprint(),
            previous_valid_until: now() + Duration::seconds(600),
            at: now(),
        },
    ));
    assert!(directory.by_secret_hash(&secret(20).hash()).is_some());
    directory.apply(&stored(
        3,
        ClientKeyEvent::PreviousKeysExpired { at: now() },
    ));
    assert!(directory.by_secret_hash(&secret(20).hash()).is_none());
    assert!(directory.by_secret_hash(&secret(21).hash()).is_some());
}

#[test]
fn replacing_with_an_older_view_keeps_the_newer_one() {
    let directory = Directory::new();
    let first = ClientKeyView::fold([&created()]).expect("created");
    let second = first.apply(&stored(2, ClientKeyEvent::ClientKeyDisabled { at: now() }));
    directory.replace(second);
    directory.replace(first);
    assert_eq!(directory.by_id(id().as_str()).map(|v| v.version()), Some(2));
}

#[test]
fn a_snapshot_chunk_installs_like_single_replaces_and_clearing_forgets_every_index() {
    // Given a directory that holds a key at version 2
    let directory = Directory::new();
    let first = ClientKeyView::fold([&created()]).expect("created");
    let second = first.apply(&stored(2, ClientKeyEvent::ClientKeyDisabled { at: now() }));
    directory.replace(second);
    // When a chunk with an older view of it is installed, with room made first
    directory.reserve(10);
    directory.replace_all([std::sync::Arc::new(first)]);
    // Then the newer view stays, reachable by every index
    assert_eq!(directory.by_id(id().as_str()).map(|v| v.version()), Some(2));
    assert_eq!(
        directory
            .by_public_key(public_key(10).as_str())
            .map(|v| v.version()),
        Some(2)
    );
    assert_eq!(directory.len(), 1);
    // When the directory is cleared (a snapshot found bad after installing)
    directory.clear();
    // Then no index finds the key any more
    assert!(directory.by_id(id().as_str()).is_none());
    assert!(directory.by_public_key(public_key(10).as_str()).is_none());
    assert!(directory.by_secret_hash(&secret(20).hash()).is_none());
    assert!(directory.list(None, 10).is_empty());
    assert_eq!(directory.len(), 0);
}

#[test]
fn listing_pages_through_keys_in_id_order() {
    let directory = Directory::new();
    let mut ids = Vec::new();
    for seed in 0..5u64 {
        let key_id = ClientKeyId::generate(&mut StdRng::seed_from_u64(100 + seed));
        ids.push(key_id.as_str().to_owned());
        let event = StoredEvent {
            aggregate_id: key_id.as_str().to_owned(),
            sequence: 1,
            at: Some(now()),
            link: None,
            event: ClientKeyEvent::ClientKeyCreated {
                id: key_id,
                name: Text::parse("k").expect("valid"),
                public_key: public_key(200 + seed),
                secret_key: secret(300 + seed).fingerprint(),
                origins: AllowList::default(),
                config: WidgetConfig::default(),
                token_policy: TokenPolicy::default(),
                at: now(),
            },
        };
        directory.apply(&event);
    }
    ids.sort();
    let page: Vec<String> = directory
        .list(None, 2)
        .iter()
        .map(|v| v.state().id.as_str().to_owned())
        .collect();
    assert_eq!(page, ids[..2]);
    let next: Vec<String> = directory
        .list(Some(&ids[1]), 10)
        .iter()
        .map(|v| v.state().id.as_str().to_owned())
        .collect();
    assert_eq!(next, ids[2..]);
}
