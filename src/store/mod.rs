//! The in-memory store of rate limits: a bounded, sharded map of buckets.
//!
//! Every evaluation reads a bucket, decides, and writes the result back. Doing that as a get then an
//! insert loses updates when two requests for one key race, so [`LimitStore::apply`] runs the whole
//! evaluation while holding the key's shard lock: updates to one key are serialised, updates to keys
//! in different shards run in parallel. The evaluation is a pure function of a few dozen
//! nanoseconds, so the lock is held for about as long as the hash lookup.
//!
//! Why not a general-purpose concurrent cache: the store was first built on `moka`, whose
//! `and_compute_with` cost 2–5 µs per decision and about 670 bytes per key (reference counts,
//! access-order links, a timer wheel, a per-key lock map). A rate limiter needs none of that
//! machinery: it needs one atomic read-modify-write per decision and a bound on memory. The shards
//! here (`shard`) keep a dense vector of entries and a table of `u32` indices, and evict by
//! sampled LRU, which measured ~100 ns per decision and ~130 bytes per key (`BENCHMARKS.md`).
//!
//! The algorithms decide expiry by the injected clock; the store only reclaims the memory of
//! expired buckets (a few at each insert, all of them in [`LimitStore::sync`]) and prefers them
//! when it must evict for room.

mod shard;

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::algorithms::{self, Bucket, Decision, Next, RateLimitRequest};
use crate::clock::Clock;
use crate::request::{KeyRef, LimitKey};

use shard::Shard;

/// The most shards a store is split into; enough that a few busy cores rarely contend.
const MAX_SHARDS: usize = 64;
/// A store is split into one shard per this many buckets of capacity (at least one shard), so
/// small stores keep an exact LRU-like bound and large ones spread their locks.
const BUCKETS_PER_SHARD: u64 = 1024;

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

/// A callback told whenever the store evicts a bucket.
pub type EvictionListener = Arc<dyn Fn(Eviction) + Send + Sync>;

/// The bounded store of buckets, keyed by [`LimitKey`]. Cloning shares the store.
#[derive(Clone)]
pub struct LimitStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::quality::RandomState,
    clock: Arc<dyn Clock>,
    on_eviction: EvictionListener,
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
        let shard_count = shard_count(capacity);
        let hasher = foldhash::quality::RandomState::default();
        let seed = hasher.hash_one(capacity);
        let shards = shard_capacities(capacity, shard_count)
            .enumerate()
            .map(|(i, shard_capacity)| {
                Mutex::new(Shard::new(shard_capacity, seed.wrapping_add(i as u64)))
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                hasher,
                clock,
                on_eviction,
            }),
        }
    }

    /// Evaluates `request` against the bucket of `key` and stores the result, atomically per key.
    pub fn apply(&self, key: &LimitKey, request: &RateLimitRequest) -> Applied {
        self.apply_at(key, request, self.inner.clock.now_ms())
    }

    /// Like [`LimitStore::apply`] at server time `now_ms`, read by the caller: a call's items
    /// share the time read once for the call, as they share its `created_at`.
    pub fn apply_at<'a>(
        &self,
        key: impl Into<KeyRef<'a>>,
        request: &RateLimitRequest,
        now_ms: i64,
    ) -> Applied {
        let key = key.into();
        let hash = self.hash(key);
        let mut shard = self.lock_shard(hash);
        if let Some(bucket) = shard.get_mut(hash, key.name, key.unique_key) {
            let hit = !bucket.is_expired(now_ms);
            let evaluation = algorithms::evaluate(Some(bucket), request, now_ms);
            if update_in_place(bucket, evaluation.next) {
                shard.remove(hash, key.name, key.unique_key);
            }
            return Applied {
                decision: evaluation.decision,
                hit,
            };
        }
        let evaluation = algorithms::evaluate(None, request, now_ms);
        if let Next::Put(bucket) = evaluation.next {
            self.insert_new(&mut shard, hash, key, bucket, now_ms);
        }
        Applied {
            decision: evaluation.decision,
            hit: false,
        }
    }

    /// Like [`LimitStore::apply`], but only when `key` holds a live bucket; `None` (and nothing
    /// changed) when it does not, so the caller can route the request elsewhere.
    pub fn apply_existing(&self, key: &LimitKey, request: &RateLimitRequest) -> Option<Applied> {
        let hash = self.hash(key.into());
        let mut shard = self.lock_shard(hash);
        let now_ms = self.inner.clock.now_ms();
        let bucket = shard
            .get_mut(hash, &key.name, &key.unique_key)
            .filter(|bucket| !bucket.is_expired(now_ms))?;
        let evaluation = algorithms::evaluate(Some(bucket), request, now_ms);
        if update_in_place(bucket, evaluation.next) {
            shard.remove(hash, &key.name, &key.unique_key);
        }
        Some(Applied {
            decision: evaluation.decision,
            hit: true,
        })
    }

    /// Replaces the bucket of `key` with what `merge` makes of the stored one (`None` given when
    /// there is none or it expired), atomically per key; `merge` returning `None` changes nothing.
    /// `merge` gets the server time. Returns whether the store changed.
    pub fn merge_in(
        &self,
        key: LimitKey,
        merge: impl FnOnce(Option<&Bucket>, i64) -> Option<Bucket>,
    ) -> bool {
        let hash = self.hash((&key).into());
        let mut shard = self.lock_shard(hash);
        let now_ms = self.inner.clock.now_ms();
        if let Some(stored) = shard.get_mut(hash, &key.name, &key.unique_key) {
            let live = (!stored.is_expired(now_ms)).then_some(&*stored);
            return match merge(live, now_ms) {
                Some(bucket) => {
                    *stored = bucket;
                    true
                }
                None => false,
            };
        }
        let Some(bucket) = merge(None, now_ms) else {
            return false;
        };
        self.insert_new(&mut shard, hash, (&key).into(), bucket, now_ms);
        true
    }

    /// Removes `key` only if its bucket is still `expected`, atomically per key. `Ok` when it was
    /// removed or is already gone; `Err(current)` when it changed since.
    pub fn remove_if_unchanged(&self, key: &LimitKey, expected: &Bucket) -> Result<(), Bucket> {
        let hash = self.hash(key.into());
        let mut shard = self.lock_shard(hash);
        match shard.peek(hash, &key.name, &key.unique_key) {
            Some(current) if current != expected => Err(*current),
            Some(_) => {
                shard.remove(hash, &key.name, &key.unique_key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The stored bucket of `key`, if it is still live; never changes anything.
    pub fn get(&self, key: &LimitKey) -> Option<Bucket> {
        let hash = self.hash(key.into());
        let shard = self.lock_shard(hash);
        let now_ms = self.inner.clock.now_ms();
        shard
            .peek(hash, &key.name, &key.unique_key)
            .filter(|bucket| !bucket.is_expired(now_ms))
            .copied()
    }

    /// Stores `bucket` for `key`, replacing what was there.
    pub fn put(&self, key: LimitKey, bucket: Bucket) {
        let hash = self.hash((&key).into());
        let mut shard = self.lock_shard(hash);
        if let Some(stored) = shard.get_mut(hash, &key.name, &key.unique_key) {
            *stored = bucket;
            return;
        }
        let now_ms = self.inner.clock.now_ms();
        self.insert_new(&mut shard, hash, (&key).into(), bucket, now_ms);
    }

    /// Removes the bucket of `key`; whether there was one.
    pub fn remove(&self, key: &LimitKey) -> bool {
        let hash = self.hash(key.into());
        self.lock_shard(hash)
            .remove(hash, &key.name, &key.unique_key)
    }

    /// The number of buckets held, including expired ones not yet reclaimed.
    pub fn len(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).len() as u64)
            .sum()
    }

    /// Whether the store holds no buckets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reclaims every expired bucket now (reporting each to the eviction listener), so that
    /// [`LimitStore::len`] counts only live buckets.
    pub fn sync(&self) {
        let now_ms = self.inner.clock.now_ms();
        let listener = &self.inner.on_eviction;
        for shard in &self.inner.shards {
            lock(shard).remove_expired(now_ms, &mut |cause| listener(cause));
        }
    }

    /// Every live bucket with its key, one shard at a time (a consistent view of each shard, not
    /// of the whole store).
    pub fn entries(&self) -> Vec<(LimitKey, Bucket)> {
        let now_ms = self.inner.clock.now_ms();
        let mut entries = Vec::new();
        for shard in &self.inner.shards {
            let shard = lock(shard);
            entries.extend(
                shard
                    .iter()
                    .filter(|(_, _, bucket)| !bucket.is_expired(now_ms))
                    .map(|(name, unique_key, bucket)| (LimitKey::new(name, unique_key), *bucket)),
            );
        }
        entries
    }

    /// The key of every live bucket (see [`entries`](Self::entries)).
    pub fn keys(&self) -> Vec<LimitKey> {
        self.entries().into_iter().map(|(key, _)| key).collect()
    }

    /// Bytes of heap the store holds for its buckets and keys (not counting allocator overhead).
    pub fn heap_bytes(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).heap_bytes())
            .sum()
    }

    /// Stores a bucket for a key the locked `shard` does not hold, telling the eviction listener
    /// what leaves to make room.
    fn insert_new(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: KeyRef<'_>,
        bucket: Bucket,
        now_ms: i64,
    ) {
        let listener = &self.inner.on_eviction;
        shard.insert_new(
            hash,
            key.name,
            key.unique_key,
            bucket,
            now_ms,
            &mut |cause| listener(cause),
        );
    }

    fn hash(&self, key: KeyRef<'_>) -> u64 {
        let mut hasher = self.inner.hasher.build_hasher();
        hasher.write(key.name.as_bytes());
        // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") hash differently.
        hasher.write_u8(0xff);
        hasher.write(key.unique_key.as_bytes());
        hasher.finish()
    }

    fn lock_shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Bits 32.. choose the shard; the table inside uses the low bits and the top 7, so the two
        // choices stay independent.
        let index = ((hash >> 32) as usize) % self.inner.shards.len();
        lock(&self.inner.shards[index])
    }
}

/// Locks a shard. A panic while a shard was locked cannot leave a bucket half-written (buckets are
/// replaced whole), so a poisoned lock is simply taken over.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How many shards a store of `capacity` buckets is split into.
fn shard_count(capacity: u64) -> usize {
    let wanted = usize::try_from(capacity / BUCKETS_PER_SHARD).unwrap_or(MAX_SHARDS);
    wanted.clamp(1, MAX_SHARDS)
}

/// Splits `capacity` over `shards` so that the parts add up to exactly `capacity`.
fn shard_capacities(capacity: u64, shards: usize) -> impl Iterator<Item = usize> {
    let shards_u64 = shards as u64;
    let base = capacity / shards_u64;
    let extra = capacity % shards_u64;
    (0..shards_u64).map(move |i| usize::try_from(base + u64::from(i < extra)).unwrap_or(usize::MAX))
}

/// Makes the stored `bucket` what its evaluation decided (`next`); `true` when it must be removed
/// instead, which the caller does (it holds the shard the bucket is borrowed from).
#[inline]
fn update_in_place(bucket: &mut Bucket, next: Next) -> bool {
    match next {
        Next::Unchanged => false,
        Next::Put(next) => {
            *bucket = next;
            false
        }
        Next::Remove => true,
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
                        let applied = store.apply(&LimitKey::new("n", "k"), &request);
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
        let first = store.apply(&LimitKey::new("a_b", "c"), &token_request(1, 5));
        let second = store.apply(&LimitKey::new("a", "b_c"), &token_request(1, 5));
        assert_eq!(first.decision.remaining, 4);
        assert_eq!(second.decision.remaining, 4);
        assert!(!second.hit);
    }

    #[test]
    fn get_never_changes_state_and_reports_hits() {
        let store = LimitStore::new(10, Arc::new(ManualClock::new(1_000_000)));
        let key = LimitKey::new("n", "k");
        assert!(store.get(&key).is_none());
        assert!(!store.apply(&key, &token_request(1, 5)).hit);
        let before = store.get(&key);
        assert_eq!(store.get(&key), before);
        assert!(store.apply(&key, &token_request(1, 5)).hit);
    }

    #[test]
    fn expired_buckets_are_treated_as_missing() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = LimitStore::new(10, clock.clone());
        let key = LimitKey::new("n", "k");
        store.apply(&key, &token_request(5, 5));
        clock.advance(60_001);
        assert!(store.get(&key).is_none());
        let mut later = token_request(1, 5);
        later.created_at = clock.now_ms();
        let applied = store.apply(&key, &later);
        assert!(!applied.hit);
        assert_eq!(applied.decision.remaining, 4);
    }

    #[test]
    fn capacity_is_bounded() {
        let store = LimitStore::new(100, Arc::new(ManualClock::new(1_000_000)));
        for i in 0..1000 {
            store.apply(&LimitKey::new("n", i.to_string()), &token_request(1, 5));
        }
        store.sync();
        assert!(store.len() <= 100, "store holds {}", store.len());
    }

    #[test]
    fn a_sharded_store_stays_within_its_capacity_and_reports_evictions() {
        let evicted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&evicted);
        let store = LimitStore::with_eviction_listener(
            10_000,
            Arc::new(ManualClock::new(1_000_000)),
            Arc::new(move |cause| {
                assert_eq!(cause, Eviction::Size);
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }),
        );
        assert!(store.inner.shards.len() > 1);
        for i in 0..50_000 {
            store.apply(
                &LimitKey::new("n", format!("key-{i}")),
                &token_request(1, 5),
            );
        }
        assert_eq!(store.len(), 10_000);
        assert_eq!(evicted.load(std::sync::atomic::Ordering::Relaxed), 40_000);
    }

    #[test]
    fn sync_reclaims_expired_buckets_and_counts_them() {
        let expired = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&expired);
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = LimitStore::with_eviction_listener(
            100,
            clock.clone(),
            Arc::new(move |cause| {
                assert_eq!(cause, Eviction::Expired);
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }),
        );
        for i in 0..10 {
            store.apply(&LimitKey::new("n", i.to_string()), &token_request(1, 5));
        }
        assert_eq!(store.entries().len(), 10);
        clock.advance(60_001);
        assert!(store.entries().is_empty());
        assert_eq!(store.len(), 10);
        store.sync();
        assert_eq!(store.len(), 0);
        assert_eq!(expired.load(std::sync::atomic::Ordering::Relaxed), 10);
    }

    #[test]
    fn remove_and_put_replace_state() {
        let store = LimitStore::new(10, Arc::new(ManualClock::new(1_000_000)));
        let key = LimitKey::new("n", "k");
        store.apply(&key, &token_request(3, 5));
        let Some(Bucket::Token(mut bucket)) = store.get(&key) else {
            panic!("no token bucket stored");
        };
        assert_eq!(bucket.remaining, 2);
        bucket.remaining = 4;
        store.put(key.clone(), Bucket::Token(bucket));
        assert_eq!(
            store.apply(&key, &token_request(1, 5)).decision.remaining,
            3
        );
        assert!(store.remove(&key));
        assert!(!store.remove(&key));
        assert!(store.get(&key).is_none());
    }

    #[test]
    fn capacities_add_up_exactly() {
        for capacity in [0, 1, 7, 1023, 1024, 50_000, 1_000_003, u64::from(u32::MAX)] {
            let shards = shard_count(capacity);
            assert!((1..=MAX_SHARDS).contains(&shards));
            let total: u64 = shard_capacities(capacity, shards).map(|c| c as u64).sum();
            assert_eq!(total, capacity);
        }
    }

    #[test]
    fn handoff_methods_enumerate_merge_and_remove_only_unchanged() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = LimitStore::new(10, clock.clone());
        let key = LimitKey::new("n", "k");
        assert!(store.apply_existing(&key, &token_request(1, 5)).is_none());
        assert!(
            store.get(&key).is_none(),
            "apply_existing never creates a bucket"
        );
        store.apply(&key, &token_request(1, 5));
        let entries = store.entries();
        assert_eq!(entries.len(), 1);
        let (_, first) = entries[0].clone();
        let applied = store.apply_existing(&key, &token_request(1, 5));
        assert_eq!(applied.map(|applied| applied.decision.remaining), Some(3));
        let current = store.get(&key);
        assert_eq!(store.remove_if_unchanged(&key, &first).err(), current);
        let Some(current) = current else {
            panic!("the bucket is gone");
        };
        assert_eq!(store.remove_if_unchanged(&key, &current), Ok(()));
        assert!(store.get(&key).is_none());
        assert_eq!(store.remove_if_unchanged(&key, &current), Ok(()));
        assert!(store.merge_in(key.clone(), |held, _| {
            assert!(held.is_none());
            Some(first)
        }));
        assert_eq!(store.get(&key), Some(first));
        assert!(!store.merge_in(key.clone(), |_, _| None));
        clock.advance(60_001);
        assert!(store.entries().is_empty(), "expired buckets are not listed");
    }

    #[test]
    fn apply_at_evaluates_at_the_time_given_not_the_clocks() {
        let store = LimitStore::new(10, Arc::new(ManualClock::new(1_000_000)));
        let key = LimitKey::new("n", "k");
        let request = token_request(2, 5);
        assert_eq!(store.apply(&key, &request).decision.remaining, 3);
        // The clock has not moved, but at the time given the bucket (60 s) has expired.
        let later = store.apply_at(&key, &request, 1_060_001);
        assert!(!later.hit);
        assert_eq!(later.decision.remaining, 3);
    }
}
