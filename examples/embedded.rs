//! A ringlimit node inside this process: decisions without a network hop, while other processes
//! (and peers) reach the same node over gRPC and HTTP.
//!
//! ```sh
//! cargo run --example embedded
//! ```

use std::time::Duration;

use ringlimit::EmbeddedNode;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = EmbeddedNode::builder().cache_size(10_000).start().await?;
    println!(
        "embedded node: gRPC {}, HTTP {}",
        node.grpc_address(),
        node.http_address()
    );
    for attempt in 1..=3 {
        let decision = node
            .consume("example_jobs", "tenant:7", 2, Duration::from_secs(60))
            .await?;
        println!(
            "in process, attempt {attempt}: allowed={} remaining={}",
            decision.allowed, decision.remaining
        );
    }
    // Another process would use a Client; this one shares the node's state.
    let mut client = node.client()?;
    let decision = client
        .consume("example_jobs", "tenant:7", 2, Duration::from_secs(60))
        .await?;
    println!("over gRPC: allowed={}", decision.allowed);
    node.shutdown().await?;
    println!("embedded node stopped");
    Ok(())
}
