//! The gRPC surface: `pb.gubernator.V1` for clients and `pb.gubernator.PeersV1` for peers.
//!
//! These handlers only translate between tonic and [`Node`]; every decision is made there, the same
//! way for gRPC and HTTP callers. The calls that carry decisions (`GetRateLimits`,
//! `GetPeerRateLimits`) are served by [`V1Server`] and [`PeersServer`] through
//! [`crate::grpc_unary`]; the other methods through tonic's generated servers.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::{Request, Response, Status};

pub use crate::grpc_unary::{LeanMethod, LeanServer};

use crate::error::{CallError, MAX_BATCH_SIZE};
use crate::grpc_unary::{LeanRequest, LeanResponse};
use crate::node::Node;
use crate::proto;
use crate::proto::peers_v1_server::PeersV1;
use crate::proto::v1_server::V1;
use crate::request::Item;
use crate::wire_items::{self, Decoded};

/// The fully qualified gRPC method names (defined with the metrics that label by them).
pub use crate::metrics::method;

/// The client-facing `V1` service.
#[derive(Clone)]
pub struct V1Service {
    node: Arc<Node>,
}

impl V1Service {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// The peer-facing `PeersV1` service.
#[derive(Clone)]
pub struct PeersService {
    node: Arc<Node>,
}

impl PeersService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// The API surface a call arrived on, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// gRPC.
    Grpc,
    /// The HTTP JSON gateway.
    Http,
}

impl Surface {
    fn label(self) -> &'static str {
        match self {
            Surface::Grpc => "grpc",
            Surface::Http => "http",
        }
    }
}

/// Records the count and latency of one API call under `method` (Gubernator's metrics count both
/// surfaces, as its gateway calls gRPC; ringlimit's own histogram tells them apart).
pub fn observe<T, E>(
    node: &Node,
    method: &str,
    surface: Surface,
    started: Instant,
    result: &Result<T, E>,
) {
    let metrics = node.metrics();
    let status = if result.is_ok() { "success" } else { "failed" };
    let seconds = started.elapsed().as_secs_f64();
    metrics
        .request_counts
        .with_label_values(&[status, method])
        .inc();
    metrics.request_duration.observe(method, seconds);
    metrics
        .grpc_request_duration_seconds
        .with_label_values(&[method])
        .observe(seconds);
    metrics
        .request_duration_seconds
        .with_label_values(&[method, surface.label()])
        .observe(seconds);
}

/// Runs `call` and records it under `method` like [`observe`] (timed from its start to its
/// answer); the result is `call`'s.
pub async fn observed<T, E>(
    node: &Node,
    method: &str,
    surface: Surface,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = call.await;
    observe(node, method, surface, started, &result);
    result
}

/// The items of a `GetRateLimits` or `GetPeerRateLimits` request as the lean path decodes them:
/// their strings share the request's bytes ([`crate::wire_items`]); more than a call may carry are
/// refused before they are read.
pub struct Items(pub Decoded);

impl Items {
    /// The call's answers by `answer` (the method's own), or, for too many items, the error the
    /// router gives them.
    async fn answered<F>(
        self,
        answer: impl FnOnce(Vec<Item>) -> F,
    ) -> Result<Vec<proto::RateLimitResp>, CallError>
    where
        F: Future<Output = Result<Vec<proto::RateLimitResp>, CallError>>,
    {
        match self.0 {
            Decoded::Items(items) => {
                crate::telemetry::record_items(items.len());
                answer(items).await
            }
            Decoded::TooMany => Err(CallError::TooManyItems {
                max: MAX_BATCH_SIZE,
            }),
        }
    }
}

impl From<Vec<proto::RateLimitReq>> for Items {
    fn from(items: Vec<proto::RateLimitReq>) -> Self {
        Items(Decoded::Items(items.into_iter().map(Item::from).collect()))
    }
}

impl LeanRequest for Items {
    fn decode_message(message: Bytes) -> Result<Self, prost::DecodeError> {
        wire_items::decode_items(&message, MAX_BATCH_SIZE).map(Items)
    }
}

/// The answers of a `GetRateLimits` or `GetPeerRateLimits` call as the lean path writes them
/// ([`wire_items::encode_answers`]).
pub struct Answers(pub Vec<proto::RateLimitResp>);

impl LeanResponse for Answers {
    fn encode_message(&self) -> Bytes {
        wire_items::encode_answers(&self.0)
    }
}

impl V1Service {
    async fn rate_limits(&self, request: Request<Items>) -> Result<Response<Answers>, Status> {
        let call = request
            .into_inner()
            .answered(|items| self.node.get_rate_limit_items(items));
        let responses = observed(&self.node, method::GET_RATE_LIMITS, Surface::Grpc, call).await?;
        Ok(Response::new(Answers(responses)))
    }
}

#[tonic::async_trait]
impl V1 for V1Service {
    async fn get_rate_limits(
        &self,
        request: Request<proto::GetRateLimitsReq>,
    ) -> Result<Response<proto::GetRateLimitsResp>, Status> {
        let answers = self.rate_limits(request.map(|message| Items::from(message.requests)));
        let answers = answers.await?;
        Ok(answers.map(|answers| proto::GetRateLimitsResp {
            responses: answers.0,
        }))
    }

    async fn health_check(
        &self,
        _request: Request<proto::HealthCheckReq>,
    ) -> Result<Response<proto::HealthCheckResp>, Status> {
        let call = async { self.node.health_check() };
        let answer = observed(&self.node, method::HEALTH_CHECK, Surface::Grpc, call).await?;
        Ok(Response::new(answer))
    }

    async fn live_check(
        &self,
        _request: Request<proto::LiveCheckReq>,
    ) -> Result<Response<proto::LiveCheckResp>, Status> {
        let call = async { self.node.live_check() };
        observed(&self.node, method::LIVE_CHECK, Surface::Grpc, call).await?;
        Ok(Response::new(proto::LiveCheckResp {}))
    }
}

impl PeersService {
    async fn peer_rate_limits(&self, request: Request<Items>) -> Result<Response<Answers>, Status> {
        let call = request
            .into_inner()
            .answered(|items| self.node.get_peer_rate_limits(items));
        let rate_limits = observed(
            &self.node,
            method::GET_PEER_RATE_LIMITS,
            Surface::Grpc,
            call,
        )
        .await?;
        Ok(Response::new(Answers(rate_limits)))
    }
}

#[tonic::async_trait]
impl PeersV1 for PeersService {
    async fn get_peer_rate_limits(
        &self,
        request: Request<proto::GetPeerRateLimitsReq>,
    ) -> Result<Response<proto::GetPeerRateLimitsResp>, Status> {
        let answers = self.peer_rate_limits(request.map(|message| Items::from(message.requests)));
        let answers = answers.await?;
        Ok(answers.map(|answers| proto::GetPeerRateLimitsResp {
            rate_limits: answers.0,
        }))
    }

    async fn update_peer_globals(
        &self,
        request: Request<proto::UpdatePeerGlobalsReq>,
    ) -> Result<Response<proto::UpdatePeerGlobalsResp>, Status> {
        let globals = request.into_inner().globals;
        crate::telemetry::record_items(globals.len());
        let call = async {
            self.node.update_peer_globals(globals);
            Ok::<(), Status>(())
        };
        observed(&self.node, method::UPDATE_PEER_GLOBALS, Surface::Grpc, call).await?;
        Ok(Response::new(proto::UpdatePeerGlobalsResp {}))
    }
}

impl LeanMethod for V1Service {
    const SERVICE_NAME: &'static str = proto::v1_server::SERVICE_NAME;
    const PATH: &'static str = method::GET_RATE_LIMITS;
    type Request = Items;
    type Response = Answers;
    type Generated = proto::v1_server::V1Server<V1Service>;

    fn generated(&self, max_request_size: usize) -> Self::Generated {
        proto::v1_server::V1Server::new(self.clone()).max_decoding_message_size(max_request_size)
    }

    fn answer(
        &self,
        request: Request<Items>,
    ) -> impl Future<Output = Result<Response<Answers>, Status>> + Send {
        self.rate_limits(request)
    }
}

impl LeanMethod for PeersService {
    const SERVICE_NAME: &'static str = proto::peers_v1_server::SERVICE_NAME;
    const PATH: &'static str = method::GET_PEER_RATE_LIMITS;
    type Request = Items;
    type Response = Answers;
    type Generated = proto::peers_v1_server::PeersV1Server<PeersService>;

    fn generated(&self, max_request_size: usize) -> Self::Generated {
        proto::peers_v1_server::PeersV1Server::new(self.clone())
            .max_decoding_message_size(max_request_size)
    }

    fn answer(
        &self,
        request: Request<Items>,
    ) -> impl Future<Output = Result<Response<Answers>, Status>> + Send {
        self.peer_rate_limits(request)
    }
}

/// `pb.gubernator.V1`'s server: `GetRateLimits` through [`crate::grpc_unary`].
pub type V1Server = LeanServer<V1Service>;

/// `pb.gubernator.PeersV1`'s server: `GetPeerRateLimits` through [`crate::grpc_unary`].
pub type PeersServer = LeanServer<PeersService>;

/// The node's gRPC services for [`crate::grpc_connections`]: `V1`, `PeersV1` and Envoy's
/// `RateLimitService` calls go to their servers directly, every other call to tonic's routes of all
/// the services (which hold those three too, for tonic's own server).
#[derive(Clone)]
pub struct Dispatch {
    v1: V1Server,
    peers: PeersServer,
    rls: crate::rls::service::RlsServer,
    routes: tonic::service::Routes,
}

impl Dispatch {
    /// Dispatches to `v1`, `peers`, `rls` and `routes`.
    pub fn new(
        v1: V1Server,
        peers: PeersServer,
        rls: crate::rls::service::RlsServer,
        routes: tonic::service::Routes,
    ) -> Self {
        Self {
            v1,
            peers,
            rls,
            routes,
        }
    }
}

impl tower::Service<http::Request<Body>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let service = path
            .strip_prefix('/')
            .and_then(|path| path.split_once('/'))
            .map(|(service, _)| service);
        match service {
            Some(proto::v1_server::SERVICE_NAME) => self.v1.call(request),
            Some(proto::peers_v1_server::SERVICE_NAME) => self.peers.call(request),
            Some(crate::rls::service::SERVICE_NAME) => self.rls.call(request),
            _ => Box::pin(tower::Service::call(&mut self.routes, request)),
        }
    }
}

/// The message tonic reports when a request exceeds the decoding limit.
const OVERSIZED_MESSAGE_PREFIX: &str = "Error, decoded message length too large";

/// A layer that answers oversized requests with RESOURCE_EXHAUSTED, as Gubernator (grpc-go) does;
/// tonic reports them as OUT_OF_RANGE, which is also the code of "too many items".
pub fn oversized_message_layer<B>()
-> tower::util::MapResponseLayer<fn(http::Response<B>) -> http::Response<B>> {
    tower::util::MapResponseLayer::new(oversized_as_resource_exhausted::<B>)
}

fn oversized_as_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == b"11");
    let oversized = headers
        .get("grpc-message")
        .and_then(|message| message.to_str().ok())
        .is_some_and(|message| {
            message.starts_with(OVERSIZED_MESSAGE_PREFIX)
                || message.starts_with("Error,%20decoded%20message%20length%20too%20large")
        });
    if out_of_range && oversized {
        // 8 = RESOURCE_EXHAUSTED.
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    response
}
