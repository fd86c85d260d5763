//! The router: where each item of a call is evaluated, and what happens on the way.
//!
//! A call's items are validated and stamped with one timestamp; each valid item is then routed by
//! the consistent-hash ring: items this node owns go to the [`Evaluator`], the others are
//! forwarded (batched) to their owner, all concurrently, and the answers are assembled in request
//! order. Item problems (bad input, an unreachable owner) become per-item errors; only call-level
//! problems (too many items) fail the call.
//!
//! The rules of the cluster live here and only here: membership (the [`PeerList`]), the one
//! registry of per-peer channels ([`PeerClients`], pruned when peers leave), forwarding with one
//! retry and the owner-failure policy, and the handoff gate (one check per entry point, then
//! [`Router::in_handoff`]), and the node's health (membership, discovery, recent peer failures,
//! shutting down). GLOBAL reconciliation, handoff, the admin views and `/allow` use this
//! handle and the evaluator's; nothing calls back into the node that wires them.

use std::mem::take;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::algorithms::Behavior;
use crate::batching::ForwardError;
use crate::batching::budget::MessageBudget;
use crate::error::{CallError, MAX_BATCH_SIZE};
use crate::evaluator::{CallType, Evaluator, OWNER_METADATA_KEY};
use crate::handoff::{self, HandoffState, Miss};
use crate::metrics::Metrics;
use crate::owed::Owners;
use crate::owner_failure::{self, OwnerFailureOptions, OwnerFailurePolicy, OwnerFallback};
use crate::peer_auth::PeerChannel;
use crate::peers::client::{PeerClientOptions, PeerClients};
use crate::peers::discovery::health::{self, BackendStatus};
use crate::peers::failures::PeerFailures;
use crate::peers::{Membership, PeerList};
use crate::proto;
use crate::request::{self, Checked, Item, KeyRef, LimitKey};

/// What builds a [`Router`] (beside the evaluator it routes to).
pub struct RouterOptions {
    /// This node's membership view.
    pub peers: PeerList,
    /// How calls to peers are made and batched.
    pub peer_clients: PeerClientOptions,
    /// How long a failed peer call keeps this node unhealthy.
    pub peer_failure_window: Duration,
    /// What to answer when an owner cannot be reached.
    pub owner_failure: OwnerFailureOptions,
    /// Treat every request as GLOBAL (`GUBER_FORCE_GLOBAL`).
    pub force_global: bool,
    /// The discovery backend membership depends on (etcd, DNS), for health and metrics; `None`
    /// for a fixed list.
    pub discovery: Option<BackendStatus>,
    /// `GUBER_SERVE_ALONE_HEALTHY`: a node serving alone without its backend is still healthy.
    pub serve_alone_healthy: bool,
}

/// Routes items to the evaluator or to their owner.
pub struct Router {
    evaluator: Arc<Evaluator>,
    peers: PeerList,
    clients: PeerClients,
    failures: PeerFailures,
    handoff: HandoffState,
    fallback: OwnerFallback,
    force_global: bool,
    discovery: Option<BackendStatus>,
    serve_alone_healthy: bool,
    shutting_down: AtomicBool,
    pruned_version: AtomicU64,
}

/// Where one item is evaluated.
enum Route {
    /// By this node.
    Local,
    /// By the peer at this gRPC address.
    Owner(String),
}

/// Where a forwarded item was answered in the end.
enum Forwarded {
    /// By its owner, or, when the owner failed, by the owner-failure policy.
    Away(proto::RateLimitResp),
    /// By this node, which owned the key by the time the item was retried.
    Here(proto::RateLimitResp),
}

impl Router {
    /// A router in front of `evaluator`.
    pub fn new(evaluator: Arc<Evaluator>, options: RouterOptions) -> Self {
        let metrics = evaluator.metrics().clone();
        Self {
            clients: PeerClients::new(options.peer_clients, metrics),
            fallback: OwnerFallback::new(options.owner_failure, Arc::clone(evaluator.clock())),
            evaluator,
            peers: options.peers,
            failures: PeerFailures::new(options.peer_failure_window),
            handoff: HandoffState::default(),
            force_global: options.force_global,
            discovery: options.discovery,
            serve_alone_healthy: options.serve_alone_healthy,
            shutting_down: AtomicBool::new(false),
            pruned_version: AtomicU64::new(0),
        }
    }

    /// Evaluates a batch of items through the cluster (a `GetRateLimits` call): one response per
    /// item, in order. Items owned by other peers are forwarded to them.
    pub async fn get_rate_limits(
        &self,
        mut items: Vec<Item>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        check_size(&items)?;
        let metrics = self.metrics();
        let _in_progress = InProgress::start(metrics);
        metrics.items_per_call.observe(items.len() as f64);
        let now_ms = self.evaluator.clock().now_ms();
        let membership = self.peers.membership();
        self.forget_departed_peers();
        let evaluator = &*self.evaluator;
        // One answer per item, in order; an item answered later by another node (or after a
        // handoff wait) holds a default answer until then.
        let mut responses = Vec::with_capacity(items.len());
        let mut forwarded = Vec::new();
        let mut in_handoff = Vec::new();
        let mut tally = evaluator.tally();
        // The items are read in place; one is taken out only to become a `Checked` item.
        for (index, item) in items.iter_mut().enumerate() {
            // Internal metadata is set by peers only; a client's is never trusted.
            strip_internal_metadata(item);
            if self.force_global {
                item.behavior |= Behavior::GLOBAL.bits();
            }
            let request = match request::validate_item(item, now_ms, evaluator.limits()) {
                Ok(request) => request,
                Err(error) => {
                    responses.push(evaluator.item_error(error));
                    continue;
                }
            };
            let global = request.behavior.contains(Behavior::GLOBAL);
            let answer = match self.route(&membership, item.key()) {
                Route::Local if global => {
                    evaluator.global_as_owner(Checked::new(take(item), request))
                }
                Route::Local if self.handoff.is_active() => {
                    let checked = Checked::new(take(item), request);
                    in_handoff.push(async move { (index, self.in_handoff(checked).await) });
                    proto::RateLimitResp::default()
                }
                // The common case, by the item's borrowed key: no key is built.
                Route::Local => evaluator.local_at(item.key(), &request, now_ms, &mut tally),
                Route::Owner(owner) => {
                    let checked = Checked::new(take(item), request);
                    if global && evaluator.store().get(&checked.key).is_some() {
                        evaluator.global_copy(checked, owner)
                    } else {
                        // A GLOBAL limit without a copy yet asks the owner once rather than start
                        // from a full bucket, and keeps the answer as its copy.
                        forwarded.push(self.forward_item(index, checked, owner, global));
                        proto::RateLimitResp::default()
                    }
                }
            };
            responses.push(answer);
        }
        // The request's bytes are not needed while the call waits.
        drop(items);
        // The call's local decisions are counted before it waits for any other node.
        drop(tally);
        let (forwarded, in_handoff) = tokio::join!(join_all(forwarded), join_all(in_handoff));
        for (index, response) in forwarded.into_iter().chain(in_handoff) {
            responses[index] = response;
        }
        Ok(responses)
    }

    /// Answers a peer's `GetPeerRateLimits` call. The peer sent these items because its ring says
    /// this node owns them, so they are evaluated here and never forwarded again (even if this
    /// node's ring disagrees for a moment), except by a handoff under way.
    pub async fn get_peer_rate_limits(
        &self,
        items: Vec<Item>,
    ) -> Result<Vec<proto::RateLimitResp>, CallError> {
        check_size(&items)?;
        let _in_progress = InProgress::start(self.metrics());
        let now_ms = self.evaluator.clock().now_ms();
        let limits = self.evaluator.limits();
        let evaluator = &*self.evaluator;
        if !self.handoff.is_active() {
            let mut tally = evaluator.tally();
            return Ok(items
                .into_iter()
                .map(|item| match request::validate_item(&item, now_ms, limits) {
                    Ok(request) if request.behavior.contains(Behavior::GLOBAL) => {
                        evaluator.global_as_owner(Checked::new(item, request))
                    }
                    Ok(request) => evaluator.local_at(item.key(), &request, now_ms, &mut tally),
                    Err(error) => evaluator.item_error(error),
                })
                .collect());
        }
        let answers = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| async move {
                match request::check(item, now_ms, limits) {
                    Ok(checked) if checked.request.behavior.contains(Behavior::GLOBAL) => {
                        (index, evaluator.global_as_owner(checked))
                    }
                    Ok(checked) => (index, self.in_handoff(checked).await),
                    Err(error) => (index, evaluator.item_error(error)),
                }
            });
        Ok(join_all(answers)
            .await
            .into_iter()
            .map(|(_, answer)| answer)
            .collect())
    }

    /// Answers `UpdatePeerGlobals`: overwrites this node's copies of GLOBAL limits with the
    /// owner's state. An update for a key this node owns (by its current ring) is ignored and
    /// counted: only the owner's own state is true, so a peer (or anyone posing as one) can never
    /// overwrite it.
    pub fn update_peer_globals(&self, globals: Vec<proto::UpdatePeerGlobal>) {
        let membership = self.peers.membership();
        let me = self.peers.me().grpc_address.as_str();
        self.evaluator.update_copies(globals, |hash_key| {
            membership
                .ring
                .owner(hash_key)
                .is_none_or(|owner| owner.grpc_address == me)
        });
    }

    /// The gRPC address of the owner of `key`, or `None` when this node owns it (or knows no
    /// ring at all).
    pub fn owner_of(&self, key: &LimitKey) -> Option<String> {
        self.owner_in(&self.peers.membership(), key.into())
    }

    /// The owner of `key` in `membership`, or `None` when this node owns it.
    fn owner_in(&self, membership: &Membership, key: KeyRef<'_>) -> Option<String> {
        match membership.ring.owner_of(key.name, key.unique_key) {
            Some(owner) if owner.grpc_address != self.peers.me().grpc_address => {
                Some(owner.grpc_address.clone())
            }
            _ => None,
        }
    }

    fn route(&self, membership: &Membership, key: KeyRef<'_>) -> Route {
        match self.owner_in(membership, key) {
            Some(owner) => Route::Owner(owner),
            None => Route::Local,
        }
    }

    /// Forwards the item at `index` of a call to `owner`; for a GLOBAL limit (`keep_copy`), keeps
    /// the owner's answer as this node's copy.
    async fn forward_item(
        &self,
        index: usize,
        checked: Checked,
        owner: String,
        keep_copy: bool,
    ) -> (usize, proto::RateLimitResp) {
        let copy = keep_copy.then(|| (checked.key.clone(), checked.request));
        let answer = match self.forward(checked, owner).await {
            Forwarded::Away(answer) => {
                if let Some((key, request)) = copy {
                    self.evaluator.keep_copy(key, &answer, &request);
                }
                answer
            }
            // This node owns the key now: its bucket is the limit's state, not a copy.
            Forwarded::Here(answer) => answer,
        };
        (index, answer)
    }

    /// Forwards one item to `owner` (stamped with the call's `created_at`, which the owner must
    /// see like every other item of the call); on a timeout or an unreachable owner, re-resolves
    /// the owner and tries once more (here, if this node owns the key now).
    async fn forward(&self, checked: Checked, owner: String) -> Forwarded {
        let no_batching = checked.request.behavior.contains(Behavior::NO_BATCHING);
        // The wire item is built again for a retry rather than cloned for one that rarely comes.
        let first = self
            .clients
            .forward(&owner, checked.to_item(), no_batching)
            .await;
        let (result, owner) = match first {
            Err(error) if error.is_retryable() => {
                self.record_failure(&owner, &error);
                self.metrics().count_batch_retry(&checked.key.name);
                match self.route(&self.peers.membership(), (&checked.key).into()) {
                    Route::Local => return Forwarded::Here(self.evaluate_owned(checked).await),
                    Route::Owner(new_owner) => (
                        self.clients
                            .forward(&new_owner, checked.to_item(), no_batching)
                            .await,
                        new_owner,
                    ),
                }
            }
            other => (other, owner),
        };
        Forwarded::Away(match result {
            Ok(response) => self.evaluator.owner_answered(response, owner),
            Err(error) => {
                self.record_failure(&owner, &error);
                self.metrics()
                    .check_error_counter
                    .with_label_values(&[crate::metrics::CHECK_ERROR_FORWARD_FAILED])
                    .inc();
                self.answer_without_owner(checked, owner, &error)
            }
        })
    }

    /// Evaluates an item this node owns, as a client's call does: a GLOBAL limit as its owner
    /// (queueing the broadcast), any other through the handoff gate while a handoff is under way.
    async fn evaluate_owned(&self, checked: Checked) -> proto::RateLimitResp {
        if checked.request.behavior.contains(Behavior::GLOBAL) {
            self.evaluator.global_as_owner(checked)
        } else if self.handoff.is_active() {
            self.in_handoff(checked).await
        } else {
            self.evaluator.local(checked)
        }
    }

    /// Evaluates an item this node would evaluate locally, while a handoff transition is under
    /// way (see `crate::handoff`): a held bucket is evaluated here; a key handed off, or (when
    /// leaving) any key not held, is forwarded to its new owner once; a key a joined peer may still
    /// be handing over waits for it (bounded).
    async fn in_handoff(&self, checked: Checked) -> proto::RateLimitResp {
        if let Some(answer) = self.evaluator.held(&checked.key, &checked.request) {
            return answer;
        }
        // An item already forwarded by a handoff is evaluated here, never forwarded again.
        if !checked.metadata().contains_key(handoff::HOP_METADATA_KEY) {
            match self
                .handoff
                .on_miss(&checked.key, &self.peers.me().grpc_address)
            {
                Miss::Forward(owner) => {
                    let no_batching = checked.request.behavior.contains(Behavior::NO_BATCHING);
                    let mut item = checked.into_item();
                    item.metadata
                        .insert(handoff::HOP_METADATA_KEY.to_string(), "1".to_string());
                    let result = self.clients.forward(&owner, item, no_batching).await;
                    return self.forwarded_answer(result, owner);
                }
                Miss::Wait => self.handoff.wait_for_sources().await,
                Miss::Local => {}
            }
        }
        self.evaluator.local(checked)
    }

    /// The answer to a handoff forward: the owner's, or an item error naming it.
    fn forwarded_answer(
        &self,
        result: Result<proto::RateLimitResp, ForwardError>,
        owner: String,
    ) -> proto::RateLimitResp {
        match result {
            Ok(response) => self.evaluator.owner_answered(response, owner),
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
        checked: Checked,
        owner: String,
        error: &ForwardError,
    ) -> proto::RateLimitResp {
        let policy = self.fallback.policy();
        if policy == OwnerFailurePolicy::Error || !owner_failure::owner_unreachable(error) {
            return owner_failure::error_response(&owner, error);
        }
        if checked.request.behavior.contains(Behavior::GLOBAL) {
            // A GLOBAL limit already has a local copy whose owed hits reconcile with the owner.
            let mut response = self.evaluator.global_copy(checked, owner);
            owner_failure::mark_fallback(&mut response);
            return response;
        }
        let (response, decision) = self.fallback.answer(&checked, owner);
        self.evaluator.record_decision(CallType::Local, decision);
        response
    }

    fn record_failure(&self, peer: &str, error: &ForwardError) {
        // A full local queue says nothing about the peer's health.
        if *error != ForwardError::QueueFull {
            self.failures
                .record(peer, &error.to_string(), Instant::now());
        }
    }

    /// Drops the clients and channels of peers that left: once per membership change (checked
    /// by every call, one atomic load when nothing changed).
    pub fn forget_departed_peers(&self) {
        let version = self.peers.version();
        if self.pruned_version.swap(version, Ordering::Relaxed) == version {
            return;
        }
        let membership = self.peers.membership();
        let addresses: Vec<&str> = membership
            .peers
            .iter()
            .map(|peer| peer.grpc_address.as_str())
            .collect();
        self.clients.retain(&addresses);
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

    /// Whether [`Router::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// The discovery backend membership depends on, when there is one.
    pub fn discovery(&self) -> Option<&BackendStatus> {
        self.discovery.as_ref()
    }

    /// A lazily connected channel to another node through `endpoint`, over the peers' transport
    /// (TLS when configured) and with the peer secret; see [`PeerClients::connect_lazy`].
    pub fn peer_channel(&self, endpoint: tonic::transport::Endpoint) -> PeerChannel {
        self.clients.connect_lazy(endpoint)
    }

    /// The evaluator items owned here go to.
    pub fn evaluator(&self) -> &Arc<Evaluator> {
        &self.evaluator
    }

    /// The membership view.
    pub fn peers(&self) -> &PeerList {
        &self.peers
    }

    /// The clients of the peers.
    pub fn peer_clients(&self) -> &PeerClients {
        &self.clients
    }

    /// Recent failed calls to peers.
    pub fn failures(&self) -> &PeerFailures {
        &self.failures
    }

    /// The state handoff transition state.
    pub fn handoff(&self) -> &HandoffState {
        &self.handoff
    }

    /// The fallback buckets and owed hits of `GUBER_OWNER_FAILURE_POLICY=local`.
    pub fn owner_fallback(&self) -> &OwnerFallback {
        &self.fallback
    }

    fn metrics(&self) -> &Metrics {
        self.evaluator.metrics()
    }
}

impl Owners for Router {
    fn owner_of(&self, key: &LimitKey) -> Option<String> {
        Router::owner_of(self, key)
    }

    fn budget(&self) -> MessageBudget {
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

/// Removes the metadata only peers may set (the handoff hop marker) from a client's item, so a
/// V1 client cannot make a node skip the handoff forwarding that keeps one evaluator per key.
fn strip_internal_metadata(item: &mut Item) {
    if !item.metadata.is_empty() {
        item.metadata.remove(handoff::HOP_METADATA_KEY);
    }
}

fn check_size(items: &[Item]) -> Result<(), CallError> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::Router;
    use crate::algorithms::Behavior;
    use crate::proto;
    use crate::request::LimitKey;
    use crate::server::RunningServer;
    use crate::test_nodes::{SilentPeer, node, node_with_a_silent_peer};

    /// A retry that lands here: on a node whose only peer is silent, a call for a key the silent
    /// peer owns (10 per minute, one hit, `behavior`) waits for it; meanwhile `meanwhile` runs,
    /// right after the silent peer has left the ring, so that the retry routes here. Returns the
    /// one answer and the key.
    async fn retried_here(
        server: &RunningServer,
        silent: &SilentPeer,
        name: &str,
        behavior: Behavior,
        meanwhile: impl FnOnce(&Router, &LimitKey),
    ) -> (proto::RateLimitResp, LimitKey) {
        let router: Arc<Router> = server.node().router().clone();
        let key = silent.owns_first(server, |i| LimitKey::new(name, format!("k{i}")), |_| true);
        let item = proto::RateLimitReq {
            name: key.name.clone(),
            unique_key: key.unique_key.clone(),
            hits: 1,
            limit: 10,
            duration: 60_000,
            behavior: behavior.bits(),
            ..Default::default()
        };
        let call = tokio::spawn({
            let router = router.clone();
            async move { router.get_rate_limits(vec![item.into()]).await }
        });
        // The first attempt waits for the silent owner (up to the batch timeout).
        tokio::time::sleep(Duration::from_millis(100)).await;
        router.peers().replace(vec![router.peers().me().clone()]);
        meanwhile(&router, &key);
        let mut answers = call.await.expect("joined").expect("answered");
        (answers.remove(0), key)
    }

    /// An item whose owner does not answer is retried once. When the ring names this node by
    /// then and a handoff is under way, the retry passes the handoff gate like any item evaluated
    /// here: a key this node has handed off goes to its new owner and is not evaluated here.
    #[tokio::test]
    async fn a_retry_that_lands_here_during_a_handoff_passes_the_handoff_gate() {
        let new_owner = node(&[]).await;
        let (server, silent) = node_with_a_silent_peer(&["--batch-timeout=2s"]).await;
        let handed_off = |router: &Router, key: &LimitKey| {
            router
                .handoff()
                .tombstone(key.clone(), &new_owner.grpc_address().to_string());
            router.handoff().begin_transition(&[], Instant::now());
        };
        let (answer, key) =
            retried_here(&server, &silent, "retried", Behavior::default(), handed_off).await;
        assert_eq!((answer.error.as_str(), answer.remaining), ("", 9));
        assert!(
            new_owner.node().store().get(&key).is_some(),
            "the retry did not reach the key's new owner"
        );
        assert!(
            server.node().store().get(&key).is_none(),
            "the retry was evaluated here, past the handoff gate"
        );
    }

    /// A GLOBAL item whose owner does not answer, retried when the ring names this node by
    /// then, is evaluated as its owner's is: the change is queued for broadcast to the copies.
    #[tokio::test]
    async fn a_global_retry_that_lands_here_is_evaluated_as_the_owner() {
        let (server, silent) =
            node_with_a_silent_peer(&["--batch-timeout=2s", "--global-sync-wait=1h"]).await;
        let (answer, key) = retried_here(
            &server,
            &silent,
            "retried-global",
            Behavior::GLOBAL,
            |_, _| {},
        )
        .await;
        assert_eq!((answer.error.as_str(), answer.remaining), ("", 9));
        assert_eq!(
            server
                .node()
                .router()
                .evaluator()
                .global()
                .take_broadcasts(),
            vec![key],
            "the owner's change was not queued for broadcast"
        );
    }
}
