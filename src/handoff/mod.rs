//! State handoff: when the ring changes, the buckets a node no longer owns move to their new owner
//! instead of restarting from zero there.
//!
//! Gubernator loses every counter whose owner moves, so each deploy briefly lifts every limit.
//! ringlimit moves them with its own `ringlimit.v1.Handoff` service (so `pb.gubernator` stays
//! Gubernator's):
//!
//! - [`merge`]: how a receiver combines an incoming bucket with what it holds (never granting more
//!   than either side would); pure.
//! - [`plan`]: which stored keys move after a membership change, grouped by new owner, in bounded
//!   batches; pure.
//! - `tasks::handoff`: the thin I/O: the background task that runs one pass per membership change
//!   (debounced, one at a time), the graceful-leave sequence, and the snapshot at start and stop.
//! - `tasks::handoff_service`: the receiving side, which takes buckets only from members and only
//!   those that pass [`check`] (no bucket outlives its window, no count exceeds its capacity).
//!
//! Those two hold the `Router` and so live above it, in `tasks`; this module is the state and the
//! pure rules the router consults, below it.
//! - [`snapshot`]: the optional on-disk copy of the store (`GUBER_SNAPSHOT_PATH`).
//!
//! [`HandoffState`] is what request handling consults while a transition is under way (see
//! architecture.md, "State handoff", for the race and its answer): keys already handed off are
//! forwarded to their new owner (a *tombstone*), a leaving node forwards every key it no longer
//! holds to the owner in the ring without itself, and a node that just saw peers join waits
//! (briefly, bounded) before creating a bucket that a joined peer may still be handing over. Outside
//! transitions one atomic load is all it costs.

pub mod check;
pub mod merge;
pub mod plan;
pub mod snapshot;
pub mod wire;

/// The `ringlimit.v1` wire types (`Handoff` service among them), generated in [`crate::proto`].
pub use crate::proto::ringlimit_v1 as pb;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::mutex::lock;
use crate::peers::Ring;
use crate::request::LimitKey;

/// Request metadata that marks an item forwarded because of a handoff; its receiver evaluates it
/// locally and never forwards it again, so forwarding cannot loop.
pub const HOP_METADATA_KEY: &str = "ringlimit-handoff-hop";

/// The most buckets in one `Transfer` call.
pub const BATCH_LIMIT: usize = 500;

/// How handoff behaves (`GUBER_HANDOFF_*`, `GUBER_SNAPSHOT_PATH`).
#[derive(Debug, Clone)]
pub struct HandoffOptions {
    /// How long after a membership change the pass starts, so that bursts of changes make one
    /// pass and every peer has seen the change.
    pub delay: Duration,
    /// The most one `Transfer` call may take.
    pub timeout: Duration,
    /// The most a request for a missing key waits for joined peers to finish handing over.
    pub join_wait: Duration,
    /// On a graceful leave, the most time spent waiting for peers to drop this node.
    pub leave_wait: Duration,
    /// How long keys handed off keep being forwarded to their new owner from here.
    pub tombstone_ttl: Duration,
    /// Whether a graceful leave hands off (dynamic discovery only: a static list never drops a
    /// node, so peers would keep routing to it).
    pub on_leave: bool,
    /// Where the store is saved on shutdown and restored from on start.
    pub snapshot_path: Option<PathBuf>,
}

impl Default for HandoffOptions {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(50),
            timeout: Duration::from_secs(2),
            join_wait: Duration::from_millis(250),
            leave_wait: Duration::from_secs(5),
            tombstone_ttl: Duration::from_secs(10),
            on_leave: false,
            snapshot_path: None,
        }
    }
}

/// What to do with a request for a key this node does not hold, during a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// Forward it to this peer (its new owner).
    Forward(String),
    /// Wait for joined peers to finish handing over, then evaluate here.
    Wait,
    /// Evaluate here.
    Local,
}

/// A key handed off to `owner` at `at`.
#[derive(Debug, Clone)]
struct Tombstone {
    owner: String,
    at: Instant,
}

/// Peers whose handover this node waits for, until `deadline`.
#[derive(Debug, Default)]
struct Awaiting {
    sources: HashSet<String>,
    deadline: Option<Instant>,
}

/// The transition state request handling consults (see the module docs).
pub struct HandoffState {
    options: RwLock<HandoffOptions>,
    active: AtomicBool,
    leaving: RwLock<Option<Ring>>,
    tombstones: Mutex<HashMap<LimitKey, Tombstone>>,
    awaiting: Mutex<Awaiting>,
    progress: watch::Sender<u64>,
    pass: tokio::sync::Mutex<()>,
}

impl Default for HandoffState {
    fn default() -> Self {
        Self {
            options: RwLock::new(HandoffOptions::default()),
            active: AtomicBool::new(false),
            leaving: RwLock::new(None),
            tombstones: Mutex::new(HashMap::new()),
            awaiting: Mutex::new(Awaiting::default()),
            progress: watch::Sender::new(0),
            pass: tokio::sync::Mutex::new(()),
        }
    }
}

impl HandoffState {
    /// Sets the options (once, at start).
    pub fn configure(&self, options: HandoffOptions) {
        match self.options.write() {
            Ok(mut current) => *current = options,
            Err(poisoned) => *poisoned.into_inner() = options,
        }
    }

    /// The options in force.
    pub fn options(&self) -> HandoffOptions {
        match self.options.read() {
            Ok(options) => options.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Whether a transition is under way; when not, requests take the normal path.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Starts a transition: from now on requests consult this state. `joined` are the peers whose
    /// handover misses wait for, until `deadline`.
    pub fn begin_transition(&self, joined: &[String], deadline: Instant) {
        self.active.store(true, Ordering::SeqCst);
        if joined.is_empty() {
            return;
        }
        let mut awaiting = lock(&self.awaiting);
        // A new wait starts its own deadline; one under way is only ever extended.
        awaiting.deadline = match awaiting.deadline {
            Some(current) if !awaiting.sources.is_empty() => Some(current.max(deadline)),
            _ => Some(deadline),
        };
        awaiting.sources.extend(joined.iter().cloned());
    }

    /// Ends the transition once nothing needs it any more: drops tombstones older than the TTL,
    /// and clears the active flag when none are left, nobody is awaited and the node is not
    /// leaving. Returns whether the transition is still active.
    pub fn settle(&self, now: Instant) -> bool {
        let ttl = self.options().tombstone_ttl;
        let mut tombstones = lock(&self.tombstones);
        tombstones.retain(|_, tombstone| now.duration_since(tombstone.at) < ttl);
        let awaiting = {
            let mut awaiting = lock(&self.awaiting);
            if awaiting.deadline.is_some_and(|deadline| deadline <= now) {
                if !awaiting.sources.is_empty() {
                    tracing::warn!(peers = ?awaiting.sources, "joined peers did not complete their handoff within the join wait");
                }
                *awaiting = Awaiting::default();
            }
            !awaiting.sources.is_empty()
        };
        let still = !tombstones.is_empty() || awaiting || self.is_leaving();
        if !still {
            self.active.store(false, Ordering::SeqCst);
        }
        still
    }

    /// Records that `key` was handed off to `owner`.
    pub fn tombstone(&self, key: LimitKey, owner: &str) {
        lock(&self.tombstones).insert(
            key,
            Tombstone {
                owner: owner.to_string(),
                at: Instant::now(),
            },
        );
    }

    /// Forgets that `key` was handed off (it came back).
    pub fn forget_tombstone(&self, key: &LimitKey) {
        if self.is_active() {
            lock(&self.tombstones).remove(key);
        }
    }

    /// The number of keys currently forwarded to their new owner.
    pub fn tombstones(&self) -> usize {
        lock(&self.tombstones).len()
    }

    /// Enters leaving mode: keys not held here go to their owner in `ring_without_me`.
    pub fn start_leaving(&self, ring_without_me: Ring) {
        match self.leaving.write() {
            Ok(mut leaving) => *leaving = Some(ring_without_me),
            Err(poisoned) => *poisoned.into_inner() = Some(ring_without_me),
        }
        self.active.store(true, Ordering::SeqCst);
    }

    /// Whether this node is leaving the cluster.
    pub fn is_leaving(&self) -> bool {
        match self.leaving.read() {
            Ok(leaving) => leaving.is_some(),
            Err(poisoned) => poisoned.into_inner().is_some(),
        }
    }

    /// Whether this node is still waiting, within the join wait, for joined peers to hand keys
    /// over (readiness: a joining node is not ready).
    pub fn is_awaiting_joins(&self) -> bool {
        self.is_active() && self.awaiting(Instant::now())
    }

    /// A peer finished handing over to this node.
    pub fn source_complete(&self, sender: &str) {
        let removed = lock(&self.awaiting).sources.remove(sender);
        if removed {
            self.progress.send_modify(|generation| *generation += 1);
        }
    }

    /// Whether a miss should still wait for joined peers.
    fn awaiting(&self, now: Instant) -> bool {
        let awaiting = lock(&self.awaiting);
        !awaiting.sources.is_empty() && awaiting.deadline.is_some_and(|deadline| now < deadline)
    }

    /// Waits until every awaited peer has finished handing over, or the deadline passes.
    pub async fn wait_for_sources(&self) {
        let mut progress = self.progress.subscribe();
        loop {
            let deadline = {
                let awaiting = lock(&self.awaiting);
                match awaiting.deadline {
                    Some(deadline) if !awaiting.sources.is_empty() => deadline,
                    _ => return,
                }
            };
            let now = Instant::now();
            if deadline <= now {
                return;
            }
            if tokio::time::timeout(deadline - now, progress.changed())
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// What to do with a request for `key`, which this node does not hold, while a transition is
    /// under way. `me` is this node's advertise address.
    pub fn on_miss(&self, key: &LimitKey, me: &str) -> Miss {
        let ttl = self.options().tombstone_ttl;
        if let Some(tombstone) = lock(&self.tombstones).get(key)
            && tombstone.at.elapsed() < ttl
        {
            return Miss::Forward(tombstone.owner.clone());
        }
        let leaving_owner = match self.leaving.read() {
            Ok(leaving) => leaving.as_ref().and_then(|ring| {
                ring.owner_of(&key.name, &key.unique_key)
                    .map(|peer| peer.grpc_address.clone())
            }),
            Err(_) => None,
        };
        if let Some(owner) = leaving_owner.filter(|owner| owner != me) {
            return Miss::Forward(owner);
        }
        if self.awaiting(Instant::now()) {
            return Miss::Wait;
        }
        Miss::Local
    }

    /// Serialises passes: one at a time.
    pub(crate) fn pass_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::PeerInfo;
    use std::sync::Arc;

    fn ring(addresses: &[&str]) -> Ring {
        let peers: Vec<PeerInfo> = addresses
            .iter()
            .map(|a| PeerInfo {
                grpc_address: a.to_string(),
                http_address: String::new(),
                data_center: String::new(),
            })
            .collect();
        Ring::new(&peers)
    }

    /// A transition in which key n/k was handed to b:1 (a tombstone points there).
    fn tombstoned() -> (HandoffState, LimitKey) {
        let state = HandoffState::default();
        state.begin_transition(&[], Instant::now());
        let key = LimitKey::new("n", "k");
        state.tombstone(key.clone(), "b:1");
        (state, key)
    }

    #[test]
    fn outside_a_transition_misses_are_local_and_the_state_is_inactive() {
        let state = HandoffState::default();
        assert!(!state.is_active());
        assert_eq!(state.on_miss(&LimitKey::new("n", "k"), "a:1"), Miss::Local);
    }

    #[test]
    fn tombstones_forward_until_their_ttl() {
        let (state, key) = tombstoned();
        assert_eq!(state.on_miss(&key, "a:1"), Miss::Forward("b:1".into()));
        assert!(state.settle(Instant::now()));
        let later = Instant::now() + state.options().tombstone_ttl + Duration::from_secs(1);
        assert!(!state.settle(later));
        assert!(!state.is_active());
        assert_eq!(state.on_miss(&key, "a:1"), Miss::Local);
    }

    #[test]
    fn a_node_awaits_joins_until_they_complete_or_the_wait_ends() {
        let state = HandoffState::default();
        assert!(!state.is_awaiting_joins());
        state.begin_transition(
            &["b:1".to_string()],
            Instant::now() + Duration::from_secs(60),
        );
        assert!(state.is_awaiting_joins());
        state.source_complete("b:1");
        assert!(!state.is_awaiting_joins());
        state.begin_transition(&["c:1".to_string()], Instant::now());
        assert!(!state.is_awaiting_joins(), "the join wait is over");
    }

    #[test]
    fn a_returned_key_is_no_longer_forwarded() {
        let (state, key) = tombstoned();
        state.forget_tombstone(&key);
        assert_eq!(state.on_miss(&key, "a:1"), Miss::Local);
    }

    #[test]
    fn leaving_forwards_to_the_owner_without_this_node() {
        let state = HandoffState::default();
        state.start_leaving(ring(&["b:1"]));
        assert!(state.is_active());
        assert_eq!(
            state.on_miss(&LimitKey::new("n", "k"), "a:1"),
            Miss::Forward("b:1".into())
        );
        assert!(
            state.settle(Instant::now()),
            "leaving keeps the transition active"
        );
    }

    #[test]
    fn misses_wait_for_joined_peers_until_they_complete_or_the_deadline() {
        let state = HandoffState::default();
        let key = LimitKey::new("n", "k");
        state.begin_transition(
            &["b:1".into(), "c:1".into()],
            Instant::now() + Duration::from_secs(60),
        );
        assert_eq!(state.on_miss(&key, "a:1"), Miss::Wait);
        state.source_complete("b:1");
        assert_eq!(state.on_miss(&key, "a:1"), Miss::Wait);
        state.source_complete("c:1");
        assert_eq!(state.on_miss(&key, "a:1"), Miss::Local);

        state.begin_transition(&["d:1".into()], Instant::now());
        assert_eq!(
            state.on_miss(&key, "a:1"),
            Miss::Local,
            "the deadline passed"
        );
    }

    #[tokio::test]
    async fn waiting_ends_when_the_last_source_completes() {
        let state = Arc::new(HandoffState::default());
        state.begin_transition(&["b:1".into()], Instant::now() + Duration::from_secs(30));
        let waiter = {
            let state = Arc::clone(&state);
            tokio::spawn(async move { state.wait_for_sources().await })
        };
        tokio::task::yield_now().await;
        state.source_complete("b:1");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the wait ends")
            .unwrap();
    }
}
