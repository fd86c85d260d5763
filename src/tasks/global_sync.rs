//! The GLOBAL sync task: every `GUBER_GLOBAL_SYNC_WAIT` (or as soon as `GUBER_GLOBAL_BATCH_LIMIT`
//! limits are waiting) it sends owners the hits this node owes them, through the reconciler the
//! owner-failure policy shares ([`crate::owed`]), and broadcasts the state of the limits this node
//! owns that changed. It holds the router (for owners and peers) and reaches the store through the
//! router's evaluator; the node does not run it, the server spawns and joins it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use prometheus::{Histogram, IntGauge};
use prost::Message;
use tokio::sync::watch;

use crate::algorithms::Behavior;
use crate::batching::ForwardError;
use crate::batching::budget::{Chunks, chunk, framed_len};
use crate::evaluator::Evaluator;
use crate::global::replica;
use crate::metrics::summary::SummaryVec;
use crate::metrics::{DropReason, DroppedMessage};
use crate::owed::{self, Delivery, Owed, Schedule};
use crate::proto;
use crate::router::Router;

/// Runs the sync and broadcast schedule of `router`'s node until `stop` turns true, then flushes once.
pub async fn run(router: Arc<Router>, stop: watch::Receiver<bool>) {
    let global = router.evaluator().global();
    let mut schedule = Schedule::new(global.options().sync_wait, stop);
    while schedule.next(Some(global.ledger().woken())).await {
        send_hits(&router).await;
        broadcast(&router).await;
    }
}

/// Sends every owner the hits owed to it, in parallel; puts back what could not be delivered.
pub async fn send_hits(router: &Router) {
    let evaluator = router.evaluator();
    let global = evaluator.global();
    let started = Instant::now();
    let Some(round) = owed::reconcile(global.ledger(), router, &GlobalHits(evaluator)).await else {
        return;
    };
    let metrics = evaluator.metrics();
    metrics.global_hits_dropped.inc_by(round.dropped as u64);
    record_round(
        (
            &metrics.global_send_duration,
            &metrics.global_send_duration_seconds,
        ),
        started,
        &metrics.global_send_queue_length,
        global.pending_len(),
    );
}

/// Records how long a round took (Gubernator's summary and the histogram) and what it left queued.
fn record_round(
    (summary, histogram): (&SummaryVec, &Histogram),
    started: Instant,
    queue_length: &IntGauge,
    queued: usize,
) {
    let seconds = started.elapsed().as_secs_f64();
    summary.observe_one(seconds);
    histogram.observe(seconds);
    queue_length.set(i64::try_from(queued).unwrap_or(i64::MAX));
}

/// GLOBAL hits: the owner applies their sum with `DRAIN_OVER_LIMIT`, and its answers become this
/// node's copies.
struct GlobalHits<'a>(&'a Evaluator);

impl Delivery for GlobalHits<'_> {
    const WHAT: &'static str = "GLOBAL hits";

    fn batch_limit(&self) -> usize {
        self.0.global().options().batch_limit
    }

    fn timeout(&self) -> Duration {
        self.0.global().options().timeout
    }

    fn prepare(&self, item: &mut proto::RateLimitReq) {
        // The owner applies the sum of hits; it must drain rather than refuse when they overflow.
        item.behavior |= Behavior::DRAIN_OVER_LIMIT.bits() | Behavior::GLOBAL.bits();
    }

    async fn apply_here(&self, chunk: &[Owed]) -> bool {
        self.0.apply_owed_hits(chunk);
        true
    }

    fn delivered(&self, _owner: &str, chunk: &[Owed], answers: Vec<proto::RateLimitResp>) {
        self.0.install_owner_answers(chunk, &answers);
    }

    fn failed(&self, owner: &str, limits: usize, error: &ForwardError) {
        tracing::warn!(%owner, %error, limits, "GLOBAL hits not delivered; will retry");
        self.0.metrics().global_send_errors.inc();
    }

    fn oversized(&self) -> prometheus::IntCounter {
        self.0
            .metrics()
            .peer_items_dropped(DroppedMessage::Global, DropReason::Oversized)
    }
}

/// Broadcasts the state of every changed limit this node owns to every other peer.
pub async fn broadcast(router: &Router) {
    let evaluator = router.evaluator();
    let global = evaluator.global();
    let keys = global.take_broadcasts();
    if keys.is_empty() {
        return;
    }
    let started = Instant::now();
    let updates: Vec<proto::UpdatePeerGlobal> = keys
        .iter()
        .filter_map(|key| {
            let bucket = evaluator.store().get(key)?;
            Some(replica::to_update(key, &bucket))
        })
        .collect();
    let me = router.peers().me().grpc_address.clone();
    let peers: Vec<String> = router
        .peers()
        .membership()
        .peers
        .iter()
        .map(|peer| peer.grpc_address.clone())
        .filter(|address| *address != me)
        .collect();
    let timeout = global.options().timeout;
    let Chunks {
        chunks: update_chunks,
        oversized,
    } = chunk(
        updates,
        global.options().batch_limit,
        router.peer_clients().message_budget(),
        |update| framed_len(update.encoded_len()),
    );
    if !oversized.is_empty() {
        tracing::warn!(
            limits = oversized.len(),
            "GLOBAL broadcasts dropped: larger than a peer message"
        );
        evaluator
            .metrics()
            .count_oversized(DroppedMessage::Global, oversized.len());
    }
    let calls = peers.iter().flat_map(|peer| {
        update_chunks.iter().map(move |chunk| async move {
            router
                .peer_clients()
                .update_peer_globals(peer, chunk.to_vec(), timeout)
                .await
                .map_err(|error| (peer.clone(), error))
        })
    });
    let mut failed = false;
    for result in join_all(calls).await {
        if let Err((peer, error)) = result {
            if matches!(error, ForwardError::PeerDown(_)) {
                // Said once, when the peer was marked down; not again every sync interval.
                tracing::debug!(%peer, %error, "GLOBAL broadcast skipped; will resend");
            } else {
                tracing::warn!(%peer, %error, "GLOBAL broadcast failed; will resend");
            }
            evaluator.metrics().broadcast_errors.inc();
            failed = true;
        }
    }
    if failed {
        // Overwrites are idempotent: resend everything to everyone next time.
        for key in keys {
            global.queue_broadcast(key);
        }
    }
    let metrics = evaluator.metrics();
    record_round(
        (
            &metrics.broadcast_duration,
            &metrics.broadcast_duration_seconds,
        ),
        started,
        &metrics.global_queue_length,
        global.broadcast_len(),
    );
}
