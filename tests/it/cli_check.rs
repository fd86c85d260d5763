//! `ringlimit check` against a real node: items from flags, `--json` output, the request as JSON
//! on standard input, `--count`, and the exit status for bad arguments (2) and an unreachable node
//! (1).

use crate::common;

use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::Duration;

use ringlimit::http::json;
use ringlimit::proto;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// How long one run of the binary may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(20);

fn check(address: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command
        .args(["check", "--address", address])
        .env_remove("GUBER_GRPC_ADDRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command` with `input` on standard input (if any), bounded by [`RUN_LIMIT`].
async fn run(mut command: Command, input: Option<&str>) -> Output {
    if input.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("the binary runs");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("a stdin pipe");
        // A run that rejects its arguments may exit before reading: a broken pipe is fine.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
    }
    tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("check finishes in time")
        .expect("the binary finishes")
}

/// The stdout lines of a successful run.
fn lines(output: &Output) -> Vec<String> {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `remaining` value of an answer line such as `n_k: UNDER_LIMIT remaining 9/10 reset in 60.0s`.
fn remaining(line: &str) -> (String, i64, i64) {
    let (label, rest) = line.split_once(": ").expect("label: answer");
    let words: Vec<&str> = rest.split(' ').collect();
    assert_eq!(words.get(1), Some(&"remaining"), "{line}");
    let (remaining, limit) = words[2].split_once('/').expect("remaining/limit");
    (
        format!("{label} {}", words[0]),
        remaining.parse().expect("a number"),
        limit.parse().expect("a number"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_send_one_item_per_key_and_print_one_line_each() {
    let server = common::start_node(&[]).await;
    let address = server.grpc_address().to_string();
    let mut command = check(&address);
    command.args([
        "--name",
        "cli",
        "--key",
        "alpha",
        "--key",
        "beta",
        "--hits",
        "3",
        "--limit",
        "10",
        "--duration",
        "1m",
    ]);
    let output = lines(&run(command, None).await);
    assert_eq!(output.len(), 2, "{output:?}");
    assert_eq!(
        remaining(&output[0]),
        ("cli_alpha UNDER_LIMIT".into(), 7, 10)
    );
    assert_eq!(
        remaining(&output[1]),
        ("cli_beta UNDER_LIMIT".into(), 7, 10)
    );
    for line in &output {
        assert!(line.contains(" reset in "), "{line}");
        assert!(
            !line.contains("[owner"),
            "a single node owns every key: {line}"
        );
    }

    // Over the limit is still a successful call.
    let mut command = check(&address);
    command.args([
        "--name",
        "cli",
        "--key",
        "alpha",
        "--hits",
        "8",
        "--limit",
        "10",
        "--duration",
        "60000",
    ]);
    let output = lines(&run(command, None).await);
    assert_eq!(
        remaining(&output[0]),
        ("cli_alpha OVER_LIMIT".into(), 7, 10)
    );

    // The node saw the same: alpha has 7 left.
    let mut client = common::grpc_client(&server).await;
    let answer = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![proto::RateLimitReq {
                name: "cli".into(),
                ..common::token("alpha", 0, 10, 60_000)
            }],
        })
        .await
        .expect("the query succeeds")
        .into_inner();
    assert_eq!(answer.responses[0].remaining, 7);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_is_the_gateways_and_matches_a_second_query() {
    let server = common::start_node(&[]).await;
    let address = server.grpc_address().to_string();
    let mut command = check(&address);
    command.args([
        "--name",
        "test",
        "--key",
        "json_key",
        "--hits",
        "2",
        "--limit",
        "5",
        "--duration",
        "30s",
        "--algorithm",
        "leaky",
        "--json",
    ]);
    let output = lines(&run(command, None).await);
    assert_eq!(output.len(), 1, "{output:?}");
    let first = json::decode_get_rate_limits_resp(output[0].as_bytes()).expect("gateway JSON");
    assert_eq!(first.responses.len(), 1);
    assert_eq!(first.responses[0].remaining, 3);
    assert_eq!(first.responses[0].limit, 5);
    assert_eq!(
        output[0].as_bytes(),
        json::encode_get_rate_limits_resp(&first).as_slice(),
        "printed exactly as the gateway encodes it"
    );
    let value: serde_json::Value = serde_json::from_str(&output[0]).expect("JSON");
    assert_eq!(value["responses"][0]["status"], "UNDER_LIMIT");
    assert_eq!(value["responses"][0]["remaining"], "3");

    // A query at once shows the same bucket (the leaky bucket leaks 1 per 6 s).
    let mut command = check(&address);
    command.args([
        "--name",
        "test",
        "--key",
        "json_key",
        "--hits",
        "0",
        "--limit",
        "5",
        "--duration",
        "30000",
        "--algorithm",
        "LEAKY_BUCKET",
        "--json",
    ]);
    let output = lines(&run(command, None).await);
    let second = json::decode_get_rate_limits_resp(output[0].as_bytes()).expect("gateway JSON");
    assert_eq!(second.responses[0].status, first.responses[0].status);
    assert_eq!(second.responses[0].remaining, first.responses[0].remaining);
    assert_eq!(second.responses[0].limit, first.responses[0].limit);
    assert_eq!(second.responses[0].metadata, first.responses[0].metadata);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_json_is_read_from_standard_input() {
    let server = common::start_node(&[]).await;
    let address = server.grpc_address().to_string();
    let request = r#"{"requests":[
        {"name":"stdin","uniqueKey":"one","hits":"4","limit":10,"duration":"60000"},
        {"name":"stdin","unique_key":"","hits":1,"limit":10,"duration":60000},
        {"name":"stdin","unique_key":"two","hits":1,"limit":3,"duration":60000,"algorithm":"LEAKY_BUCKET","behavior":32}
    ]}"#;
    let mut command = check(&address);
    command.args(["--request-json", "-"]);
    let output = lines(&run(command, Some(request)).await);
    assert_eq!(output.len(), 3, "{output:?}");
    assert_eq!(
        remaining(&output[0]),
        ("stdin_one UNDER_LIMIT".into(), 6, 10)
    );
    assert_eq!(
        output[1],
        "stdin_: error: field 'unique_key' cannot be empty"
    );
    assert_eq!(
        remaining(&output[2]),
        ("stdin_two UNDER_LIMIT".into(), 2, 3)
    );

    // The same from a file, with --json.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("request.json");
    std::fs::write(&path, request).expect("the request file is written");
    let mut command = check(&address);
    command.args(["--json", "--request-json"]).arg(&path);
    let output = lines(&run(command, None).await);
    let response = json::decode_get_rate_limits_resp(output[0].as_bytes()).expect("gateway JSON");
    assert_eq!(response.responses.len(), 3);
    assert_eq!(response.responses[0].remaining, 2);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn count_repeats_the_call() {
    let server = common::start_node(&[]).await;
    let address = server.grpc_address().to_string();
    let mut command = check(&address);
    command.args([
        "--name",
        "count",
        "--key",
        "k",
        "--limit",
        "10",
        "--duration",
        "1m",
        "--count",
        "3",
    ]);
    let output = lines(&run(command, None).await);
    let remainings: Vec<i64> = output.iter().map(|line| remaining(line).1).collect();
    assert_eq!(remainings, vec![9, 8, 7]);

    let mut command = check(&address);
    command.args([
        "--name",
        "count",
        "--key",
        "k",
        "--limit",
        "10",
        "--duration",
        "1m",
        "--count",
        "2",
        "--json",
    ]);
    let output = lines(&run(command, None).await);
    assert_eq!(output.len(), 2, "one JSON document per call: {output:?}");
    let remainings: Vec<i64> = output
        .iter()
        .map(|line| {
            json::decode_get_rate_limits_resp(line.as_bytes())
                .expect("gateway JSON")
                .responses[0]
                .remaining
        })
        .collect();
    assert_eq!(remainings, vec![6, 5]);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn behaviours_are_sent() {
    let server = common::start_node(&[]).await;
    let address = server.grpc_address().to_string();
    let base = [
        "--name",
        "beh",
        "--key",
        "k",
        "--limit",
        "10",
        "--duration",
        "1m",
    ];
    let mut command = check(&address);
    command.args(base).args(["--hits", "4"]);
    lines(&run(command, None).await);
    let mut command = check(&address);
    command
        .args(base)
        .args(["--behavior", "reset-remaining,no-batching"]);
    let output = lines(&run(command, None).await);
    // RESET_REMAINING answers the full limit with no reset time.
    assert_eq!(output, vec!["beh_k: UNDER_LIMIT remaining 10/10"]);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_address_comes_from_the_nodes_environment_or_config_file() {
    let server = common::start_node(&[]).await;
    let address = server.grpc_address().to_string();
    let args = [
        "check",
        "--name",
        "env",
        "--key",
        "k",
        "--limit",
        "5",
        "--duration",
        "1m",
    ];

    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command
        .args(args)
        .env("GUBER_GRPC_ADDRESS", &address)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = lines(&run(command, None).await);
    assert_eq!(remaining(&output[0]), ("env_k UNDER_LIMIT".into(), 4, 5));

    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("node.env");
    std::fs::write(
        &path,
        format!("GUBER_GRPC_ADDRESS={address}\nGUBER_CACHE_SIZE=10\n"),
    )
    .expect("the config file is written");
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("GUBER_GRPC_ADDRESS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = lines(&run(command, None).await);
    assert_eq!(remaining(&output[0]), ("env_k UNDER_LIMIT".into(), 3, 5));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_exit_two_without_calling() {
    // Nothing listens here: any call would fail with 1, so 2 proves nothing was sent.
    let address = format!("127.0.0.1:{}", free_port());
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["--name", "n", "--key", "k", "--duration", "1m"], None),
        (
            vec!["--name", "n", "--limit", "1", "--duration", "1m"],
            None,
        ),
        (vec!["--key", "k", "--limit", "1", "--duration", "1m"], None),
        (vec!["--name", "n", "--key", "k", "--limit", "1"], None),
        (
            vec![
                "--name",
                "n",
                "--key",
                "k",
                "--limit",
                "1",
                "--duration",
                "soon",
            ],
            None,
        ),
        (
            vec![
                "--name",
                "n",
                "--key",
                "k",
                "--limit",
                "ten",
                "--duration",
                "1m",
            ],
            None,
        ),
        (
            vec![
                "--name",
                "n",
                "--key",
                "k",
                "--limit",
                "1",
                "--duration",
                "1m",
                "--behavior",
                "sometimes",
            ],
            None,
        ),
        (
            vec![
                "--name",
                "n",
                "--key",
                "k",
                "--limit",
                "1",
                "--duration",
                "1m",
                "--algorithm",
                "fixed-window",
            ],
            None,
        ),
        (
            vec![
                "--name",
                "n",
                "--key",
                "k",
                "--limit",
                "1",
                "--duration",
                "1m",
                "--count",
                "0",
            ],
            None,
        ),
        (
            vec![
                "--name",
                "n",
                "--key",
                "k",
                "--limit",
                "-1",
                "--duration",
                "1m",
            ],
            None,
        ),
        (vec!["--name", "n", "--request-json", "-"], Some("{}")),
        (vec!["--request-json", "-"], Some("{\"requests\":")),
        (vec!["--request-json", "-"], Some("{\"requests\":[]}")),
        (
            vec!["--request-json", "-"],
            Some(r#"{"requests":[{"name":"n","unique_key":"k","algorithm":"FIXED"}]}"#),
        ),
        (vec!["--request-json", "/nonexistent/request.json"], None),
        (vec!["--unknown-flag"], None),
    ];
    for (args, input) in cases {
        let mut command = check(&address);
        command.args(&args);
        let output = run(command, input).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?}: an explanation");
    }

    let mut command = check("localhost");
    command.args([
        "--name",
        "n",
        "--key",
        "k",
        "--limit",
        "1",
        "--duration",
        "1m",
    ]);
    let output = run(command, None).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_node_exits_one() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut command = check(&address);
    command.args([
        "--name",
        "n",
        "--key",
        "k",
        "--limit",
        "1",
        "--duration",
        "1m",
        "--timeout",
        "2s",
    ]);
    let output = run(command, None).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(&address), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_call_prints_the_grpc_status_and_exits_one() {
    let server = common::start_node(&[]).await;
    let address = server.grpc_address().to_string();
    // 1001 items: the node refuses the whole call with OUT_OF_RANGE.
    let items: Vec<String> = (0..1001)
        .map(|i| format!(r#"{{"name":"big","unique_key":"k{i}","limit":1,"duration":1000}}"#))
        .collect();
    let request = format!(r#"{{"requests":[{}]}}"#, items.join(","));
    let mut command = check(&address);
    command.args(["--request-json", "-"]);
    let output = run(command, Some(&request)).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OutOfRange (11)"), "{stderr}");
    assert!(stderr.contains("max size is '1000'"), "{stderr}");
    server.shutdown().await.expect("clean shutdown");
}

#[test]
fn help_describes_the_command_with_examples() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .args(["check", "--help"])
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for needle in ["Examples:", "--request-json", "--behavior", "Exit status"] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

/// A loopback port nobody listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
