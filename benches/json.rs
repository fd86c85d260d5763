//! The HTTP gateway's JSON cost: decoding a `GetRateLimits` request body and encoding its answer,
//! with 1 and 100 items.
//!
//! ```sh
//! cargo bench --bench json
//! ```
//!
//! Request bodies are written by the crate's own client encoder (int64 values as strings, the
//! algorithm as a name), the shape grpc-gateway clients send.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringlimit::http::json::{
    decode_get_rate_limits_req, encode_get_rate_limits_req, encode_get_rate_limits_resp,
};
use ringlimit::proto;

const SIZES: [usize; 2] = [1, 100];

fn request_body(items: usize) -> Vec<u8> {
    let req = proto::GetRateLimitsReq {
        requests: (0..items)
            .map(|i| proto::RateLimitReq {
                name: "requests_per_second".into(),
                unique_key: format!("account:{i:08}"),
                hits: 1,
                limit: 100,
                duration: 60_000,
                algorithm: proto::Algorithm::TokenBucket as i32,
                behavior: 0,
                burst: 0,
                ..Default::default()
            })
            .collect(),
    };
    encode_get_rate_limits_req(&req)
}

fn response(items: usize) -> proto::GetRateLimitsResp {
    proto::GetRateLimitsResp {
        responses: (0..items)
            .map(|i| proto::RateLimitResp {
                status: proto::Status::UnderLimit as i32,
                limit: 100,
                remaining: 99 - (i as i64 % 100),
                reset_time: 1_700_000_060_000,
                ..Default::default()
            })
            .collect(),
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("json_decode_get_rate_limits_req");
    for items in SIZES {
        let body = request_body(items);
        assert_eq!(
            decode_get_rate_limits_req(&body)
                .expect("the encoded body decodes")
                .requests
                .len(),
            items
        );
        group.throughput(Throughput::Elements(items as u64));
        group.bench_with_input(BenchmarkId::new("items", items), &body, |b, body| {
            b.iter(|| decode_get_rate_limits_req(black_box(body)))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("json_encode_get_rate_limits_resp");
    for items in SIZES {
        let resp = response(items);
        group.throughput(Throughput::Elements(items as u64));
        group.bench_with_input(BenchmarkId::new("items", items), &resp, |b, resp| {
            b.iter(|| encode_get_rate_limits_resp(black_box(resp)))
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
