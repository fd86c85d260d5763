//! The tower layer that applies [`Admission`](super::admission::Admission) and per-call deadlines to a server.
//!
//! The same layer wraps the tonic server and the axum gateway; only the way a refusal is written
//! differs ([`GrpcRejection`]: a gRPC status; the gateway's `http::gateway::HttpRejection`:
//! grpc-gateway's JSON error with its HTTP status, kept with the gateway so limits depend on no
//! surface). It runs before any decoding, so a refused call costs almost nothing.
//!
//! Every call takes an admission slot from the pool its path belongs to ([`classify`]): clients'
//! calls (every RPC and route: `/v1/*`, `/allow`, `/metrics`, `/admin/*`, reflection) from the
//! client pool, other nodes' calls (PeersV1, Handoff, AllowV1, Admin) from the peer pool, so
//! clients cannot starve peers. Probes take none: a saturated node must still answer them.
//! Deadlines apply to every call.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

use super::admission::AdmissionPools;
use super::classify::classify;
use super::deadline;
use crate::error::CallError;

/// Writes the response that refuses a call.
pub trait Rejection<B> {
    /// The response for `error`.
    fn reject(error: &CallError) -> http::Response<B>;
}

/// Refusals as gRPC statuses (trailers-only responses).
#[derive(Debug, Clone, Copy)]
pub struct GrpcRejection;

impl Rejection<tonic::body::Body> for GrpcRejection {
    fn reject(error: &CallError) -> http::Response<tonic::body::Body> {
        tonic::Status::from(error.clone()).into_http()
    }
}

/// Applies admission to every call but probes, and `grpc-timeout` deadlines to every call.
pub struct CallLimitsLayer<R> {
    admission: AdmissionPools,
    _rejection: PhantomData<fn() -> R>,
}

impl<R> CallLimitsLayer<R> {
    /// A layer that admits calls through `admission`'s pools.
    pub fn new(admission: AdmissionPools) -> Self {
        Self {
            admission,
            _rejection: PhantomData,
        }
    }
}

impl<R> Clone for CallLimitsLayer<R> {
    fn clone(&self) -> Self {
        Self::new(self.admission.clone())
    }
}

impl<S, R> Layer<S> for CallLimitsLayer<R> {
    type Service = CallLimits<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLimits {
            inner,
            admission: self.admission.clone(),
            _rejection: PhantomData,
        }
    }
}

/// The service made by [`CallLimitsLayer`].
pub struct CallLimits<S, R> {
    inner: S,
    admission: AdmissionPools,
    _rejection: PhantomData<fn() -> R>,
}

impl<S: Clone, R> Clone for CallLimits<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            admission: self.admission.clone(),
            _rejection: PhantomData,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, R, ReqBody, ResBody> Service<http::Request<ReqBody>> for CallLimits<S, R>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
    R: Rejection<ResBody>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let received = Instant::now();
        let deadline = deadline::from_headers(request.headers(), received);
        let admitted = match self.admission.try_admit(classify(request.uri().path())) {
            Ok(admitted) => admitted,
            Err(refused) => return Box::pin(std::future::ready(Ok(R::reject(&refused)))),
        };
        if deadline.is_some_and(|deadline| deadline <= received) {
            let expired = R::reject(&CallError::DeadlineExceeded);
            return Box::pin(std::future::ready(Ok(expired)));
        }
        let call = self.inner.call(request);
        Box::pin(async move {
            // The slot is held until the answer is ready.
            let _admitted = admitted;
            match deadline {
                None => call.await,
                Some(deadline) => match deadline::within(deadline, call).await {
                    Ok(answered) => answered,
                    Err(expired) => Ok(R::reject(&expired)),
                },
            }
        })
    }
}
