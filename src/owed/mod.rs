//! Hits this node owes the owners of other nodes' limits, and the one reconciler that delivers
//! them.
//!
//! Two features answer for a limit this node does not own and owe its owner what they admitted:
//! GLOBAL copies ([`crate::global`]) and the fallback buckets of the `local` owner-failure policy
//! ([`crate::owner_failure`]). Both keep a [`Ledger`] of hits summed per limit ([`pending`]) and,
//! every sync interval ([`Schedule`]), hand it to [`reconcile`]: take everything, group by the
//! key's current owner, chunk to fit the owner's message limit, send the chunks in parallel, and
//! put back what was not delivered. What differs between the two (how an item is marked before it
//! is sent, what to do with the owner's answers, which metrics count) is a [`Delivery`]; the
//! machinery is written once, so a fix to it reaches both.

pub mod pending;

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::join_all;
use prost::Message;
use tokio::sync::{Notify, watch};

use crate::algorithms::{Behavior, Decision, RateLimitRequest, Status};
use crate::batching::ForwardError;
use crate::batching::budget::{Chunks, MessageBudget, chunk, framed_len};
use crate::mutex::lock;
use crate::proto;
use crate::request::LimitKey;
pub use pending::{Added, PendingHits};

/// One limit's owed hits: its key and the summed item.
pub type Owed = (LimitKey, proto::RateLimitReq);

/// Whether a decision made for a limit this node does not own consumed hits the owner must be
/// told about: admitted hits (or drained ones), and resets; never refused hits, which the cluster
/// did not admit and which would drain the owner below what it admitted.
pub fn owes_owner(request: &RateLimitRequest, decision: &Decision) -> bool {
    let consumed = request.hits != 0
        && (decision.status == Status::UnderLimit
            || request.behavior.contains(Behavior::DRAIN_OVER_LIMIT));
    consumed || request.behavior.contains(Behavior::RESET_REMAINING)
}

/// Owed hits, summed per limit and bounded, behind a lock; wakes its reconciler early once
/// `wake_at` limits are waiting.
pub struct Ledger {
    pending: Mutex<PendingHits>,
    wake: Notify,
    wake_at: usize,
}

impl Ledger {
    /// An empty ledger of at most `max_limits` limits that wakes its reconciler at `wake_at`.
    pub fn new(max_limits: usize, wake_at: usize) -> Self {
        Self {
            pending: Mutex::new(PendingHits::new(max_limits)),
            wake: Notify::new(),
            wake_at,
        }
    }

    /// Adds hits owed for `key` (see [`PendingHits::add`]).
    pub fn add(&self, key: LimitKey, item: proto::RateLimitReq) -> Added {
        let (added, len) = {
            let mut pending = lock(&self.pending);
            let added = pending.add(key, item);
            (added, pending.len())
        };
        if len >= self.wake_at {
            self.wake.notify_one();
        }
        added
    }

    /// Takes every limit's owed hits, oldest first.
    pub fn take(&self) -> Vec<Owed> {
        lock(&self.pending).take(usize::MAX)
    }

    /// Puts back hits that could not be delivered; returns how many limits were dropped.
    pub fn put_back(&self, failed: Vec<Owed>) -> usize {
        lock(&self.pending).put_back(failed)
    }

    /// The number of limits with owed hits.
    pub fn len(&self) -> usize {
        lock(&self.pending).len()
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        lock(&self.pending).is_empty()
    }

    /// Notified when the ledger holds `wake_at` limits (or when [`Ledger::wake`] is called).
    pub fn woken(&self) -> &Notify {
        &self.wake
    }

    /// Wakes the reconciler now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The rounds of a reconciler: one per sync interval (or early wake-up), and a last one when
/// `stop` turns true, so what is owed at shutdown is tried once more.
pub struct Schedule {
    ticker: tokio::time::Interval,
    stop: watch::Receiver<bool>,
    finished: bool,
}

impl Schedule {
    /// Rounds every `every` until `stop` turns true.
    pub fn new(every: Duration, stop: watch::Receiver<bool>) -> Self {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ticker,
            stop,
            finished: false,
        }
    }

    /// Waits for the next round (a tick, `wake`, or the stop signal); `false` once the last round
    /// (the one after the stop signal) has been run.
    pub async fn next(&mut self, wake: Option<&Notify>) -> bool {
        if self.finished {
            return false;
        }
        let woken = async {
            match wake {
                Some(wake) => wake.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.ticker.tick() => {}
            _ = woken => {}
            changed = self.stop.wait_for(|stop| *stop) => {
                let _ = changed;
                self.finished = true;
            }
        }
        true
    }
}

/// The cluster as the reconciler sees it: who owns a key now, and how to send to an owner.
pub trait Owners: Sync {
    /// The gRPC address of the current owner of `key`, or `None` when this node owns it.
    fn owner_of(&self, key: &LimitKey) -> Option<String>;
    /// The size bound of one peer message.
    fn budget(&self) -> MessageBudget;
    /// Sends `items` to `owner` (`GetPeerRateLimits`) within `timeout`.
    fn send(
        &self,
        owner: &str,
        items: Vec<proto::RateLimitReq>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<proto::RateLimitResp>, ForwardError>> + Send;
}

/// What one kind of owed hits does around the shared reconciler.
pub trait Delivery: Sync {
    /// The most limits in one call.
    fn batch_limit(&self) -> usize;
    /// The timeout of one call.
    fn timeout(&self) -> Duration;
    /// Marks an owed item before it is grouped and sent.
    fn prepare(&self, _item: &mut proto::RateLimitReq) {}
    /// Applies a chunk here, since this node owns its keys now; `true` if it was applied.
    fn apply_here(&self, chunk: &[Owed]) -> impl Future<Output = bool> + Send;
    /// The owner answered a chunk.
    fn delivered(&self, owner: &str, chunk: &[Owed], answers: Vec<proto::RateLimitResp>);
    /// A chunk could not be delivered (it is put back).
    fn failed(&self, owner: &str, limits: usize, error: &ForwardError);
    /// What these hits are called in logs ("GLOBAL hits", "owed hits").
    const WHAT: &'static str;
    /// Counts limits dropped because they are larger than any peer message.
    fn oversized(&self) -> prometheus::IntCounter;
}

/// The outcome of one [`reconcile`] round that had something to send.
pub struct Round {
    /// Limits dropped when putting back (the ledger was full).
    pub dropped: usize,
}

/// Takes everything `ledger` owes, sends it to each key's current owner among `owners` (chunked,
/// in parallel, as `delivery` says) and puts back what was not delivered. `None` when nothing was
/// owed.
pub async fn reconcile<O: Owners, D: Delivery>(
    ledger: &Ledger,
    owners: &O,
    delivery: &D,
) -> Option<Round> {
    let taken = ledger.take();
    if taken.is_empty() {
        return None;
    }
    let mut by_owner: Vec<(Option<String>, Vec<Owed>)> = Vec::new();
    for (key, mut item) in taken {
        delivery.prepare(&mut item);
        let owner = owners.owner_of(&key);
        match by_owner.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, entries)) => entries.push((key, item)),
            None => by_owner.push((owner, vec![(key, item)])),
        }
    }
    let budget = owners.budget();
    let sends = by_owner.into_iter().flat_map(|(owner, entries)| {
        // Chunks fit the owner's message limit; a limit too large for any message is dropped.
        let Chunks { chunks, oversized } =
            chunk(entries, delivery.batch_limit(), budget, |(_, item)| {
                framed_len(item.encoded_len())
            });
        if !oversized.is_empty() {
            tracing::warn!(
                limits = oversized.len(),
                "{} dropped: larger than a peer message",
                D::WHAT
            );
            delivery.oversized().inc_by(oversized.len() as u64);
        }
        chunks
            .into_iter()
            .map(move |chunk| send_chunk(owners, delivery, owner.clone(), chunk))
    });
    let failed: Vec<Owed> = join_all(sends).await.into_iter().flatten().collect();
    let dropped = if failed.is_empty() {
        0
    } else {
        ledger.put_back(failed)
    };
    Some(Round { dropped })
}

/// Sends one chunk to `owner` (or applies it here when this node owns it now); returns the
/// entries that could not be delivered.
async fn send_chunk<O: Owners, D: Delivery>(
    owners: &O,
    delivery: &D,
    owner: Option<String>,
    chunk: Vec<Owed>,
) -> Vec<Owed> {
    let Some(owner) = owner else {
        return if delivery.apply_here(&chunk).await {
            Vec::new()
        } else {
            chunk
        };
    };
    let items = chunk.iter().map(|(_, item)| item.clone()).collect();
    match owners.send(&owner, items, delivery.timeout()).await {
        Ok(answers) => {
            delivery.delivered(&owner, &chunk, answers);
            Vec::new()
        }
        Err(error) => {
            delivery.failed(&owner, chunk.len(), &error);
            chunk
        }
    }
}
