//! The state of one stored limit, read without spending anything.
//!
//! A peek reads the bucket from the owner's store and projects it to the node's clock: a token
//! bucket is exact as stored (it refills all at once when its window ends); a leaky bucket's leak
//! since its last update is added, the way the next request would see it. Nothing is written back.

use crate::algorithms::{Bucket, Status};

use super::proto::PeekLimitResp;

/// `PeekLimitResp.algorithm` of a token bucket.
pub const TOKEN_BUCKET: &str = "TOKEN_BUCKET";
/// `PeekLimitResp.algorithm` of a leaky bucket.
pub const LEAKY_BUCKET: &str = "LEAKY_BUCKET";

/// The peek answer for `bucket` (or for no live bucket) at `now_ms`.
pub fn state_of(bucket: Option<&Bucket>, now_ms: i64) -> PeekLimitResp {
    let Some(bucket) = bucket else {
        return PeekLimitResp {
            found: false,
            now: now_ms,
            ..PeekLimitResp::default()
        };
    };
    match bucket {
        Bucket::Token(token) => PeekLimitResp {
            found: true,
            algorithm: TOKEN_BUCKET.into(),
            status: status_name(token.status).into(),
            limit: token.limit,
            duration: token.duration,
            burst: token.limit,
            remaining: token.remaining,
            reset_time: token.expire_at,
            expire_at: token.expire_at,
            now: now_ms,
            tokens: token.remaining as f64,
        },
        Bucket::Leaky(leaky) => {
            let burst = if leaky.burst > 0 {
                leaky.burst
            } else {
                leaky.limit
            };
            // Milliseconds per token; a bucket without a usable rate refills at once.
            let rate = leaky.duration as f64 / leaky.limit as f64;
            let rate = (rate.is_finite() && rate > 0.0).then_some(rate);
            let elapsed = now_ms.saturating_sub(leaky.updated_at).max(0) as f64;
            let tokens = match rate {
                Some(rate) => (leaky.remaining + elapsed / rate).min(burst as f64),
                None => burst as f64,
            };
            let missing = (burst as f64 - tokens).max(0.0);
            let full_in = rate.map_or(0.0, |rate| (missing * rate).ceil());
            let remaining = tokens.max(0.0) as i64;
            let status = if remaining < 1 {
                Status::OverLimit
            } else {
                Status::UnderLimit
            };
            PeekLimitResp {
                found: true,
                algorithm: LEAKY_BUCKET.into(),
                status: status_name(status).into(),
                limit: leaky.limit,
                duration: leaky.duration,
                burst,
                remaining,
                reset_time: now_ms.saturating_add(full_in as i64),
                expire_at: leaky.expire_at,
                now: now_ms,
                tokens: tokens.max(0.0),
            }
        }
    }
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::UnderLimit => "UNDER_LIMIT",
        Status::OverLimit => "OVER_LIMIT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::LeakyBucket;

    #[test]
    fn no_bucket_is_not_found() {
        let state = state_of(None, 5);
        assert!(!state.found);
        assert_eq!(state.now, 5);
    }

    #[test]
    fn a_token_bucket_is_reported_as_stored() {
        let bucket = crate::algorithms::test_support::over_limit_token_bucket();
        let state = state_of(Some(&bucket), 31_000);
        assert_eq!(state.algorithm, TOKEN_BUCKET);
        assert_eq!(state.status, "OVER_LIMIT");
        assert_eq!((state.limit, state.remaining), (10, 0));
        assert_eq!(state.reset_time, 61_000);
    }

    #[test]
    fn a_leaky_bucket_is_projected_to_now() {
        // 10 per 10 s: one token a second; 2 left at t=0.
        let leaky = LeakyBucket {
            limit: 10,
            duration: 10_000,
            remaining: 2.0,
            updated_at: 0,
            burst: 10,
            expire_at: 10_000,
        };
        let bucket = Bucket::Leaky(leaky);
        let state = state_of(Some(&bucket), 3_500);
        assert_eq!(state.remaining, 5);
        assert_eq!(state.tokens, 5.5);
        assert_eq!(state.status, "UNDER_LIMIT");
        // 5.5 tokens held, 4.5 missing: full 4.5 s later.
        assert_eq!(state.reset_time, 8_000);
        let full = state_of(Some(&bucket), 60_000);
        assert_eq!((full.remaining, full.reset_time), (10, 60_000));
        let empty = Bucket::Leaky(LeakyBucket {
            remaining: 0.0,
            ..leaky
        });
        assert_eq!(state_of(Some(&empty), 500).status, "OVER_LIMIT");
    }
}
