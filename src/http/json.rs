//! The JSON bodies of the HTTP gateway, in protojson form exactly as Gubernator's grpc-gateway
//! writes and reads them.
//!
//! Gubernator serves its HTTP API through grpc-gateway, which converts between JSON and the
//! protobuf messages with Go's `protojson` (`EmitUnpopulated` on output, `DiscardUnknown` on input).
//! Existing HTTP clients depend on the details of that mapping: 64-bit integers travel as JSON
//! strings, enums as their names, zero values are written out, and input may use either the proto
//! field name (`unique_key`) or its lowerCamelCase JSON name (`uniqueKey`). The prost types in
//! [`crate::proto`] know nothing about JSON, and a plain serde derive would get most of these rules
//! wrong, so this module implements the mapping by hand for the few messages the gateway carries.
//!
//! Output is written compactly, in proto field-number order, with map entries sorted by key (as
//! protojson does). Input is parsed into a [`serde_json::Value`] first and then read field by
//! field, so that every error can say which field of which list item was wrong; every
//! [`JsonError`] is meant to be answered as gRPC `INVALID_ARGUMENT` (HTTP 400).
//!
//! An empty body is read as `{}`, as grpc-gateway does. Deliberate differences from its input
//! handling: an unknown enum name is an error (`DiscardUnknown` silently reads it
//! as 0, which would turn a misspelt `LEAKY_BUCKET` into a token bucket), and a key repeated under
//! the same name keeps its last value (protojson rejects it; serde_json cannot see it). Output
//! never has the random space after commas that Go's protojson adds to discourage byte-exact
//! comparisons; it is the compact form.

use std::collections::{BTreeMap, HashMap};

use serde::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

use crate::proto;

/// Why a JSON body could not be read as the expected protobuf message.
///
/// Errors inside a list item name the item first, for example
/// `requests[3]: invalid value for field 'hits': expected an integer or a decimal string, got true`.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The body is not valid UTF-8, which JSON requires.
    #[error("body is not valid UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// The offset of the first byte that is not valid UTF-8.
        offset: usize,
    },

    /// The body is not well-formed JSON (a syntax error, truncated input or trailing data).
    #[error("malformed JSON at line {line} column {column}: {reason}")]
    Malformed {
        /// The line of the error, starting at 1.
        line: usize,
        /// The column of the error, starting at 1.
        column: usize,
        /// What the parser found wrong.
        reason: String,
    },

    /// A message (the whole body or a list item) is not a JSON object.
    #[error("{}expected a JSON object, got {got}", location(.at))]
    NotAnObject {
        /// Where the message is, for example `requests[3]`; empty for the whole body.
        at: String,
        /// A short rendering of the value found instead.
        got: String,
    },

    /// A field holds a value of the wrong JSON type or form.
    #[error("{}invalid value for field '{field}': expected {expected}, got {got}", location(.at))]
    InvalidValue {
        /// The message holding the field, for example `requests[3]`; empty for the whole body.
        at: String,
        /// The proto name of the field, for example `hits` or `metadata["key"]`.
        field: String,
        /// What the field accepts.
        expected: &'static str,
        /// A short rendering of the value found instead.
        got: String,
    },

    /// An integer field holds a whole number outside the range of its type.
    #[error("{}invalid value for field '{field}': {value} is out of range for {ty}", location(.at))]
    OutOfRange {
        /// The message holding the field, for example `requests[3]`; empty for the whole body.
        at: String,
        /// The proto name of the field.
        field: String,
        /// The value as it was sent.
        value: String,
        /// The field's type, `int64` or `int32`.
        ty: &'static str,
    },

    /// An enum field holds a name that the enum does not declare.
    #[error("{}unknown enum value {got} for field '{field}'", location(.at))]
    UnknownEnumValue {
        /// The message holding the field, for example `requests[3]`; empty for the whole body.
        at: String,
        /// The proto name of the field.
        field: String,
        /// The name as it was sent, quoted.
        got: String,
    },

    /// A field is given twice, under its proto name and under its JSON name.
    #[error("{}field '{field}' is given twice, as '{field}' and as '{json_name}'", location(.at))]
    DuplicateField {
        /// The message holding the field, for example `requests[3]`; empty for the whole body.
        at: String,
        /// The proto name of the field.
        field: String,
        /// The lowerCamelCase JSON name of the field.
        json_name: String,
    },
}

/// The prefix naming where an error happened: `"requests[3]: "`, or nothing for the whole body.
fn location(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}: ")
    }
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// Reads the body of `POST /v1/GetRateLimits`.
///
/// Accepts proto and lowerCamelCase field names, int64 values as numbers or decimal strings, enum
/// values as names or numbers (undeclared numbers pass through for the server to reject per item),
/// `null` as "unset" and ignores unknown fields. A missing or `null` `requests` is an empty list.
pub fn decode_get_rate_limits_req(body: &[u8]) -> Result<proto::GetRateLimitsReq, JsonError> {
    let root = parse(body)?;
    let message = Message::new(&root, String::new())?;
    Ok(proto::GetRateLimitsReq {
        requests: message.messages("requests", decode_rate_limit_req)?,
    })
}

/// Writes the body of a successful `POST /v1/GetRateLimits` answer, for example
/// `{"responses":[{"status":"UNDER_LIMIT","limit":"10","remaining":"9","reset_time":"1690855128786","error":"","metadata":{}}]}`.
pub fn encode_get_rate_limits_resp(resp: &proto::GetRateLimitsResp) -> Vec<u8> {
    to_json(&GetRateLimitsRespJson {
        responses: resp.responses.iter().map(RateLimitRespJson::from).collect(),
    })
}

/// Writes the body of a `GET /v1/HealthCheck` answer, for example
/// `{"status":"healthy","message":"","peer_count":1,"advertise_address":"A","local_peers":[{"grpc_address":"A","data_center":""}],"region_peers":[]}`.
pub fn encode_health_check_resp(resp: &proto::HealthCheckResp) -> Vec<u8> {
    to_json(&HealthCheckRespJson::from(resp))
}

/// Writes the body of a `GET /v1/LiveCheck` answer: the empty message `{}`.
pub fn encode_live_check_resp() -> Vec<u8> {
    b"{}".to_vec()
}

/// Writes an error body in the `google.rpc.Status` shape grpc-gateway uses, for example
/// `{"code":3,"message":"...","details":[]}`; `code` is the gRPC status code.
pub fn encode_error(code: i32, message: &str) -> Vec<u8> {
    to_json(&StatusJson {
        code,
        message,
        details: &[],
    })
}

/// Writes the body of a `POST /v1/GetRateLimits` call, for clients.
///
/// int64 values are strings and `algorithm` is a name, as protojson writes them; `behavior` is
/// written as a number because it is a bit set whose combinations have no name. `created_at` is
/// written only when set.
pub fn encode_get_rate_limits_req(req: &proto::GetRateLimitsReq) -> Vec<u8> {
    to_json(&GetRateLimitsReqJson {
        requests: req.requests.iter().map(RateLimitReqJson::from).collect(),
    })
}

/// Reads the body of a successful `POST /v1/GetRateLimits` answer, for clients.
///
/// Follows the same input rules as [`decode_get_rate_limits_req`].
pub fn decode_get_rate_limits_resp(body: &[u8]) -> Result<proto::GetRateLimitsResp, JsonError> {
    let root = parse(body)?;
    let message = Message::new(&root, String::new())?;
    Ok(proto::GetRateLimitsResp {
        responses: message.messages("responses", decode_rate_limit_resp)?,
    })
}

/// Reads the body of a `GET /v1/HealthCheck` answer, for clients.
///
/// Follows the same input rules as [`decode_get_rate_limits_req`].
pub fn decode_health_check_resp(body: &[u8]) -> Result<proto::HealthCheckResp, JsonError> {
    let root = parse(body)?;
    let message = Message::new(&root, String::new())?;
    Ok(proto::HealthCheckResp {
        status: message.string("status")?,
        message: message.string("message")?,
        peer_count: message.int32("peer_count")?,
        advertise_address: message.string("advertise_address")?,
        local_peers: message.messages("local_peers", decode_peer_health_resp)?,
        region_peers: message.messages("region_peers", decode_peer_health_resp)?,
    })
}

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

/// How the values of one proto enum are named in JSON.
struct EnumNames {
    /// The value of a declared name.
    from_name: fn(&str) -> Option<i32>,
    /// The name of a declared value.
    name_of: fn(i32) -> Option<&'static str>,
}

/// The [`EnumNames`] of a prost enum type.
macro_rules! enum_names {
    ($enum:ty) => {
        EnumNames {
            from_name: |name| <$enum>::from_str_name(name).map(|v| v as i32),
            name_of: |value| <$enum>::try_from(value).ok().map(|v| v.as_str_name()),
        }
    };
}

const ALGORITHM: EnumNames = enum_names!(proto::Algorithm);
const BEHAVIOR: EnumNames = enum_names!(proto::Behavior);
const STATUS: EnumNames = enum_names!(proto::Status);

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Checks that `body` is UTF-8 and parses it as one JSON value.
fn parse(body: &[u8]) -> Result<Value, JsonError> {
    let text = std::str::from_utf8(body).map_err(|err| JsonError::NotUtf8 {
        offset: err.valid_up_to(),
    })?;
    // grpc-gateway ignores EOF on an empty body and decodes it as the empty message.
    if text.trim_ascii().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_str(text).map_err(|err| {
        let (line, column) = (err.line(), err.column());
        let full = err.to_string();
        let suffix = format!(" at line {line} column {column}");
        let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        JsonError::Malformed {
            line,
            column,
            reason,
        }
    })
}

fn decode_rate_limit_req(message: Message<'_>) -> Result<proto::RateLimitReq, JsonError> {
    Ok(proto::RateLimitReq {
        name: message.string("name")?,
        unique_key: message.string("unique_key")?,
        hits: message.int64("hits")?,
        limit: message.int64("limit")?,
        duration: message.int64("duration")?,
        algorithm: message.enumeration("algorithm", &ALGORITHM)?,
        behavior: message.enumeration("behavior", &BEHAVIOR)?,
        burst: message.int64("burst")?,
        metadata: message.string_map("metadata")?,
        created_at: message.optional_int64("created_at")?,
    })
}

fn decode_rate_limit_resp(message: Message<'_>) -> Result<proto::RateLimitResp, JsonError> {
    Ok(proto::RateLimitResp {
        status: message.enumeration("status", &STATUS)?,
        limit: message.int64("limit")?,
        remaining: message.int64("remaining")?,
        reset_time: message.int64("reset_time")?,
        error: message.string("error")?,
        metadata: message.string_map("metadata")?,
    })
}

fn decode_peer_health_resp(message: Message<'_>) -> Result<proto::PeerHealthResp, JsonError> {
    Ok(proto::PeerHealthResp {
        grpc_address: message.string("grpc_address")?,
        data_center: message.string("data_center")?,
    })
}

/// A JSON object read as a protobuf message.
///
/// Each accessor finds a field under its proto name or its JSON name, treats `null` or absence as
/// the field's default, converts the value with protojson's rules and names this message's
/// location in any error. Fields no accessor asks for are ignored.
struct Message<'a> {
    fields: &'a Map<String, Value>,
    /// Where this message is, for example `requests[3]`; empty for the whole body.
    at: String,
}

impl<'a> Message<'a> {
    /// Reads `value` as a message at location `at`; it must be a JSON object.
    fn new(value: &'a Value, at: String) -> Result<Self, JsonError> {
        match value {
            Value::Object(fields) => Ok(Message { fields, at }),
            other => Err(JsonError::NotAnObject {
                at,
                got: describe(other),
            }),
        }
    }

    /// The value of field `name` (a proto name), or `None` when it is absent or `null`.
    fn field(&self, name: &str) -> Result<Option<&'a Value>, JsonError> {
        let mut value = self.fields.get(name);
        if name.contains('_') {
            let json_name = lower_camel_case(name);
            match (value, self.fields.get(&json_name)) {
                (Some(_), Some(_)) => {
                    return Err(JsonError::DuplicateField {
                        at: self.at.clone(),
                        field: name.to_owned(),
                        json_name,
                    });
                }
                (None, by_json_name) => value = by_json_name,
                (Some(_), None) => {}
            }
        }
        Ok(value.filter(|value| !value.is_null()))
    }

    /// A `string` field.
    fn string(&self, name: &str) -> Result<String, JsonError> {
        match self.field(name)? {
            None => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(self.invalid(name, "a string", other)),
        }
    }

    /// An `int64` field: a JSON number or a string holding one.
    fn int64(&self, name: &str) -> Result<i64, JsonError> {
        Ok(self.optional_int64(name)?.unwrap_or_default())
    }

    /// An `optional int64` field: `None` when absent or `null`, `Some` otherwise (also for 0).
    fn optional_int64(&self, name: &str) -> Result<Option<i64>, JsonError> {
        self.field(name)?
            .map(|value| self.integer(name, value, "int64"))
            .transpose()
    }

    /// An `int32` field: a JSON number or a string holding one.
    fn int32(&self, name: &str) -> Result<i32, JsonError> {
        match self.field(name)? {
            None => Ok(0),
            Some(value) => self.integer(name, value, "int32"),
        }
    }

    /// An enum field: a declared name, or any int32 number (undeclared numbers pass through, as
    /// protojson keeps them too, and `Behavior` combinations are sent this way).
    fn enumeration(&self, name: &str, names: &EnumNames) -> Result<i32, JsonError> {
        match self.field(name)? {
            None => Ok(0),
            Some(Value::String(text)) => {
                (names.from_name)(text).ok_or_else(|| JsonError::UnknownEnumValue {
                    at: self.at.clone(),
                    field: name.to_owned(),
                    got: describe_string(text),
                })
            }
            Some(value @ Value::Number(number)) => match whole_number(number) {
                Some(wide) => {
                    i32::try_from(wide).map_err(|_| self.out_of_range(name, value, "int32"))
                }
                None => Err(self.invalid(name, "an enum name or an integer", value)),
            },
            Some(other) => Err(self.invalid(name, "an enum name or an integer", other)),
        }
    }

    /// The field `name` when present, which must be of the JSON type `as_type` accepts
    /// (`expected` names it).
    fn field_as<T: ?Sized>(
        &self,
        name: &str,
        expected: &'static str,
        as_type: fn(&'a Value) -> Option<&'a T>,
    ) -> Result<Option<&'a T>, JsonError> {
        match self.field(name)? {
            None => Ok(None),
            Some(value) => as_type(value)
                .map(Some)
                .ok_or_else(|| self.invalid(name, expected, value)),
        }
    }

    /// A `map<string, string>` field: a JSON object whose values are all strings.
    fn string_map(&self, name: &str) -> Result<HashMap<String, String>, JsonError> {
        let Some(entries) = self.field_as(name, "an object of strings", Value::as_object)? else {
            return Ok(HashMap::new());
        };
        entries
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => Ok((key.clone(), text.clone())),
                other => Err(self.invalid(&format!("{name}[{key:?}]"), "a string", other)),
            })
            .collect()
    }

    /// A `repeated` message field, each item read with `decode`.
    fn messages<T>(
        &self,
        name: &str,
        decode: fn(Message<'a>) -> Result<T, JsonError>,
    ) -> Result<Vec<T>, JsonError> {
        let Some(items) = self.field_as(name, "an array", Value::as_array)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let at = if self.at.is_empty() {
                    format!("{name}[{index}]")
                } else {
                    format!("{}.{name}[{index}]", self.at)
                };
                decode(Message::new(item, at)?)
            })
            .collect()
    }

    /// An integer field of type `T` (named `ty` in errors), as protojson reads one: a JSON number,
    /// or a string holding exactly one (no surrounding space), whose value is whole (`10`, `10.0`
    /// and `1e1` are all ten) and within the range of `T`.
    fn integer<T: TryFrom<i128>>(
        &self,
        name: &str,
        value: &Value,
        ty: &'static str,
    ) -> Result<T, JsonError> {
        let number = match value {
            Value::Number(number) => Some(number.clone()),
            Value::String(text) => number_in_string(text),
            _ => None,
        };
        let wide = number
            .as_ref()
            .and_then(whole_number)
            .ok_or_else(|| self.invalid(name, "an integer or a decimal string", value))?;
        T::try_from(wide).map_err(|_| self.out_of_range(name, value, ty))
    }

    fn invalid(&self, field: &str, expected: &'static str, got: &Value) -> JsonError {
        JsonError::InvalidValue {
            at: self.at.clone(),
            field: field.to_owned(),
            expected,
            got: describe(got),
        }
    }

    fn out_of_range(&self, field: &str, value: &Value, ty: &'static str) -> JsonError {
        JsonError::OutOfRange {
            at: self.at.clone(),
            field: field.to_owned(),
            value: match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            },
            ty,
        }
    }
}

/// The JSON name protobuf derives from a proto field name: `unique_key` → `uniqueKey`.
fn lower_camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper_next = false;
    for c in name.chars() {
        if c == '_' {
            upper_next = true;
        } else if upper_next {
            out.push(c.to_ascii_uppercase());
            upper_next = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The JSON number spelled by `text`, which must be exactly a number with no surrounding space.
fn number_in_string(text: &str) -> Option<Number> {
    if text.trim() != text {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The value of `number` when it is a whole number.
///
/// serde_json keeps integers that fit `i64` or `u64` exactly and parses everything else as an
/// `f64`. A whole float within ±2^63 is converted exactly; one at or beyond ±2^63 may be an integer
/// literal too large for `i64` that was rounded onto the boundary, so it saturates to a value
/// every caller reports as out of range.
fn whole_number(number: &Number) -> Option<i128> {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if let Some(n) = number.as_i64() {
        return Some(n.into());
    }
    if let Some(n) = number.as_u64() {
        return Some(n.into());
    }
    let float = number.as_f64()?;
    if !float.is_finite() || float.fract() != 0.0 {
        return None;
    }
    Some(match float {
        f if f <= -TWO_POW_63 => i128::MIN,
        f if f >= TWO_POW_63 => i128::MAX,
        // Exact: a whole float strictly inside ±2^63 is an integer that fits i64.
        f => f as i128,
    })
}

/// A short rendering of a JSON value for an error message.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(text) => describe_string(text),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// A string quoted as JSON, shortened to at most 64 characters of content.
fn describe_string(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        None => Value::from(text).to_string(),
        Some((cut, _)) => {
            let quoted = Value::from(&text[..cut]).to_string();
            format!("{}...\"", &quoted[..quoted.len() - 1])
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Serializes one of the mirror types below.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_json fails only on maps with non-string keys or a failing `Serialize` impl, and the
    // mirror types have neither; the fallback keeps this total without a panic.
    serde_json::to_vec(value).unwrap_or_else(|_| {
        br#"{"code":13,"message":"failed to encode the JSON response","details":[]}"#.to_vec()
    })
}

/// An `int64`, written as a JSON string as protojson does.
struct Int64(i64);

impl Serialize for Int64 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// An enum value, written as its name, or as a number when the enum does not declare it.
struct EnumValue {
    value: i32,
    names: &'static EnumNames,
}

impl Serialize for EnumValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (self.names.name_of)(self.value) {
            Some(name) => serializer.serialize_str(name),
            None => serializer.serialize_i32(self.value),
        }
    }
}

/// A `map<string, string>`, written with its keys sorted as protojson does.
struct SortedMap<'a>(&'a HashMap<String, String>);

impl Serialize for SortedMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().collect::<BTreeMap<_, _>>())
    }
}

#[derive(Serialize)]
struct GetRateLimitsReqJson<'a> {
    requests: Vec<RateLimitReqJson<'a>>,
}

#[derive(Serialize)]
struct RateLimitReqJson<'a> {
    name: &'a str,
    unique_key: &'a str,
    hits: Int64,
    limit: Int64,
    duration: Int64,
    algorithm: EnumValue,
    behavior: i32,
    burst: Int64,
    metadata: SortedMap<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<Int64>,
}

impl<'a> From<&'a proto::RateLimitReq> for RateLimitReqJson<'a> {
    fn from(req: &'a proto::RateLimitReq) -> Self {
        RateLimitReqJson {
            name: &req.name,
            unique_key: &req.unique_key,
            hits: Int64(req.hits),
            limit: Int64(req.limit),
            duration: Int64(req.duration),
            algorithm: EnumValue {
                value: req.algorithm,
                names: &ALGORITHM,
            },
            behavior: req.behavior,
            burst: Int64(req.burst),
            metadata: SortedMap(&req.metadata),
            created_at: req.created_at.map(Int64),
        }
    }
}

#[derive(Serialize)]
struct GetRateLimitsRespJson<'a> {
    responses: Vec<RateLimitRespJson<'a>>,
}

#[derive(Serialize)]
struct RateLimitRespJson<'a> {
    status: EnumValue,
    limit: Int64,
    remaining: Int64,
    reset_time: Int64,
    error: &'a str,
    metadata: SortedMap<'a>,
}

impl<'a> From<&'a proto::RateLimitResp> for RateLimitRespJson<'a> {
    fn from(resp: &'a proto::RateLimitResp) -> Self {
        RateLimitRespJson {
            status: EnumValue {
                value: resp.status,
                names: &STATUS,
            },
            limit: Int64(resp.limit),
            remaining: Int64(resp.remaining),
            reset_time: Int64(resp.reset_time),
            error: &resp.error,
            metadata: SortedMap(&resp.metadata),
        }
    }
}

#[derive(Serialize)]
struct HealthCheckRespJson<'a> {
    status: &'a str,
    message: &'a str,
    peer_count: i32,
    advertise_address: &'a str,
    local_peers: Vec<PeerHealthRespJson<'a>>,
    region_peers: Vec<PeerHealthRespJson<'a>>,
}

impl<'a> From<&'a proto::HealthCheckResp> for HealthCheckRespJson<'a> {
    fn from(resp: &'a proto::HealthCheckResp) -> Self {
        let peers = |list: &'a [proto::PeerHealthResp]| {
            list.iter()
                .map(|peer| PeerHealthRespJson {
                    grpc_address: &peer.grpc_address,
                    data_center: &peer.data_center,
                })
                .collect()
        };
        HealthCheckRespJson {
            status: &resp.status,
            message: &resp.message,
            peer_count: resp.peer_count,
            advertise_address: &resp.advertise_address,
            local_peers: peers(&resp.local_peers),
            region_peers: peers(&resp.region_peers),
        }
    }
}

#[derive(Serialize)]
struct PeerHealthRespJson<'a> {
    grpc_address: &'a str,
    data_center: &'a str,
}

/// `google.rpc.Status`; `details` (a list of `Any`) is always empty here.
#[derive(Serialize)]
struct StatusJson<'a> {
    code: i32,
    message: &'a str,
    details: &'a [Value],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_counts_as_many_items_as_it_decodes() {
        for body in [
            r#"{"requests":[{},{"name":"n","metadata":{"a":"b"}}]}"#,
            r#"{"requests":null}"#,
            r#"{"requests":[{}],"requests":[{},{},{}]}"#,
            r#"{"req\u0075ests":[{}]}"#,
            r#"{"other":[{}],"requests":[]}"#,
        ] {
            let decoded = decode_req(body).unwrap().requests.len();
            assert_eq!(
                crate::json_lists::list_length(body.as_bytes(), "requests"),
                Some(decoded),
                "{body}"
            );
        }
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    fn decode_req(body: &str) -> Result<proto::GetRateLimitsReq, JsonError> {
        decode_get_rate_limits_req(body.as_bytes())
    }

    /// Decodes a body holding one request item.
    fn decode_item(item: &str) -> proto::RateLimitReq {
        let mut req = decode_req(&format!(r#"{{"requests":[{item}]}}"#)).unwrap();
        assert_eq!(req.requests.len(), 1);
        req.requests.remove(0)
    }

    fn decode_item_err(item: &str) -> String {
        decode_req(&format!(r#"{{"requests":[{item}]}}"#))
            .unwrap_err()
            .to_string()
    }

    fn sample_req() -> proto::RateLimitReq {
        proto::RateLimitReq {
            name: "requests_per_sec".into(),
            unique_key: "account:1234".into(),
            hits: 1,
            limit: 10,
            duration: 60_000,
            algorithm: proto::Algorithm::LeakyBucket as i32,
            behavior: 6,
            burst: 20,
            metadata: HashMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
            created_at: Some(1_690_855_128_786),
        }
    }

    // ----- encoding ------------------------------------------------------------------------

    #[test]
    fn encodes_rate_limits_response_exactly() {
        let resp = proto::GetRateLimitsResp {
            responses: vec![proto::RateLimitResp {
                status: proto::Status::UnderLimit as i32,
                limit: 10,
                remaining: 9,
                reset_time: 1_690_855_128_786,
                error: String::new(),
                metadata: HashMap::new(),
            }],
        };
        assert_eq!(
            text(encode_get_rate_limits_resp(&resp)),
            r#"{"responses":[{"status":"UNDER_LIMIT","limit":"10","remaining":"9","reset_time":"1690855128786","error":"","metadata":{}}]}"#
        );
    }

    /// Answers at the edges of the encoding: an OVER_LIMIT with the extreme counts, an error that
    /// needs escaping and metadata out of order, and a status number the enum does not name.
    fn edge_response() -> proto::GetRateLimitsResp {
        proto::GetRateLimitsResp {
            responses: vec![
                proto::RateLimitResp {
                    status: proto::Status::OverLimit as i32,
                    limit: i64::MAX,
                    remaining: i64::MIN,
                    reset_time: 0,
                    error: "a \"quoted\"\nerror".into(),
                    metadata: HashMap::from([
                        ("owner".into(), "10.0.0.2:1051".into()),
                        ("a".into(), "x".into()),
                    ]),
                },
                proto::RateLimitResp {
                    status: 7,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn encodes_over_limit_metadata_sorted_and_unknown_status_as_number() {
        let resp = edge_response();
        assert_eq!(
            text(encode_get_rate_limits_resp(&resp)),
            concat!(
                r#"{"responses":[{"status":"OVER_LIMIT","limit":"9223372036854775807","#,
                r#""remaining":"-9223372036854775808","reset_time":"0","#,
                r#""error":"a \"quoted\"\nerror","metadata":{"a":"x","owner":"10.0.0.2:1051"}},"#,
                r#"{"status":7,"limit":"0","remaining":"0","reset_time":"0","error":"","metadata":{}}]}"#
            )
        );
    }

    #[test]
    fn encodes_empty_response_list() {
        let resp = proto::GetRateLimitsResp::default();
        assert_eq!(
            text(encode_get_rate_limits_resp(&resp)),
            r#"{"responses":[]}"#
        );
    }

    #[test]
    fn encodes_health_check_exactly() {
        let resp = proto::HealthCheckResp {
            status: "healthy".into(),
            message: String::new(),
            peer_count: 1,
            advertise_address: "A".into(),
            local_peers: vec![proto::PeerHealthResp {
                grpc_address: "A".into(),
                data_center: String::new(),
            }],
            region_peers: vec![],
        };
        assert_eq!(
            text(encode_health_check_resp(&resp)),
            r#"{"status":"healthy","message":"","peer_count":1,"advertise_address":"A","local_peers":[{"grpc_address":"A","data_center":""}],"region_peers":[]}"#
        );
    }

    #[test]
    fn encodes_live_check_and_errors() {
        assert_eq!(text(encode_live_check_resp()), "{}");
        assert_eq!(
            text(encode_error(3, "malformed \"JSON\"")),
            r#"{"code":3,"message":"malformed \"JSON\"","details":[]}"#
        );
        assert_eq!(
            text(encode_error(
                11,
                "Requests.RateLimits list too large; max size is '1000'"
            )),
            r#"{"code":11,"message":"Requests.RateLimits list too large; max size is '1000'","details":[]}"#
        );
    }

    #[test]
    fn encodes_request_with_numeric_behavior_and_optional_created_at() {
        let mut item = sample_req();
        let req = proto::GetRateLimitsReq {
            requests: vec![item.clone()],
        };
        assert_eq!(
            text(encode_get_rate_limits_req(&req)),
            concat!(
                r#"{"requests":[{"name":"requests_per_sec","unique_key":"account:1234","hits":"1","#,
                r#""limit":"10","duration":"60000","algorithm":"LEAKY_BUCKET","behavior":6,"#,
                r#""burst":"20","metadata":{"a":"1","b":"2"},"created_at":"1690855128786"}]}"#
            )
        );
        item.created_at = None;
        item.metadata.clear();
        item.algorithm = 9;
        let req = proto::GetRateLimitsReq {
            requests: vec![item],
        };
        assert_eq!(
            text(encode_get_rate_limits_req(&req)),
            concat!(
                r#"{"requests":[{"name":"requests_per_sec","unique_key":"account:1234","hits":"1","#,
                r#""limit":"10","duration":"60000","algorithm":9,"behavior":6,"burst":"20","metadata":{}}]}"#
            )
        );
    }

    // ----- decoding: names, values, defaults ------------------------------------------------

    #[test]
    fn decodes_snake_case() {
        let item = decode_item(
            r#"{"name":"requests_per_sec","unique_key":"account:1234","hits":"1","limit":"10",
                "duration":"60000","algorithm":"LEAKY_BUCKET","behavior":6,"burst":"20",
                "metadata":{"a":"1","b":"2"},"created_at":"1690855128786"}"#,
        );
        assert_eq!(item, sample_req());
    }

    #[test]
    fn decodes_lower_camel_case() {
        let item = decode_item(
            r#"{"name":"requests_per_sec","uniqueKey":"account:1234","hits":1,"limit":10,
                "duration":60000,"algorithm":1,"behavior":6,"burst":20,
                "metadata":{"a":"1","b":"2"},"createdAt":1690855128786}"#,
        );
        assert_eq!(item, sample_req());
    }

    #[test]
    fn decodes_int64_as_number_or_string() {
        let item = decode_item(r#"{"hits":5,"limit":"-5","duration":-7,"burst":"0"}"#);
        assert_eq!(
            (item.hits, item.limit, item.duration, item.burst),
            (5, -5, -7, 0)
        );

        let item = decode_item(r#"{"hits":"9223372036854775807","limit":"-9223372036854775808"}"#);
        assert_eq!((item.hits, item.limit), (i64::MAX, i64::MIN));

        let item = decode_item(r#"{"hits":9223372036854775807,"limit":-9223372036854775808}"#);
        assert_eq!((item.hits, item.limit), (i64::MAX, i64::MIN));
    }

    #[test]
    fn decodes_whole_floats_like_protojson() {
        let item = decode_item(r#"{"hits":10.0,"limit":"1e3","duration":2.5e1}"#);
        assert_eq!((item.hits, item.limit, item.duration), (10, 1000, 25));
    }

    #[test]
    fn rejects_bad_item_fields_naming_them() {
        for (item, error) in [
            // A field given under both names.
            (
                r#"{"unique_key":"a","uniqueKey":"b"}"#,
                "requests[0]: field 'unique_key' is given twice, as 'unique_key' and as 'uniqueKey'",
            ),
            // int64 out of range (the parser rounds the number -9223372036854775809 onto -2^63;
            // it must still be rejected).
            (
                r#"{"hits":"9223372036854775808"}"#,
                "requests[0]: invalid value for field 'hits': 9223372036854775808 is out of range for int64",
            ),
            (
                r#"{"limit":"-9223372036854775809"}"#,
                "requests[0]: invalid value for field 'limit': -9223372036854775809 is out of range for int64",
            ),
            (
                r#"{"limit":-9223372036854775809}"#,
                "requests[0]: invalid value for field 'limit': -9.223372036854776e+18 is out of range for int64",
            ),
            (
                r#"{"burst":1e30}"#,
                "requests[0]: invalid value for field 'burst': 1e+30 is out of range for int64",
            ),
            (
                r#"{"duration":"18446744073709551616"}"#,
                "requests[0]: invalid value for field 'duration': 18446744073709551616 is out of range for int64",
            ),
            // Unknown enum names and bad enum values.
            (
                r#"{"algorithm":"FOO"}"#,
                r#"requests[0]: unknown enum value "FOO" for field 'algorithm'"#,
            ),
            (
                r#"{"behavior":"6"}"#,
                r#"requests[0]: unknown enum value "6" for field 'behavior'"#,
            ),
            (
                r#"{"algorithm":true}"#,
                "requests[0]: invalid value for field 'algorithm': expected an enum name or an integer, got true",
            ),
            (
                r#"{"behavior":1.5}"#,
                "requests[0]: invalid value for field 'behavior': expected an enum name or an integer, got 1.5",
            ),
            (
                r#"{"behavior":2147483648}"#,
                "requests[0]: invalid value for field 'behavior': 2147483648 is out of range for int32",
            ),
            // Metadata values that are not strings.
            (
                r#"{"metadata":{"k":1}}"#,
                r#"requests[0]: invalid value for field 'metadata["k"]': expected a string, got 1"#,
            ),
            (
                r#"{"metadata":{"k":null}}"#,
                r#"requests[0]: invalid value for field 'metadata["k"]': expected a string, got null"#,
            ),
            (
                r#"{"metadata":["k"]}"#,
                "requests[0]: invalid value for field 'metadata': expected an object of strings, got an array",
            ),
        ] {
            assert_eq!(decode_item_err(item), error, "{item}");
        }
    }

    #[test]
    fn rejects_int64_that_is_not_a_whole_number() {
        for (value, got) in [
            (r#""abc""#, r#""abc""#),
            ("1.5", "1.5"),
            (r#""1.5""#, r#""1.5""#),
            (r#"" 10""#, r#"" 10""#),
            (r#""""#, r#""""#),
            (r#""0x10""#, r#""0x10""#),
            ("true", "true"),
            ("[1]", "an array"),
            ("{}", "an object"),
        ] {
            assert_eq!(
                decode_item_err(&format!(r#"{{"hits":{value}}}"#)),
                format!(
                    "requests[0]: invalid value for field 'hits': expected an integer or a decimal string, got {got}"
                ),
                "hits = {value}"
            );
        }
    }

    #[test]
    fn decodes_enums_by_name_or_number() {
        let item = decode_item(r#"{"algorithm":"LEAKY_BUCKET","behavior":"GLOBAL"}"#);
        assert_eq!((item.algorithm, item.behavior), (1, 2));
        let item = decode_item(r#"{"algorithm":"TOKEN_BUCKET","behavior":"DRAIN_OVER_LIMIT"}"#);
        assert_eq!((item.algorithm, item.behavior), (0, 32));
        let item = decode_item(r#"{"algorithm":1,"behavior":6}"#);
        assert_eq!((item.algorithm, item.behavior), (1, 6));
    }

    #[test]
    fn passes_undeclared_enum_numbers_through() {
        let item = decode_item(r#"{"algorithm":7,"behavior":63}"#);
        assert_eq!((item.algorithm, item.behavior), (7, 63));
        let item = decode_item(r#"{"algorithm":-1}"#);
        assert_eq!(item.algorithm, -1);
    }

    #[test]
    fn ignores_unknown_fields_at_every_level() {
        let req = decode_req(
            r#"{"extra":{"deep":[1,2,{"x":null}]},"requests":[
                {"name":"n","unique_key":"k","hits":"1","unknownField":"x","nested":{"a":1}}
            ],"trailer":true}"#,
        )
        .unwrap();
        assert_eq!(req.requests.len(), 1);
        assert_eq!(req.requests[0].name, "n");
        assert_eq!(req.requests[0].unique_key, "k");
        assert_eq!(req.requests[0].hits, 1);
    }

    #[test]
    fn null_means_default() {
        let item = decode_item(
            r#"{"name":null,"unique_key":null,"hits":null,"limit":null,"duration":null,
                "algorithm":null,"behavior":null,"burst":null,"metadata":null,"created_at":null}"#,
        );
        assert_eq!(item, proto::RateLimitReq::default());
        assert_eq!(decode_req(r#"{"requests":null}"#).unwrap().requests, vec![]);
        assert_eq!(decode_req("{}").unwrap().requests, vec![]);
        assert_eq!(decode_req(r#"{"requests":[]}"#).unwrap().requests, vec![]);
    }

    #[test]
    fn created_at_zero_is_set_and_absent_is_unset() {
        assert_eq!(decode_item(r#"{"created_at":0}"#).created_at, Some(0));
        assert_eq!(decode_item(r#"{"createdAt":"0"}"#).created_at, Some(0));
        assert_eq!(decode_item(r#"{"created_at":null}"#).created_at, None);
        assert_eq!(decode_item("{}").created_at, None);
    }

    #[test]
    fn decodes_metadata() {
        let item = decode_item(r#"{"metadata":{"k":"v","":"empty key"}}"#);
        assert_eq!(
            item.metadata,
            HashMap::from([("k".into(), "v".into()), ("".into(), "empty key".into())])
        );
    }

    #[test]
    fn rejects_wrong_types_with_the_item_index() {
        let err = decode_req(r#"{"requests":[{},{},{},{"hits":true}]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "requests[3]: invalid value for field 'hits': expected an integer or a decimal string, got true"
        );
        assert_eq!(
            decode_req(r#"{"requests":{}}"#).unwrap_err().to_string(),
            "invalid value for field 'requests': expected an array, got an object"
        );
        assert_eq!(
            decode_req(r#"{"requests":[{},5]}"#)
                .unwrap_err()
                .to_string(),
            "requests[1]: expected a JSON object, got 5"
        );
        assert_eq!(
            decode_req(r#"{"requests":[null]}"#)
                .unwrap_err()
                .to_string(),
            "requests[0]: expected a JSON object, got null"
        );
        assert_eq!(
            decode_item_err(r#"{"name":5}"#),
            "requests[0]: invalid value for field 'name': expected a string, got 5"
        );
        let long = "x".repeat(100);
        assert_eq!(
            decode_item_err(&format!(r#"{{"hits":"{long}"}}"#)),
            format!(
                "requests[0]: invalid value for field 'hits': expected an integer or a decimal string, got \"{}...\"",
                "x".repeat(64)
            )
        );
    }

    // ----- decoding: malformed bodies ---------------------------------------------------------

    #[test]
    fn rejects_empty_and_non_object_bodies() {
        // grpc-gateway decodes an empty body as the empty message.
        assert_eq!(decode_req("").unwrap(), proto::GetRateLimitsReq::default());
        assert_eq!(
            decode_req(" \n\t").unwrap(),
            proto::GetRateLimitsReq::default()
        );
        for (body, got) in [
            ("[]", "an array"),
            ("null", "null"),
            ("42", "42"),
            (r#""x""#, r#""x""#),
        ] {
            assert_eq!(
                decode_req(body).unwrap_err().to_string(),
                format!("expected a JSON object, got {got}")
            );
        }
    }

    #[test]
    fn rejects_malformed_and_truncated_json() {
        assert_eq!(
            decode_req(r#"{"requests":[{"name":"a",}]}"#)
                .unwrap_err()
                .to_string(),
            "malformed JSON at line 1 column 26: trailing comma"
        );
        assert_eq!(
            decode_req(r#"{"requests":[{"name":"a""#)
                .unwrap_err()
                .to_string(),
            "malformed JSON at line 1 column 24: EOF while parsing an object"
        );
        assert!(matches!(
            decode_req("{} {}"),
            Err(JsonError::Malformed {
                line: 1,
                column: 4,
                ..
            })
        ));
        assert!(matches!(
            decode_req("{\n  \"requests\": [,]\n}"),
            Err(JsonError::Malformed { line: 2, .. })
        ));
    }

    #[test]
    fn rejects_nesting_deeper_than_the_parser_limit() {
        let deep = format!(r#"{{"x":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        let err = decode_req(&deep).unwrap_err().to_string();
        assert!(
            err.starts_with("malformed JSON at line 1 column ")
                && err.ends_with("recursion limit exceeded"),
            "{err}"
        );
    }

    #[test]
    fn a_key_repeated_under_the_same_name_keeps_the_last_value() {
        // protojson rejects this; serde_json's object model cannot see it, and the last value wins.
        assert_eq!(decode_item(r#"{"hits":1,"hits":2}"#).hits, 2);
    }

    #[test]
    fn rejects_invalid_utf8() {
        let err = decode_get_rate_limits_req(b"{\"requests\":[{\"name\":\"\xff\"}]}").unwrap_err();
        assert!(matches!(err, JsonError::NotUtf8 { offset: 22 }));
        assert_eq!(
            err.to_string(),
            "body is not valid UTF-8 (invalid byte at offset 22)"
        );
    }

    // ----- round trips --------------------------------------------------------------------------

    #[test]
    fn request_round_trips() {
        let req = proto::GetRateLimitsReq {
            requests: vec![
                sample_req(),
                proto::RateLimitReq {
                    created_at: Some(0),
                    algorithm: 7,
                    hits: i64::MIN,
                    limit: i64::MAX,
                    name: "ünïcode \u{1}\"\\".into(),
                    ..Default::default()
                },
                proto::RateLimitReq::default(),
            ],
        };
        let decoded = decode_get_rate_limits_req(&encode_get_rate_limits_req(&req)).unwrap();
        assert_eq!(decoded, req);
    }

    #[test]
    fn response_round_trips() {
        let mut resp = edge_response();
        resp.responses.push(proto::RateLimitResp {
            status: proto::Status::OverLimit as i32,
            limit: 10,
            reset_time: 1_690_855_128_786,
            metadata: HashMap::from([("owner".into(), "b:1051".into())]),
            ..Default::default()
        });
        resp.responses.push(proto::RateLimitResp {
            error: "field 'unique_key' cannot be empty".into(),
            ..Default::default()
        });
        resp.responses.push(proto::RateLimitResp {
            status: 5,
            ..Default::default()
        });
        let decoded = decode_get_rate_limits_resp(&encode_get_rate_limits_resp(&resp)).unwrap();
        assert_eq!(decoded, resp);
    }

    #[test]
    fn health_check_round_trips_and_accepts_camel_case() {
        let resp = proto::HealthCheckResp {
            status: "unhealthy".into(),
            message: "this instance is not found in the peer list".into(),
            peer_count: 2,
            advertise_address: "a:1051".into(),
            local_peers: vec![proto::PeerHealthResp {
                grpc_address: "b:1051".into(),
                data_center: "dc1".into(),
            }],
            region_peers: vec![proto::PeerHealthResp {
                grpc_address: "c:1051".into(),
                data_center: "dc2".into(),
            }],
        };
        let decoded = decode_health_check_resp(&encode_health_check_resp(&resp)).unwrap();
        assert_eq!(decoded, resp);

        let camel = r#"{"status":"unhealthy","message":"this instance is not found in the peer list",
            "peerCount":"2","advertiseAddress":"a:1051",
            "localPeers":[{"grpcAddress":"b:1051","dataCenter":"dc1"}],
            "regionPeers":[{"grpcAddress":"c:1051","dataCenter":"dc2"}]}"#;
        assert_eq!(decode_health_check_resp(camel.as_bytes()).unwrap(), resp);

        assert_eq!(
            decode_health_check_resp(br#"{"peer_count":2147483648}"#)
                .unwrap_err()
                .to_string(),
            "invalid value for field 'peer_count': 2147483648 is out of range for int32"
        );
        assert_eq!(
            decode_health_check_resp(br#"{"local_peers":[{"grpc_address":1}]}"#)
                .unwrap_err()
                .to_string(),
            "local_peers[0]: invalid value for field 'grpc_address': expected a string, got 1"
        );
    }

    #[test]
    fn converts_proto_names_to_json_names() {
        assert_eq!(lower_camel_case("unique_key"), "uniqueKey");
        assert_eq!(lower_camel_case("advertise_address"), "advertiseAddress");
        assert_eq!(lower_camel_case("name"), "name");
    }
}
