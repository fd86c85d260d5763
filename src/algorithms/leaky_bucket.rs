//! Leaky bucket (reference §5). PLACEHOLDER: being written.

use super::{Evaluation, LeakyBucket, RateLimitRequest};

/// Evaluates a leaky-bucket request against the live stored bucket, if any.
pub fn evaluate(_stored: Option<&LeakyBucket>, _request: &RateLimitRequest, _now_ms: i64) -> Evaluation {
    todo!()
}
