//! One ringlimit node: the wiring of an `Evaluator` and a `Router`.
//!
//! The node owns nothing the request path needs: it builds the evaluator (this node's store and
//! decisions) and the router (the cluster: membership, forwarding, owner-failure, handoff) and
//! hands them to the surfaces (gRPC, HTTP, `/allow`, admin) and to the background tasks (GLOBAL
//! sync, owner-failure reconciliation, handoff), which keep those handles, never the node. What
//! is left here is what belongs to the node as a whole: its health (membership, recent peer
//! failures, shutting down) and the metrics scrape.

use std::sync::Arc;
use std::time::Duration;

use crate::admin::{AdminOptions, AdminState};
use crate::clock::Clock;
use crate::error::CallError;
use crate::evaluator::{Evaluator, EvaluatorOptions};
use crate::global::GlobalOptions;
use crate::handoff::HandoffState;
use crate::metrics::Metrics;
use crate::owner_failure::OwnerFailureOptions;
use crate::peers::PeerList;
use crate::peers::client::{PeerClientOptions, PeerClients};
use crate::peers::discovery::health::{Backend, BackendStatus};
use crate::proto;
use crate::request::{InputLimits, Item, LimitKey};
use crate::router::{Router, RouterOptions};
use crate::store::LimitStore;

/// Everything a node needs to answer calls: the evaluator, the router, and the node's health.
pub struct Node {
    evaluator: Arc<Evaluator>,
    router: Arc<Router>,
}

/// What builds a [`Node`].
pub struct NodeOptions {
    /// The most buckets held in memory.
    pub cache_size: u64,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// This node's membership view.
    pub peers: PeerList,
    /// How calls to peers are made and batched.
    pub peer_clients: PeerClientOptions,
    /// How long a failed peer call keeps this node unhealthy.
    pub peer_failure_window: Duration,
    /// How GLOBAL limits are reconciled.
    pub global: GlobalOptions,
    /// The discovery backend membership depends on (etcd, DNS), for health and metrics; `None`
    /// for a fixed list.
    pub discovery: Option<BackendStatus>,
    /// `GUBER_SERVE_ALONE_HEALTHY`: a node serving alone without its backend is still healthy.
    pub serve_alone_healthy: bool,
    /// Where to record metrics.
    pub metrics: Metrics,
    /// Limits on item fields.
    pub limits: InputLimits,
    /// The admin views' settings.
    pub admin: AdminOptions,
    /// What to answer when an owner cannot be reached.
    pub owner_failure: OwnerFailureOptions,
}

impl Node {
    /// A node with an empty store.
    pub fn new(options: NodeOptions) -> Self {
        let force_global = options.global.force;
        let evaluator = Arc::new(Evaluator::new(EvaluatorOptions {
            cache_size: options.cache_size,
            clock: options.clock,
            metrics: options.metrics,
            limits: options.limits,
            admin: options.admin,
            global: options.global,
        }));
        let router = Arc::new(Router::new(
            Arc::clone(&evaluator),
            RouterOptions {
                peers: options.peers,
                peer_clients: options.peer_clients,
                peer_failure_window: options.peer_failure_window,
                owner_failure: options.owner_failure,
                force_global,
                discovery: options.discovery,
                serve_alone_healthy: options.serve_alone_healthy,
            },
        ));
        Self { evaluator, router }
    }

    /// The router: the cluster as this node sees it.
    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Answers a `GetRateLimits` call through the cluster (see `Router::get_rate_limits`).
    pub async fn get_rate_limits(
        &self,
        items: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        let items = items.into_iter().map(Item::from).collect();
        self.router.get_rate_limits(items).await
    }

    /// [`Node::get_rate_limits`] of items decoded by [`crate::wire_items`].
    pub async fn get_rate_limit_items(
        &self,
        items: Vec<Item>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        self.router.get_rate_limits(items).await
    }

    /// Answers a peer's `GetPeerRateLimits` call (see `Router::get_peer_rate_limits`), its items
    /// decoded by [`crate::wire_items`].
    pub async fn get_peer_rate_limits(
        &self,
        items: Vec<Item>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        self.router.get_peer_rate_limits(items).await
    }

    /// Answers `UpdatePeerGlobals` (see `Router::update_peer_globals`).
    pub fn update_peer_globals(&self, globals: Vec<proto::UpdatePeerGlobal>) {
        self.router.update_peer_globals(globals);
    }

    /// The gRPC address of the owner of `item`'s limit, or `None` when this node owns it.
    pub fn owner_address(&self, item: &proto::RateLimitReq) -> Option<String> {
        self.router
            .owner_of(&LimitKey::new(item.name.clone(), item.unique_key.clone()))
    }

    /// Answers `HealthCheck` (see `Router::health_check`).
    pub fn health_check(&self) -> Result<proto::HealthCheckResp, CallError> {
        self.router.health_check()
    }

    /// Why this node is serving alone without its discovery backend (see
    /// `Router::serving_alone`).
    pub fn serving_alone(&self) -> Option<String> {
        self.router.serving_alone()
    }

    /// Answers `LiveCheck`: fine until the node starts shutting down.
    pub fn live_check(&self) -> Result<(), CallError> {
        self.router.live_check()
    }

    /// Marks the node as shutting down: liveness and health fail from now on, calls still succeed.
    pub fn begin_shutdown(&self) {
        self.router.begin_shutdown();
    }

    /// Whether [`Node::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.router.is_shutting_down()
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        self.evaluator.metrics()
    }

    /// Renders the metrics for a scrape, with the gauges that are read rather than counted
    /// (cache size, peers, etcd registration) brought up to date.
    pub fn render_metrics(&self) -> String {
        self.evaluator.sync_gauges();
        let metrics = self.metrics();
        let health = self.router.peers().health();
        metrics
            .peers
            .with_label_values(&["local"])
            .set(health.local_peers.len() as i64);
        metrics
            .peers
            .with_label_values(&["region"])
            .set(health.region_peers.len() as i64);
        if let Some(status) = self
            .router
            .discovery()
            .filter(|status| status.backend == Backend::Etcd)
        {
            metrics
                .etcd_registered
                .set(i64::from(status.is_connected()));
        }
        metrics.render()
    }

    /// The node's store (read access for tools and tests).
    pub fn store(&self) -> &LimitStore {
        self.evaluator.store()
    }

    /// The node's membership view.
    pub fn peers(&self) -> &PeerList {
        self.router.peers()
    }

    /// The node's state handoff transition state.
    pub fn handoff(&self) -> &HandoffState {
        self.router.handoff()
    }

    /// The node's clock, in epoch milliseconds.
    pub fn clock_now_ms(&self) -> i64 {
        self.evaluator.clock().now_ms()
    }

    /// The node's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.evaluator.clock()
    }

    /// A lazily connected channel to another node through `endpoint` (see
    /// `Router::peer_channel`).
    pub fn peer_channel(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> crate::peer_auth::PeerChannel {
        self.router.peer_channel(endpoint)
    }

    /// The limits on item fields (`GUBER_MAX_KEY_LENGTH`), which also bound what peers send.
    pub fn limits(&self) -> InputLimits {
        self.evaluator.limits()
    }

    /// The node's admin counters, summaries and settings.
    pub fn admin(&self) -> &AdminState {
        self.evaluator.admin()
    }

    /// This node's clients of its peers.
    pub fn peer_clients(&self) -> &PeerClients {
        self.router.peer_clients()
    }
}
