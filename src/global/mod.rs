//! GLOBAL limits: every node answers from its own copy at once, and the cluster converges in the
//! background.
//!
//! A non-owner evaluates a GLOBAL item against its copy, answers, and queues the hits it owes the
//! owner (a [`Ledger`]). Every `GUBER_GLOBAL_SYNC_WAIT` (or as soon as `GUBER_GLOBAL_BATCH_LIMIT`
//! limits are waiting) [`run`] sends the summed hits to each owner, in parallel, with
//! `DRAIN_OVER_LIMIT` forced, through the reconciler the owner-failure policy shares
//! ([`crate::owed`]); hits that cannot be delivered are put back and retried. An owner
//! that changes a GLOBAL limit queues it for broadcast, and on the same schedule sends the limit's
//! state to every other peer (`UpdatePeerGlobals`), which overwrite their copies ([`replica`]).
//! A node that has no copy of a GLOBAL limit yet asks the owner once (a normal forward) instead
//! of starting from a full bucket.

pub mod replica;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use prost::Message;
use tokio::sync::watch;

use crate::algorithms::Behavior;
use crate::batching::ForwardError;
use crate::metrics::{DropReason, DroppedMessage};
use crate::node::Node;
use crate::owed::{self, Added, Delivery, Ledger, Owed, Schedule, lock};
use crate::peers::budget::{Chunks, chunk, framed_len};
use crate::proto;
use crate::request::LimitKey;

/// How GLOBAL limits are reconciled.
#[derive(Debug, Clone)]
pub struct GlobalOptions {
    /// How often hits are sent to owners and owners broadcast (`GUBER_GLOBAL_SYNC_WAIT`).
    pub sync_wait: Duration,
    /// Timeout of one sync or broadcast call (`GUBER_GLOBAL_TIMEOUT`).
    pub timeout: Duration,
    /// Limits per call, and the queue length that triggers an early flush
    /// (`GUBER_GLOBAL_BATCH_LIMIT`).
    pub batch_limit: usize,
    /// The most limits with undelivered hits (or pending broadcasts) held; beyond it new ones are
    /// dropped and counted.
    pub max_pending: usize,
    /// Treat every request as GLOBAL (`GUBER_FORCE_GLOBAL`).
    pub force: bool,
}

impl Default for GlobalOptions {
    fn default() -> Self {
        Self {
            sync_wait: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
            batch_limit: 1000,
            max_pending: 100_000,
            force: false,
        }
    }
}

/// The GLOBAL bookkeeping of one node: hits owed to owners and limits to broadcast.
pub struct GlobalState {
    options: GlobalOptions,
    pending: Ledger,
    broadcasts: Mutex<Broadcasts>,
}

/// Limits whose state changed on this owner since the last broadcast, oldest first, each once.
#[derive(Default)]
struct Broadcasts {
    order: Vec<LimitKey>,
    queued: HashSet<LimitKey>,
}

impl GlobalState {
    /// Empty queues.
    pub fn new(options: GlobalOptions) -> Self {
        Self {
            pending: Ledger::new(options.max_pending, options.batch_limit),
            broadcasts: Mutex::new(Broadcasts::default()),
            options,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &GlobalOptions {
        &self.options
    }

    /// Queues hits owed to the owner of `key`.
    pub fn queue_hits(&self, key: LimitKey, item: proto::RateLimitReq) -> Added {
        self.pending.add(key, item)
    }

    /// Queues `key` for broadcast to every other peer; returns `false` if the queue is full.
    pub fn queue_broadcast(&self, key: LimitKey) -> bool {
        let len = {
            let mut broadcasts = lock(&self.broadcasts);
            if !broadcasts.queued.contains(&key) {
                if broadcasts.order.len() >= self.options.max_pending {
                    return false;
                }
                broadcasts.queued.insert(key.clone());
                broadcasts.order.push(key);
            }
            broadcasts.order.len()
        };
        if len >= self.options.batch_limit {
            self.pending.wake();
        }
        true
    }

    /// Takes every limit's owed hits (at shutdown, for the snapshot).
    pub fn take_pending(&self) -> Vec<Owed> {
        self.pending.take()
    }

    /// The hits owed to owners.
    pub fn ledger(&self) -> &Ledger {
        &self.pending
    }

    /// The number of limits with hits waiting for their owner.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The number of limits waiting to be broadcast.
    pub fn broadcast_len(&self) -> usize {
        lock(&self.broadcasts).order.len()
    }

    fn take_broadcasts(&self) -> Vec<LimitKey> {
        let mut broadcasts = lock(&self.broadcasts);
        broadcasts.queued.clear();
        std::mem::take(&mut broadcasts.order)
    }
}

/// Runs the sync and broadcast schedule of `node` until `stop` turns true, then flushes once.
pub async fn run(node: Arc<Node>, stop: watch::Receiver<bool>) {
    let global = node.global();
    let mut schedule = Schedule::new(global.options.sync_wait, stop);
    while schedule.next(Some(global.pending.woken())).await {
        send_hits(&node).await;
        broadcast(&node).await;
    }
}

/// Sends every owner the hits owed to it, in parallel; puts back what could not be delivered.
pub async fn send_hits(node: &Node) {
    let global = node.global();
    let started = Instant::now();
    let Some(round) = owed::reconcile(&global.pending, node, &GlobalHits(node)).await else {
        return;
    };
    let metrics = node.metrics();
    metrics.global_hits_dropped.inc_by(round.dropped as u64);
    metrics
        .global_send_duration
        .observe(started.elapsed().as_secs_f64());
    metrics
        .global_send_queue_length
        .set(i64::try_from(global.pending_len()).unwrap_or(i64::MAX));
}

/// GLOBAL hits: the owner applies their sum with `DRAIN_OVER_LIMIT`, and its answers become this
/// node's copies.
struct GlobalHits<'a>(&'a Node);

impl Delivery for GlobalHits<'_> {
    const WHAT: &'static str = "GLOBAL hits";

    fn batch_limit(&self) -> usize {
        self.0.global().options.batch_limit
    }

    fn timeout(&self) -> Duration {
        self.0.global().options.timeout
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
pub async fn broadcast(node: &Node) {
    let global = node.global();
    let keys = global.take_broadcasts();
    if keys.is_empty() {
        return;
    }
    let started = Instant::now();
    let updates: Vec<proto::UpdatePeerGlobal> = keys
        .iter()
        .filter_map(|key| {
            let bucket = node.store().get(key)?;
            Some(replica::to_update(key, &bucket))
        })
        .collect();
    let me = node.peers().me().grpc_address.clone();
    let peers: Vec<String> = node
        .peers()
        .membership()
        .peers
        .iter()
        .map(|peer| peer.grpc_address.clone())
        .filter(|address| *address != me)
        .collect();
    let timeout = global.options.timeout;
    let Chunks {
        chunks: update_chunks,
        oversized,
    } = chunk(
        updates,
        global.options.batch_limit,
        node.peer_clients().message_budget(),
        |update| framed_len(update.encoded_len()),
    );
    if !oversized.is_empty() {
        tracing::warn!(
            limits = oversized.len(),
            "GLOBAL broadcasts dropped: larger than a peer message"
        );
        node.metrics()
            .peer_items_dropped(DroppedMessage::Global, DropReason::Oversized)
            .inc_by(oversized.len() as u64);
    }
    let calls = peers.iter().flat_map(|peer| {
        update_chunks.iter().map(move |chunk| async move {
            node.peer_clients()
                .update_peer_globals(peer, chunk.to_vec(), timeout)
                .await
                .map_err(|error| (peer.clone(), error))
        })
    });
    let mut failed = false;
    for result in join_all(calls).await {
        if let Err((peer, error)) = result {
            tracing::warn!(%peer, %error, "GLOBAL broadcast failed; will resend");
            node.metrics().broadcast_errors.inc();
            failed = true;
        }
    }
    if failed {
        // Overwrites are idempotent: resend everything to everyone next time.
        for key in keys {
            global.queue_broadcast(key);
        }
    }
    let metrics = node.metrics();
    metrics
        .broadcast_duration
        .observe(started.elapsed().as_secs_f64());
    metrics
        .global_queue_length
        .set(i64::try_from(global.broadcast_len()).unwrap_or(i64::MAX));
}
