//! `RateLimitLayer` in an axum app: 3 requests a minute per `x-api-key`, cluster-wide.
//!
//! ```sh
//! cargo run --example axum_middleware                   # a node in this process; a short demo
//! cargo run --example axum_middleware -- 127.0.0.1:1051 # decisions by a running node
//! ```
//!
//! The app is served on a free loopback port; the example sends it a few requests and prints the
//! answers, then exits.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ringlimit::EmbeddedNode;
use ringlimit::client::Client;
use ringlimit::middleware::{Backend, FailurePolicy, HeaderKey, RateLimitLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut local = None;
    let backend: Backend = match std::env::args().nth(1) {
        Some(address) => Client::connect(&address).await?.into(),
        None => {
            let node = EmbeddedNode::builder().start().await?;
            let backend = Backend::from(&node);
            local = Some(node);
            backend
        }
    };
    let app = Router::new().route("/", get(|| async { "hello\n" })).layer(
        RateLimitLayer::new(
            backend,
            "example_api",
            3,
            Duration::from_secs(60),
            HeaderKey::from_static("x-api-key"),
        )
        .failure_policy(FailurePolicy::Closed),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("serving on {url}");

    let http = reqwest::Client::new();
    for (n, key) in ["alice", "alice", "alice", "alice", "bob"]
        .iter()
        .enumerate()
    {
        let response = http.get(&url).header("x-api-key", *key).send().await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .map(|value| format!(" (Retry-After: {value})"))
            .unwrap_or_default();
        let body = response.text().await?;
        println!(
            "request {} as {key}: {status}{retry_after} {}",
            n + 1,
            body.trim()
        );
    }
    if let Some(node) = local {
        node.shutdown().await?;
    }
    Ok(())
}
