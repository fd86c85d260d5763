//! The `ringlimit` binary's logs, from a real process: with `GUBER_LOG_FORMAT=json` every line is a
//! JSON object (tracing-subscriber's JSON format with flattened events), the start line carries
//! the effective configuration with secrets redacted, and serving requests logs nothing at info
//! level; the default text format is plain, uncoloured text when not written to a terminal.

use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ringlimit::proto::{self, v1_client::V1Client};
use tokio::process::{Child, Command};

/// The etcd password given in the environment; it must never reach the logs.
const PASSWORD: &str = "secret-etcd-pw-7731";

/// The unique key of the requests sent; no log line may mention it.
const KEY: &str = "logging_probe_key";

/// The info-level messages of a node's life without peers: start, serving, stop.
const LIFECYCLE_MESSAGES: [&str; 4] = [
    "starting ringlimit",
    "ringlimit is serving",
    "shutdown signal received; draining",
    "ringlimit stopped",
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// A node process on free loopback ports, logging to a pipe.
struct Node {
    child: Child,
    grpc: String,
    http: String,
}

impl Node {
    /// Starts the binary with `env` added to a clean `GUBER_*` environment and waits until its
    /// HTTP LiveCheck answers.
    async fn start(env: &[(&str, &str)]) -> Self {
        let grpc = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
        for (key, _) in std::env::vars() {
            if key.starts_with("GUBER_") || key == "RUST_LOG" || key == "NO_COLOR" {
                command.env_remove(key);
            }
        }
        command
            .env("GUBER_GRPC_ADDRESS", &grpc)
            .env("GUBER_HTTP_ADDRESS", &http)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the binary starts");

        let client = reqwest::Client::new();
        let url = format!("http://{http}/v1/LiveCheck");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("the child can be polled") {
                panic!("the node exited early with {status}");
            }
            let answer = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if answer.is_ok_and(|response| response.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "the node did not start serving");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, grpc, http }
    }

    /// Sends SIGTERM and collects the output once the process has exited.
    async fn stop(self) -> Output {
        let pid = self.child.id().expect("the node is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let output = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("the node stops after SIGTERM")
            .expect("the output is collected");
        assert!(output.status.success(), "{output:?}");
        output
    }
}

/// Sends a few rate-limit requests over both APIs, each for [`KEY`].
async fn send_requests(node: &Node) {
    let item = || proto::RateLimitReq {
        name: "logging".into(),
        unique_key: KEY.into(),
        hits: 1,
        limit: 2,
        duration: 60_000,
        ..Default::default()
    };
    let mut grpc = V1Client::connect(format!("http://{}", node.grpc))
        .await
        .expect("gRPC connects");
    for _ in 0..3 {
        grpc.get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![item()],
        })
        .await
        .expect("the call succeeds");
    }
    let http = reqwest::Client::new();
    let body = ringlimit::http::json::encode_get_rate_limits_req(&proto::GetRateLimitsReq {
        requests: vec![item()],
    });
    for _ in 0..3 {
        let response = http
            .post(format!("http://{}/v1/GetRateLimits", node.http))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("the HTTP call is sent");
        assert!(response.status().is_success());
    }
    // A failing request and a health check, too.
    let response = http
        .post(format!("http://{}/v1/GetRateLimits", node.http))
        .body(format!("{{\"requests\":[{{\"unique_key\":\"{KEY}\"\n"))
        .send()
        .await
        .expect("the HTTP call is sent");
    assert_eq!(response.status(), 400);
    let response = http
        .get(format!("http://{}/v1/HealthCheck", node.http))
        .send()
        .await
        .expect("the health check is sent");
    assert!(response.status().is_success());
}

fn stderr_lines(output: &Output) -> Vec<String> {
    String::from_utf8(output.stderr.clone())
        .expect("UTF-8 logs")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_with_the_configuration_and_no_secrets() {
    let node = Node::start(&[
        ("GUBER_LOG_FORMAT", "json"),
        ("GUBER_ETCD_PASSWORD", PASSWORD),
    ])
    .await;
    send_requests(&node).await;
    let output = node.stop().await;
    assert!(output.stdout.is_empty(), "logs go to standard error");
    let lines = stderr_lines(&output);
    assert!(!lines.is_empty());

    let mut events = Vec::new();
    for line in &lines {
        assert!(!line.contains(PASSWORD), "the password leaked: {line}");
        assert!(!line.contains('\u{1b}'), "no colour codes in JSON: {line}");
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {line}"));
        // tracing-subscriber's JSON format with flatten_event(true): the event's fields, the
        // message among them, sit at the top level next to timestamp, level and target.
        let timestamp = object["timestamp"].as_str().expect("a timestamp string");
        assert!(
            timestamp.len() >= 20 && timestamp.contains('T'),
            "an RFC 3339 timestamp: {line}"
        );
        let level = object["level"].as_str().expect("a level string");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
            "{line}"
        );
        assert!(object["target"].is_string(), "{line}");
        assert!(object["message"].is_string(), "{line}");
        assert!(
            object.get("fields").is_none(),
            "fields are flattened: {line}"
        );
        events.push(object.clone());
    }

    let start = events
        .iter()
        .find(|event| event["message"] == "starting ringlimit")
        .expect("a start line");
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(start["commit"], ringlimit::build_info::GIT_COMMIT);
    let config = start["config"].as_str().expect("the configuration");
    for setting in [
        "GUBER_CACHE_SIZE=50000",
        "GUBER_LOG_FORMAT=json",
        "GUBER_ETCD_PASSWORD=***",
        "GUBER_BATCH_LIMIT=1000",
    ] {
        assert!(
            config.split(' ').any(|word| word == setting),
            "{setting}: {config}"
        );
    }

    let serving = events
        .iter()
        .find(|event| event["message"] == "ringlimit is serving")
        .expect("a serving line");
    assert!(
        serving["grpc"]
            .as_str()
            .is_some_and(|grpc| grpc.starts_with("127.0.0.1:"))
    );

    // Requests are not logged at info level (nor at all at the default level).
    for event in &events {
        let line = serde_json::Value::Object(event.clone()).to_string();
        assert!(!line.contains(KEY), "a request was logged: {line}");
        if event["level"] == "INFO" {
            let message = event["message"].as_str().unwrap_or_default();
            assert!(
                LIFECYCLE_MESSAGES.contains(&message),
                "unexpected info line: {line}"
            );
        }
    }
    let stopped = events
        .iter()
        .position(|event| event["message"] == "ringlimit stopped")
        .expect("a stop line");
    assert_eq!(stopped, events.len() - 1, "the stop line is the last");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_logs_are_plain_lines() {
    let node = Node::start(&[("GUBER_ETCD_PASSWORD", PASSWORD)]).await;
    send_requests(&node).await;
    let output = node.stop().await;
    let lines = stderr_lines(&output);
    assert!(lines.len() >= 4, "{lines:?}");
    for line in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_err(),
            "text, not JSON: {line}"
        );
        assert!(
            !line.contains('\u{1b}'),
            "no colour codes off a terminal: {line}"
        );
        assert!(!line.contains(PASSWORD), "the password leaked: {line}");
        assert!(!line.contains(KEY), "a request was logged: {line}");
        assert!(line.contains(" INFO ") || line.contains(" WARN ") || line.contains(" ERROR "));
    }
    let start = lines
        .iter()
        .find(|line| line.contains("starting ringlimit"))
        .expect("a start line");
    assert!(start.contains("GUBER_CACHE_SIZE=50000"), "{start}");
    assert!(start.contains("GUBER_ETCD_PASSWORD=***"), "{start}");
    assert!(start.contains("GUBER_LOG_FORMAT=text"), "{start}");
    for message in LIFECYCLE_MESSAGES {
        assert!(
            lines.iter().any(|line| line.contains(message)),
            "{message}: {lines:?}"
        );
    }
}

/// The one warning of a cluster whose peer plane nobody protects, and its absence once
/// `GUBER_PEER_SECRET` is set (which itself never reaches the logs).
#[tokio::test(flavor = "multi_thread")]
async fn an_open_peer_plane_is_warned_about_once_and_the_peer_secret_is_never_logged() {
    const WARNING: &str = "the peer plane is unauthenticated";
    const PEER_SECRET: &str = "peer-secret-5521";
    let warnings = |output: &Output| {
        stderr_lines(output)
            .into_iter()
            .filter(|line| line.contains(WARNING))
            .collect::<Vec<_>>()
    };

    let node = Node::start(&[
        ("GUBER_LOG_FORMAT", "json"),
        ("GUBER_PEER_DISCOVERY_TYPE", "static"),
    ])
    .await;
    let output = node.stop().await;
    let open = warnings(&output);
    assert_eq!(open.len(), 1, "{open:?}");
    for words in [
        "UpdatePeerGlobals",
        "Handoff",
        "Admin",
        "GUBER_PEER_SECRET",
        "GUBER_TLS_CLIENT_AUTH",
    ] {
        assert!(open[0].contains(words), "{words}: {}", open[0]);
    }
    assert!(open[0].contains(r#""level":"WARN""#), "{}", open[0]);

    let node = Node::start(&[
        ("GUBER_LOG_FORMAT", "json"),
        ("GUBER_PEER_DISCOVERY_TYPE", "static"),
        ("GUBER_PEER_SECRET", PEER_SECRET),
    ])
    .await;
    let output = node.stop().await;
    assert!(warnings(&output).is_empty());
    let lines = stderr_lines(&output);
    assert!(lines.iter().all(|line| !line.contains(PEER_SECRET)));
    assert!(
        lines
            .iter()
            .any(|line| line.contains("GUBER_PEER_SECRET=***")),
        "the configuration line shows the secret redacted"
    );

    // A single node (no discovery) has no peer plane to warn about.
    let node = Node::start(&[("GUBER_LOG_FORMAT", "json")]).await;
    assert!(warnings(&node.stop().await).is_empty());
}
