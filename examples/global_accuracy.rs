//! Measures how far a GLOBAL limit over-admits in a 3-node cluster on loopback, next to the bound
//! of `docs/accuracy.md`.
//!
//! ```sh
//! cargo run --release --example global_accuracy
//! ```
//!
//! One GLOBAL token-bucket key with limit L and a long window; one open-loop client per node sends
//! single-hit requests at a fixed rate (the total rate λ spread evenly), for long enough to exhaust
//! the limit several times over. The example counts the hits admitted across the cluster and prints
//! the overshoot (admitted − L) beside the bound λ·(W + d)·(2N − 1)/N. All traffic stays on
//! 127.0.0.1 and every loop is bounded by a count.

use std::time::{Duration, Instant};

use ringlimit::config::server_config_from_args;
use ringlimit::proto::{self, v1_client::V1Client};
use ringlimit::server;

const NODES: usize = 3;
const LIMIT: i64 = 1_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    println!("N = {NODES} nodes, L = {LIMIT}, d ≈ loopback (well under 1 ms)");
    println!("sync wait W | rate λ (hits/s) | admitted | overshoot | bound λ·W·(2N−1)/N");
    for (sync_ms, rate) in [
        (100, 1_000),
        (100, 4_000),
        (100, 10_000),
        (20, 10_000),
        (500, 4_000),
    ] {
        let admitted = run(sync_ms, rate).await?;
        let bound = rate as f64 * (sync_ms as f64 / 1000.0) * (2 * NODES - 1) as f64 / NODES as f64;
        println!(
            "{sync_ms:>8} ms | {rate:>15} | {admitted:>8} | {:>9} | {bound:>6.0}",
            admitted - LIMIT
        );
    }
    Ok(())
}

/// Runs one scenario and returns the hits admitted across the cluster.
async fn run(sync_ms: u64, rate: u64) -> Result<i64, Box<dyn std::error::Error + Send + Sync>> {
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        let config = server_config_from_args([
            "--grpc-address=127.0.0.1:0".to_string(),
            "--http-address=127.0.0.1:0".to_string(),
            "--log-level=warn".to_string(),
            format!("--global-sync-wait={sync_ms}ms"),
        ])?;
        nodes.push(server::start(&config).await?);
    }
    let peers: Vec<_> = nodes
        .iter()
        .map(|n| n.node().peers().me().clone())
        .collect();
    for node in &nodes {
        node.node().peers().replace(peers.clone());
    }
    let key = format!("accuracy-{sync_ms}-{rate}");
    // Long enough to send 3 × L hits in total.
    let per_node_rate = rate as f64 / NODES as f64;
    let per_node_calls = (3 * LIMIT as usize).div_ceil(NODES);
    let interval = Duration::from_secs_f64(1.0 / per_node_rate);
    let mut tasks = Vec::new();
    for node in &nodes {
        let endpoint = format!("http://{}", node.grpc_address());
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = V1Client::connect(endpoint).await?;
            let start = Instant::now();
            let mut admitted = 0i64;
            for call in 0..per_node_calls {
                // Open loop: each request has an intended send time.
                let due = start + interval.mul_f64(call as f64);
                tokio::time::sleep_until(due.into()).await;
                let answer = client
                    .get_rate_limits(proto::GetRateLimitsReq {
                        requests: vec![proto::RateLimitReq {
                            name: "accuracy".into(),
                            unique_key: key.clone(),
                            hits: 1,
                            limit: LIMIT,
                            duration: 3_600_000,
                            behavior: proto::Behavior::Global as i32,
                            ..Default::default()
                        }],
                    })
                    .await?
                    .into_inner();
                if answer.responses[0].status == proto::Status::UnderLimit as i32
                    && answer.responses[0].error.is_empty()
                {
                    admitted += 1;
                }
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(admitted)
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await?.map_err(|e| e.to_string())?;
    }
    for node in nodes {
        node.shutdown().await?;
    }
    Ok(admitted)
}
