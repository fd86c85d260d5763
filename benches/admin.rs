//! What the admin views cost on the decision path: `AdminState::record` for an admitted decision
//! (one atomic increment), a refusal of a key already tracked, and a refusal of a new key when the
//! summaries are full (it replaces the smallest counter in the since-start summary and in the
//! current slot of each window), at the default capacity of 100.
//!
//! ```sh
//! cargo bench --bench admin
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ringlimit::admin::{AdminOptions, AdminState};
use ringlimit::algorithms::Status;
use ringlimit::clock::ManualClock;
use ringlimit::request::LimitKey;

fn record(c: &mut Criterion) {
    let clock = ManualClock::new(1_700_000_000_000);
    let state = AdminState::new(AdminOptions::default());
    let keys: Vec<LimitKey> = (0..100_000)
        .map(|i| LimitKey::new("requests_per_sec", format!("account:{i:08}")))
        .collect();
    // Fill every summary so that new keys replace old ones.
    for key in keys.iter().take(1_000) {
        state.record(key, Status::OverLimit, &clock);
    }
    let mut group = c.benchmark_group("admin_record");
    group.bench_function("under_limit", |b| {
        b.iter(|| state.record(black_box(&keys[0]), Status::UnderLimit, &clock))
    });
    let hot = &keys[999];
    group.bench_function("over_limit_tracked_key", |b| {
        b.iter(|| state.record(black_box(hot), Status::OverLimit, &clock))
    });
    let mut next = 1_000;
    group.bench_function("over_limit_new_key", |b| {
        b.iter(|| {
            next = if next + 1 >= keys.len() {
                1_000
            } else {
                next + 1
            };
            state.record(black_box(&keys[next]), Status::OverLimit, &clock)
        })
    });
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
