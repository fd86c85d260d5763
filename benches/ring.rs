//! Choosing a key's owner: `Ring::owner_of` over 3 and 10 peers (512 points each, like Gubernator).
//!
//! ```sh
//! cargo bench --bench ring
//! ```

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringlimit::peers::PeerInfo;
use ringlimit::peers::Ring;

fn peers(count: usize) -> Vec<PeerInfo> {
    (0..count)
        .map(|i| PeerInfo {
            grpc_address: format!("10.0.0.{}:1051", i + 1),
            http_address: format!("10.0.0.{}:1050", i + 1),
            data_center: String::new(),
        })
        .collect()
}

fn owner_of(c: &mut Criterion) {
    // Cycling through many keys keeps the lookups from all landing on one cached ring point.
    let keys: Vec<String> = (0..4096).map(|i| format!("account-{i:08x}")).collect();
    let mut group = c.benchmark_group("ring_owner_of");
    group.throughput(Throughput::Elements(1));
    for count in [3usize, 10] {
        let ring = Ring::new(&peers(count));
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("peers", count), |b| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                ring.owner_of(black_box("requests_per_second"), black_box(&keys[i]))
                    .map(|peer| peer.grpc_address.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, owner_of);
criterion_main!(benches);
