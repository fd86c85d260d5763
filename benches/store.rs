//! The store's per-item cost: `LimitStore::apply` on a key that exists (the cache hit path) with
//! 1,000 and 1,000,000 preloaded keys, and on a key never seen before (the miss path).
//!
//! ```sh
//! cargo bench --bench store
//! ```
//!
//! The clock is a [`ManualClock`] that never moves, so nothing expires while measuring. Each
//! iteration applies one hit to a key drawn at random (a cheap xorshift PRNG) from the preloaded
//! ones; building the owned [`LimitKey`] happens in `iter_batched`'s untimed setup.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringlimit::algorithms::{
    Algorithm, Behavior, Bucket, LimitDuration, RateLimitRequest, Status, TokenBucket,
};
use ringlimit::clock::ManualClock;
use ringlimit::request::LimitKey;
use ringlimit::store::LimitStore;

const NOW_MS: i64 = 1_700_000_000_000;
/// Long enough that no bucket expires during the run (the clock does not move anyway).
const DURATION_MS: i64 = 24 * 60 * 60 * 1000;
/// Large enough that a benchmark run never drives a bucket over its limit.
const LIMIT: i64 = i64::MAX / 2;

fn request() -> RateLimitRequest {
    RateLimitRequest {
        hits: 1,
        limit: LIMIT,
        duration: LimitDuration::Millis(DURATION_MS),
        algorithm: Algorithm::TokenBucket,
        behavior: Behavior::default(),
        burst: 0,
        created_at: NOW_MS,
    }
}

fn key(i: u64) -> LimitKey {
    LimitKey::new("bench", format!("key-{i:016x}"))
}

/// A store with `keys` token buckets for `key(0..keys)`, all live for the whole run.
fn preloaded(keys: u64) -> LimitStore {
    let store = LimitStore::new(keys * 2, Arc::new(ManualClock::new(NOW_MS)));
    let bucket = Bucket::Token(TokenBucket {
        status: Status::UnderLimit,
        limit: LIMIT,
        duration: DURATION_MS,
        remaining: LIMIT,
        created_at: NOW_MS,
        expire_at: NOW_MS + DURATION_MS,
    });
    for i in 0..keys {
        store.put(key(i), bucket);
    }
    store.sync();
    store
}

/// xorshift64: enough to spread accesses over the keys without measuring a real RNG.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn hit_path(c: &mut Criterion) {
    let request = request();
    let mut group = c.benchmark_group("store_apply_hit");
    group.throughput(Throughput::Elements(1));
    for keys in [1_000u64, 1_000_000] {
        let store = preloaded(keys);
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        group.bench_function(format!("{keys}_keys"), |b| {
            b.iter_batched(
                || key(rng.next() % keys),
                |key| {
                    let applied = store.apply(&key, black_box(&request));
                    debug_assert!(applied.hit);
                    applied
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn miss_path(c: &mut Criterion) {
    let request = request();
    let mut group = c.benchmark_group("store_apply_miss");
    group.throughput(Throughput::Elements(1));
    // Bounded like a real node: once full, new keys also pay for evictions.
    let store = LimitStore::new(1_000_000, Arc::new(ManualClock::new(NOW_MS)));
    let mut next = 0u64;
    group.bench_function("new_key", |b| {
        b.iter_batched(
            || {
                next += 1;
                key(next)
            },
            |key| store.apply(&key, black_box(&request)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hit_path, miss_path);
criterion_main!(benches);
