//! Fuzzes validation and the algorithms with arbitrary items, stored buckets and clocks.
//!
//! A sequence of arbitrary wire items (every i64 field arbitrary, including `i64::MIN`/`MAX`) is
//! validated and evaluated against one key's stored bucket while the server clock moves
//! arbitrarily. Nothing may panic (the targets build with debug assertions, so arithmetic overflow
//! panics too), an item that fails validation never touches the bucket, and an evaluation only
//! ever stores a bucket of the request's own algorithm.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use ringlimit::algorithms::{self, Algorithm, Bucket, Next};
use ringlimit::proto;
use ringlimit::request::{self, InputLimits};

/// One wire item, with every field the fuzzer's choice.
#[derive(Debug, Arbitrary)]
struct Item {
    name: String,
    unique_key: String,
    hits: i64,
    limit: i64,
    duration: i64,
    algorithm: i32,
    behavior: i32,
    burst: i64,
    created_at: Option<i64>,
}

/// A step: an item, and how the server clock moves before it is evaluated.
#[derive(Debug, Arbitrary)]
struct Step {
    item: Item,
    clock_step: i64,
}

#[derive(Debug, Arbitrary)]
struct Input {
    start_ms: i64,
    max_key_bytes: u16,
    steps: Vec<Step>,
}

fuzz_target!(|input: Input| {
    let limits = InputLimits {
        max_key_bytes: usize::from(input.max_key_bytes),
    };
    let mut now_ms = input.start_ms;
    let mut stored: Option<Bucket> = None;
    for step in input.steps.into_iter().take(64) {
        now_ms = now_ms.saturating_add(step.clock_step);
        let item = step.item;
        // Most arbitrary strings and algorithms fail validation at once; keep half the items
        // valid in those respects so the algorithms see them.
        let plausible = item.algorithm & 0x100 == 0;
        let wire = proto::RateLimitReq {
            name: if plausible && item.name.is_empty() {
                "name".into()
            } else {
                item.name
            },
            unique_key: if plausible && item.unique_key.is_empty() {
                "key".into()
            } else {
                item.unique_key
            },
            hits: item.hits,
            limit: item.limit,
            duration: item.duration,
            algorithm: if plausible {
                item.algorithm & 1
            } else {
                item.algorithm
            },
            behavior: item.behavior,
            burst: item.burst,
            created_at: item.created_at,
            metadata: Default::default(),
        };
        let limits = if plausible {
            InputLimits::default()
        } else {
            limits
        };
        let Ok(request) = request::validate(&wire, now_ms, limits) else {
            continue;
        };
        assert!(request.limit >= 0 && request.burst >= 0);
        let evaluation = algorithms::evaluate(stored.as_ref(), &request, now_ms);
        match (request.algorithm, evaluation.next) {
            (Algorithm::TokenBucket, Next::Put(Bucket::Leaky(_)))
            | (Algorithm::LeakyBucket, Next::Put(Bucket::Token(_))) => {
                panic!("an evaluation stored a bucket of the other algorithm")
            }
            _ => {}
        }
        evaluation.next.apply_to(&mut stored);
    }
});
