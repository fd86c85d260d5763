//! The two rate-limit algorithms, as pure functions of (stored bucket, request, now).
//!
//! Nothing here does I/O or reads a clock: the caller passes the stored [`Bucket`] (if any), the
//! validated [`RateLimitRequest`] and the server's time, and gets back the [`Decision`] to answer
//! with and the [`Next`] change to apply to the store. This keeps every step of Gubernator's
//! algorithms (reference §4–§6) unit-testable with plain values and lets the store apply the change
//! atomically per key.

pub mod gregorian;
pub mod leaky_bucket;
pub mod token_bucket;

pub use gregorian::CalendarInterval;

/// Which algorithm a limit uses. The wire values are `TOKEN_BUCKET = 0` and `LEAKY_BUCKET = 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// A fixed window of `limit` hits per `duration`.
    TokenBucket,
    /// Hits leak back at `limit / duration`; the bucket holds at most `burst`.
    LeakyBucket,
}

/// The `Behavior` bit set of a request. The field is an enum on the wire but clients send
/// combinations, so it is kept as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Behavior(i32);

impl Behavior {
    /// Forward to the owner at once instead of batching.
    pub const NO_BATCHING: Behavior = Behavior(1);
    /// Answer locally and reconcile with the owner asynchronously.
    pub const GLOBAL: Behavior = Behavior(2);
    /// `duration` names a calendar interval (see [`CalendarInterval`]).
    pub const DURATION_IS_GREGORIAN: Behavior = Behavior(4);
    /// Restore the remaining hits to the limit.
    pub const RESET_REMAINING: Behavior = Behavior(8);
    /// Reserved for multi-region replication.
    pub const MULTI_REGION: Behavior = Behavior(16);
    /// Over the limit, take what remains instead of nothing.
    pub const DRAIN_OVER_LIMIT: Behavior = Behavior(32);

    /// The bit set carried in the wire field.
    pub const fn from_bits(bits: i32) -> Self {
        Behavior(bits)
    }

    /// The wire value.
    pub const fn bits(self) -> i32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Behavior) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Behavior {
    type Output = Behavior;
    fn bitor(self, rhs: Behavior) -> Behavior {
        Behavior(self.0 | rhs.0)
    }
}

/// Whether a request was admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Status {
    /// The hits were taken (or the request only read the state).
    #[default]
    UnderLimit,
    /// The hits did not fit.
    OverLimit,
}

impl Status {
    /// The wire value (`UNDER_LIMIT = 0`, `OVER_LIMIT = 1`).
    pub const fn wire(self) -> i32 {
        match self {
            Status::UnderLimit => 0,
            Status::OverLimit => 1,
        }
    }

    /// The status a wire value stands for; anything but `OVER_LIMIT` reads as under the limit.
    pub const fn from_wire(value: i32) -> Self {
        if value == 1 {
            Status::OverLimit
        } else {
            Status::UnderLimit
        }
    }
}

/// The length of a limit's window, as the request states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitDuration {
    /// A fixed number of milliseconds (never negative once validated).
    Millis(i64),
    /// A calendar interval (`DURATION_IS_GREGORIAN`); the wire value is its code.
    Calendar(CalendarInterval),
}

impl LimitDuration {
    /// The value as it travels on the wire: milliseconds, or the calendar interval's code. Stored
    /// buckets remember this to notice duration changes.
    pub fn wire_value(self) -> i64 {
        match self {
            LimitDuration::Millis(ms) => ms,
            LimitDuration::Calendar(interval) => interval.code(),
        }
    }
}

/// One validated request, ready for evaluation. Validation (non-negative limit, duration and burst,
/// a known algorithm and calendar interval, a leaky bucket with a non-zero duration) happens before
/// this type is built, so the algorithms need not check again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitRequest {
    /// Hits to take; 0 reads, negative gives back.
    pub hits: i64,
    /// Hits allowed per duration (>= 0).
    pub limit: i64,
    /// The window length.
    pub duration: LimitDuration,
    /// The algorithm to evaluate with.
    pub algorithm: Algorithm,
    /// The behaviour bits.
    pub behavior: Behavior,
    /// Leaky bucket capacity as sent (>= 0; 0 means `limit`).
    pub burst: i64,
    /// When the request was made, epoch ms (already defaulted to the server's time).
    pub created_at: i64,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Admitted or not.
    pub status: Status,
    /// The limit in force.
    pub limit: i64,
    /// Hits left in the current window / bucket.
    pub remaining: i64,
    /// When the limit is next fully restored, epoch ms (0 after `RESET_REMAINING`).
    pub reset_time: i64,
}

/// The stored state of a token bucket (reference §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// The stored status; `OverLimit` is sticky until the window ends.
    pub status: Status,
    /// The limit the bucket was last evaluated with.
    pub limit: i64,
    /// The wire duration the bucket was last evaluated with.
    pub duration: i64,
    /// Hits left in this window.
    pub remaining: i64,
    /// When the window started, epoch ms.
    pub created_at: i64,
    /// When the window ends, epoch ms; the bucket is gone once the server clock passes it.
    pub expire_at: i64,
}

/// The stored state of a leaky bucket (reference §5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakyBucket {
    /// The limit the bucket was last evaluated with.
    pub limit: i64,
    /// The wire duration the bucket was last evaluated with.
    pub duration: i64,
    /// Tokens in the bucket; fractions accumulate.
    pub remaining: f64,
    /// The request time the last whole-token leak was applied at, epoch ms.
    pub updated_at: i64,
    /// The bucket's capacity.
    pub burst: i64,
    /// When the bucket is forgotten, epoch ms by the server clock.
    pub expire_at: i64,
}

/// A stored limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bucket {
    /// Token bucket state.
    Token(TokenBucket),
    /// Leaky bucket state.
    Leaky(LeakyBucket),
}

impl Bucket {
    /// When the bucket expires, epoch ms by the server clock.
    pub fn expire_at(&self) -> i64 {
        match self {
            Bucket::Token(bucket) => bucket.expire_at,
            Bucket::Leaky(bucket) => bucket.expire_at,
        }
    }

    /// Whether the bucket has expired at `now_ms` (strictly past its expiry, like Gubernator).
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expire_at() < now_ms
    }
}

/// What to do with the stored bucket after an evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Leave the store as it is.
    Unchanged,
    /// Store this bucket (insert or replace).
    Put(Bucket),
    /// Delete the stored bucket.
    Remove,
}

impl Next {
    /// Applies this change to `slot`, the stored bucket of one key: what a store does with the
    /// result of [`evaluate`] while it holds that key.
    pub fn apply_to(self, slot: &mut Option<Bucket>) {
        match self {
            Next::Unchanged => {}
            Next::Put(bucket) => *slot = Some(bucket),
            Next::Remove => *slot = None,
        }
    }
}

/// The result of evaluating one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The answer for the client.
    pub decision: Decision,
    /// The change to the store.
    pub next: Next,
}

/// Evaluates `request` against the `stored` bucket at server time `now_ms`.
///
/// A stored bucket that has expired, or was created by the other algorithm, is treated as missing.
pub fn evaluate(stored: Option<&Bucket>, request: &RateLimitRequest, now_ms: i64) -> Evaluation {
    let live = stored.filter(|bucket| !bucket.is_expired(now_ms));
    match request.algorithm {
        Algorithm::TokenBucket => {
            let existing = match live {
                Some(Bucket::Token(bucket)) => Some(bucket),
                _ => None,
            };
            token_bucket::evaluate(existing, request, now_ms)
        }
        Algorithm::LeakyBucket => {
            let existing = match live {
                Some(Bucket::Leaky(bucket)) => Some(bucket),
                _ => None,
            };
            leaky_bucket::evaluate(existing, request, now_ms)
        }
    }
}

/// Helpers shared by the algorithms' unit tests (and the tests of what stores their buckets).
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Bucket, Decision, RateLimitRequest, Status, TokenBucket};

    /// An emptied token bucket, over its limit: 10 per minute, opened at 1 000 ms.
    pub fn over_limit_token_bucket() -> Bucket {
        Bucket::Token(TokenBucket {
            status: Status::OverLimit,
            limit: 10,
            duration: 60_000,
            remaining: 0,
            created_at: 1_000,
            expire_at: 61_000,
        })
    }

    /// A decision with the given fields.
    pub fn answer(status: Status, limit: i64, remaining: i64, reset_time: i64) -> Decision {
        Decision {
            status,
            limit,
            remaining,
            reset_time,
        }
    }

    /// One key of a store, driven through the dispatcher so expiry filtering is exercised.
    #[derive(Default)]
    pub struct Key(pub Option<Bucket>);

    impl Key {
        /// Evaluates `request` at `now_ms` and applies the resulting change.
        pub fn hit(&mut self, request: &RateLimitRequest, now_ms: i64) -> Decision {
            let evaluation = super::evaluate(self.0.as_ref(), request, now_ms);
            evaluation.next.apply_to(&mut self.0);
            evaluation.decision
        }
    }
}
