//! The one thing RLS needs from the cluster: "evaluate this batch of Gubernator items".
//!
//! Each matched descriptor limit becomes an ordinary `RateLimitReq`, so the ring decides its owner,
//! forwarding batches it with other items, and handoff moves it like any other bucket. This trait
//! is the whole coupling between [`crate::rls`] and the node (kept to one adapter so the node can
//! change behind it); tests implement it with a local store and a fake clock.

use std::future::Future;

use crate::node::Node;
use crate::proto;

/// Evaluates items through the cluster, one response per item, in order.
pub trait Counters: Send + Sync + 'static {
    /// Evaluates `items` (each forwarded to its owner as `GetRateLimits` would).
    fn evaluate(
        &self,
        items: Vec<proto::RateLimitReq>,
    ) -> impl Future<Output = Result<Vec<proto::RateLimitResp>, String>> + Send;

    /// The clock the counters use, in epoch milliseconds (windows are computed from it).
    fn now_ms(&self) -> i64;

    /// The longest `unique_key` the counters accept, in bytes.
    fn max_key_bytes(&self) -> usize;
}

impl Counters for Node {
    async fn evaluate(
        &self,
        items: Vec<proto::RateLimitReq>,
    ) -> Result<Vec<proto::RateLimitResp>, String> {
        self.get_rate_limits(items)
            .await
            .map_err(|error| error.to_string())
    }

    fn now_ms(&self) -> i64 {
        self.clock_now_ms()
    }

    fn max_key_bytes(&self) -> usize {
        self.limits().max_key_bytes
    }
}

#[cfg(test)]
pub mod fake {
    //! An in-memory [`Counters`] with the real algorithms and a manual clock.

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::Counters;
    use crate::algorithms::{self, Bucket, Next};
    use crate::clock::{Clock, ManualClock};
    use crate::proto;
    use crate::request::{self, InputLimits};

    /// Buckets in a map, evaluated by [`algorithms::evaluate`] at the clock's time.
    #[derive(Default)]
    pub struct LocalCounters {
        /// The clock; advance it to move windows.
        pub clock: Arc<ManualClock>,
        buckets: Mutex<HashMap<(String, String), Bucket>>,
        /// Every batch evaluated, for assertions.
        pub calls: Mutex<Vec<Vec<proto::RateLimitReq>>>,
    }

    impl LocalCounters {
        /// Counters at `now_ms`.
        pub fn at(now_ms: i64) -> Self {
            Self {
                clock: Arc::new(ManualClock::new(now_ms)),
                ..Self::default()
            }
        }

        /// How many buckets exist.
        pub fn buckets(&self) -> usize {
            self.buckets.lock().unwrap().len()
        }
    }

    impl Counters for LocalCounters {
        async fn evaluate(
            &self,
            items: Vec<proto::RateLimitReq>,
        ) -> Result<Vec<proto::RateLimitResp>, String> {
            self.calls.lock().unwrap().push(items.clone());
            let now = self.clock.now_ms();
            let mut buckets = self.buckets.lock().unwrap();
            let mut out = Vec::new();
            for item in items {
                let request = request::validate(&item, now, InputLimits::default())
                    .map_err(|error| error.to_string())?;
                let key = (item.name.clone(), item.unique_key.clone());
                let evaluation = algorithms::evaluate(buckets.get(&key), &request, now);
                match evaluation.next {
                    Next::Put(bucket) => {
                        buckets.insert(key, bucket);
                    }
                    Next::Remove => {
                        buckets.remove(&key);
                    }
                    Next::Unchanged => {}
                }
                let decision = evaluation.decision;
                out.push(proto::RateLimitResp {
                    status: i32::from(decision.status == algorithms::Status::OverLimit),
                    limit: decision.limit,
                    remaining: decision.remaining,
                    reset_time: decision.reset_time,
                    ..Default::default()
                });
            }
            Ok(out)
        }

        fn now_ms(&self) -> i64 {
            self.clock.now_ms()
        }

        fn max_key_bytes(&self) -> usize {
            InputLimits::default().max_key_bytes
        }
    }
}
