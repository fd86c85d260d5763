//! The gRPC server's span: one per inbound call, continuing the caller's trace (`traceparent`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tracing::Instrument;

/// A `tower` layer for the gRPC server: a server span around every call but health checks and
/// reflection. Not tracing, it passes calls through untouched (one atomic load each).
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TracedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedService { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TracedService<S> {
    inner: S,
}

type Traced<F> = Pin<Box<dyn Future<Output = F> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for TracedService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Traced<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if !super::enabled() {
            return Either::Left(self.inner.call(request));
        }
        let Some(span) = server_span(&request) else {
            return Either::Left(self.inner.call(request));
        };
        let call = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let recorded = span.clone();
        Either::Right(Box::pin(
            async move {
                let outcome = call.await;
                match &outcome {
                    Ok(response) => {
                        // Errors travel in the headers of a trailers-only answer; a status in
                        // the trailers of a streamed answer is not seen here (OK is assumed).
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .map(|status| tonic::Code::from_bytes(status.as_bytes()))
                            .unwrap_or(tonic::Code::Ok);
                        super::record_grpc_status(&recorded, code);
                    }
                    Err(error) => super::record_error(&recorded, error),
                }
                outcome
            }
            .instrument(span),
        ))
    }
}

/// The server span of `request`, continuing the trace its `traceparent` names; `None` for calls
/// not traced (health checks and reflection, which probes make all the time).
fn server_span<B>(request: &http::Request<B>) -> Option<tracing::Span> {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/')?;
    if service == "grpc.health.v1.Health" || service.starts_with("grpc.reflection.") {
        return None;
    }
    let span = tracing::info_span!(
        target: super::SPAN_TARGET,
        "grpc.server",
        otel.name = path,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        ringlimit.items = tracing::field::Empty,
    );
    #[cfg(feature = "otel")]
    super::otel::set_parent_from(&span, request.headers());
    Some(span)
}
