//! The evaluator: every decision this node makes itself, against its own store.
//!
//! It holds the store, the clock, the admin recording and the item metrics, and the GLOBAL queues
//! that a decision fills (hits owed to an owner, state to broadcast). It is synchronous and does no
//! I/O: whether an item is evaluated here, and what to do when it is not, is the
//! [`Router`](crate::router::Router)'s business. Keeping the two apart is what lets GLOBAL,
//! handoff and the admin views use the store without reaching back into the cluster.

use std::sync::Arc;

use prometheus::IntCounter;

use crate::admin::{AdminOptions, AdminState};
use crate::algorithms::{Behavior, Decision, RateLimitRequest, Status};
use crate::clock::Clock;
use crate::global::{GlobalOptions, GlobalState, replica};
use crate::metrics::{ItemCounters, Metrics, PeerInputRejection};
use crate::owed::{self, Added, Owed};
use crate::proto;
use crate::request::{self, Checked, InputLimits, ItemError, KeyRef, LimitKey};
use crate::store::{Applied, Eviction, LimitStore};

/// The metadata key that names the owner in answers given by another node.
pub const OWNER_METADATA_KEY: &str = "owner";

/// What builds an [`Evaluator`].
pub struct EvaluatorOptions {
    /// The most buckets held in memory.
    pub cache_size: u64,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// Where to record metrics.
    pub metrics: Metrics,
    /// Limits on item fields.
    pub limits: InputLimits,
    /// The admin views' settings.
    pub admin: AdminOptions,
    /// How GLOBAL limits are reconciled.
    pub global: GlobalOptions,
}

/// This node's store and the decisions made against it.
pub struct Evaluator {
    store: LimitStore,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    counters: ItemCounters,
    limits: InputLimits,
    admin: AdminState,
    global: GlobalState,
}

/// The decisions of one call's items evaluated here, counted in the tally and added to the shared
/// counters once, when it is dropped. Every core updates those counters: adding to them per item
/// made each decision of a large call wait for their cache lines.
pub struct Tally<'a> {
    evaluator: &'a Evaluator,
    under: u64,
    over: u64,
    hits: u64,
    misses: u64,
}

impl Tally<'_> {
    /// Counts one decision made against the store.
    fn count(&mut self, applied: Applied) {
        match applied.decision.status {
            Status::UnderLimit => self.under += 1,
            Status::OverLimit => self.over += 1,
        }
        if applied.hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        let evaluator = self.evaluator;
        let counters = &evaluator.counters;
        add(&counters.local, self.under + self.over);
        add(&counters.under, self.under);
        add(&counters.over, self.over);
        add(&evaluator.metrics.over_limit_counter, self.over);
        add(&counters.cache_hit, self.hits);
        add(&counters.cache_miss, self.misses);
        evaluator.admin.add_decisions(self.under, self.over);
    }
}

/// Adds `n` to `counter`, without touching it when `n` is 0.
fn add(counter: &IntCounter, n: u64) {
    if n > 0 {
        counter.inc_by(n);
    }
}

/// How an item was answered, as `gubernator_getratelimit_counter{calltype}` counts it.
#[derive(Clone, Copy)]
pub(crate) enum CallType {
    /// Evaluated by this node as the owner.
    Local,
    /// Answered by the owner after a forward.
    Forward,
    /// Answered from this node's copy of a GLOBAL limit.
    Global,
}

impl Evaluator {
    /// An evaluator with an empty store.
    pub fn new(options: EvaluatorOptions) -> Self {
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
        Self {
            store,
            clock: options.clock,
            counters: options.metrics.item_counters(),
            metrics: options.metrics,
            limits: options.limits,
            admin: AdminState::new(options.admin),
            global: GlobalState::new(options.global),
        }
    }

    /// Evaluates an item this node owns against its store.
    pub fn local(&self, checked: Checked) -> proto::RateLimitResp {
        self.local_in(checked, self.clock.now_ms(), &mut self.tally())
    }

    /// Evaluates one of a call's items this node owns at the call's server time `now_ms`, counted
    /// in the call's `tally`.
    pub fn local_in(
        &self,
        checked: Checked,
        now_ms: i64,
        tally: &mut Tally<'_>,
    ) -> proto::RateLimitResp {
        self.local_at(KeyRef::from(&checked.key), &checked.request, now_ms, tally)
    }

    /// [`Evaluator::local_in`] of a validated item by its borrowed key: how a call's items are
    /// evaluated here without building their keys.
    pub fn local_at(
        &self,
        key: KeyRef<'_>,
        request: &RateLimitRequest,
        now_ms: i64,
        tally: &mut Tally<'_>,
    ) -> proto::RateLimitResp {
        let applied = self.store.apply_at(key, request, now_ms);
        tally.count(applied);
        if applied.decision.status == Status::OverLimit {
            self.admin.record_offender(key, now_ms);
        }
        decision_response(applied.decision)
    }

    /// A tally for the decisions of one call's items evaluated here.
    pub fn tally(&self) -> Tally<'_> {
        Tally {
            evaluator: self,
            under: 0,
            over: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Evaluates a GLOBAL item this node owns, and queues the new state for broadcast when it
    /// changed.
    pub fn global_as_owner(&self, checked: Checked) -> proto::RateLimitResp {
        let request = &checked.request;
        let changes = request.hits != 0 || request.behavior.contains(Behavior::RESET_REMAINING);
        let key = changes.then(|| checked.key.clone());
        let response = self.local(checked);
        if let Some(key) = key {
            self.queue_broadcast(key);
        }
        response
    }

    /// Evaluates one of a call's items this node owns as a peer asked: GLOBAL items as their
    /// owner. `now_ms` and `tally` as for [`Evaluator::local_in`].
    pub fn owned_in(
        &self,
        checked: Checked,
        now_ms: i64,
        tally: &mut Tally<'_>,
    ) -> proto::RateLimitResp {
        if checked.request.behavior.contains(Behavior::GLOBAL) {
            self.global_as_owner(checked)
        } else {
            self.local_in(checked, now_ms, tally)
        }
    }

    /// Evaluates a GLOBAL item against this non-owner's copy, answers at once, and queues the hits
    /// the owner is owed.
    pub fn global_copy(&self, checked: Checked, owner: String) -> proto::RateLimitResp {
        let applied = self.store.apply(&checked.key, &checked.request);
        self.record_decision(CallType::Global, applied.decision);
        self.admin
            .record(&checked.key, applied.decision.status, self.clock.as_ref());
        // The owner is owed what this copy consumed (see `owed::owes_owner`).
        if owed::owes_owner(&checked.request, &applied.decision) {
            let key = checked.key.clone();
            if self.global.queue_hits(key, checked.into_item()) == Added::Dropped {
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

    /// Evaluates `request` against the bucket of `key` only if this node holds one (during a
    /// handoff, a missing bucket may still be on its way).
    pub fn held(&self, key: &LimitKey, request: &RateLimitRequest) -> Option<proto::RateLimitResp> {
        let applied = self.store.apply_existing(key, request)?;
        self.admin
            .record(key, applied.decision.status, self.clock.as_ref());
        self.record_decision(CallType::Local, applied.decision);
        self.counters.cache_hit.inc();
        Some(decision_response(applied.decision))
    }

    fn queue_broadcast(&self, key: LimitKey) {
        if !self.global.queue_broadcast(key) {
            tracing::warn!("GLOBAL broadcast queue is full; a state change will not be broadcast");
        }
        self.metrics
            .global_queue_length
            .set(i64::try_from(self.global.broadcast_len()).unwrap_or(i64::MAX));
    }

    /// Applies GLOBAL hits owed to the owner when this node has become the owner itself.
    pub fn apply_owed_hits(&self, entries: &[Owed]) {
        let now_ms = self.clock.now_ms();
        for (_, item) in entries {
            if let Ok(checked) = request::check(item.clone(), now_ms, self.limits) {
                self.global_as_owner(checked);
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

    /// Keeps the owner's answer to a forwarded GLOBAL item as this node's copy of `key`.
    pub fn keep_copy(
        &self,
        key: LimitKey,
        answer: &proto::RateLimitResp,
        request: &RateLimitRequest,
    ) {
        if answer.error.is_empty() {
            self.store.put(key, replica::from_answer(answer, request));
        }
    }

    /// Overwrites this node's copies with an owner's broadcast (`UpdatePeerGlobals`). Updates for
    /// keys `owned_here` says this node owns, and keys longer than two valid keys joined, are
    /// ignored and counted.
    pub fn update_copies(
        &self,
        globals: Vec<proto::UpdatePeerGlobal>,
        owned_here: impl Fn(&str) -> bool,
    ) {
        let now_ms = self.clock.now_ms();
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
            if owned_here(&update.key) {
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

    /// The owner's answer to a forwarded item, counted and marked with `metadata.owner`.
    pub fn owner_answered(
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

    /// Counts an item's decision in the item metrics.
    pub(crate) fn record_decision(&self, calltype: CallType, decision: Decision) {
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

    /// The answer to an item that failed validation, counted by reason.
    pub fn item_error(&self, error: ItemError) -> proto::RateLimitResp {
        self.metrics
            .check_error_counter
            .with_label_values(&[error.label()])
            .inc();
        proto::RateLimitResp {
            error: error.to_string(),
            ..Default::default()
        }
    }

    /// Brings the gauges read from the store (cache size, active keys) up to date.
    pub fn sync_gauges(&self) {
        self.store.sync();
        let held = i64::try_from(self.store.len()).unwrap_or(i64::MAX);
        self.metrics.cache_size.set(held);
        self.metrics.r8_active_keys.set(held);
    }

    /// The store.
    pub fn store(&self) -> &LimitStore {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The limits on item fields (`GUBER_MAX_KEY_LENGTH`), which also bound what peers send.
    pub fn limits(&self) -> InputLimits {
        self.limits
    }

    /// The admin counters, summaries and settings.
    pub fn admin(&self) -> &AdminState {
        &self.admin
    }

    /// The GLOBAL queues.
    pub fn global(&self) -> &GlobalState {
        &self.global
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::admin::AdminOptions;
    use crate::clock::ManualClock;
    use crate::global::GlobalOptions;

    fn evaluator() -> Evaluator {
        Evaluator::new(EvaluatorOptions {
            cache_size: 100,
            clock: Arc::new(ManualClock::new(1_000_000)),
            metrics: Metrics::new(),
            limits: InputLimits::default(),
            admin: AdminOptions::default(),
            global: GlobalOptions::default(),
        })
    }

    fn checked(evaluator: &Evaluator, unique_key: &str) -> Checked {
        let item = proto::RateLimitReq {
            name: "n".to_string(),
            unique_key: unique_key.to_string(),
            hits: 1,
            limit: 2,
            duration: 60_000,
            ..Default::default()
        };
        request::check(item, evaluator.clock().now_ms(), evaluator.limits()).expect("valid item")
    }

    /// (local, under, over, over_limit_counter, hits, misses, admin under, admin over)
    fn counts(evaluator: &Evaluator) -> [u64; 8] {
        let metrics = evaluator.metrics();
        let (admin_under, admin_over) = evaluator.admin().decisions();
        [
            metrics
                .getratelimit_counter
                .with_label_values(&["local"])
                .get(),
            metrics.decisions.with_label_values(&["under"]).get(),
            metrics.decisions.with_label_values(&["over"]).get(),
            metrics.over_limit_counter.get(),
            metrics.cache_access_count.with_label_values(&["hit"]).get(),
            metrics
                .cache_access_count
                .with_label_values(&["miss"])
                .get(),
            admin_under,
            admin_over,
        ]
    }

    #[test]
    fn a_calls_decisions_are_counted_once_its_tally_is_dropped() {
        let evaluator = evaluator();
        let now_ms = evaluator.clock().now_ms();
        let mut tally = evaluator.tally();
        // Limit 2: a miss, a hit, then a hit over the limit; and a miss on another key.
        let statuses: Vec<i32> = ["a", "a", "a", "b"]
            .into_iter()
            .map(|key| {
                let checked = checked(&evaluator, key);
                evaluator.local_in(checked, now_ms, &mut tally).status
            })
            .collect();
        assert_eq!(statuses, [0, 0, 1, 0]);
        assert_eq!(counts(&evaluator), [0; 8], "counted before the call ended");
        // The refusal is in the offender summaries at once.
        assert_eq!(
            evaluator
                .admin()
                .offenders(crate::admin::offenders::Window::Minute, now_ms)
                .top(1)[0]
                .unique_key,
            "a"
        );
        drop(tally);
        assert_eq!(counts(&evaluator), [4, 3, 1, 1, 2, 2, 3, 1]);
        // One item alone is counted at once.
        evaluator.local(checked(&evaluator, "b"));
        assert_eq!(counts(&evaluator), [5, 4, 1, 1, 3, 2, 4, 1]);
    }
}
