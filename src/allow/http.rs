//! The HTTP route `POST /allow`, merged into the node's gateway.
//!
//! Parameters come from the query string (`?user_id=..&resource=..&cost=..`) or a JSON object body
//! with the same fields, or both when they agree. Answers: `200` or `429` with
//! `{"allowed","retry_after","tokens_left"}` (`retry_after` in seconds, with millisecond
//! precision) and the `RateLimit-*` headers (plus `Retry-After` on 429, and `Idempotent-Replayed:
//! true` on a replay); `400` for bad input or an unknown resource; `422` for an idempotency key
//! reused with a different request; `503` when the cluster cannot decide. Errors are
//! `{"error": code, "message": text}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;

use super::{AllowAnswer, AllowError, AllowRequest, AllowService};
use crate::proxy::headers::{add_rate_limit_headers, error_body};

/// The header that carries the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /allow`, served by `service`.
pub fn router(service: Arc<AllowService>) -> Router {
    Router::new()
        .route("/allow", post(allow).fallback(method_not_allowed))
        .with_state(service)
}

async fn allow(
    State(service): State<Arc<AllowService>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = query
        .map_err(|rejection| format!("cannot read the query string: {rejection}"))
        .and_then(|Query(query)| parse_request(&query, &body, &headers));
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            return json(
                StatusCode::BAD_REQUEST,
                error_body("invalid_request", &message),
            );
        }
    };
    match service.allow(request).await {
        Ok(answer) => answer_response(&answer),
        Err(error) => error_response(&error),
    }
}

async fn method_not_allowed() -> Response {
    let mut response = json(
        StatusCode::METHOD_NOT_ALLOWED,
        error_body("method_not_allowed", "use POST /allow"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// Builds the request from the query, the JSON body and the `Idempotency-Key` header.
pub fn parse_request(
    query: &HashMap<String, String>,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<AllowRequest, String> {
    let mut fields: HashMap<&str, String> = HashMap::new();
    for name in ["user_id", "resource", "cost"] {
        if let Some(value) = query.get(name) {
            fields.insert(name, value.clone());
        }
    }
    if let Some(unknown) = query
        .keys()
        .find(|k| !matches!(k.as_str(), "user_id" | "resource" | "cost"))
    {
        return Err(format!(
            "unknown parameter '{unknown}'; expected user_id, resource, cost"
        ));
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| format!("the body is not JSON: {error}"))?;
        let Value::Object(object) = value else {
            return Err("the body must be a JSON object".into());
        };
        for (name, value) in object {
            let name = match name.as_str() {
                "user_id" => "user_id",
                "resource" => "resource",
                "cost" => "cost",
                other => {
                    return Err(format!(
                        "unknown field '{other}'; expected user_id, resource, cost"
                    ));
                }
            };
            let text = match value {
                Value::String(text) => text,
                Value::Number(number) => number.to_string(),
                other => return Err(format!("{name} must be a string or a number, got {other}")),
            };
            match fields.get(name) {
                Some(existing) if *existing != text => {
                    return Err(format!(
                        "{name} is '{existing}' in the query but '{text}' in the body"
                    ));
                }
                _ => {
                    fields.insert(name, text);
                }
            }
        }
    }
    let user_id = fields.remove("user_id").unwrap_or_default();
    let resource = fields
        .remove("resource")
        .unwrap_or_else(|| "default".to_string());
    let cost = match fields.remove("cost") {
        None => 1,
        Some(text) => text
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("cost must be a whole number, got '{text}'"))?,
    };
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| "Idempotency-Key must be visible ASCII".to_string())?
                .to_string(),
        ),
    };
    Ok(AllowRequest {
        user_id,
        resource,
        cost,
        idempotency_key,
    })
}

/// The JSON body of an answer: `{"allowed":..,"retry_after":..,"tokens_left":..}`.
pub fn answer_body(answer: &AllowAnswer) -> String {
    let outcome = &answer.outcome;
    serde_json::json!({
        "allowed": outcome.allowed,
        "retry_after": outcome.retry_after_ms as f64 / 1000.0,
        "tokens_left": outcome.remaining,
    })
    .to_string()
}

fn answer_response(answer: &AllowAnswer) -> Response {
    let status = if answer.outcome.allowed {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let mut response = json(status, answer_body(answer));
    add_rate_limit_headers(response.headers_mut(), &answer.outcome);
    if answer.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn error_response(error: &AllowError) -> Response {
    let (status, code) = match error {
        AllowError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        AllowError::Conflict(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
        AllowError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable"),
    };
    json(status, error_body(code, &error.to_string()))
}

fn json(status: StatusCode, body: String) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refill::Outcome;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_sources() {
        let request = parse_request(&query(&[("user_id", "u1")]), b"", &HeaderMap::new()).unwrap();
        assert_eq!((request.resource.as_str(), request.cost), ("default", 1));
        assert_eq!(request.idempotency_key, None);

        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("abc"));
        let request = parse_request(
            &query(&[("user_id", "u1")]),
            br#"{"resource":"uploads","cost":3,"user_id":"u1"}"#,
            &headers,
        )
        .unwrap();
        assert_eq!(request.resource, "uploads");
        assert_eq!(request.cost, 3);
        assert_eq!(request.idempotency_key.as_deref(), Some("abc"));
    }

    #[test]
    fn bad_parameters_are_explained() {
        let none = HeaderMap::new();
        let check = |q: &[(&str, &str)], body: &[u8], expected: &str| {
            let error = parse_request(&query(q), body, &none).unwrap_err();
            assert!(error.contains(expected), "{error} lacks {expected}");
        };
        check(&[("cost", "two")], b"", "cost must be a whole number");
        check(&[("user", "x")], b"", "unknown parameter 'user'");
        check(&[], b"[1]", "JSON object");
        check(&[], b"{", "not JSON");
        check(&[], br#"{"cost":1.5}"#, "whole number");
        check(&[], br#"{"colour":1}"#, "unknown field");
        check(
            &[("user_id", "a")],
            br#"{"user_id":"b"}"#,
            "in the query but",
        );
    }

    #[test]
    fn the_body_has_the_seed_shape() {
        let answer = AllowAnswer {
            outcome: Outcome {
                allowed: false,
                limit: 10,
                remaining: 0,
                retry_after_ms: 1500,
                reset_after_ms: 10_000,
            },
            replayed: false,
        };
        assert_eq!(
            answer_body(&answer),
            r#"{"allowed":false,"retry_after":1.5,"tokens_left":0}"#
        );
        let response = answer_response(&answer);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "2");
        assert_eq!(
            error_response(&AllowError::Conflict("x".into())).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
