//! `SummaryVec`: a Prometheus Summary with quantiles, which the prometheus crate lacks.
//!
//! Gubernator exports `gubernator_grpc_request_duration` as a Summary (`quantile` 0.5 and 0.99 over
//! the last ten minutes, plus `_sum` and `_count`), and dashboards built for it read the
//! `quantile` series. This collector keeps one [`SlidingQuantiles`] window, a count and a sum per
//! label value, and renders them as `MetricType::SUMMARY`. The label it takes must have a bounded
//! set of values (method names here): each value keeps a window of fixed size.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType, Quantile, Summary};

use super::window::SlidingQuantiles;

/// Gubernator's (client_golang's default) window: ten minutes in five age buckets.
pub const MAX_AGE: Duration = Duration::from_secs(600);
/// Age buckets of the window.
pub const AGE_BUCKETS: usize = 5;
/// Samples kept per age bucket and label value.
pub const SAMPLES_PER_BUCKET: usize = 512;

/// Why a summary could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// The name, help or label is not a valid Prometheus descriptor.
    #[error("invalid summary descriptor: {0}")]
    Desc(#[from] prometheus::Error),
    /// A quantile outside 0..=1.
    #[error("quantile {0} is outside 0..=1")]
    Quantile(f64),
}

/// One label value's state.
struct Series {
    window: SlidingQuantiles,
    count: u64,
    sum: f64,
}

/// A Summary with one label, its quantiles over a sliding window.
#[derive(Clone)]
pub struct SummaryVec {
    inner: Arc<Inner>,
}

struct Inner {
    desc: Desc,
    /// The label's name; `None` for a summary without labels (its one series has value "").
    label: Option<String>,
    quantiles: Vec<f64>,
    series: Mutex<BTreeMap<String, Series>>,
}

impl SummaryVec {
    /// A summary `name` with one `label` reporting `quantiles` (each in 0..=1).
    pub fn new(
        name: &str,
        help: &str,
        label: &str,
        quantiles: &[f64],
    ) -> Result<Self, SummaryError> {
        Self::build(name, help, Some(label), quantiles)
    }

    /// A summary `name` without labels, its one series exported from the start (count 0,
    /// quantiles NaN until the first observation); record with `observe("", value)` or
    /// [`SummaryVec::observe_one`].
    pub fn unlabelled(name: &str, help: &str, quantiles: &[f64]) -> Result<Self, SummaryError> {
        let summary = Self::build(name, help, None, quantiles)?;
        summary.touch("");
        Ok(summary)
    }

    fn build(
        name: &str,
        help: &str,
        label: Option<&str>,
        quantiles: &[f64],
    ) -> Result<Self, SummaryError> {
        if let Some(bad) = quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            return Err(SummaryError::Quantile(*bad));
        }
        let desc = Desc::new(
            name.to_string(),
            help.to_string(),
            label.map(str::to_string).into_iter().collect(),
            Default::default(),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                desc,
                label: label.map(str::to_string),
                quantiles: quantiles.to_vec(),
                series: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    /// Records `value` in a summary without labels.
    pub fn observe_one(&self, value: f64) {
        self.observe("", value);
    }

    /// The series of `label_value`, created now (at 0) and recorded through the handle without
    /// naming the label again.
    pub fn with_label_value(&self, label_value: &str) -> SummarySeries {
        self.touch(label_value);
        SummarySeries {
            summary: self.clone(),
            label_value: label_value.into(),
        }
    }

    /// Creates the series of `label_value` (count 0, quantiles NaN) if it has none, so it is
    /// exported before its first observation.
    pub fn touch(&self, label_value: &str) {
        self.series_entry(label_value, Instant::now(), |_| {});
    }

    /// Records `value` for `label_value` now.
    pub fn observe(&self, label_value: &str, value: f64) {
        self.observe_at(label_value, value, Instant::now());
    }

    /// Records `value` for `label_value` at `now`.
    pub fn observe_at(&self, label_value: &str, value: f64, now: Instant) {
        self.series_entry(label_value, now, |series| {
            series.window.observe(value, now);
            series.count += 1;
            series.sum += value;
        });
    }

    /// Runs `update` on the series of `label_value`, created if missing.
    fn series_entry(&self, label_value: &str, now: Instant, update: impl FnOnce(&mut Series)) {
        let mut series = self.lock();
        if let Some(entry) = series.get_mut(label_value) {
            update(entry);
            return;
        }
        let mut entry = Series {
            window: SlidingQuantiles::new(MAX_AGE, AGE_BUCKETS, SAMPLES_PER_BUCKET, now),
            count: 0,
            sum: 0.0,
        };
        update(&mut entry);
        series.insert(label_value.to_string(), entry);
    }

    /// The metric family at `now`.
    pub fn family_at(&self, now: Instant) -> MetricFamily {
        let mut metrics = Vec::new();
        for (label_value, series) in self.lock().iter_mut() {
            let values = series.window.quantiles(&self.inner.quantiles, now);
            let quantiles = self
                .inner
                .quantiles
                .iter()
                .zip(values)
                .map(|(q, value)| {
                    let mut quantile = Quantile::default();
                    quantile.set_quantile(*q);
                    quantile.set_value(value);
                    quantile
                })
                .collect();
            let mut summary = Summary::default();
            summary.set_sample_count(series.count);
            summary.set_sample_sum(series.sum);
            summary.set_quantile(quantiles);
            let labels = match &self.inner.label {
                Some(name) => {
                    let mut label = LabelPair::default();
                    label.set_name(name.clone());
                    label.set_value(label_value.clone());
                    vec![label]
                }
                None => Vec::new(),
            };
            let mut metric = Metric::from_label(labels);
            metric.set_summary(summary);
            metrics.push(metric);
        }
        let mut family = MetricFamily::default();
        family.set_name(self.inner.desc.fq_name.clone());
        family.set_help(self.inner.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(metrics);
        family
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Series>> {
        crate::mutex::lock(&self.inner.series)
    }
}

/// One label value's series of a [`SummaryVec`].
#[derive(Clone)]
pub struct SummarySeries {
    summary: SummaryVec,
    label_value: Arc<str>,
}

impl SummarySeries {
    /// Records `value` now.
    pub fn observe(&self, value: f64) {
        self.summary.observe(&self.label_value, value);
    }
}

impl Collector for SummaryVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.inner.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let family = self.family_at(Instant::now());
        if family.get_metric().is_empty() {
            // The text format would print a header without samples; leave it out until used.
            return Vec::new();
        }
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    #[test]
    fn renders_as_a_prometheus_summary_with_quantiles() {
        let summary = SummaryVec::new("test_duration", "Test.", "method", &[0.5, 0.99]).unwrap();
        let registry = Registry::new();
        registry.register(Box::new(summary.clone())).unwrap();
        for value in 1..=100 {
            summary.observe("/a", f64::from(value) / 1000.0);
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("# TYPE test_duration summary"), "{text}");
        assert!(
            text.contains(r#"test_duration{method="/a",quantile="0.5"} 0.05"#),
            "{text}"
        );
        assert!(
            text.contains(r#"test_duration{method="/a",quantile="0.99"} 0.099"#),
            "{text}"
        );
        assert!(
            text.contains(r#"test_duration_count{method="/a"} 100"#),
            "{text}"
        );
        assert!(
            text.contains(r#"test_duration_sum{method="/a"} 5.05"#),
            "{text}"
        );
    }

    #[test]
    fn an_unlabelled_summary_and_a_series_handle_render() {
        let plain = SummaryVec::unlabelled("plain_duration", "Plain.", &[0.5, 0.99]).unwrap();
        let peer = SummaryVec::new("peer_duration", "Peer.", "peerAddr", &[0.99]).unwrap();
        let registry = Registry::new();
        registry.register(Box::new(plain.clone())).unwrap();
        registry.register(Box::new(peer.clone())).unwrap();
        let render = || {
            let mut text = Vec::new();
            TextEncoder::new()
                .encode(&registry.gather(), &mut text)
                .unwrap();
            String::from_utf8(text).unwrap()
        };
        let text = render();
        assert!(text.contains("# TYPE plain_duration summary"), "{text}");
        assert!(text.contains("plain_duration_count 0"), "{text}");
        assert!(
            text.contains(r#"plain_duration{quantile="0.5"} NaN"#),
            "{text}"
        );
        let series = peer.with_label_value("10.0.0.1:1051");
        assert!(
            render().contains(r#"peer_duration_count{peerAddr="10.0.0.1:1051"} 0"#),
            "{text}"
        );
        plain.observe_one(0.25);
        series.observe(0.5);
        let text = render();
        assert!(
            text.contains(r#"plain_duration{quantile="0.99"} 0.25"#),
            "{text}"
        );
        assert!(text.contains("plain_duration_sum 0.25"), "{text}");
        assert!(
            text.contains(r#"peer_duration{peerAddr="10.0.0.1:1051",quantile="0.99"} 0.5"#),
            "{text}"
        );
    }

    #[test]
    fn quantiles_must_be_fractions() {
        assert!(SummaryVec::new("x", "X.", "m", &[1.5]).is_err());
    }
}
