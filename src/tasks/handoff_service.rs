//! The receiving side of `ringlimit.v1.Handoff`: merge each bucket into the store, then answer.
//!
//! The answer is the sender's permission to drop its copy, so it is sent only after every bucket
//! of the call is merged.
//!
//! A `Transfer` can change what this node owns, so nothing in it is taken on trust (the peer
//! plane's gate, `peer_auth`, decides who may call at all): the sender must be a member of this
//! node's cluster or have left it less than `peers::RECENT_MEMBER_TTL` ago (otherwise the whole
//! call is refused with `PERMISSION_DENIED`), and each bucket must pass [`check`] (otherwise it is
//! skipped and counted in `ringlimit_peer_input_rejected_total{reason="transfer_invalid_bucket"}`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::metrics::PeerInputRejection;
use crate::router::Router;

use crate::handoff::pb::handoff_server::Handoff;
use crate::handoff::pb::{TransferReq, TransferResp};
use crate::handoff::{check, merge, wire};

/// The `Handoff` service of one node.
#[derive(Clone)]
pub struct HandoffService {
    router: Arc<Router>,
}

impl HandoffService {
    /// Serves the node `router` routes for.
    pub fn new(router: Arc<Router>) -> Self {
        Self { router }
    }
}

/// Why a whole `Transfer` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The sender is not a member and did not leave recently.
    #[error("handoff sender '{0}' is not a member of this node's cluster")]
    NotMember(String),
}

impl From<TransferError> for Status {
    fn from(error: TransferError) -> Self {
        match error {
            TransferError::NotMember(_) => Status::permission_denied(error.to_string()),
        }
    }
}

/// Merges the valid buckets of `request` into `node`'s store; returns how many changed it.
/// Refuses the whole call when the sender is not (and was not recently) a member.
pub fn receive(router: &Router, request: &TransferReq) -> Result<i32, TransferError> {
    if !router.peers().is_or_was_member(&request.sender) {
        router
            .evaluator()
            .metrics()
            .reject_peer_input(PeerInputRejection::TransferNotMember);
        return Err(TransferError::NotMember(printable(&request.sender)));
    }
    // A member that calls is up: a peer restarted on the same address (its `complete` comes
    // first) is called again at once instead of after the rest of its down period.
    router.peer_clients().liveness().on_success(&request.sender);
    let limits = router.evaluator().limits();
    let now_ms = router.evaluator().clock().now_ms();
    let metrics = router.evaluator().metrics();
    let mut merged = 0;
    let mut rejected = 0;
    for item in &request.buckets {
        let valid = wire::from_wire(item)
            .ok_or(check::InvalidBucket::MissingState)
            .and_then(|(key, bucket, previous)| {
                check::check(&key, &bucket, previous.as_ref(), limits, now_ms)
                    .map(|()| (key, bucket, previous))
            });
        let (key, bucket, previous) = match valid {
            Ok(entry) => entry,
            Err(_) => {
                rejected += 1;
                metrics.reject_peer_input(PeerInputRejection::TransferInvalidBucket);
                continue;
            }
        };
        let changed = router
            .evaluator()
            .store()
            .merge_in(key.clone(), |held, now_ms| {
                merge::merge(held, &bucket, previous.as_ref(), now_ms)
            });
        // After the merge, so a request in between finds the bucket rather than a gap.
        router.handoff().forget_tombstone(&key);
        if changed {
            merged += 1;
        }
    }
    if rejected > 0 {
        tracing::warn!(sender = %printable(&request.sender), rejected, "handoff buckets rejected as invalid");
    }
    if request.complete {
        tracing::debug!(sender = %request.sender, "handoff complete");
        router.handoff().source_complete(&request.sender);
    }
    if !request.buckets.is_empty() {
        tracing::debug!(sender = %request.sender, received = request.buckets.len(), merged, "handoff received");
    }
    Ok(merged)
}

/// A caller-supplied name, shortened and stripped of control characters for logs and answers.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(256).collect()
}

#[tonic::async_trait]
impl Handoff for HandoffService {
    async fn transfer(
        &self,
        request: Request<TransferReq>,
    ) -> Result<Response<TransferResp>, Status> {
        crate::telemetry::record_items(request.get_ref().buckets.len());
        let merged = receive(&self.router, request.get_ref())?;
        let sender = &request.get_ref().sender;
        let sender_listed = self
            .router
            .peers()
            .membership()
            .peers
            .iter()
            .any(|peer| &peer.grpc_address == sender);
        Ok(Response::new(TransferResp {
            merged,
            sender_listed: Some(sender_listed),
        }))
    }
}
