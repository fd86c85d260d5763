//! Bounded work on every inbound path (issue 12): peer messages bounded by bytes, admission on
//! every RPC and route with a pool of its own for peers, and nothing owed lost at shutdown.
//!
//! Real nodes on 127.0.0.1 port 0; fake peers are small tonic servers on loopback. Every wait is
//! bounded in count and time.

use crate::common;
use common::BlackHole;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{grpc_client, http_url, spread_key, start_node, token};
use prost::Message;
use ringlimit::allow::pb::{AllowReq, allow_v1_client::AllowV1Client};
use ringlimit::peers::PeerInfo;
use ringlimit::proto::peers_v1_server::{PeersV1, PeersV1Server};
use ringlimit::proto::{self, peers_v1_client::PeersV1Client};
use ringlimit::server::RunningServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

/// The smallest `GUBER_MAX_REQUEST_SIZE` accepted is 1024; the split test uses 128 KiB.
const SMALL_REQUEST_SIZE: usize = 128 * 1024;

/// Makes `server` believe `other` is a second peer of its data center.
fn add_peer(server: &RunningServer, other: &str) {
    let me = server.node().peers().me().clone();
    let other = PeerInfo {
        grpc_address: other.to_string(),
        http_address: String::new(),
        data_center: me.data_center.clone(),
    };
    server.node().peers().replace(vec![me, other]);
}

/// A key (namespace `test`, prefix `prefix`) that `server` routes to `owner`.
fn key_routed_to(server: &RunningServer, owner: &str, prefix: &str) -> String {
    (0..100_000)
        .map(|i| spread_key(prefix, i))
        .find(|key| {
            server
                .node()
                .owner_address(&token(key, 1, 10, 60_000))
                .as_deref()
                == Some(owner)
        })
        .expect("a key routed to the peer")
}

/// The gRPC-encoded size of one call carrying `items`.
fn call_size(items: &[proto::RateLimitReq]) -> usize {
    proto::GetRateLimitsReq {
        requests: items.to_vec(),
    }
    .encoded_len()
}

#[tokio::test]
async fn a_forwarded_batch_of_1000_long_keys_is_split_to_fit_the_owners_limit() {
    // The owner is a fake peer with the same message limit, answering after 200 ms.
    let owner = SlowOwner::new(Duration::from_millis(200));
    let (owner_address, owner_task) = owner.serve(SMALL_REQUEST_SIZE).await;
    let flag = format!("--max-request-size={SMALL_REQUEST_SIZE}");
    // A long batch wait: every item after the first queues until one batch is due.
    let server = start_node(&[flag.as_str(), "--batch-timeout=10s", "--batch-wait=100ms"]).await;
    add_peer(&server, &owner_address);

    // The longest keys for which the client's call of 1000 items still fits the limit (with 1 KiB
    // to spare); the forwarded items also carry `created_at`, which makes one batch of them
    // larger than the owner accepts.
    let key_len = (32..1024)
        .rev()
        .find(|&len| {
            let item = token(&"k".repeat(len), 1, 10, 60_000);
            call_size(&vec![item; 1000]) <= SMALL_REQUEST_SIZE - 1024
        })
        .expect("a key length that fits");
    let prefix = "k".repeat(key_len - 17);
    let keys: Vec<String> = (0..1_000_000)
        .map(|i| spread_key(&prefix, i))
        .filter(|key| {
            server
                .node()
                .owner_address(&token(key, 1, 10, 60_000))
                .as_deref()
                == Some(owner_address.as_str())
        })
        .take(1000)
        .collect();
    assert_eq!(keys.len(), 1000);
    let items: Vec<proto::RateLimitReq> =
        keys.iter().map(|key| token(key, 1, 10, 60_000)).collect();
    assert!(
        call_size(&items) <= SMALL_REQUEST_SIZE,
        "the client's call fits"
    );
    let forwarded: Vec<proto::RateLimitReq> = items
        .iter()
        .cloned()
        .map(|mut item| {
            item.created_at = Some(common::now_ms());
            item
        })
        .collect();
    let peer_call = proto::GetPeerRateLimitsReq {
        requests: forwarded,
    };
    assert!(
        peer_call.encoded_len() > SMALL_REQUEST_SIZE,
        "one peer call with every item would exceed the owner's limit ({} bytes)",
        peer_call.encoded_len()
    );

    let mut client = grpc_client(&server).await;
    let responses = tokio::time::timeout(
        Duration::from_secs(30),
        client.get_rate_limits(proto::GetRateLimitsReq { requests: items }),
    )
    .await
    .expect("answered within 30 s")
    .expect("the call succeeds")
    .into_inner()
    .responses;
    assert_eq!(responses.len(), 1000);
    for (index, response) in responses.iter().enumerate() {
        assert_eq!(response.error, "", "item {index}");
        assert_eq!(response.remaining, 9, "item {index}");
    }
    assert_eq!(
        owner.hits.load(Ordering::SeqCst),
        1000,
        "every item reached the owner once"
    );
    let largest = owner.largest.load(Ordering::SeqCst);
    assert!(
        largest <= SMALL_REQUEST_SIZE,
        "largest peer call {largest} bytes"
    );
    server.shutdown().await.unwrap();
    owner_task.abort();
}

/// A `PeersV1` owner that counts the hits it is sent and answers after `delay`.
#[derive(Clone)]
struct SlowOwner {
    delay: Duration,
    hits: Arc<AtomicUsize>,
    /// The largest call received, in bytes.
    largest: Arc<AtomicUsize>,
}

impl SlowOwner {
    fn new(delay: Duration) -> Self {
        Self {
            delay,
            hits: Arc::new(AtomicUsize::new(0)),
            largest: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Serves this owner on loopback, accepting messages of at most `max_message_size` bytes.
    async fn serve(&self, max_message_size: usize) -> (String, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let service = PeersV1Server::new(self.clone()).max_decoding_message_size(max_message_size);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        (address, task)
    }
}

#[tonic::async_trait]
impl PeersV1 for SlowOwner {
    async fn get_peer_rate_limits(
        &self,
        request: Request<proto::GetPeerRateLimitsReq>,
    ) -> Result<Response<proto::GetPeerRateLimitsResp>, Status> {
        let requests = request.into_inner().requests;
        let size = proto::GetPeerRateLimitsReq {
            requests: requests.clone(),
        }
        .encoded_len();
        self.largest.fetch_max(size, Ordering::SeqCst);
        for item in &requests {
            self.hits
                .fetch_add(usize::try_from(item.hits).unwrap_or(0), Ordering::SeqCst);
        }
        // The behaviour under test: a slow owner.
        tokio::time::sleep(self.delay).await;
        let rate_limits = requests
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

/// Saturates the client pool of `server` (2 slots) with calls that hang on a silent owner.
async fn saturate_clients(server: &RunningServer, hole: &BlackHole) -> Vec<JoinHandle<()>> {
    add_peer(server, &hole.address);
    let slow_key = key_routed_to(server, &hole.address, "slow");
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let mut client = grpc_client(server).await;
        let key = slow_key.clone();
        hanging.push(tokio::spawn(async move {
            let _ = client
                .get_rate_limits(proto::GetRateLimitsReq {
                    requests: vec![token(&key, 1, 10, 60_000)],
                })
                .await;
        }));
    }
    // Wait (bounded) until a client call is refused: both slots are taken.
    let mut probe = grpc_client(server).await;
    let started = Instant::now();
    loop {
        let refused = probe.live_check(proto::LiveCheckReq {}).await.is_ok()
            && probe
                .get_rate_limits(proto::GetRateLimitsReq { requests: vec![] })
                .await
                .is_err_and(|status| status.code() == Code::ResourceExhausted);
        if refused {
            return hanging;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the client pool never filled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn peers_and_probes_are_served_while_clients_saturate_admission() {
    let server = start_node(&["--max-concurrent-requests=2", "--batch-timeout=20s"]).await;
    let hole = BlackHole::start().await;
    let hanging = saturate_clients(&server, &hole).await;

    // A peer's call is answered: peers draw from their own pool.
    let mut peer = PeersV1Client::new(common::channel(server.grpc_address()).await);
    let answer = peer
        .get_peer_rate_limits(proto::GetPeerRateLimitsReq {
            requests: vec![token("peer-key", 1, 10, 60_000)],
        })
        .await
        .expect("a peer call is admitted while clients saturate the node")
        .into_inner()
        .rate_limits;
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].remaining, 9);

    // Probes are never shed, on either surface.
    let mut v1 = grpc_client(&server).await;
    v1.health_check(proto::HealthCheckReq {})
        .await
        .expect("HealthCheck answers");
    let http = reqwest::Client::new();
    for path in ["/v1/HealthCheck", "/v1/LiveCheck"] {
        let status = http
            .get(http_url(&server, path))
            .send()
            .await
            .expect("sent")
            .status();
        assert_ne!(status.as_u16(), 429, "{path} is a probe");
    }

    for call in &hanging {
        call.abort();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_and_admin_routes_are_admission_limited() {
    let server = start_node(&[
        "--max-concurrent-requests=2",
        "--batch-timeout=20s",
        "--admin-enabled=true",
    ])
    .await;
    let hole = BlackHole::start().await;
    let hanging = saturate_clients(&server, &hole).await;

    let http = reqwest::Client::new();
    for path in ["/metrics", "/admin/stats", "/admin/peers"] {
        let response = http
            .get(http_url(&server, path))
            .send()
            .await
            .expect("sent");
        assert_eq!(
            response.status().as_u16(),
            429,
            "{path} takes a client slot"
        );
    }
    // Client RPCs stay limited as before.
    let refused = grpc_client(&server)
        .await
        .get_rate_limits(proto::GetRateLimitsReq { requests: vec![] })
        .await
        .expect_err("saturated");
    assert_eq!(refused.code(), Code::ResourceExhausted);

    // Freed slots admit them again.
    for call in &hanging {
        call.abort();
    }
    let started = Instant::now();
    loop {
        let status = http
            .get(http_url(&server, "/metrics"))
            .send()
            .await
            .expect("sent")
            .status();
        if status.is_success() {
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
async fn owed_owner_failure_hits_survive_a_graceful_shutdown_through_the_snapshot() {
    let dir = std::env::temp_dir().join(format!("ringlimit-owed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snapshot = dir.join("snapshot.bin");
    let _ = std::fs::remove_file(&snapshot);
    let snapshot_flag = format!("--snapshot-path={}", snapshot.display());

    // An owner that refuses connections: a port that was bound and released.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let server = start_node(&[
        "--owner-failure-policy=local",
        snapshot_flag.as_str(),
        "--batch-timeout=300ms",
    ])
    .await;
    add_peer(&server, &dead);
    let key = key_routed_to(&server, &dead, "owed");
    let mut client = grpc_client(&server).await;
    let answer = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token(&key, 3, 10, 60_000)],
        })
        .await
        .expect("answered")
        .into_inner()
        .responses
        .remove(0);
    assert_eq!(answer.error, "", "answered from the fallback bucket");
    assert_eq!(
        answer.metadata.get("fallback").map(String::as_str),
        Some("local")
    );
    assert_eq!(answer.remaining, 7);

    // The owner never comes back before the node stops: the 3 hits are still owed.
    server.shutdown().await.expect("clean shutdown");

    // A node restarted from the snapshot, alone (so it owns the key), receives the owed hits.
    let restarted = start_node(&[snapshot_flag.as_str()]).await;
    let mut client = grpc_client(&restarted).await;
    let started = Instant::now();
    loop {
        let remaining = client
            .get_rate_limits(proto::GetRateLimitsReq {
                requests: vec![token(&key, 0, 10, 60_000)],
            })
            .await
            .expect("answered")
            .into_inner()
            .responses[0]
            .remaining;
        if remaining == 7 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the owed hits were lost (remaining {remaining})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    restarted.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_cancelled_idempotent_allow_does_not_spend_twice() {
    // The limit's owner is a fake peer that answers after 600 ms.
    let owner = SlowOwner::new(Duration::from_millis(600));
    let (owner_address, owner_task) = owner.serve(4 * 1024 * 1024).await;
    let server = start_node(&["--batch-timeout=5s"]).await;
    add_peer(&server, &owner_address);
    // A user whose records are kept here and whose limit the fake peer owns.
    let user = (0..100_000)
        .map(|i| spread_key("user", i))
        .find(|user| {
            let records = proto::RateLimitReq {
                name: ringlimit::allow::RECORDS_RING_NAME.into(),
                unique_key: user.clone(),
                ..Default::default()
            };
            let limit = proto::RateLimitReq {
                name: "allow_default".into(),
                unique_key: user.clone(),
                ..Default::default()
            };
            server.node().owner_address(&records).is_none()
                && server.node().owner_address(&limit).as_deref() == Some(owner_address.as_str())
        })
        .expect("a suitable user");
    let mut allow = AllowV1Client::new(common::channel(server.grpc_address()).await);
    let call = AllowReq {
        user_id: user.clone(),
        resource: "default".into(),
        cost: 1,
        idempotency_key: "retry-me".into(),
    };

    // The caller gives up after 300 ms, while the spend is at the owner.
    let mut first = Request::new(call.clone());
    first.set_timeout(Duration::from_millis(300));
    let cancelled = allow.allow(first).await;
    assert!(
        cancelled.is_err(),
        "the first call is cut off: {cancelled:?}"
    );
    assert_eq!(
        owner.hits.load(Ordering::SeqCst),
        1,
        "the spend reached the owner"
    );

    // The retry replays the first spend rather than spending again.
    let retried = tokio::time::timeout(Duration::from_secs(10), allow.allow(call))
        .await
        .expect("answered within 10 s")
        .expect("the retry succeeds")
        .into_inner();
    assert!(retried.allowed);
    assert!(retried.replayed, "the retry is the recorded answer");
    assert_eq!(owner.hits.load(Ordering::SeqCst), 1, "spent exactly once");

    server.shutdown().await.unwrap();
    owner_task.abort();
}

#[tokio::test]
async fn a_silent_grpc_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_node(&["--grpc-idle-timeout=1s", "--grpc-keepalive-interval=0s"]).await;
    let mut stream = tokio::net::TcpStream::connect(server.grpc_address())
        .await
        .expect("connects");
    // The HTTP/2 preface and an empty SETTINGS frame, then silence.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface sent");
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the idle connection was not closed within 10 s"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never closed");
    }
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed too early: {after:?}"
    );
    // A busy client is not affected.
    let mut client = grpc_client(&server).await;
    for _ in 0..3 {
        client
            .live_check(proto::LiveCheckReq {})
            .await
            .expect("an active connection stays usable");
        // Pacing: calls spaced by less than the idle timeout, for longer than it.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    server.shutdown().await.unwrap();
}
