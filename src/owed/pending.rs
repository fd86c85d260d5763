//! Hits owed to the owner of a limit, summed per limit (GLOBAL copies and owner-failure fallbacks).
//!
//! A non-owner answers GLOBAL items from its own copy and owes the owner the hits it admitted (or
//! refused: the owner decides). Sending each hit would cost a network call per request, which is
//! what GLOBAL avoids, so hits are summed per limit and sent every sync interval. This is pure
//! bookkeeping, with no I/O, so its rules are unit-tested directly:
//!
//! - hits for one limit are summed; the first `created_at` is kept (the owner's window starts when
//!   the first of them happened), the other fields follow the latest request (a changed limit or
//!   duration reaches the owner), and `RESET_REMAINING` is or-ed in;
//! - hits that could not be delivered are put back and merged with newer ones, so an owner that is
//!   briefly unreachable loses nothing (Gubernator drops them);
//! - the number of limits held is bounded: beyond it, new limits are refused and counted, so a
//!   long outage costs bounded memory.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use crate::algorithms::Behavior;
use crate::proto;
use crate::request::LimitKey;

/// The outcome of adding hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Merged into the pending hits of that limit, or queued as a new limit.
    Queued,
    /// The queue already holds its maximum of limits; these hits were dropped.
    Dropped,
}

/// Pending hits per limit, in the order the limits were first queued.
#[derive(Debug)]
pub struct PendingHits {
    max_limits: usize,
    order: Vec<LimitKey>,
    pending: HashMap<LimitKey, proto::RateLimitReq>,
}

impl PendingHits {
    /// An empty queue holding at most `max_limits` limits.
    pub fn new(max_limits: usize) -> Self {
        Self {
            max_limits,
            order: Vec::new(),
            pending: HashMap::new(),
        }
    }

    /// Adds the hits of `item` (already stamped with its `created_at`) for the limit `key`.
    pub fn add(&mut self, key: LimitKey, item: proto::RateLimitReq) -> Added {
        match self.pending.entry(key) {
            Entry::Occupied(mut entry) => {
                merge(entry.get_mut(), item);
                Added::Queued
            }
            Entry::Vacant(entry) => {
                if self.order.len() >= self.max_limits {
                    return Added::Dropped;
                }
                self.order.push(entry.key().clone());
                entry.insert(item);
                Added::Queued
            }
        }
    }

    /// Takes up to `count` limits' pending hits, oldest limits first.
    pub fn take(&mut self, count: usize) -> Vec<(LimitKey, proto::RateLimitReq)> {
        let count = count.min(self.order.len());
        self.order
            .drain(..count)
            .filter_map(|key| {
                let item = self.pending.remove(&key)?;
                Some((key, item))
            })
            .collect()
    }

    /// Puts back hits that could not be delivered, merging them with hits queued since (the
    /// returned hits are older, so their `created_at` wins). Returns how many limits had to be
    /// dropped because the queue is full.
    pub fn put_back(&mut self, failed: Vec<(LimitKey, proto::RateLimitReq)>) -> usize {
        let mut dropped = 0;
        for (key, item) in failed {
            match self.pending.entry(key) {
                Entry::Occupied(mut entry) => {
                    let newer = std::mem::replace(entry.get_mut(), item);
                    merge(entry.get_mut(), newer);
                }
                Entry::Vacant(entry) => {
                    if self.order.len() >= self.max_limits {
                        dropped += 1;
                        continue;
                    }
                    self.order.push(entry.key().clone());
                    entry.insert(item);
                }
            }
        }
        dropped
    }

    /// The number of limits with pending hits.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Merges the `newer` hits of one limit into `older`.
fn merge(older: &mut proto::RateLimitReq, newer: proto::RateLimitReq) {
    let reset = (older.behavior | newer.behavior) & Behavior::RESET_REMAINING.bits();
    let hits = older.hits.saturating_add(newer.hits);
    let created_at = older.created_at.or(newer.created_at);
    *older = proto::RateLimitReq {
        hits,
        created_at,
        behavior: newer.behavior | reset,
        ..newer
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(hits: i64, created_at: i64) -> proto::RateLimitReq {
        proto::RateLimitReq {
            name: "n".into(),
            unique_key: "k".into(),
            hits,
            limit: 10,
            duration: 1000,
            created_at: Some(created_at),
            ..Default::default()
        }
    }

    fn key(k: &str) -> LimitKey {
        LimitKey::new("n", k)
    }

    #[test]
    fn hits_are_summed_and_the_first_created_at_kept() {
        let mut pending = PendingHits::new(10);
        pending.add(key("k"), item(2, 100));
        pending.add(key("k"), item(3, 200));
        pending.add(key("k"), item(-1, 300));
        let taken = pending.take(10);
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.hits, 4);
        assert_eq!(taken[0].1.created_at, Some(100));
        assert!(pending.is_empty());
    }

    #[test]
    fn the_latest_limit_wins_and_reset_remaining_is_kept() {
        let mut pending = PendingHits::new(10);
        let mut first = item(1, 100);
        first.behavior = Behavior::RESET_REMAINING.bits() | Behavior::GLOBAL.bits();
        pending.add(key("k"), first);
        let mut second = item(1, 200);
        second.limit = 20;
        second.behavior = Behavior::GLOBAL.bits();
        pending.add(key("k"), second);
        let (_, merged) = pending.take(1).remove(0);
        assert_eq!(merged.limit, 20);
        assert_eq!(
            merged.behavior,
            Behavior::RESET_REMAINING.bits() | Behavior::GLOBAL.bits()
        );
    }

    #[test]
    fn take_returns_the_oldest_limits_first() {
        let mut pending = PendingHits::new(10);
        for k in ["a", "b", "c"] {
            pending.add(key(k), item(1, 100));
        }
        let keys: Vec<_> = pending
            .take(2)
            .into_iter()
            .map(|(k, _)| k.unique_key)
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(pending.len(), 1);
    }

    #[test]
    fn put_back_merges_with_newer_hits_and_keeps_the_older_created_at() {
        let mut pending = PendingHits::new(10);
        pending.add(key("k"), item(2, 100));
        let failed = pending.take(10);
        pending.add(key("k"), item(5, 500));
        assert_eq!(pending.put_back(failed), 0);
        let (_, merged) = pending.take(10).remove(0);
        assert_eq!(merged.hits, 7);
        assert_eq!(merged.created_at, Some(100));
    }

    #[test]
    fn the_queue_is_bounded_and_drops_are_reported() {
        let mut pending = PendingHits::new(2);
        assert_eq!(pending.add(key("a"), item(1, 1)), Added::Queued);
        assert_eq!(pending.add(key("b"), item(1, 1)), Added::Queued);
        assert_eq!(pending.add(key("c"), item(1, 1)), Added::Dropped);
        // Existing limits still merge when full.
        assert_eq!(pending.add(key("a"), item(1, 1)), Added::Queued);
        let failed = vec![(key("d"), item(1, 1))];
        assert_eq!(pending.put_back(failed), 1);
        assert_eq!(pending.len(), 2);
    }

    #[test]
    fn sums_saturate() {
        let mut pending = PendingHits::new(2);
        pending.add(key("a"), item(i64::MAX, 1));
        pending.add(key("a"), item(i64::MAX, 1));
        assert_eq!(pending.take(1)[0].1.hits, i64::MAX);
    }
}
