//! The in-memory store of rate limits: a bounded `moka` cache with per-entry expiry.
//!
//! Every evaluation reads a bucket, decides, and writes the result back. Doing that as a get then an
//! insert loses updates when two requests for one key race, so [`LimitStore::apply`] runs the whole
//! evaluation inside moka's per-key `and_compute_with`: updates to one key are serialised, updates to
//! different keys run in parallel.
//!
//! The algorithms decide expiry by the injected clock; moka's own expiry only reclaims memory and is
//! set just after the bucket's expiry, so it never removes a bucket the algorithms still consider
//! live.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;

use crate::algorithms::{self, Bucket, Decision, Next, RateLimitRequest};
use crate::clock::Clock;
use crate::request::LimitKey;

/// The outcome of applying one request to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The answer.
    pub decision: Decision,
    /// Whether a live bucket was found for the key (a cache hit).
    pub hit: bool,
}

/// Why a bucket left memory without being deleted by a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Evicted for room before it expired (the store is full).
    Size,
    /// Removed after its window ended.
    Expired,
}

/// A callback told whenever the cache evicts a bucket.
pub type EvictionListener = Arc<dyn Fn(Eviction) + Send + Sync>;

/// The bounded store of buckets, keyed by [`LimitKey`].
#[derive(Clone)]
pub struct LimitStore {
    cache: Cache<LimitKey, Bucket>,
    clock: Arc<dyn Clock>,
}

impl LimitStore {
    /// A store holding at most `capacity` buckets, reading time from `clock`.
    pub fn new(capacity: u64, clock: Arc<dyn Clock>) -> Self {
        Self::with_eviction_listener(capacity, clock, Arc::new(|_| {}))
    }

    /// Like [`LimitStore::new`], calling `on_eviction` for every bucket evicted for room or
    /// removed after it expired.
    pub fn with_eviction_listener(
        capacity: u64,
        clock: Arc<dyn Clock>,
        on_eviction: EvictionListener,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(ExpireAtBucketEnd {
                clock: Arc::clone(&clock),
            })
            .eviction_listener(move |_key, _bucket, cause| match cause {
                RemovalCause::Size => on_eviction(Eviction::Size),
                RemovalCause::Expired => on_eviction(Eviction::Expired),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Self { cache, clock }
    }

    /// Evaluates `request` against the bucket of `key` and stores the result, atomically per key.
    pub fn apply(&self, key: LimitKey, request: &RateLimitRequest) -> Applied {
        self.apply_and_inspect(key, request, |_, _| {})
    }

    /// Like [`LimitStore::apply`], then shows the key and the outcome to `inspect` (after the
    /// key's lock is released, without cloning the key): how the admin views see each decision.
    pub fn apply_and_inspect(
        &self,
        key: LimitKey,
        request: &RateLimitRequest,
        inspect: impl FnOnce(&LimitKey, &Applied),
    ) -> Applied {
        let mut outcome = Applied {
            decision: Decision::default(),
            hit: false,
        };
        let result = self.cache.entry(key).and_compute_with(|entry| {
            let now_ms = self.clock.now_ms();
            let stored = entry.as_ref().map(|entry| entry.value());
            outcome.hit = stored.is_some_and(|bucket| !bucket.is_expired(now_ms));
            let evaluation = algorithms::evaluate(stored, request, now_ms);
            outcome.decision = evaluation.decision;
            match evaluation.next {
                Next::Unchanged => Op::Nop,
                Next::Put(bucket) => Op::Put(bucket),
                Next::Remove => Op::Remove,
            }
        });
        inspect(stored_key(&result), &outcome);
        outcome
    }

    /// The stored bucket of `key`, if it is still live; never changes anything.
    pub fn get(&self, key: &LimitKey) -> Option<Bucket> {
        let now_ms = self.clock.now_ms();
        self.cache
            .get(key)
            .filter(|bucket| !bucket.is_expired(now_ms))
    }

    /// Stores `bucket` for `key`, replacing what was there.
    pub fn put(&self, key: LimitKey, bucket: Bucket) {
        self.cache.insert(key, bucket);
    }

    /// The number of buckets held (approximate: moka counts lazily).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether the store holds no buckets (approximate, like [`LimitStore::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs moka's pending housekeeping so that counts and evictions are up to date.
    pub fn sync(&self) {
        self.cache.run_pending_tasks();
    }
}

/// The key a compute operation ran on.
fn stored_key(result: &CompResult<LimitKey, Bucket>) -> &LimitKey {
    match result {
        CompResult::StillNone(key) => key,
        CompResult::Unchanged(entry)
        | CompResult::Inserted(entry)
        | CompResult::ReplacedWith(entry)
        | CompResult::Removed(entry) => entry.key(),
    }
}

/// moka expiry policy: each bucket lives until just after its own `expire_at`.
struct ExpireAtBucketEnd {
    clock: Arc<dyn Clock>,
}

impl ExpireAtBucketEnd {
    fn time_to_live(&self, bucket: &Bucket) -> Duration {
        // +1 ms: a bucket is live through its expiry millisecond (it expires once strictly past it).
        let ms = bucket
            .expire_at()
            .saturating_sub(self.clock.now_ms())
            .saturating_add(1);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

impl moka::Expiry<LimitKey, Bucket> for ExpireAtBucketEnd {
    fn expire_after_create(
        &self,
        _key: &LimitKey,
        bucket: &Bucket,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.time_to_live(bucket))
    }

    fn expire_after_update(
        &self,
        _key: &LimitKey,
        bucket: &Bucket,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.time_to_live(bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::{Algorithm, Behavior, LimitDuration, Status};
    use crate::clock::{ManualClock, SystemClock};

    fn token_request(hits: i64, limit: i64) -> RateLimitRequest {
        RateLimitRequest {
            hits,
            limit,
            duration: LimitDuration::Millis(60_000),
            algorithm: Algorithm::TokenBucket,
            behavior: Behavior::default(),
            burst: 0,
            created_at: 1_000_000,
        }
    }

    #[test]
    fn concurrent_hits_on_one_key_are_never_lost_or_doubled() {
        let store = LimitStore::new(1000, Arc::new(SystemClock));
        let limit = 500;
        let mut request = token_request(1, limit);
        request.created_at = SystemClock.now_ms();
        let admitted = std::sync::atomic::AtomicI64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..64 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        let applied = store.apply(LimitKey::new("n", "k"), &request);
                        if applied.decision.status == Status::UnderLimit {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        // 64 × 20 = 1280 attempts; exactly `limit` admitted.
        assert_eq!(admitted.into_inner(), limit);
    }

    #[test]
    fn colliding_hash_keys_are_separate_limits() {
        let store = LimitStore::new(10, Arc::new(ManualClock::new(1_000_000)));
        let first = store.apply(LimitKey::new("a_b", "c"), &token_request(1, 5));
        let second = store.apply(LimitKey::new("a", "b_c"), &token_request(1, 5));
        assert_eq!(first.decision.remaining, 4);
        assert_eq!(second.decision.remaining, 4);
        assert!(!second.hit);
    }

    #[test]
    fn get_never_changes_state_and_reports_hits() {
        let store = LimitStore::new(10, Arc::new(ManualClock::new(1_000_000)));
        let key = LimitKey::new("n", "k");
        assert!(store.get(&key).is_none());
        assert!(!store.apply(key.clone(), &token_request(1, 5)).hit);
        let before = store.get(&key);
        assert_eq!(store.get(&key), before);
        assert!(store.apply(key, &token_request(1, 5)).hit);
    }

    #[test]
    fn expired_buckets_are_treated_as_missing() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = LimitStore::new(10, clock.clone());
        let key = LimitKey::new("n", "k");
        store.apply(key.clone(), &token_request(5, 5));
        clock.advance(60_001);
        assert!(store.get(&key).is_none());
        let mut later = token_request(1, 5);
        later.created_at = clock.now_ms();
        let applied = store.apply(key, &later);
        assert!(!applied.hit);
        assert_eq!(applied.decision.remaining, 4);
    }

    #[test]
    fn capacity_is_bounded() {
        let store = LimitStore::new(100, Arc::new(ManualClock::new(1_000_000)));
        for i in 0..1000 {
            store.apply(LimitKey::new("n", i.to_string()), &token_request(1, 5));
        }
        store.sync();
        assert!(store.len() <= 100, "store holds {}", store.len());
    }
}
