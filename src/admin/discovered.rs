//! The resources `/allow` has seen without a configured limit: a bounded set of the most recently
//! used names, so `/admin/resources` can list them the way r8limiter lists the resources it
//! discovers.
//!
//! r8limiter users never declare resources: any `resource=` a client sends gets the default limit.
//! ringlimit does the same, but a client inventing names must not grow memory without bound, so
//! the set keeps at most `capacity` names (`GUBER_ALLOW_DISCOVERED_MAX`). A new name beyond that
//! pushes out the least recently used one, which only leaves the *list*: its calls keep the default
//! limit and its buckets stay ordinary cluster limits (bounded by the store), and it is listed again
//! when next used. Names are never metric labels. [`RecentNames`] is the pure set; [`Discovered`]
//! shares it between the calls of one node.

use crate::mutex::lock;
use std::collections::HashMap;
use std::sync::Mutex;

/// The default of `GUBER_ALLOW_DISCOVERED_MAX`.
pub const DEFAULT_CAPACITY: usize = 100;

/// At most `capacity` names, the most recently noted kept.
#[derive(Debug, Clone)]
pub struct RecentNames {
    capacity: usize,
    tick: u64,
    seen: HashMap<String, u64>,
}

impl RecentNames {
    /// An empty set keeping at most `capacity` names (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            seen: HashMap::new(),
        }
    }

    /// Records a use of `name`; returns the name pushed out to make room, if any.
    pub fn note(&mut self, name: &str) -> Option<String> {
        self.tick += 1;
        if let Some(last) = self.seen.get_mut(name) {
            *last = self.tick;
            return None;
        }
        let evicted = if self.seen.len() >= self.capacity {
            // Linear in the capacity (100 by default), paid only when a new name arrives at a
            // full set.
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, last)| **last)
                .map(|(name, _)| name.clone());
            oldest.inspect(|oldest| {
                self.seen.remove(oldest);
            })
        } else {
            None
        };
        self.seen.insert(name.to_string(), self.tick);
        evicted
    }

    /// The names held, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.seen.keys().cloned().collect();
        names.sort();
        names
    }

    /// How many names are held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no name is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The most names held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// One node's discovered resources, shared by its calls.
#[derive(Debug)]
pub struct Discovered {
    names: Mutex<RecentNames>,
}

impl Discovered {
    /// An empty set of at most `capacity` names.
    pub fn new(capacity: usize) -> Self {
        Self {
            names: Mutex::new(RecentNames::new(capacity)),
        }
    }

    /// Records a use of `name`.
    pub fn note(&self, name: &str) {
        lock(&self.names).note(name);
    }

    /// The names held, sorted.
    pub fn names(&self) -> Vec<String> {
        lock(&self.names).names()
    }

    /// The most names held.
    pub fn capacity(&self) -> usize {
        lock(&self.names).capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_keeps_the_most_recently_used_names() {
        let mut set = RecentNames::new(3);
        assert_eq!(set.note("a"), None);
        assert_eq!(set.note("b"), None);
        assert_eq!(set.note("c"), None);
        // Using "a" again makes "b" the least recent.
        assert_eq!(set.note("a"), None);
        assert_eq!(set.note("d"), Some("b".to_string()));
        assert_eq!(set.names(), ["a", "c", "d"]);
        assert_eq!(set.note("e"), Some("c".to_string()));
        assert_eq!(set.names(), ["a", "d", "e"]);
        // A forgotten name comes back when used again.
        assert_eq!(set.note("b"), Some("a".to_string()));
        assert_eq!(set.names(), ["b", "d", "e"]);
    }

    #[test]
    fn invented_names_never_grow_the_set_past_its_capacity() {
        let mut set = RecentNames::new(100);
        for i in 0..10_000 {
            set.note(&format!("invented-{i}"));
            assert!(set.len() <= 100);
        }
        assert_eq!(set.len(), 100);
        // The last 100 invented names are the ones kept.
        assert!(set.names().contains(&"invented-9999".to_string()));
        assert!(!set.names().contains(&"invented-9899".to_string()));
        assert_eq!(RecentNames::new(0).capacity(), 1);
    }

    #[test]
    fn the_shared_set_is_the_same_set() {
        let shared = Discovered::new(2);
        shared.note("x");
        shared.note("y");
        shared.note("x");
        shared.note("z");
        assert_eq!(shared.names(), ["x", "z"]);
        assert_eq!(shared.capacity(), 2);
    }
}
