//! Merging a bucket that arrives by handoff with the bucket the receiver already holds.
//!
//! The rule is that the merged bucket never grants more than either side would: for every future
//! request it admits at most what the incoming bucket would admit and at most what the held bucket
//! would admit. Pure functions of plain values, so every case is unit-tested.
//!
//! | case | result |
//! |---|---|
//! | incoming expired | the held bucket, unchanged |
//! | nothing held, or the held bucket expired | the incoming bucket |
//! | token, same limit and duration | the fewer remaining tokens, the later window end (and its start), `OVER_LIMIT` if either is |
//! | token, different limit or duration | the whole bucket with fewer remaining tokens (ties: the later window end); fields are never mixed across configurations |
//! | token, resend with `previous` in the same window as held | held minus what the sender consumed since `previous` (exact) |
//! | leaky, same algorithm | the fewer tokens, leaking from the later `updated_at`, expiring at the later time, with the configuration of the more recently updated side |
//! | different algorithms | the incoming bucket: the sender was the owner, so its bucket is what clients used last; the algorithms treat the other algorithm's bucket as missing anyway |
//!
//! A *resend* happens when a key changed on the sender while its first transfer was in flight:
//! the receiver already holds the first version (`previous`) and may have evaluated requests on
//! it since, so taking the smaller of the two would forget one side's hits. Subtracting the
//! sender's consumption since `previous` counts both. It is only exact when `previous`, the
//! incoming bucket and the held bucket are in the same window; otherwise the plain merge applies.
//! Leaky buckets always use the plain merge (their leak makes a difference ambiguous).

use crate::algorithms::{Bucket, LeakyBucket, Status, TokenBucket};

/// The bucket to store for a key after `incoming` arrives, given the `held` bucket, the
/// `previous` version the sender already delivered (on a resend), and the server time.
/// `None` means: leave the store as it is.
pub fn merge(
    held: Option<&Bucket>,
    incoming: &Bucket,
    previous: Option<&Bucket>,
    now_ms: i64,
) -> Option<Bucket> {
    if incoming.is_expired(now_ms) {
        return None;
    }
    let Some(held) = held.filter(|held| !held.is_expired(now_ms)) else {
        return Some(*incoming);
    };
    Some(match (held, incoming) {
        (Bucket::Token(held), Bucket::Token(incoming)) => {
            let resend = previous.and_then(|previous| match previous {
                Bucket::Token(previous) => apply_consumption(held, incoming, previous),
                Bucket::Leaky(_) => None,
            });
            Bucket::Token(resend.unwrap_or_else(|| merge_token(held, incoming)))
        }
        (Bucket::Leaky(held), Bucket::Leaky(incoming)) => {
            Bucket::Leaky(merge_leaky(held, incoming))
        }
        // Different algorithms: the sender's bucket wins (see the module table).
        _ => *incoming,
    })
}

/// Two token buckets without a shared history.
pub fn merge_token(held: &TokenBucket, incoming: &TokenBucket) -> TokenBucket {
    if held.limit != incoming.limit || held.duration != incoming.duration {
        // Different configurations: keep one bucket whole, the one with fewer tokens.
        let held_first = (held.remaining, std::cmp::Reverse(held.expire_at))
            <= (incoming.remaining, std::cmp::Reverse(incoming.expire_at));
        return if held_first { *held } else { *incoming };
    }
    let later = if held.expire_at >= incoming.expire_at {
        held
    } else {
        incoming
    };
    TokenBucket {
        status: if held.status == Status::OverLimit || incoming.status == Status::OverLimit {
            Status::OverLimit
        } else {
            Status::UnderLimit
        },
        limit: held.limit,
        duration: held.duration,
        remaining: held.remaining.min(incoming.remaining),
        created_at: later.created_at,
        expire_at: later.expire_at,
    }
}

/// A resend: `held` minus what the sender consumed between `previous` and `incoming`, when all
/// three are the same window of the same configuration; `None` when they are not.
fn apply_consumption(
    held: &TokenBucket,
    incoming: &TokenBucket,
    previous: &TokenBucket,
) -> Option<TokenBucket> {
    let same_window = |a: &TokenBucket, b: &TokenBucket| {
        a.created_at == b.created_at && a.limit == b.limit && a.duration == b.duration
    };
    if !same_window(held, incoming) || !same_window(previous, incoming) {
        return None;
    }
    let consumed = previous.remaining.saturating_sub(incoming.remaining).max(0);
    let mut merged = *held;
    merged.remaining = held.remaining.saturating_sub(consumed).max(0);
    if incoming.status == Status::OverLimit {
        merged.status = Status::OverLimit;
    }
    merged.expire_at = held.expire_at.max(incoming.expire_at);
    Some(merged)
}

/// Two leaky buckets: the fuller one, leaking from the later time.
pub fn merge_leaky(held: &LeakyBucket, incoming: &LeakyBucket) -> LeakyBucket {
    let newer = if incoming.updated_at >= held.updated_at {
        incoming
    } else {
        held
    };
    let remaining = min_tokens(held.remaining, incoming.remaining);
    LeakyBucket {
        limit: newer.limit,
        duration: newer.duration,
        // Never more tokens than the bucket holds.
        remaining: remaining.min(newer.burst as f64).max(0.0),
        updated_at: held.updated_at.max(incoming.updated_at),
        burst: newer.burst,
        expire_at: held.expire_at.max(incoming.expire_at),
    }
}

/// The smaller token count; a NaN (never produced by the algorithms) counts as empty.
fn min_tokens(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => a.min(b),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn token(remaining: i64, created_at: i64) -> TokenBucket {
        TokenBucket {
            status: Status::UnderLimit,
            limit: 10,
            duration: 60_000,
            remaining,
            created_at,
            expire_at: created_at + 60_000,
        }
    }

    fn leaky(remaining: f64, updated_at: i64) -> LeakyBucket {
        LeakyBucket {
            limit: 10,
            duration: 10_000,
            remaining,
            updated_at,
            burst: 10,
            expire_at: updated_at + 10_000,
        }
    }

    #[test]
    fn nothing_held_takes_the_incoming_bucket() {
        let incoming = Bucket::Token(token(3, NOW));
        assert_eq!(merge(None, &incoming, None, NOW), Some(incoming));
    }

    #[test]
    fn an_expired_incoming_bucket_changes_nothing() {
        let incoming = Bucket::Token(token(3, NOW - 70_000));
        let held = Bucket::Token(token(9, NOW));
        assert_eq!(merge(Some(&held), &incoming, None, NOW), None);
        assert_eq!(merge(None, &incoming, None, NOW), None);
    }

    #[test]
    fn an_expired_held_bucket_is_replaced() {
        let held = Bucket::Token(token(0, NOW - 70_000));
        let incoming = Bucket::Token(token(8, NOW));
        assert_eq!(merge(Some(&held), &incoming, None, NOW), Some(incoming));
    }

    #[test]
    fn token_same_window_keeps_the_fewer_remaining() {
        let held = Bucket::Token(token(7, NOW));
        let incoming = Bucket::Token(token(2, NOW));
        assert_eq!(merge(Some(&held), &incoming, None, NOW), Some(incoming));
        assert_eq!(merge(Some(&incoming), &held, None, NOW), Some(incoming));
    }

    #[test]
    fn token_different_windows_take_fewer_tokens_and_the_later_reset() {
        let older = token(1, NOW - 1_000);
        let newer = token(9, NOW);
        let Some(Bucket::Token(merged)) = merge(
            Some(&Bucket::Token(older)),
            &Bucket::Token(newer),
            None,
            NOW,
        ) else {
            panic!("a token bucket");
        };
        assert_eq!(merged.remaining, 1);
        assert_eq!(merged.expire_at, newer.expire_at);
        assert_eq!(merged.created_at, newer.created_at);
    }

    #[test]
    fn token_over_limit_is_kept() {
        let mut over = token(0, NOW);
        over.status = Status::OverLimit;
        let Some(Bucket::Token(merged)) = merge(
            Some(&Bucket::Token(token(4, NOW))),
            &Bucket::Token(over),
            None,
            NOW,
        ) else {
            panic!("a token bucket");
        };
        assert_eq!(merged.status, Status::OverLimit);
        assert_eq!(merged.remaining, 0);
    }

    #[test]
    fn token_different_limit_keeps_one_bucket_whole() {
        let held = token(4, NOW);
        let mut incoming = token(6, NOW - 5);
        incoming.limit = 100;
        let merged = merge_token(&held, &incoming);
        assert_eq!(merged, held);
        let merged = merge_token(&incoming, &held);
        assert_eq!(merged, held);
    }

    /// What a receiver holding `held` tokens keeps after a resend of a bucket first delivered
    /// with `previous` and now holding `incoming` (all in the same window).
    fn remaining_after_resend(previous: i64, incoming: i64, held: i64) -> i64 {
        let [previous, incoming, held] =
            [previous, incoming, held].map(|n| Bucket::Token(token(n, NOW)));
        let Some(Bucket::Token(merged)) = merge(Some(&held), &incoming, Some(&previous), NOW)
        else {
            panic!("a token bucket");
        };
        merged.remaining
    }

    #[test]
    fn a_resend_subtracts_what_the_sender_consumed_since() {
        // The receiver got 6 remaining and has since taken 2 itself (4 left); the sender took 3
        // more in flight (6 -> 3). Both count: 4 - 3 = 1.
        assert_eq!(remaining_after_resend(6, 3, 4), 1);
        // A plain merge would have forgotten the receiver's own two hits.
        assert_eq!(merge_token(&token(4, NOW), &token(3, NOW)).remaining, 3);
    }

    #[test]
    fn a_resend_never_goes_below_zero() {
        assert_eq!(remaining_after_resend(6, 0, 2), 0);
    }

    #[test]
    fn a_resend_across_windows_falls_back_to_the_plain_merge() {
        let previous = Bucket::Token(token(6, NOW - 100));
        let incoming = Bucket::Token(token(5, NOW));
        let held = Bucket::Token(token(8, NOW));
        let Some(Bucket::Token(merged)) = merge(Some(&held), &incoming, Some(&previous), NOW)
        else {
            panic!("a token bucket");
        };
        assert_eq!(merged.remaining, 5);
    }

    #[test]
    fn leaky_keeps_the_fuller_bucket_leaking_from_the_later_time() {
        let held = leaky(2.5, NOW - 500);
        let incoming = leaky(6.0, NOW);
        let merged = merge_leaky(&held, &incoming);
        assert_eq!(merged.remaining, 2.5);
        assert_eq!(merged.updated_at, NOW);
        assert_eq!(merged.expire_at, NOW + 10_000);
        assert_eq!(merge_leaky(&incoming, &held), merged);
    }

    #[test]
    fn leaky_never_exceeds_the_newer_burst_and_nan_is_empty() {
        let mut held = leaky(9.0, NOW - 1);
        held.burst = 20;
        let mut incoming = leaky(9.5, NOW);
        incoming.burst = 5;
        assert_eq!(merge_leaky(&held, &incoming).remaining, 5.0);
        let nan = leaky(f64::NAN, NOW);
        assert_eq!(merge_leaky(&nan, &leaky(3.0, NOW)).remaining, 0.0);
    }

    #[test]
    fn different_algorithms_take_the_incoming_bucket() {
        let held = Bucket::Token(token(1, NOW));
        let incoming = Bucket::Leaky(leaky(7.0, NOW));
        assert_eq!(merge(Some(&held), &incoming, None, NOW), Some(incoming));
    }

    #[test]
    fn the_merge_never_grants_more_than_either_side() {
        for held in 0..=10 {
            for incoming in 0..=10 {
                for offset in [-2_000, 0, 2_000] {
                    let a = token(held, NOW + offset);
                    let b = token(incoming, NOW);
                    let merged = merge_token(&a, &b);
                    assert!(merged.remaining <= a.remaining.min(b.remaining));
                    assert!(merged.expire_at >= a.expire_at.max(b.expire_at));
                }
            }
        }
    }
}
