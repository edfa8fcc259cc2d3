//! Refresh families across two nodes on one PostgreSQL: one successor per refresh token
//! whichever nodes the requests land on, the retry answered alike by either node, and a
//! reuse detected on one node refusing the family on the other.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::node::{Deployment, Node};
use crate::{status_json, CONVERGE};

const REFRESH: &str = "/api/v1/widget/auth/refresh";

async fn refresh(node: &Node, token: &str) -> (StatusCode, Value) {
    status_json(
        node.public_post(REFRESH, &json!({"refresh_token": token}), None)
            .await,
    )
    .await
}

fn refresh_token(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_refreshes_of_one_token_across_two_nodes_give_one_successor() {
    let deployment = Deployment::on_shared_server().await;
    let (a, b) = tokio::join!(deployment.node("a"), deployment.node("b"));
    let key = a.create_key_full("Acme").await;
    let id = key["id"].as_str().expect("id");
    b.wait_for_version(id, 1, CONVERGE).await;
    let (status, user) = status_json(
        a.public_post(
            "/api/v1/widget/auth/user-token",
            &json!({"client_key": key["public_key"], "user_id": "u1"}),
            key["secret_key"].as_str(),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    let (status, session) = status_json(
        b.public_post(
            "/api/v1/widget/auth/exchange",
            &json!({"token": user["visitor_token"]}),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let r0 = refresh_token(&session);

    let nodes = [&a, &b];
    let answers = futures::future::join_all((0..20).map(|i| refresh(nodes[i % 2], &r0))).await;
    let successors: BTreeSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, StatusCode::OK, "{body}");
            refresh_token(body)
        })
        .collect();
    assert_eq!(
        successors.len(),
        1,
        "one successor on two nodes: {successors:?}"
    );
    let r1 = successors.into_iter().next().expect("one");

    // The successor rotates on either node; then the first token, two generations old,
    // replayed on one node revokes the family on the other, live head included.
    let (status, body) = refresh(&b, &r1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r2 = refresh_token(&body);
    let (status, _) = refresh(&a, &r0).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for token in [&r2, &r1] {
        let response = b
            .public_post(REFRESH, &json!({"refresh_token": token}), None)
            .await;
        assert_eq!(
            (response.status(), response.text().await.expect("text")),
            (StatusCode::BAD_REQUEST, "refresh token revoked".to_owned())
        );
    }
    let metrics = a.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("widget_auth_refresh_reuse_detections_total 1"),
        "{metrics}"
    );
    drop((a, b));
    deployment.cleanup().await;
}
