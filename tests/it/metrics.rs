//! `/metrics` after real traffic: Gubernator's metric names (so existing dashboards work) and
//! ringlimit's own, with values that match the traffic sent.

use crate::common;

use common::{Cluster, grpc_client, http_url, metric_sum, token};
use ringlimit::proto;

async fn scrape(cluster: &Cluster, index: usize) -> String {
    let response = reqwest::get(http_url(&cluster.nodes[index], "/metrics"))
        .await
        .expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("body")
}

/// The value of the one sample `name{labels}` (labels exactly as rendered), or 0.
fn sample(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_reflect_the_traffic() {
    let cluster = Cluster::start(2, &[]).await;
    let local = cluster.key_owned_by(0, "local");
    let over = cluster.key_owned_by(0, "over");
    let remote = cluster.key_owned_by(1, "remote");
    let mut client = grpc_client(&cluster.nodes[0]).await;
    // One call of 4 items: local under, local over, forwarded, item error.
    client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![
                token(&local, 1, 10, 60_000),
                token(&over, 5, 1, 60_000),
                token(&remote, 1, 10, 60_000),
                token("", 1, 10, 60_000),
            ],
        })
        .await
        .expect("call succeeds");
    // And one HTTP call.
    reqwest::Client::new()
        .post(http_url(&cluster.nodes[0], "/v1/GetRateLimits"))
        .body(format!(
            r#"{{"requests":[{{"name":"test","unique_key":"{local}","hits":1,"limit":10,"duration":60000}}]}}"#
        ))
        .send()
        .await
        .expect("HTTP call");

    let node0 = scrape(&cluster, 0).await;
    let node1 = scrape(&cluster, 1).await;
    let peer1 = cluster.address(1);

    // Gubernator's names.
    assert_eq!(
        sample(
            &node0,
            r#"gubernator_getratelimit_counter{calltype="local"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &node0,
            r#"gubernator_getratelimit_counter{calltype="forward"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &node1,
            r#"gubernator_getratelimit_counter{calltype="local"}"#
        ),
        1.0
    );
    assert_eq!(sample(&node0, "gubernator_over_limit_counter"), 1.0);
    assert_eq!(
        sample(
            &node0,
            r#"gubernator_check_error_counter{error="empty_unique_key"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&node0, r#"gubernator_cache_access_count{type="miss"}"#),
        2.0
    );
    assert_eq!(
        sample(&node0, r#"gubernator_cache_access_count{type="hit"}"#),
        1.0
    );
    assert_eq!(sample(&node0, "gubernator_cache_size"), 2.0);
    assert_eq!(sample(&node0, "gubernator_concurrent_checks_counter"), 0.0);
    assert_eq!(
        sample(
            &node0,
            r#"gubernator_grpc_request_counts{method="/pb.gubernator.V1/GetRateLimits",status="success"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &node0,
            r#"gubernator_grpc_request_duration_count{method="/pb.gubernator.V1/GetRateLimits"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &node1,
            r#"gubernator_grpc_request_counts{method="/pb.gubernator.PeersV1/GetPeerRateLimits",status="success"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &node0,
            &format!(r#"gubernator_batch_send_duration_count{{peerAddr="{peer1}"}}"#)
        ),
        1.0
    );
    assert_eq!(
        sample(
            &node0,
            &format!(r#"gubernator_batch_queue_length{{peerAddr="{peer1}"}}"#)
        ),
        0.0
    );
    for name in [
        "gubernator_unexpired_evictions_count",
        "gubernator_global_send_errors",
        "gubernator_broadcast_errors",
        "gubernator_updatepeerglobals_counter",
        "gubernator_global_send_queue_length",
        "gubernator_global_queue_length",
        "gubernator_global_send_duration_count",
        "gubernator_broadcast_duration_count",
    ] {
        assert!(
            node0.lines().any(|line| line.starts_with(name)),
            "{name} missing:\n{node0}"
        );
    }

    // ringlimit's own.
    assert_eq!(
        sample(&node0, r#"ringlimit_decisions_total{status="under"}"#),
        3.0
    );
    assert_eq!(
        sample(&node0, r#"ringlimit_decisions_total{status="over"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &node0,
            &format!(r#"ringlimit_forwarded_items_total{{peer="{peer1}"}}"#)
        ),
        1.0
    );
    assert_eq!(
        sample(
            &node0,
            &format!(r#"ringlimit_peer_calls_total{{peer="{peer1}"}}"#)
        ),
        1.0
    );
    assert_eq!(sample(&node0, "ringlimit_items_per_call_count"), 2.0);
    assert_eq!(sample(&node0, "ringlimit_items_per_call_sum"), 5.0);
    assert_eq!(
        sample(
            &node0,
            r#"ringlimit_request_duration_seconds_count{method="/pb.gubernator.V1/GetRateLimits",surface="grpc"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &node0,
            r#"ringlimit_request_duration_seconds_count{method="/pb.gubernator.V1/GetRateLimits",surface="http"}"#
        ),
        1.0
    );
    assert_eq!(sample(&node0, r#"ringlimit_peers{scope="local"}"#), 2.0);
    assert_eq!(sample(&node0, r#"ringlimit_peers{scope="region"}"#), 0.0);
    assert_eq!(
        sample(
            &node0,
            &format!(
                r#"ringlimit_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );
    // Latencies are plausible: every call finished within the histogram's 1 s bucket.
    let within_a_second = metric_sum(
        &node0
            .lines()
            .filter(|line| line.contains(r#"le="1""#))
            .collect::<Vec<_>>()
            .join("\n"),
        "ringlimit_request_duration_seconds_bucket",
    );
    assert_eq!(within_a_second, 2.0);
    cluster.shutdown().await;
}

/// Every metric the Grafana dashboard and the Prometheus alerts use is one this node registers
/// (the deployment files cannot drift from the code).
#[test]
fn dashboards_and_alerts_use_only_exported_metrics() {
    let metrics = ringlimit::metrics::Metrics::new();
    let exported = metrics.names();
    let fresh = metrics.render();
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "deploy/grafana/ringlimit.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect("file exists");
        for word in text.split(|c: char| !(c.is_ascii_lowercase() || c == '_')) {
            if !(word.starts_with("gubernator_") || word.starts_with("ringlimit_")) {
                continue;
            }
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    word.strip_suffix(suffix)
                        .filter(|base| exported.iter().any(|name| name == base))
                })
                .unwrap_or(word);
            assert!(
                exported.iter().any(|name| name == base),
                "{file} uses {word}, which the node does not export"
            );
            // A Summary has `_sum` and `_count` series, but no buckets.
            assert!(
                !(word.ends_with("_bucket") && fresh.contains(&format!("# TYPE {base} summary"))),
                "{file} uses {word}, but {base} is a summary"
            );
        }
    }
}

/// A node that has served nothing yet already exports Gubernator's error counter at 0 for every
/// known error, and `gubernator_grpc_request_duration` as a Summary with Gubernator's quantiles
/// (0.5 and 0.99), so dashboards read 0 instead of "No data".
#[tokio::test]
async fn a_fresh_node_exports_known_series_at_zero_and_the_duration_summary() {
    let node = common::start_node(&[]).await;
    let text = reqwest::get(http_url(&node, "/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    for error in ringlimit::request::ItemError::LABELS
        .iter()
        .chain(std::iter::once(&"forward_failed"))
    {
        let series = format!(r#"gubernator_check_error_counter{{error="{error}"}} 0"#);
        assert!(
            text.lines().any(|line| line == series),
            "{series} missing:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|line| line == r#"gubernator_batch_send_retries{name="other"} 0"#),
        "{text}"
    );
    assert!(
        text.contains("# TYPE gubernator_grpc_request_duration summary"),
        "{text}"
    );
    for quantile in ["0.5", "0.99"] {
        let series = format!(
            r#"gubernator_grpc_request_duration{{method="/pb.gubernator.V1/GetRateLimits",quantile="{quantile}"}}"#
        );
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
    assert!(
        text.contains(
            r#"gubernator_grpc_request_duration_count{method="/pb.gubernator.V1/GetRateLimits"} 0"#
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ringlimit_grpc_request_duration_seconds histogram"),
        "{text}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.lines().any(|line| line.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }

    // After a call, the quantiles are numbers.
    let mut client = grpc_client(&node).await;
    client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token("fresh", 1, 10, 60_000)],
        })
        .await
        .expect("call succeeds");
    let text = reqwest::get(http_url(&node, "/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let p99 = sample(
        &text,
        r#"gubernator_grpc_request_duration{method="/pb.gubernator.V1/GetRateLimits",quantile="0.99"}"#,
    );
    assert!(p99 > 0.0 && p99 < 5.0, "p99 {p99}");
}

/// r8limiter's Grafana queries (its README's panels) use only metrics this node exports, with
/// r8limiter's types, so its dashboards work unchanged.
#[test]
fn r8limiter_dashboards_find_their_metrics() {
    let metrics = ringlimit::metrics::Metrics::new();
    let exported = metrics.names();
    for (query, names) in [
        (
            r#"sum(rate(requests_total{result="allow"}[1m])) by (result)"#,
            ["requests_total"].as_slice(),
        ),
        ("active_keys", ["active_keys"].as_slice()),
        (
            "histogram_quantile(0.95, sum(rate(request_latency_seconds_bucket[5m])) by (le, endpoint))",
            ["request_latency_seconds"].as_slice(),
        ),
    ] {
        for name in names {
            assert!(query.contains(name));
            assert!(exported.iter().any(|exported| exported == name), "{name}");
        }
    }
    let text = metrics.render();
    for line in [
        "# TYPE requests_total counter",
        "# TYPE active_keys gauge",
        "# TYPE request_latency_seconds histogram",
        r#"requests_total{result="allow"} 0"#,
        r#"requests_total{result="deny"} 0"#,
        r#"request_latency_seconds_bucket{endpoint="/allow",le="0.001"} 0"#,
    ] {
        assert!(text.contains(line), "{line} is missing");
    }
}
