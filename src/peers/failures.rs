//! Recent failures of calls to peers, which make this node report itself unhealthy for a while.
//!
//! Gubernator keeps a node unhealthy for five minutes after a peer call fails, which holds healthy
//! nodes out of service long after a transient blip; ringlimit's window is configurable
//! (`GUBER_PEER_FAILURE_WINDOW`, default 30 s).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The last failure of each peer, forgotten once older than the window.
#[derive(Debug)]
pub struct PeerFailures {
    window: Duration,
    last: Mutex<HashMap<String, (Instant, String)>>,
}

impl PeerFailures {
    /// Remembers failures for `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Records that a call to `peer` failed at `now` with `reason`.
    pub fn record(&self, peer: &str, reason: &str, now: Instant) {
        let mut last = crate::mutex::lock(&self.last);
        last.insert(peer.to_string(), (now, reason.to_string()));
    }

    /// The failures within the window at `now` of the peers `is_member` accepts, as one message
    /// (`peer: reason | peer: reason`), or `None` when there are none.
    pub fn recent(&self, now: Instant, is_member: impl Fn(&str) -> bool) -> Option<String> {
        let mut last = crate::mutex::lock(&self.last);
        last.retain(|_, (at, _)| now.saturating_duration_since(*at) < self.window);
        let mut messages: Vec<String> = last
            .iter()
            .filter(|(peer, _)| is_member(peer))
            .map(|(peer, (_, reason))| format!("calls to peer {peer} failed: {reason}"))
            .collect();
        if messages.is_empty() {
            return None;
        }
        messages.sort();
        Some(messages.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_reported_within_the_window_only() {
        let failures = PeerFailures::new(Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(failures.recent(start, |_| true), None);
        failures.record("b:1051", "timed out", start);
        assert_eq!(
            failures.recent(start + Duration::from_secs(29), |_| true),
            Some("calls to peer b:1051 failed: timed out".into())
        );
        assert_eq!(
            failures.recent(start + Duration::from_secs(30), |_| true),
            None
        );
    }

    #[test]
    fn failures_of_departed_peers_do_not_count() {
        let failures = PeerFailures::new(Duration::from_secs(30));
        let now = Instant::now();
        failures.record("gone:1051", "unavailable", now);
        assert_eq!(failures.recent(now, |peer| peer != "gone:1051"), None);
    }
}
