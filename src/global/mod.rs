//! GLOBAL limits: every node answers from its own copy at once, and the cluster converges in the
//! background.
//!
//! A non-owner evaluates a GLOBAL item against its copy, answers, and queues the hits it owes the
//! owner (a [`Ledger`]). Every `GUBER_GLOBAL_SYNC_WAIT` (or as soon as `GUBER_GLOBAL_BATCH_LIMIT`
//! limits are waiting) the sync task (`tasks::global_sync`) sends the summed hits to each owner, in parallel, with
//! `DRAIN_OVER_LIMIT` forced, through the reconciler the owner-failure policy shares
//! ([`crate::owed`]); hits that cannot be delivered are put back and retried. An owner
//! that changes a GLOBAL limit queues it for broadcast, and on the same schedule sends the limit's
//! state to every other peer (`UpdatePeerGlobals`), which overwrite their copies ([`replica`]).
//! A node that has no copy of a GLOBAL limit yet asks the owner once (a normal forward) instead
//! of starting from a full bucket.

pub mod replica;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::mutex::lock;
use crate::owed::{Added, Ledger, Owed};
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

    /// Takes every limit queued for broadcast, oldest first.
    pub fn take_broadcasts(&self) -> Vec<LimitKey> {
        let mut broadcasts = lock(&self.broadcasts);
        broadcasts.queued.clear();
        std::mem::take(&mut broadcasts.order)
    }
}
