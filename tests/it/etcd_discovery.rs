//! etcd and DNS discovery against a real etcd (started by the tests on free loopback ports).
//!
//! Every wait is bounded and polls every 50 ms. A missing `etcd` binary fails these tests.

use crate::common;
use crate::support_etcd;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ringlimit::proto::{self, v1_client::V1Client};
use ringlimit::server::RunningServer;
use support_etcd::{Etcd, eventually, unique_prefix};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The flags that put a node in the cluster of `etcd` under `prefix`, lease TTL 2 s.
fn etcd_flags(etcd: &Etcd, prefix: &str) -> Vec<String> {
    vec![
        "--peer-discovery-type=etcd".to_string(),
        format!("--etcd-endpoints={}", etcd.endpoint()),
        format!("--etcd-key-prefix={prefix}"),
        "--etcd-lease-ttl=2s".to_string(),
    ]
}

async fn start_etcd_node(etcd: &Etcd, prefix: &str) -> RunningServer {
    let flags = etcd_flags(etcd, prefix);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    common::start_node(&flags).await
}

/// The gRPC addresses in `server`'s peer list.
fn members(server: &RunningServer) -> BTreeSet<String> {
    server
        .node()
        .peers()
        .snapshot()
        .into_iter()
        .map(|peer| peer.grpc_address)
        .collect()
}

fn addresses(servers: &[&RunningServer]) -> BTreeSet<String> {
    servers
        .iter()
        .map(|server| server.grpc_address().to_string())
        .collect()
}

/// Waits (at most `limit`) until every server's peer list is exactly `expected`.
async fn all_agree(servers: &[&RunningServer], expected: &BTreeSet<String>, limit: Duration) {
    let agreed = eventually(limit, || async {
        servers.iter().all(|server| members(server) == *expected)
    })
    .await;
    let seen: Vec<_> = servers.iter().map(|server| members(server)).collect();
    assert!(
        agreed,
        "peer lists did not converge to {expected:?} within {limit:?}: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_discover_each_other() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("three");
    let a = start_etcd_node(&etcd, &prefix).await;
    let b = start_etcd_node(&etcd, &prefix).await;
    let c = start_etcd_node(&etcd, &prefix).await;
    let nodes = [&a, &b, &c];
    all_agree(&nodes, &addresses(&nodes), Duration::from_secs(2)).await;
    for node in nodes {
        assert_eq!(node.node().peers().snapshot().len(), 3);
        let health = node.node().health_check().expect("healthy");
        assert_eq!(health.status, "healthy");
        assert_eq!(health.peer_count, 3);
    }
    // The registrations use Gubernator's key and value format.
    let mut client = etcd.client().await;
    let key = format!("{prefix}{}", a.grpc_address());
    let response = client.get(key.as_str(), None).await.expect("get");
    let value: serde_json::Value =
        serde_json::from_slice(response.kvs()[0].value()).expect("JSON value");
    assert_eq!(value["grpc-address"], a.grpc_address().to_string());
    assert_eq!(value["http-address"], a.http_address().to_string());
    assert_eq!(value["data-center"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fourth_node_joins_and_everyone_agrees() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("fourth");
    let a = start_etcd_node(&etcd, &prefix).await;
    let b = start_etcd_node(&etcd, &prefix).await;
    let c = start_etcd_node(&etcd, &prefix).await;
    all_agree(
        &[&a, &b, &c],
        &addresses(&[&a, &b, &c]),
        Duration::from_secs(2),
    )
    .await;
    let d = start_etcd_node(&etcd, &prefix).await;
    let nodes = [&a, &b, &c, &d];
    all_agree(&nodes, &addresses(&nodes), Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_leave_is_seen_by_the_others() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("leave");
    let a = start_etcd_node(&etcd, &prefix).await;
    let b = start_etcd_node(&etcd, &prefix).await;
    let c = start_etcd_node(&etcd, &prefix).await;
    all_agree(
        &[&a, &b, &c],
        &addresses(&[&a, &b, &c]),
        Duration::from_secs(2),
    )
    .await;
    let leaving = c.grpc_address().to_string();
    let started = Instant::now();
    c.shutdown().await.expect("clean shutdown");
    all_agree(&[&a, &b], &addresses(&[&a, &b]), Duration::from_secs(2)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2) + Duration::from_millis(500),
        "leave plus propagation took {:?}",
        started.elapsed()
    );
    assert!(
        !etcd
            .keys(&prefix)
            .await
            .contains(&format!("{prefix}{leaving}")),
        "the key was deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_disappears_after_its_lease_ttl() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("killed");
    let a = start_etcd_node(&etcd, &prefix).await;
    let b = start_etcd_node(&etcd, &prefix).await;

    // A node in its own process, so it can die without leaving.
    let port = |_| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("free port")
    };
    let (grpc_port, http_port) = (port(()), port(()));
    let victim = format!("127.0.0.1:{grpc_port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .arg(format!("--grpc-address={victim}"))
        .arg(format!("--http-address=127.0.0.1:{http_port}"))
        .args(etcd_flags(&etcd, &prefix))
        .env("GUBER_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ringlimit starts");

    let mut expected = addresses(&[&a, &b]);
    expected.insert(victim.clone());
    all_agree(&[&a, &b], &expected, Duration::from_secs(10)).await;

    // SIGKILL: no leave, the lease must expire.
    child.start_kill().expect("kill -9");
    let _ = child.wait().await;
    let killed_at = Instant::now();
    all_agree(&[&a, &b], &addresses(&[&a, &b]), Duration::from_secs(4)).await;
    let gone_after = killed_at.elapsed();
    assert!(
        gone_after <= Duration::from_secs(4),
        "took {gone_after:?}, more than TTL + 2 s"
    );
}

/// Sends one GetRateLimits to every client and asserts each succeeds; returns the number of calls.
async fn call_every_node(clients: &mut [V1Client<Channel>]) -> usize {
    for (i, client) in clients.iter_mut().enumerate() {
        let request = proto::GetRateLimitsReq {
            requests: vec![common::token(&format!("outage-{i}"), 1, 1_000_000, 60_000)],
        };
        let response = client
            .get_rate_limits(request)
            .await
            .expect("GetRateLimits succeeds during the outage");
        let responses = response.into_inner().responses;
        assert_eq!(responses.len(), 1);
        assert_eq!(responses[0].error, "", "item error: {:?}", responses[0]);
    }
    clients.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_keep_serving_through_an_etcd_outage_and_register_again() {
    let mut etcd = Etcd::start().await;
    let prefix = unique_prefix("outage");
    let a = start_etcd_node(&etcd, &prefix).await;
    let b = start_etcd_node(&etcd, &prefix).await;
    let c = start_etcd_node(&etcd, &prefix).await;
    let nodes = [&a, &b, &c];
    let everyone = addresses(&nodes);
    all_agree(&nodes, &everyone, Duration::from_secs(2)).await;

    let mut clients = Vec::new();
    for node in nodes {
        clients.push(common::grpc_client(node).await);
    }
    let mut calls = 0;

    etcd.stop();
    let outage = Instant::now() + Duration::from_secs(10);
    while Instant::now() < outage {
        calls += call_every_node(&mut clients).await;
        for node in nodes {
            assert_eq!(
                members(node),
                everyone,
                "the last known membership is kept while etcd is down"
            );
        }
        // Pacing: calls and checks spread over the whole outage.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(calls >= 150, "only {calls} calls were made");

    etcd.restart().await;
    let expected_keys: Vec<String> = everyone
        .iter()
        .map(|address| format!("{prefix}{address}"))
        .collect();
    // Lease TTL (2 s) + the longest reconnect backoff (5 s) + slack.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut back = false;
    while !back && Instant::now() < deadline {
        call_every_node(&mut clients).await;
        back = etcd.keys(&prefix).await == expected_keys;
        tokio::time::sleep(support_etcd::POLL).await;
    }
    assert!(
        back,
        "registrations did not come back: {:?}",
        etcd.keys(&prefix).await
    );
    all_agree(&nodes, &everyone, Duration::from_secs(5)).await;
    // The registrations are kept alive again, not left over from before the outage: they outlive
    // the lease TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(etcd.keys(&prefix).await, expected_keys);
    all_agree(&nodes, &everyone, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_lease_is_registered_again() {
    let etcd = Etcd::start().await;
    let prefix = unique_prefix("lost");
    let a = start_etcd_node(&etcd, &prefix).await;
    let b = start_etcd_node(&etcd, &prefix).await;
    let everyone = addresses(&[&a, &b]);
    all_agree(&[&a, &b], &everyone, Duration::from_secs(2)).await;

    // Revoke a's lease behind its back: its key goes, and a must notice and register again.
    let mut client = etcd.client().await;
    let key = format!("{prefix}{}", a.grpc_address());
    let response = client.get(key.as_str(), None).await.expect("get");
    let lease = response.kvs()[0].lease();
    client.lease_revoke(lease).await.expect("revoke");
    let back = eventually(Duration::from_secs(4), || async {
        etcd.keys(&prefix).await.contains(&key)
    })
    .await;
    assert!(back, "a did not register again after losing its lease");
    all_agree(&[&a, &b], &everyone, Duration::from_secs(2)).await;
    let response = client.get(key.as_str(), None).await.expect("get");
    assert_ne!(response.kvs()[0].lease(), lease, "a new lease");
}

/// `grpc.health.v1`'s answer for the whole server.
async fn grpc_health(server: &RunningServer) -> ServingStatus {
    let mut client = HealthClient::new(common::channel(server.grpc_address()).await);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("grpc.health.v1 answers");
    ServingStatus::try_from(response.into_inner().status).expect("a known status")
}

/// The exit code of `ringlimit healthcheck` against `server`.
async fn healthcheck_exit_code(server: &RunningServer) -> Option<i32> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .args([
            "healthcheck",
            "--url",
            &format!("http://{}", server.http_address()),
        ])
        .env_remove("GUBER_HTTP_ADDRESS")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("healthcheck finishes in time")
        .expect("the binary runs");
    output.status.code()
}

/// The flags of a node whose etcd is down at start (dial timeout 500 ms).
fn late_flags(etcd: &Etcd, prefix: &str, extra: &[&str]) -> Vec<String> {
    let mut flags = etcd_flags(etcd, prefix);
    flags.push("--etcd-dial-timeout=500ms".to_string());
    flags.extend(extra.iter().map(|flag| flag.to_string()));
    flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_starts_while_etcd_is_down_reports_it_and_registers_when_it_comes_up() {
    let mut etcd = Etcd::start().await;
    let prefix = unique_prefix("late");
    etcd.stop();
    let flags = late_flags(&etcd, &prefix, &[]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let started = Instant::now();
    let a = common::start_node(&flags).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "start waited {:?}",
        started.elapsed()
    );
    // Serving alone: it answers calls, but every health surface says it is alone.
    assert_eq!(members(&a), addresses(&[&a]));
    let mut client = common::grpc_client(&a).await;
    assert_eq!(call_every_node(std::slice::from_mut(&mut client)).await, 1);
    let error = a.node().health_check().expect_err("unhealthy while alone");
    let message = error.to_string();
    assert!(
        message.contains("not registered in etcd") && message.contains(&etcd.endpoint()),
        "{message}"
    );
    let status = client
        .health_check(proto::HealthCheckReq {})
        .await
        .expect_err("HealthCheck answers UNAVAILABLE");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("serves alone"), "{status:?}");
    assert_eq!(grpc_health(&a).await, ServingStatus::NotServing);
    assert_eq!(healthcheck_exit_code(&a).await, Some(2));
    assert_eq!(readyz_status(&a).await, 503);

    etcd.restart().await;
    let key = format!("{prefix}{}", a.grpc_address());
    // The longest reconnect backoff (5 s) + slack.
    let registered = eventually(Duration::from_secs(8), || async {
        etcd.keys(&prefix).await == vec![key.clone()]
    })
    .await;
    assert!(registered, "the node did not register once etcd came up");
    let healthy = eventually(Duration::from_secs(2), || async {
        grpc_health(&a).await == ServingStatus::Serving
    })
    .await;
    assert!(
        healthy,
        "grpc.health.v1 did not turn SERVING after registration"
    );
    assert_eq!(a.node().health_check().expect("healthy").status, "healthy");
    assert_eq!(healthcheck_exit_code(&a).await, Some(0));
    assert_eq!(readyz_status(&a).await, 200);
    let b = start_etcd_node(&etcd, &prefix).await;
    all_agree(&[&a, &b], &addresses(&[&a, &b]), Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_alone_healthy_keeps_a_node_without_etcd_healthy() {
    let mut etcd = Etcd::start().await;
    let prefix = unique_prefix("alone-ok");
    etcd.stop();
    let flags = late_flags(&etcd, &prefix, &["--serve-alone-healthy=true"]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = common::start_node(&flags).await;
    assert_eq!(members(&a), addresses(&[&a]));
    assert_eq!(a.node().health_check().expect("healthy").status, "healthy");
    assert_eq!(grpc_health(&a).await, ServingStatus::Serving);
    assert_eq!(healthcheck_exit_code(&a).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_resolves_localhost_to_this_node() {
    let node = common::start_node(&[
        "--peer-discovery-type=dns",
        "--dns-fqdn=localhost",
        "--dns-poll-interval=100ms",
    ])
    .await;
    let me = node.grpc_address().to_string();
    let found = eventually(Duration::from_secs(2), || async {
        members(&node).contains(&me)
    })
    .await;
    assert!(found, "peers: {:?}", members(&node));
    for peer in node.node().peers().snapshot() {
        assert!(
            peer.grpc_address
                .ends_with(&format!(":{}", node.grpc_address().port())),
            "{peer:?} uses this node's gRPC port"
        );
    }
    assert_eq!(
        node.node().health_check().expect("healthy").status,
        "healthy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_register_over_tls_with_the_configured_ca() {
    let etcd = Etcd::start_tls().await;
    let prefix = unique_prefix("tls");
    let ca = etcd.tls().expect("TLS files").ca.display().to_string();
    let mut flags = etcd_flags(&etcd, &prefix);
    flags.push(format!("--etcd-tls-ca={ca}"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = common::start_node(&flags).await;
    let b = common::start_node(&flags).await;
    all_agree(&[&a, &b], &addresses(&[&a, &b]), Duration::from_secs(2)).await;
    let mut expected: Vec<String> = addresses(&[&a, &b])
        .into_iter()
        .map(|address| format!("{prefix}{address}"))
        .collect();
    expected.sort();
    assert_eq!(etcd.keys(&prefix).await, expected);
}

/// The HTTP status of `/readyz` (the same rule as `grpc.health.v1` for a node serving alone).
async fn readyz_status(server: &RunningServer) -> u16 {
    reqwest::get(format!("http://{}/readyz", server.http_address()))
        .await
        .expect("GET /readyz")
        .status()
        .as_u16()
}
