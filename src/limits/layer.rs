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

use super::admission::{AdmissionPools, Admitted};
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

impl<S, R, ReqBody, ResBody> Service<http::Request<ReqBody>> for CallLimits<S, R>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    R: Rejection<ResBody>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = LimitedCall<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let received = Instant::now();
        let deadline = deadline::from_headers(request.headers(), received);
        let admitted = match self.admission.try_admit(classify(request.uri().path())) {
            Ok(admitted) => admitted,
            Err(refused) => return LimitedCall::refused(R::reject(&refused)),
        };
        if deadline.is_some_and(|deadline| deadline <= received) {
            return LimitedCall::refused(R::reject(&CallError::DeadlineExceeded));
        }
        let call = self.inner.call(request);
        match deadline {
            None => LimitedCall::admitted(call, admitted),
            Some(deadline) => {
                LimitedCall::with_deadline(deadline::within(deadline, call), admitted, R::reject)
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`CallLimits`] call: refused at once, or running with its admission slot,
    /// which is given back as soon as the answer is ready. A named type, not a boxed future: every
    /// call goes through it.
    pub struct LimitedCall<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F, B> {
        // Refused before it ran: the refusal, until it is returned.
        Refused { response: Option<http::Response<B>> },
        // Running without a deadline, with the admission slot (none for probes).
        Admitted {
            #[pin]
            call: F,
            admitted: Option<Admitted>,
        },
        // Running within the caller's deadline; `reject` answers once it passed.
        WithDeadline {
            #[pin]
            call: deadline::Within<F>,
            admitted: Option<Admitted>,
            reject: fn(&CallError) -> http::Response<B>,
        },
    }
}

impl<F, B> LimitedCall<F, B> {
    fn refused(response: http::Response<B>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    fn admitted(call: F, admitted: Option<Admitted>) -> Self {
        Self {
            state: State::Admitted { call, admitted },
        }
    }

    fn with_deadline(
        call: deadline::Within<F>,
        admitted: Option<Admitted>,
        reject: fn(&CallError) -> http::Response<B>,
    ) -> Self {
        Self {
            state: State::WithDeadline {
                call,
                admitted,
                reject,
            },
        }
    }
}

impl<F, B, E> Future for LimitedCall<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            // Polled again after it finished (a caller's bug): pending, not a panic.
            StateProjection::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            StateProjection::Admitted { call, admitted } => {
                let answer = std::task::ready!(call.poll(cx));
                admitted.take();
                Poll::Ready(answer)
            }
            StateProjection::WithDeadline {
                call,
                admitted,
                reject,
            } => {
                let finished = std::task::ready!(call.poll(cx));
                admitted.take();
                Poll::Ready(finished.unwrap_or_else(|expired| Ok(reject(&expired))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use tonic::body::Body;
    use tower::ServiceExt;

    use super::*;

    /// A gRPC call to V1 (the client pool), with `grpc-timeout` when given.
    fn call(timeout: Option<&str>) -> http::Request<Body> {
        let mut request = http::Request::builder().uri("/pb.gubernator.V1/GetRateLimits");
        if let Some(timeout) = timeout {
            request = request.header(deadline::GRPC_TIMEOUT_HEADER, timeout);
        }
        request.body(Body::empty()).expect("a valid request")
    }

    fn grpc_status(response: &http::Response<Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|status| status.to_str().ok())
    }

    type Limited =
        tower::util::BoxCloneService<http::Request<Body>, http::Response<Body>, Infallible>;

    /// Limits over a service that answers once `gate` opens.
    fn limited(admission: &AdmissionPools, gate: tokio::sync::watch::Receiver<bool>) -> Limited {
        let answer = tower::service_fn(move |_request: http::Request<Body>| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok::<_, Infallible>(http::Response::new(Body::empty()))
            }
        });
        Limited::new(CallLimitsLayer::<GrpcRejection>::new(admission.clone()).layer(answer))
    }

    #[tokio::test]
    async fn a_slot_is_held_while_the_call_runs_and_given_back_with_its_answer() {
        let admission = AdmissionPools::new(1, 1);
        let (open, gate) = tokio::sync::watch::channel(false);
        let mut service = limited(&admission, gate);
        // Called directly (not through `oneshot`, which drops a finished future at once), so
        // that the future outlives its answer as hyper's may.
        let mut running = service.ready().await.expect("ready").call(call(None));
        assert!(futures_util::poll!(running.as_mut()).is_pending());
        assert_eq!(admission.clients.in_use(), 1);

        let refused = service.clone().oneshot(call(None)).await.expect("answered");
        assert_eq!(grpc_status(&refused), Some("8"), "the pool of one is full");

        open.send_replace(true);
        let answer = running.as_mut().await.expect("answered");
        assert_eq!(grpc_status(&answer), None, "the inner service's answer");
        assert_eq!(admission.clients.in_use(), 0, "given back with the answer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_is_answered_deadline_exceeded_and_frees_its_slot() {
        let admission = AdmissionPools::new(1, 1);
        let (_open, gate) = tokio::sync::watch::channel(false);
        let service = limited(&admission, gate);
        let late = service.oneshot(call(Some("50m"))).await.expect("answered");
        assert_eq!(grpc_status(&late), Some("4"), "DEADLINE_EXCEEDED");
        assert_eq!(admission.clients.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_its_deadline_gets_the_inner_answer() {
        let admission = AdmissionPools::new(1, 1);
        let (open, gate) = tokio::sync::watch::channel(false);
        let service = limited(&admission, gate);
        let opener = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            open.send_replace(true);
        });
        let answer = service.oneshot(call(Some("1S"))).await.expect("answered");
        assert_eq!(grpc_status(&answer), None);
        assert_eq!(admission.clients.in_use(), 0);
        opener.await.expect("the opener finished");
    }
}
