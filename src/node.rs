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

use crate::admin::{AdminOptions, AdminState};
use crate::algorithms::{Behavior, Decision, RateLimitRequest, Status};
use crate::batching::ForwardError;
use crate::clock::Clock;
use crate::error::{CallError, MAX_BATCH_SIZE};
use crate::global::{GlobalOptions, GlobalState, replica};
use crate::handoff::{self, HandoffState, Miss};
use crate::metrics::{ItemCounters, Metrics, PeerInputRejection};
use crate::owed::{self, Added, Owed};
use crate::owner_failure::{self, OwnerFailureOptions, OwnerFailurePolicy, OwnerFallback};
use crate::peers::client::{PeerClientOptions, PeerClients};
use crate::peers::discovery::health::{self, Backend, BackendStatus};
use crate::peers::failures::PeerFailures;
use crate::peers::{Membership, PeerList};
use crate::proto;
use crate::request::{self, InputLimits, ItemError, LimitKey};
use crate::store::{Eviction, LimitStore};

/// The metadata key that names the owner in answers given by another node.
pub const OWNER_METADATA_KEY: &str = "owner";

/// Everything a node needs to answer calls.
pub struct Node {
    store: LimitStore,
    clock: Arc<dyn Clock>,
    peers: PeerList,
    clients: PeerClients,
    global: GlobalState,
    failures: PeerFailures,
    metrics: Metrics,
    counters: ItemCounters,
    limits: InputLimits,
    discovery: Option<BackendStatus>,
    serve_alone_healthy: bool,
    shutting_down: AtomicBool,
    handoff: HandoffState,
    admin: AdminState,
    owner_fallback: OwnerFallback,
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

/// How an item was answered, as `gubernator_getratelimit_counter{calltype}` counts it.
#[derive(Clone, Copy)]
enum CallType {
    /// Evaluated by this node as the owner.
    Local,
    /// Answered by the owner after a forward.
    Forward,
    /// Answered from this node's copy of a GLOBAL limit.
    Global,
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
        let metrics = options.metrics.clone();
        let store = LimitStore::with_eviction_listener(
            options.cache_size,
            Arc::clone(&options.clock),
            Arc::new(move |eviction| match eviction {
                Eviction::Size => {
                    metrics.unexpired_evictions_count.inc();
                    metrics.cache_evictions.with_label_values(&["size"]).inc();
                }
                Eviction::Expired => metrics
                    .cache_evictions
                    .with_label_values(&["expired"])
                    .inc(),
            }),
        );
        let owner_fallback = OwnerFallback::new(options.owner_failure, Arc::clone(&options.clock));
        Self {
            store,
            clock: options.clock,
            peers: options.peers,
            clients: PeerClients::new(options.peer_clients, options.metrics.clone()),
            global: GlobalState::new(options.global),
            failures: PeerFailures::new(options.peer_failure_window),
            counters: options.metrics.item_counters(),
            metrics: options.metrics,
            limits: options.limits,
            discovery: options.discovery,
            serve_alone_healthy: options.serve_alone_healthy,
            shutting_down: AtomicBool::new(false),
            handoff: HandoffState::default(),
            admin: AdminState::new(options.admin),
            owner_fallback,
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
        self.metrics.items_per_call.observe(items.len() as f64);
        let now_ms = self.clock.now_ms();
        let membership = self.peers.membership();
        self.forget_departed_peers(&membership);
        let mut responses = vec![proto::RateLimitResp::default(); items.len()];
        let mut forwarded = Vec::new();
        let mut in_handoff = Vec::new();
        for (index, mut item) in items.into_iter().enumerate() {
            // Internal metadata is set by peers only; a client's is never trusted.
            strip_internal_metadata(&mut item);
            if self.global.options().force {
                item.behavior |= Behavior::GLOBAL.bits();
            }
            let request = match request::validate(&item, now_ms, self.limits) {
                Ok(request) => request,
                Err(error) => {
                    responses[index] = self.item_error(error);
                    continue;
                }
            };
            let global = request.behavior.contains(Behavior::GLOBAL);
            match self.route(&membership, &item) {
                Route::Local if global => {
                    responses[index] = self.evaluate_global_as_owner(item, &request);
                }
                Route::Local if self.handoff.is_active() => {
                    in_handoff.push(self.evaluate_in_handoff(index, item, request));
                }
                Route::Local => responses[index] = self.evaluate_local(item, &request),
                Route::Owner(owner) => {
                    // The owner must see the same timestamp as every other item of this call.
                    item.created_at = Some(request.created_at);
                    if global {
                        let key = LimitKey::new(item.name.clone(), item.unique_key.clone());
                        if self.store.get(&key).is_some() {
                            responses[index] =
                                self.evaluate_global_copy(key, item, &request, owner);
                            continue;
                        }
                        // No copy yet: ask the owner once rather than start from a full bucket.
                        forwarded.push(self.forward_item(index, item, request, owner, Some(key)));
                    } else {
                        forwarded.push(self.forward_item(index, item, request, owner, None));
                    }
                }
            }
        }
        let (forwarded, in_handoff) = tokio::join!(join_all(forwarded), join_all(in_handoff));
        for (index, response) in forwarded.into_iter().chain(in_handoff) {
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
        if self.handoff.is_active() {
            return Ok(self.get_peer_rate_limits_in_handoff(items, now_ms).await);
        }
        Ok(items
            .into_iter()
            .map(|item| match request::validate(&item, now_ms, self.limits) {
                Ok(request) if request.behavior.contains(Behavior::GLOBAL) => {
                    self.evaluate_global_as_owner(item, &request)
                }
                Ok(request) => self.evaluate_local(item, &request),
                Err(error) => self.item_error(error),
            })
            .collect())
    }

    /// Answers `UpdatePeerGlobals`: overwrites this node's copies of GLOBAL limits with the
    /// owner's state. An update for a key this node owns (by its current ring) is ignored and
    /// counted: only the owner's own state is true, so a peer (or anyone posing as one) can never
    /// overwrite it. Keys longer than two valid keys joined are ignored too.
    pub fn update_peer_globals(&self, globals: Vec<proto::UpdatePeerGlobal>) {
        let now_ms = self.clock.now_ms();
        let membership = self.peers.membership();
        let me = self.peers.me().grpc_address.as_str();
        let longest = self
            .limits
            .max_key_bytes
            .saturating_mul(2)
            .saturating_add(1);
        for update in globals {
            self.metrics.updatepeerglobals_counter.inc();
            if update.key.len() > longest {
                self.metrics
                    .reject_peer_input(PeerInputRejection::UpdateKeyTooLong);
                continue;
            }
            // The ring hashes the joined key, exactly what the update carries.
            let owned_here = membership
                .ring
                .owner(&update.key)
                .is_none_or(|owner| owner.grpc_address == me);
            if owned_here {
                self.metrics
                    .reject_peer_input(PeerInputRejection::UpdateOwnedKey);
                continue;
            }
            let Some(key) = self.key_of_update(&update) else {
                continue;
            };
            let existing = self.store.get(&key);
            if let Some(bucket) = replica::from_update(&update, existing.as_ref(), now_ms) {
                self.store.put(key, bucket);
            }
        }
    }

    /// The limit an update is for: exact when a ringlimit owner names it; for a Gubernator owner,
    /// the copy this node holds whose `name_unique_key` is the update's key (a node without a
    /// copy has nothing to overwrite, and fetches the state from the owner on first use). At most
    /// [`replica::MAX_SPLIT_CANDIDATES`] splits are tried, so the cost is linear in the key.
    fn key_of_update(&self, update: &proto::UpdatePeerGlobal) -> Option<LimitKey> {
        let exact = replica::carried_name(update).is_some();
        replica::key_candidates(update, self.limits.max_key_bytes)
            .map(|(name, unique_key)| LimitKey::new(name, unique_key))
            .find(|key| exact || self.store.get(key).is_some())
    }

    /// Evaluates a GLOBAL item this node owns, and queues the new state for broadcast when it
    /// changed.
    fn evaluate_global_as_owner(
        &self,
        item: proto::RateLimitReq,
        request: &RateLimitRequest,
    ) -> proto::RateLimitResp {
        let changes = request.hits != 0 || request.behavior.contains(Behavior::RESET_REMAINING);
        let key = changes.then(|| LimitKey::new(item.name.clone(), item.unique_key.clone()));
        let response = self.evaluate_local(item, request);
        if let Some(key) = key {
            self.queue_broadcast(key);
        }
        response
    }

    /// Evaluates a GLOBAL item against this non-owner's copy, answers at once, and queues the hits
    /// the owner is owed.
    fn evaluate_global_copy(
        &self,
        key: LimitKey,
        item: proto::RateLimitReq,
        request: &RateLimitRequest,
        owner: String,
    ) -> proto::RateLimitResp {
        let applied = self.store.apply(key.clone(), request);
        self.record_decision(CallType::Global, applied.decision);
        self.admin
            .record(&key, applied.decision.status, self.clock.as_ref());
        // The owner is owed what this copy consumed (see `owed::owes_owner`).
        if owed::owes_owner(request, &applied.decision) {
            if self.global.queue_hits(key, item) == Added::Dropped {
                self.metrics.global_hits_dropped.inc();
            }
            self.metrics
                .global_send_queue_length
                .set(i64::try_from(self.global.pending_len()).unwrap_or(i64::MAX));
        }
        let mut response = decision_response(applied.decision);
        response
            .metadata
            .insert(OWNER_METADATA_KEY.to_string(), owner);
        response
    }

    fn queue_broadcast(&self, key: LimitKey) {
        if !self.global.queue_broadcast(key) {
            tracing::warn!("GLOBAL broadcast queue is full; a state change will not be broadcast");
        }
        self.metrics
            .global_queue_length
            .set(i64::try_from(self.global.broadcast_len()).unwrap_or(i64::MAX));
    }

    /// The gRPC address of the owner of `item`'s limit, or `None` when this node owns it.
    pub fn owner_address(&self, item: &proto::RateLimitReq) -> Option<String> {
        match self.route(&self.peers.membership(), item) {
            Route::Local => None,
            Route::Owner(owner) => Some(owner),
        }
    }

    /// The gRPC address of the owner of `key`, or `None` when this node owns it.
    pub fn owner_of(&self, key: &LimitKey) -> Option<String> {
        let membership = self.peers.membership();
        match membership.ring.owner_of(&key.name, &key.unique_key) {
            Some(owner) if owner.grpc_address != self.peers.me().grpc_address => {
                Some(owner.grpc_address.clone())
            }
            _ => None,
        }
    }

    /// Applies GLOBAL hits owed to the owner when this node has become the owner itself.
    pub fn apply_owed_hits(&self, entries: &[Owed]) {
        let now_ms = self.clock.now_ms();
        for (_, item) in entries {
            if let Ok(request) = request::validate(item, now_ms, self.limits) {
                self.evaluate_global_as_owner(item.clone(), &request);
            }
        }
    }

    /// Overwrites this node's copies with the owner's answers to the hits it was sent.
    pub fn install_owner_answers(&self, entries: &[Owed], answers: &[proto::RateLimitResp]) {
        let now_ms = self.clock.now_ms();
        for ((key, item), answer) in entries.iter().zip(answers) {
            if !answer.error.is_empty() {
                continue;
            }
            if let Ok(request) = request::validate(item, now_ms, self.limits) {
                self.store
                    .put(key.clone(), replica::from_answer(answer, &request));
            }
        }
    }

    /// This node's GLOBAL queues.
    pub fn global(&self) -> &GlobalState {
        &self.global
    }

    /// This node's clients of its peers.
    pub fn peer_clients(&self) -> &PeerClients {
        &self.clients
    }

    fn route(&self, membership: &Membership, item: &proto::RateLimitReq) -> Route {
        match membership.ring.owner_of(&item.name, &item.unique_key) {
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
        let applied = self.store.apply_and_inspect(key, request, |key, applied| {
            self.admin
                .record(key, applied.decision.status, self.clock.as_ref())
        });
        self.record_decision(CallType::Local, applied.decision);
        if applied.hit {
            self.counters.cache_hit.inc();
        } else {
            self.counters.cache_miss.inc();
        }
        decision_response(applied.decision)
    }

    /// Forwards the item at `index` of a call to `owner`; for a GLOBAL limit (`copy_as`), keeps
    /// the owner's answer as this node's copy.
    async fn forward_item(
        &self,
        index: usize,
        item: proto::RateLimitReq,
        request: RateLimitRequest,
        owner: String,
        copy_as: Option<LimitKey>,
    ) -> (usize, proto::RateLimitResp) {
        let no_batching = request.behavior.contains(Behavior::NO_BATCHING);
        let answer = self.forward(item, request, no_batching, owner).await;
        if let Some(key) = copy_as
            && answer.error.is_empty()
        {
            self.store.put(key, replica::from_answer(&answer, &request));
        }
        (index, answer)
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
                self.metrics.count_batch_retry(&item.name);
                match self.route(&self.peers.membership(), &item) {
                    Route::Local => return self.evaluate_local(item, &request),
                    Route::Owner(new_owner) => (
                        self.clients
                            .forward(&new_owner, item.clone(), no_batching)
                            .await,
                        new_owner,
                    ),
                }
            }
            other => (other, owner),
        };
        match result {
            Ok(response) => self.owner_answered(response, owner),
            Err(error) => {
                self.record_failure(&owner, &error);
                self.metrics
                    .check_error_counter
                    .with_label_values(&[crate::metrics::CHECK_ERROR_FORWARD_FAILED])
                    .inc();
                self.answer_without_owner(item, &request, owner, &error)
            }
        }
    }

    /// `GetPeerRateLimits` while a handoff transition is under way: like the normal path, but
    /// items for keys not held here go through [`Node::evaluate_in_handoff`].
    async fn get_peer_rate_limits_in_handoff(
        &self,
        items: Vec<proto::RateLimitReq>,
        now_ms: i64,
    ) -> Vec<proto::RateLimitResp> {
        let answers = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| async move {
                match request::validate(&item, now_ms, self.limits) {
                    Ok(request) if request.behavior.contains(Behavior::GLOBAL) => {
                        (index, self.evaluate_global_as_owner(item, &request))
                    }
                    Ok(request) => self.evaluate_in_handoff(index, item, request).await,
                    Err(error) => (index, self.item_error(error)),
                }
            });
        join_all(answers)
            .await
            .into_iter()
            .map(|(_, answer)| answer)
            .collect()
    }

    /// Evaluates an item this node would evaluate locally, while a handoff transition is under
    /// way (see `crate::handoff`): a held bucket is evaluated here; a key handed off, or (when
    /// leaving) any key not held, is forwarded to its new owner once; a key a joined peer may still
    /// be handing over waits for it (bounded).
    async fn evaluate_in_handoff(
        &self,
        index: usize,
        mut item: proto::RateLimitReq,
        request: RateLimitRequest,
    ) -> (usize, proto::RateLimitResp) {
        let key = LimitKey::new(item.name.clone(), item.unique_key.clone());
        if let Some(applied) = self.store.apply_existing(key.clone(), &request) {
            self.admin
                .record(&key, applied.decision.status, self.clock.as_ref());
            self.record_decision(CallType::Local, applied.decision);
            self.counters.cache_hit.inc();
            return (index, decision_response(applied.decision));
        }
        // An item already forwarded by a handoff is evaluated here, never forwarded again.
        if !item.metadata.contains_key(handoff::HOP_METADATA_KEY) {
            match self.handoff.on_miss(&key, &self.peers.me().grpc_address) {
                Miss::Forward(owner) => {
                    item.created_at = Some(request.created_at);
                    item.metadata
                        .insert(handoff::HOP_METADATA_KEY.to_string(), "1".to_string());
                    let no_batching = request.behavior.contains(Behavior::NO_BATCHING);
                    let result = self.clients.forward(&owner, item, no_batching).await;
                    return (index, self.forwarded_answer(result, owner));
                }
                Miss::Wait => self.handoff.wait_for_sources().await,
                Miss::Local => {}
            }
        }
        (index, self.evaluate_local(item, &request))
    }

    /// The owner's answer to a forwarded item, counted and marked with `metadata.owner`.
    fn owner_answered(
        &self,
        mut response: proto::RateLimitResp,
        owner: String,
    ) -> proto::RateLimitResp {
        if response.error.is_empty() {
            self.record_decision(CallType::Forward, decision_of(&response));
        }
        response
            .metadata
            .insert(OWNER_METADATA_KEY.to_string(), owner);
        response
    }

    /// The answer to a handoff forward: the owner's, or an item error naming it.
    fn forwarded_answer(
        &self,
        result: Result<proto::RateLimitResp, ForwardError>,
        owner: String,
    ) -> proto::RateLimitResp {
        match result {
            Ok(response) => self.owner_answered(response, owner),
            Err(error) => {
                self.record_failure(&owner, &error);
                proto::RateLimitResp {
                    error: format!("error while forwarding to new owner {owner}: {error}"),
                    metadata: [(OWNER_METADATA_KEY.to_string(), owner)].into(),
                    ..Default::default()
                }
            }
        }
    }

    /// Answers an item whose owner could not be reached, as `GUBER_OWNER_FAILURE_POLICY` says
    /// (see [`owner_failure`]).
    fn answer_without_owner(
        &self,
        item: proto::RateLimitReq,
        request: &RateLimitRequest,
        owner: String,
        error: &ForwardError,
    ) -> proto::RateLimitResp {
        let policy = self.owner_fallback.policy();
        if policy == OwnerFailurePolicy::Error || !owner_failure::owner_unreachable(error) {
            return owner_failure::error_response(&owner, error);
        }
        if request.behavior.contains(Behavior::GLOBAL) {
            // A GLOBAL limit already has a local copy whose owed hits reconcile with the owner.
            let key = LimitKey::new(item.name.clone(), item.unique_key.clone());
            let mut response = self.evaluate_global_copy(key, item, request, owner);
            owner_failure::mark_fallback(&mut response);
            return response;
        }
        let (response, decision) = self.owner_fallback.answer(item, request, owner);
        self.record_decision(CallType::Local, decision);
        response
    }

    /// The fallback buckets and owed hits of `GUBER_OWNER_FAILURE_POLICY=local`.
    pub fn owner_fallback(&self) -> &OwnerFallback {
        &self.owner_fallback
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

    fn record_decision(&self, calltype: CallType, decision: Decision) {
        let counters = &self.counters;
        match calltype {
            CallType::Local => counters.local.inc(),
            CallType::Forward => counters.forward.inc(),
            CallType::Global => counters.global.inc(),
        }
        match decision.status {
            Status::UnderLimit => counters.under.inc(),
            Status::OverLimit => {
                self.metrics.over_limit_counter.inc();
                counters.over.inc();
            }
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
        if let Some(message) = self.serving_alone() {
            return Err(CallError::Unavailable(message));
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

    /// Why this node is serving alone without its discovery backend (see
    /// [`crate::peers::discovery::health`]), or `None`. This, and shutting down, is what
    /// `grpc.health.v1` reports; recent peer failures only make `HealthCheck` unhealthy.
    pub fn serving_alone(&self) -> Option<String> {
        let status = self.discovery.as_ref()?;
        let data_center = &self.peers.me().data_center;
        let local_peers = self
            .peers
            .membership()
            .peers
            .iter()
            .filter(|peer| &peer.data_center == data_center)
            .count();
        health::serving_alone(
            status.backend,
            status.is_connected(),
            &status.target,
            local_peers,
            self.serve_alone_healthy,
        )
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

    /// Renders the metrics for a scrape, with the gauges that are read rather than counted
    /// (cache size, peers, etcd registration) brought up to date.
    pub fn render_metrics(&self) -> String {
        self.store.sync();
        let metrics = &self.metrics;
        let held = i64::try_from(self.store.len()).unwrap_or(i64::MAX);
        metrics.cache_size.set(held);
        metrics.r8_active_keys.set(held);
        let health = self.peers.health();
        metrics
            .peers
            .with_label_values(&["local"])
            .set(health.local_peers.len() as i64);
        metrics
            .peers
            .with_label_values(&["region"])
            .set(health.region_peers.len() as i64);
        if let Some(status) = self
            .discovery
            .as_ref()
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
        &self.store
    }

    /// The node's membership view.
    pub fn peers(&self) -> &PeerList {
        &self.peers
    }

    /// The node's state handoff transition state.
    pub fn handoff(&self) -> &HandoffState {
        &self.handoff
    }

    /// The node's clock, in epoch milliseconds.
    pub fn clock_now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A lazily connected channel to another node through `endpoint`, over the peers' transport
    /// (TLS when configured) and with the peer secret; see [`PeerClients::connect_lazy`].
    pub fn peer_channel(
        &self,
        endpoint: tonic::transport::Endpoint,
    ) -> crate::peers::auth::PeerChannel {
        self.clients.connect_lazy(endpoint)
    }

    /// The limits on item fields (`GUBER_MAX_KEY_LENGTH`), which also bound what peers send.
    pub fn limits(&self) -> InputLimits {
        self.limits
    }

    /// The node's admin counters, summaries and settings.
    pub fn admin(&self) -> &AdminState {
        &self.admin
    }

    /// The node's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }
}

/// Removes the metadata only peers may set (the handoff hop marker) from a client's item, so a
/// V1 client cannot make a node skip the handoff forwarding that keeps one evaluator per key.
fn strip_internal_metadata(item: &mut proto::RateLimitReq) {
    if !item.metadata.is_empty() {
        item.metadata.remove(handoff::HOP_METADATA_KEY);
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
pub(crate) fn decision_response(decision: Decision) -> proto::RateLimitResp {
    proto::RateLimitResp {
        status: decision.status.wire(),
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
        status: Status::from_wire(response.status),
        limit: response.limit,
        remaining: response.remaining,
        reset_time: response.reset_time,
    }
}

impl owed::Owners for Node {
    fn owner_of(&self, key: &LimitKey) -> Option<String> {
        Node::owner_of(self, key)
    }

    fn budget(&self) -> crate::peers::budget::MessageBudget {
        self.clients.message_budget()
    }

    async fn send(
        &self,
        owner: &str,
        items: Vec<proto::RateLimitReq>,
        timeout: Duration,
    ) -> Result<Vec<proto::RateLimitResp>, ForwardError> {
        self.clients
            .get_peer_rate_limits(owner, items, timeout)
            .await
    }
}
