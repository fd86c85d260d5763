//! The reconciler task of the `local` policy: every sync interval it sends the hits fallback
//! buckets admitted to each key's current owner, through the reconciler GLOBAL shares
//! ([`crate::owed`]). It holds the router; the server spawns and joins it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::batching::ForwardError;
use crate::error::MAX_BATCH_SIZE;
use crate::metrics::{DropReason, DroppedMessage};
use crate::owed::{self, Delivery, Owed, Schedule};
use crate::owner_failure::OwnerFailurePolicy;
use crate::proto;
use crate::request::Item;
use crate::router::Router;

/// Sends owed hits every sync interval until `stop` turns true, then tries once more.
pub async fn run(router: Arc<Router>, stop: watch::Receiver<bool>) {
    // Under `error` nothing is ever owed, unless a snapshot restored hits owed before a restart.
    if router.owner_fallback().policy() != OwnerFailurePolicy::Local
        && router.owner_fallback().owed_len() == 0
    {
        return;
    }
    let mut schedule = Schedule::new(router.owner_fallback().options().sync_wait, stop);
    while schedule.next(None).await {
        reconcile(&router).await;
    }
}

/// Sends every owed hit to the key's current owner (or applies it here when this node owns the
/// key now); puts back what could not be delivered.
pub async fn reconcile(router: &Router) {
    let fallback = router.owner_fallback();
    if let Some(round) = owed::reconcile(fallback.ledger(), router, &FallbackHits(router)).await
        && round.dropped > 0
    {
        tracing::warn!(
            dropped = round.dropped,
            "owed hits dropped: too many limits are waiting"
        );
    }
}

/// Hits taken by fallback buckets: marked `DRAIN_OVER_LIMIT` when taken, and the owner's answers
/// are not kept (the fallback bucket is not a copy of the owner's).
struct FallbackHits<'a>(&'a Router);

impl Delivery for FallbackHits<'_> {
    const WHAT: &'static str = "owed hits";

    fn batch_limit(&self) -> usize {
        MAX_BATCH_SIZE
    }

    fn timeout(&self) -> Duration {
        self.0.owner_fallback().options().timeout
    }

    async fn apply_here(&self, chunk: &[Owed]) -> bool {
        let items = chunk
            .iter()
            .map(|(_, item)| Item::from(item.clone()))
            .collect();
        self.0.get_peer_rate_limits(items).await.is_ok()
    }

    fn delivered(&self, owner: &str, chunk: &[Owed], _answers: Vec<proto::RateLimitResp>) {
        tracing::info!(%owner, limits = chunk.len(), "hits taken while the owner was unreachable were delivered");
    }

    fn failed(&self, owner: &str, _limits: usize, error: &ForwardError) {
        tracing::debug!(%owner, %error, "owed hits not delivered; will retry");
    }

    fn oversized(&self) -> prometheus::IntCounter {
        self.0
            .evaluator()
            .metrics()
            .peer_items_dropped(DroppedMessage::Owed, DropReason::Oversized)
    }
}
