//! Token bucket (reference §4). PLACEHOLDER: being written.

use super::{Evaluation, RateLimitRequest, TokenBucket};

/// Evaluates a token-bucket request against the live stored bucket, if any.
pub fn evaluate(_stored: Option<&TokenBucket>, _request: &RateLimitRequest, _now_ms: i64) -> Evaluation {
    todo!()
}
