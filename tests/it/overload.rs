//! Overload: the concurrency bound sheds calls at once (RESOURCE_EXHAUSTED / HTTP 429), a caller's
//! `grpc-timeout` bounds the node's work and reaches the owner of forwarded items, and each listener
//! bounds its open connections.
//!
//! Slow calls are made by forwarding to an owner that never answers: a loopback TCP listener that
//! accepts connections and holds them silent (a "black hole"), with a long batch timeout, so a call
//! stays in flight until its caller gives up.

use crate::common;
use common::BlackHole;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ApiClient, Surface, grpc_client, http_url, spread_key, start_node, token};
use ringlimit::peers::PeerInfo;
use ringlimit::proto;
use ringlimit::proto::peers_v1_server::{PeersV1, PeersV1Server};
use ringlimit::server::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

/// Makes `server` believe `owner_address` is a second peer, and returns a key (namespace `test`)
/// that this peer owns.
fn route_to(server: &RunningServer, owner_address: &str) -> String {
    let me = server.node().peers().me().clone();
    let other = PeerInfo {
        grpc_address: owner_address.to_string(),
        http_address: String::new(),
        data_center: me.data_center.clone(),
    };
    server.node().peers().replace(vec![me, other]);
    (0..10_000)
        .map(|i| spread_key("slow", i))
        .find(|key| {
            server
                .node()
                .owner_address(&token(key, 1, 10, 60_000))
                .as_deref()
                == Some(owner_address)
        })
        .expect("some key is owned by the other peer")
}

/// A key (namespace `test`) that `server` owns itself.
fn local_key(server: &RunningServer) -> String {
    (0..10_000)
        .map(|i| spread_key("fast", i))
        .find(|key| {
            server
                .node()
                .owner_address(&token(key, 1, 10, 60_000))
                .is_none()
        })
        .expect("some key is local")
}

/// POSTs `body` to `/v1/GetRateLimits` with extra headers; returns the status and body.
async fn post_with(
    server: &RunningServer,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(http_url(server, "/v1/GetRateLimits"))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("HTTP request is sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("HTTP body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn one_item_body(key: &str) -> String {
    format!(
        r#"{{"requests":[{{"name":"test","unique_key":"{key}","hits":1,"limit":10,"duration":60000}}]}}"#
    )
}

#[tokio::test]
async fn calls_beyond_the_concurrency_bound_are_refused_at_once() {
    let server = start_node(&["--max-concurrent-requests=2", "--batch-timeout=20s"]).await;
    let hole = BlackHole::start().await;
    let slow_key = route_to(&server, &hole.address);

    // Two calls take both slots and hang on the silent owner.
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let mut client = ApiClient::new(&server, Surface::Grpc).await;
        let key = slow_key.clone();
        hanging.push(tokio::spawn(async move {
            client
                .get_rate_limits(vec![token(&key, 1, 10, 60_000)])
                .await
        }));
    }

    // Both must hold their slot before the third call is sent, or the third could take one first
    // and have a hanging call refused instead (bounded wait).
    let in_progress = server.node().metrics().concurrent_checks.clone();
    common::wait_until(
        "both hanging calls in progress",
        Duration::from_secs(10),
        || {
            let busy = in_progress.get() == 2;
            async move { busy }
        },
    )
    .await;

    // A third call (a local key, which would be instant) is refused as soon as both slots are
    // taken: poll until it is, bounded in count and time.
    let local_key = local_key(&server);
    let mut grpc = ApiClient::new(&server, Surface::Grpc).await;
    let started = Instant::now();
    let mut refused = None;
    for _ in 0..100 {
        let sent = Instant::now();
        match grpc
            .get_rate_limits(vec![token(&local_key, 0, 10, 60_000)])
            .await
        {
            Err(failure) => {
                refused = Some((failure, sent.elapsed()));
                break;
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never refused");
    }
    let (failure, latency) = refused.expect("the third call is refused");
    assert_eq!(failure.code, Code::ResourceExhausted as i32, "{failure:?}");
    assert!(failure.message.contains("at most 2"), "{failure:?}");
    // Shed at once, not after a queue drains (the hanging calls last 20 s).
    assert!(latency < Duration::from_secs(1), "refusal took {latency:?}");

    // HTTP shares the same bound: 429 with grpc-gateway's error body.
    let sent = Instant::now();
    let (status, body) = post_with(&server, &[], one_item_body(&local_key)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], 8);
    assert!(sent.elapsed() < Duration::from_secs(1));

    // Health checks are never shed.
    let mut v1 = grpc_client(&server).await;
    v1.health_check(proto::HealthCheckReq {})
        .await
        .expect("health check answers on a saturated node");

    // Cancelling the hanging calls frees their slots.
    for call in &hanging {
        call.abort();
    }
    let started = Instant::now();
    loop {
        if grpc
            .get_rate_limits(vec![token(&local_key, 1, 10, 60_000)])
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "slots never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn grpc_timeout_bounds_a_forwarded_call() {
    let server = start_node(&["--batch-timeout=20s"]).await;
    let hole = BlackHole::start().await;
    let slow_key = route_to(&server, &hole.address);

    let mut client = grpc_client(&server).await;
    let request = call_with_deadline(&slow_key, Duration::from_secs(1));
    let started = Instant::now();
    let status = client
        .get_rate_limits(request)
        .await
        .expect_err("the owner never answers");
    let elapsed = started.elapsed();
    // The node answers 100 ms before the client's own timer would fire.
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");

    // The HTTP gateway honours the same header (grpc-gateway forwards it): 504.
    let started = Instant::now();
    let (status, body) = post_with(
        &server,
        &[("grpc-timeout", "300m")],
        one_item_body(&slow_key),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], Code::DeadlineExceeded as i32);
    assert!(started.elapsed() < Duration::from_secs(3));

    // A deadline that has already passed is answered at once, before any work.
    let local_key = local_key(&server);
    let (status, body) = post_with(
        &server,
        &[("grpc-timeout", "0n")],
        one_item_body(&local_key),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    // A malformed header is ignored, as gRPC servers do.
    let (status, _) = post_with(
        &server,
        &[("grpc-timeout", "soon")],
        one_item_body(&local_key),
    )
    .await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

/// A `PeersV1` owner that records the `grpc-timeout` of each forwarded call and answers it, at
/// once, or while `hung` once `hung` is cleared.
#[derive(Clone, Default)]
struct RecordingOwner {
    timeouts: Arc<Mutex<Vec<Option<String>>>>,
    hung: Arc<std::sync::atomic::AtomicBool>,
}

#[tonic::async_trait]
impl PeersV1 for RecordingOwner {
    async fn get_peer_rate_limits(
        &self,
        request: Request<proto::GetPeerRateLimitsReq>,
    ) -> Result<Response<proto::GetPeerRateLimitsResp>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        self.timeouts.lock().unwrap().push(timeout);
        // Bounded: the node resets a call whose caller gave up, which drops this future.
        for _ in 0..3000 {
            if !self.hung.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rate_limits = request
            .into_inner()
            .requests
            .iter()
            .map(|item| proto::RateLimitResp {
                limit: item.limit,
                remaining: item.limit - item.hits,
                ..Default::default()
            })
            .collect();
        Ok(Response::new(proto::GetPeerRateLimitsResp { rate_limits }))
    }

    async fn update_peer_globals(
        &self,
        _request: Request<proto::UpdatePeerGlobalsReq>,
    ) -> Result<Response<proto::UpdatePeerGlobalsResp>, Status> {
        Ok(Response::new(proto::UpdatePeerGlobalsResp {}))
    }
}

/// Serves `owner` on a loopback port: its address, and the task serving it.
async fn serve_owner(
    owner: &RecordingOwner,
) -> (
    String,
    tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PeersV1Server::new(owner.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (address, task)
}

/// A one-item `GetRateLimits` call of `key` carrying a deadline of `timeout`.
fn call_with_deadline(key: &str, timeout: Duration) -> Request<proto::GetRateLimitsReq> {
    let mut request = Request::new(proto::GetRateLimitsReq {
        requests: vec![token(key, 1, 10, 60_000)],
    });
    request.set_timeout(timeout);
    request
}

fn timeout_of(header: &str) -> Duration {
    ringlimit::limits::deadline::parse_grpc_timeout(header).expect("a valid grpc-timeout")
}

#[tokio::test]
async fn forwarded_calls_carry_the_callers_remaining_deadline() {
    let owner = RecordingOwner::default();
    let (owner_address, owner_task) = serve_owner(&owner).await;
    let server = start_node(&["--batch-timeout=5s"]).await;
    let key = route_to(&server, &owner_address);
    let mut client = grpc_client(&server).await;

    // Without a caller deadline the owner gets the batch timeout.
    client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token(&key, 1, 10, 60_000)],
        })
        .await
        .expect("the owner answers");
    // With one, the owner gets what is left of it, never more.
    let request = call_with_deadline(&key, Duration::from_millis(800));
    client
        .get_rate_limits(request)
        .await
        .expect("the owner answers");

    let timeouts = owner.timeouts.lock().unwrap().clone();
    assert_eq!(timeouts.len(), 2, "{timeouts:?}");
    let without = timeout_of(timeouts[0].as_deref().expect("header sent"));
    assert!(
        without <= Duration::from_secs(5) && without > Duration::from_secs(4),
        "{without:?}"
    );
    let with = timeout_of(timeouts[1].as_deref().expect("header sent"));
    assert!(
        with <= Duration::from_millis(800) && with > Duration::from_millis(300),
        "{with:?}"
    );
    server.shutdown().await.unwrap();
    owner_task.abort();
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 256];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn each_listener_bounds_its_open_connections() {
    let server = start_node(&["--max-connections=2", "--http-header-timeout=30s"]).await;
    for address in [server.http_address(), server.grpc_address()] {
        let first = TcpStream::connect(address).await.unwrap();
        let mut second = TcpStream::connect(address).await.unwrap();
        // Give the server time to accept both before the third arrives (bounded poll below).
        let mut third = TcpStream::connect(address).await.unwrap();
        let started = Instant::now();
        assert!(
            closed_within(&mut third, Duration::from_secs(5)).await,
            "{address}: a connection beyond the limit is closed"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // The two within the limit stay open.
        assert!(!closed_within(&mut second, Duration::from_millis(100)).await);
        drop(first);
        drop(second);
    }

    // Once connections close, new ones are served again (bounded poll: the server notices the
    // closes asynchronously).
    let started = Instant::now();
    loop {
        let mut client = ApiClient::new(&server, Surface::Http).await;
        if client
            .get_rate_limits(vec![token("after", 1, 10, 60_000)])
            .await
            .is_ok()
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = TcpStream::connect(server.http_address()).await.unwrap();
    stream
        .write_all(b"GET /v1/LiveCheck HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.shutdown().await.unwrap();
}

/// A forwarded item to an idle peer is sent from the caller's own task; a caller that cancels
/// mid-call must still hand the peer's call slot back. More callers give up on a hung owner than
/// the four calls a peer may have in flight; once the owner answers again, the next item finds the
/// peer idle and is sent and answered at once (with a lost slot the peer would never look idle
/// again: every item would wait for its batch to come due).
#[tokio::test]
async fn callers_that_cancel_on_a_hung_owner_do_not_keep_its_call_slots() {
    let owner = RecordingOwner::default();
    owner.hung.store(true, std::sync::atomic::Ordering::SeqCst);
    let (owner_address, owner_task) = serve_owner(&owner).await;
    // A long batch wait: an item that finds the peer busy (a slot still taken) would wait 10 s.
    let server = start_node(&["--batch-timeout=30s", "--batch-wait=10s"]).await;
    let key = route_to(&server, &owner_address);
    let mut client = grpc_client(&server).await;
    // Each caller cancels its call (no deadline sent: the node's handler is dropped mid-call,
    // its peer call with it, which is not a failure of the peer).
    for _ in 0..6 {
        let request = Request::new(proto::GetRateLimitsReq {
            requests: vec![token(&key, 1, 10, 60_000)],
        });
        let gave_up =
            tokio::time::timeout(Duration::from_millis(200), client.get_rate_limits(request)).await;
        assert!(gave_up.is_err(), "the hung owner cannot have answered");
    }
    owner.hung.store(false, std::sync::atomic::Ordering::SeqCst);
    let request = call_with_deadline(&key, Duration::from_secs(5));
    let started = Instant::now();
    let response = client
        .get_rate_limits(request)
        .await
        .expect("the owner answers")
        .into_inner();
    assert_eq!(response.responses[0].error, "");
    assert_eq!(response.responses[0].remaining, 9);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await.unwrap();
    owner_task.abort();
}
