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

/// Every metric Gubernator v2 exports: name, Prometheus type, label names (sorted, as rendered)
/// and, for a Summary, its quantiles (Gubernator's `Objectives`).
const GUBERNATOR_METRICS: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "gubernator_getratelimit_counter",
        "counter",
        &["calltype"],
        &[],
    ),
    ("gubernator_over_limit_counter", "counter", &[], &[]),
    ("gubernator_check_error_counter", "counter", &["error"], &[]),
    ("gubernator_cache_access_count", "counter", &["type"], &[]),
    ("gubernator_unexpired_evictions_count", "counter", &[], &[]),
    ("gubernator_global_send_errors", "counter", &[], &[]),
    ("gubernator_broadcast_errors", "counter", &[], &[]),
    ("gubernator_updatepeerglobals_counter", "counter", &[], &[]),
    (
        "gubernator_grpc_request_counts",
        "counter",
        &["method", "status"],
        &[],
    ),
    ("gubernator_batch_send_retries", "counter", &["name"], &[]),
    ("gubernator_cache_size", "gauge", &[], &[]),
    ("gubernator_concurrent_checks_counter", "gauge", &[], &[]),
    ("gubernator_batch_queue_length", "gauge", &["peerAddr"], &[]),
    ("gubernator_global_send_queue_length", "gauge", &[], &[]),
    ("gubernator_global_queue_length", "gauge", &[], &[]),
    (
        "gubernator_grpc_request_duration",
        "summary",
        &["method"],
        &["0.5", "0.99"],
    ),
    (
        "gubernator_batch_send_duration",
        "summary",
        &["peerAddr"],
        &["0.99"],
    ),
    (
        "gubernator_global_send_duration",
        "summary",
        &[],
        &["0.5", "0.99"],
    ),
    (
        "gubernator_broadcast_duration",
        "summary",
        &[],
        &["0.5", "0.99"],
    ),
];

/// The label names and values of a sample line `name{a="x",b="y"} value`.
fn labels_of(line: &str) -> Vec<(String, String)> {
    let Some(start) = line.find('{') else {
        return Vec::new();
    };
    let end = line.rfind('}').expect("a closing brace");
    let mut rest = &line[start + 1..end];
    let mut labels = Vec::new();
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim_start_matches(',').to_string();
        let after = &rest[eq + 2..];
        let close = after.find('"').expect("a closing quote");
        labels.push((name, after[..close].to_string()));
        rest = &after[close + 1..];
    }
    labels
}

/// `scrape` exports `name` as Gubernator does: its `# TYPE`, samples whose label names are
/// exactly Gubernator's (plus `quantile` on a Summary's quantile samples), and for a Summary every
/// one of Gubernator's quantiles and no bucket.
fn assert_like_gubernator(
    scrape: &str,
    name: &str,
    kind: &str,
    labels: &[&str],
    quantiles: &[&str],
) {
    assert!(
        scrape
            .lines()
            .any(|line| line == format!("# TYPE {name} {kind}")),
        "{name} is not a {kind}:\n{scrape}"
    );
    let samples: Vec<&str> = scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            let metric = line.split(['{', ' ']).next().unwrap_or_default();
            metric == name
                || (kind == "summary"
                    && [
                        format!("{name}_sum"),
                        format!("{name}_count"),
                        format!("{name}_bucket"),
                    ]
                    .iter()
                    .any(|series| series == metric))
        })
        .collect();
    assert!(!samples.is_empty(), "{name} has no sample:\n{scrape}");
    let mut seen_quantiles = std::collections::BTreeSet::new();
    for line in &samples {
        assert!(!line.starts_with(&format!("{name}_bucket")), "{line}");
        let mut names: Vec<String> = Vec::new();
        for (label, value) in labels_of(line) {
            if label == "quantile" {
                seen_quantiles.insert(value);
            } else {
                names.push(label);
            }
        }
        assert_eq!(names, labels, "{line}");
    }
    let expected: std::collections::BTreeSet<String> =
        quantiles.iter().map(|q| q.to_string()).collect();
    assert_eq!(seen_quantiles, expected, "{name}'s quantiles:\n{scrape}");
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
    // A node with peers exports every one of Gubernator's metrics, with its type and labels.
    for (name, kind, labels, quantiles) in GUBERNATOR_METRICS {
        assert_like_gubernator(&node0, name, kind, labels, quantiles);
    }
    let p99 = sample(
        &node0,
        &format!(r#"gubernator_batch_send_duration{{peerAddr="{peer1}",quantile="0.99"}}"#),
    );
    assert!(p99 > 0.0 && p99 < 5.0, "batch send p99 {p99}");
    assert_eq!(
        sample(
            &node0,
            &format!(r#"ringlimit_batch_send_duration_seconds_count{{peerAddr="{peer1}"}}"#)
        ),
        1.0
    );
    // The one forwarded item went alone (the peer was idle): one call of one item.
    for (series, value) in [("count", 1.0), ("sum", 1.0)] {
        assert_eq!(
            sample(
                &node0,
                &format!(r#"ringlimit_peer_call_items_{series}{{peerAddr="{peer1}"}}"#)
            ),
            value
        );
    }
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
    let proxy = ringlimit::proxy::metrics::ProxyMetrics::new();
    let mut exported = metrics.names();
    exported.extend(
        proxy
            .collectors()
            .iter()
            .flat_map(|collector| collector.desc())
            .map(|desc| desc.fq_name.clone()),
    );
    let fresh = metrics.render() + &proxy.render();
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
    // Every counter, and every known label value of the labelled ones, reads 0 before the first
    // event; the summaries have their quantile series (NaN) and a count of 0.
    let mut zeros: Vec<String> = [
        "gubernator_over_limit_counter",
        "gubernator_unexpired_evictions_count",
        "gubernator_global_send_errors",
        "gubernator_broadcast_errors",
        "gubernator_updatepeerglobals_counter",
        "gubernator_concurrent_checks_counter",
        "gubernator_global_send_queue_length",
        "gubernator_global_queue_length",
        "gubernator_global_send_duration_count",
        "gubernator_broadcast_duration_count",
    ]
    .iter()
    .map(|name| format!("{name} 0"))
    .collect();
    for calltype in ["local", "forward", "global"] {
        zeros.push(format!(
            r#"gubernator_getratelimit_counter{{calltype="{calltype}"}} 0"#
        ));
    }
    for kind in ["hit", "miss"] {
        zeros.push(format!(
            r#"gubernator_cache_access_count{{type="{kind}"}} 0"#
        ));
    }
    for method in [
        "/pb.gubernator.V1/GetRateLimits",
        "/pb.gubernator.V1/HealthCheck",
        "/pb.gubernator.V1/LiveCheck",
        "/pb.gubernator.PeersV1/GetPeerRateLimits",
        "/pb.gubernator.PeersV1/UpdatePeerGlobals",
    ] {
        for status in ["success", "failed"] {
            zeros.push(format!(
                r#"gubernator_grpc_request_counts{{method="{method}",status="{status}"}} 0"#
            ));
        }
        zeros.push(format!(
            r#"gubernator_grpc_request_duration_count{{method="{method}"}} 0"#
        ));
    }
    for line in &zeros {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    for (name, kind, labels, quantiles) in GUBERNATOR_METRICS {
        // Without peers there is no peerAddr to label a series with.
        if !labels.contains(&"peerAddr") {
            assert_like_gubernator(&text, name, kind, labels, quantiles);
        }
    }
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
