//! One ringlimit node: the single code path behind both the gRPC API and the HTTP gateway.
//!
//! A call's items are validated, stamped with one timestamp, evaluated against the store and
//! answered in order. Item problems become per-item errors; only call-level problems (too many
//! items, shutting down) fail the call. The node also answers health: its membership view and
//! whether it is shutting down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::algorithms::{Decision, Status};
use crate::clock::Clock;
use crate::error::{CallError, MAX_BATCH_SIZE};
use crate::metrics::Metrics;
use crate::peers::PeerList;
use crate::proto;
use crate::request::{self, InputLimits, ItemError};
use crate::store::LimitStore;

/// Everything a node needs to answer calls.
pub struct Node {
    store: LimitStore,
    clock: Arc<dyn Clock>,
    peers: PeerList,
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
    /// Where to record metrics.
    pub metrics: Metrics,
    /// Limits on item fields.
    pub limits: InputLimits,
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
            metrics: options.metrics,
            limits: options.limits,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Answers a `GetRateLimits` call: one response per item, in order.
    pub async fn get_rate_limits(
        &self,
        items: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        self.evaluate_locally(items)
    }

    /// Answers a peer's `GetPeerRateLimits` call. The items are this node's to own, so they are
    /// evaluated here and never forwarded again.
    pub async fn get_peer_rate_limits(
        &self,
        items: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        self.evaluate_locally(items)
    }

    fn evaluate_locally(
        &self,
        items: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        if items.len() > MAX_BATCH_SIZE {
            return Err(CallError::TooManyItems {
                max: MAX_BATCH_SIZE,
            });
        }
        self.metrics.concurrent_checks.inc();
        let now_ms = self.clock.now_ms();
        let responses = items
            .into_iter()
            .map(
                |mut item| match request::validate(&mut item, now_ms, self.limits) {
                    Ok(valid) => {
                        let applied = self.store.apply(valid.key, &valid.request);
                        self.record_decision(applied.decision, applied.hit);
                        decision_response(applied.decision)
                    }
                    Err(error) => self.item_error(error),
                },
            )
            .collect();
        self.metrics.concurrent_checks.dec();
        Ok(responses)
    }

    fn record_decision(&self, decision: Decision, hit: bool) {
        let metrics = &self.metrics;
        metrics
            .getratelimit_counter
            .with_label_values(&["local"])
            .inc();
        metrics
            .cache_access_count
            .with_label_values(&[if hit { "hit" } else { "miss" }])
            .inc();
        if decision.status == Status::OverLimit {
            metrics.over_limit_counter.inc();
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

/// The wire answer for a decision made by the owner itself (no `metadata.owner`).
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
