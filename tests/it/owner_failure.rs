//! An owner that dies or goes silent: dead-peer detection and `GUBER_OWNER_FAILURE_POLICY`.
//!
//! Real nodes on loopback; the owner that dies is a real `ringlimit` process killed with SIGKILL,
//! the owner that goes silent is a TCP listener that accepts and never answers. Every wait is
//! bounded in count and time.

use crate::common;
use crate::support_etcd;

use std::net::TcpListener as StdListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Cluster, UNDER, start_node, token};
use ringlimit::peers::PeerInfo;
use ringlimit::proto::{self, v1_client::V1Client};
use ringlimit::server::RunningServer;
use support_etcd::{Etcd, eventually, unique_prefix};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// A free loopback port below Linux's ephemeral range (32768–60999), for a node that is restarted
/// on the same address: an ephemeral port could meanwhile be taken as the source port of some
/// outgoing connection, and the restart could not bind it.
fn free_restartable_port() -> u16 {
    // Every call starts its search elsewhere: the tests run concurrently in one process, and a
    // port freed by one test's kill -9 must not be handed to another test's node, which would
    // then answer for the killed one.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let start = (std::process::id() as usize * 7919 + call * 997) % 10_000;
    (0..10_000)
        .map(|i| 20_000 + ((start + i) % 10_000) as u16)
        .find(|&port| StdListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free loopback port between 20000 and 30000")
}

/// A `ringlimit` process on `grpc` (and a free HTTP port) with `args`.
fn spawn_node(grpc: &str, args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .arg(format!("--grpc-address={grpc}"))
        .arg(format!("--http-address=127.0.0.1:{}", free_port()))
        .args(args)
        .env("GUBER_LOG_LEVEL", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("ringlimit starts")
}

/// Waits (at most 10 s) until the node at `grpc` answers LiveCheck; returns a client of it.
async fn wait_serving(grpc: &str) -> V1Client<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut client) = V1Client::connect(format!("http://{grpc}")).await
            && client.live_check(proto::LiveCheckReq {}).await.is_ok()
        {
            return client;
        }
        assert!(
            Instant::now() < deadline,
            "{grpc} did not start within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILL, and wait for the process to be gone.
async fn kill_9(child: &mut Child) {
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
}

fn peer(address: &str) -> PeerInfo {
    PeerInfo {
        grpc_address: address.to_string(),
        http_address: String::new(),
        data_center: String::new(),
    }
}

/// The gRPC address that owns `test`/`key` in `server`'s ring.
fn owner_in(server: &RunningServer, key: &str) -> String {
    server
        .node()
        .peers()
        .membership()
        .ring
        .owner(&format!("test_{key}"))
        .expect("a ring")
        .grpc_address
        .clone()
}

/// The first of `spread_key(prefix, …)` that `server`'s ring gives to `owner`.
fn key_owned_by(server: &RunningServer, owner: &str, prefix: &str) -> String {
    (0..100_000)
        .map(|i| common::spread_key(prefix, i))
        .find(|key| owner_in(server, key) == owner)
        .expect("a key owned by the node")
}

async fn one(client: &mut V1Client<Channel>, item: proto::RateLimitReq) -> proto::RateLimitResp {
    let mut responses = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![item],
        })
        .await
        .expect("the call succeeds")
        .into_inner()
        .responses;
    assert_eq!(responses.len(), 1);
    responses.remove(0)
}

/// A peer that accepts connections and never answers (a hung or partitioned node). The task holds
/// at most 64 connections and ends when aborted.
async fn silent_peer() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < 64 {
            match listener.accept().await {
                Ok((socket, _)) => held.push(socket),
                Err(_) => break,
            }
        }
        std::future::pending::<()>().await;
    });
    (address, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_owner_is_marked_down_and_its_items_fail_fast_with_an_error() {
    let cluster = Cluster::start(
        2,
        &[
            // Long enough that "fails at once" (well under 300 ms on a busy machine) is far
            // from "waited for the timeout".
            "--batch-timeout=1s",
            "--peer-down-threshold=2",
            "--peer-down-backoff=30s",
        ],
    )
    .await;
    let (silent, silent_task) = silent_peer().await;
    let peers = vec![
        cluster.nodes[0].node().peers().me().clone(),
        cluster.nodes[1].node().peers().me().clone(),
        peer(&silent),
    ];
    for node in &cluster.nodes {
        node.node().peers().replace(peers.clone());
    }
    let a = &cluster.nodes[0];
    let dead_key = key_owned_by(a, &silent, "silent");
    let live_key = key_owned_by(a, &cluster.address(1), "live");
    let mut client = common::grpc_client(a).await;

    // The first call waits for the timeout (twice: the retry goes to the same owner), which
    // reaches the threshold of two consecutive failures.
    let started = Instant::now();
    let first = one(&mut client, token(&dead_key, 1, 10, 60_000)).await;
    let first_took = started.elapsed();
    assert!(
        first.error.contains(&format!("owner {silent}")),
        "the error names the owner: {first:?}"
    );
    assert!(first.error.contains("timed out"), "{first:?}");
    assert!(first_took < Duration::from_secs(5), "took {first_took:?}");

    // From now on the owner is down: its items fail at once, naming it.
    for _ in 0..20 {
        let started = Instant::now();
        let answer = one(&mut client, token(&dead_key, 1, 10, 60_000)).await;
        let took = started.elapsed();
        assert!(
            answer.error.contains(&format!("owner {silent}")) && answer.error.contains("down"),
            "{answer:?}"
        );
        assert_eq!(answer.metadata["owner"], silent);
        assert!(
            took < Duration::from_millis(300),
            "a call to a down owner took {took:?}"
        );
    }
    // Keys of live owners are unaffected.
    let live = one(&mut client, token(&live_key, 1, 10, 60_000)).await;
    assert_eq!(live.error, "");
    assert_eq!(live.status, UNDER);
    assert_eq!(live.remaining, 9);
    silent_task.abort();
    cluster.shutdown().await;
}

/// The flags that put a node in the cluster of `etcd` under `prefix`, lease TTL 2 s.
fn etcd_flags(etcd: &Etcd, prefix: &str) -> Vec<String> {
    vec![
        "--peer-discovery-type=etcd".to_string(),
        format!("--etcd-endpoints={}", etcd.endpoint()),
        format!("--etcd-key-prefix={prefix}"),
        "--etcd-lease-ttl=2s".to_string(),
    ]
}

fn members(server: &RunningServer) -> Vec<String> {
    server
        .node()
        .peers()
        .snapshot()
        .into_iter()
        .map(|peer| peer.grpc_address)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_owner_fails_its_items_fast_and_its_keys_move_after_the_lease_ttl() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("owner-killed");
    let flags = etcd_flags(&etcd, &prefix);
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = start_node(&flag_refs).await;
    let b = start_node(&flag_refs).await;
    let victim = format!("127.0.0.1:{}", free_restartable_port());
    let mut child = spawn_node(&victim, &flags);
    wait_serving(&victim).await;
    let all_three = eventually(Duration::from_secs(10), || async {
        [&a, &b].iter().all(|node| members(node).len() == 3)
    })
    .await;
    assert!(all_three, "a: {:?}, b: {:?}", members(&a), members(&b));

    let dead_key = key_owned_by(&a, &victim, "killed");
    let live_key = key_owned_by(&a, &b.grpc_address().to_string(), "alive");
    let mut client = common::grpc_client(&a).await;
    assert_eq!(
        one(&mut client, token(&dead_key, 1, 100, 60_000))
            .await
            .error,
        ""
    );

    kill_9(&mut child).await;
    let killed_at = Instant::now();
    let mut errors = 0;
    let mut moved_after = None;
    for _ in 0..200 {
        let started = Instant::now();
        let answer = one(&mut client, token(&dead_key, 1, 100, 60_000)).await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "an item of a dead owner took {took:?}"
        );
        if answer.error.is_empty() {
            assert_ne!(
                answer.metadata.get("owner"),
                Some(&victim),
                "answered by a live owner"
            );
            moved_after = Some(killed_at.elapsed());
            break;
        }
        assert!(
            answer.error.contains(&format!("owner {victim}")),
            "a clear error that names the dead owner: {answer:?}"
        );
        errors += 1;
        let live = one(&mut client, token(&live_key, 1, 1_000, 60_000)).await;
        assert_eq!(live.error, "", "keys of live owners are fine: {live:?}");
        if killed_at.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        errors > 0,
        "the dead owner was still in the ring for a while"
    );
    let moved_after = moved_after.expect("the key moved to a live owner");
    assert!(
        moved_after <= Duration::from_secs(2 + 2),
        "the key moved after {moved_after:?}, more than the lease TTL (2 s) + 2 s"
    );
    let gone_everywhere = eventually(Duration::from_secs(2), || async {
        !members(&a).contains(&victim) && !members(&b).contains(&victim)
    })
    .await;
    assert!(
        gone_everywhere,
        "a: {:?}, b: {:?}",
        members(&a),
        members(&b)
    );
    a.shutdown().await.expect("clean shutdown");
    b.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_owner_with_the_local_policy_is_answered_locally_and_reconciled() {
    let local = [
        "--owner-failure-policy=local",
        "--peer-down-backoff=200ms",
        "--peer-down-max-backoff=400ms",
    ];
    let cluster = Cluster::start(2, &local).await;
    let victim = format!("127.0.0.1:{}", free_restartable_port());
    let mut static_flags = vec![
        "--peer-discovery-type=static".to_string(),
        format!(
            "--peers={},{},{victim}",
            cluster.address(0),
            cluster.address(1)
        ),
    ];
    static_flags.extend(local.iter().map(|flag| flag.to_string()));
    let mut child = spawn_node(&victim, &static_flags);
    let peers = vec![
        cluster.nodes[0].node().peers().me().clone(),
        cluster.nodes[1].node().peers().me().clone(),
        peer(&victim),
    ];
    for node in &cluster.nodes {
        node.node().peers().replace(peers.clone());
    }
    wait_serving(&victim).await;
    let a = &cluster.nodes[0];
    let reconciled_key = key_owned_by(a, &victim, "reconciled");
    let bounded_key = key_owned_by(a, &victim, "bounded");
    let mut client_a = common::grpc_client(a).await;
    let mut client_b = common::grpc_client(&cluster.nodes[1]).await;
    let before = one(&mut client_a, token(&reconciled_key, 3, 10, 60_000)).await;
    assert_eq!((before.error.as_str(), before.remaining), ("", 7));

    kill_9(&mut child).await;

    // Answers keep coming, from the receiving node, at once.
    for expected_remaining in [9, 8, 7, 6, 5, 4] {
        let started = Instant::now();
        let answer = one(&mut client_a, token(&reconciled_key, 1, 10, 60_000)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(answer.error, "");
        assert_eq!(answer.status, UNDER);
        assert_eq!(answer.metadata["fallback"], "local");
        assert_eq!(answer.metadata["owner"], victim);
        // The fallback bucket starts full: the owner's state died with it.
        assert_eq!(answer.remaining, expected_remaining);
    }

    // The documented bound: each receiving node admits at most the limit per window.
    let mut admitted = 0;
    for _ in 0..20 {
        for client in [&mut client_a, &mut client_b] {
            let answer = one(client, token(&bounded_key, 1, 5, 60_000)).await;
            assert_eq!(answer.error, "");
            if answer.status == UNDER {
                admitted += 1;
            }
        }
    }
    assert_eq!(admitted, 2 * 5, "two receiving nodes, limit 5 each");

    // The owner comes back (empty, like any crashed node) and is sent the hits taken meanwhile.
    let mut child = spawn_node(&victim, &static_flags);
    let mut owner = wait_serving(&victim).await;
    let reconciled = eventually(Duration::from_secs(5), || {
        let mut owner = owner.clone();
        let key = reconciled_key.clone();
        async move { one(&mut owner, token(&key, 0, 10, 60_000)).await.remaining == 4 }
    })
    .await;
    assert!(
        reconciled,
        "the owner did not receive the 6 hits taken locally: {:?}",
        one(&mut owner, token(&reconciled_key, 0, 10, 60_000)).await
    );
    let bounded = one(&mut owner, token(&bounded_key, 0, 5, 60_000)).await;
    assert_eq!(bounded.remaining, 0, "both nodes' hits reached the owner");
    // And the receiving nodes forward to the owner again.
    let back = eventually(Duration::from_secs(5), || {
        let mut client = client_a.clone();
        let key = reconciled_key.clone();
        async move {
            let answer = one(&mut client, token(&key, 0, 10, 60_000)).await;
            answer.error.is_empty() && !answer.metadata.contains_key("fallback")
        }
    })
    .await;
    assert!(back, "node a still answers from its fallback bucket");
    kill_9(&mut child).await;
    cluster.shutdown().await;
}
