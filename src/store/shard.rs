//! One shard of the store: an open-addressing hash table of indices into a dense vector of entries,
//! with sampled least-recently-used eviction.
//!
//! The layout is chosen for memory and speed at millions of keys. An entry is the bucket, the key's
//! text (name and unique key back to back; inside the entry when short), the key's hash, and a
//! recency stamp; the table holds only a `u32` index per slot. Nothing is reference-counted and nothing is linked,
//! so a live key costs its entry, its slot and its key text.
//!
//! Eviction works like Redis's approximated LRU: when the shard is full, a few entries are sampled
//! at random and the expired one, or else the least recently used one, makes room. Keeping entries
//! dense in a vector (removal swaps the last entry into the hole) is what makes a random sample
//! cheap. Expired entries are also reclaimed a few at a time as new keys arrive, and all at once by
//! [`Shard::remove_expired`], so memory follows the live keys rather than the capacity.
//!
//! The shard knows nothing about clocks or locks: callers pass `now_ms` and hold the shard's mutex.

use hashbrown::HashTable;

use crate::algorithms::Bucket;
use crate::store::Eviction;

/// How many entries are sampled to choose one to evict.
const EVICTION_SAMPLES: usize = 5;
/// How many entries are checked for expiry each time a new key is inserted.
const EXPIRY_CHECKS_PER_INSERT: usize = 2;

/// Key text up to this many bytes (name and unique key together) is stored inside the entry, so a
/// lookup reads no other memory; longer text goes to the heap. 29 makes the key 32 bytes.
const INLINE_KEY_BYTES: usize = 29;

/// A key as stored: the bytes of `name` then `unique_key`, and where the name ends; inside the
/// entry when short, else in one allocation.
#[derive(Debug)]
enum StoredKey {
    Inline {
        len: u8,
        name_len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap {
        bytes: Box<[u8]>,
        name_len: u32,
    },
}

impl StoredKey {
    fn new(name: &str, unique_key: &str) -> Self {
        let total = name.len() + unique_key.len();
        if total <= INLINE_KEY_BYTES {
            let mut bytes = [0; INLINE_KEY_BYTES];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            bytes[name.len()..total].copy_from_slice(unique_key.as_bytes());
            // Both fit in a u8: they are at most INLINE_KEY_BYTES.
            StoredKey::Inline {
                len: total as u8,
                name_len: name.len() as u8,
                bytes,
            }
        } else {
            let mut bytes = Vec::with_capacity(total);
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(unique_key.as_bytes());
            StoredKey::Heap {
                bytes: bytes.into_boxed_slice(),
                // Names are limited far below 4 GiB by validation; saturate rather than wrap.
                name_len: u32::try_from(name.len()).unwrap_or(u32::MAX),
            }
        }
    }

    /// The name's bytes and the unique key's bytes.
    fn split(&self) -> (&[u8], &[u8]) {
        let (bytes, name_len) = match self {
            StoredKey::Inline {
                len,
                name_len,
                bytes,
            } => (
                bytes.get(..usize::from(*len)).unwrap_or_default(),
                usize::from(*name_len),
            ),
            StoredKey::Heap { bytes, name_len } => (&bytes[..], *name_len as usize),
        };
        bytes.split_at(name_len.min(bytes.len()))
    }

    /// Heap bytes held outside the entry.
    fn heap_len(&self) -> usize {
        match self {
            StoredKey::Inline { .. } => 0,
            StoredKey::Heap { bytes, .. } => bytes.len(),
        }
    }

    /// The name; the text was built from two `str`s split at this boundary, so it is UTF-8.
    fn name(&self) -> &str {
        std::str::from_utf8(self.split().0).unwrap_or_default()
    }

    /// The unique key (UTF-8 for the same reason as the name).
    fn unique_key(&self) -> &str {
        std::str::from_utf8(self.split().1).unwrap_or_default()
    }

    fn matches(&self, name: &str, unique_key: &str) -> bool {
        let (stored_name, stored_key) = self.split();
        stored_name == name.as_bytes() && stored_key == unique_key.as_bytes()
    }
}

/// One stored bucket.
#[derive(Debug)]
struct Entry {
    hash: u64,
    key: StoredKey,
    bucket: Bucket,
    /// The shard's access counter when the entry was last used; compared with wrapping arithmetic.
    last_used: u32,
}

/// A bounded map from `(name, unique_key)` to [`Bucket`].
#[derive(Debug)]
pub(crate) struct Shard {
    table: HashTable<u32>,
    entries: Vec<Entry>,
    capacity: usize,
    /// Incremented on every access; stamps `Entry::last_used`.
    clock: u32,
    /// Where the incremental expiry scan resumes.
    expiry_cursor: usize,
    /// State of the xorshift generator that picks eviction samples.
    rng: u64,
}

impl Shard {
    /// An empty shard holding at most `capacity` buckets; `seed` makes its eviction samples differ
    /// from other shards'.
    pub(crate) fn new(capacity: usize, seed: u64) -> Self {
        Self {
            table: HashTable::new(),
            entries: Vec::new(),
            capacity,
            clock: 0,
            expiry_cursor: 0,
            rng: seed | 1,
        }
    }

    /// The number of buckets held, live or expired.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The bucket stored for the key, marking it as used.
    pub(crate) fn get_mut(
        &mut self,
        hash: u64,
        name: &str,
        unique_key: &str,
    ) -> Option<&mut Bucket> {
        let index = self.find(hash, name, unique_key)?;
        self.clock = self.clock.wrapping_add(1);
        let entry = self.entries.get_mut(index)?;
        entry.last_used = self.clock;
        Some(&mut entry.bucket)
    }

    /// The bucket stored for the key, without marking it as used.
    pub(crate) fn peek(&self, hash: u64, name: &str, unique_key: &str) -> Option<&Bucket> {
        let index = self.find(hash, name, unique_key)?;
        self.entries.get(index).map(|entry| &entry.bucket)
    }

    /// Stores `bucket` for a key that is not in the shard, making room first if the shard is full.
    /// Every bucket that leaves to make room is reported to `on_eviction`.
    pub(crate) fn insert_new(
        &mut self,
        hash: u64,
        name: &str,
        unique_key: &str,
        bucket: Bucket,
        now_ms: i64,
        on_eviction: &mut dyn FnMut(Eviction),
    ) {
        if self.capacity == 0 {
            return;
        }
        self.reclaim_some_expired(now_ms, on_eviction);
        while self.entries.len() >= self.capacity {
            let Some((index, cause)) = self.eviction_candidate(now_ms) else {
                break;
            };
            self.remove_at(index);
            on_eviction(cause);
        }
        self.clock = self.clock.wrapping_add(1);
        let index = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        self.entries.push(Entry {
            hash,
            key: StoredKey::new(name, unique_key),
            bucket,
            last_used: self.clock,
        });
        let entries = &self.entries;
        self.table
            .insert_unique(hash, index, |&i| Self::hash_at(entries, i));
    }

    /// Removes the key's bucket; whether there was one.
    pub(crate) fn remove(&mut self, hash: u64, name: &str, unique_key: &str) -> bool {
        match self.find(hash, name, unique_key) {
            Some(index) => {
                self.remove_at(index);
                true
            }
            None => false,
        }
    }

    /// Removes every bucket that expired before `now_ms`, reporting each to `on_eviction`.
    pub(crate) fn remove_expired(&mut self, now_ms: i64, on_eviction: &mut dyn FnMut(Eviction)) {
        let mut index = 0;
        while index < self.entries.len() {
            if self.entries[index].bucket.is_expired(now_ms) {
                // The last entry moves into `index`; look at it next.
                self.remove_at(index);
                on_eviction(Eviction::Expired);
            } else {
                index += 1;
            }
        }
    }

    /// Every stored `(name, unique_key, bucket)`, live or expired, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str, &Bucket)> {
        self.entries
            .iter()
            .map(|entry| (entry.key.name(), entry.key.unique_key(), &entry.bucket))
    }

    /// Bytes of heap this shard holds (entries, table and key text), for memory accounting.
    pub(crate) fn heap_bytes(&self) -> usize {
        let key_text: usize = self.entries.iter().map(|entry| entry.key.heap_len()).sum();
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.table.allocation_size()
            + key_text
    }

    fn find(&self, hash: u64, name: &str, unique_key: &str) -> Option<usize> {
        let entries = &self.entries;
        self.table
            .find(hash, |&i| {
                entries
                    .get(i as usize)
                    .is_some_and(|entry| entry.hash == hash && entry.key.matches(name, unique_key))
            })
            .map(|&i| i as usize)
    }

    fn hash_at(entries: &[Entry], index: u32) -> u64 {
        entries.get(index as usize).map_or(0, |entry| entry.hash)
    }

    /// Removes the entry at `index`, moving the last entry into its place.
    fn remove_at(&mut self, index: usize) {
        let Some(hash) = self.entries.get(index).map(|entry| entry.hash) else {
            return;
        };
        let entries = &self.entries;
        if let Ok(slot) = self.table.find_entry(hash, |&i| i as usize == index) {
            slot.remove();
        }
        let last = entries.len() - 1;
        if index != last {
            let moved_hash = entries[last].hash;
            if let Some(slot) = self.table.find_mut(moved_hash, |&i| i as usize == last) {
                *slot = u32::try_from(index).unwrap_or(u32::MAX);
            }
        }
        self.entries.swap_remove(index);
    }

    /// The entry to evict: an expired one among a random sample if there is one, otherwise the
    /// sampled entry used longest ago.
    fn eviction_candidate(&mut self, now_ms: i64) -> Option<(usize, Eviction)> {
        let len = self.entries.len();
        if len == 0 {
            return None;
        }
        let mut oldest: Option<(usize, u32)> = None;
        for _ in 0..EVICTION_SAMPLES.min(len) {
            let index = (self.next_random() % len as u64) as usize;
            let entry = &self.entries[index];
            if entry.bucket.is_expired(now_ms) {
                return Some((index, Eviction::Expired));
            }
            let age = self.clock.wrapping_sub(entry.last_used);
            if oldest.is_none_or(|(_, oldest_age)| age > oldest_age) {
                oldest = Some((index, age));
            }
        }
        oldest.map(|(index, _)| (index, Eviction::Size))
    }

    /// Checks a few entries for expiry, resuming where the last check stopped.
    fn reclaim_some_expired(&mut self, now_ms: i64, on_eviction: &mut dyn FnMut(Eviction)) {
        for _ in 0..EXPIRY_CHECKS_PER_INSERT {
            if self.entries.is_empty() {
                return;
            }
            if self.expiry_cursor >= self.entries.len() {
                self.expiry_cursor = 0;
            }
            if self.entries[self.expiry_cursor].bucket.is_expired(now_ms) {
                self.remove_at(self.expiry_cursor);
                on_eviction(Eviction::Expired);
            } else {
                self.expiry_cursor += 1;
            }
        }
    }

    /// xorshift64: fast, and good enough to pick eviction samples.
    fn next_random(&mut self) -> u64 {
        crate::xorshift::next(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::{Status, TokenBucket};

    fn bucket(expire_at: i64, remaining: i64) -> Bucket {
        Bucket::Token(TokenBucket {
            status: Status::UnderLimit,
            limit: 10,
            duration: 1000,
            remaining,
            created_at: 0,
            expire_at,
        })
    }

    /// A deliberately poor hash, so that collisions and probing are exercised.
    fn hash(name: &str, key: &str) -> u64 {
        ((name.len() as u64) << 8) | (key.bytes().map(u64::from).sum::<u64>() % 7)
    }

    fn insert(shard: &mut Shard, key: &str, expire_at: i64, now_ms: i64) -> Vec<Eviction> {
        let mut evicted = Vec::new();
        shard.insert_new(
            hash("n", key),
            "n",
            key,
            bucket(expire_at, 1),
            now_ms,
            &mut |cause| evicted.push(cause),
        );
        evicted
    }

    /// A shard of `capacity` (eviction sampler seeded with `seed`) holding `k0` .. `k{count - 1}`.
    fn shard_with_keys(capacity: usize, seed: u64, count: usize) -> Shard {
        let mut shard = Shard::new(capacity, seed);
        for i in 0..count {
            insert(&mut shard, &format!("k{i}"), 1000, 0);
        }
        shard
    }

    fn remaining(shard: &Shard, key: &str) -> Option<i64> {
        match shard.peek(hash("n", key), "n", key)? {
            Bucket::Token(bucket) => Some(bucket.remaining),
            Bucket::Leaky(_) => None,
        }
    }

    #[test]
    fn keys_are_found_by_name_and_unique_key_even_when_hashes_collide() {
        let mut shard = shard_with_keys(100, 1, 50);
        for i in 0..50 {
            assert!(remaining(&shard, &format!("k{i}")).is_some(), "k{i}");
        }
        assert!(remaining(&shard, "k50").is_none());
        // Same concatenated text, different split: different keys.
        shard.insert_new(1, "ab", "c", bucket(1000, 7), 0, &mut |_| {});
        assert!(shard.peek(1, "a", "bc").is_none());
        assert!(shard.peek(1, "ab", "c").is_some());
    }

    #[test]
    fn removal_keeps_every_other_key_reachable() {
        let mut shard = shard_with_keys(100, 1, 30);
        for i in (0..30).step_by(3) {
            assert!(shard.remove(hash("n", &format!("k{i}")), "n", &format!("k{i}")));
        }
        assert_eq!(shard.len(), 20);
        for i in 0..30 {
            let present = remaining(&shard, &format!("k{i}")).is_some();
            assert_eq!(present, i % 3 != 0, "k{i}");
        }
    }

    #[test]
    fn a_full_shard_evicts_to_stay_within_capacity() {
        let mut shard = Shard::new(10, 7);
        let mut evictions = 0;
        for i in 0..100 {
            evictions += insert(&mut shard, &format!("k{i}"), 1000, 0).len();
            assert!(shard.len() <= 10);
        }
        assert_eq!(evictions, 90);
        assert_eq!(shard.len(), 10);
    }

    #[test]
    fn eviction_prefers_the_least_recently_used() {
        let mut shard = shard_with_keys(5, 3, 5);
        // Use every key but k0, so k0 is the oldest of any sample that includes it.
        for i in 1..5 {
            let key = format!("k{i}");
            assert!(shard.get_mut(hash("n", &key), "n", &key).is_some());
        }
        // All five are sampled when the shard holds five (samples may repeat, so try a few).
        let mut k0_evicted = false;
        for round in 0..20 {
            let evicted = insert(&mut shard, &format!("new{round}"), 1000, 0);
            assert_eq!(evicted, vec![Eviction::Size]);
            if remaining(&shard, "k0").is_none() {
                k0_evicted = true;
                break;
            }
        }
        assert!(k0_evicted);
    }

    #[test]
    fn expired_entries_are_reclaimed_first_and_reported_as_expired() {
        let mut shard = Shard::new(3, 5);
        insert(&mut shard, "old", 10, 0);
        insert(&mut shard, "a", 1000, 0);
        insert(&mut shard, "b", 1000, 0);
        let evicted = insert(&mut shard, "c", 1000, 20);
        assert_eq!(evicted, vec![Eviction::Expired]);
        assert!(remaining(&shard, "old").is_none());
        assert_eq!(shard.len(), 3);
    }

    #[test]
    fn remove_expired_sweeps_everything_expired() {
        let mut shard = Shard::new(100, 5);
        for i in 0..40 {
            insert(
                &mut shard,
                &format!("k{i}"),
                if i % 2 == 0 { 10 } else { 1000 },
                0,
            );
        }
        let mut expired = 0;
        shard.remove_expired(20, &mut |cause| {
            assert_eq!(cause, Eviction::Expired);
            expired += 1;
        });
        assert_eq!(expired, 20);
        assert_eq!(shard.len(), 20);
        for (name, key, _) in shard.iter() {
            assert_eq!(name, "n");
            let i: usize = key[1..].parse().unwrap_or(0);
            assert_eq!(i % 2, 1);
        }
    }

    #[test]
    fn an_entry_stays_small() {
        // The memory target (≤ 200 bytes per key at 1M keys) rests on this.
        assert!(std::mem::size_of::<StoredKey>() <= 32);
        assert!(std::mem::size_of::<Entry>() <= 104);
    }

    #[test]
    fn short_and_long_keys_round_trip() {
        let mut shard = Shard::new(10, 1);
        let long = "x".repeat(100);
        for (name, key) in [
            ("n", "k"),
            ("", ""),
            ("name", long.as_str()),
            ("ünï", "cödé"),
        ] {
            shard.insert_new(hash(name, key), name, key, bucket(1000, 1), 0, &mut |_| {});
            assert!(
                shard.peek(hash(name, key), name, key).is_some(),
                "{name}/{key}"
            );
        }
        let mut stored: Vec<(String, String)> = shard
            .iter()
            .map(|(name, key, _)| (name.to_string(), key.to_string()))
            .collect();
        stored.sort();
        assert_eq!(
            stored,
            vec![
                (String::new(), String::new()),
                ("n".into(), "k".into()),
                ("name".into(), long.clone()),
                ("ünï".into(), "cödé".into()),
            ]
        );
        // The same text split elsewhere, under the same hash, is another key.
        let moved = format!("e{long}");
        assert!(shard.peek(hash("name", &long), "nam", &moved).is_none());
        assert!(shard.heap_bytes() >= 4 * std::mem::size_of::<Entry>() + long.len());
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let mut shard = Shard::new(0, 1);
        insert(&mut shard, "k", 1000, 0);
        assert_eq!(shard.len(), 0);
    }

    #[test]
    fn get_mut_changes_the_stored_bucket() {
        let mut shard = Shard::new(10, 1);
        insert(&mut shard, "k", 1000, 0);
        if let Some(Bucket::Token(bucket)) = shard.get_mut(hash("n", "k"), "n", "k") {
            bucket.remaining = 9;
        }
        assert_eq!(remaining(&shard, "k"), Some(9));
    }
}
