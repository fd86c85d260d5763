//! A continuously refilling token bucket ("`rate` tokens per second, at most `burst` at once"),
//! expressed exactly as a Gubernator `LEAKY_BUCKET` limit, and the client-facing numbers
//! (`Retry-After`, `RateLimit-*`) computed from the cluster's answer.
//!
//! The reverse proxy (`RATE_LIMIT_RPS` and `BURST`) and `POST /allow` (`LIMIT/DURATION[/BURST]` per
//! resource) both describe limits this way, the way golang.org/x/time/rate and most token-bucket
//! limiters do. Gubernator's `TOKEN_BUCKET` is a fixed window, so the match is its leaky bucket,
//! which refills one token every `duration / limit` ms and holds at most `burst`.
//!
//! # The mapping
//!
//! The rate is kept as an exact fraction `tokens / per_ms` in lowest terms (a decimal RPS has at
//! most three decimals). The leaky bucket is then `limit = k·tokens`, `duration = k·per_ms` ms,
//! `burst = BURST`, with `k` the smallest integer that makes `limit ≥ burst`:
//!
//! - `limit / duration` is the rate exactly, whatever `k` is;
//! - the cluster forgets a bucket `duration` ms after its last hit. With `limit ≥ burst`, an empty
//!   bucket has refilled completely by then, so forgetting it (and starting again from a full
//!   bucket) changes no answer. A smaller `k` would hand out a fresh burst too early.
//!
//! Example: 10 RPS with a burst of 20 is `limit = 20, duration = 2000 ms, burst = 20`.
//!
//! The cluster answers whole tokens, and the fraction of a token that has refilled is not on the
//! wire, so the waits computed here assume none has: they are never early, and late by less than one
//! token's interval.

/// A refill rate as the exact fraction `tokens / per_ms` (tokens per millisecond), in lowest terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillRate {
    tokens: u64,
    per_ms: u64,
}

/// Why a rate or bucket is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefillError {
    /// The rate is zero, negative, not a number, or has more than three decimals.
    #[error(
        "the rate must be a positive number of tokens per second with at most 3 decimals, got {0}"
    )]
    Rate(String),
    /// The burst is below 1.
    #[error("the burst must be at least 1, got {0}")]
    Burst(i64),
    /// The numbers do not fit a Gubernator limit.
    #[error("the rate and burst are too large to express as a rate limit")]
    Overflow,
}

impl RefillRate {
    /// `rps` tokens per second; at most three decimals (`0.5`, `2.125`, `100`).
    pub fn per_second(rps: f64) -> Result<Self, RefillError> {
        let millis = rps * 1000.0;
        let rounded = millis.round();
        if !rps.is_finite()
            || rps <= 0.0
            || !(1.0..=1e15).contains(&rounded)
            || (millis - rounded).abs() > 1e-6 * rounded.max(1.0)
        {
            return Err(RefillError::Rate(rps.to_string()));
        }
        // `rounded` tokens per 1000 s.
        Self::new(rounded as u64, 1_000_000)
    }

    /// `tokens` per `per_ms` milliseconds.
    pub fn new(tokens: u64, per_ms: u64) -> Result<Self, RefillError> {
        if tokens == 0 || per_ms == 0 {
            return Err(RefillError::Rate(format!("{tokens} per {per_ms} ms")));
        }
        let divisor = gcd(tokens, per_ms);
        Ok(Self {
            tokens: tokens / divisor,
            per_ms: per_ms / divisor,
        })
    }

    /// Milliseconds for `count` tokens to refill, rounded up.
    fn ms_for(self, count: i64) -> i64 {
        let Ok(count) = u64::try_from(count) else {
            return 0;
        };
        let product = u128::from(count) * u128::from(self.per_ms);
        let ms = product.div_ceil(u128::from(self.tokens));
        i64::try_from(ms).unwrap_or(i64::MAX)
    }
}

/// A token bucket: a refill rate and a capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    rate: RefillRate,
    burst: i64,
    limit: i64,
    duration_ms: i64,
}

impl TokenBucket {
    /// A bucket that refills at `rate` and holds at most `burst` tokens.
    pub fn new(rate: RefillRate, burst: i64) -> Result<Self, RefillError> {
        if burst < 1 {
            return Err(RefillError::Burst(burst));
        }
        let burst_u = burst.unsigned_abs();
        let k = burst_u.div_ceil(rate.tokens).max(1);
        let limit = k.checked_mul(rate.tokens).ok_or(RefillError::Overflow)?;
        let duration = k.checked_mul(rate.per_ms).ok_or(RefillError::Overflow)?;
        let limit = i64::try_from(limit).map_err(|_| RefillError::Overflow)?;
        let duration_ms = i64::try_from(duration).map_err(|_| RefillError::Overflow)?;
        Ok(Self {
            rate,
            burst,
            limit,
            duration_ms,
        })
    }

    /// The capacity (what `RateLimit-Limit` reports).
    pub fn burst(&self) -> i64 {
        self.burst
    }

    /// The leaky bucket's `limit` (see the module docs).
    pub fn limit(&self) -> i64 {
        self.limit
    }

    /// The leaky bucket's `duration` in milliseconds (see the module docs).
    pub fn duration_ms(&self) -> i64 {
        self.duration_ms
    }

    /// The Gubernator item that takes `hits` tokens of `name`/`unique_key` from this bucket.
    pub fn request(
        &self,
        name: String,
        unique_key: String,
        hits: i64,
    ) -> crate::proto::RateLimitReq {
        crate::proto::RateLimitReq {
            name,
            unique_key,
            hits,
            limit: self.limit,
            duration: self.duration_ms,
            algorithm: crate::proto::Algorithm::LeakyBucket as i32,
            burst: self.burst,
            ..Default::default()
        }
    }

    /// Reads the cluster's answer to a request of `cost` tokens.
    pub fn outcome(&self, allowed: bool, remaining: i64, cost: i64) -> Outcome {
        let remaining = remaining.clamp(0, self.burst);
        Outcome {
            allowed,
            limit: self.burst,
            remaining,
            retry_after_ms: if allowed {
                0
            } else {
                self.rate.ms_for(cost.saturating_sub(remaining).max(1))
            },
            reset_after_ms: self.rate.ms_for(self.burst - remaining),
        }
    }
}

/// One decision as a client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the tokens were taken.
    pub allowed: bool,
    /// The bucket's capacity.
    pub limit: i64,
    /// Whole tokens left.
    pub remaining: i64,
    /// When denied, milliseconds until the cost is available (never early); 0 when allowed.
    pub retry_after_ms: i64,
    /// Milliseconds until the bucket is full again (never early).
    pub reset_after_ms: i64,
}

impl Outcome {
    /// `Retry-After`: whole seconds, rounded up (at least 1 when denied).
    pub fn retry_after_secs(&self) -> i64 {
        ceil_secs(self.retry_after_ms)
    }

    /// `RateLimit-Reset`: whole seconds until the bucket is full, rounded up.
    pub fn reset_secs(&self) -> i64 {
        ceil_secs(self.reset_after_ms)
    }
}

/// Milliseconds as whole seconds, rounded up.
pub fn ceil_secs(ms: i64) -> i64 {
    if ms <= 0 { 0 } else { (ms + 999) / 1000 }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::{Algorithm, Behavior, LimitDuration, RateLimitRequest, Status};
    use crate::algorithms::{Bucket, Next, evaluate};

    fn bucket(rps: f64, burst: i64) -> TokenBucket {
        TokenBucket::new(RefillRate::per_second(rps).unwrap(), burst).unwrap()
    }

    #[test]
    fn rates_are_exact_fractions() {
        assert_eq!(
            RefillRate::per_second(10.0).unwrap(),
            RefillRate {
                tokens: 1,
                per_ms: 100
            }
        );
        assert_eq!(
            RefillRate::per_second(0.5).unwrap(),
            RefillRate {
                tokens: 1,
                per_ms: 2000
            }
        );
        assert_eq!(
            RefillRate::per_second(2.125).unwrap(),
            RefillRate {
                tokens: 17,
                per_ms: 8000
            }
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.0001, 1.2345] {
            assert!(RefillRate::per_second(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_leaky_bucket_holds_the_burst_for_its_whole_refill() {
        let b = bucket(10.0, 20);
        assert_eq!((b.limit(), b.duration_ms(), b.burst()), (20, 2000, 20));
        let b = bucket(3.0, 1);
        assert_eq!((b.limit(), b.duration_ms()), (3, 1000));
        let b = bucket(0.5, 5);
        assert_eq!((b.limit(), b.duration_ms()), (5, 10_000));
        assert!(TokenBucket::new(RefillRate::per_second(1.0).unwrap(), 0).is_err());
        assert_eq!(
            TokenBucket::new(RefillRate::new(u64::MAX, 2).unwrap(), 5),
            Err(RefillError::Overflow)
        );
    }

    /// Drives the real leaky-bucket algorithm with the mapped parameters: a burst, then exactly the
    /// rate, and a full bucket again after a long idle time, never more.
    #[test]
    fn the_mapping_admits_burst_then_rate() {
        let b = bucket(10.0, 5);
        let t0 = 1_700_000_000_000;
        let mut stored: Option<Bucket> = None;
        let mut hit = |at: i64| {
            let request = RateLimitRequest {
                hits: 1,
                limit: b.limit(),
                duration: LimitDuration::Millis(b.duration_ms()),
                algorithm: Algorithm::LeakyBucket,
                behavior: Behavior::default(),
                burst: b.burst(),
                created_at: at,
            };
            let live = stored.filter(|bucket| bucket.expire_at() > at);
            let evaluation = evaluate(live.as_ref(), &request, at);
            if let Next::Put(bucket) = evaluation.next {
                stored = Some(bucket);
            }
            evaluation.decision
        };
        let admitted = (0..8)
            .filter(|_| hit(t0).status == Status::UnderLimit)
            .count();
        assert_eq!(admitted, 5);
        // One token per 100 ms afterwards.
        assert_eq!(hit(t0 + 99).status, Status::OverLimit);
        assert_eq!(hit(t0 + 100).status, Status::UnderLimit);
        assert_eq!(hit(t0 + 150).status, Status::OverLimit);
        // Long idle: full again (5), not more.
        let later = t0 + 60_000;
        let admitted = (0..8)
            .filter(|_| hit(later).status == Status::UnderLimit)
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn waits_are_rounded_up() {
        let b = bucket(10.0, 20);
        let denied = b.outcome(false, 0, 1);
        assert_eq!(denied.retry_after_ms, 100);
        assert_eq!(denied.retry_after_secs(), 1);
        assert_eq!(denied.reset_after_ms, 2000);
        assert_eq!(denied.reset_secs(), 2);
        let allowed = b.outcome(true, 19, 1);
        assert_eq!((allowed.retry_after_ms, allowed.reset_after_ms), (0, 100));
        let slow = bucket(0.25, 1).outcome(false, 0, 1);
        assert_eq!(slow.retry_after_secs(), 4);
        // Needing 3 more tokens at 3 per second: 1000 ms.
        let b = TokenBucket::new(RefillRate::new(3, 1000).unwrap(), 10).unwrap();
        assert_eq!(b.outcome(false, 2, 5).retry_after_ms, 1000);
        assert_eq!(b.outcome(false, 0, 1).retry_after_ms, 334);
        assert_eq!(ceil_secs(0), 0);
        assert_eq!(ceil_secs(1001), 2);
    }
}
