//! The receiving side of `ringlimit.v1.Handoff`: merge each bucket into the store, then answer.
//!
//! The answer is the sender's permission to drop its copy, so it is sent only after every bucket
//! of the call is merged.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::Node;

use super::pb::handoff_server::Handoff;
use super::pb::{TransferReq, TransferResp};
use super::{merge, wire};

/// The `Handoff` service of one node.
#[derive(Clone)]
pub struct HandoffService {
    node: Arc<Node>,
}

impl HandoffService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// Merges the buckets of `request` into `node`'s store; returns how many changed it.
pub fn receive(node: &Node, request: &TransferReq) -> i32 {
    let mut merged = 0;
    for item in &request.buckets {
        let Some((key, bucket, previous)) = wire::from_wire(item) else {
            continue;
        };
        let changed = node.store().merge_in(key.clone(), |held, now_ms| {
            merge::merge(held, &bucket, previous.as_ref(), now_ms)
        });
        // After the merge, so a request in between finds the bucket rather than a gap.
        node.handoff().forget_tombstone(&key);
        if changed {
            merged += 1;
        }
    }
    if request.complete {
        tracing::debug!(sender = %request.sender, "handoff complete");
        node.handoff().source_complete(&request.sender);
    }
    if !request.buckets.is_empty() {
        tracing::debug!(sender = %request.sender, received = request.buckets.len(), merged, "handoff received");
    }
    merged
}

#[tonic::async_trait]
impl Handoff for HandoffService {
    async fn transfer(
        &self,
        request: Request<TransferReq>,
    ) -> Result<Response<TransferResp>, Status> {
        let merged = receive(&self.node, request.get_ref());
        Ok(Response::new(TransferResp { merged }))
    }
}
