//! Conversions between stored buckets and the `ringlimit.v1` wire messages.

use crate::algorithms::{Bucket, LeakyBucket, Status, TokenBucket};
use crate::request::LimitKey;

use super::pb;

/// The wire form of `bucket`.
pub fn to_state(bucket: &Bucket) -> pb::BucketState {
    let kind = match bucket {
        Bucket::Token(token) => pb::bucket_state::Kind::Token(pb::TokenState {
            status: token.status.wire(),
            limit: token.limit,
            duration: token.duration,
            remaining: token.remaining,
            created_at: token.created_at,
            expire_at: token.expire_at,
        }),
        Bucket::Leaky(leaky) => pb::bucket_state::Kind::Leaky(pb::LeakyState {
            limit: leaky.limit,
            duration: leaky.duration,
            remaining: leaky.remaining,
            updated_at: leaky.updated_at,
            burst: leaky.burst,
            expire_at: leaky.expire_at,
        }),
    };
    pb::BucketState { kind: Some(kind) }
}

/// The bucket a wire state describes; `None` when no variant is set.
pub fn from_state(state: &pb::BucketState) -> Option<Bucket> {
    Some(match state.kind.as_ref()? {
        pb::bucket_state::Kind::Token(token) => Bucket::Token(TokenBucket {
            status: Status::from_wire(token.status),
            limit: token.limit,
            duration: token.duration,
            remaining: token.remaining,
            created_at: token.created_at,
            expire_at: token.expire_at,
        }),
        pb::bucket_state::Kind::Leaky(leaky) => Bucket::Leaky(LeakyBucket {
            limit: leaky.limit,
            duration: leaky.duration,
            remaining: if leaky.remaining.is_nan() {
                0.0
            } else {
                leaky.remaining
            },
            updated_at: leaky.updated_at,
            burst: leaky.burst,
            expire_at: leaky.expire_at,
        }),
    })
}

/// One key's bucket (and, on a resend, the version delivered before) on the wire.
pub fn to_wire(key: &LimitKey, bucket: &Bucket, previous: Option<&Bucket>) -> pb::HandoffBucket {
    pb::HandoffBucket {
        name: key.name.clone(),
        unique_key: key.unique_key.clone(),
        state: Some(to_state(bucket)),
        previous: previous.map(to_state),
    }
}

/// A wire bucket as (key, bucket, previous); `None` when it carries no state.
pub fn from_wire(item: &pb::HandoffBucket) -> Option<(LimitKey, Bucket, Option<Bucket>)> {
    let bucket = from_state(item.state.as_ref()?)?;
    let previous = item.previous.as_ref().and_then(from_state);
    Some((
        LimitKey::new(item.name.clone(), item.unique_key.clone()),
        bucket,
        previous,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip() {
        let token = Bucket::Token(TokenBucket {
            status: Status::OverLimit,
            limit: 5,
            duration: 1000,
            remaining: 0,
            created_at: 7,
            expire_at: 1007,
        });
        let leaky = Bucket::Leaky(LeakyBucket {
            limit: 5,
            duration: 1000,
            remaining: 2.5,
            updated_at: 9,
            burst: 6,
            expire_at: 1009,
        });
        let key = LimitKey::new("n", "k");
        let wire = to_wire(&key, &token, Some(&leaky));
        assert_eq!(from_wire(&wire), Some((key, token, Some(leaky))));
        assert_eq!(from_wire(&pb::HandoffBucket::default()), None);
    }
}
