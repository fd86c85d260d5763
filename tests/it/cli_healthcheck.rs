//! `ringlimit healthcheck` against real nodes: exit 0 for a healthy node, 2 for a node that answers
//! unhealthy, 1 for an address nobody listens on, each within a few seconds.

use crate::common;

use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use ringlimit::peers::PeerInfo;
use tokio::process::Command;

/// How long one run of the binary may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(20);

fn healthcheck() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command
        .arg("healthcheck")
        .env_remove("GUBER_HTTP_ADDRESS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `command`, failing the test if it takes longer than [`RUN_LIMIT`]; also returns how long
/// it took.
async fn run(mut command: Command) -> (Output, Duration) {
    let started = Instant::now();
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .expect("healthcheck finishes in time")
        .expect("the binary runs");
    (output, started.elapsed())
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A loopback port nobody listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_node_exits_zero() {
    let server = common::start_node(&[]).await;
    let mut command = healthcheck();
    command.args(["--url", &format!("http://{}", server.http_address())]);
    let (output, elapsed) = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stdout(&output).trim(), "healthy: 1 peer");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    // A bare HOST:PORT works too.
    let mut command = healthcheck();
    command.args(["--url", &server.http_address().to_string()]);
    let (output, _) = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_url_defaults_to_the_nodes_own_http_address_variable() {
    let server = common::start_node(&[]).await;
    let mut command = healthcheck();
    command.env("GUBER_HTTP_ADDRESS", server.http_address().to_string());
    let (output, _) = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stdout(&output).starts_with("healthy"), "{output:?}");

    // A wildcard listen address, as a container's node is configured, is reached over loopback.
    let mut command = healthcheck();
    command.env(
        "GUBER_HTTP_ADDRESS",
        format!("0.0.0.0:{}", server.http_address().port()),
    );
    let (output, _) = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unhealthy_node_exits_two() {
    let server = common::start_node(&[]).await;
    // The node is no longer in its own peer list: HealthCheck answers 503.
    server.node().peers().replace(vec![PeerInfo {
        grpc_address: "127.0.0.1:1".into(),
        http_address: "127.0.0.1:2".into(),
        data_center: String::new(),
    }]);
    let mut command = healthcheck();
    command.args(["--url", &format!("http://{}", server.http_address())]);
    let (output, elapsed) = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        stdout(&output).trim(),
        "unhealthy: this instance is not found in the peer list"
    );
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_address_exits_one() {
    let port = free_port();
    let mut command = healthcheck();
    command.args(["--url", &format!("http://127.0.0.1:{port}")]);
    let (output, elapsed) = run(command).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = stdout(&output);
    assert!(line.starts_with("error: "), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_listener_times_out_with_exit_one() {
    // Accepts connections (the kernel does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let address = listener.local_addr().expect("its address");
    let mut command = healthcheck();
    command.args(["--url", &address.to_string(), "--timeout", "300ms"]);
    let (output, elapsed) = run(command).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).contains("no answer"), "{output:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread")]
async fn something_that_is_not_the_gateway_exits_one() {
    let server = common::start_node(&[]).await;
    // The gRPC port speaks HTTP/2 only: no valid HTTP/1.1 health answer.
    let mut command = healthcheck();
    command.args([
        "--url",
        &server.grpc_address().to_string(),
        "--timeout",
        "2s",
    ]);
    let (output, _) = run(command).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stdout(&output).starts_with("error: "), "{output:?}");

    let mut command = healthcheck();
    command.args(["--url", "not a url"]);
    let (output, _) = run(command).await;
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    server.shutdown().await.expect("clean shutdown");
}

#[test]
fn help_describes_the_exit_status_with_examples() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .args(["healthcheck", "--help"])
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Exit status"), "{help}");
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("GUBER_HTTP_ADDRESS"), "{help}");
}
