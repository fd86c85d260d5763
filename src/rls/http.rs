//! The HTTP face: `POST /json` (envoy ratelimit's JSON endpoint) and `GET /rlconfig`.
//!
//! `/json` takes a `RateLimitRequest` as protojson (camelCase or the proto's snake_case names,
//! numbers or strings for 64-bit values, enum names or numbers) and answers the
//! `RateLimitResponse` as protojson: 200, or 429 when the overall code is OVER_LIMIT, as upstream.
//! The mapping is written by hand because the generated types carry no serde support.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::counters::Counters;
use super::decide::{MAX_DESCRIPTORS, MAX_ENTRIES, RlsError};
use super::service::RlsService;
use super::window::Unit;
use super::wire::rate_limit_descriptor::{Entry, RateLimitOverride};
use super::wire::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse, rate_limit_response};
use crate::json_lists::list_shape;
use envoy_types::pb::google::protobuf::UInt64Value;

/// The routes, with bodies bounded by `max_body_bytes`.
pub fn router<C: Counters>(service: Arc<RlsService<C>>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/json", post(json_endpoint::<C>))
        .route("/rlconfig", get(rlconfig::<C>))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(service)
}

async fn json_endpoint<C: Counters>(
    State(service): State<Arc<RlsService<C>>>,
    body: axum::body::Bytes,
) -> Response {
    // Counted before anything is built (`json_lists`); a body of less than three bytes a
    // descriptor or entry (`{},`) cannot hold too many, and is not scanned twice.
    if body.len() > 3 * MAX_ENTRIES
        && let Some(error) = oversized(&body)
    {
        return (status_of(&error), error.to_string()).into_response();
    }
    let request = match serde_json::from_slice::<Value>(&body)
        .map_err(|error| format!("invalid JSON: {error}"))
        .and_then(|value| request_from_json(&value))
    {
        Ok(request) => request,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    match service.should_rate_limit(&request).await {
        Ok(response) => {
            let status = if response.overall_code == rate_limit_response::Code::OverLimit as i32 {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::OK
            };
            (status, axum::Json(response_to_json(&response))).into_response()
        }
        Err(error) => (status_of(&error), error.to_string()).into_response(),
    }
}

/// The size error a body's descriptors or entries are refused with, found by counting them:
/// more than [`MAX_DESCRIPTORS`] descriptors, else the first descriptor with more than
/// [`MAX_ENTRIES`] entries. A body with neither (or one the counting cannot read) is decoded.
fn oversized(body: &[u8]) -> Option<RlsError> {
    let shape = list_shape(body, "descriptors", Some(("entries", MAX_ENTRIES)))?;
    if shape.length > MAX_DESCRIPTORS {
        return Some(RlsError::TooManyDescriptors {
            count: shape.length,
        });
    }
    shape
        .crowded
        .map(|(index, count)| RlsError::TooManyEntries { index, count })
}

/// The HTTP status of an error (400 for the caller's mistakes).
pub fn status_of(error: &RlsError) -> StatusCode {
    match error {
        RlsError::NoConfiguration => StatusCode::SERVICE_UNAVAILABLE,
        RlsError::Counters(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

async fn rlconfig<C: Counters>(State(service): State<Arc<RlsService<C>>>) -> Response {
    let state = service.state();
    let mut text = String::new();
    match state.source() {
        Some(source) => text.push_str(&format!("# source: {}\n", source.display())),
        None => text.push_str("# no configuration (GUBER_RLS_CONFIG is not set)\n"),
    }
    if let Some(error) = state.last_error() {
        text.push_str(&format!(
            "# last reload rejected (still serving the previous configuration): {error}\n"
        ));
    }
    if let Some(config) = state.current() {
        text.push_str(&config.dump());
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// A field by its protojson (camelCase) or proto (snake_case) name.
fn field<'a>(object: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    object
        .get(camel)
        .or_else(|| object.get(snake))
        .filter(|value| !value.is_null())
}

fn unsigned(value: &Value, what: &str, max: u64) -> Result<u64, String> {
    let number = match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.parse::<u64>().ok(),
        _ => None,
    };
    number
        .filter(|number| *number <= max)
        .ok_or_else(|| format!("{what}: expected a whole number from 0 to {max}"))
}

fn text(value: &Value, what: &str) -> Result<String, String> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{what}: expected a string"))
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{what}: expected an object"))
}

fn list<'a>(value: Option<&'a Value>, what: &str) -> Result<&'a [Value], String> {
    match value {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{what}: expected a list")),
    }
}

/// Envoy's `RateLimitRequest` from protojson.
pub fn request_from_json(value: &Value) -> Result<RateLimitRequest, String> {
    let root = object(value, "request")?;
    let mut request = RateLimitRequest::default();
    if let Some(domain) = field(root, "domain", "domain") {
        request.domain = text(domain, "domain")?;
    }
    if let Some(hits) = field(root, "hitsAddend", "hits_addend") {
        request.hits_addend =
            u32::try_from(unsigned(hits, "hitsAddend", u64::from(u32::MAX))?).unwrap_or(u32::MAX);
    }
    let descriptors = list(field(root, "descriptors", "descriptors"), "descriptors")?;
    if descriptors.len() > MAX_DESCRIPTORS {
        return Err(RlsError::TooManyDescriptors {
            count: descriptors.len(),
        }
        .to_string());
    }
    for (index, descriptor) in descriptors.iter().enumerate() {
        let what = format!("descriptors[{index}]");
        let object = object(descriptor, &what)?;
        let mut parsed = RateLimitDescriptor::default();
        let entries = list(
            field(object, "entries", "entries"),
            &format!("{what}.entries"),
        )?;
        if entries.len() > MAX_ENTRIES {
            return Err(RlsError::TooManyEntries {
                index,
                count: entries.len(),
            }
            .to_string());
        }
        for (position, entry) in entries.iter().enumerate() {
            let what = format!("{what}.entries[{position}]");
            let entry = super::http::object(entry, &what)?;
            let key = field(entry, "key", "key")
                .map(|key| text(key, &format!("{what}.key")))
                .transpose()?
                .unwrap_or_default();
            let value = field(entry, "value", "value")
                .map(|value| text(value, &format!("{what}.value")))
                .transpose()?
                .unwrap_or_default();
            parsed.entries.push(Entry { key, value });
        }
        if let Some(limit) = field(object, "limit", "limit") {
            let limit = super::http::object(limit, &format!("{what}.limit"))?;
            let requests_per_unit = match field(limit, "requestsPerUnit", "requests_per_unit") {
                Some(value) => u32::try_from(unsigned(
                    value,
                    &format!("{what}.limit.requestsPerUnit"),
                    u64::from(u32::MAX),
                )?)
                .unwrap_or(u32::MAX),
                None => 0,
            };
            let unit = match field(limit, "unit", "unit") {
                Some(Value::String(name)) => Unit::from_name(name).map_or(0, Unit::wire),
                Some(value) => {
                    i32::try_from(unsigned(value, &format!("{what}.limit.unit"), 7)?).unwrap_or(0)
                }
                None => 0,
            };
            parsed.limit = Some(RateLimitOverride {
                requests_per_unit,
                unit,
            });
        }
        if let Some(hits) = field(object, "hitsAddend", "hits_addend") {
            parsed.hits_addend = Some(UInt64Value {
                value: unsigned(hits, &format!("{what}.hitsAddend"), u64::MAX)?,
            });
        }
        if let Some(negative) = field(object, "isNegativeHits", "is_negative_hits") {
            parsed.is_negative_hits = negative
                .as_bool()
                .ok_or_else(|| format!("{what}.isNegativeHits: expected true or false"))?;
        }
        request.descriptors.push(parsed);
    }
    Ok(request)
}

fn code_name(code: i32) -> &'static str {
    match rate_limit_response::Code::try_from(code) {
        Ok(rate_limit_response::Code::Ok) => "OK",
        Ok(rate_limit_response::Code::OverLimit) => "OVER_LIMIT",
        _ => "UNKNOWN",
    }
}

/// Envoy's `RateLimitResponse` as protojson (default values left out, as protojson does).
pub fn response_to_json(response: &RateLimitResponse) -> Value {
    let mut root = Map::new();
    root.insert(
        "overallCode".into(),
        json!(code_name(response.overall_code)),
    );
    let statuses: Vec<Value> = response
        .statuses
        .iter()
        .map(|status| {
            let mut object = Map::new();
            object.insert("code".into(), json!(code_name(status.code)));
            if let Some(limit) = &status.current_limit {
                let mut current = Map::new();
                if !limit.name.is_empty() {
                    current.insert("name".into(), json!(limit.name));
                }
                if limit.requests_per_unit != 0 {
                    current.insert("requestsPerUnit".into(), json!(limit.requests_per_unit));
                }
                let unit = Unit::from_wire(limit.unit).map_or("UNKNOWN", Unit::wire_name);
                current.insert("unit".into(), json!(unit));
                object.insert("currentLimit".into(), Value::Object(current));
            }
            if status.limit_remaining != 0 {
                object.insert("limitRemaining".into(), json!(status.limit_remaining));
            }
            if let Some(duration) = &status.duration_until_reset {
                object.insert(
                    "durationUntilReset".into(),
                    json!(format!("{}s", duration.seconds)),
                );
            }
            Value::Object(object)
        })
        .collect();
    if !statuses.is_empty() {
        root.insert("statuses".into(), Value::Array(statuses));
    }
    if !response.response_headers_to_add.is_empty() {
        let headers: Vec<Value> = response
            .response_headers_to_add
            .iter()
            .map(|header| json!({"key": header.key, "value": header.value}))
            .collect();
        root.insert("responseHeadersToAdd".into(), Value::Array(headers));
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_from_protojson_in_either_spelling() {
        let request = request_from_json(&json!({
            "domain": "d",
            "hits_addend": 2,
            "descriptors": [
                {"entries": [{"key": "k", "value": "v"}], "hitsAddend": "0"},
                {"entries": [{"key": "k"}], "limit": {"requestsPerUnit": 5, "unit": "MINUTE"}, "isNegativeHits": true}
            ]
        }))
        .unwrap();
        assert_eq!(request.domain, "d");
        assert_eq!(request.hits_addend, 2);
        assert_eq!(
            request.descriptors[0].hits_addend,
            Some(UInt64Value { value: 0 })
        );
        assert_eq!(request.descriptors[1].entries[0].value, "");
        assert_eq!(
            request.descriptors[1].limit,
            Some(RateLimitOverride {
                requests_per_unit: 5,
                unit: 2
            })
        );
        assert!(request.descriptors[1].is_negative_hits);
    }

    #[test]
    fn bad_requests_name_the_field() {
        for (body, field) in [
            (json!([]), "request"),
            (json!({"domain": 1}), "domain"),
            (json!({"descriptors": {}}), "descriptors"),
            (
                json!({"descriptors": [{"entries": [{"key": 5}]}]}),
                "descriptors[0].entries[0].key",
            ),
            (json!({"hitsAddend": -1}), "hitsAddend"),
        ] {
            let error = request_from_json(&body).unwrap_err();
            assert!(error.starts_with(field), "{error}");
        }
    }

    #[test]
    fn responses_are_protojson() {
        let response = RateLimitResponse {
            overall_code: 2,
            statuses: vec![rate_limit_response::DescriptorStatus {
                code: 2,
                current_limit: Some(rate_limit_response::RateLimit {
                    name: String::new(),
                    requests_per_unit: 3,
                    unit: 2,
                }),
                limit_remaining: 0,
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 40,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            response_to_json(&response),
            json!({"overallCode": "OVER_LIMIT", "statuses": [{"code": "OVER_LIMIT", "currentLimit": {"requestsPerUnit": 3, "unit": "MINUTE"}, "durationUntilReset": "40s"}]})
        );
    }
}
