//! The HTTP JSON gateway: Gubernator's grpc-gateway routes, answered by the same [`Node`] as gRPC.
//!
//! Bodies are decoded and encoded by [`super::json`] (protojson rules); errors use the
//! `google.rpc.Status` JSON shape with the HTTP status grpc-gateway derives from the gRPC code.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tonic::Code;

use super::json;
use crate::error::{CallError, MAX_BATCH_SIZE};
use crate::grpc::{Surface, method, observed};
use crate::node::Node;
use crate::proto;

/// The gateway's routes for `node`, accepting bodies of at most `max_body_bytes`.
pub fn router(node: Arc<Node>, max_body_bytes: usize) -> Router {
    Router::new()
        .merge(crate::admin_views::http::routes(Arc::clone(node.router())))
        .merge(super::probes::routes(Arc::clone(&node)))
        .route("/v1/GetRateLimits", post(get_rate_limits))
        .route("/v1/HealthCheck", get(health_check))
        .route("/v1/LiveCheck", get(live_check))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(GatewayState {
            node,
            max_body_bytes,
        })
}

#[derive(Clone)]
struct GatewayState {
    node: Arc<Node>,
    max_body_bytes: usize,
}

async fn get_rate_limits(
    State(state): State<GatewayState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let call = answer_get_rate_limits(&state, &headers, body);
    match observed(&state.node, method::GET_RATE_LIMITS, Surface::Http, call).await {
        Ok(responses) => json_response(
            StatusCode::OK,
            json::encode_get_rate_limits_resp(&proto::GetRateLimitsResp { responses }),
        ),
        Err(error) => error_response(&error),
    }
}

async fn answer_get_rate_limits(
    state: &GatewayState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<proto::RateLimitResp>, GatewayError> {
    check_content_type(headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::Call(CallError::TooLarge {
                limit: state.max_body_bytes,
            })
        } else if let Some(timeout) = crate::limits::http_server::body_timeout_in(&rejection) {
            GatewayError::Call(CallError::BodyTimeout(timeout.0))
        } else {
            GatewayError::Call(CallError::InvalidArgument(format!(
                "cannot read the request body: {rejection}"
            )))
        }
    })?;
    // Counted before anything is built: a body of less than three bytes an item (`{},`) cannot
    // hold too many, and is not scanned twice.
    if body.len() > 3 * MAX_BATCH_SIZE
        && crate::json_lists::list_length(&body, "requests")
            .is_some_and(|length| length > MAX_BATCH_SIZE)
    {
        return Err(GatewayError::Call(CallError::TooManyItems {
            max: MAX_BATCH_SIZE,
        }));
    }
    let request = json::decode_get_rate_limits_req(&body)
        .map_err(|error| GatewayError::Call(CallError::InvalidArgument(error.to_string())))?;
    crate::telemetry::record_items(request.requests.len());
    Ok(state.node.get_rate_limits(request.requests).await?)
}

async fn health_check(State(state): State<GatewayState>) -> Response {
    let call = async { state.node.health_check() };
    match observed(&state.node, method::HEALTH_CHECK, Surface::Http, call).await {
        Ok(health) => json_response(StatusCode::OK, json::encode_health_check_resp(&health)),
        Err(error) => error_response(&GatewayError::Call(error)),
    }
}

async fn live_check(State(state): State<GatewayState>) -> Response {
    let call = async { state.node.live_check() };
    match observed(&state.node, method::LIVE_CHECK, Surface::Http, call).await {
        Ok(()) => json_response(StatusCode::OK, json::encode_live_check_resp()),
        Err(error) => error_response(&GatewayError::Call(error)),
    }
}

async fn metrics(State(state): State<GatewayState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.node.render_metrics(),
    )
        .into_response()
}

async fn not_found() -> Response {
    error_response(&GatewayError::Route(Code::NotFound, "Not Found"))
}

async fn method_not_allowed() -> Response {
    error_response(&GatewayError::Route(
        Code::Unimplemented,
        "Method Not Allowed",
    ))
}

/// Why the gateway refused a request.
#[derive(Debug, thiserror::Error)]
enum GatewayError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("unsupported content type '{0}'; send application/json")]
    UnsupportedMediaType(String),
    #[error("{1}")]
    Route(Code, &'static str),
}

impl GatewayError {
    fn code(&self) -> Code {
        match self {
            GatewayError::Call(error) => error.code(),
            GatewayError::UnsupportedMediaType(_) => Code::InvalidArgument,
            GatewayError::Route(code, _) => *code,
        }
    }

    fn http_status(&self) -> StatusCode {
        match self {
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::Call(CallError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Call(CallError::BodyTimeout(_)) => StatusCode::REQUEST_TIMEOUT,
            other => http_status_for(other.code()),
        }
    }
}

/// Accepts JSON and what JSON clients commonly send instead: no content type, `text/plain`, and
/// curl's default `application/x-www-form-urlencoded` (grpc-gateway reads all of them as JSON).
fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let accepted = matches!(
        essence.as_str(),
        "application/json"
            | "text/json"
            | "text/plain"
            | "application/x-www-form-urlencoded"
            | "*/*"
    ) || essence.ends_with("+json");
    if accepted {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType(text.to_string()))
    }
}

/// The HTTP status grpc-gateway answers for a gRPC code.
pub fn http_status_for(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn error_response(error: &GatewayError) -> Response {
    json_response(
        error.http_status(),
        json::encode_error(error.code() as i32, &error.to_string()),
    )
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Refusals as the HTTP gateway's JSON errors (`RESOURCE_EXHAUSTED` is 429, `DEADLINE_EXCEEDED`
/// is 504).
#[derive(Debug, Clone, Copy)]
pub struct HttpRejection;

impl crate::limits::Rejection<axum::body::Body> for HttpRejection {
    fn reject(error: &CallError) -> http::Response<axum::body::Body> {
        let code = error.code();
        let body = json::encode_error(code as i32, &error.to_string());
        let mut response = http::Response::new(axum::body::Body::from(body));
        *response.status_mut() = http_status_for(code);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_like_grpc_gateway() {
        for (code, status) in [
            (Code::OutOfRange, StatusCode::BAD_REQUEST),
            (Code::InvalidArgument, StatusCode::BAD_REQUEST),
            (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (Code::NotFound, StatusCode::NOT_FOUND),
            (Code::Unimplemented, StatusCode::NOT_IMPLEMENTED),
            (Code::ResourceExhausted, StatusCode::TOO_MANY_REQUESTS),
        ] {
            assert_eq!(http_status_for(code), status, "{code:?}");
        }
    }

    #[test]
    fn json_like_content_types_are_accepted() {
        for accepted in [
            "application/json",
            "application/json; charset=utf-8",
            "application/x-www-form-urlencoded",
            "application/merge-patch+json",
            "text/plain",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(accepted));
            assert!(check_content_type(&headers).is_ok(), "{accepted}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_ok());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        assert!(matches!(
            check_content_type(&headers),
            Err(GatewayError::UnsupportedMediaType(_))
        ));
    }
}
