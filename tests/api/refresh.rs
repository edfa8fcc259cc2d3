//! Refresh families (API.md "Refresh families"): one successor per refresh token under
//! any concurrency, the lost-response retry, reuse of any older generation revoking the
//! whole family, the absolute lifetime, guests switched off, revocations that outlive
//! every token they cover, and what `audit token` and `/metrics` say about it.

use std::collections::BTreeSet;

use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use widget_auth::tokens::{Claims, TokenKind};

use crate::helpers::{jwt_part, status_json, StoreKind, TestApp};

const ORIGIN: &str = "https://acme.test";

crate::on_both_stores!(
    twenty_concurrent_refreshes_of_one_token_give_exactly_one_successor,
    a_retry_after_a_lost_response_gets_the_same_successor,
    reuse_of_any_older_generation_revokes_the_family_and_its_live_head,
    the_latest_spent_token_after_the_grace_revokes_the_family,
    the_absolute_lifetime_caps_every_successor,
    guests_off_ends_guest_families_and_keeps_signed_in_ones,
    a_revocation_outlives_every_token_it_covers_after_the_policy_shrinks,
    audit_token_says_whether_a_refresh_token_is_live_spent_or_revoked,
    a_refresh_racing_a_reuse_never_leaves_a_live_token,
    a_revocation_this_node_has_not_applied_yet_still_stops_the_spend,
);

async fn key(app: &TestApp) -> Value {
    app.create_key(json!({"name": "Acme", "origins": [ORIGIN]}))
        .await
}

fn id(key: &Value) -> &str {
    key["id"].as_str().expect("id")
}

/// A signed-in user's session pair (guest = false).
async fn user_session(app: &TestApp, key: &Value) -> Value {
    let visitor = app.visitor_token(key, "user-7").await;
    let response = app.exchange(&visitor, Some(ORIGIN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

fn refresh_token(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

async fn text(response: Response) -> (StatusCode, String) {
    let status = response.status();
    (status, response.text().await.expect("text"))
}

/// Refreshes `token` and returns the 200 body.
async fn rotate(app: &TestApp, token: &str) -> Value {
    let (status, body) = status_json(app.refresh(token, Some(ORIGIN)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn reuse_detections(app: &TestApp) -> u64 {
    let metrics = app
        .http
        .get(app.internal("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("widget_auth_refresh_reuse_detections_total "))
        .expect("the reuse counter is exported")
        .parse()
        .expect("a number")
}

const REFUSED: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "refresh token revoked");

fn refused() -> (StatusCode, String) {
    (REFUSED.0, REFUSED.1.to_owned())
}

async fn twenty_concurrent_refreshes_of_one_token_give_exactly_one_successor(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let r0 = refresh_token(&user_session(&app, &key).await);

    let answers = futures::future::join_all((0..20).map(|_| app.refresh(&r0, Some(ORIGIN)))).await;
    let mut successors = BTreeSet::new();
    let mut sessions = BTreeSet::new();
    for response in answers {
        let (status, body) = status_json(response).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        successors.insert(refresh_token(&body));
        sessions.insert(body["token"].as_str().expect("token").to_owned());
    }
    assert_eq!(successors.len(), 1, "one successor: {successors:?}");
    assert_eq!(
        sessions.len(),
        20,
        "each answer carries its own session token"
    );
    let r1 = successors.into_iter().next().expect("one");
    assert_eq!(jwt_part(&r1, 1)["gen"], 1);
    // The successor is the family's one live token: it rotates, and nothing was detected.
    let r2 = refresh_token(&rotate(&app, &r1).await);
    assert_ne!(r2, r1);
    assert_eq!(reuse_detections(&app).await, 0);
    app.finish().await;
}

async fn a_retry_after_a_lost_response_gets_the_same_successor(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let r0 = refresh_token(&user_session(&app, &key).await);
    let first = rotate(&app, &r0).await;
    let retry = rotate(&app, &r0).await;
    assert_eq!(
        refresh_token(&retry),
        refresh_token(&first),
        "the same token"
    );
    let (a, b) = (
        jwt_part(&refresh_token(&first), 1),
        jwt_part(&refresh_token(&retry), 1),
    );
    assert_eq!(a["jti"], b["jti"]);
    assert_eq!(a["exp"], b["exp"]);
    let session = jwt_part(retry["token"].as_str().expect("token"), 1);
    assert_eq!(
        (session["sub"].clone(), session["guest"].clone()),
        (json!("user-7"), json!(false))
    );
    assert!(retry["refresh_expires_in"].as_u64().expect("n") <= 604_800);
    // The successor still rotates normally: the retry did not spend or fork it.
    let next = rotate(&app, &refresh_token(&first)).await;
    assert_eq!(jwt_part(&refresh_token(&next), 1)["gen"], 2);
    assert_eq!(reuse_detections(&app).await, 0);
    app.finish().await;
}

async fn reuse_of_any_older_generation_revokes_the_family_and_its_live_head(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let mut chain = vec![refresh_token(&user_session(&app, &key).await)];
    for _ in 0..3 {
        let next = refresh_token(&rotate(&app, chain.last().expect("one")).await);
        chain.push(next);
    }
    // chain[3] is live, chain[2] the latest spent; chain[1] is older: presenting it is
    // theft, even a second after its use.
    let (status, message) = text(app.refresh(&chain[1], Some(ORIGIN)).await).await;
    assert_eq!(
        (status, message.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "refresh token already used; the session is revoked"
        )
    );
    assert_eq!(reuse_detections(&app).await, 1);
    for token in chain.iter().rev() {
        assert_eq!(
            text(app.refresh(token, Some(ORIGIN)).await).await,
            refused()
        );
    }
    assert_eq!(reuse_detections(&app).await, 1, "one family, one detection");
    // Another family of the same key is untouched.
    let other = refresh_token(&user_session(&app, &key).await);
    rotate(&app, &other).await;
    app.finish().await;
}

async fn the_latest_spent_token_after_the_grace_revokes_the_family(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let r0 = refresh_token(&user_session(&app, &key).await);
    let r1 = refresh_token(&rotate(&app, &r0).await);
    // Eleven seconds pass for the ledger's record of the spending.
    let family = jwt_part(&r0, 1)["fam"].as_str().expect("fam").to_owned();
    let moved = app
        .store
        .execute(&format!(
            "UPDATE refresh_family_heads SET spent_at_ms = spent_at_ms - 11000 WHERE family = '{family}'"
        ))
        .await;
    assert_eq!(moved, 1);
    let (status, message) = text(app.refresh(&r0, Some(ORIGIN)).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("already used"), "{message}");
    assert_eq!(text(app.refresh(&r1, Some(ORIGIN)).await).await, refused());
    app.finish().await;
}

/// A refresh token of `key`'s signed with the server's key, as an earlier rotation of a
/// family that started at `started_at` would have minted it.
fn family_token(app: &TestApp, key: &Value, started_at: i64, guest: bool) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        iss: "widget-auth".to_owned(),
        aud: TokenKind::Refresh.audience().to_owned(),
        sub: "user-7".to_owned(),
        iat: now - 60,
        nbf: now - 60,
        exp: now + 3600,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        ck: id(key).to_owned(),
        kind: TokenKind::Refresh,
        ver: 1,
        origin: Some(ORIGIN.to_owned()),
        guest: Some(guest),
        name: None,
        email: None,
        fam: Some(uuid::Uuid::new_v4().simple().to_string()),
        fst: Some(started_at),
        gen: Some(4),
    };
    app.store.signing_keys().mint(&claims).expect("mint")
}

async fn the_absolute_lifetime_caps_every_successor(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let day = 86_400;
    let policy = json!({"refresh_ttl_seconds": 7 * day, "refresh_absolute_ttl_seconds": 8 * day});
    let command = app
        .command(
            id(&key),
            json!({"type": "set_token_policy", "policy": policy}),
        )
        .await;
    assert_eq!(command.status(), StatusCode::OK);
    assert_eq!(
        app.key(id(&key)).await["token_policy"]["refresh_absolute_ttl_seconds"],
        8 * day
    );
    let now = chrono::Utc::now().timestamp();
    let started_at = now - 5 * day;
    let body = rotate(&app, &family_token(&app, &key, started_at, false)).await;
    let successor = jwt_part(&refresh_token(&body), 1);
    assert_eq!(
        successor["exp"],
        started_at + 8 * day,
        "capped, not now + 7 days"
    );
    assert_eq!(successor["fst"], started_at);
    assert_eq!(successor["gen"], 5);
    let expires_in = body["refresh_expires_in"].as_i64().expect("n");
    assert!(
        (3 * day - 5..=3 * day).contains(&expires_in),
        "{expires_in}"
    );
    // A new family gets the full refresh lifetime.
    let fresh = user_session(&app, &key).await;
    assert_eq!(fresh["refresh_expires_in"], 7 * day);

    // A family past its end is refused, even with a token that has not expired.
    let ended = family_token(&app, &key, now - 8 * day - 1, false);
    assert_eq!(
        text(app.refresh(&ended, Some(ORIGIN)).await).await,
        (
            StatusCode::BAD_REQUEST,
            "refresh token expired: the session reached its absolute lifetime".to_owned()
        )
    );
    app.finish().await;
}

async fn guests_off_ends_guest_families_and_keeps_signed_in_ones(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let guest: Value = app
        .guest(key["public_key"].as_str().expect("pk"), ORIGIN)
        .await
        .json()
        .await
        .expect("json");
    let guest_r1 = refresh_token(&rotate(&app, &refresh_token(&guest)).await);
    let user_r0 = refresh_token(&user_session(&app, &key).await);
    let command = app
        .command(
            id(&key),
            json!({"type": "set_token_policy", "policy": {"guests_allowed": false}}),
        )
        .await;
    assert_eq!(command.status(), StatusCode::OK);
    assert_eq!(
        text(app.refresh(&guest_r1, Some(ORIGIN)).await).await,
        (
            StatusCode::BAD_REQUEST,
            "guests are not allowed for this client_key".to_owned()
        )
    );
    let user = rotate(&app, &user_r0).await;
    let session = jwt_part(user["token"].as_str().expect("token"), 1);
    assert_eq!(session["guest"], false);
    app.finish().await;
}

async fn a_revocation_outlives_every_token_it_covers_after_the_policy_shrinks(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let r0 = refresh_token(&user_session(&app, &key).await);
    let r1 = refresh_token(&rotate(&app, &r0).await);
    let r2 = refresh_token(&rotate(&app, &r1).await);
    assert_eq!(
        text(app.refresh(&r0, Some(ORIGIN)).await).await.0,
        StatusCode::BAD_REQUEST
    );
    // The key's refresh lifetime shrinks from 7 days to 1 hour; r2 still has 7 days.
    let command = app
        .command(
            id(&key),
            json!({"type": "set_token_policy", "policy": {"refresh_ttl_seconds": 3600, "refresh_absolute_ttl_seconds": 3600}}),
        )
        .await;
    assert_eq!(command.status(), StatusCode::OK);
    let store = &app.app.state.store;
    let two_hours_on = chrono::Utc::now().timestamp() + 7200;
    store.prune_token_ledger(two_hours_on).await.expect("prune");
    let family = jwt_part(&r2, 1)["fam"].as_str().expect("fam").to_owned();
    let kept = app
        .store
        .raw_rows(&format!(
            "SELECT family FROM refresh_family_heads WHERE family = '{family}' AND revoked_at IS NOT NULL"
        ))
        .await;
    assert_eq!(kept, vec![family.clone()], "the revocation is remembered");
    // r2 is refused for revocation, not for the new absolute lifetime (its family
    // started a moment ago): the revocation itself decides.
    let command = app
        .command(id(&key), json!({"type": "set_token_policy", "policy": {}}))
        .await;
    assert_eq!(command.status(), StatusCode::OK);
    assert_eq!(text(app.refresh(&r2, Some(ORIGIN)).await).await, refused());
    // Once every token it covers has expired, the row goes.
    let r2_exp = jwt_part(&r2, 1)["exp"].as_i64().expect("exp");
    store.prune_token_ledger(r2_exp + 1).await.expect("prune");
    assert!(app
        .store
        .raw_rows(&format!(
            "SELECT family FROM refresh_family_heads WHERE family = '{family}'"
        ))
        .await
        .is_empty());
    app.finish().await;
}

async fn audit_token_says_whether_a_refresh_token_is_live_spent_or_revoked(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let r0 = refresh_token(&user_session(&app, &key).await);
    let audit = |token: String| {
        let store = app.store.clone();
        async move {
            let (code, out, err) = store.cli(&["audit", "token", &token]).await;
            assert_eq!(code, 0, "{err}");
            out
        }
    };
    let family = jwt_part(&r0, 1)["fam"].as_str().expect("fam").to_owned();
    let out = audit(r0.clone()).await;
    assert!(
        out.contains(&format!(
            "refresh family {family} (this token: generation 0): live"
        )),
        "{out}"
    );
    let r1 = refresh_token(&rotate(&app, &r0).await);
    let r1_jti = jwt_part(&r1, 1)["jti"].as_str().expect("jti").to_owned();
    let out = audit(r0.clone()).await;
    assert!(out.contains("generation 0): spent at unix ms"), "{out}");
    assert!(out.contains(&format!("rotated into {r1_jti}")), "{out}");
    assert!(audit(r1.clone()).await.contains("generation 1): live"));
    let r2 = refresh_token(&rotate(&app, &r1).await);
    assert!(audit(r0.clone())
        .await
        .contains("spent: the family has moved on (live generation 2)"));
    assert_eq!(
        text(app.refresh(&r0, Some(ORIGIN)).await).await.0,
        StatusCode::BAD_REQUEST
    );
    let out = audit(r2).await;
    assert!(
        out.contains("generation 2): revoked at unix")
            && out.contains("(reuse: generation 0 was presented again after it was spent)"),
        "{out}"
    );
    let (code, json_out, _) = app.store.cli(&["audit", "token", "--json", &r1]).await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&json_out).expect("json");
    assert_eq!(
        (
            report["refresh_family"]["status"].clone(),
            report["refresh_family"]["reason"].clone(),
            report["refresh_family"]["generation_replayed"].clone()
        ),
        (json!("revoked"), json!("reuse"), json!(0))
    );
    app.finish().await;
}

async fn a_refresh_racing_a_reuse_never_leaves_a_live_token(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let r0 = refresh_token(&user_session(&app, &key).await);
    let r1 = refresh_token(&rotate(&app, &r0).await);
    let r2 = refresh_token(&rotate(&app, &r1).await);
    // The victim refreshes its live r2 while a thief replays r0, all at once.
    let requests = (0..20).map(|i| {
        let token = if i % 2 == 0 { &r2 } else { &r0 };
        app.refresh(token, Some(ORIGIN))
    });
    let mut minted = BTreeSet::new();
    for response in futures::future::join_all(requests).await {
        let (status, body) = status_json(response).await;
        match status {
            StatusCode::OK => {
                minted.insert(refresh_token(&body));
            }
            StatusCode::BAD_REQUEST => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(minted.len() <= 1, "at most one successor: {minted:?}");
    // Whichever came first, the family is revoked and nothing handed out still works.
    for token in minted.iter().chain([&r2]) {
        assert_eq!(
            text(app.refresh(token, Some(ORIGIN)).await).await,
            refused()
        );
    }
    assert_eq!(reuse_detections(&app).await, 1);
    app.finish().await;
}

async fn a_revocation_this_node_has_not_applied_yet_still_stops_the_spend(store: StoreKind) {
    let app = TestApp::spawn(store).await;
    let key = key(&app).await;
    let r0 = refresh_token(&user_session(&app, &key).await);
    let family = jwt_part(&r0, 1)["fam"].as_str().expect("fam").to_owned();
    // Another node committed a key-wide revocation this node's read model has not seen
    // (written straight into the store, as that node would have).
    let now = chrono::Utc::now().timestamp();
    let id = id(&key);
    let insert = format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('ClientKey', '{id}', 2, 'SessionsRevoked', '1.0', \
         '{{\"SessionsRevoked\": {{\"user_id\": null, \"issued_at_or_before\": {now}}}}}', \
         '{{\"actor\": \"admin:other-node\", \"at\": \"2026-01-02T03:04:05.000Z\", \"request_id\": \"r-other\"}}')"
    );
    assert_eq!(app.store.execute(&insert).await, 1);
    let response = app.refresh(&r0, Some(ORIGIN)).await;
    let retry_after = response.headers().contains_key("retry-after");
    let (status, message) = text(response).await;
    match store {
        // One process, no feed: the read model never learns of the row, the store does.
        StoreKind::Sqlite => {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
            assert!(retry_after);
        }
        // The feed may have applied it by now: then the read model refuses it first.
        StoreKind::Postgres => assert!(
            (status == StatusCode::SERVICE_UNAVAILABLE && retry_after)
                || (status, message.as_str()) == REFUSED,
            "{status} {message}"
        ),
    }
    let spent = app
        .store
        .raw_rows(&format!(
            "SELECT family FROM refresh_family_heads WHERE family = '{family}'"
        ))
        .await;
    assert!(spent.is_empty(), "nothing was spent or recorded");
    app.finish().await;
}
