//! Issue 12 "Trust", the edges: what a hostile client of the HTTP port or of `ringlimit proxy` can
//! do with its own input. Each test reproduces an attack that worked before the fix: an over-long
//! API key forwarded uncounted (by the proxy, the proxy binary, and the library's middleware),
//! admin views open on every interface, raw keys in admin answers, rules dodged with `//login` or
//! `/%6Cogin`, a spoofed `Forwarded` buying fresh buckets, a slowloris client holding a proxy
//! connection, and unbounded proxy connections. Everything is reached over loopback with bounded
//! loops; one node binds `0.0.0.0:0` for a moment, because that is the case under test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{ApiClient, OVER, Surface, start_node, token};
use axum::Router;
use axum::extract::{Request, State};
use http::HeaderName;
use ringlimit::config::server_config_from_args;
use ringlimit::proxy::{
    self, Decider, FailureMode, ProxyConfig, Rules, RunningProxy, TrustedProxies,
};
use ringlimit::refill::{RefillRate, TokenBucket};
use ringlimit::server::{self, RunningServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// Helpers: an upstream that counts and echoes the path, a proxy, a raw HTTP/1.1 client.

struct Echo {
    address: SocketAddr,
    hits: Arc<AtomicUsize>,
}

async fn echo(State(hits): State<Arc<AtomicUsize>>, request: Request) -> axum::Json<Value> {
    hits.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "path": request.uri().path() }))
}

async fn start_echo() -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback(echo).with_state(Arc::clone(&hits));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Echo { address, hits }
}

struct Setup {
    rps: f64,
    burst: i64,
    trusted: &'static str,
    trust_forwarded: bool,
    failure_mode: FailureMode,
    rules: Option<&'static str>,
    header_timeout: Duration,
    body_timeout: Duration,
    max_connections: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            rps: 1.0,
            burst: 2,
            trusted: "",
            trust_forwarded: false,
            failure_mode: FailureMode::Open,
            rules: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: 10_000,
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
        header_timeout: setup.header_timeout,
        body_timeout: setup.body_timeout,
        max_connections: setup.max_connections,
    };
    proxy::start(config, decider).await.expect("proxy starts")
}

/// Sends `head` (a request line and headers, without the final blank line) on a new connection
/// and returns the status code and the body.
async fn raw_request(address: SocketAddr, head: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the proxy answers")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// The proxy never fails open because of the client's own input.

/// Before the fix: the 2000-byte key failed validation (GUBER_MAX_KEY_LENGTH = 1024), the item
/// error counted as "cluster unreachable", and `open` forwarded all 10 requests uncounted.
#[tokio::test]
async fn an_overlong_api_key_is_refused_not_forwarded_uncounted() {
    let upstream = start_echo().await;
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        Setup::default(),
    )
    .await;
    let client = reqwest::Client::new();
    let long_key = "k".repeat(2000);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = client
            .get(format!("http://{}/", proxy.address()))
            .header("x-api-key", &long_key)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let forwarded = upstream.hits.load(Ordering::SeqCst);
    assert!(
        forwarded <= 2,
        "{forwarded} of 10 requests with a 2000-byte key reached the upstream: {statuses:?}"
    );
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");

    // The same through a remote node: the proxy checks the key itself.
    let remote = start_proxy(
        upstream.address,
        Decider::remote(&node.grpc_address().to_string(), Duration::from_secs(2)).unwrap(),
        Setup::default(),
    )
    .await;
    let response = client
        .get(format!("http://{}/", remote.address()))
        .header("x-api-key", &long_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_api_key", "{body}");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), forwarded);
    remote.shutdown().await.unwrap();
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

/// The reported attack, through the binary: `ringlimit proxy` with `RATE_LIMIT_RPS=1 BURST=2` and
/// the default `open` policy admits at most the burst of requests with a 2000-byte `X-API-Key`
/// (before the fix: 10 of 10, uncounted).
#[tokio::test]
async fn the_proxy_binary_admits_at_most_the_burst_with_an_overlong_key() {
    let upstream = start_echo().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .arg("proxy")
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("UPSTREAM_URL", format!("http://{}", upstream.address))
        .env("RATE_LIMIT_RPS", "1")
        .env("BURST", "2")
        .env("GUBER_GRPC_ADDRESS", "127.0.0.1:0")
        .env("GUBER_HTTP_ADDRESS", "127.0.0.1:0")
        .env_remove("GUBER_PROXY_ON_CLUSTER_ERROR")
        .env_remove("GUBER_MAX_KEY_LENGTH")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .head(&url)
        .header("x-api-key", "probe")
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the proxy never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = upstream.hits.load(Ordering::SeqCst);
    let long_key = "k".repeat(2000);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = client
            .get(&url)
            .header("x-api-key", &long_key)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let admitted = upstream.hits.load(Ordering::SeqCst) - before;
    assert!(admitted <= 2, "{admitted} of 10 admitted: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// The library's `RateLimitLayer` is an edge too: a 2000-byte key header made the item fail
/// validation, the error was taken for an unreachable cluster, and `FailurePolicy::Open` let
/// every request through. Now it is refused (400), whatever the policy.
#[tokio::test]
async fn the_middleware_never_fails_open_on_an_invalid_key() {
    use ringlimit::EmbeddedNode;
    use ringlimit::middleware::{FailurePolicy, HeaderKey, RateLimitLayer};
    let node = EmbeddedNode::builder().start().await.unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let app = Router::new()
        .route(
            "/",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        )
        .layer(
            RateLimitLayer::new(
                &node,
                "mw",
                2,
                Duration::from_secs(60),
                HeaderKey::from_static("x-api-key"),
            )
            .failure_policy(FailurePolicy::Open),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let long_key = "k".repeat(2000);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = client
            .get(format!("http://{address}/"))
            .header("x-api-key", &long_key)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let admitted = served.load(Ordering::SeqCst);
    assert!(admitted <= 2, "{admitted} of 10 admitted: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 400), "{statuses:?}");
    node.shutdown().await.unwrap();
}

const LOGIN_RULES: &str = r#"
[[rule]]
name = "login"
path_prefix = "/login"
rate_limit_rps = 0.01
burst = 1
"#;

/// Before the fix: every spelling below fell to the default rule (burst 100) and was admitted.
#[tokio::test]
async fn spellings_of_a_path_all_hit_its_rule() {
    let upstream = start_echo().await;
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        Setup {
            rps: 100.0,
            burst: 100,
            rules: Some(LOGIN_RULES),
            ..Setup::default()
        },
    )
    .await;
    let (status, _) = raw_request(proxy.address(), "GET /login HTTP/1.1\r\nHost: t").await;
    assert_eq!(status, 200);
    for path in [
        "//login",
        "/%6Cogin",
        "/%6cogin",
        "/a/../login",
        "/login/.",
        "/./login",
        "///login//x",
        "/%2E%2E/login",
    ] {
        let (status, body) =
            raw_request(proxy.address(), &format!("GET {path} HTTP/1.1\r\nHost: t")).await;
        assert_eq!(status, 429, "{path} dodged the /login rule: {body}");
    }
    // Other paths keep the default limit, and the upstream sees the path as sent.
    let (status, body) = raw_request(proxy.address(), "GET //x/./y HTTP/1.1\r\nHost: t").await;
    assert_eq!(status, 200);
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["path"], "//x/./y");
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

/// Before the fix: with the test client as a trusted proxy, a `Forwarded: for=` chosen per
/// request bought a fresh bucket each time, so all 10 were admitted.
#[tokio::test]
async fn a_spoofed_forwarded_header_is_ignored_unless_the_operator_trusts_it() {
    let upstream = start_echo().await;
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        Setup {
            rps: 0.01,
            trusted: "127.0.0.1",
            ..Setup::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let mut admitted = 0;
    for i in 0..10 {
        let response = client
            .get(format!("http://{}/", proxy.address()))
            .header("forwarded", format!("for=203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 2, "a spoofed Forwarded header bought new buckets");
    proxy.shutdown().await.unwrap();

    // The operator says its proxy maintains Forwarded: then it is read.
    let trusting = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        Setup {
            rps: 0.01,
            burst: 1,
            trusted: "127.0.0.1",
            trust_forwarded: true,
            ..Setup::default()
        },
    )
    .await;
    for i in 0..3 {
        let response = client
            .get(format!("http://{}/", trusting.address()))
            .header("forwarded", format!("for=198.51.100.{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "each forwarded client has a bucket");
    }
    trusting.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

/// Before the fix (`axum::serve`): a client trickling its headers kept the connection forever.
#[tokio::test]
async fn a_slowloris_client_is_cut_off_by_the_header_timeout() {
    let upstream = start_echo().await;
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        Setup {
            header_timeout: Duration::from_secs(1),
            ..Setup::default()
        },
    )
    .await;
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    // One header byte every 200 ms, for at most 6 s.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buffer = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => {
                // hyper may answer 408 before closing; the close follows.
            }
            Err(_) => {}
        }
    }
    assert!(closed, "the slow client was still connected after 6 s");
    assert!(started.elapsed() < Duration::from_secs(5));
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

/// A client that trickles its body is answered 408 once the body timeout passes, even while the
/// upstream waits for the rest of it.
#[tokio::test]
async fn a_slow_body_is_cut_off_with_408() {
    // An upstream that reads the whole body before answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let app = Router::new().fallback(|request: Request| async move {
        let body = axum::body::to_bytes(request.into_body(), usize::MAX).await;
        format!("{}", body.map(|bytes| bytes.len()).unwrap_or_default())
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        upstream,
        Decider::Embedded(node.node().clone()),
        Setup {
            body_timeout: Duration::from_secs(1),
            ..Setup::default()
        },
    )
    .await;
    let mut stream = TcpStream::connect(proxy.address()).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer within 8 s");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

/// Connections beyond the proxy's cap are closed at once.
#[tokio::test]
async fn proxy_connections_beyond_the_cap_are_closed() {
    let upstream = start_echo().await;
    let node = start_node(&[]).await;
    let proxy = start_proxy(
        upstream.address,
        Decider::Embedded(node.node().clone()),
        Setup {
            max_connections: 2,
            ..Setup::default()
        },
    )
    .await;
    let _first = TcpStream::connect(proxy.address()).await.unwrap();
    let _second = TcpStream::connect(proxy.address()).await.unwrap();
    let mut third = TcpStream::connect(proxy.address()).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the third connection was served: {read:?} {}",
        String::from_utf8_lossy(&buffer)
    );
    proxy.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Admin views are not open to the world.

async fn start_node_on(http_address: &str, extra: &[&str]) -> RunningServer {
    let http_flag = format!("--http-address={http_address}");
    let mut args = vec!["--grpc-address=127.0.0.1:0", http_flag.as_str()];
    args.extend_from_slice(extra);
    let config = server_config_from_args(args).expect("valid test configuration");
    server::start(&config).await.expect("node starts")
}

/// `GET path` on the node's HTTP port, always over 127.0.0.1.
async fn admin_get(server: &RunningServer, path: &str, bearer: Option<&str>) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{}{path}", server.http_address().port());
    let mut request = reqwest::Client::new().get(url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

const ADMIN_PATHS: [&str; 4] = [
    "/admin/stats",
    "/admin/top_offenders",
    "/admin/keys/test/k",
    "/admin/peers",
];

/// Before the fix: every view answered 200 to anyone when bound to 0.0.0.0 without a token.
/// (The node listens on 0.0.0.0 for this test; it is only ever reached over 127.0.0.1.)
#[tokio::test]
async fn admin_views_on_every_interface_need_a_token() {
    let open = start_node_on("0.0.0.0:0", &[]).await;
    for path in ADMIN_PATHS {
        let (status, body) = admin_get(&open, path, None).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"], "admin_token_required", "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("GUBER_ADMIN_TOKEN")),
            "{path}: {body}"
        );
    }
    open.shutdown().await.unwrap();

    let locked = start_node_on("0.0.0.0:0", &["--admin-token=s3cret"]).await;
    for path in ADMIN_PATHS {
        assert_eq!(admin_get(&locked, path, None).await.0, 401, "{path}");
        assert_eq!(
            admin_get(&locked, path, Some("s3cret")).await.0,
            200,
            "{path}"
        );
    }
    locked.shutdown().await.unwrap();

    let loopback = start_node_on("127.0.0.1:0", &[]).await;
    for path in ADMIN_PATHS {
        assert_eq!(admin_get(&loopback, path, None).await.0, 200, "{path}");
    }
    loopback.shutdown().await.unwrap();
}

/// Before the fix: offender lists and peeks showed raw unique keys (behind the proxy, API keys).
#[tokio::test]
async fn admin_views_show_hashed_keys_unless_told_otherwise() {
    let secret = "sk_live_very_secret";
    let hashed = start_node_on("127.0.0.1:0", &[]).await;
    let mut client = ApiClient::new(&hashed, Surface::Grpc).await;
    for _ in 0..3 {
        client.one(token(secret, 1, 1, 60_000)).await;
    }
    assert_eq!(client.one(token(secret, 1, 1, 60_000)).await.status, OVER);
    let (status, stats) = admin_get(&hashed, "/admin/stats", None).await;
    assert_eq!(status, 200);
    let shown = stats["top_limited"][0]["unique_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(shown.starts_with("h:") && shown.len() == 18, "{stats}");
    assert!(!stats.to_string().contains(secret), "{stats}");
    let (_, offenders) = admin_get(&hashed, "/admin/top_offenders", None).await;
    assert_eq!(offenders["offenders"][0]["unique_key"], shown.as_str());
    assert!(!offenders.to_string().contains(secret), "{offenders}");
    // A peek by the raw key still works, and answers with the hash too.
    let (status, peek) = admin_get(&hashed, &format!("/admin/keys/test/{secret}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(peek["found"], true);
    assert_eq!(peek["unique_key"], shown.as_str());
    assert!(!peek.to_string().contains(secret), "{peek}");
    hashed.shutdown().await.unwrap();

    let raw = start_node_on("127.0.0.1:0", &["--admin-show-keys=true"]).await;
    let mut client = ApiClient::new(&raw, Surface::Grpc).await;
    for _ in 0..3 {
        client.one(token(secret, 1, 1, 60_000)).await;
    }
    let (_, stats) = admin_get(&raw, "/admin/stats", None).await;
    assert_eq!(stats["top_limited"][0]["unique_key"], secret, "{stats}");
    let (_, peek) = admin_get(&raw, &format!("/admin/keys/test/{secret}"), None).await;
    assert_eq!(peek["unique_key"], secret);
    raw.shutdown().await.unwrap();
}
