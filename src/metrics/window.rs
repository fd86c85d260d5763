//! A bounded sliding-window quantile estimator, the engine of [`super::summary`].
//!
//! Gubernator's latency metrics are Prometheus Summaries: quantiles over the last ten minutes
//! (client_golang's default `MaxAge`, in five age buckets). The prometheus crate has no Summary
//! with quantiles, so this keeps them itself. The window is a ring of age buckets; each holds a
//! uniform sample (reservoir sampling) of at most `capacity` observations of its span and how many
//! it saw, so memory is fixed however busy the node is. A quantile merges the live buckets, each
//! sample weighted by how many observations it stands for. It is pure: time is passed in.

use std::time::{Duration, Instant};

/// One age bucket: a uniform sample of the observations of its span.
#[derive(Debug, Clone, Default)]
struct AgeBucket {
    samples: Vec<f64>,
    /// Observations seen in this span (at least `samples.len()`).
    seen: u64,
}

/// Quantiles of the observations of the last `max_age`, in bounded memory.
#[derive(Debug, Clone)]
pub struct SlidingQuantiles {
    span: Duration,
    buckets: Vec<AgeBucket>,
    /// The bucket observations go to.
    current: usize,
    /// When the current bucket's span started.
    current_start: Instant,
    capacity: usize,
    /// xorshift64 state for reservoir sampling (deterministic, never 0).
    rng: u64,
}

impl SlidingQuantiles {
    /// A window of `max_age` in `age_buckets` buckets of at most `capacity` samples each, starting
    /// at `now`. Zero values are raised to one bucket, one sample and one millisecond.
    pub fn new(max_age: Duration, age_buckets: usize, capacity: usize, now: Instant) -> Self {
        let age_buckets = age_buckets.max(1);
        let span = (max_age / u32::try_from(age_buckets).unwrap_or(u32::MAX))
            .max(Duration::from_millis(1));
        Self {
            span,
            buckets: vec![AgeBucket::default(); age_buckets],
            current: 0,
            current_start: now,
            capacity: capacity.max(1),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Records `value` at `now`. NaN is ignored.
    pub fn observe(&mut self, value: f64, now: Instant) {
        if value.is_nan() {
            return;
        }
        self.rotate(now);
        let capacity = self.capacity;
        let draw = self.next_random();
        let bucket = &mut self.buckets[self.current];
        bucket.seen += 1;
        if bucket.samples.len() < capacity {
            bucket.samples.push(value);
        } else {
            // Reservoir sampling: keep each of the `seen` observations with equal chance.
            let slot = draw % bucket.seen;
            if let Ok(slot) = usize::try_from(slot)
                && slot < capacity
            {
                bucket.samples[slot] = value;
            }
        }
    }

    /// The value at each quantile `q` (0 ≤ q ≤ 1) of the observations of the last `max_age` at
    /// `now`: the smallest sample whose cumulative weight reaches `q` of the total. NaN for each
    /// when the window is empty, as client_golang reports it.
    pub fn quantiles(&mut self, qs: &[f64], now: Instant) -> Vec<f64> {
        self.rotate(now);
        let mut weighted: Vec<(f64, f64)> = Vec::new();
        for bucket in &self.buckets {
            if bucket.samples.is_empty() {
                continue;
            }
            let weight = bucket.seen as f64 / bucket.samples.len() as f64;
            weighted.extend(bucket.samples.iter().map(|value| (*value, weight)));
        }
        if weighted.is_empty() {
            return vec![f64::NAN; qs.len()];
        }
        weighted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f64 = weighted.iter().map(|(_, weight)| weight).sum();
        qs.iter()
            .map(|q| {
                let target = q.clamp(0.0, 1.0) * total;
                let mut cumulative = 0.0;
                for (value, weight) in &weighted {
                    cumulative += weight;
                    if cumulative >= target {
                        return *value;
                    }
                }
                weighted.last().map_or(f64::NAN, |(value, _)| *value)
            })
            .collect()
    }

    /// How many samples are held (at most `age_buckets × capacity`).
    pub fn held(&self) -> usize {
        self.buckets.iter().map(|bucket| bucket.samples.len()).sum()
    }

    /// Moves to the bucket of `now`, clearing the buckets whose span is over.
    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.current_start);
        if elapsed < self.span {
            return;
        }
        let steps = elapsed.as_nanos() / self.span.as_nanos().max(1);
        let count = self.buckets.len();
        if steps >= count as u128 {
            for bucket in &mut self.buckets {
                *bucket = AgeBucket::default();
            }
        } else {
            for _ in 0..steps {
                self.current = (self.current + 1) % count;
                self.buckets[self.current] = AgeBucket::default();
            }
        }
        let steps = u32::try_from(steps).unwrap_or(u32::MAX);
        self.current_start = self
            .current_start
            .checked_add(self.span.saturating_mul(steps))
            .unwrap_or(now);
    }

    fn next_random(&mut self) -> u64 {
        crate::xorshift::next(&mut self.rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn an_empty_window_reports_nan() {
        let now = Instant::now();
        let mut window = SlidingQuantiles::new(10 * MINUTE, 5, 100, now);
        assert!(
            window
                .quantiles(&[0.5, 0.99], now)
                .iter()
                .all(|q| q.is_nan())
        );
    }

    #[test]
    fn quantiles_of_a_small_set_are_exact() {
        let now = Instant::now();
        let mut window = SlidingQuantiles::new(10 * MINUTE, 5, 1000, now);
        for value in 1..=100 {
            window.observe(f64::from(value), now);
        }
        assert_eq!(
            window.quantiles(&[0.0, 0.5, 0.99, 1.0], now),
            [1.0, 50.0, 99.0, 100.0]
        );
    }

    #[test]
    fn memory_is_bounded_and_sampled_quantiles_stay_close() {
        let now = Instant::now();
        let mut window = SlidingQuantiles::new(10 * MINUTE, 5, 500, now);
        for i in 0..200_000u32 {
            window.observe(f64::from(i % 1000), now);
        }
        assert!(window.held() <= 5 * 500);
        let q = window.quantiles(&[0.5, 0.99], now);
        assert!((q[0] - 500.0).abs() < 60.0, "p50 {}", q[0]);
        assert!((q[1] - 990.0).abs() < 15.0, "p99 {}", q[1]);
    }

    #[test]
    fn old_observations_leave_the_window() {
        let start = Instant::now();
        let mut window = SlidingQuantiles::new(10 * MINUTE, 5, 100, start);
        window.observe(1000.0, start);
        // Still inside the window after 9 minutes.
        window.observe(1.0, start + 9 * MINUTE);
        assert_eq!(window.quantiles(&[1.0], start + 9 * MINUTE), [1000.0]);
        // Its bucket (0–2 min) is gone after 10 minutes; the later one stays.
        assert_eq!(window.quantiles(&[1.0], start + 10 * MINUTE), [1.0]);
        // Everything is gone after a long pause.
        assert!(window.quantiles(&[0.5], start + 60 * MINUTE)[0].is_nan());
        window.observe(7.0, start + 61 * MINUTE);
        assert_eq!(window.quantiles(&[0.5], start + 61 * MINUTE), [7.0]);
    }

    #[test]
    fn busier_buckets_weigh_more() {
        let start = Instant::now();
        let mut window = SlidingQuantiles::new(10 * MINUTE, 5, 10, start);
        // 1000 observations of 1.0 in the first bucket, 10 of 100.0 in the second: each bucket
        // holds 10 samples, but the first stands for 100 times as many.
        for _ in 0..1000 {
            window.observe(1.0, start);
        }
        for _ in 0..10 {
            window.observe(100.0, start + 3 * MINUTE);
        }
        assert_eq!(
            window.quantiles(&[0.5, 0.98], start + 3 * MINUTE),
            [1.0, 1.0]
        );
        assert_eq!(window.quantiles(&[1.0], start + 3 * MINUTE), [100.0]);
    }

    #[test]
    fn nan_is_ignored() {
        let now = Instant::now();
        let mut window = SlidingQuantiles::new(MINUTE, 1, 10, now);
        window.observe(f64::NAN, now);
        window.observe(2.0, now);
        assert_eq!(window.quantiles(&[0.5], now), [2.0]);
    }
}
