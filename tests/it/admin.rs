//! The admin views against real nodes: exact counts for the traffic sent, a peek that never
//! spends, a bounded offender list under a flood of distinct keys, the same cluster-wide answer
//! from every node of a 3-node cluster (and a dead peer reported, not fatal), the bearer token,
//! and disabled views. Keys are shown hashed, the default (`tests/it/hostile_edges.rs` covers
//! `GUBER_ADMIN_SHOW_KEYS` and the token rules off loopback).

use crate::common;

use common::{ApiClient, Cluster, OVER, Surface, UNDER, http_url, start_node, token};
use ringlimit::server::RunningServer;
use serde_json::Value;

async fn get(server: &RunningServer, path: &str) -> (u16, Value) {
    get_with(server, path, None).await
}

async fn get_with(server: &RunningServer, path: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(http_url(server, path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.expect("admin request is sent");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body is read");
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, json)
}

/// Sends `count` separate calls of one hit each for `key` (limit `limit` per minute) and returns
/// the statuses answered.
async fn hit(client: &mut ApiClient, key: &str, limit: i64, count: usize) -> Vec<i32> {
    let mut statuses = Vec::new();
    for _ in 0..count {
        let answer = client.one(token(key, 1, limit, 60_000)).await;
        assert_eq!(answer.error, "");
        statuses.push(answer.status);
    }
    statuses
}

/// `key` as the views show it by default: hashed (`GUBER_ADMIN_SHOW_KEYS` is off).
fn shown(key: &str) -> String {
    ringlimit::admin::redact::hashed_key(key)
}

fn offender<'a>(list: &'a Value, key: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|entry| entry["unique_key"] == shown(key))
}

#[tokio::test]
async fn stats_and_offenders_match_the_traffic_sent() {
    let server = start_node(&[]).await;
    let mut client = ApiClient::new(&server, Surface::Grpc).await;
    assert_eq!(
        hit(&mut client, "alpha", 3, 5).await,
        [UNDER, UNDER, UNDER, OVER, OVER]
    );
    assert_eq!(
        hit(&mut client, "beta", 1, 4).await,
        [UNDER, OVER, OVER, OVER]
    );
    let mut http = ApiClient::new(&server, Surface::Http).await;
    assert_eq!(hit(&mut http, "gamma", 10, 2).await, [UNDER, UNDER]);

    let (status, stats) = get(&server, "/admin/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["decisions"]["under_limit"], 6);
    assert_eq!(stats["decisions"]["over_limit"], 5);
    assert_eq!(stats["scope"], "cluster");
    assert_eq!(stats["failed_peers"].as_array().unwrap().len(), 0);
    let top = &stats["top_limited"];
    assert_eq!(top.as_array().unwrap().len(), 2, "{top}");
    assert_eq!(top[0]["unique_key"], shown("beta"));
    assert_eq!(
        (top[0]["count"].as_u64(), top[0]["error"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(top[1]["unique_key"], shown("alpha"));
    assert_eq!(top[1]["count"], 2);
    assert_eq!(top[1]["name"], "test");

    for window in ["minute", "hour", "day"] {
        let (status, view) = get(&server, &format!("/admin/top_offenders?window={window}")).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["window"], window);
        assert_eq!(view["total"], 5);
        assert_eq!(offender(&view["offenders"], "beta").unwrap()["count"], 3);
        assert_eq!(offender(&view["offenders"], "alpha").unwrap()["count"], 2);
        assert!(offender(&view["offenders"], "gamma").is_none());
    }
    let (_, limited) = get(&server, "/admin/top_offenders?limit=1&scope=local").await;
    assert_eq!(limited["window"], "minute");
    assert_eq!(limited["scope"], "local");
    assert_eq!(limited["offenders"].as_array().unwrap().len(), 1);

    let (status, error) = get(&server, "/admin/top_offenders?window=week").await;
    assert_eq!(status, 400);
    assert_eq!(error["error"], "invalid_argument");
    assert_eq!(get(&server, "/admin/stats?limit=0").await.0, 400);
    assert_eq!(get(&server, "/admin/stats?scope=galaxy").await.0, 400);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn peeking_at_a_key_never_spends() {
    let server = start_node(&[]).await;
    let mut client = ApiClient::new(&server, Surface::Grpc).await;
    hit(&mut client, "peeked", 5, 2).await;

    for _ in 0..5 {
        let (status, state) = get(&server, "/admin/keys/test/peeked").await;
        assert_eq!(status, 200, "{state}");
        assert_eq!(state["found"], true);
        assert_eq!(state["algorithm"], "TOKEN_BUCKET");
        assert_eq!(state["status"], "UNDER_LIMIT");
        assert_eq!(state["limit"], 5);
        assert_eq!(state["remaining"], 3);
        assert_eq!(state["owner"], server.grpc_address().to_string());
        let eta = state["refill_eta_ms"].as_i64().unwrap();
        assert!((0..=60_000).contains(&eta), "{state}");
        assert_eq!(
            state["reset_time"].as_i64().unwrap() - state["now"].as_i64().unwrap(),
            eta
        );
    }
    // The next real hit still finds 3 left.
    let answer = client.one(token("peeked", 1, 5, 60_000)).await;
    assert_eq!(answer.remaining, 2);

    let (status, missing) = get(&server, "/admin/keys/test/never-used").await;
    assert_eq!(status, 200);
    assert_eq!(missing["found"], false);
    assert!(missing.get("remaining").is_none(), "{missing}");
    // Peeking at a key does not create it either.
    assert_eq!(
        get(&server, "/admin/keys/test/never-used").await.1["found"],
        false
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn top_offenders_stay_bounded_under_a_flood_of_distinct_keys() {
    let capacity = 5;
    let server = start_node(&["--admin-top-capacity=5"]).await;
    let mut client = ApiClient::new(&server, Surface::Grpc).await;
    // 3 calls of 1000 distinct keys, each refused (2 hits of a limit of 1).
    for batch in 0..3 {
        let items = (0..1000)
            .map(|i| token(&format!("flood-{batch}-{i}"), 2, 1, 60_000))
            .collect();
        let answers = client.get_rate_limits(items).await.unwrap();
        assert!(answers.iter().all(|answer| answer.status == OVER));
    }
    // One key refused 1000 times: more than total / capacity (4000 / 5), so it must be listed.
    let hot = vec![token("hot", 2, 1, 60_000); 1000];
    client.get_rate_limits(hot).await.unwrap();

    let admin = server.node().admin();
    assert!(
        admin.tracked_keys() <= capacity * (3 * 6 + 1),
        "{} keys tracked",
        admin.tracked_keys()
    );
    for window in ["minute", "hour", "day"] {
        let (status, view) = get(
            &server,
            &format!("/admin/top_offenders?window={window}&limit=1000"),
        )
        .await;
        assert_eq!(status, 200);
        let offenders = view["offenders"].as_array().unwrap();
        assert_eq!(offenders.len(), capacity, "{view}");
        assert_eq!(view["total"], 4000);
        let top = &offenders[0];
        assert_eq!(top["unique_key"], shown("hot"));
        let (count, error) = (
            top["count"].as_u64().unwrap(),
            top["error"].as_u64().unwrap(),
        );
        assert!(count >= 1000 && count - error <= 1000, "{top}");
    }
    let (_, stats) = get(&server, "/admin/stats?limit=1000").await;
    assert_eq!(stats["top_limited"].as_array().unwrap().len(), capacity);
    assert_eq!(stats["decisions"]["over_limit"], 4000);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn any_node_of_a_cluster_answers_for_the_whole_cluster() {
    let mut cluster = Cluster::start(3, &[]).await;
    // One key per owner, each sent through a node that does not own it: 1 admitted, 2 refused.
    let keys: Vec<String> = (0..3)
        .map(|owner| cluster.key_owned_by(owner, "adm"))
        .collect();
    for (owner, key) in keys.iter().enumerate() {
        let via = (owner + 1) % 3;
        let mut client = ApiClient::new(&cluster.nodes[via], Surface::Grpc).await;
        assert_eq!(hit(&mut client, key, 1, 3).await, [UNDER, OVER, OVER]);
    }

    let addresses: Vec<String> = (0..3).map(|i| cluster.address(i)).collect();
    for node in &cluster.nodes {
        let (status, stats) = get(node, "/admin/stats").await;
        assert_eq!(status, 200, "{stats}");
        // Each decision is counted once, by the owner that made it.
        assert_eq!(stats["decisions"]["under_limit"], 3, "{stats}");
        assert_eq!(stats["decisions"]["over_limit"], 6, "{stats}");
        let mut nodes: Vec<String> = stats["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        nodes.sort();
        let mut expected = addresses.clone();
        expected.sort();
        assert_eq!(nodes, expected);
        for key in &keys {
            let entry = offender(&stats["top_limited"], key).expect("every key is listed");
            assert_eq!(
                (entry["count"].as_u64(), entry["error"].as_u64()),
                (Some(2), Some(0))
            );
        }
        let (_, minute) = get(node, "/admin/top_offenders?window=minute").await;
        assert_eq!(minute["total"], 6);

        // The owner's state, whichever node is asked.
        for (owner, key) in keys.iter().enumerate() {
            let (status, state) = get(node, &format!("/admin/keys/test/{key}")).await;
            assert_eq!(status, 200, "{state}");
            assert_eq!(state["owner"], addresses[owner]);
            assert_eq!(state["remaining"], 0);
            assert_eq!(state["status"], "OVER_LIMIT");
        }

        let (status, peers) = get(node, "/admin/peers").await;
        assert_eq!(status, 200, "{peers}");
        assert_eq!(peers["ring_size"], 3);
        let listed = peers["peers"].as_array().unwrap();
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|peer| peer["healthy"] == true), "{peers}");
        assert_eq!(
            listed.iter().filter(|peer| peer["is_self"] == true).count(),
            1
        );
    }

    // A dead member is reported, and the others still answer.
    let dead = cluster.nodes.pop().expect("three nodes");
    let dead_address = dead.grpc_address().to_string();
    dead.shutdown().await.unwrap();
    let (status, stats) = get(&cluster.nodes[0], "/admin/stats").await;
    assert_eq!(status, 200);
    let failed = stats["failed_peers"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{stats}");
    assert_eq!(failed[0]["address"], dead_address);
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 2);
    let (_, peers) = get(&cluster.nodes[0], "/admin/peers").await;
    let dead_view = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|peer| peer["grpc_address"] == dead_address)
        .expect("the dead peer is still a member")
        .clone();
    assert_eq!(dead_view["healthy"], false);
    assert_eq!(dead_view["status"], "unreachable");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let server = start_node(&["--admin-token=s3cret"]).await;
    for path in [
        "/admin/stats",
        "/admin/top_offenders",
        "/admin/keys/test/k",
        "/admin/peers",
    ] {
        let (status, body) = get(&server, path).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(
            get_with(&server, path, Some("wrong")).await.0,
            401,
            "{path}"
        );
        assert_eq!(
            get_with(&server, path, Some("s3cret")).await.0,
            200,
            "{path}"
        );
    }
    let response = reqwest::get(http_url(&server, "/admin/stats"))
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("www-authenticate")
            .is_some_and(|value| value.to_str().unwrap().starts_with("Bearer"))
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_cluster_with_a_token_fans_out_with_it() {
    let cluster = Cluster::start(2, &["--admin-token=s3cret"]).await;
    let (status, stats) = get_with(&cluster.nodes[0], "/admin/stats", Some("s3cret")).await;
    assert_eq!(status, 200);
    assert_eq!(
        stats["failed_peers"].as_array().unwrap().len(),
        0,
        "{stats}"
    );
    assert_eq!(stats["nodes"].as_array().unwrap().len(), 2);
    cluster.shutdown().await;
}

#[tokio::test]
async fn disabled_views_are_not_found() {
    let server = start_node(&["--admin-enabled=false"]).await;
    for path in [
        "/admin/stats",
        "/admin/top_offenders",
        "/admin/keys/test/k",
        "/admin/peers",
    ] {
        assert_eq!(get(&server, path).await.0, 404, "{path}");
    }
    // Nothing is tracked either.
    let mut client = ApiClient::new(&server, Surface::Grpc).await;
    hit(&mut client, "k", 1, 2).await;
    assert_eq!(server.node().admin().decisions(), (0, 0));
    // The gateway still works.
    let health = reqwest::get(http_url(&server, "/v1/HealthCheck"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.shutdown().await.unwrap();
}
