//! The RLS front: `ShouldRateLimit` over gRPC, shared with `POST /json`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::grpc_unary::{LeanMethod, LeanServer};

use super::counters::Counters;
use super::decide::{self, Options, RlsError};
use super::metrics::CallResult;
use super::reload::RlsState;
use super::wire::rate_limit_service_server::{RateLimitService, RateLimitServiceServer};
use super::wire::{RateLimitRequest, RateLimitResponse, rate_limit_response::Code};

/// Answers `ShouldRateLimit` calls with the current configuration, counting through `C`.
#[derive(Debug)]
pub struct RlsService<C> {
    counters: Arc<C>,
    state: Arc<RlsState>,
    options: Options,
}

impl<C: Counters> RlsService<C> {
    /// A service over `counters`, configured by `state`.
    pub fn new(counters: Arc<C>, state: Arc<RlsState>, options: Options) -> Self {
        Self {
            counters,
            state,
            options,
        }
    }

    /// The configuration state (for `/rlconfig`).
    pub fn state(&self) -> &Arc<RlsState> {
        &self.state
    }

    /// Decides one call and records its stats.
    pub async fn should_rate_limit(
        &self,
        request: &RateLimitRequest,
    ) -> Result<RateLimitResponse, RlsError> {
        let config = self.state.current();
        let metrics = self.state.metrics();
        match decide::should_rate_limit(&*self.counters, config.as_deref(), &self.options, request)
            .await
        {
            Ok(outcome) => {
                metrics.record(&outcome.stats);
                if outcome.global_shadow {
                    metrics.global_shadow_mode.inc();
                }
                metrics.call(if outcome.response.overall_code == Code::OverLimit as i32 {
                    CallResult::OverLimit
                } else {
                    CallResult::Ok
                });
                Ok(outcome.response)
            }
            Err(error) => {
                metrics.call(CallResult::Error);
                Err(error)
            }
        }
    }
}

/// The gRPC status an error is answered with: the caller's mistakes are `INVALID_ARGUMENT`, a
/// missing configuration `FAILED_PRECONDITION`, counters that cannot be reached `UNAVAILABLE`
/// (Envoy then applies its `failure_mode_deny`).
pub fn status_of(error: &RlsError) -> Status {
    match error {
        RlsError::NoConfiguration => Status::failed_precondition(error.to_string()),
        RlsError::Counters(_) => Status::unavailable(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

/// The tonic service of an [`RlsService`].
#[derive(Debug)]
pub struct RlsGrpc<C>(Arc<RlsService<C>>);

impl<C> Clone for RlsGrpc<C> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

/// Envoy's `RateLimitService` name, as its calls' paths carry it.
pub use super::wire::rate_limit_service_server::SERVICE_NAME;

/// The node's RLS server: `ShouldRateLimit` answered in one piece ([`crate::grpc_unary`]).
pub type RlsServer = LeanServer<RlsGrpc<crate::node::Node>>;

/// The server for `tonic::transport::Server::add_service` and `grpc::Dispatch`, decoding at most
/// `max_message_size` bytes per call.
pub fn server<C: Counters>(
    service: Arc<RlsService<C>>,
    max_message_size: usize,
) -> LeanServer<RlsGrpc<C>> {
    LeanServer::new(RlsGrpc(service), max_message_size)
}

impl<C: Counters> RlsGrpc<C> {
    /// Decides a `ShouldRateLimit` call (both servers' handler).
    async fn answer_call(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        crate::telemetry::record_items(request.get_ref().descriptors.len());
        self.0
            .should_rate_limit(request.get_ref())
            .await
            .map(Response::new)
            .map_err(|error| status_of(&error))
    }
}

impl<C: Counters> LeanMethod for RlsGrpc<C> {
    const SERVICE_NAME: &'static str = SERVICE_NAME;
    const PATH: &'static str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
    type Request = RateLimitRequest;
    type Response = RateLimitResponse;
    type Generated = RateLimitServiceServer<RlsGrpc<C>>;

    fn generated(&self, max_request_size: usize) -> Self::Generated {
        RateLimitServiceServer::new(self.clone()).max_decoding_message_size(max_request_size)
    }

    fn answer(
        &self,
        request: Request<RateLimitRequest>,
    ) -> impl Future<Output = Result<Response<RateLimitResponse>, Status>> + Send {
        self.answer_call(request)
    }
}

#[tonic::async_trait]
impl<C: Counters> RateLimitService for RlsGrpc<C> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.answer_call(request).await
    }
}
