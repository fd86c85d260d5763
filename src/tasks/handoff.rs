//! The thin I/O of handoff: the per-membership-change pass, the graceful-leave sequence, and the
//! snapshot at start and stop.
//!
//! A pass lists the store, asks [`plan`] what moves, and sends each batch with one
//! `Transfer` call (one retry). Only after the new owner answered does it record a tombstone and
//! remove each key — and only if the key did not change meanwhile; a key that changed is sent again
//! with the delivered version as `previous`, so the owner adds just the difference (at most
//! [`MAX_ROUNDS`] times). A batch that cannot be delivered stays here. Finally every joined peer is
//! told the pass is complete.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::metrics::PeerInputRejection;
use crate::peer_auth::PeerChannel;

use crate::algorithms::Bucket;
use crate::owed::Ledger;
use crate::peers::{PeerInfo, Ring};
use crate::proto::{self, v1_client::V1Client};
use crate::request::LimitKey;
use crate::router::Router;

use crate::handoff::pb::{TransferReq, handoff_client::HandoffClient};
use crate::handoff::{BATCH_LIMIT, plan, snapshot, wire};

/// How many times a key that keeps changing is sent before it is left here.
pub const MAX_ROUNDS: usize = 5;
/// How often the background task expires tombstones while a transition settles.
const SETTLE_TICK: Duration = Duration::from_millis(500);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Keys moved to their new owner and dropped here.
    pub moved: usize,
    /// Keys that could not be delivered or kept changing, and stay here.
    pub kept: usize,
}

/// Starts the background task that hands off after every membership change. The first change
/// is the one from "this node alone" (how every node starts) to the membership discovery found,
/// and it is registered before this returns, so no request is served before the node knows whom
/// to wait for.
pub fn spawn(router: Arc<Router>, stopped: watch::Receiver<bool>) -> JoinHandle<()> {
    let me = router.peers().me().clone();
    let alone = Ring::new(std::slice::from_ref(&me));
    let current = router.peers().membership();
    let joined = plan::joined(&alone, &current.ring, &me.grpc_address);
    let options = router.handoff().options();
    router
        .handoff()
        .begin_transition(&joined, Instant::now() + options.join_wait);
    let last = Seen {
        ring: alone,
        version: current.version,
    };
    tokio::spawn(run(router, last, joined, stopped))
}

/// The membership a pass last handed off for: its ring, and the list version it was taken at
/// (peers that entered the list after it are new or restarted, even when the ring looks the same).
struct Seen {
    ring: Ring,
    version: u64,
}

async fn run(
    router: Arc<Router>,
    mut last: Seen,
    mut announced: Vec<String>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut changes = router.peers().subscribe();
    let me = router.peers().me().grpc_address.clone();
    let mut pending = true;
    loop {
        if !pending {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = stopped.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(SETTLE_TICK) => {
                    router.handoff().settle(Instant::now());
                    continue;
                }
            }
        }
        pending = false;
        if router.handoff().is_leaving() {
            continue;
        }
        // Only keys held when the change was seen can have been owned here under the old ring.
        // Keys created since are this node's own under the new ring, or copies of GLOBAL limits
        // owned elsewhere: those must stay (the owner has the authoritative state).
        let held_before: HashSet<LimitKey> =
            router.evaluator().store().keys().into_iter().collect();
        let options = router.handoff().options();
        let current = router.peers().membership();
        if current.ring.peers() == last.ring.peers()
            && current
                .ring_peers_entered_after(last.version, &me)
                .is_empty()
        {
            last.version = current.version;
            continue;
        }
        // Peers already awaited for this change are not awaited again: their completion may
        // have arrived already.
        let (_, joined) = changes_since(&last, &current, &me);
        let new = begin_join_wait(&router, &joined, &announced, options.join_wait);
        announced.extend(new);
        // Let a burst of changes settle (and every peer see this one) before moving anything.
        tokio::time::sleep(options.delay).await;
        changes.borrow_and_update();
        let seen = current;
        let current = router.peers().membership();
        let held_before = with_keys_created_as_owner(&router, held_before, &seen.ring, &me);
        let (before, joined) = changes_since(&last, &current, &me);
        begin_join_wait(&router, &joined, &announced, options.join_wait);
        if router.handoff().is_leaving() {
            continue;
        }
        let _one_at_a_time = router.handoff().pass_lock().lock().await;
        let report = pass(
            &router,
            Some(&before),
            &current.ring,
            &joined,
            Some(&held_before),
        )
        .await;
        if report.moved > 0 || report.kept > 0 {
            tracing::info!(
                moved = report.moved,
                kept = report.kept,
                "handed off state after a membership change"
            );
        }
        last = Seen {
            ring: current.ring.clone(),
            version: current.version,
        };
        announced.clear();
    }
}

/// `held` plus the keys created during the delay that this node owned in `seen`, the ring it
/// routed with then: those are its own buckets, not copies, and another change during the delay
/// (a peer that left coming back) can give them to another owner. Without them such a key stayed
/// here while the owner started it from zero (bench/chaos.sh's rolling restart lost a few hits
/// that way; `a_key_first_used_while_a_peer_restarts_goes_back_to_it` in tests/it/handoff.rs).
fn with_keys_created_as_owner(
    router: &Router,
    mut held: HashSet<LimitKey>,
    seen: &Ring,
    me: &str,
) -> HashSet<LimitKey> {
    let created: Vec<LimitKey> = router
        .evaluator()
        .store()
        .keys()
        .into_iter()
        .filter(|key| !held.contains(key))
        .filter(|key| {
            seen.owner_of(&key.name, &key.unique_key)
                .is_some_and(|owner| owner.grpc_address == me)
        })
        .collect();
    held.extend(created);
    held
}

/// Starts the join wait (`join_wait` from now) for the peers of `joined` not in `announced`, and
/// returns them.
fn begin_join_wait(
    router: &Router,
    joined: &[String],
    announced: &[String],
    join_wait: Duration,
) -> Vec<String> {
    let new: Vec<String> = joined
        .iter()
        .filter(|peer| !announced.contains(peer))
        .cloned()
        .collect();
    router
        .handoff()
        .begin_transition(&new, Instant::now() + join_wait);
    new
}

/// The ring to hand off from and the peers to tell "complete", between `last` and `current`.
///
/// A peer that left and came back since `last` (a restart) handed its keys over on leaving, here
/// among others: it counts as joined, and the ring to compare with is the one it was away from,
/// so that those keys go back to it. Without this, a restart quicker than the handoff delay
/// looks like no change at all: the keys stay here while the ring routes them to the restarted
/// peer, which starts them from zero.
fn changes_since(last: &Seen, current: &crate::peers::Membership, me: &str) -> (Ring, Vec<String>) {
    let restarted = current.ring_peers_entered_after(last.version, me);
    let before = plan::without(&last.ring, &restarted);
    let joined = plan::joined(&before, &current.ring, me);
    (before, joined)
}

/// One pass: moves the keys `me` owned in `before` (every key when `None`) and another peer owns
/// in `after` (only those in `held_before`, when given), then tells every peer of `complete_to`
/// that it is done.
pub async fn pass(
    router: &Router,
    before: Option<&Ring>,
    after: &Ring,
    complete_to: &[String],
    held_before: Option<&HashSet<LimitKey>>,
) -> PassReport {
    let me = router.peers().me().grpc_address.clone();
    let entries = router
        .evaluator()
        .store()
        .entries()
        .into_iter()
        .filter(|(key, _)| held_before.is_none_or(|held| held.contains(key)));
    let plan::Plan { batches, oversized } = plan::plan(
        entries,
        before,
        after,
        &me,
        BATCH_LIMIT,
        router.peer_clients().message_budget(),
    );
    let mut clients = Clients::default();
    // No message could carry the oversized keys: they stay here (as an undeliverable batch would).
    let mut report = PassReport {
        kept: oversized.len(),
        ..PassReport::default()
    };
    if !oversized.is_empty() {
        tracing::warn!(
            keys = oversized.len(),
            "keys too large for a handoff message stay here"
        );
        let metrics = router.evaluator().metrics();
        metrics.count_oversized(crate::metrics::DroppedMessage::Handoff, oversized.len());
    }
    for batch in batches {
        let Some(mut client) = clients.get(&batch.owner, router) else {
            report.kept += batch.buckets.len();
            continue;
        };
        let sent = transfer(router, &mut client, &batch.owner, batch.buckets).await;
        report.moved += sent.moved;
        report.kept += sent.kept;
    }
    for peer in complete_to {
        if let Some(mut client) = clients.get(peer, router) {
            let request = TransferReq {
                sender: me.clone(),
                buckets: Vec::new(),
                complete: true,
            };
            if let Err(error) = call(router, &mut client, peer, request).await {
                tracing::warn!(peer = %peer, %error, "could not tell a joined peer the handoff is complete");
            }
        }
    }
    report
}

/// Sends one batch to `owner` and drops what it accepted (see the module docs).
async fn transfer(
    router: &Router,
    client: &mut HandoffClient<PeerChannel>,
    owner: &str,
    buckets: Vec<(LimitKey, Bucket)>,
) -> PassReport {
    let me = router.peers().me().grpc_address.clone();
    let mut report = PassReport::default();
    let mut to_send: Vec<(LimitKey, Bucket, Option<Bucket>)> = buckets
        .into_iter()
        .map(|(key, bucket)| (key, bucket, None))
        .collect();
    for _ in 0..MAX_ROUNDS {
        if to_send.is_empty() {
            break;
        }
        let request = TransferReq {
            sender: me.clone(),
            buckets: to_send
                .iter()
                .map(|(key, bucket, previous)| wire::to_wire(key, bucket, previous.as_ref()))
                .collect(),
            complete: false,
        };
        if let Err(error) = call(router, client, owner, request).await {
            tracing::warn!(owner = %owner, %error, keys = to_send.len(), "handoff failed; the keys stay here");
            report.kept += to_send.len();
            return report;
        }
        let mut changed = Vec::new();
        for (key, bucket, _) in to_send {
            // Forward before removing, so no request finds a gap in between.
            router.handoff().tombstone(key.clone(), owner);
            match router
                .evaluator()
                .store()
                .remove_if_unchanged(&key, &bucket)
            {
                Ok(()) => report.moved += 1,
                Err(current) => changed.push((key, current, Some(bucket))),
            }
        }
        to_send = changed;
    }
    if !to_send.is_empty() {
        tracing::warn!(owner = %owner, keys = to_send.len(), "keys kept changing during handoff; they stay here");
        report.kept += to_send.len();
    }
    report
}

/// One `Transfer` call to `peer`, bounded by the handoff timeout, retried once (each try traced
/// as a client span).
async fn call(
    router: &Router,
    client: &mut HandoffClient<PeerChannel>,
    peer: &str,
    request: TransferReq,
) -> Result<(), tonic::Status> {
    let timeout = router.handoff().options().timeout;
    let mut outcome = Err(tonic::Status::unavailable("not sent"));
    for _ in 0..2 {
        let span = crate::telemetry::peer_span(
            crate::telemetry::PeerCall::Handoff,
            peer,
            request.buckets.len(),
            None,
            [],
        );
        let transfer = client.transfer(request.clone()).instrument(span.clone());
        outcome = match tokio::time::timeout(timeout, transfer).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            ))),
        };
        if let Err(status) = &outcome {
            crate::telemetry::record_grpc_status(&span, status.code());
        }
    }
    outcome
}

/// Handoff clients of one pass, by gRPC address.
#[derive(Default)]
struct Clients(HashMap<String, HandoffClient<PeerChannel>>);

impl Clients {
    fn get(&mut self, address: &str, router: &Router) -> Option<HandoffClient<PeerChannel>> {
        if let Some(client) = self.0.get(address) {
            return Some(client.clone());
        }
        let timeout = router.handoff().options().timeout;
        let channel = match router.peer_clients().channel(address, timeout, true) {
            Ok(channel) => channel,
            Err(error) => {
                tracing::warn!(peer = %address, error = %error.reason, "invalid peer address; nothing handed off to it");
                return None;
            }
        };
        let client = HandoffClient::new(channel);
        self.0.insert(address.to_string(), client.clone());
        Some(client)
    }
}

/// The ring of the current membership without this node.
fn ring_without_me(router: &Router) -> Ring {
    let me = &router.peers().me().grpc_address;
    let others: Vec<PeerInfo> = router
        .peers()
        .membership()
        .ring
        .peers()
        .iter()
        .filter(|peer| &peer.grpc_address != me)
        .cloned()
        .collect();
    Ring::new(&others)
}

/// The first half of a graceful leave, before deregistering: enter leaving mode (keys not held
/// here go to their owner without this node) and hand every key to that owner. Returns the peers
/// that will own them, or nothing when this node is alone.
pub async fn leave(router: &Router) -> Vec<PeerInfo> {
    let ring = ring_without_me(router);
    if ring.is_empty() {
        return Vec::new();
    }
    router.handoff().start_leaving(ring.clone());
    let _one_at_a_time = router.handoff().pass_lock().lock().await;
    let report = pass(router, None, &ring, &[], None).await;
    tracing::info!(
        moved = report.moved,
        kept = report.kept,
        "leaving: handed off owned state"
    );
    ring.peers().to_vec()
}

/// The second half of a graceful leave, after deregistering: wait (at most the leave wait) until
/// no peer lists this node any more, then hand off whatever arrived meanwhile.
pub async fn finish_leave(router: &Router, peers: &[PeerInfo]) {
    if peers.is_empty() {
        return;
    }
    let options = router.handoff().options();
    let deadline = Instant::now() + options.leave_wait;
    let mut clients = Clients::default();
    let mut waiting: Vec<&PeerInfo> = peers.iter().collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for peer in waiting {
            if !forgot_me(router, &mut clients, &peer.grpc_address).await {
                still.push(peer);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if !waiting.is_empty() {
        tracing::warn!(
            peers = waiting.len(),
            "peers did not confirm the leave in time"
        );
    }
    let ring = ring_without_me(router);
    let ring = if ring.is_empty() {
        Ring::new(peers)
    } else {
        ring
    };
    let _one_at_a_time = router.handoff().pass_lock().lock().await;
    let report = pass(router, None, &ring, &[], None).await;
    if report.moved > 0 || report.kept > 0 {
        tracing::info!(
            moved = report.moved,
            kept = report.kept,
            "leaving: handed off late changes"
        );
    }
}

/// Whether `peer`'s list no longer holds this node: asked with an empty `Transfer`, whose answer
/// says so (`sender_listed`); a peer of an older build answers without it, and is asked with
/// `HealthCheck` instead (which fails, telling nothing, while that peer's own calls fail).
async fn forgot_me(router: &Router, clients: &mut Clients, peer: &str) -> bool {
    const ASK_TIMEOUT: Duration = Duration::from_millis(500);
    let me = router.peers().me().grpc_address.clone();
    let Some(mut client) = clients.get(peer, router) else {
        return false;
    };
    let request = TransferReq {
        sender: me.clone(),
        buckets: Vec::new(),
        complete: false,
    };
    match tokio::time::timeout(ASK_TIMEOUT, client.transfer(request)).await {
        Ok(Ok(answer)) => {
            if let Some(listed) = answer.get_ref().sender_listed {
                return !listed;
            }
        }
        _ => return false,
    }
    let Ok(channel) = router.peer_clients().channel(peer, ASK_TIMEOUT, true) else {
        return false;
    };
    let mut health = V1Client::new(channel);
    let answer =
        tokio::time::timeout(ASK_TIMEOUT, health.health_check(proto::HealthCheckReq {})).await;
    matches!(&answer, Ok(Ok(health))
        if !health.get_ref().local_peers.iter().any(|p| p.grpc_address == me))
}

/// Restores the snapshot at `path` into the store; a missing or bad file is a warning. Buckets
/// that fail [`check`](crate::handoff::check) (a key longer than `GUBER_MAX_KEY_LENGTH`, an impossible
/// count or expiry) are skipped and counted.
pub fn restore_snapshot(router: &Router, path: &Path) {
    let now_ms = router.evaluator().clock().now_ms();
    let limits = router.evaluator().limits();
    let metrics = router.evaluator().metrics();
    match snapshot::read_contents(path, now_ms) {
        Ok(snapshot::Contents { buckets, owed }) => {
            let mut count = 0;
            let mut skipped = 0;
            for (key, bucket) in buckets {
                if crate::handoff::check::check(&key, &bucket, None, limits, now_ms).is_err() {
                    skipped += 1;
                    metrics.reject_peer_input(PeerInputRejection::SnapshotInvalidBucket);
                    continue;
                }
                router.evaluator().store().put(key, bucket);
                count += 1;
            }
            if skipped > 0 {
                tracing::warn!(path = %path.display(), skipped, "skipped invalid buckets of the snapshot");
            }
            let owed_count = owed.len();
            for hit in owed {
                if hit.item.name.len() > limits.max_key_bytes
                    || hit.item.unique_key.len() > limits.max_key_bytes
                {
                    metrics.reject_peer_input(PeerInputRejection::SnapshotInvalidBucket);
                    continue;
                }
                let key = LimitKey::new(hit.item.name.clone(), hit.item.unique_key.clone());
                // Sent to the key's current owner by the GLOBAL sync or the owner-failure
                // reconciler, like hits owed before the restart.
                let _ = owed_ledger(router, hit.global).add(key, hit.item);
            }
            tracing::info!(path = %path.display(), buckets = count, owed = owed_count, "restored the snapshot");
        }
        Err(snapshot::SnapshotError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            tracing::warn!(path = %path.display(), "no snapshot to restore; starting empty");
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot restore the snapshot; starting empty");
        }
    }
}

/// Writes the store and the hits still owed to other nodes (`owed`) to the snapshot at `path`; a
/// failure is logged, never fatal.
pub fn save_snapshot_with_owed(router: &Router, path: &Path, owed: &[snapshot::OwedHit]) {
    let entries = router.evaluator().store().entries();
    match snapshot::write_with_owed(path, &entries, owed, router.evaluator().clock().now_ms()) {
        Ok(()) => {
            tracing::info!(path = %path.display(), buckets = entries.len(), owed = owed.len(), "wrote the snapshot")
        }
        Err(error) => {
            tracing::warn!(%error, owed = owed.len(), "cannot write the snapshot; owed hits are lost")
        }
    }
}

/// Takes every hit this node still owes other nodes (undelivered GLOBAL hits and owner-failure
/// hits), for the snapshot at shutdown.
pub fn take_owed(router: &Router) -> Vec<snapshot::OwedHit> {
    [true, false]
        .into_iter()
        .flat_map(|global| {
            owed_ledger(router, global)
                .take()
                .into_iter()
                .map(move |(_, item)| snapshot::OwedHit { item, global })
        })
        .collect()
}

/// The ledger of GLOBAL hits (`global`) or of owner-failure hits.
fn owed_ledger(router: &Router, global: bool) -> &Ledger {
    if global {
        router.evaluator().global().ledger()
    } else {
        router.owner_fallback().ledger()
    }
}
