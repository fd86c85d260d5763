//! Envoy's rate limit service end to end: a real node (and a 3-node cluster) answering
//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` from an envoy-types client, with
//! the behaviours envoy ratelimit's own integration tests check (basic limits, several descriptors,
//! over limit, duration until reset going down, hot reload adding and removing a rule), plus
//! `POST /json`, `/rlconfig`, health and the metrics. Windows move with a manual clock shared by the
//! nodes, so nothing sleeps for a window; waits for a reload are bounded polls.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    RateLimitDescriptor, rate_limit_descriptor::Entry,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_response::Code,
    rate_limit_service_client::RateLimitServiceClient,
};
use ringlimit::clock::ManualClock;
use ringlimit::config::server_config_from_args;
use ringlimit::server::{self, RunningServer};
use tonic::transport::Channel;

use crate::common::{self, http_url, metric_sum};

/// 2023-11-14 22:13:20 UTC: 40 s left in the minute, 2 h 46 min 40 s in the hour.
const T: i64 = 1_700_000_000_000;

const CONFIG: &str = "\
domain: basic
descriptors:
  - key: key1
    rate_limit:
      unit: minute
      requests_per_unit: 5
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 2
  - key: key2
    rate_limit:
      unit: hour
      requests_per_unit: 3
  - key: free
    rate_limit:
      unlimited: true
";

async fn start(config_path: &Path, clock: &Arc<ManualClock>, extra: &[&str]) -> RunningServer {
    let rls = format!("--rls-config={}", config_path.display());
    let mut args = vec![
        "--grpc-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        rls.as_str(),
    ];
    args.extend_from_slice(extra);
    let config = server_config_from_args(args).expect("valid test configuration");
    server::start_with_clock(
        &config,
        Arc::clone(clock) as Arc<dyn ringlimit::clock::Clock>,
    )
    .await
    .expect("node starts")
}

async fn client(server: &RunningServer) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{}", server.grpc_address()))
        .await
        .expect("gRPC connects")
}

pub(crate) fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        ..Default::default()
    }
}

pub(crate) fn request(domain: &str, descriptors: &[&[(&str, &str)]]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: descriptors
            .iter()
            .map(|entries| descriptor(entries))
            .collect(),
        hits_addend: 0,
    }
}

pub(crate) async fn call(
    client: &mut RateLimitServiceClient<Channel>,
    request: &RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(request.clone())
        .await
        .expect("ShouldRateLimit answers")
        .into_inner()
}

/// (overall, [(code, remaining, seconds until reset)]).
fn summary(response: &RateLimitResponse) -> (Code, Vec<(Code, u32, Option<i64>)>) {
    (
        Code::try_from(response.overall_code).unwrap(),
        response
            .statuses
            .iter()
            .map(|status| {
                (
                    Code::try_from(status.code).unwrap(),
                    status.limit_remaining,
                    status.duration_until_reset.map(|duration| duration.seconds),
                )
            })
            .collect(),
    )
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("basic.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn rls_basic_limits_over_limit_and_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), CONFIG);
    let clock = Arc::new(ManualClock::new(T));
    let node = start(&path, &clock, &[]).await;
    let mut client = client(&node).await;

    // No rule: OK with no limit (envoy ratelimit's "basic" test without a matching key).
    let none = call(&mut client, &request("basic", &[&[("nothing", "x")]])).await;
    assert_eq!(summary(&none), (Code::Ok, vec![(Code::Ok, 0, None)]));
    assert!(none.statuses[0].current_limit.is_none());
    let unknown = call(&mut client, &request("other", &[&[("key1", "x")]])).await;
    assert_eq!(summary(&unknown), (Code::Ok, vec![(Code::Ok, 0, None)]));

    // key1=value1: 2 per minute, then over; refused hits count, duration_until_reset goes down.
    let specific = request("basic", &[&[("key1", "value1")]]);
    for remaining in [1, 0] {
        let answer = call(&mut client, &specific).await;
        assert_eq!(
            summary(&answer),
            (Code::Ok, vec![(Code::Ok, remaining, Some(40))])
        );
        let limit = answer.statuses[0].current_limit.as_ref().unwrap();
        assert_eq!((limit.requests_per_unit, limit.unit), (2, 2));
    }
    for seconds in [40, 30, 1] {
        clock.set(T + (40 - seconds) * 1000);
        assert_eq!(
            summary(&call(&mut client, &specific).await),
            (Code::OverLimit, vec![(Code::OverLimit, 0, Some(seconds))])
        );
    }
    // The next minute starts fresh.
    clock.set(T + 40_000);
    assert_eq!(
        summary(&call(&mut client, &specific).await),
        (Code::Ok, vec![(Code::Ok, 1, Some(60))])
    );
    // Unlimited.
    let free = call(&mut client, &request("basic", &[&[("free", "x")]])).await;
    assert_eq!(summary(&free), (Code::Ok, vec![(Code::Ok, u32::MAX, None)]));

    // Bad requests are INVALID_ARGUMENT.
    let empty = client
        .should_rate_limit(request("", &[&[("key1", "x")]]))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
    let no_descriptors = client
        .should_rate_limit(request("basic", &[]))
        .await
        .unwrap_err();
    assert_eq!(no_descriptors.code(), tonic::Code::InvalidArgument);

    // The envoy-shaped counters.
    let scrape = reqwest::get(http_url(&node, "/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_sum(
            &scrape,
            r#"ringlimit_rls_over_limit_total{domain="basic",key="basic.key1_value1"}"#
        ),
        3.0
    );
    assert_eq!(
        metric_sum(
            &scrape,
            r#"ringlimit_rls_total_hits_total{domain="basic",key="basic.key1_value1"}"#
        ),
        6.0
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn rls_several_descriptors_are_all_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), CONFIG);
    let clock = Arc::new(ManualClock::new(T));
    let node = start(&path, &clock, &[]).await;
    let mut client = client(&node).await;
    // key2 (3/hour) and key1 (5/minute) in one call: key2 goes over first, key1 is still counted.
    let both = request("basic", &[&[("key2", "a")], &[("key1", "b")]]);
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(summary(&call(&mut client, &both).await));
    }
    let hour_left = 3600 - (1_700_000_000 % 3600);
    assert_eq!(
        answers[2],
        (
            Code::Ok,
            vec![(Code::Ok, 0, Some(hour_left)), (Code::Ok, 2, Some(40))]
        )
    );
    assert_eq!(
        answers[4],
        (
            Code::OverLimit,
            vec![
                (Code::OverLimit, 0, Some(hour_left)),
                (Code::Ok, 0, Some(40))
            ]
        )
    );
    let key1 = call(&mut client, &request("basic", &[&[("key1", "b")]])).await;
    assert_eq!(
        summary(&key1),
        (Code::OverLimit, vec![(Code::OverLimit, 0, Some(40))])
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn rls_json_endpoint_and_rlconfig() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), CONFIG);
    let clock = Arc::new(ManualClock::new(T));
    let node = start(&path, &clock, &["--rls-response-headers=envoy"]).await;
    let http = reqwest::Client::new();
    let body = serde_json::json!({"domain": "basic", "descriptors": [{"entries": [{"key": "key1", "value": "value1"}]}]});
    let mut statuses = Vec::new();
    let mut last = serde_json::Value::Null;
    for _ in 0..3 {
        let response = http
            .post(http_url(&node, "/json"))
            .json(&body)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        last = response.json().await.unwrap();
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(last["overallCode"], "OVER_LIMIT");
    assert_eq!(last["statuses"][0]["currentLimit"]["unit"], "MINUTE");
    assert_eq!(last["statuses"][0]["durationUntilReset"], "40s");
    assert_eq!(last["responseHeadersToAdd"][0]["key"], "RateLimit-Limit");
    let bad = http
        .post(http_url(&node, "/json"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    // Too many descriptors or entries, counted before they are built (300,000 empty ones), and
    // 129 descriptors, with the same answers as a decoded request gets.
    let descriptors = |count: usize, descriptor: &str| {
        format!(
            r#"{{"domain":"basic","descriptors":[{}]}}"#,
            vec![descriptor; count].join(",")
        )
    };
    let crowded = format!(
        r#"{{"entries":[{{"key":"key1"}}]}},{{"entries":[{}]}}"#,
        vec!["{}"; 300_000].join(",")
    );
    for (body, expected) in [
        (
            descriptors(1, &crowded),
            "descriptor 1 has 300000 entries; at most 32 are accepted",
        ),
        (
            descriptors(300_000, "{}"),
            "300000 descriptors; at most 128 are accepted",
        ),
        (
            descriptors(129, r#"{"entries":[{"key":"key1"}]}"#),
            "129 descriptors; at most 128 are accepted",
        ),
    ] {
        let refused = http
            .post(http_url(&node, "/json"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 400);
        assert_eq!(refused.text().await.unwrap(), expected);
    }
    let dump = reqwest::get(http_url(&node, "/rlconfig"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        dump.contains("basic.key1_value1: unit=MINUTE requests_per_unit=2"),
        "{dump}"
    );
    node.shutdown().await.unwrap();
}

/// Polls `condition` for at most 5 s (`common::wait_until`).
async fn eventually<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    common::wait_until(what, Duration::from_secs(5), condition).await;
}

#[tokio::test]
async fn rls_hot_reload_adds_and_removes_a_rule_and_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), CONFIG);
    let clock = Arc::new(ManualClock::new(T));
    let node = start(dir.path(), &clock, &[]).await;
    let mut client = client(&node).await;
    let key3 = request("basic", &[&[("key3", "x")]]);
    assert!(
        call(&mut client, &key3).await.statuses[0]
            .current_limit
            .is_none()
    );

    // Add a rule.
    let added = format!(
        "{CONFIG}  - key: key3\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n"
    );
    std::fs::write(&path, &added).unwrap();
    eventually("the added rule", || {
        let mut client = client.clone();
        let key3 = key3.clone();
        async move {
            call(&mut client, &key3).await.statuses[0]
                .current_limit
                .is_some()
        }
    })
    .await;

    // A broken file: rejected, counted, the last good configuration stays, the node stays healthy.
    std::fs::write(
        &path,
        "domain: basic\ndescriptors:\n  - key: key3\n    rate_limit: {unit: fortnight}\n",
    )
    .unwrap();
    eventually("the rejected reload", || async {
        let scrape = reqwest::get(http_url(&node, "/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_sum(&scrape, "ringlimit_rls_config_load_error_total") >= 1.0
    })
    .await;
    assert!(
        call(&mut client, &key3).await.statuses[0]
            .current_limit
            .is_some()
    );
    let dump = reqwest::get(http_url(&node, "/rlconfig"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        dump.contains("basic.yaml:4: field `descriptors[0].rate_limit.unit`"),
        "{dump}"
    );
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        crate::common::channel(node.grpc_address()).await,
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "envoy.service.ratelimit.v3.RateLimitService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Remove the rule again.
    std::fs::write(&path, CONFIG).unwrap();
    eventually("the removed rule", || {
        let mut client = client.clone();
        let key3 = key3.clone();
        async move {
            call(&mut client, &key3).await.statuses[0]
                .current_limit
                .is_none()
        }
    })
    .await;
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn rls_broken_config_at_start_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "domain: basic\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      unit: second\n",
    );
    let rls = format!("--rls-config={}", path.display());
    let config = server_config_from_args([
        "--grpc-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        rls.as_str(),
    ])
    .unwrap();
    let error = match server::start(&config).await {
        Ok(_) => panic!("the start should fail"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("basic.yaml:6: field `descriptors[0].rate_limit.unit`"),
        "{error}"
    );
}

/// Three nodes on one manual clock, one cluster.
async fn cluster(path: &Path, clock: &Arc<ManualClock>, extra: &[&str]) -> Vec<RunningServer> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start(path, clock, extra).await);
    }
    let peers: Vec<_> = nodes
        .iter()
        .map(|node| node.node().peers().me().clone())
        .collect();
    for node in &nodes {
        node.node().peers().replace(peers.clone());
    }
    nodes
}

#[tokio::test]
async fn rls_cluster_counts_each_descriptor_once_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), CONFIG);
    let clock = Arc::new(ManualClock::new(T));
    // With a peer secret: the nodes forward with it, and Envoy (a client without it) still calls
    // RateLimitService, a public service like pb.gubernator.V1.
    let nodes = cluster(
        &path,
        &clock,
        &["--peer-secret=rls-test-secret-0123456789abcdef"],
    )
    .await;
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(client(node).await);
    }
    // Many descriptors, so counters land on every node; each gets its limit of 5 exactly, whichever
    // node is asked.
    let users: Vec<String> = (0..12).map(|user| format!("user{user}")).collect();
    for round in 0..7 {
        for (index, user) in users.iter().enumerate() {
            let client = &mut clients[(round + index) % 3];
            let answer = call(client, &request("basic", &[&[("key1", user)]])).await;
            let expected = if round < 5 {
                (Code::Ok, vec![(Code::Ok, 4 - round as u32, Some(40))])
            } else {
                (Code::OverLimit, vec![(Code::OverLimit, 0, Some(40))])
            };
            assert_eq!(summary(&answer), expected, "round {round}, {user}");
        }
    }
    // Every counter lives on exactly one node: the sum of RLS buckets across nodes is the number
    // of descriptors, and more than one node holds some.
    let held: Vec<usize> = nodes
        .iter()
        .map(|node| {
            node.node().store().sync();
            node.node().store().len() as usize
        })
        .collect();
    assert_eq!(held.iter().sum::<usize>(), users.len(), "{held:?}");
    assert!(
        held.iter().filter(|count| **count > 0).count() > 1,
        "{held:?}"
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

/// RLS counters are ordinary buckets: what keeps `GetRateLimits` counts over a restart (the
/// snapshot) and a rolling restart (handoff, the same buckets moved between nodes) keeps them.
#[tokio::test]
async fn rls_counters_survive_a_restart_through_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), CONFIG);
    let snapshot = format!(
        "--snapshot-path={}",
        dir.path().join("snapshot.bin").display()
    );
    let clock = Arc::new(ManualClock::new(T));
    let node = start(&path, &clock, &[snapshot.as_str()]).await;
    let mut client = client(&node).await;
    let key1 = request("basic", &[&[("key1", "kept")]]);
    for _ in 0..3 {
        call(&mut client, &key1).await;
    }
    node.shutdown().await.unwrap();

    let node = start(&path, &clock, &[snapshot.as_str()]).await;
    let mut client = self::client(&node).await;
    assert_eq!(
        summary(&call(&mut client, &key1).await),
        (Code::Ok, vec![(Code::Ok, 1, Some(40))])
    );
    node.shutdown().await.unwrap();
}

/// Hostile requests are bounded with clear errors: 10,000 descriptors, a 1 MB value, 1,000 entries.
#[tokio::test]
async fn rls_hostile_requests_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), CONFIG);
    let clock = Arc::new(ManualClock::new(T));
    let node = start(&path, &clock, &[]).await;
    let mut client = client(&node).await;

    let many = RateLimitRequest {
        domain: "basic".into(),
        descriptors: vec![descriptor(&[("key1", "x")]); 10_000],
        hits_addend: 0,
    };
    let error = client.should_rate_limit(many).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().contains("10000 descriptors"),
        "{}",
        error.message()
    );

    // 300,000 empty descriptors (600 kB): counted, not decoded, and refused the same way; with
    // no domain, refused for that first, as a decoded request is.
    let empty = RateLimitRequest {
        domain: "basic".into(),
        descriptors: vec![RateLimitDescriptor::default(); 300_000],
        hits_addend: 0,
    };
    let error = client.should_rate_limit(empty.clone()).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert_eq!(
        error.message(),
        "300000 descriptors; at most 128 are accepted"
    );
    let nameless = RateLimitRequest {
        domain: String::new(),
        ..empty
    };
    let error = client.should_rate_limit(nameless).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert_eq!(error.message(), "rate limit domain must not be empty");

    // A 1 MB value: the message is over GUBER_MAX_REQUEST_SIZE (1 MiB), refused before decoding.
    let huge = "v".repeat(1024 * 1024);
    let error = client
        .should_rate_limit(request("basic", &[&[("key1", huge.as_str())]]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    // A 100 kB value fits the message but not a counter key.
    let long = "v".repeat(100 * 1024);
    let error = client
        .should_rate_limit(request("basic", &[&[("key1", long.as_str())]]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(
        error.message().contains("GUBER_MAX_KEY_LENGTH"),
        "{}",
        error.message()
    );

    let entries: Vec<(&str, &str)> = vec![("key1", "x"); 1000];
    let error = client
        .should_rate_limit(request("basic", &[&entries]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("1000 entries"),
        "{}",
        error.message()
    );

    // The node still answers.
    let fine = call(&mut client, &request("basic", &[&[("key1", "x")]])).await;
    assert_eq!(summary(&fine).0, Code::Ok);
    node.shutdown().await.unwrap();
}
