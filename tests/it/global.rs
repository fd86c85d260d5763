//! GLOBAL limits across in-process clusters: non-owners answer from their copies, hits reach the
//! owner, and the owner's state comes back to every node. Every wait polls an observable state
//! (a node's copy or a metric) with a deadline; nothing sleeps for a fixed time and hopes.

use crate::common;

use std::time::{Duration, Instant};

use common::{Cluster, OVER, UNDER, grpc_client, leaky, metric_sum, token};
use ringlimit::algorithms::Bucket;
use ringlimit::proto::{self, v1_client::V1Client};
use ringlimit::request::LimitKey;
use tonic::transport::Channel;

const SYNC: &str = "--global-sync-wait=50ms";
const GLOBAL: i32 = proto::Behavior::Global as i32;

fn global(item: proto::RateLimitReq) -> proto::RateLimitReq {
    proto::RateLimitReq {
        behavior: item.behavior | GLOBAL,
        ..item
    }
}

async fn one(client: &mut V1Client<Channel>, item: proto::RateLimitReq) -> proto::RateLimitResp {
    let answer = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![item],
        })
        .await
        .expect("call succeeds")
        .into_inner()
        .responses
        .remove(0);
    assert_eq!(answer.error, "");
    answer
}

/// The remaining hits of node `index`'s copy of `test`/`key`, if it has one.
fn copy_remaining(cluster: &Cluster, index: usize, key: &str) -> Option<i64> {
    match cluster.nodes[index]
        .node()
        .store()
        .get(&LimitKey::new("test", key))?
    {
        Bucket::Token(token) => Some(token.remaining),
        Bucket::Leaky(leaky) => Some(leaky.remaining as i64),
    }
}

/// Waits (at most 5 s) until every node's copy of `key` has `remaining`.
async fn converge(cluster: &Cluster, key: &str, remaining: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let copies: Vec<_> = (0..cluster.nodes.len())
            .map(|index| copy_remaining(cluster, index, key))
            .collect();
        if copies.iter().all(|copy| *copy == Some(remaining)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "copies of {key} never converged to {remaining}: {copies:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hits_on_a_non_owner_reach_the_owner_and_come_back_to_every_node() {
    let cluster = Cluster::start(3, &[SYNC]).await;
    let key = cluster.key_owned_by(0, "nonowner");
    let mut client = grpc_client(&cluster.nodes[1]).await;
    // The first request fetches the owner's state; the next ones are answered locally.
    let first = one(&mut client, global(token(&key, 1, 100, 60_000))).await;
    assert_eq!(first.remaining, 99);
    assert_eq!(first.metadata.get("owner"), Some(&cluster.address(0)));
    for expected in [98, 97, 96, 95, 94] {
        let answer = one(&mut client, global(token(&key, 1, 100, 60_000))).await;
        assert_eq!((answer.status, answer.remaining), (UNDER, expected));
        assert_eq!(answer.metadata.get("owner"), Some(&cluster.address(0)));
    }
    converge(&cluster, &key, 94).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn hits_on_the_owner_are_broadcast_once() {
    let cluster = Cluster::start(3, &["--global-sync-wait=300ms"]).await;
    let key = cluster.key_owned_by(0, "owner");
    let mut client = grpc_client(&cluster.nodes[0]).await;
    client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![
                global(token(&key, 1, 10, 60_000)),
                global(token(&key, 1, 10, 60_000)),
                global(token(&key, 1, 10, 60_000)),
            ],
        })
        .await
        .expect("call succeeds");
    converge(&cluster, &key, 7).await;
    // Wait for one more sync interval: nothing changed, so nothing more is sent.
    let scrape_at = |index: usize| cluster.nodes[index].node().render_metrics();
    let quiet_until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < quiet_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for index in [1, 2] {
        let received = metric_sum(&scrape_at(index), "gubernator_updatepeerglobals_counter");
        assert_eq!(received, 1.0, "node {index} received {received} updates");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn hits_spread_over_every_non_owner_converge() {
    let cluster = Cluster::start(4, &[SYNC]).await;
    let key = cluster.key_owned_by(0, "spread");
    for index in 1..4 {
        let mut client = grpc_client(&cluster.nodes[index]).await;
        for _ in 0..10 {
            one(&mut client, global(token(&key, 1, 1000, 60_000))).await;
        }
    }
    converge(&cluster, &key, 970).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn over_limit_reached_through_several_nodes_is_seen_everywhere_and_sticks() {
    let cluster = Cluster::start(3, &[SYNC]).await;
    let key = cluster.key_owned_by(0, "over");
    let mut clients = Vec::new();
    for node in &cluster.nodes {
        clients.push(grpc_client(node).await);
    }
    for _round in 0..3 {
        for client in clients.iter_mut() {
            one(client, global(token(&key, 1, 5, 60_000))).await;
        }
    }
    converge(&cluster, &key, 0).await;
    // A copy that reached 0 by its own hits answers UNDER_LIMIT until the owner's refusal of the
    // hits owed to it comes back with the next sync (seen: node 1, for 40-50 ms). So every node
    // must answer OVER_LIMIT within the deadline, and then keep answering it.
    let query = || global(token(&key, 0, 5, 60_000));
    let deadline = Instant::now() + Duration::from_secs(5);
    for (index, client) in clients.iter_mut().enumerate() {
        loop {
            let answer = one(client, query()).await;
            if (answer.status, answer.remaining) == (OVER, 0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {index} still answers {:?}",
                (answer.status, answer.remaining)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for client in clients.iter_mut() {
        let answer = one(client, query()).await;
        assert_eq!((answer.status, answer.remaining), (OVER, 0));
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn negative_hits_propagate() {
    let cluster = Cluster::start(3, &[SYNC]).await;
    let key = cluster.key_owned_by(0, "negative");
    let mut client = grpc_client(&cluster.nodes[1]).await;
    one(&mut client, global(token(&key, 5, 10, 60_000))).await;
    one(&mut client, global(token(&key, -3, 10, 60_000))).await;
    converge(&cluster, &key, 8).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn leaky_global_limits_keep_their_burst() {
    let cluster = Cluster::start(3, &[SYNC]).await;
    let key = cluster.key_owned_by(0, "leaky");
    let mut client = grpc_client(&cluster.nodes[1]).await;
    let item = |hits| {
        global(proto::RateLimitReq {
            burst: 20,
            ..leaky(&key, hits, 10, 3_600_000)
        })
    };
    one(&mut client, item(1)).await;
    one(&mut client, item(4)).await;
    converge(&cluster, &key, 15).await;
    for index in 0..3 {
        match cluster.nodes[index]
            .node()
            .store()
            .get(&LimitKey::new("test", &key))
        {
            Some(Bucket::Leaky(bucket)) => assert_eq!(bucket.burst, 20, "node {index}"),
            other => panic!("node {index} has {other:?}"),
        }
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn reset_remaining_reaches_the_owner_and_every_node() {
    let cluster = Cluster::start(3, &[SYNC]).await;
    let key = cluster.key_owned_by(0, "reset");
    let mut client = grpc_client(&cluster.nodes[1]).await;
    one(&mut client, global(token(&key, 6, 10, 60_000))).await;
    converge(&cluster, &key, 4).await;
    let reset = proto::RateLimitReq {
        behavior: GLOBAL | proto::Behavior::ResetRemaining as i32,
        ..token(&key, 0, 10, 60_000)
    };
    one(&mut client, reset).await;
    let mut owner = grpc_client(&cluster.nodes[0]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = one(&mut owner, token(&key, 0, 10, 60_000)).await;
        if answer.remaining == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reset never reached the owner"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn hits_made_while_the_owner_is_unreachable_are_delivered_when_it_is_back() {
    let mut cluster = Cluster::start(3, &[SYNC, "--global-timeout=200ms"]).await;
    let key = cluster.key_owned_by(2, "outage");
    let owner_address = cluster.address(2);
    let mut client = grpc_client(&cluster.nodes[0]).await;
    one(&mut client, global(token(&key, 1, 100, 3_600_000))).await;
    converge(&cluster, &key, 99).await;

    // The owner goes away; the non-owners keep answering and keep the hits they owe.
    let owner = cluster.nodes.remove(2);
    owner.shutdown().await.expect("owner stops");
    for _ in 0..10 {
        one(&mut client, global(token(&key, 1, 100, 3_600_000))).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_sum(
        &cluster.nodes[0].node().render_metrics(),
        "gubernator_global_send_errors",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "no delivery was attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The owner comes back at the same address (empty, as after a restart).
    let config = ringlimit::config::server_config_from_args([
        format!("--grpc-address={owner_address}"),
        "--http-address=127.0.0.1:0".to_string(),
        SYNC.to_string(),
        "--global-timeout=200ms".to_string(),
    ])
    .expect("valid configuration");
    let restarted = ringlimit::server::start(&config)
        .await
        .expect("the owner restarts on its address");
    cluster.nodes.push(restarted);
    cluster.set_membership(&[0, 1, 2]);
    let mut owner = grpc_client(&cluster.nodes[2]).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = one(&mut owner, global(token(&key, 0, 100, 3_600_000))).await;
        // The restarted owner starts full and receives the 10 hits owed to it: none was lost.
        if answer.remaining == 90 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "owed hits never arrived: remaining {}",
            answer.remaining
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn force_global_makes_every_request_global() {
    let cluster = Cluster::start(2, &[SYNC, "--force-global"]).await;
    let key = cluster.key_owned_by(0, "forced");
    let mut client = grpc_client(&cluster.nodes[1]).await;
    one(&mut client, token(&key, 1, 10, 60_000)).await;
    one(&mut client, token(&key, 1, 10, 60_000)).await;
    converge(&cluster, &key, 8).await;
    let scrape = cluster.nodes[1].node().render_metrics();
    assert!(
        scrape.contains(r#"gubernator_getratelimit_counter{calltype="global"} 1"#),
        "{scrape}"
    );
    cluster.shutdown().await;
}

/// The accuracy scenario of `docs/accuracy.md`, small: one GLOBAL key with limit L, one open-loop
/// client per node at a fixed total rate, 3 × L hits in all. The cluster admits at least L and at
/// most L + λ·(W + d)·(2N − 1)/N, with d generously taken as 20 ms for a loaded CI machine.
#[tokio::test]
async fn global_over_admission_stays_within_the_documented_bound() {
    const LIMIT: i64 = 200;
    const RATE: f64 = 2_000.0; // λ, hits per second over the whole cluster
    let cluster = Cluster::start(3, &["--global-sync-wait=50ms"]).await;
    let per_node_calls = (3 * LIMIT as usize) / 3;
    let interval = Duration::from_secs_f64(3.0 / RATE);
    let mut tasks = Vec::new();
    for node in &cluster.nodes {
        let mut client = grpc_client(node).await;
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut admitted = 0;
            for call in 0..per_node_calls {
                tokio::time::sleep_until((start + interval.mul_f64(call as f64)).into()).await;
                let answer = one(&mut client, global(token("accuracy", 1, LIMIT, 3_600_000))).await;
                if answer.status == UNDER {
                    admitted += 1;
                }
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.expect("client task");
    }
    let (sync_wait, delay, nodes) = (0.050, 0.020, 3.0);
    let bound = RATE * (sync_wait + delay) * (2.0 * nodes - 1.0) / nodes;
    assert!(admitted >= LIMIT, "admitted {admitted} < limit {LIMIT}");
    assert!(
        (admitted - LIMIT) as f64 <= bound,
        "admitted {admitted}: overshoot {} above the bound {bound:.0}",
        admitted - LIMIT
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_node_that_joins_gets_the_owners_state_instead_of_a_full_bucket() {
    let cluster = Cluster::start(4, &[SYNC]).await;
    // A key node 0 owns both before and after node 3 joins.
    let key = (0..100_000)
        .map(|i| common::spread_key("join", i))
        .find(|key| {
            cluster.set_membership(&[0, 1, 2]);
            let owner_before = cluster.owner_of("test", key);
            cluster.set_membership(&[0, 1, 2, 3]);
            let owner_after = cluster.owner_of("test", key);
            owner_before == 0 && owner_after == 0
        })
        .expect("a key whose owner does not move");
    cluster.set_membership(&[0, 1, 2]);
    let mut client = grpc_client(&cluster.nodes[1]).await;
    one(&mut client, global(token(&key, 7, 10, 60_000))).await;
    converge_on(&cluster, &[0, 1, 2], &key, 3).await;

    cluster.set_membership(&[0, 1, 2, 3]);
    let mut joiner = grpc_client(&cluster.nodes[3]).await;
    let answer = one(&mut joiner, global(token(&key, 1, 10, 60_000))).await;
    assert_eq!((answer.status, answer.remaining), (UNDER, 2));
    converge(&cluster, &key, 2).await;
    cluster.shutdown().await;
}

/// Waits (at most 5 s) until the copies of `key` on the nodes at `indexes` have `remaining`.
async fn converge_on(cluster: &Cluster, indexes: &[usize], key: &str, remaining: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !indexes
        .iter()
        .all(|&index| copy_remaining(cluster, index, key) == Some(remaining))
    {
        assert!(Instant::now() < deadline, "copies of {key} never converged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
