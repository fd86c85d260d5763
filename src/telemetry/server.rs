//! The servers' spans: one per inbound call (gRPC or HTTP), continuing the caller's trace
//! (`traceparent`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::Either;
use tracing::Instrument;

/// A `tower` layer for a server: a server span around every call but probes (health checks and
/// reflection on gRPC; `/metrics`, `/livez`, `/readyz` and `/v1/LiveCheck` on HTTP). Not tracing,
/// it passes calls through untouched (one atomic load each).
#[derive(Debug, Clone, Copy)]
pub struct TraceLayer {
    http: bool,
}

impl TraceLayer {
    /// For the gRPC server: spans named `service/method`, status from `grpc-status`.
    pub fn grpc() -> Self {
        Self { http: false }
    }

    /// For the HTTP server: spans named `METHOD route` (the route's template, never a path that
    /// could hold a key), failed on a 5xx answer.
    pub fn http() -> Self {
        Self { http: true }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TracedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TracedService {
            inner,
            http: self.http,
        }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TracedService<S> {
    inner: S,
    http: bool,
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
        let http = self.http;
        let span = if http {
            http_span(&request)
        } else {
            grpc_span(&request)
        };
        let Some(span) = span else {
            return Either::Left(self.inner.call(request));
        };
        // The span continues the trace the caller's `traceparent` names.
        #[cfg(feature = "otel")]
        super::otel::set_parent_from(&span, request.headers());
        let call = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        let recorded = span.clone();
        Either::Right(Box::pin(
            async move {
                let outcome = call.await;
                match &outcome {
                    Ok(response) if http => {
                        let status = response.status();
                        recorded.record("http.response.status_code", i64::from(status.as_u16()));
                        if status.is_server_error() {
                            recorded.record("otel.status_code", "ERROR");
                        }
                    }
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

/// The server span of a gRPC `request` (its caller's trace is continued by [`TracedService`]);
/// `None` for calls not traced (health checks and reflection, which probes make all the time).
fn grpc_span<B>(request: &http::Request<B>) -> Option<tracing::Span> {
    let path = request.uri().path().trim_start_matches('/');
    let (service, method) = path.split_once('/')?;
    if service == "grpc.health.v1.Health" || service.starts_with("grpc.reflection.") {
        return None;
    }
    Some(rpc_span!(
        "grpc.server",
        path,
        "server",
        service,
        method,
        ringlimit.items = tracing::field::Empty,
    ))
}

/// The HTTP routes named in span names; any other path is named by its method alone (paths can
/// hold keys, and unknown ones are unbounded).
const HTTP_ROUTES: [&str; 9] = [
    "/v1/GetRateLimits",
    "/v1/HealthCheck",
    "/allow",
    "/json",
    "/rlconfig",
    "/admin/stats",
    "/admin/top_offenders",
    "/admin/peers",
    "/admin/resources",
];

/// The server span of an HTTP `request` (see [`grpc_span`]).
fn http_span<B>(request: &http::Request<B>) -> Option<tracing::Span> {
    let path = request.uri().path();
    if matches!(path, "/metrics" | "/livez" | "/readyz" | "/v1/LiveCheck") {
        return None;
    }
    let method = request.method().as_str();
    let route = if let Some(route) = HTTP_ROUTES.iter().find(|route| **route == path) {
        Some(*route)
    } else if path.starts_with("/admin/keys/") {
        Some("/admin/keys/{name}/{unique_key}")
    } else if path.starts_with("/admin/user/") {
        Some("/admin/user/{user_id}")
    } else {
        None
    };
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_string(),
    };
    Some(tracing::info_span!(
        target: super::SPAN_TARGET,
        "http.server",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        ringlimit.items = tracing::field::Empty,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_get_no_span() {
        let get = |path: &str| http::Request::get(path).body(()).unwrap();
        for path in ["/metrics", "/livez", "/readyz", "/v1/LiveCheck"] {
            assert!(http_span(&get(path)).is_none(), "{path}");
        }
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/X",
        ] {
            assert!(grpc_span(&get(path)).is_none(), "{path}");
        }
    }
}
