//! What a bucket from outside the store (a peer's `Transfer`, a snapshot file) must look like
//! before it may be merged.
//!
//! Merging never grants more than either side would, but it trusts the incoming bucket's fields:
//! an `expire_at` ten years out would keep an empty bucket empty for ten years, a `remaining` above
//! the limit would grant more than the limit. Every field is checked here; a bucket that fails is
//! rejected (the receiver skips it and counts it), never clamped: a bucket no algorithm could have
//! produced says nothing trustworthy about the key. Pure, so every rule is unit-tested.

use crate::algorithms::{Bucket, LeakyBucket, TokenBucket};
use crate::request::{InputLimits, LimitKey};

/// How far another node's clock may be ahead of this one, in ms.
pub const CLOCK_SKEW_MS: i64 = 1_000;

/// The longest calendar interval of each `DURATION_IS_GREGORIAN` code (minute, hour, day, week,
/// month, year), in ms: a bucket whose stored duration is one of these codes may live that long.
const CALENDAR_MS: [i64; 6] = [
    60_000,
    3_600_000,
    86_400_000,
    7 * 86_400_000,
    31 * 86_400_000,
    366 * 86_400_000,
];

/// Why a bucket was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBucket {
    /// No state, or no algorithm variant set.
    #[error("the bucket has no state")]
    MissingState,
    /// `name` or `unique_key` is empty or longer than `GUBER_MAX_KEY_LENGTH`.
    #[error("name or unique_key is empty or longer than GUBER_MAX_KEY_LENGTH")]
    KeyLength,
    /// A negative limit, duration or burst, or a remaining count outside `0..=capacity`.
    #[error("limit, duration, burst or remaining is out of range")]
    OutOfRange,
    /// The bucket was created or updated later than this node's clock allows.
    #[error("the bucket starts in the future")]
    FromTheFuture,
    /// `expire_at` is later than the bucket's window allows.
    #[error("the bucket expires after its window ends")]
    OutlivesWindow,
}

/// The longest a bucket with the stored `duration` may live: the duration itself, or for a value
/// that is also a calendar code, that interval's longest length.
fn longest_window_ms(duration: i64) -> i64 {
    let calendar = usize::try_from(duration)
        .ok()
        .and_then(|code| CALENDAR_MS.get(code))
        .copied()
        .unwrap_or(0);
    duration.max(calendar)
}

/// Checks that `key` is one validation would accept.
pub fn check_key(key: &LimitKey, limits: InputLimits) -> Result<(), InvalidBucket> {
    let fits = |part: &str| !part.is_empty() && part.len() <= limits.max_key_bytes;
    if fits(&key.name) && fits(&key.unique_key) {
        Ok(())
    } else {
        Err(InvalidBucket::KeyLength)
    }
}

/// Checks that `bucket` is one the algorithms could have produced by this node's time `now_ms`.
pub fn check_bucket(bucket: &Bucket, now_ms: i64) -> Result<(), InvalidBucket> {
    match bucket {
        Bucket::Token(token) => check_token(token, now_ms),
        Bucket::Leaky(leaky) => check_leaky(leaky, now_ms),
    }
}

/// [`check_key`] and [`check_bucket`] of one incoming entry, and of its `previous` version.
pub fn check(
    key: &LimitKey,
    bucket: &Bucket,
    previous: Option<&Bucket>,
    limits: InputLimits,
    now_ms: i64,
) -> Result<(), InvalidBucket> {
    check_key(key, limits)?;
    check_bucket(bucket, now_ms)?;
    previous.map_or(Ok(()), |previous| check_bucket(previous, now_ms))
}

fn check_token(token: &TokenBucket, now_ms: i64) -> Result<(), InvalidBucket> {
    if token.limit < 0 || token.duration < 0 || !(0..=token.limit).contains(&token.remaining) {
        return Err(InvalidBucket::OutOfRange);
    }
    if token.created_at > now_ms.saturating_add(CLOCK_SKEW_MS) {
        return Err(InvalidBucket::FromTheFuture);
    }
    let latest_end = token
        .created_at
        .saturating_add(longest_window_ms(token.duration))
        .saturating_add(CLOCK_SKEW_MS);
    if token.expire_at > latest_end {
        return Err(InvalidBucket::OutlivesWindow);
    }
    Ok(())
}

fn check_leaky(leaky: &LeakyBucket, now_ms: i64) -> Result<(), InvalidBucket> {
    let capacity = leaky.burst.max(leaky.limit) as f64;
    if leaky.limit < 0
        || leaky.duration < 0
        || leaky.burst < 0
        || !leaky.remaining.is_finite()
        || leaky.remaining < 0.0
        || leaky.remaining > capacity
    {
        return Err(InvalidBucket::OutOfRange);
    }
    if leaky.updated_at > now_ms.saturating_add(CLOCK_SKEW_MS) {
        return Err(InvalidBucket::FromTheFuture);
    }
    // A hit keeps a leaky bucket alive for one duration from the hit (at most now), while
    // `updated_at` only moves when a whole token leaked, so the bound is taken from now.
    let latest_end = now_ms
        .saturating_add(longest_window_ms(leaky.duration))
        .saturating_add(CLOCK_SKEW_MS);
    if leaky.expire_at > latest_end {
        return Err(InvalidBucket::OutlivesWindow);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::Status;

    const NOW: i64 = 1_700_000_000_000;

    fn token() -> TokenBucket {
        TokenBucket {
            status: Status::OverLimit,
            limit: 10,
            duration: 60_000,
            remaining: 0,
            created_at: NOW - 1_000,
            expire_at: NOW + 59_000,
        }
    }

    fn leaky() -> LeakyBucket {
        LeakyBucket {
            limit: 10,
            duration: 60_000,
            remaining: 2.5,
            updated_at: NOW - 30_000,
            burst: 20,
            expire_at: NOW + 60_000,
        }
    }

    #[test]
    fn buckets_the_algorithms_make_pass() {
        assert_eq!(check_bucket(&Bucket::Token(token()), NOW), Ok(()));
        assert_eq!(check_bucket(&Bucket::Leaky(leaky()), NOW), Ok(()));
        // A calendar year (code 5) may live a year.
        let yearly = TokenBucket {
            duration: 5,
            created_at: NOW,
            expire_at: NOW + 300 * 86_400_000,
            ..token()
        };
        assert_eq!(check_bucket(&Bucket::Token(yearly), NOW), Ok(()));
        // Another node's clock may be a little ahead.
        let ahead = TokenBucket {
            created_at: NOW + CLOCK_SKEW_MS,
            expire_at: NOW + CLOCK_SKEW_MS + 60_000,
            ..token()
        };
        assert_eq!(check_bucket(&Bucket::Token(ahead), NOW), Ok(()));
    }

    #[test]
    fn a_far_future_expiry_is_rejected() {
        let locked = TokenBucket {
            expire_at: NOW + 10 * 366 * 86_400_000,
            ..token()
        };
        assert_eq!(
            check_bucket(&Bucket::Token(locked), NOW),
            Err(InvalidBucket::OutlivesWindow)
        );
        let just_over = TokenBucket {
            expire_at: token().created_at + 60_000 + CLOCK_SKEW_MS + 1,
            ..token()
        };
        assert_eq!(
            check_bucket(&Bucket::Token(just_over), NOW),
            Err(InvalidBucket::OutlivesWindow)
        );
        let leaky_locked = LeakyBucket {
            expire_at: NOW + 60_000 + CLOCK_SKEW_MS + 1,
            ..leaky()
        };
        assert_eq!(
            check_bucket(&Bucket::Leaky(leaky_locked), NOW),
            Err(InvalidBucket::OutlivesWindow)
        );
    }

    #[test]
    fn buckets_from_the_future_are_rejected() {
        let future = TokenBucket {
            created_at: NOW + CLOCK_SKEW_MS + 1,
            expire_at: NOW + 2 * CLOCK_SKEW_MS,
            ..token()
        };
        assert_eq!(
            check_bucket(&Bucket::Token(future), NOW),
            Err(InvalidBucket::FromTheFuture)
        );
        let future = LeakyBucket {
            updated_at: NOW + CLOCK_SKEW_MS + 1,
            ..leaky()
        };
        assert_eq!(
            check_bucket(&Bucket::Leaky(future), NOW),
            Err(InvalidBucket::FromTheFuture)
        );
    }

    #[test]
    fn impossible_counts_are_rejected() {
        for bad in [
            TokenBucket {
                remaining: 11,
                ..token()
            },
            TokenBucket {
                remaining: -1,
                ..token()
            },
            TokenBucket {
                limit: -1,
                remaining: -1,
                ..token()
            },
            TokenBucket {
                duration: -1,
                ..token()
            },
        ]
        .map(Bucket::Token)
        .into_iter()
        .chain(
            [
                LeakyBucket {
                    remaining: f64::NAN,
                    ..leaky()
                },
                LeakyBucket {
                    remaining: f64::INFINITY,
                    ..leaky()
                },
                LeakyBucket {
                    remaining: 20.5,
                    ..leaky()
                },
                LeakyBucket {
                    remaining: -0.5,
                    ..leaky()
                },
                LeakyBucket {
                    burst: -1,
                    ..leaky()
                },
            ]
            .map(Bucket::Leaky),
        ) {
            assert_eq!(
                check_bucket(&bad, NOW),
                Err(InvalidBucket::OutOfRange),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_must_be_ones_validation_accepts_and_previous_is_checked_too() {
        let limits = InputLimits { max_key_bytes: 4 };
        let bucket = Bucket::Token(token());
        assert_eq!(
            check(&LimitKey::new("n", "abcd"), &bucket, None, limits, NOW),
            Ok(())
        );
        for key in [
            LimitKey::new("", "k"),
            LimitKey::new("n", ""),
            LimitKey::new("n", "abcde"),
            LimitKey::new("abcde", "k"),
        ] {
            assert_eq!(
                check(&key, &bucket, None, limits, NOW),
                Err(InvalidBucket::KeyLength)
            );
        }
        let bad_previous = Bucket::Token(TokenBucket {
            remaining: 99,
            ..token()
        });
        assert_eq!(
            check(
                &LimitKey::new("n", "k"),
                &bucket,
                Some(&bad_previous),
                limits,
                NOW
            ),
            Err(InvalidBucket::OutOfRange)
        );
    }
}
