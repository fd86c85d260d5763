//! `ringlimit proxy` end to end: a real upstream (an echo server on loopback), real nodes and
//! clusters, and proxies deciding through an embedded node or a remote one.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use common::{Cluster, start_node};
use http::HeaderName;
use ringlimit::proxy::{
    self, Decider, FailureMode, ProxyConfig, Rules, RunningProxy, TrustedProxies,
};
use ringlimit::refill::{RefillRate, TokenBucket};
use serde_json::{Value, json};

/// An upstream that answers every request with a JSON description of it, and counts them.
struct Echo {
    address: SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn echo(State(hits): State<Arc<AtomicUsize>>, request: Request) -> axum::Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                value.to_str().unwrap_or("<binary>").to_string(),
            )
        })
        .collect();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
        "body_prefix": String::from_utf8_lossy(&body[..body.len().min(64)]),
    }))
}

async fn start_echo() -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback(echo).with_state(Arc::clone(&hits));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Echo { address, hits }
}

/// A loopback address with nothing listening.
async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

struct Setup {
    rps: f64,
    burst: i64,
    trusted: &'static str,
    trust_forwarded: bool,
    failure_mode: FailureMode,
    rules: Option<&'static str>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            rps: 1.0,
            burst: 5,
            trusted: "",
            trust_forwarded: false,
            failure_mode: FailureMode::Closed,
            rules: None,
        }
    }
}

async fn start_proxy(upstream: SocketAddr, decider: Decider, setup: Setup) -> RunningProxy {
    let default =
        TokenBucket::new(RefillRate::per_second(setup.rps).unwrap(), setup.burst).unwrap();
    let rules = match setup.rules {
        Some(text) => Rules::parse(text, default).unwrap(),
        None => Rules::only_default(default),
    };
    let config = ProxyConfig {
        bind_addr: "127.0.0.1:0".into(),
        upstream: format!("http://{upstream}").parse().unwrap(),
        rules,
        key_header: HeaderName::from_static("x-api-key"),
        trusted_proxies: setup
            .trusted
            .parse::<TrustedProxies>()
            .unwrap()
            .trusting_forwarded(setup.trust_forwarded),
        failure_mode: setup.failure_mode,
        upstream_timeout: Duration::from_secs(5),
        max_key_bytes: 1024,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        max_connections: 10_000,
    };
    proxy::start(config, decider).await.expect("proxy starts")
}

fn remote(address: impl std::fmt::Display) -> Decider {
    Decider::remote(&address.to_string(), Duration::from_secs(2)).unwrap()
}

fn url(proxy: &RunningProxy, path: &str) -> String {
    format!("http://{}{}", proxy.address(), path)
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_string())
}

async fn get(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("request is sent")
}

#[tokio::test]
async fn allowed_requests_reach_the_upstream_unchanged() {
    let upstream = start_echo().await;
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        Setup::default(),
    )
    .await;
    let body = vec![b'x'; 3 * 1024 * 1024];
    let response = reqwest::Client::new()
        .put(url(&proxy, "/v1/items/42?a=1&b=two%20words"))
        .header("x-api-key", "client-1")
        .header("x-custom", "kept")
        .header("connection", "x-hop")
        .header("x-hop", "dropped")
        .header("x-forwarded-for", "6.6.6.6")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("5"));
    assert_eq!(
        header(&response, "ratelimit-remaining").as_deref(),
        Some("4")
    );
    assert_eq!(header(&response, "ratelimit-reset").as_deref(), Some("1"));
    assert_eq!(header(&response, "retry-after"), None);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["path"], "/v1/items/42");
    assert_eq!(seen["query"], "a=1&b=two%20words");
    assert_eq!(seen["body_len"], 3 * 1024 * 1024);
    assert_eq!(seen["headers"]["x-custom"], "kept");
    assert_eq!(seen["headers"]["x-api-key"], "client-1");
    assert_eq!(seen["headers"]["host"], upstream.address.to_string());
    assert_eq!(
        seen["headers"]["x-forwarded-host"],
        proxy.address().to_string()
    );
    // The peer is not a trusted proxy: its X-Forwarded-For is replaced, not extended.
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(seen["headers"].get("x-hop").is_none(), "{seen}");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn denied_requests_get_the_exact_429() {
    let upstream = start_echo().await;
    let node = start_node(&[]).await;
    let setup = Setup {
        rps: 0.5,
        burst: 2,
        ..Setup::default()
    };
    let proxy = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        setup,
    )
    .await;
    let client = reqwest::Client::new();
    let key = [("x-api-key", "denied-client")];
    for remaining in ["1", "0"] {
        let response = get(&client, &url(&proxy, "/"), &key).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some(remaining)
        );
    }
    let response = get(&client, &url(&proxy, "/"), &key).await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
    // One token every 2 s; the bucket of 2 is full again 4 s after it emptied.
    assert_eq!(header(&response, "retry-after").as_deref(), Some("2"));
    assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(
        header(&response, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(header(&response, "ratelimit-reset").as_deref(), Some("4"));
    assert_eq!(
        response.text().await.unwrap(),
        r#"{"error":"rate_limited","retry_after":2}"#
    );
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        2,
        "denied requests never reach the upstream"
    );
    // Another key has its own bucket.
    let other = get(&client, &url(&proxy, "/"), &[("x-api-key", "other")]).await;
    assert_eq!(other.status(), 200);
    let metrics = proxy.metrics().render();
    for line in [
        "ringlimit_proxy_requests_total{outcome=\"allowed\"} 3",
        "ringlimit_proxy_requests_total{outcome=\"denied\"} 1",
        "ringlimit_proxy_requests_total{outcome=\"invalid_key\"} 0",
        "ringlimit_proxy_decision_duration_seconds_count 4",
        "ringlimit_proxy_upstream_requests_total{result=\"answered\"} 3",
        "ringlimit_proxy_upstream_duration_seconds_count 3",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_proxies_in_front_of_one_cluster_share_one_limit() {
    let upstream = start_echo().await;
    let cluster = Cluster::start(3, &[]).await;
    let setup = || Setup {
        rps: 0.1,
        burst: 4,
        ..Setup::default()
    };
    // One proxy asks node 0 over gRPC; the other is a cluster member itself (node 2).
    let remote_proxy = start_proxy(upstream.address, remote(cluster.address(0)), setup()).await;
    let embedded_proxy = start_proxy(
        upstream.address,
        Decider::Embedded(cluster.nodes[2].node().clone()),
        setup(),
    )
    .await;
    let client = reqwest::Client::new();
    let mut allowed = 0;
    for i in 0..10 {
        let proxy = if i % 2 == 0 {
            &remote_proxy
        } else {
            &embedded_proxy
        };
        let response = get(
            &client,
            &url(proxy, "/shared"),
            &[("x-api-key", "shared-key")],
        )
        .await;
        match response.status().as_u16() {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(allowed, 4, "the burst is shared across both proxies");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 4);
    remote_proxy.shutdown().await.unwrap();
    embedded_proxy.shutdown().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test]
async fn forwarded_headers_are_believed_only_from_trusted_peers() {
    let upstream = start_echo().await;
    let client = reqwest::Client::new();
    let setup = |trusted| Setup {
        rps: 0.1,
        burst: 1,
        trusted,
        trust_forwarded: true,
        ..Setup::default()
    };

    // The test client (127.0.0.1) is a trusted proxy, believed to maintain both X-Forwarded-For
    // and Forwarded: each forwarded client has its own bucket. (tests/it/hostile_edges.rs covers
    // the default, where Forwarded is not believed.)
    let node = start_node(&[]).await;
    let trusting = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        setup("127.0.0.1/32"),
    )
    .await;
    let first = get(
        &client,
        &url(&trusting, "/"),
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await;
    assert_eq!(first.status(), 200);
    let repeat = get(
        &client,
        &url(&trusting, "/"),
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await;
    assert_eq!(repeat.status(), 429);
    let other = get(
        &client,
        &url(&trusting, "/"),
        &[("forwarded", "for=\"[2001:db8::2]:4711\"")],
    )
    .await;
    assert_eq!(other.status(), 200);
    let third = get(
        &client,
        &url(&trusting, "/"),
        &[("x-forwarded-for", "203.0.113.3")],
    )
    .await;
    assert_eq!(third.status(), 200);
    let seen: Value = third.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "203.0.113.3, 127.0.0.1");
    trusting.shutdown().await.unwrap();
    node.shutdown().await.unwrap();

    // Only 10.0.0.0/8 is trusted: the headers are ignored and every request is 127.0.0.1's.
    let node = start_node(&[]).await;
    let strict = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        setup("10.0.0.0/8"),
    )
    .await;
    let first = get(
        &client,
        &url(&strict, "/"),
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await;
    assert_eq!(first.status(), 200);
    let seen: Value = first.json().await.unwrap();
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    let spoofed = get(
        &client,
        &url(&strict, "/"),
        &[("x-forwarded-for", "203.0.113.2")],
    )
    .await;
    assert_eq!(
        spoofed.status(),
        429,
        "a spoofed X-Forwarded-For does not buy a new bucket"
    );
    strict.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_cluster_fails_open_or_closed_as_configured() {
    let upstream = start_echo().await;
    let nowhere = dead_address().await;
    let client = reqwest::Client::new();

    let open = start_proxy(
        upstream.address,
        remote(nowhere),
        Setup {
            failure_mode: FailureMode::Open,
            ..Setup::default()
        },
    )
    .await;
    let response = get(&client, &url(&open, "/through"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "ratelimit-limit"), None);
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["path"], "/through");
    assert!(
        open.metrics()
            .render()
            .contains("ringlimit_proxy_requests_total{outcome=\"cluster_error_open\"} 1")
    );
    open.shutdown().await.unwrap();

    let closed = start_proxy(
        upstream.address,
        remote(nowhere),
        Setup {
            failure_mode: FailureMode::Closed,
            ..Setup::default()
        },
    )
    .await;
    let response = get(&client, &url(&closed, "/blocked"), &[]).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limiter_unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("could not decide"),
        "{body}"
    );
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        1,
        "only the fail-open request went through"
    );
    assert!(
        closed
            .metrics()
            .render()
            .contains("ringlimit_proxy_requests_total{outcome=\"cluster_error_closed\"} 1")
    );
    closed.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_with_a_clear_body() {
    let nowhere = dead_address().await;
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        nowhere,
        Decider::Embedded(node.node().clone()),
        Setup::default(),
    )
    .await;
    let response = get(&reqwest::Client::new(), &url(&proxy, "/x"), &[]).await;
    assert_eq!(response.status(), 502);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&nowhere.to_string()), "{message}");
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn rules_give_routes_and_keys_their_own_limits() {
    let upstream = start_echo().await;
    let node = start_node(&[]).await;
    let rules = r#"
[[rule]]
name = "login"
path_prefix = "/login"
methods = ["POST"]
rate_limit_rps = 0.1
burst = 1

[[rule]]
name = "health"
path_prefix = "/healthz"
unlimited = true
"#;
    let proxy = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        Setup {
            rps: 0.1,
            burst: 2,
            rules: Some(rules),
            ..Setup::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let post = |path: &str| {
        client
            .post(url(&proxy, path))
            .header("x-api-key", "r")
            .send()
    };
    assert_eq!(post("/login").await.unwrap().status(), 200);
    let denied = post("/login/").await.unwrap();
    assert_eq!(denied.status(), 429);
    assert_eq!(header(&denied, "ratelimit-limit").as_deref(), Some("1"));
    // The default limit is separate and still full.
    for _ in 0..2 {
        assert_eq!(post("/orders").await.unwrap().status(), 200);
    }
    assert_eq!(post("/orders").await.unwrap().status(), 429);
    // Unlimited routes are never counted and carry no RateLimit headers.
    for _ in 0..5 {
        let response = get(&client, &url(&proxy, "/healthz"), &[("x-api-key", "r")]).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), None);
    }
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

/// The body of an upstream answer is streamed back unchanged (a large one, not buffered whole).
#[tokio::test]
async fn large_upstream_answers_stream_back() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let big = Bytes::from(vec![b'z'; 4 * 1024 * 1024]);
    let served = big.clone();
    let app = Router::new().fallback(move || {
        let served = served.clone();
        async move { served }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        address,
        Decider::Embedded(node.node().clone()),
        Setup::default(),
    )
    .await;
    let response = get(&reqwest::Client::new(), &url(&proxy, "/big"), &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap(), big);
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

/// `ringlimit proxy` shows its metrics on the embedded node's `/metrics` and, when
/// `GUBER_PROXY_METRICS_ADDRESS` is set, on a listener of its own (with `process_*`). The client
/// port never answers `/metrics` itself: that path belongs to the upstream.
#[tokio::test]
async fn the_proxy_binary_serves_its_metrics() {
    let upstream = start_echo().await;
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("a free loopback port")
    };
    let (port, node_http, metrics_port) = (free(), free(), free());
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .arg("proxy")
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("UPSTREAM_URL", format!("http://{}", upstream.address))
        .env("GUBER_GRPC_ADDRESS", "127.0.0.1:0")
        .env("GUBER_HTTP_ADDRESS", format!("127.0.0.1:{node_http}"))
        .env(
            "GUBER_PROXY_METRICS_ADDRESS",
            format!("127.0.0.1:{metrics_port}"),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let through = loop {
        match client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .header("x-api-key", "metrics")
            .send()
            .await
        {
            Ok(response) => break response,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the proxy never came up: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let seen: Value = through.json().await.expect("the upstream's echo");
    assert_eq!(seen["path"], "/metrics", "the upstream answered /metrics");
    for address in [
        format!("http://127.0.0.1:{node_http}/metrics"),
        format!("http://127.0.0.1:{metrics_port}/metrics"),
    ] {
        let text = client
            .get(&address)
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("ringlimit_proxy_requests_total{outcome=\"allowed\"} 1"),
            "{address}:\n{text}"
        );
        assert!(text.contains("process_cpu_seconds_total"), "{address}");
    }
}
