//! Token bucket (reference §4): a fixed window of `limit` hits.
//!
//! The first request for a key opens a window that lasts `duration` (or until the end of the
//! current calendar interval) and holds `limit` tokens; each admitted hit takes one, and nothing
//! comes back until the window ends and the store forgets the bucket. It is the cheapest algorithm
//! and the one most clients use, so its answers must match Gubernator's step for step: the code
//! below follows the reference's numbered steps in order, and each step is marked.
//!
//! All arithmetic saturates, so no request (however hostile its numbers) can panic or wrap.

use super::{
    Behavior, Bucket, Decision, Evaluation, LimitDuration, Next, RateLimitRequest, Status,
    TokenBucket,
};

/// Evaluates a token-bucket request against the live stored bucket, if any.
///
/// `stored` must be a bucket that has not expired at `now_ms` (the dispatcher
/// [`evaluate`](super::evaluate) filters expired ones); `None` opens a new window.
pub fn evaluate(
    stored: Option<&TokenBucket>,
    request: &RateLimitRequest,
    now_ms: i64,
) -> Evaluation {
    match stored {
        None => new_entry(request, now_ms),
        Some(bucket) => existing_entry(bucket, request, now_ms),
    }
}

/// When a window that starts at `start` ends: `start + duration`, or for a calendar duration the
/// end of the interval that contains the server clock `now_ms`.
fn window_end(duration: LimitDuration, start: i64, now_ms: i64) -> i64 {
    match duration {
        LimitDuration::Millis(ms) => start.saturating_add(ms),
        LimitDuration::Calendar(interval) => interval.end_of_interval(now_ms),
    }
}

/// New entry: open a window, taking the hits if they fit.
fn new_entry(request: &RateLimitRequest, now_ms: i64) -> Evaluation {
    let expire_at = window_end(request.duration, request.created_at, now_ms);
    let mut bucket = TokenBucket {
        status: Status::UnderLimit,
        limit: request.limit,
        duration: request.duration.wire_value(),
        remaining: request.limit.saturating_sub(request.hits),
        created_at: request.created_at,
        expire_at,
    };
    let mut decision = Decision {
        status: Status::UnderLimit,
        limit: request.limit,
        remaining: bucket.remaining,
        reset_time: expire_at,
    };
    // More hits than the limit: refuse them but consume nothing, and leave the stored status
    // UNDER_LIMIT so a following request that fits is admitted.
    if request.hits > request.limit {
        decision.status = Status::OverLimit;
        decision.remaining = request.limit;
        bucket.remaining = request.limit;
    }
    Evaluation {
        decision,
        next: Next::Put(Bucket::Token(bucket)),
    }
}

/// Existing entry: steps 1–9 of reference §4, in order.
fn existing_entry(stored: &TokenBucket, request: &RateLimitRequest, now_ms: i64) -> Evaluation {
    // Step 1: RESET_REMAINING forgets the bucket; the hits are ignored.
    if request.behavior.contains(Behavior::RESET_REMAINING) {
        return Evaluation {
            decision: Decision {
                status: Status::UnderLimit,
                limit: request.limit,
                remaining: request.limit,
                reset_time: 0,
            },
            next: Next::Remove,
        };
    }

    let mut bucket = *stored;

    // Step 2: a changed limit moves `remaining` by the difference, never below 0.
    if bucket.limit != request.limit {
        let difference = request.limit.saturating_sub(bucket.limit);
        bucket.remaining = bucket.remaining.saturating_add(difference).max(0);
        bucket.limit = request.limit;
    }

    // Step 3: the answer starts as the stored state.
    let mut decision = Decision {
        status: bucket.status,
        limit: request.limit,
        remaining: bucket.remaining,
        reset_time: bucket.expire_at,
    };

    // Step 4: a changed duration moves the expiry, restarting the window if it already ended.
    if bucket.duration != request.duration.wire_value() {
        change_duration(&mut bucket, request, now_ms);
        decision.reset_time = bucket.expire_at;
    }

    // Step 5: a query (hits == 0) answers without consuming.
    if request.hits != 0 {
        take_hits(&mut bucket, &mut decision, request);
    }

    let next = if bucket == *stored {
        Next::Unchanged
    } else {
        Next::Put(Bucket::Token(bucket))
    };
    Evaluation { decision, next }
}

/// Step 4: applies the request's new duration to `bucket`.
fn change_duration(bucket: &mut TokenBucket, request: &RateLimitRequest, now_ms: i64) {
    let mut expire_at = window_end(request.duration, bucket.created_at, now_ms);
    if expire_at <= request.created_at {
        // The new duration means this window is already over: start a new one now.
        // ringlimit fixes: for a calendar duration the new window is the current interval,
        // whose end `expire_at` already is; Gubernator adds the interval's code as milliseconds.
        expire_at = window_end(request.duration, request.created_at, now_ms);
        bucket.created_at = request.created_at;
        bucket.remaining = bucket.limit;
    }
    bucket.duration = request.duration.wire_value();
    bucket.expire_at = expire_at;
}

/// Steps 6–9: takes `request.hits` (non-zero) from `bucket`, using the stored values.
fn take_hits(bucket: &mut TokenBucket, decision: &mut Decision, request: &RateLimitRequest) {
    let hits = request.hits;
    // ringlimit fixes: steps 6 and 8 judge and answer the stored remaining, as the reference says.
    // Gubernator uses the answer's remaining from step 3 there, which differs only when step 4
    // restarted the window: it would refuse hits (and store a sticky OVER_LIMIT) although the new
    // window is full.
    decision.remaining = bucket.remaining;
    if bucket.remaining == 0 && hits > 0 {
        // Step 6: the bucket is empty; OVER_LIMIT, stored too, until the window ends.
        bucket.status = Status::OverLimit;
        decision.status = Status::OverLimit;
    } else if hits == bucket.remaining {
        // Step 7: the hits take exactly what remains.
        admit(bucket, decision, 0);
    } else if hits > bucket.remaining {
        // Step 8: more hits than remain; nothing is taken unless DRAIN_OVER_LIMIT empties it.
        decision.status = Status::OverLimit;
        if request.behavior.contains(Behavior::DRAIN_OVER_LIMIT) {
            bucket.remaining = 0;
            decision.remaining = 0;
        }
    } else {
        // Step 9: take the hits (negative hits give tokens back, even beyond the limit).
        admit(bucket, decision, bucket.remaining.saturating_sub(hits));
    }
}

/// Steps 7 and 9: the hits were taken, leaving `remaining`.
fn admit(bucket: &mut TokenBucket, decision: &mut Decision, remaining: i64) {
    bucket.remaining = remaining;
    decision.remaining = remaining;
    // ringlimit fixes: hits that were taken are admitted, so the answer and the stored status are
    // UNDER_LIMIT. Gubernator keeps a sticky OVER_LIMIT status here (e.g. when consuming after a
    // limit increase), answering OVER_LIMIT for hits it did take.
    bucket.status = Status::UnderLimit;
    decision.status = Status::UnderLimit;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::{Algorithm, CalendarInterval, LeakyBucket};

    const T0: i64 = 1_573_430_430_000; // 2019-11-11 00:00:30 UTC

    /// A token-bucket request with everything but the numbers defaulted.
    fn request(hits: i64, limit: i64, duration: i64) -> RateLimitRequest {
        RateLimitRequest {
            hits,
            limit,
            duration: LimitDuration::Millis(duration),
            algorithm: Algorithm::TokenBucket,
            behavior: Behavior::default(),
            burst: 0,
            created_at: T0,
        }
    }

    /// A stored bucket opened at `T0` with the given numbers.
    fn stored(limit: i64, duration: i64, remaining: i64) -> TokenBucket {
        TokenBucket {
            status: Status::UnderLimit,
            limit,
            duration,
            remaining,
            created_at: T0,
            expire_at: T0.saturating_add(duration),
        }
    }

    /// The token bucket that `next` stores.
    fn put(next: Next) -> TokenBucket {
        match next {
            Next::Put(Bucket::Token(bucket)) => bucket,
            other => panic!("expected a token bucket to be stored, got {other:?}"),
        }
    }

    use crate::algorithms::test_support::{Key, answer};
    use Status::{OverLimit as O, UnderLimit as U};

    #[test]
    fn token_new_entry_takes_hits() {
        let evaluation = evaluate(None, &request(3, 10, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 7, T0 + 1000));
        assert_eq!(
            put(evaluation.next),
            TokenBucket {
                status: U,
                limit: 10,
                duration: 1000,
                remaining: 7,
                created_at: T0,
                expire_at: T0 + 1000,
            }
        );
    }

    #[test]
    fn token_new_entry_over_limit_consumes_nothing() {
        let evaluation = evaluate(None, &request(11, 10, 1000), T0);
        assert_eq!(evaluation.decision, answer(O, 10, 10, T0 + 1000));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.status, bucket.remaining), (U, 10));
    }

    #[test]
    fn token_new_entry_query_starts_window() {
        let evaluation = evaluate(None, &request(0, 10, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 10, T0 + 1000));
        assert_eq!(put(evaluation.next).expire_at, T0 + 1000);
    }

    #[test]
    fn token_new_entry_calendar_ends_with_server_interval() {
        // The client's created_at lies in an earlier minute; the server clock decides the window.
        let mut req = request(1, 10, 0);
        req.duration = LimitDuration::Calendar(CalendarInterval::Minute);
        req.created_at = T0 - 120_000;
        let evaluation = evaluate(None, &req, T0);
        assert_eq!(evaluation.decision, answer(U, 10, 9, 1_573_430_459_999));
        let bucket = put(evaluation.next);
        assert_eq!(bucket.duration, 0);
        assert_eq!(bucket.created_at, T0 - 120_000);
        assert_eq!(bucket.expire_at, 1_573_430_459_999);
    }

    #[test]
    fn token_new_entry_zero_duration_window_ends_at_once() {
        let mut key = Key::default();
        assert_eq!(key.hit(&request(1, 1, 0), T0), answer(U, 1, 0, T0));
        // Still live at the same millisecond, gone one millisecond later.
        assert_eq!(key.hit(&request(1, 1, 0), T0), answer(O, 1, 0, T0));
        let mut later = request(1, 1, 0);
        later.created_at = T0 + 1;
        assert_eq!(key.hit(&later, T0 + 1), answer(U, 1, 0, T0 + 1));
    }

    #[test]
    fn token_new_entry_zero_limit_is_over_limit() {
        let evaluation = evaluate(None, &request(1, 0, 1000), T0);
        assert_eq!(evaluation.decision, answer(O, 0, 0, T0 + 1000));
    }

    #[test]
    fn token_step1_reset_remaining_removes() {
        let mut req = request(5, 10, 1000);
        req.behavior = Behavior::RESET_REMAINING;
        let evaluation = evaluate(Some(&stored(10, 1000, 2)), &req, T0 + 10);
        assert_eq!(evaluation.decision, answer(U, 10, 10, 0));
        assert_eq!(evaluation.next, Next::Remove);
    }

    #[test]
    fn token_step2_limit_increase_adds_difference() {
        let evaluation = evaluate(Some(&stored(10, 1000, 4)), &request(1, 15, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 15, 8, T0 + 1000));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.limit, bucket.remaining), (15, 8));
    }

    #[test]
    fn token_step2_limit_decrease_clamps_at_zero() {
        let evaluation = evaluate(Some(&stored(10, 1000, 4)), &request(0, 3, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 3, 0, T0 + 1000));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.limit, bucket.remaining), (3, 0));
    }

    #[test]
    fn token_step3_answer_reports_stored_state() {
        let mut bucket = stored(10, 1000, 0);
        bucket.status = O;
        let evaluation = evaluate(Some(&bucket), &request(0, 10, 1000), T0 + 500);
        assert_eq!(evaluation.decision, answer(O, 10, 0, T0 + 1000));
    }

    #[test]
    fn token_step4_duration_change_moves_expiry() {
        let evaluation = evaluate(Some(&stored(10, 1000, 4)), &request(1, 10, 5000), T0 + 10);
        assert_eq!(evaluation.decision, answer(U, 10, 3, T0 + 5000));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.duration, bucket.expire_at), (5000, T0 + 5000));
        assert_eq!(bucket.created_at, T0);
    }

    #[test]
    fn token_step4_duration_change_restarts_window() {
        let mut req = request(0, 10, 100);
        req.created_at = T0 + 500;
        let evaluation = evaluate(Some(&stored(10, 1000, 4)), &req, T0 + 500);
        // A query still shows the remaining taken in step 3 ...
        assert_eq!(evaluation.decision, answer(U, 10, 4, T0 + 600));
        let bucket = put(evaluation.next);
        // ... but the stored window restarted at the request's created_at.
        assert_eq!(bucket, {
            let mut fresh = stored(10, 100, 10);
            fresh.created_at = T0 + 500;
            fresh.expire_at = T0 + 600;
            fresh
        });
    }

    #[test]
    fn token_step4_restart_then_hits_use_the_new_window() {
        let mut req = request(3, 10, 100);
        req.created_at = T0 + 500;
        let evaluation = evaluate(Some(&stored(10, 1000, 0)), &req, T0 + 500);
        assert_eq!(evaluation.decision, answer(U, 10, 7, T0 + 600));
    }

    #[test]
    fn token_step4_calendar_duration_change() {
        let mut req = request(1, 10, 0);
        req.duration = LimitDuration::Calendar(CalendarInterval::Hour);
        let evaluation = evaluate(Some(&stored(10, 600_000, 4)), &req, T0);
        // 2019-11-11 00:00:30 lies in the hour ending 00:59:59.999.
        let hour_end = 1_573_433_999_999;
        assert_eq!(evaluation.decision, answer(U, 10, 3, hour_end));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.duration, bucket.expire_at), (1, hour_end));
    }

    #[test]
    fn token_step4_calendar_restart_keeps_interval_end() {
        // A created_at after the interval's end restarts the window, which still ends with the
        // server's interval.
        let mut req = request(1, 10, 0);
        req.duration = LimitDuration::Calendar(CalendarInterval::Minute);
        req.created_at = T0 + 3_600_000;
        let evaluation = evaluate(Some(&stored(10, 1000, 0)), &req, T0);
        assert_eq!(evaluation.decision, answer(U, 10, 9, 1_573_430_459_999));
        let bucket = put(evaluation.next);
        assert_eq!(bucket.created_at, T0 + 3_600_000);
    }

    #[test]
    fn token_step5_query_is_unchanged() {
        let bucket = stored(10, 1000, 4);
        let evaluation = evaluate(Some(&bucket), &request(0, 10, 1000), T0 + 1);
        assert_eq!(evaluation.decision, answer(U, 10, 4, T0 + 1000));
        assert_eq!(evaluation.next, Next::Unchanged);
    }

    #[test]
    fn token_step6_empty_bucket_is_sticky_over_limit() {
        let evaluation = evaluate(Some(&stored(10, 1000, 0)), &request(1, 10, 1000), T0);
        assert_eq!(evaluation.decision, answer(O, 10, 0, T0 + 1000));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.status, bucket.remaining), (O, 0));
        let query = evaluate(Some(&bucket), &request(0, 10, 1000), T0);
        assert_eq!(query.decision, answer(O, 10, 0, T0 + 1000));
        assert_eq!(query.next, Next::Unchanged);
    }

    #[test]
    fn token_step7_exact_hits_empty_bucket() {
        let evaluation = evaluate(Some(&stored(10, 1000, 4)), &request(4, 10, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 0, T0 + 1000));
        assert_eq!(put(evaluation.next).remaining, 0);
    }

    #[test]
    fn token_step7_clears_sticky_status_after_limit_increase() {
        let mut bucket = stored(10, 1000, 0);
        bucket.status = O;
        let evaluation = evaluate(Some(&bucket), &request(2, 12, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 12, 0, T0 + 1000));
        let bucket = put(evaluation.next);
        assert_eq!((bucket.status, bucket.remaining), (U, 0));
    }

    #[test]
    fn token_step8_over_limit_consumes_nothing() {
        let bucket = stored(10, 1000, 4);
        let evaluation = evaluate(Some(&bucket), &request(5, 10, 1000), T0);
        assert_eq!(evaluation.decision, answer(O, 10, 4, T0 + 1000));
        assert_eq!(evaluation.next, Next::Unchanged);
    }

    #[test]
    fn token_step8_drain_over_limit_empties() {
        let mut req = request(5, 10, 1000);
        req.behavior = Behavior::DRAIN_OVER_LIMIT;
        let evaluation = evaluate(Some(&stored(10, 1000, 4)), &req, T0);
        assert_eq!(evaluation.decision, answer(O, 10, 0, T0 + 1000));
        let bucket = put(evaluation.next);
        // Only the remaining is drained; the stored status is not made sticky.
        assert_eq!((bucket.status, bucket.remaining), (U, 0));
    }

    #[test]
    fn token_step9_takes_hits() {
        let evaluation = evaluate(Some(&stored(10, 1000, 4)), &request(3, 10, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 1, T0 + 1000));
        assert_eq!(put(evaluation.next).remaining, 1);
    }

    #[test]
    fn token_step9_clears_sticky_status_after_limit_increase() {
        let mut bucket = stored(10, 1000, 0);
        bucket.status = O;
        let evaluation = evaluate(Some(&bucket), &request(1, 15, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 15, 4, T0 + 1000));
        assert_eq!(put(evaluation.next).status, U);
    }

    #[test]
    fn token_negative_hits_add_tokens_beyond_limit() {
        let evaluation = evaluate(Some(&stored(10, 1000, 10)), &request(-5, 10, 1000), T0);
        assert_eq!(evaluation.decision, answer(U, 10, 15, T0 + 1000));
    }

    #[test]
    fn token_expired_bucket_starts_afresh() {
        let mut key = Key::default();
        assert_eq!(
            key.hit(&request(10, 10, 1000), T0),
            answer(U, 10, 0, T0 + 1000)
        );
        assert_eq!(
            key.hit(&request(1, 10, 1000), T0 + 1000),
            answer(O, 10, 0, T0 + 1000)
        );
        let mut later = request(1, 10, 1000);
        later.created_at = T0 + 1001;
        assert_eq!(key.hit(&later, T0 + 1001), answer(U, 10, 9, T0 + 2001));
    }

    #[test]
    fn token_algorithm_switch_starts_afresh() {
        let mut key = Key(Some(Bucket::Leaky(LeakyBucket {
            limit: 10,
            duration: 1000,
            remaining: 0.0,
            updated_at: T0,
            burst: 10,
            expire_at: T0 + 1000,
        })));
        assert_eq!(
            key.hit(&request(1, 10, 1000), T0),
            answer(U, 10, 9, T0 + 1000)
        );
        assert!(matches!(key.0, Some(Bucket::Token(_))));
    }

    #[test]
    fn token_extreme_inputs_do_not_panic() {
        let values = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
        for &hits in &values {
            for &limit in &values {
                for &other in &values {
                    let mut req = request(hits, limit, other);
                    req.created_at = other;
                    let mut bucket = stored(other, other, limit);
                    bucket.created_at = hits;
                    bucket.expire_at = other;
                    let _ = evaluate(None, &req, other);
                    let _ = evaluate(Some(&bucket), &req, hits);
                    req.behavior = Behavior::DRAIN_OVER_LIMIT;
                    let _ = evaluate(Some(&bucket), &req, limit);
                }
            }
        }
    }

    // Reference §11, examples 1–6 and 9.

    #[test]
    fn example1_sticky_over_limit() {
        let mut key = Key::default();
        let req = request(1, 2, 9000);
        let reset = T0 + 9000;
        assert_eq!(key.hit(&req, T0), answer(U, 2, 1, reset));
        assert_eq!(key.hit(&req, T0), answer(U, 2, 0, reset));
        assert_eq!(key.hit(&req, T0), answer(O, 2, 0, reset));
        assert_eq!(key.hit(&req, T0), answer(O, 2, 0, reset));
        assert_eq!(key.hit(&request(0, 2, 9000), T0), answer(O, 2, 0, reset));
    }

    #[test]
    fn example2_negative_hits() {
        let mut key = Key::default();
        let remaining: Vec<_> = [-1, -1, 4, -1]
            .into_iter()
            .map(|hits| key.hit(&request(hits, 2, 3_600_000), T0))
            .map(|decision| (decision.status, decision.remaining))
            .collect();
        assert_eq!(remaining, [(U, 3), (U, 4), (U, 0), (U, 1)]);
    }

    #[test]
    fn example3_over_limit_then_fitting_hits() {
        let mut key = Key::default();
        let remaining: Vec<_> = [1000, 1500, 500, 400, 100, 1]
            .into_iter()
            .map(|hits| key.hit(&request(hits, 2000, 3_600_000), T0))
            .map(|decision| (decision.status, decision.remaining))
            .collect();
        assert_eq!(
            remaining,
            [(U, 1000), (O, 1000), (U, 500), (U, 100), (U, 0), (O, 0)]
        );
    }

    #[test]
    fn example4_drain_over_limit() {
        let mut key = Key::default();
        let remaining: Vec<_> = [0, 1, 100, 0]
            .into_iter()
            .map(|hits| {
                let mut req = request(hits, 10, 30_000);
                req.behavior = Behavior::DRAIN_OVER_LIMIT;
                key.hit(&req, T0)
            })
            .map(|decision| (decision.status, decision.remaining))
            .collect();
        assert_eq!(remaining, [(U, 10), (U, 9), (O, 0), (U, 0)]);
    }

    #[test]
    fn example5_reset_remaining() {
        let mut key = Key::default();
        let reset = T0 + 9000;
        let mut req = request(1, 100, 9000);
        assert_eq!(key.hit(&req, T0), answer(U, 100, 99, reset));
        assert_eq!(key.hit(&req, T0), answer(U, 100, 98, reset));
        req.behavior = Behavior::RESET_REMAINING;
        assert_eq!(key.hit(&req, T0), answer(U, 100, 100, 0));
        req.behavior = Behavior::default();
        assert_eq!(key.hit(&req, T0), answer(U, 100, 99, reset));
    }

    #[test]
    fn example6_first_request_over_limit() {
        let mut key = Key::default();
        let reset = T0 + 60_000;
        assert_eq!(key.hit(&request(6, 5, 60_000), T0), answer(O, 5, 5, reset));
        assert_eq!(key.hit(&request(5, 5, 60_000), T0), answer(U, 5, 0, reset));
    }

    #[test]
    fn example9_gregorian_minute() {
        let mut key = Key::default();
        let minute_end = 1_573_430_459_999;
        let remaining: Vec<_> = [1, 1, 58, 1]
            .into_iter()
            .map(|hits| {
                let mut req = request(hits, 60, 0);
                req.duration = LimitDuration::Calendar(CalendarInterval::Minute);
                req.behavior = Behavior::DURATION_IS_GREGORIAN;
                key.hit(&req, T0)
            })
            .collect();
        assert_eq!(
            remaining,
            [
                answer(U, 60, 59, minute_end),
                answer(U, 60, 58, minute_end),
                answer(U, 60, 0, minute_end),
                answer(O, 60, 0, minute_end),
            ]
        );
    }
}
