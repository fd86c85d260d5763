//! Properties of the rate-limit algorithms that must hold for every input, checked with proptest
//! through the public API.
//!
//! The unit tests next to each algorithm pin Gubernator's answers step by step; these properties
//! guard the invariants clients rely on (queries are reads, refusals take nothing, counts stay
//! non-negative) and that no input, however hostile, can panic the server.

use proptest::prelude::*;
use ringlimit::algorithms::{
    Algorithm, Behavior, Bucket, CalendarInterval, Decision, LeakyBucket, LimitDuration, Next,
    RateLimitRequest, Status, TokenBucket, evaluate, leaky_bucket, token_bucket,
};

/// Around 2019-11-11, so that realistic timestamps are exercised as well as the extremes.
const T0: i64 = 1_573_430_430_000;

/// Any `i64`, biased towards the boundaries and small values where off-by-one errors live.
fn edgy() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        -3i64..=3,
        (T0 - 100_000)..(T0 + 100_000),
    ]
}

/// A non-negative `i64`, biased like [`edgy`].
fn non_negative() -> impl Strategy<Value = i64> {
    prop_oneof![0..=i64::MAX, Just(i64::MAX), 0i64..=20]
}

/// Any calendar interval.
fn interval() -> impl Strategy<Value = CalendarInterval> {
    (0i64..6).prop_map(|code| CalendarInterval::from_code(code).expect("codes 0..6 are valid"))
}

/// Any duration, as the request type can hold it (validation aside).
fn any_duration() -> impl Strategy<Value = LimitDuration> {
    prop_oneof![
        edgy().prop_map(LimitDuration::Millis),
        interval().prop_map(LimitDuration::Calendar),
    ]
}

/// A duration that passes validation.
fn valid_duration() -> impl Strategy<Value = LimitDuration> {
    prop_oneof![
        non_negative().prop_map(LimitDuration::Millis),
        interval().prop_map(LimitDuration::Calendar),
    ]
}

/// Any algorithm.
fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![Just(Algorithm::TokenBucket), Just(Algorithm::LeakyBucket)]
}

/// Any status.
fn status() -> impl Strategy<Value = Status> {
    prop_oneof![Just(Status::UnderLimit), Just(Status::OverLimit)]
}

/// Any request at all, including ones validation would reject.
fn any_request() -> impl Strategy<Value = RateLimitRequest> {
    (
        (edgy(), edgy(), any_duration(), algorithm()),
        (any::<i32>(), edgy(), edgy()),
    )
        .prop_map(
            |((hits, limit, duration, algorithm), (behavior, burst, created_at))| {
                RateLimitRequest {
                    hits,
                    limit,
                    duration,
                    algorithm,
                    behavior: Behavior::from_bits(behavior),
                    burst,
                    created_at,
                }
            },
        )
}

/// A request that passes validation, with non-negative hits.
fn valid_request(algorithm: Algorithm) -> impl Strategy<Value = RateLimitRequest> {
    (
        (non_negative(), non_negative(), valid_duration()),
        (any::<i32>(), non_negative(), edgy()),
    )
        .prop_map(
            move |((hits, limit, duration), (behavior, burst, created_at))| RateLimitRequest {
                hits,
                limit,
                duration,
                algorithm,
                behavior: Behavior::from_bits(behavior),
                burst,
                created_at,
            },
        )
}

/// Any stored token bucket.
fn any_token_bucket() -> impl Strategy<Value = TokenBucket> {
    (status(), edgy(), edgy(), edgy(), edgy(), edgy()).prop_map(
        |(status, limit, duration, remaining, created_at, expire_at)| TokenBucket {
            status,
            limit,
            duration,
            remaining,
            created_at,
            expire_at,
        },
    )
}

/// Any stored leaky bucket, including non-finite token counts.
fn any_leaky_bucket() -> impl Strategy<Value = LeakyBucket> {
    (edgy(), edgy(), any::<f64>(), edgy(), edgy(), edgy()).prop_map(
        |(limit, duration, remaining, updated_at, burst, expire_at)| LeakyBucket {
            limit,
            duration,
            remaining,
            updated_at,
            burst,
            expire_at,
        },
    )
}

/// Any stored bucket, or none.
fn any_bucket() -> impl Strategy<Value = Option<Bucket>> {
    prop::option::of(prop_oneof![
        any_token_bucket().prop_map(Bucket::Token),
        any_leaky_bucket().prop_map(Bucket::Leaky),
    ])
}

/// `behavior` without the given bits.
fn without(behavior: Behavior, bits: Behavior) -> Behavior {
    Behavior::from_bits(behavior.bits() & !bits.bits())
}

/// The token bucket stored after `next` is applied to `before`.
fn token_after(before: Option<TokenBucket>, next: Next) -> Option<TokenBucket> {
    match next {
        Next::Unchanged => before,
        Next::Put(Bucket::Token(bucket)) => Some(bucket),
        Next::Put(Bucket::Leaky(_)) => panic!("the token bucket stored a leaky bucket"),
        Next::Remove => None,
    }
}

/// The leaky bucket stored after `next` is applied to `before`.
fn leaky_after(before: Option<LeakyBucket>, next: Next) -> Option<LeakyBucket> {
    match next {
        Next::Unchanged => before,
        Next::Put(Bucket::Leaky(bucket)) => Some(bucket),
        Next::Put(Bucket::Token(_)) => panic!("the leaky bucket stored a token bucket"),
        Next::Remove => None,
    }
}

proptest! {
    /// (a) Token-bucket queries are reads. Precisely: a query (hits = 0, no `RESET_REMAINING`)
    /// whose limit and wire duration equal the stored bucket's returns `Next::Unchanged` and
    /// answers exactly the stored state `{status, limit, remaining, reset_time = expire_at}`.
    /// (A query with a different limit or duration does update the bucket, by steps 2 and 4.)
    #[test]
    fn token_query_with_stored_config_is_a_read(
        mut bucket in any_token_bucket(),
        mut request in any_request(),
        now in edgy(),
    ) {
        request.hits = 0;
        request.behavior = without(request.behavior, Behavior::RESET_REMAINING);
        request.limit = bucket.limit;
        bucket.duration = request.duration.wire_value();
        let evaluation = token_bucket::evaluate(Some(&bucket), &request, now);
        prop_assert_eq!(evaluation.next, Next::Unchanged);
        prop_assert_eq!(evaluation.decision, Decision {
            status: bucket.status,
            limit: bucket.limit,
            remaining: bucket.remaining,
            reset_time: bucket.expire_at,
        });
    }

    /// (a, continued) Whatever the stored state, once one query has been applied, repeating it
    /// changes nothing and answers the same: queries reach a fixed point after one evaluation.
    #[test]
    fn token_repeated_query_is_a_fixed_point(
        stored in prop::option::of(any_token_bucket()),
        mut request in any_request(),
        now in edgy(),
    ) {
        request.hits = 0;
        request.behavior = without(request.behavior, Behavior::RESET_REMAINING);
        let first = token_bucket::evaluate(stored.as_ref(), &request, now);
        let after = token_after(stored, first.next);
        let second = token_bucket::evaluate(after.as_ref(), &request, now);
        prop_assert_eq!(second.next, Next::Unchanged);
        let third = token_bucket::evaluate(after.as_ref(), &request, now);
        prop_assert_eq!(second.decision, third.decision);
    }

    /// (b) Token bucket: without `DRAIN_OVER_LIMIT`, an OVER_LIMIT answer takes nothing. With the
    /// stored limit and duration (so steps 2 and 4 do not move `remaining`), the stored remaining
    /// is unchanged; a new entry stores the full limit.
    #[test]
    fn token_over_limit_consumes_nothing(
        mut stored in prop::option::of(any_token_bucket()),
        mut request in any_request(),
        now in edgy(),
    ) {
        request.behavior = without(
            request.behavior,
            Behavior::DRAIN_OVER_LIMIT | Behavior::RESET_REMAINING,
        );
        if let Some(bucket) = stored.as_mut() {
            request.limit = bucket.limit;
            bucket.duration = request.duration.wire_value();
        }
        let evaluation = token_bucket::evaluate(stored.as_ref(), &request, now);
        if evaluation.decision.status == Status::OverLimit {
            let after = token_after(stored, evaluation.next).map(|bucket| bucket.remaining);
            let expected = stored.map_or(request.limit, |bucket| bucket.remaining);
            prop_assert_eq!(after, Some(expected));
        }
    }

    /// (b) Leaky bucket: without `DRAIN_OVER_LIMIT` (or `RESET_REMAINING`), an OVER_LIMIT answer
    /// on an existing bucket takes nothing: with an unchanged burst and a token count within it,
    /// the stored count never decreases (leaking may add tokens). A new entry asked for more than
    /// its burst is drained by design (reference §5), so it is not covered here.
    #[test]
    fn leaky_over_limit_consumes_nothing(
        mut bucket in any_leaky_bucket(),
        mut request in any_request(),
        fill in 0.0f64..=1.0,
        now in edgy(),
    ) {
        request.algorithm = Algorithm::LeakyBucket;
        request.burst = request.burst.max(0);
        request.behavior = without(
            request.behavior,
            Behavior::DRAIN_OVER_LIMIT | Behavior::RESET_REMAINING,
        );
        let burst = if request.burst == 0 { request.limit } else { request.burst };
        bucket.burst = burst;
        bucket.remaining = burst.max(0) as f64 * fill;
        let evaluation = leaky_bucket::evaluate(Some(&bucket), &request, now);
        if evaluation.decision.status == Status::OverLimit {
            let after = leaky_after(Some(bucket), evaluation.next);
            let remaining = after.map_or(f64::NAN, |after| after.remaining);
            prop_assert!(remaining >= bucket.remaining, "{} < {}", remaining, bucket.remaining);
        }
    }

    /// (c) Token bucket: with non-negative hits, valid request fields and a non-negative stored
    /// count, neither the answer nor the stored bucket ever shows a negative remaining.
    #[test]
    fn token_remaining_never_negative(
        stored in prop::option::of((any_token_bucket(), non_negative(), non_negative())),
        request in valid_request(Algorithm::TokenBucket),
        now in edgy(),
    ) {
        let stored = stored.map(|(bucket, limit, remaining)| TokenBucket {
            limit,
            remaining,
            ..bucket
        });
        let evaluation = token_bucket::evaluate(stored.as_ref(), &request, now);
        prop_assert!(evaluation.decision.remaining >= 0);
        if let Some(after) = token_after(stored, evaluation.next) {
            prop_assert!(after.remaining >= 0);
        }
    }

    /// (c) Leaky bucket: with non-negative hits, valid request fields and a finite, non-negative
    /// stored count, neither the answer nor the stored bucket ever goes below zero.
    #[test]
    fn leaky_remaining_never_negative(
        stored in prop::option::of((any_leaky_bucket(), 0.0f64..1e20, non_negative())),
        request in valid_request(Algorithm::LeakyBucket),
        now in edgy(),
    ) {
        let stored = stored.map(|(bucket, remaining, burst)| LeakyBucket {
            remaining,
            burst,
            ..bucket
        });
        let evaluation = leaky_bucket::evaluate(stored.as_ref(), &request, now);
        prop_assert!(evaluation.decision.remaining >= 0);
        if let Some(after) = leaky_after(stored, evaluation.next) {
            prop_assert!(after.remaining >= 0.0, "stored {}", after.remaining);
        }
    }

    /// (d) No input panics: any stored bucket (of either kind, expired or not, with any numbers),
    /// any request the type can hold and any server time. Debug builds check for overflow, so this
    /// also proves the arithmetic saturates.
    #[test]
    fn no_input_panics(
        stored in any_bucket(),
        request in any_request(),
        now in edgy(),
    ) {
        let evaluation = evaluate(stored.as_ref(), &request, now);
        if request.algorithm == Algorithm::TokenBucket {
            prop_assert!(!matches!(evaluation.next, Next::Put(Bucket::Leaky(_))));
        } else {
            prop_assert!(!matches!(evaluation.next, Next::Put(Bucket::Token(_))));
            prop_assert_ne!(evaluation.next, Next::Remove);
        }
    }

    /// (d) Calendar intervals accept any time: the end is never before `now`, and unless it
    /// saturated at `i64::MAX`, `now` lies within the interval's length before it.
    #[test]
    fn calendar_interval_contains_now(interval in interval(), now in edgy()) {
        let end = interval.end_of_interval(now);
        let length = interval.length_ms(now);
        prop_assert!(end >= now);
        prop_assert!(length >= 60_000);
        if end != i64::MAX {
            prop_assert!(end - now < length, "end {} now {} length {}", end, now, length);
            prop_assert_eq!(interval.end_of_interval(end), end);
            prop_assert_eq!(interval.end_of_interval(end + 1), end.saturating_add(interval.length_ms(end + 1)));
        }
    }
}
