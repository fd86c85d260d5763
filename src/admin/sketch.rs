//! A Space-Saving heavy-hitters summary (Metwally, Agrawal and El Abbadi, 2005), with merging.
//!
//! The admin views must name the keys most often answered `OVER_LIMIT` without remembering every
//! key ever refused: a flood of distinct keys must not grow memory. Space-Saving keeps at most
//! `capacity` counters. A key that is already tracked gets its counter raised; a new key takes over
//! the smallest counter, inheriting its count as its possible error. The guarantees, for `total`
//! recorded events:
//!
//! - every tracked key's true count lies in `[count - error, count]`;
//! - every untracked key's true count is at most [`SpaceSaving::floor`], which is at most
//!   `total / capacity`;
//! - so every key seen more than `total / capacity` times is tracked.
//!
//! Recording a key that replaces another reuses the evicted key's string buffers, so the hot path
//! allocates only when a new key is longer than the one it replaces. Lookups take borrowed `&str`s
//! (through a private `KeyParts` trait object), so a tracked key is found without building a key.
//!
//! ```
//! use ringlimit::admin::sketch::SpaceSaving;
//!
//! let mut summary = SpaceSaving::new(2);
//! for key in ["a", "b", "a", "c", "a"] {
//!     summary.record("logins", key, 1);
//! }
//! let top = summary.top(1);
//! assert_eq!((top[0].unique_key.as_str(), top[0].count, top[0].error), ("a", 3, 0));
//! assert!(summary.len() <= 2);
//! ```

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// One tracked key and its counter, as reported: its true count lies in `[count - error, count]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Counted {
    /// The limit's name.
    pub name: String,
    /// The limit's unique key.
    pub unique_key: String,
    /// An upper bound of the key's true count.
    pub count: u64,
    /// How much `count` may overestimate: the true count is at least `count - error`.
    pub error: u64,
}

/// A bounded summary of the most frequent `(name, unique_key)` pairs.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    total: u64,
    /// For a merged summary: an upper bound of any untracked key's count beyond the smallest
    /// counter (0 for a summary built by recording alone).
    dropped_floor: u64,
    counters: HashMap<TrackedKey, Counter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    count: u64,
    error: u64,
}

impl SpaceSaving {
    /// An empty summary that tracks at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            total: 0,
            dropped_floor: 0,
            counters: HashMap::with_capacity(capacity),
        }
    }

    /// The most keys tracked.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Every event recorded (or merged in).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The number of keys tracked now (never more than the capacity).
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// The most any untracked key can have been seen.
    pub fn floor(&self) -> u64 {
        let smallest = if self.counters.len() < self.capacity {
            0
        } else {
            self.counters.values().map(|c| c.count).min().unwrap_or(0)
        };
        smallest.max(self.dropped_floor)
    }

    /// Forgets everything, keeping the allocated room.
    pub fn clear(&mut self) {
        self.total = 0;
        self.dropped_floor = 0;
        self.counters.clear();
    }

    /// Records `weight` events of `(name, unique_key)`.
    pub fn record(&mut self, name: &str, unique_key: &str, weight: u64) {
        self.total = self.total.saturating_add(weight);
        let lookup: &dyn KeyParts = &(name, unique_key);
        if let Some(counter) = self.counters.get_mut(lookup) {
            counter.count = counter.count.saturating_add(weight);
            return;
        }
        if self.counters.len() < self.capacity {
            self.counters
                .insert(TrackedKey::new(name, unique_key), Counter::new(weight, 0));
            return;
        }
        // Full: the new key takes over the smallest counter and inherits its count as error.
        let Some(smallest) = self.counters.values().map(|c| c.count).min() else {
            return;
        };
        let replaced = self
            .counters
            .extract_if(|_, counter| counter.count == smallest)
            .next();
        if let Some((mut key, counter)) = replaced {
            key.reuse_for(name, unique_key);
            let count = counter.count.saturating_add(weight);
            self.counters
                .insert(key, Counter::new(count, counter.count));
        }
    }

    /// The tracked keys, most frequent first (ties by name, then unique key), at most `limit`.
    pub fn top(&self, limit: usize) -> Vec<Counted> {
        let mut all: Vec<Counted> = self
            .counters
            .iter()
            .map(|(key, counter)| Counted {
                name: key.name.clone(),
                unique_key: key.unique_key.clone(),
                count: counter.count,
                error: counter.error,
            })
            .collect();
        all.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.unique_key.cmp(&b.unique_key))
        });
        all.truncate(limit);
        all
    }

    /// Rebuilds a summary from its parts (as sent by a peer). Entries beyond `capacity` are
    /// dropped and raise the floor.
    pub fn from_parts(capacity: usize, total: u64, floor: u64, entries: Vec<Counted>) -> Self {
        let mut summary = Self::new(capacity);
        summary.total = total;
        summary.dropped_floor = floor;
        summary.absorb(entries);
        summary
    }

    /// Merges `other` into this summary (the mergeable-summaries rule): a key missing from one
    /// side is counted at that side's floor, both as count and as error; then only the largest
    /// `capacity` counters are kept, and the largest one dropped raises the floor. Counts stay
    /// upper bounds and `count - error` lower bounds of the merged true counts.
    pub fn merge(&mut self, other: &SpaceSaving) {
        let own_floor = self.floor();
        let other_floor = other.floor();
        let mut merged: Vec<Counted> = Vec::with_capacity(self.len() + other.len());
        for (key, counter) in &other.counters {
            if self.counter_of(&key.name, &key.unique_key).is_none() {
                merged.push(Counted {
                    name: key.name.clone(),
                    unique_key: key.unique_key.clone(),
                    count: counter.count.saturating_add(own_floor),
                    error: counter.error.saturating_add(own_floor),
                });
            }
        }
        for (key, counter) in self.counters.drain() {
            let (count, error) = match other.counter_of(&key.name, &key.unique_key) {
                Some(theirs) => (theirs.count, theirs.error),
                None => (other_floor, other_floor),
            };
            merged.push(Counted {
                name: key.name,
                unique_key: key.unique_key,
                count: counter.count.saturating_add(count),
                error: counter.error.saturating_add(error),
            });
        }
        self.total = self.total.saturating_add(other.total);
        self.dropped_floor = own_floor.saturating_add(other_floor);
        self.absorb(merged);
    }

    /// Keeps the largest `capacity` of `entries` (replacing the counters), raising the floor to the
    /// largest count dropped.
    fn absorb(&mut self, mut entries: Vec<Counted>) {
        entries.sort_by_key(|entry| std::cmp::Reverse(entry.count));
        if entries.len() > self.capacity {
            let dropped = entries.split_off(self.capacity);
            let largest_dropped = dropped.first().map_or(0, |entry| entry.count);
            self.dropped_floor = self.dropped_floor.max(largest_dropped);
        }
        self.counters.clear();
        for entry in entries {
            self.counters.insert(
                TrackedKey {
                    name: entry.name,
                    unique_key: entry.unique_key,
                },
                Counter::new(entry.count, entry.error),
            );
        }
    }

    fn counter_of(&self, name: &str, unique_key: &str) -> Option<Counter> {
        let lookup: &dyn KeyParts = &(name, unique_key);
        self.counters.get(lookup).copied()
    }
}

impl Counter {
    fn new(count: u64, error: u64) -> Self {
        Self { count, error }
    }
}

/// A tracked key. It hashes and compares through [`KeyParts`], so maps keyed by it can be
/// searched with a borrowed `(&str, &str)`.
#[derive(Debug, Clone)]
struct TrackedKey {
    name: String,
    unique_key: String,
}

impl TrackedKey {
    fn new(name: &str, unique_key: &str) -> Self {
        Self {
            name: name.to_owned(),
            unique_key: unique_key.to_owned(),
        }
    }

    /// Turns this key into `(name, unique_key)`, reusing its buffers.
    fn reuse_for(&mut self, name: &str, unique_key: &str) {
        self.name.clear();
        self.name.push_str(name);
        self.unique_key.clear();
        self.unique_key.push_str(unique_key);
    }
}

/// The two parts of a key, owned or borrowed.
trait KeyParts {
    fn parts(&self) -> (&str, &str);
}

impl KeyParts for TrackedKey {
    fn parts(&self) -> (&str, &str) {
        (&self.name, &self.unique_key)
    }
}

impl KeyParts for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn KeyParts + 'a> for TrackedKey {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl Hash for dyn KeyParts + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl Hash for TrackedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn KeyParts).hash(state);
    }
}

impl PartialEq for TrackedKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for TrackedKey {}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn exact(stream: &[(u8, u8)]) -> HashMap<(String, String), u64> {
        let mut counts = HashMap::new();
        for (name, key) in stream {
            *counts
                .entry((name.to_string(), key.to_string()))
                .or_default() += 1;
        }
        counts
    }

    fn summarize(stream: &[(u8, u8)], capacity: usize) -> SpaceSaving {
        let mut summary = SpaceSaving::new(capacity);
        for (name, key) in stream {
            summary.record(&name.to_string(), &key.to_string(), 1);
        }
        summary
    }

    /// Checks the Space-Saving bounds of `summary` against the exact counts.
    fn assert_bounds(summary: &SpaceSaving, counts: &HashMap<(String, String), u64>) {
        let total: u64 = counts.values().sum();
        assert_eq!(summary.total(), total);
        assert!(summary.len() <= summary.capacity());
        let floor = summary.floor();
        let tracked = summary.top(usize::MAX);
        for entry in &tracked {
            let truth = counts
                .get(&(entry.name.clone(), entry.unique_key.clone()))
                .copied()
                .unwrap_or(0);
            assert!(entry.count >= truth, "{entry:?} under-counts {truth}");
            assert!(
                entry.count - entry.error <= truth,
                "{entry:?} lower bound above {truth}"
            );
        }
        for ((name, key), truth) in counts {
            let listed = tracked
                .iter()
                .any(|e| &e.name == name && &e.unique_key == key);
            if !listed {
                assert!(*truth <= floor, "{name}/{key} seen {truth} > floor {floor}");
            }
        }
    }

    #[test]
    fn below_capacity_counts_are_exact() {
        let mut summary = SpaceSaving::new(4);
        for _ in 0..5 {
            summary.record("n", "a", 1);
        }
        summary.record("n", "b", 2);
        let top = summary.top(10);
        assert_eq!(
            top,
            vec![
                Counted {
                    name: "n".into(),
                    unique_key: "a".into(),
                    count: 5,
                    error: 0
                },
                Counted {
                    name: "n".into(),
                    unique_key: "b".into(),
                    count: 2,
                    error: 0
                },
            ]
        );
        assert_eq!(summary.floor(), 0);
        assert_eq!(summary.total(), 7);
    }

    #[test]
    fn a_new_key_takes_over_the_smallest_counter() {
        let mut summary = SpaceSaving::new(2);
        summary.record("n", "a", 3);
        summary.record("n", "b", 1);
        summary.record("n", "c", 1);
        let top = summary.top(10);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].unique_key.as_str(), top[0].count), ("a", 3));
        assert_eq!(
            (top[1].unique_key.as_str(), top[1].count, top[1].error),
            ("c", 2, 1)
        );
        assert_eq!(summary.floor(), 2);
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_at_capacity() {
        let mut summary = SpaceSaving::new(8);
        for i in 0..10_000 {
            summary.record("flood", &i.to_string(), 1);
            summary.record("hot", "one", 1);
        }
        assert_eq!(summary.len(), 8);
        let top = summary.top(1);
        assert_eq!(top[0].unique_key, "one");
        assert_eq!(top[0].count - top[0].error, 10_000);
    }

    #[test]
    fn names_and_keys_are_not_joined() {
        let mut summary = SpaceSaving::new(4);
        summary.record("a_b", "c", 1);
        summary.record("a", "b_c", 1);
        assert_eq!(summary.len(), 2);
    }

    #[test]
    fn merging_disjoint_summaries_below_capacity_is_exact() {
        let mut left = SpaceSaving::new(4);
        left.record("n", "a", 3);
        let mut right = SpaceSaving::new(4);
        right.record("n", "a", 2);
        right.record("n", "b", 1);
        left.merge(&right);
        let top = left.top(10);
        assert_eq!((top[0].count, top[0].error), (5, 0));
        assert_eq!((top[1].count, top[1].error), (1, 0));
        assert_eq!(left.total(), 6);
        assert_eq!(left.floor(), 0);
    }

    #[test]
    fn parts_round_trip() {
        let mut summary = SpaceSaving::new(2);
        for key in ["a", "b", "c", "a"] {
            summary.record("n", key, 1);
        }
        let rebuilt = SpaceSaving::from_parts(
            summary.capacity(),
            summary.total(),
            summary.floor(),
            summary.top(usize::MAX),
        );
        assert_eq!(rebuilt.top(10), summary.top(10));
        assert_eq!(rebuilt.floor(), summary.floor());
        assert_eq!(rebuilt.total(), summary.total());
    }

    proptest! {
        #[test]
        fn bounds_hold_for_any_stream(
            stream in proptest::collection::vec((0u8..3, 0u8..40), 0..400),
            capacity in 1usize..12,
        ) {
            let summary = summarize(&stream, capacity);
            assert_bounds(&summary, &exact(&stream));
            // The classic bound: the floor never exceeds total / capacity.
            prop_assert!(summary.floor() <= summary.total() / capacity as u64);
        }

        #[test]
        fn bounds_hold_after_merging(
            left in proptest::collection::vec((0u8..3, 0u8..30), 0..300),
            right in proptest::collection::vec((0u8..3, 0u8..30), 0..300),
            capacity in 1usize..10,
        ) {
            let mut merged = summarize(&left, capacity);
            merged.merge(&summarize(&right, capacity));
            let both: Vec<(u8, u8)> = left.iter().chain(right.iter()).copied().collect();
            assert_bounds(&merged, &exact(&both));
        }
    }
}
