//! `ringlimit bench` against a real node: closed loop by count, several items per call, the open
//! loop's rate, the HTTP gateway, OVER_LIMIT counting, and the exit status for bad arguments (2)
//! and an unreachable target (1).

use crate::common;

use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

/// How long one run of the binary may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// `ringlimit bench --target TARGET --warmup 0s ARGS...`, quiet and short.
fn bench(target: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command
        .args(["bench", "--target", target, "--warmup", "0s"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(mut command: Command) -> Output {
    tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .expect("the bench finishes in time")
        .expect("the binary runs")
}

/// Runs a `--json` bench that must succeed and returns its report.
async fn run_json(command: Command) -> Value {
    let output = run(command).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "not one JSON object ({error}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn number(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a number in {report}"))
}

fn latency(report: &Value, field: &str) -> u64 {
    report["latency_us"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("latency_us.{field} is a number in {report}"))
}

fn assert_no_errors(report: &Value) {
    assert_eq!(
        report["errors"].as_object().map(|errors| errors.len()),
        Some(0),
        "{report}"
    );
}

/// The latency fields are positive and ordered.
fn assert_latencies(report: &Value) {
    let [p50, p90, p99, p999, max] =
        ["p50", "p90", "p99", "p999", "max"].map(|f| latency(report, f));
    assert!(p50 > 0, "{report}");
    assert!(
        p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_loop_makes_exactly_the_calls_asked() {
    let server = common::start_node(&[]).await;
    let target = server.grpc_address().to_string();
    let report = run_json(bench(&target, &["--calls", "500", "--json"])).await;
    assert_eq!(number(&report, "calls"), 500, "{report}");
    assert_eq!(number(&report, "decisions"), 500, "{report}");
    assert_eq!(number(&report, "under"), 500, "{report}");
    assert_eq!(number(&report, "over"), 0, "{report}");
    assert_latencies(&report);
    assert_no_errors(&report);
    assert!(
        report["seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
    assert!(
        report["calls_per_sec"].as_f64().is_some_and(|r| r > 0.0),
        "{report}"
    );
    assert!(
        report["decisions_per_sec"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "{report}"
    );
    assert_eq!(report["config"]["loop"], "closed", "{report}");
    assert_eq!(report["config"]["concurrency"], 64, "{report}");

    // Several items per call: every item is a decision.
    let report = run_json(bench(
        &target,
        &[
            "--calls",
            "100",
            "--items",
            "10",
            "--distribution",
            "hot",
            "--json",
        ],
    ))
    .await;
    assert_eq!(number(&report, "calls"), 100, "{report}");
    assert_eq!(number(&report, "decisions"), 1000, "{report}");
    assert_eq!(number(&report, "under"), 1000, "{report}");
    assert_latencies(&report);
    assert_no_errors(&report);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_loop_holds_the_rate() {
    let server = common::start_node(&[]).await;
    let target = server.grpc_address().to_string();
    let report = run_json(bench(
        &target,
        &[
            "--rate",
            "200",
            "--time",
            "1s",
            "--concurrency",
            "16",
            "--json",
        ],
    ))
    .await;
    let calls = number(&report, "calls");
    assert!((160..=240).contains(&calls), "{report}");
    assert_latencies(&report);
    assert_no_errors(&report);
    assert_eq!(report["config"]["loop"], "open", "{report}");
    server.shutdown().await.expect("clean shutdown");
}

/// The report's `series`, checked against its totals: one point per second begun of `--time`
/// (`t` = 1, 2, ...), whose calls, decisions and errors add up to the totals, with each point's
/// p50 <= p99. Returns the points' calls.
fn series_calls(report: &Value, seconds: u64) -> Vec<u64> {
    let series = report["series"]
        .as_array()
        .unwrap_or_else(|| panic!("series is an array in {report}"));
    assert_eq!(series.len() as u64, seconds, "{report}");
    for (index, point) in series.iter().enumerate() {
        assert_eq!(point["t"], index as u64 + 1, "{report}");
        match (point["p50_us"].as_u64(), point["p99_us"].as_u64()) {
            (Some(p50), Some(p99)) => assert!(0 < p50 && p50 <= p99, "{point}"),
            _ => assert_eq!(point["calls"], 0, "{point}"),
        }
    }
    let sum = |field: &str| -> u64 {
        series
            .iter()
            .map(|point| point[field].as_u64().expect("a count"))
            .sum()
    };
    assert_eq!(sum("calls"), number(report, "calls"), "{report}");
    assert_eq!(sum("decisions"), number(report, "decisions"), "{report}");
    let errors: u64 = report["errors"]
        .as_object()
        .expect("errors is an object")
        .values()
        .map(|count| count.as_u64().expect("a count"))
        .sum();
    assert_eq!(sum("errors"), errors, "{report}");
    series
        .iter()
        .map(|point| point["calls"].as_u64().expect("a count"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_series_has_one_point_per_measured_second_and_no_warm_up() {
    let server = common::start_node(&[]).await;
    let target = server.grpc_address().to_string();
    // Open loop at 200 calls/s for a 1 s warm-up and 2.5 s measured: 3 points of about 200, 200
    // and 100 calls. The warm-up's 200 calls are in no point (the first would hold about 400).
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command
        .args([
            "bench", "--target", &target, "--warmup", "1s", "--time", "2500ms",
        ])
        .args(["--rate", "200", "--concurrency", "16", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let report = run_json(command).await;
    assert_no_errors(&report);
    let calls = series_calls(&report, 3);
    assert!((440..=560).contains(&number(&report, "calls")), "{report}");
    assert!((140..=260).contains(&calls[0]), "{report}");
    assert!((140..=260).contains(&calls[1]), "{report}");
    assert!((40..=160).contains(&calls[2]), "{report}");

    // Closed loop by count: a point per second begun, and the same sums.
    let report = run_json(bench(
        &target,
        &["--calls", "300", "--items", "2", "--json"],
    ))
    .await;
    let seconds = report["seconds"].as_f64().expect("seconds");
    let points = report["series"].as_array().map_or(0, Vec::len) as u64;
    assert!(points >= 1 && points as f64 >= seconds, "{report}");
    series_calls(&report, points);
    assert_eq!(number(&report, "decisions"), 600, "{report}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_gateway_can_be_the_target() {
    let server = common::start_node(&[]).await;
    let target = format!("http://{}", server.http_address());
    let report = run_json(bench(
        &target,
        &["--http", "--calls", "200", "--items", "2", "--json"],
    ))
    .await;
    assert_eq!(number(&report, "calls"), 200, "{report}");
    assert_eq!(number(&report, "decisions"), 400, "{report}");
    assert_eq!(report["config"]["protocol"], "http", "{report}");
    assert_latencies(&report);
    assert_no_errors(&report);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_limit_is_soon_over() {
    let server = common::start_node(&[]).await;
    let target = server.grpc_address().to_string();
    let report = run_json(bench(
        &target,
        &[
            "--calls", "60", "--limit", "10", "--keys", "1", "--name", "small", "--json",
        ],
    ))
    .await;
    assert_eq!(number(&report, "under"), 10, "{report}");
    assert_eq!(number(&report, "over"), 50, "{report}");
    assert_no_errors(&report);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn envoy_should_rate_limit_can_be_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.yaml");
    std::fs::write(
        &config,
        "domain: bench\ndescriptors:\n  - key: key\n    rate_limit: {unit: hour, requests_per_unit: 10}\n",
    )
    .unwrap();
    let rls = format!("--rls-config={}", config.display());
    let server = common::start_node(&[rls.as_str()]).await;
    let target = server.grpc_address().to_string();
    let report = run_json(bench(
        &target,
        &[
            "--calls",
            "60",
            "--keys",
            "1",
            "--rls-domain",
            "bench",
            "--json",
        ],
    ))
    .await;
    // 10 per hour: unless the hour turns during the run, 10 under and 50 over.
    assert_eq!(
        number(&report, "under") + number(&report, "over"),
        60,
        "{report}"
    );
    assert!(number(&report, "over") >= 40, "{report}");
    assert_eq!(report["config"]["protocol"], "rls", "{report}");
    assert_no_errors(&report);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_text_report_names_its_numbers() {
    let server = common::start_node(&[]).await;
    let target = server.grpc_address().to_string();
    let output = run(bench(&target, &["--calls", "50", "--concurrency", "4"])).await;
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    for word in [
        "50 calls",
        "calls/s",
        "decisions/s",
        "p99.9",
        "UNDER 50",
        "errors       none",
    ] {
        assert!(text.contains(word), "{word:?} in {text}");
    }
    // Standard error is not a terminal: no progress line.
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    server.shutdown().await.expect("clean shutdown");
}

/// `--duration` used to draw clap's tip towards `--duration-ms`, the limit's window, when the
/// user meant how long to run.
#[tokio::test(flavor = "multi_thread")]
async fn duration_is_refused_with_both_meanings_named() {
    let output = run(bench("127.0.0.1:1051", &["--duration", "5s"])).await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--time") && stderr.contains("--limit-duration"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_exit_2() {
    for args in [
        &["--calls", "0"][..],
        &["--rate", "0"],
        &["--time", "soon"],
        &["--time", "1s", "--calls", "5"],
        &["--distribution", "zipf"],
        &["--behavior", "sometimes"],
        &["--concurrency", "0"],
        &["--limit", "-1"],
        &["--limit-duration", "60000"],
        &["--no-such-flag"],
    ] {
        let output = run(bench("127.0.0.1:1051", args)).await;
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let output = run(bench("not-an-address", &["--calls", "1"])).await;
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_target_exits_1() {
    // A port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let target = format!("127.0.0.1:{port}");
    for extra in [&[][..], &["--http"]] {
        let mut command = bench(&target, &["--calls", "5", "--timeout", "1s"]);
        command.args(extra);
        let output = run(command).await;
        assert_eq!(output.status.code(), Some(1), "{extra:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("cannot connect"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_items_are_counted_as_item_errors() {
    let server = common::start_node(&["--max-key-length=16"]).await;
    let target = server.grpc_address().to_string();
    let long_name = "n".repeat(64);
    let report = run_json(bench(
        &target,
        &[
            "--calls", "20", "--items", "3", "--name", &long_name, "--json",
        ],
    ))
    .await;
    assert_eq!(number(&report, "calls"), 20, "{report}");
    assert_eq!(report["errors"]["item"], 60, "{report}");
    let points = report["series"].as_array().map_or(0, Vec::len) as u64;
    series_calls(&report, points);
    assert_eq!(number(&report, "decisions"), 0, "{report}");
    assert_eq!(
        number(&report, "under") + number(&report, "over"),
        0,
        "{report}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_goes_away_gives_errors_not_a_failure() {
    let server = common::start_node(&[]).await;
    let target = server.grpc_address().to_string();
    let child = bench(
        &target,
        &[
            "--time",
            "1500ms",
            "--concurrency",
            "4",
            "--timeout",
            "500ms",
            "--json",
        ],
    )
    .spawn()
    .expect("the binary runs");
    // The node goes away once the bench's calls are being answered.
    common::wait_until(
        "the bench's first answered call",
        Duration::from_secs(10),
        || async {
            common::metric_sum(
                &server.node().render_metrics(),
                "gubernator_getratelimit_counter",
            ) > 0.0
        },
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("the node stops in time")
        .expect("clean shutdown");
    let output = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("the bench finishes in time")
        .expect("the bench runs");
    assert_eq!(output.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    // Only the answered calls count as calls; the others are errors.
    assert!(number(&report, "under") > 0, "{report}");
    assert_eq!(
        number(&report, "calls"),
        number(&report, "under"),
        "{report}"
    );
    let errors = report["errors"].as_object().expect("errors is an object");
    assert!(!errors.is_empty(), "{report}");
    assert!(
        errors.keys().all(
            |kind| ["UNAVAILABLE", "transport", "CANCELLED", "DEADLINE_EXCEEDED"]
                .contains(&kind.as_str())
        ),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_spread_over_the_targets() {
    let first = common::start_node(&[]).await;
    let second = common::start_node(&[]).await;
    let targets = format!("{},{}", first.grpc_address(), second.grpc_address());
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command
        .args(["bench", "--targets", &targets, "--warmup", "0s"])
        .args(["--connections", "2", "--concurrency", "8", "--calls", "200"])
        .args(["--keys", "1", "--limit", "1000", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let report = run_json(command).await;
    assert_eq!(number(&report, "calls"), 200, "{report}");
    assert_no_errors(&report);
    assert_eq!(
        report["config"]["targets"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    // Two separate nodes, each with its own bucket for the single key: both were loaded.
    let remaining_first = remaining(&first, "k0").await;
    let remaining_second = remaining(&second, "k0").await;
    assert!(
        remaining_first < 1000 && remaining_second < 1000,
        "{remaining_first} {remaining_second}"
    );
    assert_eq!(2000 - remaining_first - remaining_second, 200);
    first.shutdown().await.expect("clean shutdown");
    second.shutdown().await.expect("clean shutdown");
}

/// What remains of `bench_<key>` (limit 1000 per minute) on `server`, without taking a hit.
async fn remaining(server: &ringlimit::server::RunningServer, key: &str) -> i64 {
    let mut client = common::grpc_client(server).await;
    let mut item = common::token(key, 0, 1000, 60_000);
    item.name = "bench".into();
    let request = ringlimit::proto::GetRateLimitsReq {
        requests: vec![item],
    };
    client
        .get_rate_limits(request)
        .await
        .expect("the probe succeeds")
        .into_inner()
        .responses[0]
        .remaining
}
