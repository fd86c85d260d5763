//! The state of a GLOBAL limit as it travels between peers: what an owner broadcasts in
//! `UpdatePeerGlobals`, and how a receiver turns that into its own copy.
//!
//! The wire message carries Gubernator's fields (`key`, `status`, `algorithm`, `duration`,
//! `created_at`). ringlimit adds two entries to `status.metadata` that Gubernator peers ignore:
//! the limit's `name` (so the receiver finds the limit without guessing where `name_unique_key`
//! splits) and a leaky bucket's `burst` (Gubernator resets it to the limit on every broadcast).

use crate::algorithms::{Algorithm, Bucket, LeakyBucket, Status, TokenBucket};
use crate::proto;
use crate::request::LimitKey;

/// `status.metadata` key carrying the limit's name.
pub const NAME_METADATA_KEY: &str = "ringlimit.name";
/// `status.metadata` key carrying a leaky bucket's burst.
pub const BURST_METADATA_KEY: &str = "ringlimit.burst";

/// The broadcast entry for the owner's `bucket` of `key`.
pub fn to_update(key: &LimitKey, bucket: &Bucket) -> proto::UpdatePeerGlobal {
    let mut metadata = std::collections::HashMap::new();
    metadata.insert(NAME_METADATA_KEY.to_string(), key.name.clone());
    let (status, algorithm, duration, created_at) = match bucket {
        Bucket::Token(token) => (
            proto::RateLimitResp {
                status: token.status.wire(),
                limit: token.limit,
                remaining: token.remaining,
                reset_time: token.expire_at,
                error: String::new(),
                metadata,
            },
            Algorithm::TokenBucket,
            token.duration,
            token.created_at,
        ),
        Bucket::Leaky(leaky) => {
            metadata.insert(BURST_METADATA_KEY.to_string(), leaky.burst.to_string());
            // `as` saturates; the fraction below one token stays with the owner.
            let remaining = leaky.remaining as i64;
            let status = if remaining > 0 {
                Status::UnderLimit
            } else {
                Status::OverLimit
            };
            (
                proto::RateLimitResp {
                    status: status.wire(),
                    limit: leaky.limit,
                    remaining,
                    reset_time: leaky.expire_at,
                    error: String::new(),
                    metadata,
                },
                Algorithm::LeakyBucket,
                leaky.duration,
                // The receiver leaks from the owner's last update, not from when it hears of it.
                leaky.updated_at,
            )
        }
    };
    proto::UpdatePeerGlobal {
        key: key.hash_key(),
        status: Some(status),
        algorithm: match algorithm {
            Algorithm::TokenBucket => proto::Algorithm::TokenBucket as i32,
            Algorithm::LeakyBucket => proto::Algorithm::LeakyBucket as i32,
        },
        duration,
        created_at,
    }
}

/// The most `name`/`unique_key` splits of a Gubernator owner's key a receiver tries when looking
/// for its copy. Each try builds a key and hashes it, so trying every `_` of a long key would be
/// quadratic in its length; names with more underscores than this are not found (the copy is then
/// refreshed by the owner's answers to the hits it is sent instead).
pub const MAX_SPLIT_CANDIDATES: usize = 8;

/// Where the limit of an update may be: the exact split when a ringlimit owner carried the name,
/// otherwise up to [`MAX_SPLIT_CANDIDATES`] splits of `name_unique_key` at an `_`, leftmost first.
/// Only splits whose parts are non-empty and at most `max_key_bytes` long (what validation lets
/// a limit have) are candidates. Linear in the key's length; nothing is copied.
pub fn key_candidates(
    update: &proto::UpdatePeerGlobal,
    max_key_bytes: usize,
) -> impl Iterator<Item = (&str, &str)> {
    let key = update.key.as_str();
    let fits = move |(name, unique_key): &(&str, &str)| {
        !name.is_empty()
            && !unique_key.is_empty()
            && name.len() <= max_key_bytes
            && unique_key.len() <= max_key_bytes
    };
    let carried = carried_name(update);
    let exact = carried.and_then(|name| Some((name, key.strip_prefix(name)?.strip_prefix('_')?)));
    // The name is at most `max_key_bytes` long, so its `_` is within the first `max + 1` bytes.
    let shortest_name = key.len().saturating_sub(max_key_bytes.saturating_add(1));
    let guesses = key
        .bytes()
        .enumerate()
        .take(max_key_bytes.saturating_add(1))
        .skip(shortest_name.max(1))
        .filter(|&(_, byte)| byte == b'_')
        .filter_map(move |(at, _)| Some((key.get(..at)?, key.get(at + 1..)?)))
        .take(MAX_SPLIT_CANDIDATES);
    let guesses = carried.is_none().then_some(guesses).into_iter().flatten();
    exact.into_iter().chain(guesses).filter(fits)
}

/// The name carried by a ringlimit broadcast, if any.
pub fn carried_name(update: &proto::UpdatePeerGlobal) -> Option<&str> {
    update
        .status
        .as_ref()
        .and_then(|status| status.metadata.get(NAME_METADATA_KEY))
        .map(String::as_str)
}

/// The copy a receiver stores for `update`, given its `existing` copy of the same limit, at
/// server time `now_ms`; `None` for an update that cannot be a bucket (no status, unknown
/// algorithm).
pub fn from_update(
    update: &proto::UpdatePeerGlobal,
    existing: Option<&Bucket>,
    now_ms: i64,
) -> Option<Bucket> {
    let status = update.status.as_ref()?;
    match update.algorithm {
        0 => Some(Bucket::Token(TokenBucket {
            status: Status::from_wire(status.status),
            limit: status.limit,
            duration: update.duration,
            remaining: status.remaining,
            created_at: update.created_at,
            expire_at: status.reset_time,
        })),
        1 => {
            let existing_burst = match existing {
                Some(Bucket::Leaky(leaky)) => Some(leaky.burst),
                _ => None,
            };
            let burst = status
                .metadata
                .get(BURST_METADATA_KEY)
                .and_then(|burst| burst.parse().ok())
                .or(existing_burst)
                .unwrap_or(status.limit);
            Some(Bucket::Leaky(LeakyBucket {
                limit: status.limit,
                duration: update.duration,
                remaining: status.remaining as f64,
                // A ringlimit owner sends its last leak time; Gubernator's receivers use "now".
                updated_at: if update.created_at > 0 {
                    update.created_at
                } else {
                    now_ms
                },
                burst,
                expire_at: status.reset_time.max(now_ms),
            }))
        }
        _ => None,
    }
}

/// The limit's wire answer as a bucket's copy, for a non-owner that fetched it from the owner:
/// the request supplies what the answer does not carry.
pub fn from_answer(
    answer: &proto::RateLimitResp,
    request: &crate::algorithms::RateLimitRequest,
) -> Bucket {
    let duration = request.duration.wire_value();
    match request.algorithm {
        Algorithm::TokenBucket => Bucket::Token(TokenBucket {
            status: Status::from_wire(answer.status),
            limit: answer.limit,
            duration,
            remaining: answer.remaining,
            created_at: request.created_at,
            expire_at: answer.reset_time,
        }),
        Algorithm::LeakyBucket => Bucket::Leaky(LeakyBucket {
            limit: answer.limit,
            duration,
            remaining: answer.remaining as f64,
            updated_at: request.created_at,
            burst: if request.burst == 0 {
                request.limit
            } else {
                request.burst
            },
            expire_at: request.created_at.saturating_add(match request.duration {
                crate::algorithms::LimitDuration::Millis(ms) => ms,
                crate::algorithms::LimitDuration::Calendar(interval) => {
                    interval.length_ms(request.created_at)
                }
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(key: &str, name: Option<&str>) -> proto::UpdatePeerGlobal {
        let mut status = proto::RateLimitResp::default();
        if let Some(name) = name {
            status
                .metadata
                .insert(NAME_METADATA_KEY.to_string(), name.to_string());
        }
        proto::UpdatePeerGlobal {
            key: key.to_string(),
            status: Some(status),
            ..Default::default()
        }
    }

    /// The candidates of an update of `key` (carrying `name`, if any), owned.
    fn splits(key: &str, name: Option<&str>, max: usize) -> Vec<(String, String)> {
        key_candidates(&update(key, name), max)
            .map(|(name, unique_key)| (name.to_string(), unique_key.to_string()))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(name, unique_key)| (name.to_string(), unique_key.to_string()))
            .collect()
    }

    #[test]
    fn a_carried_name_is_the_only_candidate() {
        assert_eq!(splits("a_b_c", Some("a_b"), 10), pairs(&[("a_b", "c")]));
        assert_eq!(splits("a_b_c", Some("x"), 10), pairs(&[]));
        assert_eq!(splits("a_b_c", Some("a_b_c"), 10), pairs(&[]));
    }

    #[test]
    fn gubernator_keys_give_bounded_splits_with_parts_of_valid_length() {
        assert_eq!(
            splits("a_b_c", None, 10),
            pairs(&[("a", "b_c"), ("a_b", "c")])
        );
        // Parts longer than the key limit are never candidates.
        assert_eq!(splits("aaaa_b_cccc", None, 4), pairs(&[]));
        assert_eq!(
            splits("ab_c_de", None, 4),
            pairs(&[("ab", "c_de"), ("ab_c", "de")])
        );
        // Empty parts are not candidates.
        assert_eq!(splits("_a_", None, 10), pairs(&[]));
        // A key of underscores gives at most MAX_SPLIT_CANDIDATES, whatever its length.
        assert_eq!(splits(&"_".repeat(900 * 1024), None, 1024), pairs(&[]));
        let candidates = splits(&"_".repeat(1500), None, 1024);
        assert_eq!(candidates.len(), MAX_SPLIT_CANDIDATES);
        assert!(
            candidates
                .iter()
                .all(|(name, unique_key)| name.len() <= 1024 && unique_key.len() <= 1024)
        );
    }

    #[test]
    fn token_buckets_survive_a_round_trip() {
        let bucket = crate::algorithms::test_support::over_limit_token_bucket();
        let key = LimitKey::new("a_b", "c");
        let update = to_update(&key, &bucket);
        assert_eq!(update.key, "a_b_c");
        assert_eq!(carried_name(&update), Some("a_b"));
        assert_eq!(from_update(&update, None, 2_000), Some(bucket));
    }

    #[test]
    fn leaky_burst_survives_a_broadcast() {
        let bucket = Bucket::Leaky(LeakyBucket {
            limit: 10,
            duration: 10_000,
            remaining: 25.0,
            updated_at: 1_000,
            burst: 30,
            expire_at: 11_000,
        });
        let update = to_update(&LimitKey::new("n", "k"), &bucket);
        assert_eq!(from_update(&update, None, 2_000), Some(bucket));
    }

    #[test]
    fn gubernator_updates_keep_the_local_burst() {
        let update = proto::UpdatePeerGlobal {
            key: "n_k".into(),
            status: Some(proto::RateLimitResp {
                limit: 10,
                remaining: 4,
                reset_time: 5_000,
                ..Default::default()
            }),
            algorithm: 1,
            duration: 10_000,
            created_at: 0,
        };
        let local = Bucket::Leaky(LeakyBucket {
            limit: 10,
            duration: 10_000,
            remaining: 9.0,
            updated_at: 0,
            burst: 20,
            expire_at: 9_000,
        });
        let Some(Bucket::Leaky(copy)) = from_update(&update, Some(&local), 3_000) else {
            panic!("a leaky copy")
        };
        assert_eq!(copy.burst, 20);
        assert_eq!(copy.remaining, 4.0);
        assert_eq!(copy.updated_at, 3_000);
    }

    #[test]
    fn updates_without_status_or_with_unknown_algorithms_are_ignored() {
        let mut update = proto::UpdatePeerGlobal {
            key: "n_k".into(),
            status: None,
            ..Default::default()
        };
        assert_eq!(from_update(&update, None, 0), None);
        update.status = Some(proto::RateLimitResp::default());
        update.algorithm = 7;
        assert_eq!(from_update(&update, None, 0), None);
    }
}
