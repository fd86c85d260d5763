//! The planner: which stored keys to hand off after a membership change, and to whom.
//!
//! A key moves when this node owned it in the ring before the change and another peer owns it in
//! the ring after. Keys this node did not own before (GLOBAL copies, leftovers) are not its to
//! give away. The result is grouped by new owner and cut into batches of at most `batch_limit`
//! buckets, in a deterministic order. Pure: rings and entries in, batches out.

use std::collections::BTreeMap;

use crate::algorithms::Bucket;
use crate::peers::{PeerInfo, Ring};
use crate::request::LimitKey;

/// Buckets for one new owner, at most `batch_limit` of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The new owner's gRPC address.
    pub owner: String,
    /// The keys and their buckets.
    pub buckets: Vec<(LimitKey, Bucket)>,
}

/// Batches of the `entries` that `me` owned in `before` (every entry when `before` is `None`,
/// as on a graceful leave) and that another peer owns in `after`.
pub fn plan(
    entries: impl IntoIterator<Item = (LimitKey, Bucket)>,
    before: Option<&Ring>,
    after: &Ring,
    me: &str,
    batch_limit: usize,
) -> Vec<Batch> {
    let owned_by = |ring: &Ring, key: &LimitKey| {
        ring.owner_of(&key.name, &key.unique_key)
            .map(|peer: &PeerInfo| peer.grpc_address.clone())
    };
    let mut by_owner: BTreeMap<String, Vec<(LimitKey, Bucket)>> = BTreeMap::new();
    for (key, bucket) in entries {
        if let Some(before) = before
            && owned_by(before, &key).as_deref() != Some(me)
        {
            continue;
        }
        match owned_by(after, &key) {
            Some(owner) if owner != me => by_owner.entry(owner).or_default().push((key, bucket)),
            _ => {}
        }
    }
    let limit = batch_limit.max(1);
    let mut batches = Vec::new();
    for (owner, mut buckets) in by_owner {
        buckets.sort_by(|a, b| (&a.0.name, &a.0.unique_key).cmp(&(&b.0.name, &b.0.unique_key)));
        for chunk in buckets.chunks(limit) {
            batches.push(Batch {
                owner: owner.clone(),
                buckets: chunk.to_vec(),
            });
        }
    }
    batches
}

/// The local-data-center peers in `after` that were not in `before`, other than `me`: the peers
/// this node owes a "complete" message after its pass, and waits for one from.
pub fn joined(before: &Ring, after: &Ring, me: &str) -> Vec<String> {
    after
        .peers()
        .iter()
        .map(|peer| peer.grpc_address.as_str())
        .filter(|address| *address != me)
        .filter(|address| !before.peers().iter().any(|p| p.grpc_address == *address))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::{Status, TokenBucket};

    fn peer(address: &str) -> PeerInfo {
        PeerInfo {
            grpc_address: address.into(),
            http_address: String::new(),
            data_center: String::new(),
        }
    }

    fn ring(addresses: &[&str]) -> Ring {
        Ring::new(&addresses.iter().map(|a| peer(a)).collect::<Vec<_>>())
    }

    fn bucket() -> Bucket {
        Bucket::Token(TokenBucket {
            status: Status::UnderLimit,
            limit: 5,
            duration: 1000,
            remaining: 4,
            created_at: 0,
            expire_at: 1000,
        })
    }

    fn entries(count: usize) -> Vec<(LimitKey, Bucket)> {
        (0..count)
            .map(|i| {
                (
                    LimitKey::new("n", format!("key-{i:x}-{}", i * 7919)),
                    bucket(),
                )
            })
            .collect()
    }

    #[test]
    fn a_join_moves_exactly_the_keys_the_new_peer_now_owns() {
        let before = ring(&["a:1", "b:1"]);
        let after = ring(&["a:1", "b:1", "c:1"]);
        let all = entries(400);
        let batches = plan(all.clone(), Some(&before), &after, "a:1", 1000);
        let moved: Vec<&LimitKey> = batches
            .iter()
            .flat_map(|b| b.buckets.iter().map(|(k, _)| k))
            .collect();
        for (key, _) in &all {
            let was_mine = before
                .owner_of(&key.name, &key.unique_key)
                .unwrap()
                .grpc_address
                == "a:1";
            let now_c = after
                .owner_of(&key.name, &key.unique_key)
                .unwrap()
                .grpc_address
                == "c:1";
            assert_eq!(moved.contains(&key), was_mine && now_c, "{key:?}");
        }
        assert!(!moved.is_empty(), "some keys move to the new peer");
        assert!(batches.iter().all(|b| b.owner == "c:1"));
    }

    #[test]
    fn keys_not_owned_before_stay() {
        let before = ring(&["b:1"]);
        let after = ring(&["b:1", "c:1"]);
        assert!(plan(entries(100), Some(&before), &after, "a:1", 10).is_empty());
    }

    #[test]
    fn a_leave_moves_everything_in_bounded_batches_grouped_by_owner() {
        let after = ring(&["b:1", "c:1"]);
        let batches = plan(entries(250), None, &after, "a:1", 40);
        assert_eq!(batches.iter().map(|b| b.buckets.len()).sum::<usize>(), 250);
        assert!(batches.iter().all(|b| b.buckets.len() <= 40));
        for batch in &batches {
            for (key, _) in &batch.buckets {
                assert_eq!(
                    after
                        .owner_of(&key.name, &key.unique_key)
                        .unwrap()
                        .grpc_address,
                    batch.owner
                );
            }
        }
        let owners: Vec<&str> = batches.iter().map(|b| b.owner.as_str()).collect();
        let mut sorted = owners.clone();
        sorted.sort();
        assert_eq!(owners, sorted, "one owner's batches are contiguous");
    }

    #[test]
    fn an_empty_ring_after_moves_nothing() {
        assert!(plan(entries(10), None, &ring(&[]), "a:1", 10).is_empty());
    }

    #[test]
    fn joined_peers_exclude_me_and_known_peers() {
        let before = ring(&["a:1"]);
        let after = ring(&["a:1", "b:1", "c:1"]);
        assert_eq!(joined(&before, &after, "a:1"), ["b:1", "c:1"]);
        assert!(joined(&after, &before, "a:1").is_empty());
    }
}
