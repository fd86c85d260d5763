//! One ringlimit node: the single code path behind both the gRPC API and the HTTP gateway.
//!
//! A call's items are validated and stamped with one timestamp; each valid item is then routed by
//! the consistent-hash ring: items this node owns are evaluated against the local store, the
//! others are forwarded (batched) to their owner, all concurrently, and the answers are assembled
//! in request order. Item problems (bad input, an unreachable owner) become per-item errors; only
//! call-level problems (too many items) fail the call. The node also answers health: its membership
//! view, recent peer failures, and whether it is shutting down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::algorithms::{Behavior, Decision, RateLimitRequest, Status};
use crate::batching::ForwardError;
use crate::clock::Clock;
use crate::error::{CallError, MAX_BATCH_SIZE};
use crate::metrics::Metrics;
use crate::peers::client::{PeerClientOptions, PeerClients};
use crate::peers::failures::PeerFailures;
use crate::peers::{Membership, PeerList};
use crate::proto;
use crate::request::{self, InputLimits, ItemError, LimitKey};
use crate::store::LimitStore;

/// The metadata key that names the owner in answers given by another node.
pub const OWNER_METADATA_KEY: &str = "owner";

/// Everything a node needs to answer calls.
pub struct Node {
    store: LimitStore,
    clock: Arc<dyn Clock>,
    peers: PeerList,
    clients: PeerClients,
    failures: PeerFailures,
    metrics: Metrics,
    limits: InputLimits,
    shutting_down: AtomicBool,
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
    /// Where to record metrics.
    pub metrics: Metrics,
    /// Limits on item fields.
    pub limits: InputLimits,
}

/// Where one item is evaluated.
enum Route {
    /// By this node.
    Local,
    /// By the peer at this gRPC address.
    Owner(String),
}

impl Node {
    /// A node with an empty store.
    pub fn new(options: NodeOptions) -> Self {
        let evictions = options.metrics.unexpired_evictions_count.clone();
        let store = LimitStore::with_eviction_listener(
            options.cache_size,
            Arc::clone(&options.clock),
            Arc::new(move || evictions.inc()),
        );
        Self {
            store,
            clock: options.clock,
            peers: options.peers,
            clients: PeerClients::new(options.peer_clients, options.metrics.clone()),
            failures: PeerFailures::new(options.peer_failure_window),
            metrics: options.metrics,
            limits: options.limits,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Answers a `GetRateLimits` call: one response per item, in order. Items owned by other peers
    /// are forwarded to them.
    pub async fn get_rate_limits(
        &self,
        items: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        check_size(&items)?;
        let _in_progress = InProgress::start(&self.metrics);
        let now_ms = self.clock.now_ms();
        let membership = self.peers.membership();
        self.forget_departed_peers(&membership);
        let mut responses = vec![proto::RateLimitResp::default(); items.len()];
        let mut forwarded = Vec::new();
        for (index, mut item) in items.into_iter().enumerate() {
            let request = match request::validate(&item, now_ms, self.limits) {
                Ok(request) => request,
                Err(error) => {
                    responses[index] = self.item_error(error);
                    continue;
                }
            };
            match self.route(&membership, &item) {
                Route::Local => responses[index] = self.evaluate_local(item, &request),
                Route::Owner(owner) => {
                    // The owner must see the same timestamp as every other item of this call.
                    item.created_at = Some(request.created_at);
                    let no_batching = request.behavior.contains(Behavior::NO_BATCHING);
                    forwarded.push(async move {
                        (index, self.forward(item, request, no_batching, owner).await)
                    });
                }
            }
        }
        for (index, response) in join_all(forwarded).await {
            responses[index] = response;
        }
        Ok(responses)
    }

    /// Answers a peer's `GetPeerRateLimits` call. The peer sent these items because its ring says
    /// this node owns them, so they are evaluated here and never forwarded again (even if this
    /// node's ring disagrees for a moment).
    pub async fn get_peer_rate_limits(
        &self,
        items: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        check_size(&items)?;
        let _in_progress = InProgress::start(&self.metrics);
        let now_ms = self.clock.now_ms();
        Ok(items
            .into_iter()
            .map(|item| match request::validate(&item, now_ms, self.limits) {
                Ok(request) => self.evaluate_local(item, &request),
                Err(error) => self.item_error(error),
            })
            .collect())
    }

    fn route(&self, membership: &Membership, item: &proto::RateLimitReq) -> Route {
        let hash_key = format!("{}_{}", item.name, item.unique_key);
        match membership.ring.owner(&hash_key) {
            Some(owner) if owner.grpc_address != self.peers.me().grpc_address => {
                Route::Owner(owner.grpc_address.clone())
            }
            // This node owns the key, or knows no ring at all.
            _ => Route::Local,
        }
    }

    fn evaluate_local(
        &self,
        mut item: proto::RateLimitReq,
        request: &RateLimitRequest,
    ) -> proto::RateLimitResp {
        let key = LimitKey::new(
            std::mem::take(&mut item.name),
            std::mem::take(&mut item.unique_key),
        );
        let applied = self.store.apply(key, request);
        self.record_decision("local", applied.decision);
        self.metrics
            .cache_access_count
            .with_label_values(&[if applied.hit { "hit" } else { "miss" }])
            .inc();
        decision_response(applied.decision)
    }

    /// Forwards one item to `owner`; on a timeout or an unreachable owner, re-resolves the owner
    /// and tries once more (locally, if this node owns the key now).
    async fn forward(
        &self,
        item: proto::RateLimitReq,
        request: RateLimitRequest,
        no_batching: bool,
        owner: String,
    ) -> proto::RateLimitResp {
        let first = self
            .clients
            .forward(&owner, item.clone(), no_batching)
            .await;
        let (result, owner) = match first {
            Err(error) if error.is_retryable() => {
                self.record_failure(&owner, &error);
                self.metrics
                    .batch_send_retries
                    .with_label_values(&[item.name.as_str()])
                    .inc();
                match self.route(&self.peers.membership(), &item) {
                    Route::Local => return self.evaluate_local(item, &request),
                    Route::Owner(new_owner) => (
                        self.clients.forward(&new_owner, item, no_batching).await,
                        new_owner,
                    ),
                }
            }
            other => (other, owner),
        };
        match result {
            Ok(mut response) => {
                if response.error.is_empty() {
                    self.record_decision("forward", decision_of(&response));
                }
                response
                    .metadata
                    .insert(OWNER_METADATA_KEY.to_string(), owner);
                response
            }
            Err(error) => {
                self.record_failure(&owner, &error);
                self.metrics
                    .check_error_counter
                    .with_label_values(&["forward_failed"])
                    .inc();
                proto::RateLimitResp {
                    error: format!("error while forwarding to owner {owner}: {error}"),
                    metadata: [(OWNER_METADATA_KEY.to_string(), owner)].into(),
                    ..Default::default()
                }
            }
        }
    }

    fn record_failure(&self, peer: &str, error: &ForwardError) {
        // A full local queue says nothing about the peer's health.
        if *error != ForwardError::QueueFull {
            self.failures
                .record(peer, &error.to_string(), Instant::now());
        }
    }

    fn forget_departed_peers(&self, membership: &Membership) {
        if self.clients.len() > membership.peers.len() {
            let addresses: Vec<&str> = membership
                .peers
                .iter()
                .map(|peer| peer.grpc_address.as_str())
                .collect();
            self.clients.retain(&addresses);
        }
    }

    fn record_decision(&self, calltype: &str, decision: Decision) {
        self.metrics
            .getratelimit_counter
            .with_label_values(&[calltype])
            .inc();
        if decision.status == Status::OverLimit {
            self.metrics.over_limit_counter.inc();
        }
    }

    fn item_error(&self, error: ItemError) -> proto::RateLimitResp {
        self.metrics
            .check_error_counter
            .with_label_values(&[error.label()])
            .inc();
        proto::RateLimitResp {
            error: error.to_string(),
            ..Default::default()
        }
    }

    /// Answers `HealthCheck`: the health of this node's view of the cluster, or
    /// [`CallError::Unavailable`] with the reason when unhealthy or shutting down.
    pub fn health_check(&self) -> Result<proto::HealthCheckResp, CallError> {
        if self.is_shutting_down() {
            return Err(CallError::Unavailable("this node is shutting down".into()));
        }
        let health = self.peers.health();
        if health.status != "healthy" {
            return Err(CallError::Unavailable(health.message));
        }
        let membership = self.peers.membership();
        let is_member = |address: &str| {
            membership
                .peers
                .iter()
                .any(|peer| peer.grpc_address == address)
        };
        if let Some(message) = self.failures.recent(Instant::now(), is_member) {
            return Err(CallError::Unavailable(message));
        }
        Ok(health)
    }

    /// Answers `LiveCheck`: fine until the node starts shutting down.
    pub fn live_check(&self) -> Result<(), CallError> {
        if self.is_shutting_down() {
            return Err(CallError::Unavailable("this node is shutting down".into()));
        }
        Ok(())
    }

    /// Marks the node as shutting down: liveness and health fail from now on, calls still succeed.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether [`Node::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Renders the metrics for a scrape, with the cache size brought up to date.
    pub fn render_metrics(&self) -> String {
        self.store.sync();
        self.metrics
            .cache_size
            .set(i64::try_from(self.store.len()).unwrap_or(i64::MAX));
        self.metrics.render()
    }

    /// The node's store (read access for tools and tests).
    pub fn store(&self) -> &LimitStore {
        &self.store
    }

    /// The node's membership view.
    pub fn peers(&self) -> &PeerList {
        &self.peers
    }
}

fn check_size(items: &[proto::RateLimitReq]) -> Result<(), CallError> {
    if items.len() > MAX_BATCH_SIZE {
        return Err(CallError::TooManyItems {
            max: MAX_BATCH_SIZE,
        });
    }
    Ok(())
}

/// Counts a call in `gubernator_concurrent_checks_counter` for as long as it lives.
struct InProgress<'a>(&'a Metrics);

impl<'a> InProgress<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.concurrent_checks.inc();
        Self(metrics)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.concurrent_checks.dec();
    }
}

/// The wire answer for a decision made by this node as the owner (no `metadata.owner`).
fn decision_response(decision: Decision) -> proto::RateLimitResp {
    proto::RateLimitResp {
        status: match decision.status {
            Status::UnderLimit => proto::Status::UnderLimit as i32,
            Status::OverLimit => proto::Status::OverLimit as i32,
        },
        limit: decision.limit,
        remaining: decision.remaining,
        reset_time: decision.reset_time,
        error: String::new(),
        metadata: Default::default(),
    }
}

/// The decision an owner's answer carries.
fn decision_of(response: &proto::RateLimitResp) -> Decision {
    Decision {
        status: if response.status == proto::Status::OverLimit as i32 {
            Status::OverLimit
        } else {
            Status::UnderLimit
        },
        limit: response.limit,
        remaining: response.remaining,
        reset_time: response.reset_time,
    }
}
