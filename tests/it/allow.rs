//! `POST /allow` on real nodes: spending, denial, errors, and idempotency keys that hold on the same
//! node and across a 3-node cluster.

use crate::common;

use common::{Cluster, http_url, spread_key, start_node};
use ringlimit::server::RunningServer;
use serde_json::Value;

/// Five tokens a minute (one every 12 s) for `default`, two an hour for `uploads`.
const RESOURCES: &str = "--allow-resources=default=5/1m,uploads=2/1h";

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

async fn allow(
    server: &RunningServer,
    query: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut request = reqwest::Client::new().post(http_url(server, &format!("/allow?{query}")));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("request is sent");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

#[tokio::test]
async fn spends_then_denies_with_the_seed_shape() {
    let node = start_node(&[RESOURCES]).await;
    let first = allow(&node, "user_id=alice", None, None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body,
        r#"{"allowed":true,"retry_after":0.0,"tokens_left":4.0}"#
    );
    assert_eq!(first.header("ratelimit-limit"), Some("5"));
    assert_eq!(first.header("ratelimit-remaining"), Some("4"));
    assert_eq!(first.header("ratelimit-reset"), Some("12"));
    assert_eq!(first.header("content-type"), Some("application/json"));

    // The same call as a JSON body, spending the rest.
    let rest = allow(
        &node,
        "",
        None,
        Some(r#"{"user_id":"alice","resource":"default","cost":4}"#),
    )
    .await;
    assert_eq!(
        rest.body,
        r#"{"allowed":true,"retry_after":0.0,"tokens_left":0.0}"#
    );

    let denied = allow(&node, "user_id=alice&cost=2", None, None).await;
    assert_eq!(denied.status, 429);
    // Two tokens at one every 12 s, counted from the bucket's last refill (the first call), to
    // the millisecond.
    let body = denied.json();
    assert_eq!(
        (&body["allowed"], &body["tokens_left"]),
        (&Value::Bool(false), &Value::from(0.0))
    );
    let retry_after = body["retry_after"].as_f64().expect("a number");
    assert!((20.0..=24.0).contains(&retry_after), "{}", denied.body);
    assert_eq!(denied.header("retry-after"), Some("24"));
    assert_eq!(denied.header("ratelimit-remaining"), Some("0"));
    assert_eq!(denied.header("ratelimit-reset"), Some("60"));

    // Other users and other resources have their own buckets.
    let bob = allow(&node, "user_id=bob&resource=uploads&cost=2", None, None).await;
    assert_eq!(
        bob.body,
        r#"{"allowed":true,"retry_after":0.0,"tokens_left":0.0}"#
    );
    let bob_default = allow(&node, "user_id=bob", None, None).await;
    assert_eq!(bob_default.status, 200);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_calls_are_400_with_a_reason() {
    let node = start_node(&[RESOURCES]).await;
    for (query, expected) in [
        ("", "user_id is required"),
        (
            "user_id=a&resource=no%20spaces",
            "resource must be 1 to 64 letters",
        ),
        ("user_id=a&cost=0", "cost must be at least 1"),
        ("user_id=a&cost=6", "it would never be allowed"),
        ("user_id=a&cost=lots", "cost must be a whole number"),
    ] {
        let answer = allow(&node, query, None, None).await;
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        let body = answer.json();
        assert_eq!(body["error"], "invalid_request");
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{query}: {}",
            answer.body
        );
    }
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_post_is_served() {
    let node = start_node(&[RESOURCES]).await;
    let response = reqwest::get(http_url(&node, "/allow?user_id=a"))
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_idempotent_repeat_on_the_same_node_spends_once() {
    let node = start_node(&[RESOURCES]).await;
    let first = allow(&node, "user_id=carol&cost=2", Some("order-1"), None).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.body,
        r#"{"allowed":true,"retry_after":0.0,"tokens_left":3.0}"#
    );
    assert_eq!(first.header("idempotent-replayed"), None);
    let repeat = allow(&node, "user_id=carol&cost=2", Some("order-1"), None).await;
    assert_eq!(repeat.status, 200);
    assert_eq!(repeat.body, first.body);
    assert_eq!(repeat.header("idempotent-replayed"), Some("true"));
    // Only one spend happened: a plain call finds 3 tokens.
    let plain = allow(&node, "user_id=carol", None, None).await;
    assert_eq!(
        plain.body,
        r#"{"allowed":true,"retry_after":0.0,"tokens_left":2.0}"#
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reused_key_with_a_different_request_is_422() {
    let node = start_node(&[RESOURCES]).await;
    let first = allow(&node, "user_id=dave", Some("k-1"), None).await;
    assert_eq!(first.status, 200);
    for query in ["user_id=dave&cost=2", "user_id=dave&resource=uploads"] {
        let conflict = allow(&node, query, Some("k-1"), None).await;
        assert_eq!(conflict.status, 422, "{query}: {}", conflict.body);
        assert_eq!(conflict.json()["error"], "idempotency_key_reused");
    }
    // Keys are per user: another user may use the same key.
    let erin = allow(&node, "user_id=erin&cost=2", Some("k-1"), None).await;
    assert_eq!(erin.status, 200);
    node.shutdown().await.unwrap();
}

/// A user whose idempotency records live on node `owner`.
fn user_with_records_on(cluster: &Cluster, owner: usize, prefix: &str) -> String {
    (0..10_000)
        .map(|i| spread_key(prefix, i))
        .find(|user| cluster.owner_of(ringlimit::allow::RECORDS_RING_NAME, user) == owner)
        .expect("a user owned by the node")
}

#[tokio::test]
async fn an_idempotent_repeat_on_another_node_spends_once() {
    let cluster = Cluster::start(3, &[RESOURCES]).await;
    // The records live on node 2; the first call lands on node 0, the repeats on nodes 1 and 2.
    let user = user_with_records_on(&cluster, 2, "frank");
    let query = format!("user_id={user}&cost=2");
    let first = allow(&cluster.nodes[0], &query, Some("pay-7"), None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body,
        r#"{"allowed":true,"retry_after":0.0,"tokens_left":3.0}"#
    );
    for node in [1, 2, 0] {
        let repeat = allow(&cluster.nodes[node], &query, Some("pay-7"), None).await;
        assert_eq!(repeat.status, 200, "node {node}: {}", repeat.body);
        assert_eq!(repeat.body, first.body, "node {node}");
        assert_eq!(
            repeat.header("idempotent-replayed"),
            Some("true"),
            "node {node}"
        );
    }
    // Spent once: 3 tokens are left, seen from any node.
    let plain = allow(&cluster.nodes[1], &format!("user_id={user}"), None, None).await;
    assert_eq!(
        plain.body,
        r#"{"allowed":true,"retry_after":0.0,"tokens_left":2.0}"#
    );
    // A conflicting reuse is caught on any node too.
    let conflict = allow(
        &cluster.nodes[0],
        &format!("user_id={user}&cost=1"),
        Some("pay-7"),
        None,
    )
    .await;
    assert_eq!(conflict.status, 422, "{}", conflict.body);
    cluster.shutdown().await;
}

#[tokio::test]
async fn concurrent_repeats_across_the_cluster_spend_once() {
    let cluster = Cluster::start(3, &[RESOURCES]).await;
    let user = user_with_records_on(&cluster, 1, "grace");
    let query = format!("user_id={user}");
    let calls = (0..9).map(|i| allow(&cluster.nodes[i % 3], &query, Some("burst-1"), None));
    let answers = futures_util::future::join_all(calls).await;
    let replays = answers
        .iter()
        .filter(|answer| answer.header("idempotent-replayed").is_some())
        .count();
    for answer in &answers {
        assert_eq!(
            answer.body,
            r#"{"allowed":true,"retry_after":0.0,"tokens_left":4.0}"#
        );
    }
    assert_eq!(replays, 8, "exactly one call decided");
    cluster.shutdown().await;
}
