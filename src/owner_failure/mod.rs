//! What a node answers when the owner of a key cannot be reached (`GUBER_OWNER_FAILURE_POLICY`).
//!
//! A forwarded item whose owner timed out, refused the connection, left, or is marked down (see
//! [`crate::peers::liveness`]) is answered by policy:
//!
//! - **`error`** (the default, Gubernator's behaviour): a per-item error that names the owner. The
//!   limit is never over-admitted, but callers must decide what to do without an answer.
//! - **`local`**: the receiving node answers from a *fallback bucket* of its own (a separate,
//!   bounded store, so fallback state is never mistaken for owned state), marks the answer with
//!   `metadata.fallback = "local"`, and owes the owner the hits it admitted. Owed hits are summed
//!   per limit and sent by the reconciler GLOBAL limits use ([`crate::owed`]) every sync interval, with
//!   `DRAIN_OVER_LIMIT`, to whoever owns the key then: the old owner when it comes back, a new owner
//!   once the dead one has left the ring, or this node itself. Undelivered hits are put back. GLOBAL
//!   items use the node's GLOBAL copy instead, whose owed hits already reconcile the same way.
//!
//! Under `local`, while the owner is unreachable every node that receives a key admits up to its
//! limit per window from its own fallback bucket; `docs/reliability.md` states the bound.

use std::sync::Arc;
use std::time::Duration;

use crate::algorithms::{Behavior, Decision};
use crate::batching::ForwardError;
use crate::clock::Clock;
use crate::evaluator::{OWNER_METADATA_KEY, decision_response};
use crate::owed::{Added, Ledger, Owed, owes_owner};
use crate::proto;
use crate::request::Checked;
use crate::store::LimitStore;

/// The metadata key set on answers given without the owner; its value names the policy
/// (`local`).
pub const FALLBACK_METADATA_KEY: &str = "fallback";

/// What to answer for items whose owner cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerFailurePolicy {
    /// A per-item error naming the owner (Gubernator's behaviour).
    #[default]
    Error,
    /// Answer from a local fallback bucket and send the admitted hits to the owner later.
    Local,
}

impl OwnerFailurePolicy {
    /// The policy's configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerFailurePolicy::Error => "error",
            OwnerFailurePolicy::Local => "local",
        }
    }
}

/// How a node handles unreachable owners.
#[derive(Debug, Clone)]
pub struct OwnerFailureOptions {
    /// The policy (`GUBER_OWNER_FAILURE_POLICY`).
    pub policy: OwnerFailurePolicy,
    /// The most fallback buckets held (the cache size).
    pub fallback_capacity: u64,
    /// The most limits with owed hits held; beyond it new ones are dropped (and logged).
    pub max_pending: usize,
    /// How often owed hits are sent (`GUBER_GLOBAL_SYNC_WAIT`).
    pub sync_wait: Duration,
    /// Timeout of one reconciliation call (`GUBER_BATCH_TIMEOUT`).
    pub timeout: Duration,
}

impl Default for OwnerFailureOptions {
    fn default() -> Self {
        Self {
            policy: OwnerFailurePolicy::Error,
            fallback_capacity: 50_000,
            max_pending: 100_000,
            sync_wait: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
        }
    }
}

/// Whether `error` means the owner could not be reached, so the policy applies. Other failures
/// (a full local queue, an owner that refused the request) are answered as errors whatever the
/// policy: answering locally would hide overload rather than an outage.
pub fn owner_unreachable(error: &ForwardError) -> bool {
    error.is_retryable()
}

/// The per-item error for an item whose owner could not be reached; it names the owner, in
/// Gubernator's wording.
pub fn error_response(owner: &str, error: &ForwardError) -> proto::RateLimitResp {
    proto::RateLimitResp {
        error: format!("error while forwarding to owner {owner}: {error}"),
        metadata: [(OWNER_METADATA_KEY.to_string(), owner.to_string())].into(),
        ..Default::default()
    }
}

/// Marks an answer as given without its owner.
pub fn mark_fallback(response: &mut proto::RateLimitResp) {
    response.metadata.insert(
        FALLBACK_METADATA_KEY.to_string(),
        OwnerFailurePolicy::Local.as_str().to_string(),
    );
}

/// A node's fallback buckets and the hits it owes owners.
pub struct OwnerFallback {
    options: OwnerFailureOptions,
    store: LimitStore,
    owed: Ledger,
}

impl OwnerFallback {
    /// Empty fallback state; time from `clock` (the node's clock).
    pub fn new(options: OwnerFailureOptions, clock: Arc<dyn Clock>) -> Self {
        Self {
            store: LimitStore::new(options.fallback_capacity.max(1), clock),
            // Sent on the sync interval only: nothing wakes this reconciler early.
            owed: Ledger::new(options.max_pending, usize::MAX),
            options,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> OwnerFailurePolicy {
        self.options.policy
    }

    /// The options in force.
    pub fn options(&self) -> &OwnerFailureOptions {
        &self.options
    }

    /// Answers `checked` from this node's fallback bucket, and records the hits owed to the
    /// owner. Returns the answer and the decision.
    pub fn answer(&self, checked: &Checked, owner: String) -> (proto::RateLimitResp, Decision) {
        let request = &checked.request;
        let decision = self.store.apply(&checked.key, request).decision;
        if owes_owner(request, &decision) {
            let mut owed = checked.to_item();
            owed.behavior |= Behavior::DRAIN_OVER_LIMIT.bits();
            if self.owed.add(checked.key.clone(), owed) == Added::Dropped {
                tracing::warn!(
                    "too many limits owe hits to unreachable owners; hits taken locally are dropped"
                );
            }
        }
        let mut response = decision_response(decision);
        response
            .metadata
            .insert(OWNER_METADATA_KEY.to_string(), owner);
        mark_fallback(&mut response);
        (response, decision)
    }

    /// Takes every limit's owed hits, oldest first.
    pub fn take_owed(&self) -> Vec<Owed> {
        self.owed.take()
    }

    /// Puts back owed hits that could not be delivered; returns how many limits were dropped.
    pub fn put_back(&self, failed: Vec<Owed>) -> usize {
        self.owed.put_back(failed)
    }

    /// The hits owed to owners that were unreachable.
    pub fn ledger(&self) -> &Ledger {
        &self.owed
    }

    /// The number of limits with owed hits.
    pub fn owed_len(&self) -> usize {
        self.owed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::request::LimitKey;
    use crate::request::{self, InputLimits};

    fn item(hits: i64, limit: i64) -> proto::RateLimitReq {
        proto::RateLimitReq {
            name: "n".into(),
            unique_key: "k".into(),
            hits,
            limit,
            duration: 60_000,
            ..Default::default()
        }
    }

    /// The `local` policy's fallback, on a manual clock at 1 000 000 ms.
    struct Local {
        clock: Arc<ManualClock>,
        fallback: OwnerFallback,
    }

    impl Local {
        fn new() -> Self {
            let clock = Arc::new(ManualClock::new(1_000_000));
            let options = OwnerFailureOptions {
                policy: OwnerFailurePolicy::Local,
                ..OwnerFailureOptions::default()
            };
            let fallback = OwnerFallback::new(options, Arc::clone(&clock) as Arc<dyn Clock>);
            Local { clock, fallback }
        }

        /// The fallback's answer to `item` while its owner, b:1051, is unreachable.
        fn answer(&self, item: proto::RateLimitReq) -> proto::RateLimitResp {
            let checked = request::check(item, self.clock.now_ms(), InputLimits::default())
                .expect("valid item");
            self.fallback.answer(&checked, "b:1051".into()).0
        }
    }

    #[test]
    fn the_error_answer_names_the_owner() {
        let response = error_response("b:1051", &ForwardError::Unavailable("refused".into()));
        assert_eq!(
            response.error,
            "error while forwarding to owner b:1051: peer unavailable: refused"
        );
        assert_eq!(response.metadata[OWNER_METADATA_KEY], "b:1051");
    }

    #[test]
    fn only_unreachable_owners_trigger_the_policy() {
        assert!(owner_unreachable(&ForwardError::Timeout(
            Duration::from_millis(500)
        )));
        assert!(owner_unreachable(&ForwardError::PeerDown("down".into())));
        assert!(owner_unreachable(&ForwardError::Closed));
        assert!(!owner_unreachable(&ForwardError::QueueFull));
        assert!(!owner_unreachable(&ForwardError::Status {
            code: tonic::Code::ResourceExhausted,
            message: "busy".into()
        }));
    }

    #[test]
    fn the_fallback_bucket_admits_up_to_the_limit_and_owes_only_admitted_hits() {
        let local = Local::new();
        let mut admitted = 0;
        for _ in 0..8 {
            let response = local.answer(item(1, 5));
            assert_eq!(response.error, "");
            assert_eq!(response.metadata[FALLBACK_METADATA_KEY], "local");
            assert_eq!(response.metadata[OWNER_METADATA_KEY], "b:1051");
            if response.status == proto::Status::UnderLimit as i32 {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 5);
        let owed = local.fallback.take_owed();
        assert_eq!(owed.len(), 1);
        let (key, owed) = &owed[0];
        assert_eq!(key, &LimitKey::new("n", "k"));
        assert_eq!(owed.hits, 5, "refused hits are not owed");
        assert_eq!(owed.created_at, Some(1_000_000));
        assert!(Behavior::from_bits(owed.behavior).contains(Behavior::DRAIN_OVER_LIMIT));
        assert_eq!(local.fallback.owed_len(), 0);
    }

    #[test]
    fn reads_owe_nothing_and_resets_are_owed() {
        let local = Local::new();
        local.answer(item(0, 5));
        assert_eq!(local.fallback.owed_len(), 0);
        let mut reset = item(0, 5);
        reset.behavior = Behavior::RESET_REMAINING.bits();
        local.answer(reset);
        assert_eq!(local.fallback.owed_len(), 1);
    }

    #[test]
    fn undelivered_hits_are_put_back_and_merged_with_newer_ones() {
        let local = Local::new();
        local.answer(item(2, 10));
        let failed = local.fallback.take_owed();
        local.clock.advance(1_000);
        local.answer(item(3, 10));
        assert_eq!(local.fallback.put_back(failed), 0);
        let owed = local.fallback.take_owed();
        assert_eq!(owed[0].1.hits, 5);
        assert_eq!(
            owed[0].1.created_at,
            Some(1_000_000),
            "the older window start"
        );
    }

    #[test]
    fn a_new_window_admits_again() {
        let local = Local::new();
        assert_eq!(
            local.answer(item(5, 5)).status,
            proto::Status::UnderLimit as i32
        );
        assert_eq!(
            local.answer(item(1, 5)).status,
            proto::Status::OverLimit as i32
        );
        local.clock.advance(60_001);
        assert_eq!(
            local.answer(item(1, 5)).status,
            proto::Status::UnderLimit as i32
        );
    }

    #[test]
    fn the_default_policy_is_error() {
        assert_eq!(OwnerFailurePolicy::default(), OwnerFailurePolicy::Error);
        assert_eq!(OwnerFailurePolicy::Local.as_str(), "local");
    }
}
