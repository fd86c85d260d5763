//! OpenTelemetry tracing: one span per inbound RPC and per call to another node, exported over
//! OTLP/gRPC, with the W3C trace context carried between nodes.
//!
//! # Why it looks like this
//!
//! A request that a node forwards to the key's owner is two RPCs on two machines; a latency
//! problem is only visible when both appear in one trace. So every node-to-node call carries
//! `traceparent` (injected by the peers' channel, [`crate::peer_auth::PeerChannel`], the one
//! channel every node-to-node client uses), and every inbound call continues the trace it names
//! (from a client or a peer).
//!
//! Tracing is **off unless asked for** (Gubernator exports to `localhost:4317` unless
//! `OTEL_TRACES_EXPORTER=none`; a rate limiter on the request path of every API call must not do
//! work nobody reads). Off, every hook here is one relaxed atomic load ([`enabled`]) and the spans
//! are [`tracing::Span::none`]. The rule ([`TracingSettings::from_env`]):
//!
//! - `OTEL_SDK_DISABLED=true`, or `none` in `OTEL_TRACES_EXPORTER`: off;
//! - `OTEL_TRACES_EXPORTER=otlp`: on (to `http://localhost:4317` unless an endpoint is set);
//! - `OTEL_TRACES_EXPORTER` unset or empty: on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (non-empty), off otherwise;
//! - any other exporter name: a configuration error.
//!
//! The spans are `tracing` spans (target [`SPAN_TARGET`]) turned into OpenTelemetry spans by
//! `tracing-opentelemetry`, so `warn!`/`error!` events inside them become span events. They are
//! kept out of the log output. Attributes never carry keys or names of limits (keys are often API
//! keys or account ids): only counts, peer addresses and status codes.
//!
//! The SDK, the exporter and the subscriber layer live in the `otel` cargo feature (on by
//! default); without it [`TracingSettings::from_env`] still reads the variables so the binary can
//! say, once, that they are ignored.

/// A span of a gRPC call (`kind` is `client` or `server`) with OpenTelemetry's RPC attributes,
/// the ones recorded later empty; `parent:` as in `info_span!`, and any further fields after them.
macro_rules! rpc_span {
    ($(parent: $parent:expr,)? $span:literal, $name:expr, $kind:literal, $service:expr,
     $method:expr, $($fields:tt)*) => {
        tracing::info_span!(
            target: $crate::telemetry::SPAN_TARGET,
            $(parent: $parent,)?
            $span,
            otel.name = $name,
            otel.kind = $kind,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = $service,
            rpc.method = $method,
            rpc.grpc.status_code = tracing::field::Empty,
            $($fields)*
        )
    };
}

#[cfg(feature = "otel")]
mod otel;
mod server;
mod settings;

pub use server::{TraceLayer, TracedService};
pub use settings::{Protocol, Sampler, TelemetryError, TracingSettings};

#[cfg(feature = "otel")]
pub use otel::{TracingGuard, install};

/// Whether this build can export spans (the `otel` feature).
pub const BUILT_IN: bool = cfg!(feature = "otel");

/// The running exporter: none in a build without the `otel` feature.
#[cfg(not(feature = "otel"))]
#[derive(Debug)]
pub struct TracingGuard {
    _none: (),
}

#[cfg(not(feature = "otel"))]
impl TracingGuard {
    /// Nothing to flush.
    pub fn shutdown(self) {}
}

/// Without the `otel` feature nothing is exported: always `Ok(None)` (the caller says that the
/// variables are ignored, see [`BUILT_IN`]).
#[cfg(not(feature = "otel"))]
#[allow(clippy::type_complexity)]
pub fn install<S>(
    _settings: &TracingSettings,
) -> Result<
    Option<(
        Box<dyn tracing_subscriber::Layer<S> + Send + Sync>,
        TracingGuard,
    )>,
    TelemetryError,
>
where
    S: tracing::Subscriber
        + for<'span> tracing_subscriber::registry::LookupSpan<'span>
        + Send
        + Sync,
{
    Ok(None)
}

use std::fmt::Display;

/// The `tracing` target of every span made here (the log output filters it out).
pub const SPAN_TARGET: &str = "ringlimit::otel";

/// Whether spans are being made and exported (set once, by [`install`]).
#[cfg(feature = "otel")]
pub fn enabled() -> bool {
    otel::ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether spans are being made and exported: never, in a build without the `otel` feature.
#[cfg(not(feature = "otel"))]
pub const fn enabled() -> bool {
    false
}

/// A call from this node to another node, traced as a client span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerCall {
    /// Forwarded items to their owner (`PeersV1/GetPeerRateLimits`, batched or not).
    Forward,
    /// GLOBAL state broadcast by the owner (`PeersV1/UpdatePeerGlobals`).
    GlobalSync,
    /// Buckets handed to their new owner (`ringlimit.v1.Handoff/Transfer`).
    Handoff,
}

impl PeerCall {
    /// The gRPC service and method of the call.
    fn rpc(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Forward => (
                "pb.gubernator.PeersV1/GetPeerRateLimits",
                "pb.gubernator.PeersV1",
                "GetPeerRateLimits",
            ),
            Self::GlobalSync => (
                "pb.gubernator.PeersV1/UpdatePeerGlobals",
                "pb.gubernator.PeersV1",
                "UpdatePeerGlobals",
            ),
            Self::Handoff => (
                "ringlimit.v1.Handoff/Transfer",
                "ringlimit.v1.Handoff",
                "Transfer",
            ),
        }
    }
}

/// The current span when tracing, for work that continues in another task (a batched forward);
/// [`tracing::Span::none`] otherwise.
pub fn current() -> tracing::Span {
    if enabled() {
        tracing::Span::current()
    } else {
        tracing::Span::none()
    }
}

/// A client span for a call to the peer at `peer` carrying `items` items, child of `parent` (the
/// current span when `None`), linked to `linked` (the other callers of one batch). Disabled:
/// [`tracing::Span::none`].
pub fn peer_span<'a>(
    call: PeerCall,
    peer: &str,
    items: usize,
    parent: Option<&tracing::Span>,
    linked: impl IntoIterator<Item = &'a tracing::Span>,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    let (name, service, method) = call.rpc();
    let (address, port) = split_address(peer);
    let port = i64::from(port);
    // The given parent, else the current span (what `info_span!` without `parent:` would take).
    let parent = parent.map_or_else(|| tracing::Span::current().id(), tracing::Span::id);
    let span = rpc_span!(
        parent: parent,
        "grpc.client",
        name,
        "client",
        service,
        method,
        server.address = address,
        server.port = port,
        ringlimit.items = count(items),
    );
    #[cfg(feature = "otel")]
    otel::link(&span, linked);
    #[cfg(not(feature = "otel"))]
    drop(linked.into_iter());
    span
}

/// Marks `span` failed with `error` (a no-op on a disabled span).
pub fn record_error(span: &tracing::Span, error: &dyn Display) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", tracing::field::display(error));
}

/// Records a gRPC status code on `span`, marking it failed unless the code is OK.
pub fn record_grpc_status(span: &tracing::Span, code: tonic::Code) {
    if span.is_disabled() {
        return;
    }
    span.record("rpc.grpc.status_code", code as i64);
    if code != tonic::Code::Ok {
        span.record("otel.status_code", "ERROR");
    }
}

/// Records how many items (rate-limit requests, descriptors, buckets) the current inbound call
/// carries on its server span.
pub fn record_items(items: usize) {
    if enabled() {
        tracing::Span::current().record("ringlimit.items", count(items));
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into `metadata`, for a
/// call to another node. A no-op when not tracing.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    if !enabled() {
        return;
    }
    #[cfg(feature = "otel")]
    otel::inject(&tracing::Span::current(), metadata);
    #[cfg(not(feature = "otel"))]
    let _ = metadata;
}

/// `items` as the signed integer OpenTelemetry attributes hold (`u64` would be exported as text).
fn count(items: usize) -> i64 {
    i64::try_from(items).unwrap_or(i64::MAX)
}

/// `host` and `port` of a `host:port` address (port 0 when there is none).
fn split_address(address: &str) -> (&str, u16) {
    match address.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(port) => (host.trim_start_matches('[').trim_end_matches(']'), port),
            Err(_) => (address, 0),
        },
        None => (address, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("10.0.0.1:1051"), ("10.0.0.1", 1051));
        assert_eq!(split_address("[::1]:1051"), ("::1", 1051));
        assert_eq!(split_address("peer"), ("peer", 0));
        assert_eq!(split_address("peer:http"), ("peer:http", 0));
    }

    #[test]
    fn disabled_tracing_makes_no_spans() {
        // Nothing in the unit tests installs the exporter.
        assert!(!enabled());
        assert!(current().is_none());
        assert!(peer_span(PeerCall::Forward, "a:1", 3, None, []).is_none());
        let mut metadata = tonic::metadata::MetadataMap::new();
        inject(&mut metadata);
        assert!(metadata.is_empty());
    }
}
