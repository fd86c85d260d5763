//! The Rust library against real servers: the `Client` (consume until refused, typed errors), the
//! `RateLimitLayer` in an axum app (429 with Retry-After after the limit, keys isolated, requests
//! without a key unlimited, fail-open and fail-closed) and in a tonic server (RESOURCE_EXHAUSTED),
//! and an `EmbeddedNode` that answers in process and over gRPC and then shuts down.

use crate::common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use common::start_node;
use http::Request;
use ringlimit::EmbeddedNode;
use ringlimit::client::{Client, ClientError};
use ringlimit::middleware::{FailurePolicy, HeaderKey, RateLimitLayer};
use ringlimit::proto;

const MINUTE: Duration = Duration::from_secs(60);

/// Serves `app` on a free loopback port and returns its base URL.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

async fn get_status(url: &str, api_key: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(key) = api_key {
        request = request.header("x-api-key", key);
    }
    request.send().await.expect("request is sent")
}

#[tokio::test]
async fn the_client_consumes_until_over_the_limit() {
    let server = start_node(&[]).await;
    let mut client = Client::connect(&server.grpc_address().to_string())
        .await
        .unwrap();
    for expected_remaining in [2, 1, 0] {
        let decision = client.consume("lib", "user:1", 3, MINUTE).await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.limit, 3);
        assert_eq!(decision.remaining, expected_remaining);
        assert_eq!(decision.retry_after, Duration::ZERO);
    }
    let refused = client.consume("lib", "user:1", 3, MINUTE).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::ZERO && refused.retry_after <= MINUTE);
    assert!((1..=60).contains(&refused.retry_after_secs()));
    // Another key is untouched.
    assert!(
        client
            .consume("lib", "user:2", 3, MINUTE)
            .await
            .unwrap()
            .allowed
    );

    // The full call, and typed errors.
    let answers = client
        .get_rate_limits(vec![
            ringlimit::client::consume_request("lib", "user:3", 0, 3, MINUTE).unwrap(),
            proto::RateLimitReq::default(),
        ])
        .await
        .unwrap();
    assert_eq!(answers[0].remaining, 3);
    assert!(!answers[1].error.is_empty());
    assert!(matches!(
        client.consume("", "user:1", 3, MINUTE).await,
        Err(ClientError::Item(_))
    ));
    server.shutdown().await.unwrap();

    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = unused.local_addr().unwrap().to_string();
    drop(unused);
    assert!(matches!(
        Client::connect(&closed).await,
        Err(ClientError::Connect { .. })
    ));
}

#[tokio::test]
async fn the_middleware_limits_an_axum_app_per_key() {
    let server = start_node(&[]).await;
    let client = Client::connect(&server.grpc_address().to_string())
        .await
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(RateLimitLayer::new(
            client,
            "axum_test",
            2,
            MINUTE,
            HeaderKey::from_static("x-api-key"),
        ));
    let url = serve(app).await;

    for remaining in ["1", "0"] {
        let response = get_status(&url, Some("alice")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["ratelimit-limit"], "2");
        assert_eq!(response.headers()["ratelimit-remaining"], remaining);
        assert_eq!(response.text().await.unwrap(), "hello");
    }
    let refused = get_status(&url, Some("alice")).await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(refused.headers()["content-type"], "application/json");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": "rate_limited", "retry_after": retry_after})
    );

    // Another key has its own limit; requests without a key are not limited.
    assert_eq!(get_status(&url, Some("bob")).await.status(), 200);
    for _ in 0..5 {
        assert_eq!(get_status(&url, None).await.status(), 200);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_function_and_an_embedded_backend() {
    let node = EmbeddedNode::builder().start().await.unwrap();
    let by_user = |request: &Request<Body>| {
        request
            .uri()
            .path()
            .strip_prefix("/users/")
            .map(str::to_string)
    };
    let app = Router::new()
        .route("/users/{id}", get(|| async { "profile" }))
        .layer(RateLimitLayer::new(&node, "profiles", 1, MINUTE, by_user));
    let url = serve(app).await;
    assert_eq!(
        get_status(&format!("{url}/users/1"), None).await.status(),
        200
    );
    assert_eq!(
        get_status(&format!("{url}/users/1"), None).await.status(),
        429
    );
    assert_eq!(
        get_status(&format!("{url}/users/2"), None).await.status(),
        200
    );
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_cluster_fails_open_or_closed_as_configured() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = unused.local_addr().unwrap().to_string();
    drop(unused);
    let app = |policy| {
        Router::new().route("/", get(|| async { "ok" })).layer(
            RateLimitLayer::new(
                Client::connect_lazy(&closed).unwrap(),
                "down",
                1,
                MINUTE,
                HeaderKey::from_static("x-api-key"),
            )
            .failure_policy(policy),
        )
    };
    let open = serve(app(FailurePolicy::Open)).await;
    let closed_app = serve(app(FailurePolicy::Closed)).await;
    for _ in 0..2 {
        assert_eq!(get_status(&open, Some("k")).await.status(), 200);
        let refused = get_status(&closed_app, Some("k")).await;
        assert_eq!(refused.status(), 503);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "rate_limiter_unavailable");
    }
}

#[tokio::test]
async fn the_middleware_answers_grpc_with_resource_exhausted() {
    let node = EmbeddedNode::builder().start().await.unwrap();
    // A tonic server (ringlimit's own V1 service, for convenience) behind the layer, keyed by the
    // `x-api-key` metadata entry.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service =
        proto::v1_server::V1Server::new(ringlimit::grpc::V1Service::new(node.node().clone()));
    let layer = RateLimitLayer::new(
        &node,
        "grpc_test",
        2,
        MINUTE,
        HeaderKey::from_static("x-api-key"),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = proto::v1_client::V1Client::new(common::channel(address).await);
    let call = |key: &'static str| {
        let mut request = tonic::Request::new(proto::HealthCheckReq {});
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
        request
    };
    assert!(client.health_check(call("svc")).await.is_ok());
    assert!(client.health_check(call("svc")).await.is_ok());
    let refused = client.health_check(call("svc")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.metadata().get("retry-after").is_some());
    assert!(client.health_check(call("other")).await.is_ok());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_embedded_node_answers_and_shuts_down() {
    let node = EmbeddedNode::builder()
        .cache_size(1000)
        .start()
        .await
        .unwrap();
    assert!(node.consume("emb", "k", 2, MINUTE).await.unwrap().allowed);
    // Over gRPC, the same state: one hit left.
    let mut client = node.client().unwrap();
    let remote = client.consume("emb", "k", 2, MINUTE).await.unwrap();
    assert!(remote.allowed);
    assert_eq!(remote.remaining, 0);
    assert!(!node.consume("emb", "k", 2, MINUTE).await.unwrap().allowed);
    let health = reqwest::get(format!("http://{}/v1/HealthCheck", node.http_address()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let grpc_address = node.grpc_address().to_string();
    node.shutdown().await.unwrap();
    // Once shut down, nothing listens any more (bounded poll: the socket closes promptly).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Client::connect(&grpc_address).await {
            Err(ClientError::Connect { .. }) => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => panic!("the embedded node still accepts connections"),
        }
    }
}

#[tokio::test]
async fn an_invalid_embedded_setting_is_a_typed_error() {
    let result = EmbeddedNode::builder()
        .grpc_address("not-an-address")
        .start()
        .await;
    assert!(matches!(
        result,
        Err(ringlimit::embedded::EmbedError::Server(_))
    ));
}
