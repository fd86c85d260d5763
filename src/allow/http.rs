//! The HTTP route `POST /allow`, merged into the node's gateway.
//!
//! Parameters come from the query string (`?user_id=..&resource=..&cost=..&idempotency=..`) or a
//! JSON object body with the same fields (but `idempotency`), or both when they agree; the
//! idempotency key is the `Idempotency-Key` header or r8limiter's `idempotency` parameter (both
//! given and different: 400). Answers: `200` or `429` with r8limiter's
//! `{"allowed","retry_after","tokens_left"}` (both numbers with fractions: seconds to the
//! millisecond, tokens to the thousandth) and the `RateLimit-*` headers (plus `Retry-After` on
//! 429, and `Idempotent-Replayed: true` on a replay); `400` for bad input or a resource name that
//! cannot be one; `422` for an idempotency key reused with a different request; `503` when the
//! cluster cannot decide. Errors are `{"error": code, "message": text}`. A plain `X-Request-ID` is
//! echoed on every answer, as r8limiter does. Each decision counts in
//! r8limiter's `requests_total{result}` and `request_latency_seconds{endpoint="/allow"}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::Value;

use super::{AllowAnswer, AllowError, AllowRequest, AllowService};
use crate::proxy::headers::{add_rate_limit_headers, error_body, json_response};

/// The header that carries the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// r8limiter's query parameter for the idempotency key.
pub const IDEMPOTENCY_PARAM: &str = "idempotency";

/// The header r8limiter echoes so a client can match an answer to its request.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest `X-Request-ID` echoed, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The `X-Request-ID` to echo: the client's, when it is 1 to [`MAX_REQUEST_ID_BYTES`] visible
/// ASCII characters (anything else is not echoed, so the header cannot carry junk back).
pub fn request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(REQUEST_ID)?;
    let bytes = value.as_bytes();
    (!bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_BYTES
        && bytes.iter().all(u8::is_ascii_graphic))
    .then(|| value.clone())
}

/// The `endpoint` label of `request_latency_seconds` for this route.
pub const ENDPOINT: &str = "/allow";

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
    let started = Instant::now();
    let mut response = decide(&service, query, &headers, &body).await;
    if let Some(id) = request_id(&headers) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    let metrics = service.router().evaluator().metrics();
    match response.status() {
        StatusCode::OK => metrics.r8_requests.with_label_values(&["allow"]).inc(),
        StatusCode::TOO_MANY_REQUESTS => metrics.r8_requests.with_label_values(&["deny"]).inc(),
        _ => {}
    }
    metrics
        .r8_latency
        .with_label_values(&[ENDPOINT])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn decide(
    service: &AllowService,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let request = query
        .map_err(|rejection| format!("cannot read the query string: {rejection}"))
        .and_then(|Query(query)| parse_request(&query, body, headers));
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            return json_response(
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
    let mut response = json_response(
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
    if let Some(unknown) = query.keys().find(|k| {
        !matches!(
            k.as_str(),
            "user_id" | "resource" | "cost" | IDEMPOTENCY_PARAM
        )
    }) {
        return Err(format!(
            "unknown parameter '{unknown}'; expected user_id, resource, cost, idempotency"
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
    let header_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| "Idempotency-Key must be visible ASCII".to_string())?
                .to_string(),
        ),
    };
    let idempotency_key = match (header_key, query.get(IDEMPOTENCY_PARAM)) {
        (Some(header), Some(param)) if header != *param => {
            return Err(format!(
                "the Idempotency-Key header ('{header}') and the idempotency parameter ('{param}') \
                 differ; send one, or the same key in both"
            ));
        }
        (Some(header), _) => Some(header),
        (None, param) => param.cloned(),
    };
    Ok(AllowRequest {
        user_id,
        resource,
        cost,
        idempotency_key,
    })
}

/// The JSON body of an answer, r8limiter's: `{"allowed":..,"retry_after":..,"tokens_left":..}`,
/// both numbers with fractions.
pub fn answer_body(answer: &AllowAnswer) -> String {
    serde_json::json!({
        "allowed": answer.outcome.allowed,
        "retry_after": answer.precise.retry_after_secs(),
        "tokens_left": answer.precise.tokens_left(),
    })
    .to_string()
}

fn answer_response(answer: &AllowAnswer) -> Response {
    let status = if answer.outcome.allowed {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    let mut response = json_response(status, answer_body(answer));
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
    json_response(status, error_body(code, &error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allow::tokens::Precise;
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

        // r8limiter's query parameter, alone or agreeing with the header.
        let idempotency = |value: &str, headers: &HeaderMap| {
            parse_request(
                &query(&[("user_id", "u1"), ("idempotency", value)]),
                b"",
                headers,
            )
            .map(|request| request.idempotency_key)
        };
        let key = idempotency("k1", &HeaderMap::new()).unwrap();
        assert_eq!(key.as_deref(), Some("k1"));
        let key = idempotency("abc", &headers).unwrap();
        assert_eq!(key.as_deref(), Some("abc"));
        let error = idempotency("other", &headers).unwrap_err();
        assert!(error.contains("differ"), "{error}");
    }

    #[test]
    fn only_plain_request_ids_are_echoed() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_id(&headers), None);
        headers.insert(REQUEST_ID, HeaderValue::from_static("itest-req-123"));
        assert_eq!(request_id(&headers).unwrap(), "itest-req-123");
        headers.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(request_id(&headers), None);
        let long = "x".repeat(MAX_REQUEST_ID_BYTES + 1);
        headers.insert(REQUEST_ID, HeaderValue::from_str(&long).unwrap());
        assert_eq!(request_id(&headers), None);
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
            precise: Precise {
                tokens_left_milli: 800,
                retry_after_ms: 1500,
            },
            replayed: false,
        };
        assert_eq!(
            answer_body(&answer),
            r#"{"allowed":false,"retry_after":1.5,"tokens_left":0.8}"#
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
