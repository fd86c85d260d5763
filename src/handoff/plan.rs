//! The planner: which stored keys to hand off after a membership change, and to whom.
//!
//! A key moves when this node owned it in the ring before the change and another peer owns it in
//! the ring after. Keys this node did not own before (GLOBAL copies, leftovers) are not its to
//! give away. The result is grouped by new owner and cut into batches of at most `batch_limit`
//! buckets and at most the receiver's message budget (a count alone could exceed its
//! `GUBER_MAX_REQUEST_SIZE` with long keys), in a deterministic order. A bucket too large for any
//! message is set apart: it stays here rather than being retried forever. Pure: rings and entries
//! in, batches out.

use std::collections::BTreeMap;

use prost::Message;

use crate::algorithms::Bucket;
use crate::batching::budget::{MessageBudget, chunk, framed_len};
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

/// What a pass sends: the batches, and the keys that no message could carry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Batches by new owner, each within the count and the byte budget.
    pub batches: Vec<Batch>,
    /// Keys that should move but are larger than the budget alone; they stay here.
    pub oversized: Vec<LimitKey>,
}

/// The bytes `key`'s bucket takes in a `TransferReq`, counted as a resend (with a `previous`
/// state), the largest form a batch may take on its later rounds.
pub fn wire_bytes(key: &LimitKey, bucket: &Bucket) -> usize {
    framed_len(super::wire::to_wire(key, bucket, Some(bucket)).encoded_len())
}

/// Batches of the `entries` that `me` owned in `before` (every entry when `before` is `None`,
/// as on a graceful leave) and that another peer owns in `after`, within `batch_limit` buckets
/// and `budget` bytes each.
pub fn plan(
    entries: impl IntoIterator<Item = (LimitKey, Bucket)>,
    before: Option<&Ring>,
    after: &Ring,
    me: &str,
    batch_limit: usize,
    budget: MessageBudget,
) -> Plan {
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
    let mut result = Plan::default();
    for (owner, mut buckets) in by_owner {
        buckets.sort_by(|a, b| (&a.0.name, &a.0.unique_key).cmp(&(&b.0.name, &b.0.unique_key)));
        let chunks = chunk(buckets, batch_limit, budget, |(key, bucket)| {
            wire_bytes(key, bucket)
        });
        result
            .oversized
            .extend(chunks.oversized.into_iter().map(|(key, _)| key));
        for buckets in chunks.chunks {
            result.batches.push(Batch {
                owner: owner.clone(),
                buckets,
            });
        }
    }
    result
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

/// The ring `ring` had while the peers `away` were out of it: the ring a restarted peer's keys
/// were handed over in while it was away, so that after it comes back they are recognised as
/// ours to give back (see `tasks::handoff::run`). With consistent hashing, removing peers moves
/// only their keys, so every key `me` owned in `ring` is still `me`'s in the result.
pub fn without(ring: &Ring, away: &[String]) -> Ring {
    let staying: Vec<PeerInfo> = ring
        .peers()
        .iter()
        .filter(|peer| !away.contains(&peer.grpc_address))
        .cloned()
        .collect();
    Ring::new(&staying)
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

    /// The batches a:1 sends, with no byte budget.
    fn batches_of_a(
        entries: Vec<(LimitKey, Bucket)>,
        before: Option<&Ring>,
        after: &Ring,
        batch_limit: usize,
    ) -> Vec<Batch> {
        plan(
            entries,
            before,
            after,
            "a:1",
            batch_limit,
            MessageBudget::unbounded(),
        )
        .batches
    }

    #[test]
    fn a_join_moves_exactly_the_keys_the_new_peer_now_owns() {
        let before = ring(&["a:1", "b:1"]);
        let after = ring(&["a:1", "b:1", "c:1"]);
        let all = entries(400);
        let batches = batches_of_a(all.clone(), Some(&before), &after, 1000);
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
        assert!(batches_of_a(entries(100), Some(&before), &after, 10).is_empty());
    }

    #[test]
    fn a_leave_moves_everything_in_bounded_batches_grouped_by_owner() {
        let after = ring(&["b:1", "c:1"]);
        let batches = batches_of_a(entries(250), None, &after, 40);
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
    fn batches_fit_the_byte_budget_and_oversized_keys_stay() {
        let after = ring(&["b:1"]);
        let mut all: Vec<(LimitKey, Bucket)> = (0..300)
            .map(|i| {
                (
                    LimitKey::new("n", format!("{i:04}-{}", "k".repeat(200))),
                    bucket(),
                )
            })
            .collect();
        let huge = LimitKey::new("n", "h".repeat(5000));
        all.push((huge.clone(), bucket()));
        let budget = MessageBudget::exact(4096);
        let result = plan(all, None, &after, "a:1", 500, budget);
        assert_eq!(result.oversized, vec![huge]);
        assert_eq!(
            result
                .batches
                .iter()
                .map(|b| b.buckets.len())
                .sum::<usize>(),
            300
        );
        assert!(
            result.batches.len() > 1,
            "300 keys of ~260 bytes need several 4 KiB batches"
        );
        for batch in &result.batches {
            let request = super::super::pb::TransferReq {
                sender: "a:1".into(),
                buckets: batch
                    .buckets
                    .iter()
                    .map(|(key, bucket)| super::super::wire::to_wire(key, bucket, Some(bucket)))
                    .collect(),
                complete: false,
            };
            assert!(
                request.encoded_len() <= 4096 + 16,
                "{}",
                request.encoded_len()
            );
            let items: usize = batch.buckets.iter().map(|(k, b)| wire_bytes(k, b)).sum();
            assert!(items <= 4096);
        }
    }

    #[test]
    fn an_empty_ring_after_moves_nothing() {
        assert!(batches_of_a(entries(10), None, &ring(&[]), 10).is_empty());
    }

    #[test]
    fn joined_peers_exclude_me_and_known_peers() {
        let before = ring(&["a:1"]);
        let after = ring(&["a:1", "b:1", "c:1"]);
        assert_eq!(joined(&before, &after, "a:1"), ["b:1", "c:1"]);
        assert!(joined(&after, &before, "a:1").is_empty());
    }

    #[test]
    fn keys_handed_over_while_a_peer_was_away_go_back_when_it_returns() {
        // b:1 restarts: on leaving it handed its keys to a:1 and c:1; it comes back so quickly
        // that the ring a:1 sees next is the ring it saw last.
        let last = ring(&["a:1", "b:1", "c:1"]);
        let away = without(&last, &["b:1".to_string()]);
        let held: Vec<(LimitKey, Bucket)> = entries(300)
            .into_iter()
            .filter(|(key, _)| {
                away.owner_of(&key.name, &key.unique_key)
                    .is_some_and(|peer| peer.grpc_address == "a:1")
            })
            .collect();
        let b_keys = held
            .iter()
            .filter(|(key, _)| {
                last.owner_of(&key.name, &key.unique_key)
                    .is_some_and(|peer| peer.grpc_address == "b:1")
            })
            .count();
        assert!(b_keys > 0, "some of what a:1 holds was b:1's");
        let against_last = batches_of_a(held.clone(), Some(&last), &last, 1000);
        assert!(
            against_last.is_empty(),
            "compared with the last ring, nothing moves"
        );
        let against_away = batches_of_a(held, Some(&away), &last, 1000);
        let moved: usize = against_away.iter().map(|batch| batch.buckets.len()).sum();
        assert_eq!(moved, b_keys);
        assert!(against_away.iter().all(|batch| batch.owner == "b:1"));
        assert_eq!(joined(&away, &last, "a:1"), ["b:1"]);
    }
}
