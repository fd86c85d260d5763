//! Graceful shutdown of the real binary: on SIGTERM the node reports not-ready on every probe while
//! still answering calls for the drain delay, then exits 0.

use crate::common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::token;
use ringlimit::proto::{self, v1_client::V1Client};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

async fn connect(grpc: &str) -> V1Client<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match V1Client::connect(format!("http://{grpc}")).await {
            Ok(client) => return client,
            Err(error) if Instant::now() > deadline => panic!("node never came up: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .args([
            &format!("--grpc-address={grpc}"),
            &format!("--http-address={http}"),
            "--shutdown-drain-delay=2s",
            "--shutdown-timeout=10s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");

    let mut client = connect(&grpc).await;
    client
        .live_check(proto::LiveCheckReq {})
        .await
        .expect("live");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    // `grpc.health.v1` is the last probe to turn (after the node left the cluster).
    let mut grpc_health = HealthClient::new(common::channel(&grpc).await);
    common::wait_until(
        "grpc.health.v1 to report not serving",
        Duration::from_secs(2),
        || {
            let mut grpc_health = grpc_health.clone();
            async move {
                grpc_health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok_and(|answer| {
                        answer.into_inner().status == ServingStatus::NotServing as i32
                    })
            }
        },
    )
    .await;

    // Draining: probes fail, calls are still answered.
    let live = client.live_check(proto::LiveCheckReq {}).await.unwrap_err();
    assert_eq!(live.code(), tonic::Code::Unavailable);
    let health = client
        .health_check(proto::HealthCheckReq {})
        .await
        .unwrap_err();
    assert_eq!(health.code(), tonic::Code::Unavailable);
    let serving = grpc_health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(serving, ServingStatus::NotServing as i32);
    let http_live = reqwest::get(format!("http://{http}/v1/LiveCheck"))
        .await
        .unwrap();
    assert_eq!(http_live.status().as_u16(), 503);
    let answer = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token("draining", 1, 5, 60_000)],
        })
        .await
        .expect("calls are answered while draining")
        .into_inner();
    assert_eq!(answer.responses[0].remaining, 4);
    drop(client);
    drop(grpc_health);

    // Then the process exits cleanly.
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait works") {
            break exit;
        }
        assert!(Instant::now() < deadline, "the node did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn in_process_shutdown_finishes_in_flight_calls() {
    let server = common::start_node(&["--shutdown-drain-delay=300ms"]).await;
    let mut client = common::grpc_client(&server).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let calls = tokio::spawn({
        let answered = Arc::clone(&answered);
        async move {
            for _ in 0..200 {
                match client
                    .get_rate_limits(proto::GetRateLimitsReq {
                        requests: vec![token("inflight", 1, 1_000_000, 60_000)],
                    })
                    .await
                {
                    Ok(_) => answered.fetch_add(1, Ordering::SeqCst),
                    Err(_) => break,
                };
            }
            answered.load(Ordering::SeqCst)
        }
    });
    // Shut down while the calls are running.
    common::wait_until(
        "the first call to be answered",
        Duration::from_secs(5),
        || async { answered.load(Ordering::SeqCst) > 0 },
    )
    .await;
    let started = Instant::now();
    server.shutdown().await.expect("clean shutdown");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let answered = calls.await.unwrap();
    assert!(
        answered > 0,
        "calls were answered before and during the drain"
    );
}
