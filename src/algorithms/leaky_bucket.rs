//! Leaky bucket (reference §5): hits drain back out at `limit` per `duration`.
//!
//! The bucket holds at most `burst` tokens (the `limit` unless the request says otherwise) and
//! refills continuously at one token every `rate = duration / limit` milliseconds, so a client may
//! spend a burst at once and then gets a steady trickle. The refill is computed from the request's
//! `created_at` rather than the server clock, which makes answers deterministic for clients that
//! send it; only the cache expiry follows the server clock.
//!
//! Gubernator keeps the token count as a float so that time shorter than one token keeps
//! accumulating, and truncates it wherever it answers; the code below does the same and follows
//! the reference's numbered steps in order. All integer arithmetic saturates and every float to
//! integer conversion saturates (`as`), so no input can panic.

use super::{
    Behavior, Bucket, Decision, Evaluation, LeakyBucket, LimitDuration, Next, RateLimitRequest,
    Status,
};

/// Evaluates a leaky-bucket request against the live stored bucket, if any.
///
/// `stored` must be a bucket that has not expired at `now_ms` (the dispatcher
/// [`evaluate`](super::evaluate) filters expired ones); `None` creates a full bucket.
pub fn evaluate(
    stored: Option<&LeakyBucket>,
    request: &RateLimitRequest,
    now_ms: i64,
) -> Evaluation {
    // ringlimit fixes: a zero limit would make the leak rate divide by zero (Gubernator answers
    // nonsense). No hit can ever be admitted, so answer OVER_LIMIT with nothing remaining and leave
    // the store alone. Negative limits never pass validation and are treated the same way.
    if request.limit <= 0 {
        return Evaluation {
            decision: Decision {
                status: Status::OverLimit,
                limit: request.limit,
                remaining: 0,
                reset_time: 0,
            },
            next: Next::Unchanged,
        };
    }
    let shape = Shape::of(request, now_ms);
    match stored {
        None => new_entry(request, &shape),
        Some(bucket) => existing_entry(bucket, request, &shape),
    }
}

/// The bucket's shape as the request describes it, with the calendar resolved at the server clock.
struct Shape {
    /// Capacity: the request's burst, or its limit when the burst is 0.
    burst: i64,
    /// Milliseconds per token, or `None` when the bucket refills instantly (see [`Shape::of`]).
    rate: Option<f64>,
    /// `trunc(rate)`, the whole milliseconds per token used for `reset_time` (0 when instant).
    whole_rate: i64,
    /// How long after the request's `created_at` a hit keeps the bucket alive, in ms.
    ttl: i64,
}

impl Shape {
    /// Resolves the request's shape at server time `now_ms`; `request.limit` must be positive.
    ///
    /// For a calendar duration the rate uses the whole interval's length (1000 ms per token for
    /// 60 per minute) and the bucket lives for what is left of the interval, like Gubernator.
    /// **ringlimit fixes:** Gubernator's new-entry path divides the interval's *code* by the limit
    /// instead, and its month and year lengths mix nanoseconds with milliseconds.
    ///
    /// Validation rejects a leaky bucket with a zero duration, but should one arrive (or a
    /// negative one), its rate would be 0 or negative. Such a bucket is treated as refilling
    /// instantly: every evaluation finds it full, and `reset_time` is the request's `created_at`.
    fn of(request: &RateLimitRequest, now_ms: i64) -> Shape {
        let (period, ttl) = match request.duration {
            LimitDuration::Millis(ms) => (ms, ms),
            LimitDuration::Calendar(interval) => (
                interval.length_ms(now_ms),
                interval.end_of_interval(now_ms).saturating_sub(now_ms),
            ),
        };
        let rate = period as f64 / request.limit as f64;
        let rate = (rate.is_finite() && rate > 0.0).then_some(rate);
        Shape {
            burst: if request.burst == 0 {
                request.limit
            } else {
                request.burst
            },
            rate,
            whole_rate: rate.map_or(0, |rate| rate as i64),
            ttl,
        }
    }

    /// When a bucket with `remaining` whole tokens is full again: `created_at + (limit -
    /// remaining) * trunc(rate)`. With a burst above the limit this may lie in the past.
    fn reset_time(&self, created_at: i64, limit: i64, remaining: i64) -> i64 {
        created_at.saturating_add(
            limit
                .saturating_sub(remaining)
                .saturating_mul(self.whole_rate),
        )
    }
}

/// New entry: a full bucket of `burst` tokens, minus the hits if they fit.
fn new_entry(request: &RateLimitRequest, shape: &Shape) -> Evaluation {
    let created_at = request.created_at;
    let remaining = shape.burst.saturating_sub(request.hits);
    let mut bucket = LeakyBucket {
        limit: request.limit,
        duration: request.duration.wire_value(),
        remaining: remaining as f64,
        updated_at: created_at,
        burst: shape.burst,
        expire_at: created_at.saturating_add(shape.ttl),
    };
    let mut decision = Decision {
        status: Status::UnderLimit,
        limit: request.limit,
        remaining,
        reset_time: shape.reset_time(created_at, request.limit, remaining),
    };
    // More hits than the bucket holds: refuse them and drain the bucket.
    if request.hits > shape.burst {
        decision.status = Status::OverLimit;
        decision.remaining = 0;
        decision.reset_time = shape.reset_time(created_at, request.limit, 0);
        bucket.remaining = 0.0;
    }
    Evaluation {
        decision,
        next: Next::Put(Bucket::Leaky(bucket)),
    }
}

/// Existing entry: steps 1–12 of reference §5, in order.
fn existing_entry(stored: &LeakyBucket, request: &RateLimitRequest, shape: &Shape) -> Evaluation {
    let created_at = request.created_at;
    let mut bucket = *stored;
    // Defensive: a NaN count (never produced here) would make every comparison false.
    if bucket.remaining.is_nan() {
        bucket.remaining = 0.0;
    }

    // Step 1: RESET_REMAINING refills the bucket; the hits are still applied below.
    if request.behavior.contains(Behavior::RESET_REMAINING) {
        bucket.remaining = shape.burst as f64;
    }

    // Step 2: a larger burst than the tokens held refills the bucket to it.
    if bucket.burst != shape.burst {
        if shape.burst > bucket.remaining as i64 {
            bucket.remaining = shape.burst as f64;
        }
        bucket.burst = shape.burst;
    }

    // Step 3: the request's limit and duration (and so its rate) are now the bucket's.
    bucket.limit = request.limit;
    bucket.duration = request.duration.wire_value();

    // Step 4: hits (not queries) keep the bucket alive for another duration.
    if request.hits != 0 {
        bucket.expire_at = created_at.saturating_add(shape.ttl);
    }

    // Step 5: leak whole tokens back since the last leak.
    leak(&mut bucket, created_at, shape);

    // Step 6: never hold more than the burst.
    if bucket.remaining as i64 > bucket.burst {
        bucket.remaining = bucket.burst as f64;
    }

    // Step 7: the answer starts as a bucket with room.
    let whole = bucket.remaining as i64;
    let mut decision = Decision {
        status: Status::UnderLimit,
        limit: request.limit,
        remaining: whole,
        reset_time: shape.reset_time(created_at, request.limit, whole),
    };

    take_hits(&mut bucket, &mut decision, request, shape);

    let next = if bucket == *stored {
        Next::Unchanged
    } else {
        Next::Put(Bucket::Leaky(bucket))
    };
    Evaluation { decision, next }
}

/// Step 5: adds the tokens that leaked back between `updated_at` and `created_at`.
///
/// Only once at least one whole token has leaked is the leak applied and `updated_at` moved, so
/// elapsed time worth less than a token keeps accumulating. A `created_at` earlier than
/// `updated_at` gives a negative leak, which is never applied.
fn leak(bucket: &mut LeakyBucket, created_at: i64, shape: &Shape) {
    match shape.rate {
        Some(rate) => {
            let elapsed = created_at.saturating_sub(bucket.updated_at);
            let leaked = elapsed as f64 / rate;
            if leaked as i64 > 0 {
                bucket.remaining += leaked;
                bucket.updated_at = created_at;
            }
        }
        // A bucket without a usable rate refills instantly (see `Shape::of`).
        None => {
            bucket.remaining = bucket.burst as f64;
            bucket.updated_at = created_at;
        }
    }
}

/// Steps 8–12: takes `request.hits` from the bucket, comparing whole tokens.
fn take_hits(
    bucket: &mut LeakyBucket,
    decision: &mut Decision,
    request: &RateLimitRequest,
    shape: &Shape,
) {
    let hits = request.hits;
    let whole = bucket.remaining as i64;
    if whole == 0 && hits > 0 {
        // Step 8: the bucket is empty.
        decision.status = Status::OverLimit;
    } else if whole == hits {
        // Step 9: the hits take every whole token (a query of an empty bucket lands here too and
        // drops the fraction, like Gubernator).
        bucket.remaining = 0.0;
        decision.remaining = 0;
        decision.reset_time = shape.reset_time(request.created_at, request.limit, 0);
    } else if hits > whole {
        // Step 10: more hits than tokens; nothing is taken unless DRAIN_OVER_LIMIT empties it.
        decision.status = Status::OverLimit;
        if request.behavior.contains(Behavior::DRAIN_OVER_LIMIT) {
            bucket.remaining = 0.0;
            decision.remaining = 0;
        }
    } else if hits == 0 {
        // Step 11: a query answers without taking anything.
    } else {
        // Step 12: take the hits, keeping the fraction; answer the truncated count.
        bucket.remaining -= hits as f64;
        let whole = bucket.remaining as i64;
        decision.remaining = whole;
        decision.reset_time = shape.reset_time(request.created_at, request.limit, whole);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::{Algorithm, CalendarInterval, TokenBucket};

    const T0: i64 = 1_573_430_430_000; // 2019-11-11 00:00:30 UTC

    /// A leaky-bucket request at `T0`; limit 10 per 30 s gives 3000 ms per token.
    fn request(hits: i64, limit: i64, duration: i64) -> RateLimitRequest {
        RateLimitRequest {
            hits,
            limit,
            duration: LimitDuration::Millis(duration),
            algorithm: Algorithm::LeakyBucket,
            behavior: Behavior::default(),
            burst: 0,
            created_at: T0,
        }
    }

    /// The same request made `ms` after `T0`.
    fn at(mut request: RateLimitRequest, ms: i64) -> RateLimitRequest {
        request.created_at = T0 + ms;
        request
    }

    /// A stored bucket with limit 10, duration 30 s and burst 10, last leaked at `T0`.
    fn stored(remaining: f64) -> LeakyBucket {
        LeakyBucket {
            limit: 10,
            duration: 30_000,
            remaining,
            updated_at: T0,
            burst: 10,
            expire_at: T0 + 30_000,
        }
    }

    /// The leaky bucket that `next` stores.
    fn put(next: Next) -> LeakyBucket {
        match next {
            Next::Put(Bucket::Leaky(bucket)) => bucket,
            other => panic!("expected a leaky bucket to be stored, got {other:?}"),
        }
    }

    use crate::algorithms::test_support::{Key, answer};
    use Status::{OverLimit as O, UnderLimit as U};

    #[test]
    fn leaky_new_entry_takes_hits() {
        let evaluation = evaluate(None, &request(1, 10, 30_000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 9, T0 + 3000));
        assert_eq!(
            put(evaluation.next),
            LeakyBucket {
                limit: 10,
                duration: 30_000,
                remaining: 9.0,
                updated_at: T0,
                burst: 10,
                expire_at: T0 + 30_000,
            }
        );
    }

    #[test]
    fn leaky_new_entry_over_burst_drains() {
        let evaluation = evaluate(None, &request(11, 10, 30_000), T0);
        assert_eq!(evaluation.decision, answer(O, 10, 0, T0 + 30_000));
        assert_eq!(put(evaluation.next).remaining, 0.0);
    }

    #[test]
    fn leaky_new_entry_burst_above_limit() {
        let mut req = request(1, 10, 30_000);
        req.burst = 20;
        let evaluation = evaluate(None, &req, T0);
        // Full again "27 s ago": reset_time lies in the past when burst > limit.
        assert_eq!(evaluation.decision, answer(U, 10, 19, T0 - 27_000));
        assert_eq!(put(evaluation.next).burst, 20);
    }

    #[test]
    fn leaky_new_entry_calendar_minute() {
        let mut req = request(1, 60, 0);
        req.duration = LimitDuration::Calendar(CalendarInterval::Minute);
        req.created_at = T0 - 5000;
        let evaluation = evaluate(None, &req, T0);
        // 1000 ms per token; the bucket lives for what is left of the server's minute.
        assert_eq!(evaluation.decision, answer(U, 60, 59, T0 - 4000));
        let bucket = put(evaluation.next);
        assert_eq!(bucket.duration, 0);
        assert_eq!(bucket.expire_at, T0 - 5000 + 29_999);
    }

    #[test]
    fn leaky_new_entry_sub_millisecond_rate() {
        // 0.5 ms per token truncates to 0: reset_time is created_at.
        let evaluation = evaluate(None, &request(1, 2000, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 2000, 1999, T0));
    }

    #[test]
    fn leaky_zero_limit_is_over_limit_without_dividing() {
        let evaluation = evaluate(None, &request(0, 0, 30_000), T0);
        assert_eq!(evaluation.decision, answer(O, 0, 0, 0));
        assert_eq!(evaluation.next, Next::Unchanged);
        let evaluation = evaluate(Some(&stored(5.0)), &request(1, 0, 30_000), T0);
        assert_eq!(evaluation.decision, answer(O, 0, 0, 0));
        assert_eq!(evaluation.next, Next::Unchanged);
    }

    #[test]
    fn leaky_zero_duration_refills_instantly() {
        let evaluation = evaluate(Some(&stored(0.0)), &at(request(3, 10, 0), -50), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 7, T0 - 50));
        let evaluation = evaluate(None, &request(3, 10, 0), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 7, T0));
    }

    #[test]
    fn leaky_step1_reset_remaining_refills_then_takes_hits() {
        let mut req = request(2, 10, 30_000);
        req.behavior = Behavior::RESET_REMAINING;
        let evaluation = evaluate(Some(&stored(1.0)), &req, T0);
        assert_eq!(evaluation.decision, answer(U, 10, 8, T0 + 6000));
        assert_eq!(put(evaluation.next).remaining, 8.0);
    }

    #[test]
    fn leaky_step2_burst_increase_refills() {
        let mut req = request(0, 10, 30_000);
        req.burst = 15;
        let evaluation = evaluate(Some(&stored(3.0)), &req, T0);
        assert_eq!(evaluation.decision, answer(U, 10, 15, T0 - 15_000));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.burst, bucket.remaining), (15, 15.0));
    }

    #[test]
    fn leaky_step2_burst_change_refills_when_above_tokens() {
        // Any new burst above the whole tokens held refills, even when the burst shrinks.
        let mut req = request(0, 10, 30_000);
        req.burst = 4;
        let evaluation = evaluate(Some(&stored(3.0)), &req, T0);
        assert_eq!(evaluation.decision.remaining, 4);
        let bucket = put(evaluation.next);
        assert_eq!((bucket.burst, bucket.remaining), (4, 4.0));
    }

    #[test]
    fn leaky_step2_burst_decrease_keeps_tokens_then_step6_clamps() {
        let mut req = request(0, 10, 30_000);
        req.burst = 4;
        let evaluation = evaluate(Some(&stored(9.0)), &req, T0);
        assert_eq!(evaluation.decision.remaining, 4);
        assert_eq!(put(evaluation.next).remaining, 4.0);
    }

    #[test]
    fn leaky_step3_limit_change_changes_rate() {
        // Limit 20 per 30 s: 1500 ms per token; 3000 ms elapsed leak two tokens.
        let mut req = at(request(0, 20, 30_000), 3000);
        req.burst = 10;
        let evaluation = evaluate(Some(&stored(5.0)), &req, T0);
        assert_eq!(evaluation.decision, answer(U, 20, 7, T0 + 3000 + 13 * 1500));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.limit, bucket.remaining), (20, 7.0));
    }

    #[test]
    fn leaky_step3_stores_duration() {
        let evaluation = evaluate(Some(&stored(5.0)), &request(0, 10, 60_000), T0);
        assert_eq!(put(evaluation.next).duration, 60_000);
    }

    #[test]
    fn leaky_step4_only_hits_extend_expiry() {
        let query = evaluate(Some(&stored(5.0)), &at(request(0, 10, 30_000), 1000), T0);
        assert_eq!(query.next, Next::Unchanged);
        let hit = evaluate(Some(&stored(5.0)), &at(request(1, 10, 30_000), 1000), T0);
        assert_eq!(put(hit.next).expire_at, T0 + 31_000);
        let give_back = evaluate(Some(&stored(5.0)), &at(request(-1, 10, 30_000), 1000), T0);
        assert_eq!(put(give_back.next).expire_at, T0 + 31_000);
    }

    #[test]
    fn leaky_step5_whole_tokens_leak() {
        // 4500 ms at 3000 ms per token: 1.5 tokens, fraction kept.
        let evaluation = evaluate(Some(&stored(5.0)), &at(request(0, 10, 30_000), 4500), T0);
        assert_eq!(evaluation.decision.remaining, 6);
        let bucket = put(evaluation.next);
        assert_eq!((bucket.remaining, bucket.updated_at), (6.5, T0 + 4500));
    }

    #[test]
    fn leaky_step5_fractional_leak_accumulates() {
        let mut key = Key(Some(Bucket::Leaky(stored(5.0))));
        let req = request(1, 10, 30_000);
        // Half a token's time: no leak applied, updated_at stays, so the time is not lost.
        assert_eq!(key.hit(&at(req, 1500), T0).remaining, 4);
        assert!(matches!(key.0, Some(Bucket::Leaky(b)) if b.updated_at == T0));
        assert_eq!(key.hit(&at(req, 2999), T0).remaining, 3);
        // A full token's time since T0, not since the last request.
        assert_eq!(key.hit(&at(req, 3000), T0).remaining, 3);
        assert!(matches!(key.0, Some(Bucket::Leaky(b)) if b.updated_at == T0 + 3000));
    }

    #[test]
    fn leaky_step5_negative_elapsed_adds_nothing() {
        let evaluation = evaluate(Some(&stored(5.0)), &at(request(0, 10, 30_000), -9000), T0);
        assert_eq!(evaluation.decision.remaining, 5);
        assert_eq!(evaluation.next, Next::Unchanged);
    }

    #[test]
    fn leaky_step6_clamps_at_burst() {
        let evaluation = evaluate(Some(&stored(9.0)), &at(request(0, 10, 30_000), 60_000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 10, T0 + 60_000));
        assert_eq!(put(evaluation.next).remaining, 10.0);
    }

    #[test]
    fn leaky_step7_answer_truncates() {
        let evaluation = evaluate(Some(&stored(4.75)), &request(0, 10, 30_000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 4, T0 + 18_000));
    }

    #[test]
    fn leaky_step8_empty_bucket_is_over_limit() {
        let evaluation = evaluate(Some(&stored(0.5)), &request(1, 10, 30_000), T0);
        assert_eq!(evaluation.decision, answer(O, 10, 0, T0 + 30_000));
        // The half token is kept (and the expiry, T0 + 30 s, did not move).
        assert_eq!(evaluation.next, Next::Unchanged);
    }

    #[test]
    fn leaky_step9_exact_hits_empty_bucket() {
        let evaluation = evaluate(Some(&stored(4.5)), &request(4, 10, 30_000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 0, T0 + 30_000));
        assert_eq!(put(evaluation.next).remaining, 0.0);
    }

    #[test]
    fn leaky_step10_over_limit_consumes_nothing() {
        let evaluation = evaluate(Some(&stored(4.5)), &request(5, 10, 30_000), T0);
        assert_eq!(evaluation.decision, answer(O, 10, 4, T0 + 18_000));
        assert_eq!(evaluation.next, Next::Unchanged);
    }

    #[test]
    fn leaky_step10_drain_over_limit_empties() {
        let mut req = request(5, 10, 30_000);
        req.behavior = Behavior::DRAIN_OVER_LIMIT;
        let evaluation = evaluate(Some(&stored(4.5)), &req, T0);
        assert_eq!(evaluation.decision, answer(O, 10, 0, T0 + 18_000));
        assert_eq!(put(evaluation.next).remaining, 0.0);
    }

    #[test]
    fn leaky_step11_query_takes_nothing() {
        let evaluation = evaluate(Some(&stored(4.5)), &request(0, 10, 30_000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 4, T0 + 18_000));
        assert_eq!(evaluation.next, Next::Unchanged);
    }

    #[test]
    fn leaky_step12_takes_hits_keeping_fraction() {
        let evaluation = evaluate(Some(&stored(4.5)), &request(3, 10, 30_000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 1, T0 + 27_000));
        assert_eq!(put(evaluation.next).remaining, 1.5);
    }

    #[test]
    fn leaky_expired_bucket_starts_afresh() {
        let mut key = Key::default();
        let req = request(10, 10, 30_000);
        assert_eq!(key.hit(&req, T0).remaining, 0);
        // Expiry follows the server clock; the leak follows created_at (unchanged here).
        assert_eq!(key.hit(&request(1, 10, 30_000), T0 + 30_000).status, O);
        assert_eq!(key.hit(&request(1, 10, 30_000), T0 + 30_001).remaining, 9);
    }

    #[test]
    fn leaky_algorithm_switch_starts_afresh() {
        let mut key = Key(Some(Bucket::Token(TokenBucket {
            status: O,
            limit: 10,
            duration: 30_000,
            remaining: 0,
            created_at: T0,
            expire_at: T0 + 30_000,
        })));
        assert_eq!(key.hit(&request(1, 10, 30_000), T0).remaining, 9);
        assert!(matches!(key.0, Some(Bucket::Leaky(_))));
    }

    #[test]
    fn leaky_extreme_inputs_do_not_panic() {
        let values = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        let floats = [
            f64::NAN,
            f64::NEG_INFINITY,
            -1.5,
            0.0,
            0.5,
            1e300,
            f64::INFINITY,
        ];
        for &hits in &values {
            for &limit in &values {
                for &other in &values {
                    let mut req = request(hits, limit, other);
                    req.burst = other;
                    req.created_at = limit;
                    let _ = evaluate(None, &req, other);
                    for &remaining in &floats {
                        let mut bucket = stored(remaining);
                        bucket.updated_at = other;
                        bucket.burst = hits;
                        let _ = evaluate(Some(&bucket), &req, hits);
                        req.duration = LimitDuration::Calendar(CalendarInterval::Month);
                        let _ = evaluate(Some(&bucket), &req, other);
                    }
                }
            }
        }
    }

    // Reference §11, examples 7 and 8.

    #[test]
    fn example7_first_request_over_burst() {
        let mut key = Key::default();
        assert_eq!(
            key.hit(&request(6, 5, 5000), T0),
            answer(O, 5, 0, T0 + 5000)
        );
        assert_eq!(
            key.hit(&request(0, 5, 5000), T0),
            answer(U, 5, 0, T0 + 5000)
        );
    }

    #[test]
    fn example8_negative_hits_refill() {
        let mut key = Key::default();
        let remaining: Vec<_> = [1, -1, 10, -1]
            .into_iter()
            .map(|hits| key.hit(&request(hits, 10, 30_000), T0))
            .map(|decision| (decision.status, decision.remaining))
            .collect();
        assert_eq!(remaining, [(U, 9), (U, 10), (U, 0), (U, 1)]);
    }
}
