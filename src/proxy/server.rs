//! The proxy's HTTP side: accept a request, ask the cluster, stream it to the upstream and the
//! answer back. Everything that is a rule rather than I/O is in the sibling modules.
//!
//! Clients are served by the gateway's own HTTP/1.1 loop ([`crate::limits::http_server`]) rather
//! than `axum::serve`, so a client that trickles its head or body is cut off
//! (`GUBER_PROXY_HEADER_TIMEOUT`, `GUBER_PROXY_BODY_TIMEOUT`), and the open connections are capped
//! (`GUBER_PROXY_MAX_CONNECTIONS`, [`crate::limits::connections`]). Accepted sockets get
//! `TCP_NODELAY` ([`crate::limits::nodelay`]), like the upstream connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use http::{StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::decider::DecideError;
use super::headers::{
    add_rate_limit_headers, error_body, json_response, rate_limited_body, remove_hop_by_hop,
    upstream_request_headers,
};
use super::metrics::{ProxyMetrics, RequestOutcome, UpstreamResult};
use super::{Decider, FailureMode, ProxyConfig, RuleLimit, client_key, key, limit_name, path};
use crate::limits::connections::{ConnectionLimit, LimitedListener};
use crate::limits::http_server::{self, HttpTimeouts, body_timeout_in};
use crate::proto;
use crate::refill::Outcome;
use crate::request::{self, InputLimits};

/// Why the proxy could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("proxy server failed: {0}")]
    Serve(std::io::Error),
    /// The server task panicked.
    #[error("proxy task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A proxy that is serving; stop it with [`RunningProxy::shutdown`].
pub struct RunningProxy {
    address: SocketAddr,
    metrics: Arc<ProxyMetrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningProxy {
    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The proxy's metrics (see [`super::metrics`] for where they are served).
    pub fn metrics(&self) -> &Arc<ProxyMetrics> {
        &self.metrics
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn shutdown(self) -> Result<(), ProxyError> {
        let _ = self.stop.send(true);
        self.task.await?.map_err(ProxyError::Serve)
    }
}

struct ProxyState {
    config: ProxyConfig,
    decider: Decider,
    client: Client<HttpConnector, Body>,
    metrics: Arc<ProxyMetrics>,
}

/// Binds `config.bind_addr` and serves, deciding through `decider`.
pub async fn start(config: ProxyConfig, decider: Decider) -> Result<RunningProxy, ProxyError> {
    let bind_error = |source| ProxyError::Bind {
        address: config.bind_addr.clone(),
        source,
    };
    let listener = TcpListener::bind(&config.bind_addr)
        .await
        .map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let metrics = Arc::new(ProxyMetrics::new());
    let state = Arc::new(ProxyState {
        config,
        decider,
        client,
        metrics: Arc::clone(&metrics),
    });
    let timeouts = HttpTimeouts {
        header: state.config.header_timeout,
        body: state.config.body_timeout,
    };
    let connections = ConnectionLimit::new(state.config.max_connections, "proxy");
    let listener = LimitedListener::new(crate::limits::nodelay::listener(listener), connections);
    let app = Router::new().fallback(handle).with_state(state);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(http_server::serve(listener, app, timeouts, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    tracing::info!(%address, "ringlimit proxy is serving");
    Ok(RunningProxy {
        address,
        metrics,
        stop,
        task,
    })
}

async fn handle(
    State(state): State<Arc<ProxyState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let config = &state.config;
    let metrics = &state.metrics;
    let (mut parts, body) = request.into_parts();
    let client_ip = config.trusted_proxies.client_ip(peer.ip(), &parts.headers);
    let api_key = match key::api_key(parts.headers.get(&config.key_header), config.max_key_bytes) {
        Ok(api_key) => api_key,
        Err(error) => {
            metrics.request(RequestOutcome::InvalidKey);
            return invalid_api_key(config, &error.to_string());
        }
    };
    let rule = config
        .rules
        .find(&parts.method, &path::normalize(parts.uri.path()), api_key);
    let outcome = match rule.limit {
        RuleLimit::Unlimited => {
            metrics.request(RequestOutcome::Unlimited);
            None
        }
        RuleLimit::Limited(bucket) => {
            let item = bucket.request(limit_name(&rule.name), client_key(api_key, client_ip), 1);
            let limits = InputLimits {
                max_key_bytes: config.max_key_bytes,
            };
            // The cluster would refuse this item; refuse it here, whatever the failure policy.
            if let Err(error) = request::validate(&item, 0, limits) {
                metrics.request(RequestOutcome::RejectedItem);
                return rejected_item(config, &DecideError::Invalid(error.to_string()));
            }
            let asked = Instant::now();
            let decision = state.decider.decide(item).await;
            metrics.decision(asked.elapsed());
            match decision {
                Ok(answer) => {
                    let allowed = answer.status != proto::Status::OverLimit as i32;
                    let outcome = bucket.outcome(allowed, answer.remaining, 1);
                    if !allowed {
                        metrics.request(RequestOutcome::Denied);
                        return too_many_requests(&outcome);
                    }
                    metrics.request(RequestOutcome::Allowed);
                    Some(outcome)
                }
                Err(error @ DecideError::Invalid(_)) => {
                    metrics.request(RequestOutcome::RejectedItem);
                    return rejected_item(config, &error);
                }
                Err(error @ DecideError::Unavailable(_)) => match config.failure_mode {
                    FailureMode::Open => {
                        metrics.request(RequestOutcome::ClusterErrorOpen);
                        tracing::warn!(%error, "letting a request through (fail-open)");
                        None
                    }
                    FailureMode::Closed => {
                        metrics.request(RequestOutcome::ClusterErrorClosed);
                        tracing::warn!(%error, "refusing a request (fail-closed)");
                        return json_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            error_body("rate_limiter_unavailable", &error.to_string()),
                        );
                    }
                },
            }
        }
    };

    parts.uri = match config.upstream.uri_for(&parts.uri) {
        Ok(uri) => uri,
        Err(error) => {
            metrics.upstream(UpstreamResult::BadPath, None);
            return json_response(
                StatusCode::BAD_REQUEST,
                error_body("bad_request", &format!("cannot forward this path: {error}")),
            );
        }
    };
    let peer_trusted = config.trusted_proxies.contains(peer.ip());
    upstream_request_headers(
        &mut parts.headers,
        peer.ip(),
        peer_trusted,
        config.trusted_proxies.trusts_forwarded(),
        config.upstream.authority(),
    );
    parts.version = Version::HTTP_11;
    let upstream_call = state.client.request(Request::from_parts(parts, body));
    let sent = Instant::now();
    let mut response = match tokio::time::timeout(config.upstream_timeout, upstream_call).await {
        Ok(Ok(response)) => {
            metrics.upstream(UpstreamResult::Answered, Some(sent.elapsed()));
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(error)) => {
            if let Some(timeout) = body_timeout_in(&error) {
                metrics.upstream(UpstreamResult::ClientBodyTimeout, None);
                return json_response(
                    StatusCode::REQUEST_TIMEOUT,
                    error_body("request_timeout", &timeout.to_string()),
                );
            }
            metrics.upstream(UpstreamResult::BadGateway, None);
            tracing::warn!(error = %chain(&error), "upstream request failed");
            return json_response(
                StatusCode::BAD_GATEWAY,
                error_body(
                    "bad_gateway",
                    &format!(
                        "the upstream {} did not answer: {}",
                        config.upstream.authority(),
                        chain(&error)
                    ),
                ),
            );
        }
        Err(_) => {
            metrics.upstream(UpstreamResult::Timeout, None);
            return json_response(
                StatusCode::GATEWAY_TIMEOUT,
                error_body(
                    "gateway_timeout",
                    &format!(
                        "the upstream {} did not answer within {:?}",
                        config.upstream.authority(),
                        config.upstream_timeout
                    ),
                ),
            );
        }
    };
    if let Some(outcome) = outcome {
        add_rate_limit_headers(response.headers_mut(), &outcome);
    }
    response
}

/// `400 invalid_api_key`: the key header cannot be a limit key. Never forwarded.
fn invalid_api_key(config: &ProxyConfig, reason: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        error_body(
            "invalid_api_key",
            &format!("the {} header {reason}", config.key_header),
        ),
    )
}

/// An item the cluster refuses as invalid: the client's key (400), or the proxy's own
/// configuration (500). Never forwarded, whatever the failure policy.
fn rejected_item(config: &ProxyConfig, error: &DecideError) -> Response {
    if error.is_about_the_key() {
        return invalid_api_key(config, &format!("cannot be a limit key: {error}"));
    }
    tracing::error!(%error, "the cluster refuses the proxy's limit item; check the rules and GUBER_MAX_KEY_LENGTH");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        error_body("rate_limit_item_rejected", &error.to_string()),
    )
}

fn too_many_requests(outcome: &Outcome) -> Response {
    let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, rate_limited_body(outcome));
    add_rate_limit_headers(response.headers_mut(), outcome);
    response
}

/// An error and its causes, `outer: inner: innermost`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
