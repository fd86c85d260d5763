//! The `Client`: spend hits of a limit until the cluster says no.
//!
//! ```sh
//! cargo run --example client                  # starts a node in this process to talk to
//! cargo run --example client -- 127.0.0.1:1051  # or talks to a running node
//! ```

use std::time::Duration;

use ringlimit::EmbeddedNode;
use ringlimit::client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (address, local) = match std::env::args().nth(1) {
        Some(address) => (address, None),
        None => {
            let node = EmbeddedNode::builder().start().await?;
            (node.grpc_address().to_string(), Some(node))
        }
    };
    let mut client = Client::connect(&address).await?;
    println!("connected to {address}");
    for attempt in 1..=5 {
        let decision = client
            .consume("example_logins", "user:42", 3, Duration::from_secs(10))
            .await?;
        if decision.allowed {
            println!("attempt {attempt}: allowed, {} left", decision.remaining);
        } else {
            println!(
                "attempt {attempt}: refused, retry in {}s",
                decision.retry_after_secs()
            );
        }
    }
    if let Some(node) = local {
        node.shutdown().await?;
    }
    Ok(())
}
