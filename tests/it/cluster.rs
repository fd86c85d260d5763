//! In-process clusters on 127.0.0.1: any node answers any key with the owner's state, limits hold
//! exactly across nodes, forwarded items are batched, and a dead owner gives clear per-item errors.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, OVER, UNDER, grpc_client, leaky, metric_sum, now_ms, token};
use ringlimit::proto::{self, peers_v1_client::PeersV1Client, v1_client::V1Client};
use tonic::transport::Channel;

async fn clients(cluster: &Cluster) -> Vec<V1Client<Channel>> {
    let mut clients = Vec::new();
    for node in &cluster.nodes {
        clients.push(grpc_client(node).await);
    }
    clients
}

async fn one(client: &mut V1Client<Channel>, item: proto::RateLimitReq) -> proto::RateLimitResp {
    client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![item],
        })
        .await
        .expect("call succeeds")
        .into_inner()
        .responses
        .remove(0)
}

/// Sends `items` one per call, rotating over the nodes, and returns (status, remaining).
async fn rotate(
    clients: &mut [V1Client<Channel>],
    items: Vec<proto::RateLimitReq>,
) -> Vec<(i32, i64)> {
    let count = clients.len();
    let mut answers = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let answer = one(&mut clients[index % count], item).await;
        assert_eq!(answer.error, "");
        answers.push((answer.status, answer.remaining));
    }
    answers
}

#[tokio::test]
async fn worked_examples_give_the_same_answers_on_every_node() {
    let cluster = Cluster::start(3, &[]).await;
    let mut clients = clients(&cluster).await;
    for start in 0..3 {
        // Rotate the starting node so every node answers every position of every example.
        clients.rotate_left(1);
        let key = |example: &str| format!("{example}-{start}");

        let items = [1, 1, 1, 1, 0]
            .map(|h| token(&key("ex1"), h, 2, 9000))
            .to_vec();
        assert_eq!(
            rotate(&mut clients, items).await,
            [(UNDER, 1), (UNDER, 0), (OVER, 0), (OVER, 0), (OVER, 0)]
        );
        let items = [-1, -1, 4, -1]
            .map(|h| token(&key("ex2"), h, 2, 3_600_000))
            .to_vec();
        assert_eq!(
            rotate(&mut clients, items).await,
            [(UNDER, 3), (UNDER, 4), (UNDER, 0), (UNDER, 1)]
        );
        let items = [1000, 1500, 500, 400, 100, 1]
            .map(|h| token(&key("ex3"), h, 2000, 3_600_000))
            .to_vec();
        assert_eq!(
            rotate(&mut clients, items).await,
            [
                (UNDER, 1000),
                (OVER, 1000),
                (UNDER, 500),
                (UNDER, 100),
                (UNDER, 0),
                (OVER, 0)
            ]
        );
        let items = [0, 1, 100, 0]
            .map(|h| proto::RateLimitReq {
                behavior: proto::Behavior::DrainOverLimit as i32,
                ..token(&key("ex4"), h, 10, 30_000)
            })
            .to_vec();
        assert_eq!(
            rotate(&mut clients, items).await,
            [(UNDER, 10), (UNDER, 9), (OVER, 0), (UNDER, 0)]
        );
        let items = [0, 0, proto::Behavior::ResetRemaining as i32, 0]
            .map(|behavior| proto::RateLimitReq {
                behavior,
                ..token(&key("ex5"), 1, 100, 9000)
            })
            .to_vec();
        assert_eq!(
            rotate(&mut clients, items).await,
            [(UNDER, 99), (UNDER, 98), (UNDER, 100), (UNDER, 99)]
        );
        let items = vec![
            token(&key("ex6"), 6, 5, 60_000),
            token(&key("ex6"), 5, 5, 60_000),
        ];
        assert_eq!(rotate(&mut clients, items).await, [(OVER, 5), (UNDER, 0)]);
        let created_at = now_ms();
        let items = [6, 0]
            .map(|h| proto::RateLimitReq {
                created_at: Some(created_at),
                ..leaky(&key("ex7"), h, 5, 5000)
            })
            .to_vec();
        assert_eq!(rotate(&mut clients, items).await, [(OVER, 0), (UNDER, 0)]);
        let items = [1, -1, 10, -1]
            .map(|h| proto::RateLimitReq {
                created_at: Some(created_at),
                ..leaky(&key("ex8"), h, 10, 30_000)
            })
            .to_vec();
        assert_eq!(
            rotate(&mut clients, items).await,
            [(UNDER, 9), (UNDER, 10), (UNDER, 0), (UNDER, 1)]
        );
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn answers_from_non_owners_name_the_owner() {
    let cluster = Cluster::start(3, &[]).await;
    let mut clients = clients(&cluster).await;
    let owner = cluster.owner_of("test", "named");
    for (index, client) in clients.iter_mut().enumerate() {
        let answer = one(client, token("named", 1, 10, 60_000)).await;
        if index == owner {
            assert!(answer.metadata.is_empty(), "{:?}", answer.metadata);
        } else {
            assert_eq!(
                answer.metadata.get("owner"),
                Some(&cluster.address(owner)),
                "node {index}"
            );
        }
    }
    // Three hits, one per node, all counted by the owner.
    let answer = one(&mut clients[owner], token("named", 0, 10, 60_000)).await;
    assert_eq!(answer.remaining, 7);
    cluster.shutdown().await;
}

#[tokio::test]
async fn two_hundred_clients_over_every_node_admit_exactly_the_limit() {
    let cluster = Cluster::start(3, &[]).await;
    let admitted = Arc::new(AtomicI64::new(0));
    let mut tasks = Vec::new();
    for client_index in 0..200 {
        let mut client = grpc_client(&cluster.nodes[client_index % 3]).await;
        let admitted = Arc::clone(&admitted);
        tasks.push(tokio::spawn(async move {
            for _ in 0..15 {
                let answer = one(&mut client, token("exact", 1, 1000, 3_600_000)).await;
                assert_eq!(answer.error, "");
                if answer.status == UNDER {
                    admitted.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    // 200 clients × 15 hits = 3000 hits against a limit of 1000.
    assert_eq!(admitted.load(Ordering::SeqCst), 1000);
    cluster.shutdown().await;
}

#[tokio::test]
async fn concurrent_forwarded_items_share_peer_calls() {
    let cluster = Cluster::start(2, &[]).await;
    // Keys all owned by node 1, sent to node 0: every item is forwarded.
    let keys = cluster.keys_owned_by(1, "batch", 2000);
    let keys = Arc::new(keys);
    let mut tasks = Vec::new();
    for task_index in 0..50 {
        let mut client = grpc_client(&cluster.nodes[0]).await;
        let keys = Arc::clone(&keys);
        tasks.push(tokio::spawn(async move {
            for call in 0..40 {
                let key = &keys[(task_index * 40 + call) % keys.len()];
                let answer = one(&mut client, token(key, 1, 100, 60_000)).await;
                assert_eq!(answer.error, "");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let scrape = cluster.nodes[0].node().render_metrics();
    let items = metric_sum(&scrape, "ringlimit_forwarded_items_total");
    let calls = metric_sum(&scrape, "ringlimit_peer_calls_total");
    assert_eq!(items, 2000.0, "{scrape}");
    assert!(
        calls * 3.0 <= items,
        "{calls} peer calls carried {items} items: batching ratio below 3"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_stopped_owner_gives_item_errors_and_other_items_succeed() {
    let mut cluster = Cluster::start(3, &["--batch-timeout=300ms"]).await;
    let key = cluster.key_owned_by(2, "dead");
    let local_key = cluster.key_owned_by(0, "alive");
    let dead_address = cluster.address(2);
    let dead = cluster.nodes.remove(2);
    dead.shutdown().await.expect("owner stops");

    let mut client = grpc_client(&cluster.nodes[0]).await;
    let started = Instant::now();
    let answers = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token(&key, 1, 10, 60_000), token(&local_key, 1, 10, 60_000)],
        })
        .await
        .expect("the call itself succeeds")
        .into_inner()
        .responses;
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert!(
        answers[0].error.contains(&dead_address),
        "the error names the owner: {:?}",
        answers[0].error
    );
    assert_eq!(answers[1].error, "");
    assert_eq!(answers[1].remaining, 9);

    // The failed calls make the node report itself unhealthy, naming the peer.
    let health = client
        .health_check(proto::HealthCheckReq {})
        .await
        .unwrap_err();
    assert_eq!(health.code(), tonic::Code::Unavailable);
    assert!(
        health.message().contains(&dead_address),
        "{}",
        health.message()
    );

    // Once the peer leaves the membership, its keys are owned by the survivors again.
    cluster.set_membership(&[0, 1]);
    let answer = one(&mut client, token(&key, 1, 10, 60_000)).await;
    assert_eq!(answer.error, "");
    assert_eq!(answer.remaining, 9);
    client
        .health_check(proto::HealthCheckReq {})
        .await
        .expect("healthy once the failed peer is gone");
    cluster.shutdown().await;
}

#[tokio::test]
async fn peer_calls_are_answered_even_when_rings_disagree() {
    let cluster = Cluster::start(3, &[]).await;
    let owner = cluster.owner_of("test", "disagree");
    let other = (owner + 1) % 3;
    let channel = common::channel(cluster.address(other)).await;
    let mut peers = PeersV1Client::new(channel);
    let answer = peers
        .get_peer_rate_limits(proto::GetPeerRateLimitsReq {
            requests: vec![token("disagree", 4, 10, 60_000)],
        })
        .await
        .expect("answered, not bounced")
        .into_inner()
        .rate_limits
        .remove(0);
    assert_eq!((answer.status, answer.remaining), (UNDER, 6));
    assert!(answer.metadata.is_empty());
    cluster.shutdown().await;
}

#[tokio::test]
async fn static_discovery_forms_a_cluster_from_guber_peers() {
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map(|address| address.port())
                .expect("a free port")
        })
        .collect();
    let addresses: Vec<String> = ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect();
    let peers = format!("--peers={}", addresses.join(","));
    let mut nodes = Vec::new();
    for address in &addresses {
        let config = ringlimit::config::server_config_from_args([
            format!("--grpc-address={address}"),
            "--http-address=127.0.0.1:0".to_string(),
            "--peer-discovery-type=static".to_string(),
            peers.clone(),
        ])
        .expect("valid configuration");
        nodes.push(
            ringlimit::server::start(&config)
                .await
                .expect("node starts"),
        );
    }
    for node in &nodes {
        let listed: Vec<String> = node
            .node()
            .peers()
            .snapshot()
            .into_iter()
            .map(|peer| peer.grpc_address)
            .collect();
        let mut expected = addresses.clone();
        expected.sort();
        assert_eq!(listed, expected);
        let health = node.node().health_check().expect("healthy");
        assert_eq!(health.peer_count, 3);
    }
    // One key, hit once through each node, is counted once by its owner.
    for node in &nodes {
        let mut client = grpc_client(node).await;
        one(&mut client, token("static", 1, 10, 60_000)).await;
    }
    let mut client = grpc_client(&nodes[0]).await;
    assert_eq!(
        one(&mut client, token("static", 0, 10, 60_000))
            .await
            .remaining,
        7
    );
    for node in nodes {
        node.shutdown().await.expect("clean shutdown");
    }
}
