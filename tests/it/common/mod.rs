//! Shared helpers for the integration tests: start a real node on loopback port 0 and talk to it
//! over gRPC or HTTP JSON with the same calls.

#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringlimit::config::server_config_from_args;
use ringlimit::http::json;
use ringlimit::proto::{self, v1_client::V1Client};
use ringlimit::server::{self, RunningServer};
use tonic::transport::Channel;

/// Starts a node on 127.0.0.1 with ephemeral ports and `extra` flags.
pub async fn start_node(extra: &[&str]) -> RunningServer {
    let mut args = vec!["--grpc-address=127.0.0.1:0", "--http-address=127.0.0.1:0"];
    args.extend_from_slice(extra);
    let config = server_config_from_args(args).expect("valid test configuration");
    server::start(&config).await.expect("node starts")
}

/// A gRPC client of `server`.
pub async fn grpc_client(server: &RunningServer) -> V1Client<Channel> {
    V1Client::connect(format!("http://{}", server.grpc_address()))
        .await
        .expect("gRPC connects")
}

/// The base URL of `server`'s HTTP gateway.
pub fn http_url(server: &RunningServer, path: &str) -> String {
    format!("http://{}{}", server.http_address(), path)
}

/// The current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

/// The API surface a test drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `pb.gubernator.V1` over gRPC.
    Grpc,
    /// `POST /v1/GetRateLimits` over HTTP JSON.
    Http,
}

/// A client that sends `GetRateLimits` over one surface.
pub struct ApiClient {
    surface: Surface,
    grpc: V1Client<Channel>,
    http: reqwest::Client,
    url: String,
}

/// A failed call: the gRPC code (as i32) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    pub code: i32,
    pub message: String,
}

impl ApiClient {
    /// A client of `server` over `surface`.
    pub async fn new(server: &RunningServer, surface: Surface) -> Self {
        Self {
            surface,
            grpc: grpc_client(server).await,
            http: reqwest::Client::new(),
            url: http_url(server, "/v1/GetRateLimits"),
        }
    }

    /// Sends one call with `requests`.
    pub async fn get_rate_limits(
        &mut self,
        requests: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, CallFailure> {
        let request = proto::GetRateLimitsReq { requests };
        match self.surface {
            Surface::Grpc => self
                .grpc
                .get_rate_limits(request)
                .await
                .map(|response| response.into_inner().responses)
                .map_err(|status| CallFailure {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                }),
            Surface::Http => {
                let response = self
                    .http
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .body(json::encode_get_rate_limits_req(&request))
                    .send()
                    .await
                    .expect("HTTP request is sent");
                let ok = response.status().is_success();
                let body = response.bytes().await.expect("HTTP body is read");
                if ok {
                    Ok(json::decode_get_rate_limits_resp(&body)
                        .expect("valid response JSON")
                        .responses)
                } else {
                    let value: serde_json::Value =
                        serde_json::from_slice(&body).expect("error body is JSON");
                    Err(CallFailure {
                        code: value["code"].as_i64().expect("code") as i32,
                        message: value["message"].as_str().expect("message").to_string(),
                    })
                }
            }
        }
    }

    /// Sends one item and returns its answer.
    pub async fn one(&mut self, request: proto::RateLimitReq) -> proto::RateLimitResp {
        let mut responses = self
            .get_rate_limits(vec![request])
            .await
            .expect("call succeeds");
        assert_eq!(responses.len(), 1);
        responses.remove(0)
    }
}

/// A token-bucket item for `key` in namespace `test`.
pub fn token(key: &str, hits: i64, limit: i64, duration: i64) -> proto::RateLimitReq {
    proto::RateLimitReq {
        name: "test".into(),
        unique_key: key.into(),
        hits,
        limit,
        duration,
        ..Default::default()
    }
}

/// A leaky-bucket item for `key` in namespace `test`.
pub fn leaky(key: &str, hits: i64, limit: i64, duration: i64) -> proto::RateLimitReq {
    proto::RateLimitReq {
        algorithm: proto::Algorithm::LeakyBucket as i32,
        ..token(key, hits, limit, duration)
    }
}

/// `UNDER_LIMIT` / `OVER_LIMIT` as the wire's i32.
pub const UNDER: i32 = proto::Status::UnderLimit as i32;
/// `OVER_LIMIT` as the wire's i32.
pub const OVER: i32 = proto::Status::OverLimit as i32;

/// A gRPC channel to `address` (`host:port`), for clients generated without a `connect` helper.
pub async fn channel(address: impl std::fmt::Display) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("gRPC connects")
}

/// Nodes on loopback that know each other as peers (membership set directly, as a static list
/// would, without waiting for discovery).
pub struct Cluster {
    pub nodes: Vec<RunningServer>,
}

impl Cluster {
    /// Starts `size` nodes with `extra` flags and makes them one cluster.
    pub async fn start(size: usize, extra: &[&str]) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..size {
            nodes.push(start_node(extra).await);
        }
        let cluster = Self { nodes };
        cluster.set_membership(&(0..size).collect::<Vec<_>>());
        cluster
    }

    /// Sets every running node's peer list to the nodes at `indexes`.
    pub fn set_membership(&self, indexes: &[usize]) {
        let peers: Vec<ringlimit::peers::PeerInfo> = indexes
            .iter()
            .map(|&index| self.nodes[index].node().peers().me().clone())
            .collect();
        for node in &self.nodes {
            node.node().peers().replace(peers.clone());
        }
    }

    /// The gRPC address of node `index`.
    pub fn address(&self, index: usize) -> String {
        self.nodes[index].grpc_address().to_string()
    }

    /// The index of the node that owns `name`/`key`.
    pub fn owner_of(&self, name: &str, key: &str) -> usize {
        let membership = self.nodes[0].node().peers().membership();
        let owner = membership
            .ring
            .owner(&format!("{name}_{key}"))
            .expect("the ring has peers")
            .grpc_address
            .clone();
        (0..self.nodes.len())
            .find(|&index| self.address(index) == owner)
            .expect("the owner is a node of the cluster")
    }

    /// Shuts every node down.
    pub async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await.expect("clean shutdown");
        }
    }
}

/// The value of the counter `name` with labels `labels` (e.g. `peer="…"`) summed over every
/// matching line of a Prometheus text scrape.
pub fn metric_sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `i`-th of a series of well-mixed keys starting with `prefix`. Gubernator's FNV-1 ring
/// spreads keys that differ only in their last characters poorly (`key-1`, `key-2`, … cluster on
/// one peer), so tests that need keys on particular nodes draw from this series instead.
pub fn spread_key(prefix: &str, i: u64) -> String {
    // splitmix64
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{prefix}-{:016x}", z ^ (z >> 31))
}

impl Cluster {
    /// A key in namespace `test` owned by node `owner`.
    pub fn key_owned_by(&self, owner: usize, prefix: &str) -> String {
        self.keys_owned_by(owner, prefix, 1).remove(0)
    }

    /// `count` distinct keys in namespace `test` owned by node `owner`.
    pub fn keys_owned_by(&self, owner: usize, prefix: &str, count: usize) -> Vec<String> {
        let keys: Vec<String> = (0..1_000_000)
            .map(|i| spread_key(prefix, i))
            .filter(|key| self.owner_of("test", key) == owner)
            .take(count)
            .collect();
        assert_eq!(keys.len(), count, "not enough keys owned by node {owner}");
        keys
    }
}

/// A loopback listener that accepts connections and never writes a byte (a peer that hangs);
/// dropping it stops it.
pub struct BlackHole {
    /// Its `host:port`.
    pub address: String,
    task: tokio::task::JoinHandle<()>,
}

impl BlackHole {
    /// Starts listening on a free loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("address").to_string();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            // Bounded: a test opens a handful of connections at most.
            while held.len() < 64 {
                match listener.accept().await {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => break,
                }
            }
            std::future::pending::<()>().await;
        });
        Self { address, task }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often a bounded wait checks its condition.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `condition` every [`POLL`] until it holds or `limit` passes; returns whether it held.
/// Tests wait for what they need this way instead of sleeping for a fixed time and hoping.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`eventually`], and fails the test, naming `what`, when `condition` does not hold within
/// `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(
        eventually(limit, condition).await,
        "timed out after {limit:?} waiting for {what}"
    );
}
