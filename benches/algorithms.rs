//! One rate-limit decision, without any store: `ringlimit::algorithms::evaluate` on an existing
//! token bucket, an existing leaky bucket, and a key seen for the first time.
//!
//! ```sh
//! cargo bench --bench algorithms
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringlimit::algorithms::{
    Algorithm, Behavior, Bucket, LeakyBucket, LimitDuration, RateLimitRequest, Status, TokenBucket,
    evaluate,
};

const NOW_MS: i64 = 1_700_000_000_000;
const DURATION_MS: i64 = 60_000;
const LIMIT: i64 = 1_000_000;

fn request(algorithm: Algorithm) -> RateLimitRequest {
    RateLimitRequest {
        hits: 1,
        limit: LIMIT,
        duration: LimitDuration::Millis(DURATION_MS),
        algorithm,
        behavior: Behavior::default(),
        burst: 0,
        created_at: NOW_MS,
    }
}

fn token_bucket() -> Bucket {
    Bucket::Token(TokenBucket {
        status: Status::UnderLimit,
        limit: LIMIT,
        duration: DURATION_MS,
        remaining: LIMIT / 2,
        created_at: NOW_MS - 1_000,
        expire_at: NOW_MS - 1_000 + DURATION_MS,
    })
}

fn leaky_bucket() -> Bucket {
    Bucket::Leaky(LeakyBucket {
        limit: LIMIT,
        duration: DURATION_MS,
        remaining: (LIMIT / 2) as f64,
        updated_at: NOW_MS - 1_000,
        burst: LIMIT,
        expire_at: NOW_MS - 1_000 + DURATION_MS,
    })
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(1));

    let token = token_bucket();
    let token_request = request(Algorithm::TokenBucket);
    group.bench_function("token_bucket_existing", |b| {
        b.iter(|| {
            evaluate(
                black_box(Some(&token)),
                black_box(&token_request),
                black_box(NOW_MS),
            )
        })
    });

    let leaky = leaky_bucket();
    let leaky_request = request(Algorithm::LeakyBucket);
    group.bench_function("leaky_bucket_existing", |b| {
        b.iter(|| {
            evaluate(
                black_box(Some(&leaky)),
                black_box(&leaky_request),
                black_box(NOW_MS),
            )
        })
    });

    group.bench_function("token_bucket_new", |b| {
        b.iter(|| {
            evaluate(
                black_box(None),
                black_box(&token_request),
                black_box(NOW_MS),
            )
        })
    });
    group.bench_function("leaky_bucket_new", |b| {
        b.iter(|| {
            evaluate(
                black_box(None),
                black_box(&leaky_request),
                black_box(NOW_MS),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
