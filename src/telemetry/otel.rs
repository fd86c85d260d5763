//! The OpenTelemetry SDK behind the `otel` feature: the OTLP/gRPC exporter with its batch
//! processor, the `tracing` layer, and the W3C trace-context propagation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler as SdkSampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use super::settings::{OtlpSettings, Sampler, TelemetryError, TracingSettings};

/// Whether [`install`] started the exporter.
pub(super) static ENABLED: AtomicBool = AtomicBool::new(false);

/// How long shutdown waits for the last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The running exporter. [`TracingGuard::shutdown`] flushes what is batched; dropping it does the
/// same.
pub struct TracingGuard {
    provider: SdkTracerProvider,
    /// Drives the exporter's connection, apart from the node's runtime (so the last batch is sent
    /// whatever state that runtime is in at exit).
    runtime: Option<tokio::runtime::Runtime>,
    endpoint: String,
}

impl std::fmt::Debug for TracingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingGuard")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl TracingGuard {
    /// Stops making spans and exports the ones still batched (waits at most 5 s). Blocking: call
    /// it outside the async runtime, after the server stopped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(error) = self.provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
            tracing::warn!(%error, endpoint = %self.endpoint, "the last spans could not be exported");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            self.stop();
        }
    }
}

/// Starts exporting when `settings` say so: the `tracing` layer to add to the subscriber (it
/// turns this module's spans into OpenTelemetry spans, and warnings and errors inside them into
/// span events) and the guard that flushes at exit. `Ok(None)` when tracing is off.
#[allow(clippy::type_complexity)]
pub fn install<S>(
    settings: &TracingSettings,
) -> Result<Option<(Box<dyn Layer<S> + Send + Sync>, TracingGuard)>, TelemetryError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let TracingSettings::Otlp(otlp) = settings else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otel-export")
        .enable_all()
        .build()
        .map_err(|error| TelemetryError::Start(format!("cannot start its runtime: {error}")))?;
    // The exporter's channel connects lazily, on this runtime.
    let exporter = {
        let _runtime = runtime.enter();
        exporter(otlp)?
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler(otlp.sampler))
        .with_resource(resource(otlp))
        .build();
    let tracer = provider.tracer("ringlimit");
    global::set_text_map_propagator(TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        // This module's spans, and warnings and errors (as events of the span they happen in).
        .with_filter(
            Targets::new()
                .with_target(super::SPAN_TARGET, tracing::Level::INFO)
                .with_default(tracing::Level::WARN),
        );
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((
        Box::new(layer),
        TracingGuard {
            provider,
            runtime: Some(runtime),
            endpoint: otlp.endpoint.clone(),
        },
    )))
}

fn exporter(otlp: &OtlpSettings) -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp.endpoint.clone());
    if otlp.endpoint.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &otlp.certificate {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                path,
            )?));
        }
        if let Some((certificate, key)) = &otlp.client_identity {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", certificate)?,
                read("OTEL_EXPORTER_OTLP_CLIENT_KEY", key)?,
            ));
        }
        builder = builder.with_tls_config(tls);
    }
    builder
        .build()
        .map_err(|error| TelemetryError::Start(format!("{} ({error})", otlp.endpoint)))
}

fn read(variable: &'static str, path: &std::path::Path) -> Result<Vec<u8>, TelemetryError> {
    std::fs::read(path).map_err(|error| TelemetryError::File {
        variable,
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

fn sampler(sampler: Sampler) -> SdkSampler {
    match sampler {
        Sampler::AlwaysOn => SdkSampler::AlwaysOn,
        Sampler::AlwaysOff => SdkSampler::AlwaysOff,
        Sampler::TraceIdRatio(ratio) => SdkSampler::TraceIdRatioBased(ratio),
        Sampler::ParentBasedAlwaysOn => SdkSampler::ParentBased(Box::new(SdkSampler::AlwaysOn)),
        Sampler::ParentBasedAlwaysOff => SdkSampler::ParentBased(Box::new(SdkSampler::AlwaysOff)),
        Sampler::ParentBasedTraceIdRatio(ratio) => {
            SdkSampler::ParentBased(Box::new(SdkSampler::TraceIdRatioBased(ratio)))
        }
    }
}

fn resource(otlp: &OtlpSettings) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            otlp.resource_attributes
                .iter()
                .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
        )
        .with_attribute(KeyValue::new("service.version", crate::build_info::VERSION))
        .with_service_name(otlp.service_name.clone())
        .build()
}

/// Makes `span` continue the trace named by `headers` (`traceparent`), if any.
pub(super) fn set_parent_from(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent =
        global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s trace context into `metadata`.
pub(super) fn inject(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    let context = span.context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata))
    });
}

/// Links `span` to each of `linked` (the other callers whose items share one batched call).
pub(super) fn link<'a>(span: &tracing::Span, linked: impl IntoIterator<Item = &'a tracing::Span>) {
    if span.is_disabled() {
        return;
    }
    for other in linked {
        if other.is_disabled() {
            continue;
        }
        let context = other.context().span().span_context().clone();
        if context.is_valid() {
            span.add_link(context);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}
