//! `ringlimit.v1.AllowV1`: the records' node side of `/allow`, and the conversions to and from its
//! wire types.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::{self, allow_v1_server::AllowV1};
use super::tokens::Precise;
use super::{AllowAnswer, AllowError, AllowRequest, AllowService};
use crate::refill::Outcome;

/// The `AllowV1` service of a node.
#[derive(Clone)]
pub struct AllowGrpc {
    service: Arc<AllowService>,
}

/// The tonic server of `service`, for `tonic::transport::Server::add_service`.
pub fn server(service: Arc<AllowService>) -> pb::allow_v1_server::AllowV1Server<AllowGrpc> {
    pb::allow_v1_server::AllowV1Server::new(AllowGrpc { service })
}

#[tonic::async_trait]
impl AllowV1 for AllowGrpc {
    async fn allow(
        &self,
        request: Request<pb::AllowReq>,
    ) -> Result<Response<pb::AllowResp>, Status> {
        let request = from_wire(request.into_inner());
        match self.service.allow_as_records_owner(request).await {
            Ok(answer) => Ok(Response::new(to_wire_answer(&answer))),
            Err(error) => Err(status_of(&error)),
        }
    }
}

/// The gRPC status a failure is answered with.
pub fn status_of(error: &AllowError) -> Status {
    match error {
        AllowError::Invalid(message) => Status::invalid_argument(message),
        AllowError::Conflict(message) => Status::failed_precondition(message),
        AllowError::Unavailable(message) => Status::unavailable(message),
    }
}

/// A call as it travels to the records' node.
pub fn to_wire(request: &AllowRequest) -> pb::AllowReq {
    pb::AllowReq {
        user_id: request.user_id.clone(),
        resource: request.resource.clone(),
        cost: request.cost,
        idempotency_key: request.idempotency_key.clone().unwrap_or_default(),
    }
}

fn from_wire(request: pb::AllowReq) -> AllowRequest {
    AllowRequest {
        user_id: request.user_id,
        resource: request.resource,
        cost: request.cost,
        idempotency_key: Some(request.idempotency_key).filter(|key| !key.is_empty()),
    }
}

fn to_wire_answer(answer: &AllowAnswer) -> pb::AllowResp {
    let outcome = &answer.outcome;
    pb::AllowResp {
        allowed: outcome.allowed,
        tokens_left: outcome.remaining,
        retry_after_ms: outcome.retry_after_ms,
        limit: outcome.limit,
        reset_after_ms: outcome.reset_after_ms,
        replayed: answer.replayed,
        tokens_left_milli: Some(answer.precise.tokens_left_milli),
    }
}

/// The answer the records' node gave.
pub fn from_wire_answer(answer: &pb::AllowResp) -> AllowAnswer {
    AllowAnswer {
        precise: Precise {
            tokens_left_milli: answer
                .tokens_left_milli
                .unwrap_or_else(|| answer.tokens_left.saturating_mul(1000)),
            retry_after_ms: answer.retry_after_ms,
        },
        outcome: Outcome {
            allowed: answer.allowed,
            limit: answer.limit,
            remaining: answer.tokens_left,
            retry_after_ms: answer.retry_after_ms,
            reset_after_ms: answer.reset_after_ms,
        },
        replayed: answer.replayed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_survive_the_wire() {
        let request = AllowRequest {
            user_id: "u".into(),
            resource: "r".into(),
            cost: 3,
            idempotency_key: Some("k".into()),
        };
        assert_eq!(from_wire(to_wire(&request)), request);
        let plain = AllowRequest {
            idempotency_key: None,
            ..request
        };
        assert_eq!(from_wire(to_wire(&plain)), plain);
        let answer = AllowAnswer {
            outcome: Outcome {
                allowed: false,
                limit: 10,
                remaining: 1,
                retry_after_ms: 200,
                reset_after_ms: 900,
            },
            precise: Precise {
                tokens_left_milli: 1_250,
                retry_after_ms: 200,
            },
            replayed: true,
        };
        assert_eq!(from_wire_answer(&to_wire_answer(&answer)), answer);
        // An older node sends whole tokens only.
        let old = pb::AllowResp {
            tokens_left_milli: None,
            ..to_wire_answer(&answer)
        };
        assert_eq!(from_wire_answer(&old).precise.tokens_left_milli, 1_000);
        assert_eq!(
            status_of(&AllowError::Conflict("x".into())).code(),
            tonic::Code::FailedPrecondition
        );
    }
}
