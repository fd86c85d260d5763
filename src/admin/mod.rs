//! What the admin views report, and their rules: who is being limited, the state of one key.
//!
//! Operators need to see which keys the cluster refuses and why, without a second system. Every
//! node counts the decisions it makes itself (as a key's owner, or from its copy of a GLOBAL
//! limit; a forwarded item is counted by its owner only, so a cluster-wide sum counts each decision
//! once), and keeps bounded heavy-hitter summaries of the keys it refused ([`offenders`], built on
//! [`sketch`]), and the `/allow` resources it has seen without a configured limit
//! ([`discovered`]). The views themselves (the `/admin/*` routes, the `ringlimit.v1.Admin` gRPC
//! service and the fan-out to peers that answers for the whole cluster) are in `admin_views`: they
//! hold the router, while this state is what the evaluator records into, below the router. Reading
//! a key's state ([`peek`]) never spends: it reads the owner's store.
//!
//! The views are not open to the world: without `GUBER_ADMIN_TOKEN` they answer only on a
//! loopback HTTP listener ([`access`]), and they show unique keys hashed unless
//! `GUBER_ADMIN_SHOW_KEYS=true` ([`redact`]).

pub mod access;
pub mod discovered;
pub mod offenders;
pub mod peek;
pub mod redact;
pub mod sketch;

use crate::mutex::lock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use self::discovered::Discovered;
use crate::algorithms::Status;
use crate::clock::Clock;
use crate::request::{KeyRef, LimitKey};

use self::offenders::{Offenders, Window};
use self::sketch::SpaceSaving;

/// The `ringlimit.v1` wire types (admin messages and service among them), generated in [`crate::proto`].
pub use crate::proto::ringlimit_v1 as proto;

/// How the admin views are served.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// Whether the admin routes and the admin gRPC service are served at all.
    pub enabled: bool,
    /// The bearer token callers must present, if any.
    pub token: Option<String>,
    /// The most keys each offender summary tracks.
    pub capacity: usize,
    /// How long a call to a peer may take when answering for the cluster.
    pub peer_timeout: Duration,
    /// Whether views show unique keys raw (`GUBER_ADMIN_SHOW_KEYS`) instead of hashed.
    pub show_keys: bool,
    /// Whether the HTTP listener is bound to loopback addresses only; without a token the HTTP
    /// views answer only then. Set from the bound address when the node starts.
    pub http_loopback_only: bool,
    /// The most discovered `/allow` resources remembered (`GUBER_ALLOW_DISCOVERED_MAX`).
    pub discovered_capacity: usize,
}

impl Default for AdminOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            capacity: 100,
            peer_timeout: Duration::from_secs(2),
            show_keys: false,
            http_loopback_only: false,
            discovered_capacity: discovered::DEFAULT_CAPACITY,
        }
    }
}

/// One node's admin state: its options, its decision counters and offender summaries, and the
/// `/allow` resources it discovered.
pub struct AdminState {
    options: AdminOptions,
    under_limit: AtomicU64,
    over_limit: AtomicU64,
    offenders: Mutex<Offenders>,
    discovered: Discovered,
}

impl AdminState {
    /// Empty counters and summaries.
    pub fn new(options: AdminOptions) -> Self {
        let capacity = options.capacity.max(1);
        Self {
            under_limit: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
            offenders: Mutex::new(Offenders::new(capacity)),
            discovered: Discovered::new(options.discovered_capacity),
            options,
        }
    }

    /// The options this state was built with.
    pub fn options(&self) -> &AdminOptions {
        &self.options
    }

    /// Records one decision made by this node. Under the limit this is one atomic increment; a
    /// refusal also updates the offender summaries (no allocation when the key is tracked).
    pub fn record(&self, key: &LimitKey, status: Status, clock: &dyn Clock) {
        match status {
            Status::UnderLimit => self.add_decisions(1, 0),
            Status::OverLimit => {
                self.add_decisions(0, 1);
                self.record_offender(key, clock.now_ms());
            }
        }
    }

    /// Adds decisions made by this node to its counts; a call's decisions are added at once.
    pub fn add_decisions(&self, under_limit: u64, over_limit: u64) {
        if !self.options.enabled {
            return;
        }
        if under_limit > 0 {
            self.under_limit.fetch_add(under_limit, Ordering::Relaxed);
        }
        if over_limit > 0 {
            self.over_limit.fetch_add(over_limit, Ordering::Relaxed);
        }
    }

    /// Records a refusal of `key` at `now_ms` in the offender summaries (not in the counts: see
    /// [`AdminState::add_decisions`]).
    pub fn record_offender<'a>(&self, key: impl Into<KeyRef<'a>>, now_ms: i64) {
        if self.options.enabled {
            let key = key.into();
            lock(&self.offenders).record(key.name, key.unique_key, now_ms);
        }
    }

    /// This node's decision counts: (under the limit, over the limit).
    pub fn decisions(&self) -> (u64, u64) {
        (
            self.under_limit.load(Ordering::Relaxed),
            self.over_limit.load(Ordering::Relaxed),
        )
    }

    /// This node's offender summary of `window` at `now_ms`.
    pub fn offenders(&self, window: Window, now_ms: i64) -> SpaceSaving {
        lock(&self.offenders).summary(window, now_ms)
    }

    /// The number of keys held over all of this node's offender summaries.
    pub fn tracked_keys(&self) -> usize {
        lock(&self.offenders).tracked_keys()
    }

    /// The `/allow` resources this node has discovered (recorded even when the views are off, so
    /// the set is there when asked).
    pub fn discovered(&self) -> &Discovered {
        &self.discovered
    }

    /// Whether `presented` (an `Authorization` value) satisfies the configured token; the
    /// node-to-node `ringlimit.v1.Admin` service's check (no token configured: anyone).
    pub fn authorized(&self, presented: Option<&str>) -> bool {
        match self.options.token.as_deref() {
            None | Some("") => true,
            Some(token) => access::bearer_matches(token, presented),
        }
    }

    /// Whether an HTTP admin request presenting `presented` (an `Authorization` value) may be
    /// answered; see [`access`].
    pub fn http_access(&self, presented: Option<&str>) -> Result<(), access::AccessDenied> {
        access::check(
            self.options.token.as_deref(),
            self.options.http_loopback_only,
            presented,
        )
    }

    /// `unique_key` as the views show it: hashed unless `GUBER_ADMIN_SHOW_KEYS`.
    pub fn shown_key(&self, unique_key: String) -> String {
        redact::shown_key(unique_key, self.options.show_keys)
    }
}

/// The constant-time compare of secrets, shared with the peer plane.
pub use crate::secret::constant_time_eq;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn bearer_token_is_required_when_configured() {
        let open = AdminState::new(AdminOptions::default());
        assert!(open.authorized(None));
        let locked = AdminState::new(AdminOptions {
            token: Some("s3cret".into()),
            ..AdminOptions::default()
        });
        assert!(locked.authorized(Some("Bearer s3cret")));
        assert!(locked.authorized(Some("bearer s3cret")));
        assert!(!locked.authorized(Some("Bearer wrong")));
        assert!(!locked.authorized(Some("s3cret")));
        assert!(!locked.authorized(None));
    }

    #[test]
    fn decisions_are_counted_by_status_and_refusals_tracked() {
        let state = AdminState::new(AdminOptions::default());
        let clock = ManualClock::new(1_700_000_000_000);
        let key = LimitKey::new("n", "k");
        state.record(&key, Status::UnderLimit, &clock);
        state.record(&key, Status::OverLimit, &clock);
        state.record(&key, Status::OverLimit, &clock);
        assert_eq!(state.decisions(), (1, 2));
        let top = state.offenders(Window::Minute, clock.now_ms()).top(10);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].count, 2);
    }

    #[test]
    fn a_disabled_state_records_nothing() {
        let state = AdminState::new(AdminOptions {
            enabled: false,
            ..AdminOptions::default()
        });
        let clock = ManualClock::new(0);
        state.record(&LimitKey::new("n", "k"), Status::OverLimit, &clock);
        assert_eq!(state.decisions(), (0, 0));
        assert_eq!(state.tracked_keys(), 0);
    }
}
