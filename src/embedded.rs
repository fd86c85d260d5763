//! Running a cluster member inside your own process.
//!
//! An application can be a ringlimit node itself instead of calling a separate service: it
//! serves gRPC and HTTP like any node (so peers forward to it and it forwards to them), and it
//! decides its own requests in process, without a network round trip to itself. The builder starts
//! from the same settings as `ringlimit serve` (`GUBER_*` variables in the environment apply;
//! what the builder sets wins), listening on `127.0.0.1` with ephemeral ports unless told
//! otherwise.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringlimit::EmbeddedNode;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let node = EmbeddedNode::builder()
//!     .grpc_address("0.0.0.0:1051")
//!     .static_peers(["10.0.0.2:1051", "10.0.0.3:1051"])
//!     .start()
//!     .await?;
//! let decision = node
//!     .consume("logins", "user:42", 5, Duration::from_secs(60))
//!     .await?;
//! println!("allowed: {}", decision.allowed);
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{self, Client, ClientError, Decision};
use crate::clock::{Clock, SystemClock};
use crate::config::{DiscoveryType, ServerConfig, server_config_from_args};
use crate::error::CallError;
use crate::node::Node;
use crate::proto;
use crate::server::{self, RunningServer, ServerError};

/// Why an embedded node could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// A setting is invalid (the message names the variable).
    #[error("{0}")]
    Config(String),
    /// The node could not start serving.
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Builds an [`EmbeddedNode`].
pub struct EmbeddedNodeBuilder {
    config: Result<ServerConfig, String>,
    clock: Arc<dyn Clock>,
}

/// A ringlimit node running in this process. Stop it with [`EmbeddedNode::shutdown`]; dropping it
/// leaves it running until the runtime ends.
pub struct EmbeddedNode {
    server: RunningServer,
}

impl EmbeddedNode {
    /// A builder with the default settings, on `127.0.0.1` with ephemeral ports.
    pub fn builder() -> EmbeddedNodeBuilder {
        EmbeddedNodeBuilder {
            config: server_config_from_args([
                "--grpc-address=127.0.0.1:0",
                "--http-address=127.0.0.1:0",
            ]),
            clock: Arc::new(SystemClock),
        }
    }

    /// The bound gRPC address (peers and clients use it).
    pub fn grpc_address(&self) -> SocketAddr {
        self.server.grpc_address()
    }

    /// The bound HTTP address.
    pub fn http_address(&self) -> SocketAddr {
        self.server.http_address()
    }

    /// The node itself, for in-process calls.
    pub fn node(&self) -> &Arc<Node> {
        self.server.node()
    }

    /// A gRPC [`Client`] of this node (what other processes would use).
    pub fn client(&self) -> Result<Client, ClientError> {
        Client::connect_lazy(&self.grpc_address().to_string())
    }

    /// Answers `GetRateLimits` in process: keys this node owns are decided here, the others are
    /// forwarded to their owners.
    pub async fn get_rate_limits(
        &self,
        requests: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        self.node().get_rate_limits(requests).await
    }

    /// Spends one hit of a token bucket of `limit` hits per `duration`, in process.
    pub async fn consume(
        &self,
        name: &str,
        key: &str,
        limit: i64,
        duration: Duration,
    ) -> Result<Decision, ClientError> {
        let request = client::consume_request(name, key, 1, limit, duration)?;
        consume_in_process(self.node(), request).await
    }

    /// Shuts the node down gracefully (see [`RunningServer::shutdown`]).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.server.shutdown().await
    }
}

/// Spends what `request` asks through `node` directly (no gRPC).
pub(crate) async fn consume_in_process(
    node: &Node,
    request: proto::RateLimitReq,
) -> Result<Decision, ClientError> {
    let responses = node
        .get_rate_limits(vec![request])
        .await
        .map_err(|error| ClientError::Call(error.into()))?;
    client::decision_of_the_answer(responses)
}

impl EmbeddedNodeBuilder {
    /// Starts from `config` instead of the defaults.
    pub fn from_config(config: ServerConfig) -> Self {
        Self {
            config: Ok(config),
            clock: Arc::new(SystemClock),
        }
    }

    /// The gRPC listen address (`GUBER_GRPC_ADDRESS`).
    pub fn grpc_address(self, address: impl Into<String>) -> Self {
        let address = address.into();
        self.configure(|config| config.grpc_address = address)
    }

    /// The HTTP listen address (`GUBER_HTTP_ADDRESS`).
    pub fn http_address(self, address: impl Into<String>) -> Self {
        let address = address.into();
        self.configure(|config| config.http_address = address)
    }

    /// The address peers reach this node on (`GUBER_ADVERTISE_ADDRESS`).
    pub fn advertise_address(self, address: impl Into<String>) -> Self {
        let address = address.into();
        self.configure(|config| config.advertise_address = Some(address))
    }

    /// A fixed list of peers' gRPC addresses (static discovery; this node is always included).
    pub fn static_peers<I, S>(self, peers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let peers: Vec<String> = peers.into_iter().map(Into::into).collect();
        self.configure(|config| {
            config.peer_discovery_type = DiscoveryType::Static;
            config.peers = peers;
        })
    }

    /// The most limits held in memory (`GUBER_CACHE_SIZE`).
    pub fn cache_size(self, size: u64) -> Self {
        self.configure(|config| config.cache_size = size.max(1))
    }

    /// Changes any other setting.
    pub fn configure(mut self, change: impl FnOnce(&mut ServerConfig)) -> Self {
        if let Ok(config) = &mut self.config {
            change(config);
        }
        self
    }

    /// Uses `clock` instead of the system clock (for tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Binds the listeners and starts serving.
    pub async fn start(self) -> Result<EmbeddedNode, EmbedError> {
        let config = self.config.map_err(EmbedError::Config)?;
        let server = server::start_with_clock(&config, self.clock).await?;
        Ok(EmbeddedNode { server })
    }
}
