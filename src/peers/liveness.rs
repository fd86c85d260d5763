//! Dead-peer detection: which peers to stop calling for a while, so that callers get an answer at
//! once instead of each waiting for a timeout on a peer that is gone.
//!
//! A peer is marked **down** after `threshold` consecutive failed calls (timeouts, error
//! statuses), or at once when the connection itself fails (the channel reports the peer
//! unreachable: connection refused or reset). While down, calls to it fail immediately with
//! [`Admission::Down`]. When the down period ends the peer is **half-open**: one call goes through
//! as a probe (the others keep failing fast until the probe's call timeout); a success makes the
//! peer up again, a failure marks it down for twice as long (up to a maximum). Any success resets
//! everything. Failures reported while the peer is already down (calls that were in flight when it
//! was marked) change nothing, so stragglers do not inflate the backoff.
//!
//! [`LivenessTable`] is the pure state machine: every method takes the current time in
//! milliseconds, so its rules are unit-tested with a [`ManualClock`](crate::clock::ManualClock).
//! [`PeerLiveness`] wraps it in a mutex with a monotonic clock for use from the peer clients.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// The defaults of the down-detection settings.
pub const DEFAULT_THRESHOLD: u32 = 3;

/// How a peer is judged dead and for how long it is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivenessConfig {
    /// Consecutive failed calls that mark a peer down (`GUBER_PEER_DOWN_THRESHOLD`, ≥ 1).
    pub threshold: u32,
    /// The first down period (`GUBER_PEER_DOWN_BACKOFF`); each failed probe doubles it.
    pub backoff: Duration,
    /// The longest down period (`GUBER_PEER_DOWN_MAX_BACKOFF`).
    pub max_backoff: Duration,
    /// How long a probe may take before another call may probe (the peer call timeout).
    pub probe_timeout: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
            probe_timeout: Duration::from_millis(500),
        }
    }
}

/// What a failed call says about its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made or was lost: the peer is unreachable now.
    Connection,
    /// The call timed out or was answered with an error: counts towards the threshold.
    Call,
}

/// Whether a call to a peer may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The peer is up: call it.
    Up,
    /// The peer was down and its down period is over: this call is the probe.
    Probe,
    /// The peer is down: do not call it.
    Down(PeerDown),
}

/// Why a peer is not being called, for the error a caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDown {
    /// The failure that marked it down.
    pub reason: String,
    /// How long until a call may probe it again, in milliseconds.
    pub retry_in_ms: i64,
}

impl std::fmt::Display for PeerDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peer is down (last failure: {}); next attempt in {} ms",
            self.reason, self.retry_in_ms
        )
    }
}

/// One peer's state.
#[derive(Debug, Clone, Default)]
struct PeerState {
    /// Failed calls since the last success (while up).
    consecutive_failures: u32,
    /// While down or half-open: the end of the down period.
    down_until: Option<i64>,
    /// Down periods in a row without a success (1 for the first); sets the backoff.
    downs: u32,
    /// While half-open: a probe is in flight until this time.
    probe_until: Option<i64>,
    /// The failure that marked the peer down.
    reason: String,
}

/// The pure state machine of every peer's liveness. Times are milliseconds of any monotonic
/// clock.
#[derive(Debug)]
pub struct LivenessTable {
    config: LivenessConfig,
    peers: HashMap<String, PeerState>,
}

impl LivenessTable {
    /// Every peer up.
    pub fn new(config: LivenessConfig) -> Self {
        Self {
            config,
            peers: HashMap::new(),
        }
    }

    /// Whether a call to `peer` may go at `now`; a [`Admission::Probe`] reserves the probe.
    pub fn admit(&mut self, peer: &str, now: i64) -> Admission {
        let probe_ms = millis(self.config.probe_timeout);
        let Some(state) = self.peers.get_mut(peer) else {
            return Admission::Up;
        };
        let Some(until) = state.down_until else {
            return Admission::Up;
        };
        if now < until {
            return Admission::Down(PeerDown {
                reason: state.reason.clone(),
                retry_in_ms: until - now,
            });
        }
        match state.probe_until {
            Some(probe_until) if now < probe_until => Admission::Down(PeerDown {
                reason: state.reason.clone(),
                retry_in_ms: probe_until - now,
            }),
            _ => {
                state.probe_until = Some(now.saturating_add(probe_ms));
                Admission::Probe
            }
        }
    }

    /// Records a call to `peer` that was answered: the peer is up.
    pub fn on_success(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// Records a failed call to `peer` at `now`.
    pub fn on_failure(&mut self, peer: &str, failure: Failure, reason: &str, now: i64) {
        let config = &self.config;
        let state = self.peers.entry(peer.to_string()).or_default();
        match state.down_until {
            // Already down: a call that was in flight when it was marked. Nothing new.
            Some(until) if now < until => {}
            // Half-open: the probe (or a late call) failed; back off further.
            Some(_) => {
                state.downs = state.downs.saturating_add(1);
                mark_down(state, config, reason, now);
            }
            None => {
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                if failure == Failure::Connection
                    || state.consecutive_failures >= config.threshold.max(1)
                {
                    state.downs = 1;
                    mark_down(state, config, reason, now);
                }
            }
        }
    }

    /// Whether `peer` is down (or half-open) at `now`, without reserving a probe.
    pub fn is_down(&self, peer: &str, now: i64) -> bool {
        self.peers
            .get(peer)
            .and_then(|state| state.down_until)
            .is_some_and(|until| now < until)
    }

    /// Forgets the peers `keep` rejects (they left the cluster).
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.peers.retain(|peer, _| keep(peer));
    }
}

fn mark_down(state: &mut PeerState, config: &LivenessConfig, reason: &str, now: i64) {
    let doublings = state.downs.saturating_sub(1).min(30);
    let period = millis(config.backoff)
        .saturating_mul(1_i64 << doublings)
        .min(millis(config.max_backoff).max(millis(config.backoff)));
    state.down_until = Some(now.saturating_add(period));
    state.probe_until = None;
    state.consecutive_failures = 0;
    state.reason = reason.to_string();
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A monotonic millisecond clock (time since it was made), so wall-clock jumps do not shorten or
/// stretch down periods.
#[derive(Debug)]
pub struct MonotonicClock(Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> i64 {
        i64::try_from(self.0.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

/// The liveness of every peer, shared by the peer clients.
pub struct PeerLiveness {
    table: Mutex<LivenessTable>,
    clock: Arc<dyn Clock>,
}

impl PeerLiveness {
    /// Every peer up; time from `clock`.
    pub fn new(config: LivenessConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            table: Mutex::new(LivenessTable::new(config)),
            clock,
        }
    }

    /// Whether a call to `peer` may go now (see [`LivenessTable::admit`]).
    pub fn admit(&self, peer: &str) -> Admission {
        let now = self.clock.now_ms();
        self.lock().admit(peer, now)
    }

    /// Records an answered call.
    pub fn on_success(&self, peer: &str) {
        self.lock().on_success(peer);
    }

    /// Records a failed call.
    pub fn on_failure(&self, peer: &str, failure: Failure, reason: &str) {
        let now = self.clock.now_ms();
        self.lock().on_failure(peer, failure, reason, now);
    }

    /// Whether `peer` is down now.
    pub fn is_down(&self, peer: &str) -> bool {
        let now = self.clock.now_ms();
        self.lock().is_down(peer, now)
    }

    /// Forgets the peers `keep` rejects.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(keep);
    }

    fn lock(&self) -> MutexGuard<'_, LivenessTable> {
        crate::mutex::lock(&self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const PEER: &str = "b:1051";

    fn liveness(threshold: u32) -> (Arc<ManualClock>, PeerLiveness) {
        let clock = Arc::new(ManualClock::new(1_000));
        let config = LivenessConfig {
            threshold,
            backoff: Duration::from_millis(1_000),
            max_backoff: Duration::from_millis(4_000),
            probe_timeout: Duration::from_millis(500),
        };
        (clock.clone(), PeerLiveness::new(config, clock))
    }

    /// A liveness table of threshold 1 in which `PEER` just failed, so it is down.
    fn down_after(failure: Failure, reason: &str) -> (Arc<ManualClock>, PeerLiveness) {
        let (clock, liveness) = liveness(1);
        liveness.on_failure(PEER, failure, reason);
        (clock, liveness)
    }

    fn down_for(admission: Admission) -> i64 {
        match admission {
            Admission::Down(down) => down.retry_in_ms,
            other => panic!("expected Down, got {other:?}"),
        }
    }

    #[test]
    fn a_peer_is_up_until_the_threshold_of_consecutive_failures() {
        let (_, liveness) = liveness(3);
        assert_eq!(liveness.admit(PEER), Admission::Up);
        liveness.on_failure(PEER, Failure::Call, "timed out");
        liveness.on_failure(PEER, Failure::Call, "timed out");
        assert_eq!(liveness.admit(PEER), Admission::Up);
        liveness.on_failure(PEER, Failure::Call, "timed out");
        assert_eq!(down_for(liveness.admit(PEER)), 1_000);
        assert!(liveness.is_down(PEER));
        assert_eq!(
            liveness.admit("c:1051"),
            Admission::Up,
            "other peers are up"
        );
    }

    #[test]
    fn a_success_resets_the_count() {
        let (_, liveness) = liveness(2);
        liveness.on_failure(PEER, Failure::Call, "timed out");
        liveness.on_success(PEER);
        liveness.on_failure(PEER, Failure::Call, "timed out");
        assert_eq!(liveness.admit(PEER), Admission::Up);
    }

    #[test]
    fn a_connection_failure_marks_the_peer_down_at_once() {
        let (_, liveness) = liveness(3);
        liveness.on_failure(PEER, Failure::Connection, "connection refused");
        match liveness.admit(PEER) {
            Admission::Down(down) => {
                assert_eq!(down.reason, "connection refused");
                assert!(down.to_string().contains("connection refused"));
            }
            other => panic!("expected Down, got {other:?}"),
        }
    }

    #[test]
    fn after_the_down_period_one_call_probes_and_the_others_wait_for_it() {
        let (clock, liveness) = down_after(Failure::Call, "timed out");
        clock.advance(999);
        assert_eq!(down_for(liveness.admit(PEER)), 1);
        clock.advance(1);
        assert_eq!(liveness.admit(PEER), Admission::Probe);
        assert_eq!(
            down_for(liveness.admit(PEER)),
            500,
            "the probe is in flight"
        );
        // The probe never reported (its caller gave up): after its timeout another call probes.
        clock.advance(500);
        assert_eq!(liveness.admit(PEER), Admission::Probe);
        liveness.on_success(PEER);
        assert_eq!(liveness.admit(PEER), Admission::Up);
        assert!(!liveness.is_down(PEER));
    }

    #[test]
    fn failed_probes_double_the_down_period_up_to_the_maximum() {
        let (clock, liveness) = down_after(Failure::Call, "timed out");
        let mut periods = Vec::new();
        for _ in 0..4 {
            let period = down_for(liveness.admit(PEER));
            periods.push(period);
            clock.advance(period);
            assert_eq!(liveness.admit(PEER), Admission::Probe);
            liveness.on_failure(PEER, Failure::Call, "still timing out");
        }
        assert_eq!(periods, [1_000, 2_000, 4_000, 4_000]);
        // A success resets the backoff.
        clock.advance(4_000);
        assert_eq!(liveness.admit(PEER), Admission::Probe);
        liveness.on_success(PEER);
        liveness.on_failure(PEER, Failure::Connection, "refused");
        assert_eq!(down_for(liveness.admit(PEER)), 1_000);
    }

    #[test]
    fn failures_of_calls_in_flight_while_down_change_nothing() {
        let (clock, liveness) = down_after(Failure::Call, "timed out");
        clock.advance(100);
        for _ in 0..10 {
            liveness.on_failure(PEER, Failure::Call, "timed out");
        }
        assert_eq!(down_for(liveness.admit(PEER)), 900);
    }

    #[test]
    fn departed_peers_are_forgotten() {
        let (_, liveness) = down_after(Failure::Connection, "refused");
        liveness.retain(|peer| peer != PEER);
        assert_eq!(liveness.admit(PEER), Admission::Up);
    }

    #[test]
    fn a_zero_threshold_acts_as_one_and_huge_backoffs_saturate() {
        let clock = Arc::new(ManualClock::new(i64::MAX - 10));
        let config = LivenessConfig {
            threshold: 0,
            backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            probe_timeout: Duration::MAX,
        };
        let liveness = PeerLiveness::new(config, clock);
        liveness.on_failure(PEER, Failure::Call, "timed out");
        assert!(liveness.is_down(PEER));
    }
}
