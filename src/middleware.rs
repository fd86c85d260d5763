//! A `tower` middleware that rate-limits axum and tonic services through the cluster.
//!
//! [`RateLimitLayer`] asks the cluster (through a [`Client`] of any node, or an [`EmbeddedNode`]
//! in process) to spend one hit of a token bucket for the key a [`KeyExtractor`] finds in each
//! request. A request without a key passes unlimited. An admitted request goes to the inner
//! service and its response gets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
//! headers. A refused one never reaches it:
//!
//! - HTTP requests get `429 Too Many Requests` with `Retry-After` (whole seconds, rounded up, at
//!   least 1) and the body `{"error":"rate_limited","retry_after":N}`;
//! - gRPC requests (`content-type: application/grpc…`) get the status `RESOURCE_EXHAUSTED` with a
//!   `retry-after` metadata entry.
//!
//! When the cluster cannot answer, [`FailurePolicy::Open`] (the default) lets the request through
//! and [`FailurePolicy::Closed`] answers `503` / `UNAVAILABLE`. A key the cluster refuses as
//! invalid (longer than `GUBER_MAX_KEY_LENGTH`, say) is the request's own fault, not the
//! cluster's: it is answered `400 {"error":"invalid_rate_limit_key"}` / `INVALID_ARGUMENT` under
//! either policy, so a client cannot buy fail-open with a bad key.
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use ringlimit::client::Client;
//! use ringlimit::middleware::{HeaderKey, RateLimitLayer};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::connect("127.0.0.1:1051").await?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(RateLimitLayer::new(
//!         client,
//!         "api_requests",
//!         100,
//!         Duration::from_secs(60),
//!         HeaderKey::from_static("x-api-key"),
//!     ));
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use tower::{Layer, Service};

use crate::client::{Client, ClientError, Decision};
use crate::embedded::{EmbeddedNode, consume_in_process};
use crate::node::Node;
use crate::proto;

/// Finds the rate-limit key of a request; `None` lets the request pass unlimited.
pub trait KeyExtractor<B>: Send + Sync + 'static {
    /// The key of `request`.
    fn key(&self, request: &Request<B>) -> Option<String>;
}

impl<B, F> KeyExtractor<B> for F
where
    F: Fn(&Request<B>) -> Option<String> + Send + Sync + 'static,
{
    fn key(&self, request: &Request<B>) -> Option<String> {
        self(request)
    }
}

/// The value of one request header as the key (for example `x-api-key`).
#[derive(Debug, Clone)]
pub struct HeaderKey(HeaderName);

impl HeaderKey {
    /// Keys requests by the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self(name)
    }

    /// Keys requests by the header `name`, a lowercase literal.
    ///
    /// # Panics
    /// When `name` is not a valid lowercase header name, like [`HeaderName::from_static`]; this
    /// happens when the layer is built, never on a request.
    pub fn from_static(name: &'static str) -> Self {
        Self(HeaderName::from_static(name))
    }
}

impl<B> KeyExtractor<B> for HeaderKey {
    fn key(&self, request: &Request<B>) -> Option<String> {
        request
            .headers()
            .get(&self.0)
            .and_then(|value| value.to_str().ok())
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    }
}

/// Where decisions are made.
#[derive(Clone)]
pub enum Backend {
    /// A node reached over gRPC.
    Remote(Client),
    /// A node in this process.
    InProcess(Arc<Node>),
}

impl From<Client> for Backend {
    fn from(client: Client) -> Self {
        Backend::Remote(client)
    }
}

impl From<&EmbeddedNode> for Backend {
    fn from(node: &EmbeddedNode) -> Self {
        Backend::InProcess(Arc::clone(node.node()))
    }
}

impl From<Arc<Node>> for Backend {
    fn from(node: Arc<Node>) -> Self {
        Backend::InProcess(node)
    }
}

impl Backend {
    /// The decision on `item` (one hit of the middleware's limit for one key).
    async fn consume(&self, item: proto::RateLimitReq) -> Result<Decision, ClientError> {
        match self {
            Backend::Remote(client) => crate::client::decision_of_the_answer(
                client.clone().get_rate_limits(vec![item]).await?,
            ),
            Backend::InProcess(node) => consume_in_process(node, item).await,
        }
    }
}

/// What to do with a request when the cluster cannot decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Let it through (availability first).
    #[default]
    Open,
    /// Refuse it with `503 Service Unavailable` / `UNAVAILABLE`.
    Closed,
}

struct Settings<K> {
    backend: Backend,
    name: String,
    limit: i64,
    duration: Duration,
    key: K,
}

/// Limits requests to `limit` per `duration` per key, cluster-wide.
pub struct RateLimitLayer<K> {
    settings: Arc<Settings<K>>,
    failure: FailurePolicy,
}

impl<K> Clone for RateLimitLayer<K> {
    fn clone(&self) -> Self {
        Self {
            settings: Arc::clone(&self.settings),
            failure: self.failure,
        }
    }
}

impl<K> RateLimitLayer<K> {
    /// Limits each key found by `key` to `limit` requests per `duration`, in the limit `name`.
    pub fn new(
        backend: impl Into<Backend>,
        name: impl Into<String>,
        limit: i64,
        duration: Duration,
        key: K,
    ) -> Self {
        Self {
            settings: Arc::new(Settings {
                backend: backend.into(),
                name: name.into(),
                limit,
                duration,
                key,
            }),
            failure: FailurePolicy::default(),
        }
    }

    /// Sets what happens when the cluster cannot decide (default: [`FailurePolicy::Open`]).
    pub fn failure_policy(mut self, failure: FailurePolicy) -> Self {
        self.failure = failure;
        self
    }
}

impl<S, K> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            settings: Arc::clone(&self.settings),
            failure: self.failure,
        }
    }
}

/// The service [`RateLimitLayer`] wraps around an inner service.
pub struct RateLimit<S, K> {
    inner: S,
    settings: Arc<Settings<K>>,
    failure: FailurePolicy,
}

impl<S: Clone, K> Clone for RateLimit<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            settings: Arc::clone(&self.settings),
            failure: self.failure,
        }
    }
}

/// The response body: the inner service's, or a refusal's.
pub type RateLimitBody<B> = Either<B, Full<Bytes>>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, K, B, ResBody> Service<Request<B>> for RateLimit<S, K>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    K: KeyExtractor<B>,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // The clone that was driven to readiness serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = Arc::clone(&self.settings);
        let failure = self.failure;
        let key = settings.key.key(&request);
        Box::pin(async move {
            let Some(key) = key else {
                return pass(inner.call(request).await?, None);
            };
            let grpc = is_grpc(&request);
            let decision = async {
                let item = crate::client::consume_request(
                    &settings.name,
                    &key,
                    1,
                    settings.limit,
                    settings.duration,
                )?;
                settings.backend.consume(item).await
            }
            .await;
            match decision {
                Ok(decision) if decision.allowed => {
                    pass(inner.call(request).await?, Some(&decision))
                }
                Ok(decision) => Ok(refuse(grpc, &decision)),
                Err(error) if error.is_invalid_input() => {
                    tracing::debug!(%error, "refusing a request whose rate-limit key the cluster refuses");
                    Ok(Refusal::InvalidKey.answer(grpc))
                }
                Err(error) => match failure {
                    FailurePolicy::Open => {
                        tracing::warn!(%error, "rate limiter unavailable; letting the request through");
                        pass(inner.call(request).await?, None)
                    }
                    FailurePolicy::Closed => {
                        tracing::warn!(%error, "rate limiter unavailable; refusing the request");
                        Ok(Refusal::Unavailable.answer(grpc))
                    }
                },
            }
        })
    }
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// The inner response, with the rate-limit headers of `decision`.
fn pass<ResBody, E>(
    response: Response<ResBody>,
    decision: Option<&Decision>,
) -> Result<Response<RateLimitBody<ResBody>>, E> {
    let mut response = response.map(Either::Left);
    if let Some(decision) = decision {
        add_rate_limit_headers(&mut response, decision);
    }
    Ok(response)
}

fn add_rate_limit_headers<T>(response: &mut Response<T>, decision: &Decision) {
    let reset_secs = reset_in_secs(decision);
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit.max(0)));
    headers.insert(
        "ratelimit-remaining",
        HeaderValue::from(decision.remaining.max(0)),
    );
    headers.insert("ratelimit-reset", HeaderValue::from(reset_secs));
}

/// Whole seconds until the limit resets, rounded up.
fn reset_in_secs(decision: &Decision) -> u64 {
    let wait_ms = decision
        .reset_time_ms
        .saturating_sub(crate::client::now_ms())
        .max(0);
    u64::try_from(wait_ms).unwrap_or(0).div_ceil(1000)
}

/// The refusal of a request: 429 for HTTP, `RESOURCE_EXHAUSTED` for gRPC.
fn refuse<ResBody>(grpc: bool, decision: &Decision) -> Response<RateLimitBody<ResBody>> {
    let retry_after = decision.retry_after_secs().max(1);
    let mut response = if grpc {
        grpc_status(
            8,
            &format!("rate limit exceeded; retry after {retry_after}s"),
        )
    } else {
        json_response(
            StatusCode::TOO_MANY_REQUESTS,
            format!(r#"{{"error":"rate_limited","retry_after":{retry_after}}}"#),
        )
    };
    add_rate_limit_headers(&mut response, decision);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after));
    response
}

/// Why a request is refused without a decision.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The cluster refused the request's key as invalid (under either policy).
    InvalidKey,
    /// The cluster could not decide and the policy is closed.
    Unavailable,
}

impl Refusal {
    /// The answer: a gRPC status, or for HTTP a status with `{"error":"<name>"}`.
    fn answer<ResBody>(self, grpc: bool) -> Response<RateLimitBody<ResBody>> {
        let (code, message, status, name) = match self {
            Refusal::InvalidKey => (
                3,
                "invalid rate-limit key",
                StatusCode::BAD_REQUEST,
                "invalid_rate_limit_key",
            ),
            Refusal::Unavailable => (
                14,
                "rate limiter unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limiter_unavailable",
            ),
        };
        if grpc {
            grpc_status(code, message)
        } else {
            json_response(status, format!(r#"{{"error":"{name}"}}"#))
        }
    }
}

fn json_response<ResBody>(status: StatusCode, body: String) -> Response<RateLimitBody<ResBody>> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A trailers-only gRPC answer with status `code` (`message` must be plain ASCII without `%`).
fn grpc_status<ResBody>(code: u16, message: &str) -> Response<RateLimitBody<ResBody>> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(message) = HeaderValue::from_str(message) {
        headers.insert("grpc-message", message);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(reset_in_ms: i64) -> Decision {
        let now = crate::client::now_ms();
        Decision {
            allowed: false,
            limit: 2,
            remaining: 0,
            reset_time_ms: now + reset_in_ms,
            retry_after: Duration::from_millis(u64::try_from(reset_in_ms).unwrap_or(0)),
            owner: None,
        }
    }

    #[test]
    fn http_refusals_are_429_with_retry_after() {
        let response: Response<RateLimitBody<()>> = refuse(false, &refused(2_500));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        assert_eq!(response.headers()["ratelimit-limit"], "2");
        assert_eq!(response.headers()["ratelimit-remaining"], "0");
    }

    #[test]
    fn grpc_refusals_are_resource_exhausted_and_never_wait_zero() {
        let response: Response<RateLimitBody<()>> = refuse(true, &refused(0));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "8");
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn header_keys_ignore_missing_and_empty_values() {
        let key = HeaderKey::from_static("x-api-key");
        let with = Request::builder()
            .header("x-api-key", "abc")
            .body(())
            .unwrap();
        let empty = Request::builder().header("x-api-key", "").body(()).unwrap();
        let without = Request::builder().body(()).unwrap();
        assert_eq!(key.key(&with), Some("abc".into()));
        assert_eq!(key.key(&empty), None);
        assert_eq!(key.key(&without), None);
    }
}
