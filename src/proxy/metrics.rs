//! The proxy's own metrics: what it decided for each request, how long the cluster took to decide,
//! and how the upstream answered.
//!
//! With an embedded node they are registered in the node's registry, so the node's `/metrics`
//! (on `GUBER_HTTP_ADDRESS`) shows them beside the node's; with `--remote` there is no node, and
//! `GUBER_PROXY_METRICS_ADDRESS` serves them (and the `process_*` metrics) on a listener of their
//! own. The proxy's client port never serves `/metrics`: every path there belongs to the upstream.
//! Every label value is one of a fixed set, created at 0, so no client input reaches a label.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::core::Collector;
use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder};

/// What the proxy did with one request (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The cluster allowed it; it went to the upstream.
    Allowed,
    /// The cluster refused it: 429.
    Denied,
    /// Its rule is unlimited: it went to the upstream without a decision.
    Unlimited,
    /// The key header cannot be a limit key: 400, never forwarded.
    InvalidKey,
    /// The cluster refused the item as invalid: 400, never forwarded.
    RejectedItem,
    /// The cluster could not decide and `GUBER_PROXY_ON_CLUSTER_ERROR=open` let it through.
    ClusterErrorOpen,
    /// The cluster could not decide and `GUBER_PROXY_ON_CLUSTER_ERROR=closed` refused it: 503.
    ClusterErrorClosed,
}

impl RequestOutcome {
    /// Every outcome, for the counters created at 0.
    pub const ALL: [RequestOutcome; 7] = [
        RequestOutcome::Allowed,
        RequestOutcome::Denied,
        RequestOutcome::Unlimited,
        RequestOutcome::InvalidKey,
        RequestOutcome::RejectedItem,
        RequestOutcome::ClusterErrorOpen,
        RequestOutcome::ClusterErrorClosed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Allowed => "allowed",
            RequestOutcome::Denied => "denied",
            RequestOutcome::Unlimited => "unlimited",
            RequestOutcome::InvalidKey => "invalid_key",
            RequestOutcome::RejectedItem => "rejected_item",
            RequestOutcome::ClusterErrorOpen => "cluster_error_open",
            RequestOutcome::ClusterErrorClosed => "cluster_error_closed",
        }
    }
}

/// How a forwarded request ended at the upstream (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamResult {
    /// The upstream answered (any status).
    Answered,
    /// The upstream could not be reached or failed: 502.
    BadGateway,
    /// The upstream did not answer within `GUBER_PROXY_UPSTREAM_TIMEOUT`: 504.
    Timeout,
    /// The client's body did not arrive within `GUBER_PROXY_BODY_TIMEOUT`: 408.
    ClientBodyTimeout,
    /// The path could not be joined to the upstream's: 400.
    BadPath,
}

impl UpstreamResult {
    /// Every result, for the counters created at 0.
    pub const ALL: [UpstreamResult; 5] = [
        UpstreamResult::Answered,
        UpstreamResult::BadGateway,
        UpstreamResult::Timeout,
        UpstreamResult::ClientBodyTimeout,
        UpstreamResult::BadPath,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamResult::Answered => "answered",
            UpstreamResult::BadGateway => "bad_gateway",
            UpstreamResult::Timeout => "timeout",
            UpstreamResult::ClientBodyTimeout => "client_body_timeout",
            UpstreamResult::BadPath => "bad_path",
        }
    }
}

/// The proxy's metrics.
pub struct ProxyMetrics {
    registry: Registry,
    requests: IntCounterVec,
    decision_seconds: Histogram,
    upstream: IntCounterVec,
    upstream_seconds: Histogram,
}

/// Latency buckets from 100 µs to 10 s.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// A counter with one label, every value in `values` started at 0.
fn labelled_counter<const N: usize>(
    name: &str,
    help: &str,
    label: &str,
    values: [&str; N],
) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    for value in values {
        counter.with_label_values(&[value]);
    }
    counter
}

/// A latency histogram over [`BUCKETS`].
fn latency(name: &str, help: &str) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()))
        .expect("valid metric")
}

impl ProxyMetrics {
    /// Creates the metrics, every labelled counter at 0, in a registry of their own.
    pub fn new() -> Self {
        let requests = labelled_counter(
            "ringlimit_proxy_requests_total",
            "Requests the proxy handled, by what it did with them.",
            "outcome",
            RequestOutcome::ALL.map(RequestOutcome::as_str),
        );
        let upstream = labelled_counter(
            "ringlimit_proxy_upstream_requests_total",
            "Requests the proxy sent to the upstream, by how they ended.",
            "result",
            UpstreamResult::ALL.map(UpstreamResult::as_str),
        );
        let decision_seconds = latency(
            "ringlimit_proxy_decision_duration_seconds",
            "How long the cluster took to decide one request.",
        );
        let upstream_seconds = latency(
            "ringlimit_proxy_upstream_duration_seconds",
            "How long the upstream took to start answering (its response head).",
        );
        let metrics = Self {
            registry: Registry::new(),
            requests,
            decision_seconds,
            upstream,
            upstream_seconds,
        };
        for collector in metrics.collectors() {
            // Fresh registry, distinct constant names: registration cannot fail.
            let _ = metrics.registry.register(collector);
        }
        metrics
    }

    /// The collectors, to register them in another registry too (an embedded node's).
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.decision_seconds.clone()),
            Box::new(self.upstream.clone()),
            Box::new(self.upstream_seconds.clone()),
        ]
    }

    /// Counts one request's outcome.
    pub fn request(&self, outcome: RequestOutcome) {
        self.requests.with_label_values(&[outcome.as_str()]).inc();
    }

    /// Records how long a decision took.
    pub fn decision(&self, elapsed: std::time::Duration) {
        self.decision_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts how a forwarded request ended, and how long the upstream took when it answered.
    pub fn upstream(&self, result: UpstreamResult, elapsed: Option<std::time::Duration>) {
        self.upstream.with_label_values(&[result.as_str()]).inc();
        if let Some(elapsed) = elapsed {
            self.upstream_seconds.observe(elapsed.as_secs_f64());
        }
    }

    /// The proxy's metrics and the `process_*` metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        if let Some(stats) = crate::metrics::process::read() {
            families.extend(crate::metrics::process::families(&stats));
        }
        let mut buffer = Vec::new();
        if TextEncoder::new().encode(&families, &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics` for the proxy's own metrics listener (`GUBER_PROXY_METRICS_ADDRESS`).
pub fn router(metrics: Arc<ProxyMetrics>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(metrics)
}

async fn render(State(metrics): State<Arc<ProxyMetrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_value_is_exported_at_zero_before_any_request() {
        let metrics = ProxyMetrics::new();
        let text = metrics.render();
        for outcome in RequestOutcome::ALL {
            assert!(
                text.contains(&format!(
                    "ringlimit_proxy_requests_total{{outcome=\"{}\"}} 0",
                    outcome.as_str()
                )),
                "{text}"
            );
        }
        for result in UpstreamResult::ALL {
            assert!(text.contains(&format!(
                "ringlimit_proxy_upstream_requests_total{{result=\"{}\"}} 0",
                result.as_str()
            )));
        }
        assert!(text.contains("ringlimit_proxy_decision_duration_seconds_count 0"));
    }

    #[test]
    fn counts_and_durations_are_recorded() {
        let metrics = ProxyMetrics::new();
        metrics.request(RequestOutcome::Denied);
        metrics.request(RequestOutcome::Denied);
        metrics.decision(std::time::Duration::from_millis(2));
        metrics.upstream(
            UpstreamResult::Answered,
            Some(std::time::Duration::from_millis(3)),
        );
        metrics.upstream(UpstreamResult::Timeout, None);
        let text = metrics.render();
        assert!(text.contains("ringlimit_proxy_requests_total{outcome=\"denied\"} 2"));
        assert!(text.contains("ringlimit_proxy_decision_duration_seconds_count 1"));
        assert!(text.contains("ringlimit_proxy_upstream_requests_total{result=\"answered\"} 1"));
        assert!(text.contains("ringlimit_proxy_upstream_requests_total{result=\"timeout\"} 1"));
        assert!(text.contains("ringlimit_proxy_upstream_duration_seconds_count 1"));
    }
}
