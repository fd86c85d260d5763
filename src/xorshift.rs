//! xorshift64 (Marsaglia): a fast pseudo-random sequence for sampling (the store's eviction
//! candidates, the latency window's reservoir slots). One copy, so both samplers draw the same
//! way; not for anything that must be unpredictable.

/// Advances `state` (never 0) and returns the next value of the sequence.
#[inline]
pub(crate) fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}
