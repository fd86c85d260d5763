//! Tokens with their fraction, as r8limiter answers them (`"tokens_left": 7.4`, `"retry_after":
//! 0.22`).
//!
//! A resource is a leaky bucket in the cluster, whose stored `remaining` keeps the fraction of a
//! token that has refilled, but Gubernator's wire answer carries whole tokens only. When the node
//! answering `/allow` owns the bucket it reads the stored bucket right after its decision and
//! reports the fraction; the numbers are used only when they agree with the decision (same whole
//! count), so a concurrent hit can never make an answer contradict itself. Otherwise (the owner is
//! another node) the answer is the whole count, and `retry_after` assumes no fraction has refilled
//! (never early). Values are kept in thousandths of a token and in milliseconds, so answers stay
//! exact integers through the idempotency records and the wire. Pure: no clock, no store.

use crate::algorithms::LeakyBucket;
use crate::refill::Outcome;

/// Tokens left (thousandths, rounded down) and the wait until `cost` is available (ms, rounded
/// up; 0 when allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Precise {
    /// Tokens left after the decision, in thousandths of a token (never over-reported).
    pub tokens_left_milli: i64,
    /// Milliseconds until `cost` tokens are available (0 when allowed; at least 1 when denied).
    pub retry_after_ms: i64,
}

impl Precise {
    /// The whole-token numbers of `outcome`, used when the stored bucket is not at hand.
    pub fn whole(outcome: &Outcome) -> Self {
        Self {
            tokens_left_milli: outcome.remaining.saturating_mul(1000),
            retry_after_ms: outcome.retry_after_ms,
        }
    }

    /// Tokens left as a JSON number.
    pub fn tokens_left(&self) -> f64 {
        self.tokens_left_milli as f64 / 1000.0
    }

    /// `retry_after` in seconds, as a JSON number.
    pub fn retry_after_secs(&self) -> f64 {
        self.retry_after_ms as f64 / 1000.0
    }
}

/// The precise numbers of a decision (`outcome`, of a request of `cost` made at `created_at`, epoch
/// ms), given the bucket the owner stores after it; the whole numbers when `stored` is absent or
/// disagrees with the decision.
pub fn precise(
    outcome: &Outcome,
    stored: Option<&LeakyBucket>,
    created_at: i64,
    cost: i64,
) -> Precise {
    let Some(bucket) = stored else {
        return Precise::whole(outcome);
    };
    let burst = if bucket.burst > 0 {
        bucket.burst
    } else {
        bucket.limit
    };
    if !bucket.remaining.is_finite() || burst < 1 {
        return Precise::whole(outcome);
    }
    let tokens = bucket.remaining.clamp(0.0, burst as f64);
    if tokens as i64 != outcome.remaining {
        // Another hit changed the bucket since this decision: its fraction is not ours to show.
        return Precise::whole(outcome);
    }
    let tokens_left_milli = (tokens * 1000.0).floor() as i64;
    if outcome.allowed {
        return Precise {
            tokens_left_milli,
            retry_after_ms: 0,
        };
    }
    // Milliseconds per token; the leak since `updated_at` that is not yet applied counts too.
    let rate = bucket.duration as f64 / bucket.limit as f64;
    if !(rate.is_finite() && rate > 0.0) {
        return Precise::whole(outcome);
    }
    let missing = (cost as f64 - tokens).max(0.0);
    let available_at = bucket.updated_at as f64 + (missing * rate).ceil();
    let wait = (available_at - created_at as f64).ceil();
    let retry_after_ms = if wait.is_finite() {
        (wait as i64).clamp(1, outcome.retry_after_ms.max(1))
    } else {
        outcome.retry_after_ms
    };
    Precise {
        tokens_left_milli,
        retry_after_ms,
    }
}

/// r8limiter's refill numbers for a bucket holding `tokens` of `burst`, refilling one token every
/// `ms_per_token`: (seconds until the next whole token, seconds until full), rounded up to the ms.
pub fn refill_eta(tokens: f64, burst: i64, ms_per_token: f64) -> (f64, f64) {
    if !(ms_per_token.is_finite() && ms_per_token > 0.0 && tokens.is_finite()) {
        return (0.0, 0.0);
    }
    let seconds = |missing: f64| (missing.max(0.0) * ms_per_token).ceil() / 1000.0;
    let next = if tokens >= 1.0 {
        0.0
    } else {
        seconds(1.0 - tokens)
    };
    (next, seconds(burst as f64 - tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 5 per minute: one token every 12 s.
    fn stored(remaining: f64, updated_at: i64) -> LeakyBucket {
        LeakyBucket {
            limit: 5,
            duration: 60_000,
            remaining,
            updated_at,
            burst: 5,
            expire_at: updated_at + 60_000,
        }
    }

    fn outcome(allowed: bool, remaining: i64, retry_after_ms: i64) -> Outcome {
        Outcome {
            allowed,
            limit: 5,
            remaining,
            retry_after_ms,
            reset_after_ms: 0,
        }
    }

    /// The precise answer to a call of `cost` at `now_ms`, denied with a whole-token wait of
    /// `retry_after_ms`, the bucket holding `held`.
    fn denied(retry_after_ms: i64, held: &LeakyBucket, now_ms: i64, cost: i64) -> Precise {
        precise(&outcome(false, 0, retry_after_ms), Some(held), now_ms, cost)
    }

    #[test]
    fn the_fraction_held_is_reported_and_only_the_missing_fraction_is_waited_for() {
        for (precise, (tokens_left_milli, retry_after_ms), (tokens_left, retry_after_secs)) in [
            // Allowed: the fraction held, rounded down.
            (
                precise(&outcome(true, 3, 0), Some(&stored(3.4567, 1_000)), 1_000, 1),
                (3456, 0),
                (3.456, 0.0),
            ),
            // Denied: 0.8 held at t=1000, 2 wanted: 1.2 tokens = 14.4 s after 1000, asked at 4000.
            (
                denied(24_000, &stored(0.8, 1_000), 4_000, 2),
                (800, 11_400),
                (0.8, 11.4),
            ),
        ] {
            assert_eq!(
                (precise.tokens_left_milli, precise.retry_after_ms),
                (tokens_left_milli, retry_after_ms)
            );
            assert_eq!(precise.tokens_left(), tokens_left);
            assert_eq!(precise.retry_after_secs(), retry_after_secs);
        }
    }

    #[test]
    fn the_precise_wait_is_never_longer_than_the_whole_token_wait_and_never_zero() {
        let later = denied(12_000, &stored(0.0, 50_000), 1_000, 1);
        assert_eq!(later.retry_after_ms, 12_000);
        let due = denied(12_000, &stored(0.5, 0), 60_000, 1);
        assert_eq!(due.retry_after_ms, 1);
    }

    #[test]
    fn a_bucket_that_disagrees_with_the_decision_is_not_used() {
        // Another hit took a token between the decision and the read.
        let precise = precise(&outcome(true, 4, 0), Some(&stored(3.5, 0)), 0, 1);
        assert_eq!(precise, Precise::whole(&outcome(true, 4, 0)));
        assert_eq!(precise.tokens_left(), 4.0);
        let unknown = super::precise(&outcome(false, 0, 7_000), None, 0, 1);
        assert_eq!(
            (unknown.tokens_left_milli, unknown.retry_after_ms),
            (0, 7_000)
        );
        let nan = super::precise(&outcome(true, 2, 0), Some(&stored(f64::NAN, 0)), 0, 1);
        assert_eq!(nan.tokens_left_milli, 2000);
    }

    #[test]
    fn refill_etas_match_r8limiter() {
        // 10 per second: 100 ms a token.
        assert_eq!(refill_eta(0.25, 10, 100.0), (0.075, 0.975));
        assert_eq!(refill_eta(3.0, 10, 100.0), (0.0, 0.7));
        assert_eq!(refill_eta(10.0, 10, 100.0), (0.0, 0.0));
        assert_eq!(refill_eta(1.0, 10, 0.0), (0.0, 0.0));
    }
}
