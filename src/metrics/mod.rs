//! Prometheus metrics, under the names Gubernator exposes so that existing dashboards keep working.
//!
//! One [`Metrics`] value owns a registry; the node records into it and `GET /metrics` renders it.
//! Counters with a known set of label values start at 0 for each, so dashboards read 0 rather than
//! "No data" before the first event. `gubernator_grpc_request_duration` is a Summary with
//! Gubernator's quantiles ([`summary`]); the same latencies are also a histogram under
//! `ringlimit_grpc_request_duration_seconds`, which, unlike quantiles, aggregates across nodes.
//! The `process_*` family comes from [`process`].

pub mod process;
pub mod summary;
pub mod window;

use crate::peer_auth::PeerService;
use crate::request::ItemError;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The fully qualified gRPC method names, as metrics label them (the handlers in `grpc` and
/// `http` observe under them; kept here so the metrics depend on no surface).
pub mod method {
    /// `V1.GetRateLimits`.
    pub const GET_RATE_LIMITS: &str = "/pb.gubernator.V1/GetRateLimits";
    /// `V1.HealthCheck`.
    pub const HEALTH_CHECK: &str = "/pb.gubernator.V1/HealthCheck";
    /// `V1.LiveCheck`.
    pub const LIVE_CHECK: &str = "/pb.gubernator.V1/LiveCheck";
    /// `PeersV1.GetPeerRateLimits`.
    pub const GET_PEER_RATE_LIMITS: &str = "/pb.gubernator.PeersV1/GetPeerRateLimits";
    /// `PeersV1.UpdatePeerGlobals`.
    pub const UPDATE_PEER_GLOBALS: &str = "/pb.gubernator.PeersV1/UpdatePeerGlobals";
}

/// Gubernator's quantiles of `gubernator_grpc_request_duration` (its `Objectives` 0.5 and 0.99).
pub const REQUEST_DURATION_QUANTILES: [f64; 2] = [0.5, 0.99];
/// Gubernator's quantiles of `gubernator_global_send_duration` and
/// `gubernator_broadcast_duration` (0.5 and 0.99).
pub const GLOBAL_DURATION_QUANTILES: [f64; 2] = [0.5, 0.99];
/// Gubernator's quantile of `gubernator_batch_send_duration` (0.99 only).
pub const BATCH_SEND_DURATION_QUANTILES: [f64; 1] = [0.99];

/// The `error` label of items whose owner could not be reached.
pub const CHECK_ERROR_FORWARD_FAILED: &str = "forward_failed";

/// The methods `gubernator_grpc_request_counts` and the durations are recorded under.
const KNOWN_METHODS: [&str; 5] = [
    method::GET_RATE_LIMITS,
    method::HEALTH_CHECK,
    method::LIVE_CHECK,
    method::GET_PEER_RATE_LIMITS,
    method::UPDATE_PEER_GLOBALS,
];

/// The node's metrics and the registry they are served from.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `gubernator_getratelimit_counter{calltype}`: items evaluated, by how.
    pub getratelimit_counter: IntCounterVec,
    /// `gubernator_over_limit_counter`: items answered OVER_LIMIT.
    pub over_limit_counter: IntCounter,
    /// `gubernator_check_error_counter{error}`: items answered with an error.
    pub check_error_counter: IntCounterVec,
    /// `gubernator_cache_access_count{type}`: store lookups that found a live bucket or not.
    pub cache_access_count: IntCounterVec,
    /// `gubernator_unexpired_evictions_count`: buckets evicted for room before they expired.
    pub unexpired_evictions_count: IntCounter,
    /// `gubernator_cache_size`: buckets held.
    pub cache_size: IntGauge,
    /// `gubernator_concurrent_checks_counter`: `GetRateLimits` calls in progress.
    pub concurrent_checks: IntGauge,
    /// `gubernator_grpc_request_counts{status,method}`: API calls by outcome.
    pub request_counts: IntCounterVec,
    /// `gubernator_grpc_request_duration{method}`: API call latency in seconds, a Summary with
    /// quantiles 0.5 and 0.99 over the last ten minutes, as Gubernator exports it.
    pub request_duration: summary::SummaryVec,
    /// `ringlimit_grpc_request_duration_seconds{method}`: the same latency as a histogram (it
    /// was `gubernator_grpc_request_duration` before that became a Summary).
    pub grpc_request_duration_seconds: HistogramVec,
    /// The `process_*` metrics.
    pub process: process::ProcessCollector,
    /// `ringlimit_forwarded_items_total{peer}`: items forwarded to their owner.
    pub forwarded_items: IntCounterVec,
    /// `ringlimit_peer_calls_total{peer}`: `GetPeerRateLimits` calls made (items / calls is the
    /// batching ratio).
    pub peer_calls: IntCounterVec,
    /// `gubernator_batch_send_duration{peerAddr}`: latency of calls to a peer in seconds, a
    /// Summary with quantile 0.99, as Gubernator exports it.
    pub batch_send_duration: summary::SummaryVec,
    /// `ringlimit_batch_send_duration_seconds{peerAddr}`: the same latency as a histogram (it was
    /// `gubernator_batch_send_duration` before that became a Summary).
    pub batch_send_duration_seconds: HistogramVec,
    /// `ringlimit_peer_call_items{peerAddr}`: items carried by each batched call to a peer (1 when
    /// the peer was idle and the item went at once; more when items queued behind a call).
    pub peer_call_items: HistogramVec,
    /// `gubernator_batch_send_retries{name}`: forwarded items retried after re-resolving the owner.
    pub batch_send_retries: IntCounterVec,
    /// `gubernator_global_send_duration`: seconds to send owed GLOBAL hits to their owners, a
    /// Summary with quantiles 0.5 and 0.99, as Gubernator exports it.
    pub global_send_duration: summary::SummaryVec,
    /// `ringlimit_global_send_duration_seconds`: the same as a histogram.
    pub global_send_duration_seconds: Histogram,
    /// `gubernator_global_send_errors`: failed calls sending GLOBAL hits (the hits are retried).
    pub global_send_errors: IntCounter,
    /// `gubernator_global_send_queue_length`: limits with GLOBAL hits waiting for their owner.
    pub global_send_queue_length: IntGauge,
    /// `gubernator_global_queue_length`: GLOBAL limits waiting to be broadcast.
    pub global_queue_length: IntGauge,
    /// `gubernator_broadcast_duration`: seconds to broadcast GLOBAL state to the peers, a Summary
    /// with quantiles 0.5 and 0.99, as Gubernator exports it.
    pub broadcast_duration: summary::SummaryVec,
    /// `ringlimit_broadcast_duration_seconds`: the same as a histogram.
    pub broadcast_duration_seconds: Histogram,
    /// `gubernator_broadcast_errors`: failed broadcast calls (the state is resent).
    pub broadcast_errors: IntCounter,
    /// `gubernator_updatepeerglobals_counter`: GLOBAL states received from owners.
    pub updatepeerglobals_counter: IntCounter,
    /// `ringlimit_global_hits_dropped_total`: limits whose owed GLOBAL hits were dropped because
    /// the retry queue was full.
    pub global_hits_dropped: IntCounter,
    /// `gubernator_batch_queue_length{peerAddr}`: items waiting to be forwarded to a peer.
    pub batch_queue_length: IntGaugeVec,
    /// `ringlimit_decisions_total{status}`: answered items by decision (`under`, `over`).
    pub decisions: IntCounterVec,
    /// `ringlimit_request_duration_seconds{method,surface}`: API call latency by surface
    /// (`grpc`, `http`).
    pub request_duration_seconds: HistogramVec,
    /// `ringlimit_items_per_call`: items in each `GetRateLimits` call.
    pub items_per_call: Histogram,
    /// `ringlimit_cache_evictions_total{cause}`: buckets removed from memory (`size`: evicted for
    /// room; `expired`: past their window).
    pub cache_evictions: IntCounterVec,
    /// `ringlimit_peers{scope}`: peers known (`local` data center, `region`: others).
    pub peers: IntGaugeVec,
    /// `ringlimit_etcd_registered`: 1 while this node is registered in etcd.
    pub etcd_registered: IntGauge,
    /// `ringlimit_kubernetes_watch_errors_total`: failed list or watch attempts of Kubernetes discovery
    /// (each retry counts; the log has one line per outage).
    pub k8s_watch_errors: IntCounter,
    /// `ringlimit_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `ringlimit_peer_auth_refused_total{service}`: peer-plane calls refused with
    /// `UNAUTHENTICATED` (no verified client certificate, or a missing or wrong peer secret), by
    /// service (`peers`, `handoff`, `admin`, `allow`, `other`).
    pub peer_auth_refused: IntCounterVec,
    /// `ringlimit_peer_input_rejected_total{reason}`: peer-call content this node ignored because
    /// it could corrupt what it owns (see [`PeerInputRejection`]).
    pub peer_input_rejected: IntCounterVec,
    /// `ringlimit_peer_items_dropped_total{message,reason}`: items dropped instead of sent to a
    /// peer, by message ([`DroppedMessage`]) and reason ([`DropReason`]); both label sets are fixed.
    pub peer_items_dropped: IntCounterVec,
    /// r8limiter's `requests_total{result}`: `/allow` decisions, `allow` or `deny`.
    pub r8_requests: IntCounterVec,
    /// r8limiter's `active_keys`: buckets held by this node (the same count as
    /// `gubernator_cache_size`).
    pub r8_active_keys: IntGauge,
    /// r8limiter's `request_latency_seconds{endpoint}`: `/allow` latency (the one endpoint value
    /// is `/allow`), with r8limiter's buckets.
    pub r8_latency: HistogramVec,
    /// The values `gubernator_batch_send_retries{name}` may carry: client-chosen names are
    /// bounded (see [`BoundedLabel`]).
    pub retry_names: std::sync::Arc<BoundedLabel>,
}

/// Why peer-call content was ignored: the `reason` label of `ringlimit_peer_input_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerInputRejection {
    /// An `UpdatePeerGlobals` state for a key this node owns (only the owner's state is true).
    UpdateOwnedKey,
    /// An `UpdatePeerGlobals` key longer than two keys of `GUBER_MAX_KEY_LENGTH` joined.
    UpdateKeyTooLong,
    /// A `Handoff.Transfer` from a sender that is not, and was not recently, a member.
    TransferNotMember,
    /// A `Handoff.Transfer` bucket that failed validation (skipped).
    TransferInvalidBucket,
    /// A snapshot bucket that failed validation (skipped at start).
    SnapshotInvalidBucket,
}

impl PeerInputRejection {
    /// Every reason, for the counter's series at 0.
    pub const ALL: [PeerInputRejection; 5] = [
        PeerInputRejection::UpdateOwnedKey,
        PeerInputRejection::UpdateKeyTooLong,
        PeerInputRejection::TransferNotMember,
        PeerInputRejection::TransferInvalidBucket,
        PeerInputRejection::SnapshotInvalidBucket,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            PeerInputRejection::UpdateOwnedKey => "update_owned_key",
            PeerInputRejection::UpdateKeyTooLong => "update_key_too_long",
            PeerInputRejection::TransferNotMember => "transfer_not_member",
            PeerInputRejection::TransferInvalidBucket => "transfer_invalid_bucket",
            PeerInputRejection::SnapshotInvalidBucket => "snapshot_invalid_bucket",
        }
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            getratelimit_counter: IntCounterVec::new(
                Opts::new(
                    "gubernator_getratelimit_counter",
                    "The count of rate limits evaluated, by call type.",
                ),
                &["calltype"],
            )
            .expect("valid metric"),
            over_limit_counter: IntCounter::new(
                "gubernator_over_limit_counter",
                "The number of rate limit checks that are over the limit.",
            )
            .expect("valid metric"),
            check_error_counter: IntCounterVec::new(
                Opts::new(
                    "gubernator_check_error_counter",
                    "The number of rate limit checks answered with an error.",
                ),
                &["error"],
            )
            .expect("valid metric"),
            cache_access_count: IntCounterVec::new(
                Opts::new(
                    "gubernator_cache_access_count",
                    "Cache accesses, by whether a live entry was found.",
                ),
                &["type"],
            )
            .expect("valid metric"),
            unexpired_evictions_count: IntCounter::new(
                "gubernator_unexpired_evictions_count",
                "Entries evicted for room before they expired.",
            )
            .expect("valid metric"),
            cache_size: IntGauge::new(
                "gubernator_cache_size",
                "The number of rate limits held in memory.",
            )
            .expect("valid metric"),
            concurrent_checks: IntGauge::new(
                "gubernator_concurrent_checks_counter",
                "GetRateLimits calls in progress.",
            )
            .expect("valid metric"),
            request_counts: IntCounterVec::new(
                Opts::new(
                    "gubernator_grpc_request_counts",
                    "API requests, by method and status.",
                ),
                &["status", "method"],
            )
            .expect("valid metric"),
            request_duration: summary::SummaryVec::new(
                "gubernator_grpc_request_duration",
                "The timings of gRPC requests in seconds.",
                "method",
                &REQUEST_DURATION_QUANTILES,
            )
            .expect("valid metric"),
            grpc_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "ringlimit_grpc_request_duration_seconds",
                    "API request latency in seconds, by method (both surfaces).",
                )
                .buckets(latency_buckets()),
                &["method"],
            )
            .expect("valid metric"),
            process: process::ProcessCollector::new(),
            forwarded_items: IntCounterVec::new(
                Opts::new(
                    "ringlimit_forwarded_items_total",
                    "Items forwarded to their owner, by peer.",
                ),
                &["peer"],
            )
            .expect("valid metric"),
            peer_calls: IntCounterVec::new(
                Opts::new(
                    "ringlimit_peer_calls_total",
                    "GetPeerRateLimits calls made, by peer.",
                ),
                &["peer"],
            )
            .expect("valid metric"),
            batch_send_duration: summary::SummaryVec::new(
                "gubernator_batch_send_duration",
                "The timings of batch send operations to a remote peer.",
                "peerAddr",
                &BATCH_SEND_DURATION_QUANTILES,
            )
            .expect("valid metric"),
            batch_send_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "ringlimit_batch_send_duration_seconds",
                    "Latency of batched calls to a peer in seconds.",
                )
                .buckets(latency_buckets()),
                &["peerAddr"],
            )
            .expect("valid metric"),
            peer_call_items: HistogramVec::new(
                HistogramOpts::new(
                    "ringlimit_peer_call_items",
                    "Items carried by each batched call to a peer.",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1000.0,
                ]),
                &["peerAddr"],
            )
            .expect("valid metric"),
            batch_send_retries: IntCounterVec::new(
                Opts::new(
                    "gubernator_batch_send_retries",
                    "Forwarded items retried after re-resolving the owner.",
                ),
                &["name"],
            )
            .expect("valid metric"),
            peer_items_dropped: IntCounterVec::new(
                Opts::new(
                    "ringlimit_peer_items_dropped_total",
                    "Items dropped instead of sent to a peer, by message and reason.",
                ),
                &["message", "reason"],
            )
            .expect("valid metric"),
            retry_names: std::sync::Arc::new(BoundedLabel::new(MAX_NAME_LABELS)),
            global_send_duration: summary::SummaryVec::unlabelled(
                "gubernator_global_send_duration",
                "The duration of GLOBAL async sends in seconds.",
                &GLOBAL_DURATION_QUANTILES,
            )
            .expect("valid metric"),
            global_send_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "ringlimit_global_send_duration_seconds",
                    "Seconds to send owed GLOBAL hits to their owners.",
                )
                .buckets(latency_buckets()),
            )
            .expect("valid metric"),
            global_send_errors: IntCounter::new(
                "gubernator_global_send_errors",
                "Failed calls sending GLOBAL hits to owners.",
            )
            .expect("valid metric"),
            global_send_queue_length: IntGauge::new(
                "gubernator_global_send_queue_length",
                "Limits with GLOBAL hits waiting for their owner.",
            )
            .expect("valid metric"),
            global_queue_length: IntGauge::new(
                "gubernator_global_queue_length",
                "GLOBAL limits waiting to be broadcast.",
            )
            .expect("valid metric"),
            broadcast_duration: summary::SummaryVec::unlabelled(
                "gubernator_broadcast_duration",
                "The duration of GLOBAL broadcasts to peers in seconds.",
                &GLOBAL_DURATION_QUANTILES,
            )
            .expect("valid metric"),
            broadcast_duration_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "ringlimit_broadcast_duration_seconds",
                    "Seconds to broadcast GLOBAL state to the peers.",
                )
                .buckets(latency_buckets()),
            )
            .expect("valid metric"),
            broadcast_errors: IntCounter::new(
                "gubernator_broadcast_errors",
                "Failed GLOBAL broadcast calls.",
            )
            .expect("valid metric"),
            updatepeerglobals_counter: IntCounter::new(
                "gubernator_updatepeerglobals_counter",
                "GLOBAL states received from owners.",
            )
            .expect("valid metric"),
            global_hits_dropped: IntCounter::new(
                "ringlimit_global_hits_dropped_total",
                "Limits whose owed GLOBAL hits were dropped because the retry queue was full.",
            )
            .expect("valid metric"),
            batch_queue_length: IntGaugeVec::new(
                Opts::new(
                    "gubernator_batch_queue_length",
                    "Items waiting to be forwarded to a peer.",
                ),
                &["peerAddr"],
            )
            .expect("valid metric"),
            decisions: IntCounterVec::new(
                Opts::new(
                    "ringlimit_decisions_total",
                    "Answered rate-limit items by decision.",
                ),
                &["status"],
            )
            .expect("valid metric"),
            request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "ringlimit_request_duration_seconds",
                    "API call latency in seconds, by method and surface.",
                )
                .buckets(latency_buckets()),
                &["method", "surface"],
            )
            .expect("valid metric"),
            items_per_call: Histogram::with_opts(
                HistogramOpts::new(
                    "ringlimit_items_per_call",
                    "Items in each GetRateLimits call.",
                )
                .buckets(vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
                ]),
            )
            .expect("valid metric"),
            cache_evictions: IntCounterVec::new(
                Opts::new(
                    "ringlimit_cache_evictions_total",
                    "Buckets removed from memory, by cause.",
                ),
                &["cause"],
            )
            .expect("valid metric"),
            peers: IntGaugeVec::new(
                Opts::new("ringlimit_peers", "Peers known, by scope."),
                &["scope"],
            )
            .expect("valid metric"),
            etcd_registered: IntGauge::new(
                "ringlimit_etcd_registered",
                "1 while this node is registered in etcd.",
            )
            .expect("valid metric"),
            k8s_watch_errors: IntCounter::new(
                "ringlimit_kubernetes_watch_errors_total",
                "Failed list or watch attempts of Kubernetes discovery (every retry counts).",
            )
            .expect("valid metric"),
            build_info: IntGaugeVec::new(
                Opts::new("ringlimit_build_info", "Build information; always 1."),
                &["version"],
            )
            .expect("valid metric"),
            peer_auth_refused: IntCounterVec::new(
                Opts::new(
                    "ringlimit_peer_auth_refused_total",
                    "Peer-plane calls refused as unauthenticated, by service.",
                ),
                &["service"],
            )
            .expect("valid metric"),
            peer_input_rejected: IntCounterVec::new(
                Opts::new(
                    "ringlimit_peer_input_rejected_total",
                    "Peer-call content ignored because it could corrupt owned state, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            r8_requests: IntCounterVec::new(
                Opts::new(
                    "requests_total",
                    "POST /allow decisions (r8limiter's name), by result.",
                ),
                &["result"],
            )
            .expect("valid metric"),
            r8_active_keys: IntGauge::new(
                "active_keys",
                "Buckets held by this node (r8limiter's name; as gubernator_cache_size).",
            )
            .expect("valid metric"),
            r8_latency: HistogramVec::new(
                HistogramOpts::new(
                    "request_latency_seconds",
                    "POST /allow latency in seconds (r8limiter's name), by endpoint.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["endpoint"],
            )
            .expect("valid metric"),
            registry,
        };
        // r8limiter's dashboards find these series before the first call.
        for result in ["allow", "deny"] {
            metrics.r8_requests.with_label_values(&[result]);
        }
        metrics.r8_latency.with_label_values(&["/allow"]);
        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics.register_all();
        metrics.start_at_zero();
        metrics
    }

    /// Creates the series of every known label value at 0 (a labelled series otherwise appears
    /// only with its first event). `gubernator_batch_send_retries{name}` takes client-chosen
    /// names, which cannot be known: only its `other` series is created.
    fn start_at_zero(&self) {
        for error in ItemError::LABELS
            .iter()
            .chain(std::iter::once(&CHECK_ERROR_FORWARD_FAILED))
        {
            self.check_error_counter.with_label_values(&[error]);
        }
        for method in KNOWN_METHODS {
            for status in ["success", "failed"] {
                self.request_counts.with_label_values(&[status, method]);
            }
            self.request_duration.touch(method);
            self.grpc_request_duration_seconds
                .with_label_values(&[method]);
        }
        self.batch_send_retries.with_label_values(&[OTHER_LABEL]);
        for calltype in ["local", "forward", "global"] {
            self.getratelimit_counter.with_label_values(&[calltype]);
        }
        for kind in ["hit", "miss"] {
            self.cache_access_count.with_label_values(&[kind]);
        }
        for status in ["under", "over"] {
            self.decisions.with_label_values(&[status]);
        }
        for cause in ["size", "expired"] {
            self.cache_evictions.with_label_values(&[cause]);
        }
        for service in PeerService::ALL {
            self.peer_auth_refused.with_label_values(&[service.label()]);
        }
        for reason in PeerInputRejection::ALL {
            self.peer_input_rejected
                .with_label_values(&[reason.label()]);
        }
        for message in DroppedMessage::ALL {
            for reason in DropReason::ALL {
                self.peer_items_dropped
                    .with_label_values(&[message.label(), reason.label()]);
            }
        }
    }

    fn register_all(&self) {
        for collector in self.collectors() {
            // Names are unique constants; registration cannot fail for a fresh registry.
            let _ = self.registry.register(collector);
        }
    }

    /// Registers a collector owned by another module (the RLS counters of [`crate::rls::metrics`]),
    /// so `GET /metrics` renders it too; false if one of its names is already registered.
    pub fn register_extra(&self, collector: Box<dyn prometheus::core::Collector>) -> bool {
        self.registry.register(collector).is_ok()
    }

    /// The names of every metric this node exports (also those with no sample yet).
    pub fn names(&self) -> Vec<String> {
        self.collectors()
            .iter()
            .flat_map(|collector| collector.desc())
            .map(|desc| desc.fq_name.clone())
            .collect()
    }

    /// Counts peer-call content ignored for `reason`.
    pub fn reject_peer_input(&self, reason: PeerInputRejection) {
        self.peer_input_rejected
            .with_label_values(&[reason.label()])
            .inc();
    }

    fn collectors(&self) -> [Box<dyn prometheus::core::Collector>; 42] {
        [
            Box::new(self.getratelimit_counter.clone()),
            Box::new(self.over_limit_counter.clone()),
            Box::new(self.check_error_counter.clone()),
            Box::new(self.cache_access_count.clone()),
            Box::new(self.unexpired_evictions_count.clone()),
            Box::new(self.cache_size.clone()),
            Box::new(self.concurrent_checks.clone()),
            Box::new(self.request_counts.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.grpc_request_duration_seconds.clone()),
            Box::new(self.process.clone()),
            Box::new(self.forwarded_items.clone()),
            Box::new(self.peer_calls.clone()),
            Box::new(self.batch_send_duration.clone()),
            Box::new(self.batch_send_duration_seconds.clone()),
            Box::new(self.peer_call_items.clone()),
            Box::new(self.batch_send_retries.clone()),
            Box::new(self.global_send_duration.clone()),
            Box::new(self.global_send_duration_seconds.clone()),
            Box::new(self.global_send_errors.clone()),
            Box::new(self.global_send_queue_length.clone()),
            Box::new(self.global_queue_length.clone()),
            Box::new(self.broadcast_duration.clone()),
            Box::new(self.broadcast_duration_seconds.clone()),
            Box::new(self.broadcast_errors.clone()),
            Box::new(self.updatepeerglobals_counter.clone()),
            Box::new(self.global_hits_dropped.clone()),
            Box::new(self.batch_queue_length.clone()),
            Box::new(self.decisions.clone()),
            Box::new(self.request_duration_seconds.clone()),
            Box::new(self.items_per_call.clone()),
            Box::new(self.cache_evictions.clone()),
            Box::new(self.peers.clone()),
            Box::new(self.etcd_registered.clone()),
            Box::new(self.k8s_watch_errors.clone()),
            Box::new(self.build_info.clone()),
            Box::new(self.peer_auth_refused.clone()),
            Box::new(self.peer_input_rejected.clone()),
            Box::new(self.peer_items_dropped.clone()),
            Box::new(self.r8_requests.clone()),
            Box::new(self.r8_active_keys.clone()),
            Box::new(self.r8_latency.clone()),
        ]
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// The labelled counters every evaluated item touches, resolved once: a labelled lookup costs a
/// hash and a lock, which the per-item path should not pay.
#[derive(Clone)]
pub struct ItemCounters {
    /// `gubernator_getratelimit_counter{calltype="local"}`.
    pub local: IntCounter,
    /// `gubernator_getratelimit_counter{calltype="forward"}`.
    pub forward: IntCounter,
    /// `gubernator_getratelimit_counter{calltype="global"}`.
    pub global: IntCounter,
    /// `ringlimit_decisions_total{status="under"}`.
    pub under: IntCounter,
    /// `ringlimit_decisions_total{status="over"}`.
    pub over: IntCounter,
    /// `gubernator_cache_access_count{type="hit"}`.
    pub cache_hit: IntCounter,
    /// `gubernator_cache_access_count{type="miss"}`.
    pub cache_miss: IntCounter,
}

impl Metrics {
    /// The per-item counters of this registry.
    pub fn item_counters(&self) -> ItemCounters {
        ItemCounters {
            local: self.getratelimit_counter.with_label_values(&["local"]),
            forward: self.getratelimit_counter.with_label_values(&["forward"]),
            global: self.getratelimit_counter.with_label_values(&["global"]),
            under: self.decisions.with_label_values(&["under"]),
            over: self.decisions.with_label_values(&["over"]),
            cache_hit: self.cache_access_count.with_label_values(&["hit"]),
            cache_miss: self.cache_access_count.with_label_values(&["miss"]),
        }
    }
}

impl Metrics {
    /// `ringlimit_peer_items_dropped_total{message, reason}`.
    pub fn peer_items_dropped(&self, message: DroppedMessage, reason: DropReason) -> IntCounter {
        self.peer_items_dropped
            .with_label_values(&[message.label(), reason.label()])
    }

    /// Counts `items` of a `message` not sent because they are larger than any peer message.
    pub fn count_oversized(&self, message: DroppedMessage, items: usize) {
        self.peer_items_dropped(message, DropReason::Oversized)
            .inc_by(items as u64);
    }

    /// Counts a forwarded item retried after re-resolving its owner, under its limit's name while
    /// fewer than [`MAX_NAME_LABELS`] names have been seen, else under [`OTHER_LABEL`].
    pub fn count_batch_retry(&self, name: &str) {
        let label = self.retry_names.label(name);
        self.batch_send_retries.with_label_values(&[label]).inc();
    }
}

/// Which peer message an item was dropped from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DroppedMessage {
    /// A batch of forwarded items (`GetPeerRateLimits`).
    Forward,
    /// A chunk of owed GLOBAL hits.
    Global,
    /// A chunk of hits owed after an owner failure (`GUBER_OWNER_FAILURE_POLICY=local`).
    Owed,
    /// A state handoff batch (`Handoff.Transfer`).
    Handoff,
}

impl DroppedMessage {
    /// Every message, for the counter's series at 0.
    pub const ALL: [DroppedMessage; 4] = [
        DroppedMessage::Forward,
        DroppedMessage::Global,
        DroppedMessage::Owed,
        DroppedMessage::Handoff,
    ];

    /// The `message` label.
    pub fn label(self) -> &'static str {
        match self {
            DroppedMessage::Forward => "forward",
            DroppedMessage::Global => "global",
            DroppedMessage::Owed => "owed",
            DroppedMessage::Handoff => "handoff",
        }
    }
}

/// Why an item was dropped instead of sent to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The item alone is larger than any message the receiver accepts.
    Oversized,
}

impl DropReason {
    /// Every reason, for the counter's series at 0.
    pub const ALL: [DropReason; 1] = [DropReason::Oversized];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
        }
    }
}

/// The most distinct client-chosen values one label keeps before folding the rest into
/// [`OTHER_LABEL`].
pub const MAX_NAME_LABELS: usize = 100;

/// The label value every client-chosen value beyond the first [`MAX_NAME_LABELS`] is counted as.
pub const OTHER_LABEL: &str = "other";

/// A label fed by client-chosen strings, bounded: the first `capacity` distinct values (each at
/// most [`MAX_LABEL_BYTES`] long) are kept, every later one is [`OTHER_LABEL`]. A label without a
/// bound would let clients grow the registry, and every scrape, without limit.
#[derive(Debug)]
pub struct BoundedLabel {
    capacity: usize,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The longest client-chosen value kept as a label; longer ones count as [`OTHER_LABEL`].
pub const MAX_LABEL_BYTES: usize = 128;

impl BoundedLabel {
    /// A label that keeps up to `capacity` distinct values.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// The label to record `value` under: `value` itself if already kept or if there is room,
    /// otherwise [`OTHER_LABEL`].
    pub fn label<'a>(&self, value: &'a str) -> &'a str {
        if value.len() > MAX_LABEL_BYTES || value == OTHER_LABEL {
            return OTHER_LABEL;
        }
        let mut seen = crate::mutex::lock(&self.seen);
        if seen.contains(value) {
            return value;
        }
        if seen.len() < self.capacity {
            seen.insert(value.to_string());
            return value;
        }
        OTHER_LABEL
    }
}

/// Latency buckets in seconds, from 50 µs to 1 s.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0,
    ]
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_label_keeps_the_first_values_and_folds_the_rest() {
        let label = BoundedLabel::new(2);
        assert_eq!(label.label("a"), "a");
        assert_eq!(label.label("b"), "b");
        assert_eq!(label.label("c"), OTHER_LABEL);
        assert_eq!(label.label("a"), "a", "kept values stay");
        assert_eq!(label.label(&"x".repeat(MAX_LABEL_BYTES + 1)), OTHER_LABEL);
    }

    #[test]
    fn retries_with_many_names_make_a_bounded_number_of_series() {
        let metrics = Metrics::new();
        for i in 0..(MAX_NAME_LABELS + 50) {
            metrics.count_batch_retry(&format!("name-{i}"));
        }
        let series = metrics
            .render()
            .lines()
            .filter(|line| line.starts_with("gubernator_batch_send_retries{"))
            .count();
        assert_eq!(series, MAX_NAME_LABELS + 1);
        assert!(
            metrics
                .render()
                .contains("gubernator_batch_send_retries{name=\"other\"} 50")
        );
    }
}
