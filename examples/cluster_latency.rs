//! Measures forwarded-request latency and the batching ratio of a 3-node cluster on loopback.
//!
//! ```sh
//! cargo run --release --example cluster_latency
//! ```
//!
//! Every request goes to node 0 for a key owned by node 1, so every item is forwarded. The
//! example runs at low load (one client, one call at a time) and under load (many concurrent
//! clients), and prints p50/p99 latency of the whole `GetRateLimits` call as the client sees it,
//! plus the items forwarded per peer call. All traffic stays on 127.0.0.1 and every loop is
//! bounded by a count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlimit::config::server_config_from_args;
use ringlimit::proto::{self, v1_client::V1Client};
use ringlimit::server::{self, RunningServer};

const LOW_LOAD_CALLS: usize = 2_000;
const LOADED_CLIENTS: usize = 64;
const LOADED_CALLS_PER_CLIENT: usize = 300;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let config = server_config_from_args([
            "--grpc-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            "--log-level=warn",
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
    let owner = nodes[1].grpc_address().to_string();
    let ring = nodes[0].node().peers().membership().ring.clone();
    let keys: Arc<Vec<String>> = Arc::new(
        (0..200_000)
            .map(|i| format!("key-{i:08x}"))
            .filter(|key| {
                ring.owner_of("bench", key)
                    .is_some_and(|peer| peer.grpc_address == owner)
            })
            .take(10_000)
            .collect(),
    );

    let endpoint = format!("http://{}", nodes[0].grpc_address());
    let mut client = V1Client::connect(endpoint.clone()).await?;
    let mut low = Vec::with_capacity(LOW_LOAD_CALLS);
    for i in 0..LOW_LOAD_CALLS {
        let started = Instant::now();
        call(&mut client, &keys[i % keys.len()]).await?;
        low.push(started.elapsed());
    }
    let (items_low, calls_low) = batching(&nodes[0]);
    report(
        "low load (1 client, 1 call in flight)",
        &mut low,
        items_low,
        calls_low,
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for client_index in 0..LOADED_CLIENTS {
        let endpoint = endpoint.clone();
        let keys = Arc::clone(&keys);
        tasks.push(tokio::spawn(async move {
            let mut client = V1Client::connect(endpoint).await?;
            let mut latencies = Vec::with_capacity(LOADED_CALLS_PER_CLIENT);
            for call_index in 0..LOADED_CALLS_PER_CLIENT {
                let key = &keys[(client_index * LOADED_CALLS_PER_CLIENT + call_index) % keys.len()];
                let started = Instant::now();
                call(&mut client, key).await?;
                latencies.push(started.elapsed());
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(latencies)
        }));
    }
    let mut loaded = Vec::new();
    for task in tasks {
        loaded.extend(task.await?.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed();
    let (items, calls) = batching(&nodes[0]);
    report(
        &format!(
            "under load ({LOADED_CLIENTS} clients, {:.0} calls/s)",
            loaded.len() as f64 / elapsed.as_secs_f64()
        ),
        &mut loaded,
        items - items_low,
        calls - calls_low,
    );

    for node in nodes {
        node.shutdown().await?;
    }
    Ok(())
}

async fn call(
    client: &mut V1Client<tonic::transport::Channel>,
    key: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let answer = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![proto::RateLimitReq {
                name: "bench".into(),
                unique_key: key.into(),
                hits: 1,
                limit: 1_000_000,
                duration: 60_000,
                ..Default::default()
            }],
        })
        .await?
        .into_inner();
    if !answer.responses[0].error.is_empty() {
        return Err(answer.responses[0].error.clone().into());
    }
    Ok(())
}

fn batching(node: &RunningServer) -> (f64, f64) {
    let scrape = node.node().render_metrics();
    let sum = |name: &str| -> f64 {
        scrape
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (
        sum("ringlimit_forwarded_items_total"),
        sum("ringlimit_peer_calls_total"),
    )
}

fn report(label: &str, latencies: &mut [Duration], items: f64, calls: f64) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{label}: {} calls, p50 {:?}, p99 {:?}, max {:?}; {items} items forwarded in {calls} peer calls ({:.1} items/call)",
        latencies.len(),
        at(0.50),
        at(0.99),
        latencies[latencies.len() - 1],
        items / calls.max(1.0)
    );
}
