//! No surface waits for a delayed ACK (Nagle's algorithm on an accepted socket).
//!
//! An answer written in more than one TCP segment on a socket with Nagle on waits for the
//! client's delayed ACK: 40 ms on Linux. A 100-item `GetRateLimits` answer is such an answer, so
//! before `limits::nodelay` every batched call took ~44 ms instead of ~1 ms. Each test here makes
//! 21 sequential calls of 32 items on loopback and asserts that the lower quartile of the calls
//! is well below 40 ms: a stall delays every call by 40 ms, while a passing run takes a few
//! milliseconds in a debug build, and the quartile ignores the calls a busy CI machine slows.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Cluster, start_node, token};
use ringlimit::http::json;
use ringlimit::proto::{self, v1_client::V1Client};
use ringlimit::tls::TlsMinVersion;
use ringlimit::tls::connector::{ClientTlsOptions, TlsConnector, client_config};
use tonic::transport::Endpoint;

/// Sequential calls per surface.
const CALLS: usize = 21;
/// Items per call: enough that the answer is written in more than one piece (8 were enough to
/// stall), few enough that a debug build on a busy machine answers in a few milliseconds.
const ITEMS: usize = 32;
/// The lower quartile of the calls must stay under this; a Nagle stall makes *every* call take at
/// least 40 ms, while a busy machine only slows some of them.
const QUARTILE_BOUND: Duration = Duration::from_millis(30);

/// The tests of this file run one at a time, so they do not slow each other down.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn request(prefix: &str, call: usize) -> proto::GetRateLimitsReq {
    proto::GetRateLimitsReq {
        requests: (0..ITEMS)
            .map(|item| token(&format!("{prefix}-{call}-{item}"), 1, 1000, 60_000))
            .collect(),
    }
}

/// Runs `call` `CALLS` times one after the other and asserts the lower quartile of the durations.
async fn assert_no_stall<F, Fut>(surface: &str, mut call: F)
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let _alone = ONE_AT_A_TIME.lock().await;
    // One call first, so connection setup is not measured.
    call(CALLS).await;
    let mut durations = Vec::with_capacity(CALLS);
    for index in 0..CALLS {
        let started = Instant::now();
        call(index).await;
        durations.push(started.elapsed());
    }
    durations.sort();
    let quartile = durations[CALLS / 4];
    assert!(
        quartile < QUARTILE_BOUND,
        "{surface}: the lower quartile of {CALLS} sequential {ITEMS}-item calls is {quartile:?} (a \
         Nagle stall is >= 40 ms); all: {durations:?}"
    );
}

async fn grpc_calls(surface: &str, client: V1Client<tonic::transport::Channel>, prefix: &str) {
    assert_no_stall(surface, |index| {
        let mut client = client.clone();
        let request = request(prefix, index);
        async move {
            let answer = client
                .get_rate_limits(request)
                .await
                .expect("call succeeds")
                .into_inner();
            assert_eq!(answer.responses.len(), ITEMS);
            assert!(answer.responses.iter().all(|item| item.error.is_empty()));
        }
    })
    .await;
}

async fn http_calls(surface: &str, client: reqwest::Client, url: String, prefix: &str) {
    assert_no_stall(surface, |index| {
        let client = client.clone();
        let url = url.clone();
        let body = json::encode_get_rate_limits_req(&request(prefix, index));
        async move {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("HTTP call is sent");
            assert_eq!(response.status(), 200);
            let body = response.bytes().await.expect("body");
            let answer = json::decode_get_rate_limits_resp(&body).expect("valid JSON");
            assert_eq!(answer.responses.len(), ITEMS);
        }
    })
    .await;
}

#[tokio::test]
async fn grpc_plaintext_answers_large_calls_without_a_stall() {
    let node = start_node(&[]).await;
    let client = common::grpc_client(&node).await;
    grpc_calls("gRPC plaintext", client, "grpc").await;
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn http_gateway_answers_large_calls_without_a_stall() {
    let node = start_node(&[]).await;
    let url = common::http_url(&node, "/v1/GetRateLimits");
    http_calls("HTTP gateway", reqwest::Client::new(), url, "http").await;
    node.shutdown().await.expect("clean shutdown");
}

/// A TLS client that accepts the node's self-signed `GUBER_TLS_AUTO` certificate.
fn insecure_tls(alpn: &[u8]) -> rustls::ClientConfig {
    client_config(ClientTlsOptions {
        roots: None,
        identity: None,
        insecure_skip_verify: true,
        min_version: TlsMinVersion::Tls12,
        alpn: vec![alpn.to_vec()],
    })
    .expect("client configuration")
}

#[tokio::test]
async fn tls_ports_answer_large_calls_without_a_stall() {
    let node = start_node(&["--tls-auto"]).await;
    let channel = Endpoint::from_shared(format!("http://{}", node.grpc_address()))
        .expect("endpoint")
        .connect_with_connector(TlsConnector::fixed(insecure_tls(b"h2"), None))
        .await
        .expect("TLS connects");
    grpc_calls("gRPC over TLS", V1Client::new(channel), "grpc-tls").await;

    let https = reqwest::Client::builder()
        .use_preconfigured_tls(insecure_tls(b"http/1.1"))
        .build()
        .expect("HTTPS client");
    let url = format!(
        "https://127.0.0.1:{}/v1/GetRateLimits",
        node.http_address().port()
    );
    http_calls("HTTP gateway over TLS", https, url, "http-tls").await;
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn forwarded_batches_are_answered_without_a_stall() {
    let cluster = Cluster::start(2, &[]).await;
    // Every item is owned by node 1 and sent to node 0, so each call is one forwarded batch of
    // 100 items (and its 100-item answer) between the nodes.
    let keys = cluster.keys_owned_by(1, "forward", CALLS * ITEMS + ITEMS);
    let client = V1Client::new(common::channel(cluster.address(0)).await);
    assert_no_stall("forwarded to the owner", |index| {
        let requests = keys[index * ITEMS..(index + 1) * ITEMS]
            .iter()
            .map(|key| token(key, 1, 1000, 60_000))
            .collect();
        let mut client = client.clone();
        async move {
            let answer = client
                .get_rate_limits(proto::GetRateLimitsReq { requests })
                .await
                .expect("call succeeds")
                .into_inner();
            assert_eq!(answer.responses.len(), ITEMS);
            for item in &answer.responses {
                assert!(item.error.is_empty(), "item error: {}", item.error);
                assert!(item.metadata.contains_key("owner"), "answered by the owner");
            }
        }
    })
    .await;
    cluster.shutdown().await;
}

/// An upstream that answers every request with a 64 KiB body.
async fn start_large_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let app = axum::Router::new().fallback(|| async { vec![b'x'; 64 * 1024] });
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

#[tokio::test]
async fn proxy_answers_large_responses_without_a_stall() {
    use ringlimit::proxy::{self, Decider, FailureMode, ProxyConfig, Rules, TrustedProxies};
    use ringlimit::refill::{RefillRate, TokenBucket};

    let upstream = start_large_upstream().await;
    let node = start_node(&[]).await;
    let bucket =
        TokenBucket::new(RefillRate::per_second(10_000.0).expect("rate"), 10_000).expect("bucket");
    let config = ProxyConfig {
        bind_addr: "127.0.0.1:0".into(),
        upstream: format!("http://{upstream}").parse().expect("upstream URL"),
        rules: Rules::only_default(bucket),
        key_header: http::HeaderName::from_static("x-api-key"),
        trusted_proxies: "".parse::<TrustedProxies>().expect("no trusted proxies"),
        failure_mode: FailureMode::Closed,
        upstream_timeout: Duration::from_secs(5),
        max_key_bytes: 1024,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        max_connections: 10_000,
    };
    let decider =
        Decider::remote(&node.grpc_address().to_string(), Duration::from_secs(2)).expect("decider");
    let proxy = proxy::start(config, decider).await.expect("proxy starts");
    let client = reqwest::Client::new();
    let url = format!("http://{}/large", proxy.address());
    assert_no_stall("proxy", |_| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client.get(&url).send().await.expect("request is sent");
            assert_eq!(response.status(), 200);
            assert_eq!(response.bytes().await.expect("body").len(), 64 * 1024);
        }
    })
    .await;
    proxy.shutdown().await.expect("proxy stops");
    node.shutdown().await.expect("clean shutdown");
}
