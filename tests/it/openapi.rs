//! `docs/openapi.yaml` describes the HTTP JSON gateway exactly as a real node serves it.
//!
//! The spec is checked on its own (OpenAPI 3.1.0, every `$ref` resolves, every schema compiles as
//! JSON Schema 2020-12, every example in it is valid against its schema) and then against a real
//! node on 127.0.0.1: each answer to a successful call, an item error, an empty call, healthy and
//! unhealthy health checks, a live check, malformed JSON, too many items, an unknown path, a wrong
//! method, a wrong content type and an oversized body is validated against the schema the spec
//! declares for that path, method and status, under the content type the spec declares. Every
//! request body sent is validated against the request schema too (and the one with too many items
//! is shown to be outside it). The documented routes are exactly the routes the gateway registers
//! and serves, and a deliberately wrong body (for example `limit` as a JSON number where protojson
//! writes a string) fails validation, which proves the validator is strict rather than permissive.
//!
//! Component schemas are turned into a JSON Schema document by placing them under `$defs` and
//! rewriting `#/components/schemas/X` references to `#/$defs/X`.

use crate::common;

use std::collections::BTreeSet;

use common::{http_url, start_node};
use jsonschema::Validator;
use reqwest::Method;
use ringlimit::server::RunningServer;
use serde_json::{Value, json};

const SPEC_TEXT: &str = include_str!("../../docs/openapi.yaml");
/// The gateway's source, read for its route table (`.route("/path", method(handler))`).
const GATEWAY_SOURCE: &str = include_str!("../../src/http/gateway.rs");
/// The admin views' source, read for their route table (merged into the gateway's router).
const ADMIN_SOURCE: &str = include_str!("../../src/admin_views/http.rs");
/// The sources of the routes merged from other modules: the probes (into the gateway, before its
/// method fallback), and r8limiter's `/allow` and its admin views (into the node's HTTP router).
const PROBES_SOURCE: &str = include_str!("../../src/http/probes.rs");
const ALLOW_SOURCE: &str = include_str!("../../src/allow/http.rs");
const ALLOW_ADMIN_SOURCE: &str = include_str!("../../src/admin_views/resources.rs");
/// Envoy RLS's HTTP face (`/json`, `/rlconfig`), merged into the node's HTTP router.
const RLS_SOURCE: &str = include_str!("../../src/rls/http.rs");
/// The RLS routes, which need a configuration to answer 200 (checked by
/// `rls_answers_match_the_spec`).
const RLS_ROUTES: [&str; 2] = ["/json", "/rlconfig"];
/// r8limiter's routes, which answer a wrong method themselves (not with the gateway's 501).
const R8LIMITER_ROUTES: [&str; 3] = ["/allow", "/admin/resources", "/admin/user/{user_id}"];

/// The `.route("/path", method(...))` lines of `source`.
fn route_table(source: &str) -> BTreeSet<(String, String)> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix(".route(\"")?;
            let (path, rest) = rest.split_once('"')?;
            let method = rest.trim_start_matches([',', ' ']).split('(').next()?;
            Some((path.to_owned(), method.to_owned()))
        })
        .collect()
}
/// The methods probed on every documented path (HEAD, implied by GET in HTTP, is not probed).
const PROBED_METHODS: [&str; 6] = ["get", "post", "put", "delete", "patch", "options"];
const GET_RATE_LIMITS: &str = "/v1/GetRateLimits";

/// The OpenAPI document and lookups into it.
struct Spec {
    doc: Value,
}

impl Spec {
    fn load() -> Self {
        let doc: Value = serde_norway::from_str(SPEC_TEXT).expect("docs/openapi.yaml is YAML");
        Spec { doc }
    }

    /// The value a local reference (`#/components/...`) points to.
    fn pointer(&self, reference: &str) -> &Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{reference} is not a local reference"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} does not resolve"))
    }

    /// `value`, or what its `$ref` chain points to (for response objects).
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            value = self.pointer(reference);
        }
        value
    }

    /// The operation `method` (lowercase) of `path`, if documented.
    fn operation(&self, method: &str, path: &str) -> Option<&Value> {
        self.doc["paths"].get(path)?.get(method)
    }

    /// The documented (path, method) pairs.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let paths = self.doc["paths"].as_object().expect("paths is an object");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let item = item.as_object().expect("a path item is an object");
                item.keys()
                    .filter(|key| PROBED_METHODS.contains(&key.as_str()) || *key == "head")
                    .map(move |method| (path.clone(), method.clone()))
            })
            .collect()
    }

    /// A validator for `schema` (a schema object of the spec), with the component schemas as
    /// `$defs`.
    fn validator(&self, schema: &Value) -> Validator {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$defs": rewrite_refs(self.doc["components"]["schemas"].clone()),
            "allOf": [rewrite_refs(schema.clone())],
        });
        jsonschema::draft202012::new(&root)
            .unwrap_or_else(|error| panic!("schema {schema} compiles: {error}"))
    }

    /// The request schema of `POST /v1/GetRateLimits`.
    fn get_rate_limits_request(&self) -> Validator {
        let operation = self
            .operation("post", GET_RATE_LIMITS)
            .expect("GetRateLimits is documented");
        self.validator(&operation["requestBody"]["content"]["application/json"]["schema"])
    }

    /// The response object the spec declares for `status` of `method path`: the explicit status,
    /// or the `default` (only for 404/501), or the shared `RouteError` when the operation is not
    /// documented at all.
    fn response(&self, method: &str, path: &str, status: u16) -> &Value {
        let Some(operation) = self.operation(method, path) else {
            let expected = if self.doc["paths"].get(path).is_some() {
                501
            } else {
                404
            };
            assert_eq!(status, expected, "undocumented {method} {path}");
            return self.pointer("#/components/responses/RouteError");
        };
        let responses = &operation["responses"];
        let response = match responses.get(status.to_string()) {
            Some(response) => response,
            None => {
                assert!(
                    [404, 501].contains(&status),
                    "{method} {path} answered {status}, which the spec does not document"
                );
                &responses["default"]
            }
        };
        self.resolve(response)
    }

    /// Checks `reply` to `method path` against the spec: its content type is documented for its
    /// status and its body is valid against that content's schema. Returns the body as JSON (a
    /// string for text content).
    fn check(&self, method: &str, path: &str, reply: &Reply) -> Value {
        let response = self.response(method, path, reply.status);
        let essence = reply
            .content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let media = response["content"].get(&essence).unwrap_or_else(|| {
            panic!(
                "{method} {path} {}: content type {:?} is not documented",
                reply.status, reply.content_type
            )
        });
        let instance = if essence == "application/json" {
            serde_json::from_slice(&reply.body).unwrap_or_else(|error| {
                panic!(
                    "{method} {path} {}: body is not JSON: {error}",
                    reply.status
                )
            })
        } else {
            Value::String(String::from_utf8(reply.body.clone()).expect("text body is UTF-8"))
        };
        assert_valid(
            &self.validator(&media["schema"]),
            &instance,
            &format!("{method} {path} {}", reply.status),
        );
        instance
    }
}

/// `value` with every `#/components/schemas/X` reference rewritten to `#/$defs/X`.
fn rewrite_refs(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| match (key.as_str(), &value) {
                    ("$ref", Value::String(reference)) => {
                        let rewritten = reference.replace("#/components/schemas/", "#/$defs/");
                        (key, Value::String(rewritten))
                    }
                    _ => (key, rewrite_refs(value)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(rewrite_refs).collect()),
        other => other,
    }
}

fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

fn assert_valid(validator: &Validator, instance: &Value, what: &str) {
    let errors = errors(validator, instance);
    assert!(
        errors.is_empty(),
        "{what}: {instance} is not valid: {errors:#?}"
    );
}

fn assert_invalid(validator: &Validator, instance: &Value, what: &str) {
    assert!(
        !validator.is_valid(instance),
        "{what}: {instance} must fail validation"
    );
}

/// Every `$ref` string anywhere under `value`.
fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(reference)) => out.push(reference),
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_refs(item, out)),
        _ => {}
    }
}

/// One HTTP answer.
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

/// Sends `method path` to `server` with an optional content type and body.
async fn call(
    server: &RunningServer,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> Reply {
    let mut request = reqwest::Client::new().request(method, http_url(server, path));
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request is sent");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().expect("ASCII content type").to_owned())
        .unwrap_or_default();
    let body = response.bytes().await.expect("body is read").to_vec();
    Reply {
        status,
        content_type,
        body,
    }
}

/// Posts `body` as JSON to `/v1/GetRateLimits`.
async fn post_json(server: &RunningServer, body: Vec<u8>) -> Reply {
    call(
        server,
        Method::POST,
        GET_RATE_LIMITS,
        Some("application/json"),
        Some(body),
    )
    .await
}

/// A named way to make a valid body invalid.
type Breakage = (&'static str, fn(&mut Value));

/// The gRPC code of an error body.
fn code(body: &Value) -> i64 {
    body["code"].as_i64().expect("code is an integer")
}

#[test]
fn the_spec_is_openapi_3_1_with_resolving_refs_and_valid_examples() {
    let spec = Spec::load();
    let doc = &spec.doc;
    assert_eq!(doc["openapi"], "3.1.0");
    for field in ["title", "version", "description"] {
        assert!(doc["info"][field].is_string(), "info.{field}");
    }
    assert_eq!(doc["servers"][0]["url"], "http://localhost:1050");
    assert!(doc["tags"].as_array().is_some_and(|tags| !tags.is_empty()));

    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(refs.len() > 20, "the spec uses references: {refs:?}");
    for reference in &refs {
        spec.pointer(reference);
    }

    // Every operation is tagged, named, and answers with documented content; every tag exists.
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| tag["name"].as_str().expect("tag name"))
        .collect();
    let mut operation_ids = BTreeSet::new();
    for (path, method) in spec.operations() {
        let operation = spec.operation(&method, &path).unwrap();
        assert!(operation_ids.insert(operation["operationId"].as_str().expect("operationId")));
        for tag in operation["tags"].as_array().expect("tags") {
            assert!(
                tags.contains(tag.as_str().unwrap()),
                "{method} {path}: {tag}"
            );
        }
        let responses = operation["responses"].as_object().expect("responses");
        assert!(responses.contains_key("200") && responses.contains_key("default"));
        for (status, response) in responses {
            let response = spec.resolve(response);
            assert!(
                response["description"].is_string(),
                "{method} {path} {status}"
            );
            let content = response["content"].as_object().expect("content");
            for (media_type, media) in content {
                check_examples(
                    &spec,
                    media,
                    &format!("{method} {path} {status} {media_type}"),
                );
            }
        }
        if let Some(body) = operation.get("requestBody") {
            for (media_type, media) in body["content"].as_object().expect("content") {
                check_examples(
                    &spec,
                    media,
                    &format!("{method} {path} request {media_type}"),
                );
            }
        }
    }

    // Every component schema compiles, and its own examples are valid against it.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for (name, schema) in schemas {
        let validator = spec.validator(schema);
        let mut examples: Vec<&Value> = schema.get("example").into_iter().collect();
        if let Some(list) = schema.get("examples").and_then(Value::as_array) {
            examples.extend(list);
        }
        assert!(!examples.is_empty(), "schema {name} has an example");
        for example in examples {
            assert_valid(&validator, example, &format!("example of {name}"));
        }
    }
    let route_error = &doc["components"]["responses"]["RouteError"]["content"]["application/json"];
    check_examples(&spec, route_error, "RouteError");
}

/// Validates the `example` and every `examples.*.value` of a media type object.
fn check_examples(spec: &Spec, media: &Value, what: &str) {
    let validator = spec.validator(&media["schema"]);
    let mut examples: Vec<&Value> = media.get("example").into_iter().collect();
    if let Some(named) = media.get("examples").and_then(Value::as_object) {
        examples.extend(named.values().map(|example| &example["value"]));
    }
    assert!(!examples.is_empty(), "{what} has an example");
    for example in examples {
        assert_valid(&validator, example, what);
    }
}

#[tokio::test]
async fn the_documented_routes_are_exactly_the_served_routes() {
    let spec = Spec::load();
    let registered: BTreeSet<(String, String)> = GATEWAY_SOURCE
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix(".route(\"")?;
            let (path, rest) = rest.split_once('"')?;
            let method = rest.trim_start_matches([',', ' ']).split('(').next()?;
            Some((path.to_owned(), method.to_owned()))
        })
        .collect();
    assert_eq!(
        registered.len(),
        4,
        "the gateway's route table: {registered:?}"
    );
    // The admin views' routes are merged into the gateway from their own module.
    let mut registered = registered;
    for source in [
        ADMIN_SOURCE,
        PROBES_SOURCE,
        ALLOW_SOURCE,
        ALLOW_ADMIN_SOURCE,
        RLS_SOURCE,
    ] {
        registered.extend(route_table(source));
    }
    assert_eq!(spec.operations(), registered);

    let server = start_node(&[]).await;
    for path in spec.doc["paths"].as_object().unwrap().keys() {
        if R8LIMITER_ROUTES.contains(&path.as_str()) || RLS_ROUTES.contains(&path.as_str()) {
            // Checked by `r8limiter_answers_match_the_spec`.
            continue;
        }
        for method in PROBED_METHODS {
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method == "post").then(|| b"{}".to_vec());
            let reply = call(&server, http_method, path, None, body).await;
            spec.check(method, path, &reply);
            if spec.operation(method, path).is_some() {
                assert_eq!(reply.status, 200, "{method} {path} is served");
            } else {
                assert_eq!(reply.status, 501, "{method} {path} is not served");
                assert_eq!(code(&reply.json()), 12);
            }
        }
    }

    let metrics = call(&server, Method::GET, "/metrics", None, None).await;
    assert!(
        metrics.content_type.starts_with("text/plain"),
        "{}",
        metrics.content_type
    );
    let text = spec.check("get", "/metrics", &metrics);
    assert!(text.as_str().unwrap().contains("gubernator_"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn get_rate_limits_answers_match_the_spec() {
    let spec = Spec::load();
    let request_schema = spec.get_rate_limits_request();
    let server = start_node(&[]).await;

    let request = json!({"requests": [
        {"name": "openapi", "unique_key": "under", "hits": "1", "limit": "10", "duration": "60000",
         "algorithm": "TOKEN_BUCKET", "behavior": 0, "burst": "0", "metadata": {"tenant": "acme"}},
        {"name": "openapi", "unique_key": "over", "hits": 3, "limit": 2, "duration": 60000},
        {"name": "openapi", "unique_key": "", "hits": 1, "limit": 10, "duration": 60000},
        {"name": "openapi", "uniqueKey": "camel", "hits": 1, "limit": 5, "duration": 60000,
         "algorithm": 1, "behavior": 1, "createdAt": "0"},
    ]});
    assert_valid(&request_schema, &request, "request");
    let reply = post_json(&server, request.to_string().into_bytes()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, "application/json");
    let body = spec.check("post", GET_RATE_LIMITS, &reply);
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 4);
    assert_eq!(responses[0]["status"], "UNDER_LIMIT");
    assert_eq!(responses[0]["remaining"], "9");
    assert_eq!(responses[1]["status"], "OVER_LIMIT");
    assert_eq!(
        responses[2]["error"], "field 'unique_key' cannot be empty",
        "{body}"
    );
    assert_eq!(responses[2]["limit"], "0");
    assert_eq!(responses[3]["status"], "UNDER_LIMIT");
    assert_eq!(responses[3]["remaining"], "4");

    // The request examples of the spec are accepted and answered without an item error.
    let examples = spec.operation("post", GET_RATE_LIMITS).unwrap()["requestBody"]["content"]
        ["application/json"]["examples"]
        .as_object()
        .expect("request examples");
    let schemas = &spec.doc["components"]["schemas"];
    let mut requests: Vec<(String, Value)> = examples
        .iter()
        .map(|(name, example)| (name.clone(), example["value"].clone()))
        .collect();
    requests.push((
        "GetRateLimitsReq".into(),
        schemas["GetRateLimitsReq"]["example"].clone(),
    ));
    requests.push((
        "RateLimitReq".into(),
        json!({ "requests": [schemas["RateLimitReq"]["example"]] }),
    ));
    for (name, request) in requests {
        let reply = post_json(&server, request.to_string().into_bytes()).await;
        assert_eq!(reply.status, 200, "example {name}");
        let body = spec.check("post", GET_RATE_LIMITS, &reply);
        assert_eq!(body["responses"][0]["error"], "", "example {name}: {body}");
    }

    for request in [json!({"requests": []}), json!({})] {
        assert_valid(&request_schema, &request, "empty request");
        let reply = post_json(&server, request.to_string().into_bytes()).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            spec.check("post", GET_RATE_LIMITS, &reply),
            json!({"responses": []})
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_live_checks_match_the_spec() {
    let spec = Spec::load();
    let server = start_node(&[]).await;

    let reply = call(&server, Method::GET, "/v1/HealthCheck", None, None).await;
    assert_eq!(reply.status, 200);
    let health = spec.check("get", "/v1/HealthCheck", &reply);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["peer_count"], 1);

    let reply = call(&server, Method::GET, "/v1/LiveCheck", None, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(spec.check("get", "/v1/LiveCheck", &reply), json!({}));

    // A peer list without this node makes it unhealthy: 503 with a Status body.
    server
        .node()
        .peers()
        .replace(vec![ringlimit::peers::PeerInfo {
            grpc_address: "elsewhere:1".into(),
            http_address: String::new(),
            data_center: String::new(),
        }]);
    let reply = call(&server, Method::GET, "/v1/HealthCheck", None, None).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.content_type, "application/json");
    let error = spec.check("get", "/v1/HealthCheck", &reply);
    assert_eq!(code(&error), 14);
    assert_eq!(
        error["message"], "this instance is not found in the peer list",
        "{error}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn call_errors_match_the_spec() {
    let spec = Spec::load();
    let request_schema = spec.get_rate_limits_request();
    let server = start_node(&[]).await;

    // Malformed JSON: 400, INVALID_ARGUMENT.
    let reply = post_json(&server, br#"{"requests":[{"name":"a",}]}"#.to_vec()).await;
    assert_eq!(reply.status, 400);
    assert_eq!(code(&spec.check("post", GET_RATE_LIMITS, &reply)), 3);

    // 1001 items: outside the request schema, and 400 OUT_OF_RANGE with Gubernator's message.
    let items: Vec<Value> = (0..1001)
        .map(|i| json!({"name": "n", "unique_key": format!("k{i}"), "hits": 1, "limit": 1, "duration": 1000}))
        .collect();
    let request = json!({ "requests": items });
    assert_invalid(&request_schema, &request, "1001 items");
    let reply = post_json(&server, request.to_string().into_bytes()).await;
    assert_eq!(reply.status, 400);
    let error = spec.check("post", GET_RATE_LIMITS, &reply);
    let documented = &spec.operation("post", GET_RATE_LIMITS).unwrap()["responses"]["400"]["content"]
        ["application/json"]["examples"]["too_many_items"]["value"];
    assert_eq!(&error, documented);

    // Unknown path: 404 NOT_FOUND, under the shared RouteError response.
    let reply = call(&server, Method::GET, "/v1/Nope", None, None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(code(&spec.check("get", "/v1/Nope", &reply)), 5);

    // Wrong method on a known path: 501 UNIMPLEMENTED.
    let reply = call(&server, Method::GET, GET_RATE_LIMITS, None, None).await;
    assert_eq!(reply.status, 501);
    assert_eq!(code(&spec.check("get", GET_RATE_LIMITS, &reply)), 12);

    // Unsupported content type: 415 with code INVALID_ARGUMENT.
    let request = json!({"requests": []});
    assert_valid(&request_schema, &request, "415 request");
    let reply = call(
        &server,
        Method::POST,
        GET_RATE_LIMITS,
        Some("application/x-protobuf"),
        Some(request.to_string().into_bytes()),
    )
    .await;
    assert_eq!(reply.status, 415);
    assert_eq!(code(&spec.check("post", GET_RATE_LIMITS, &reply)), 3);

    // A body over the 1 MiB limit (valid JSON, an unknown field): 413 RESOURCE_EXHAUSTED.
    let request = json!({"requests": [], "padding": "x".repeat(1024 * 1024 + 1)});
    assert_valid(&request_schema, &request, "oversized request");
    let reply = post_json(&server, request.to_string().into_bytes()).await;
    assert_eq!(reply.status, 413);
    assert_eq!(code(&spec.check("post", GET_RATE_LIMITS, &reply)), 8);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_validator_is_strict() {
    let spec = Spec::load();
    let server = start_node(&[]).await;

    // Start from real, valid answers and break one detail at a time.
    let request = json!({"requests": [
        {"name": "strict", "unique_key": "k", "hits": 1, "limit": 10, "duration": 60000}
    ]});
    let reply = post_json(&server, request.to_string().into_bytes()).await;
    let body = spec.check("post", GET_RATE_LIMITS, &reply);
    let response_schema =
        spec.validator(&json!({"$ref": "#/components/schemas/GetRateLimitsResp"}));
    assert_valid(&response_schema, &body, "the real answer");
    let broken: [Breakage; 6] = [
        ("limit as a JSON number", |body| {
            body["responses"][0]["limit"] = json!(10)
        }),
        ("reset_time not decimal", |body| {
            body["responses"][0]["reset_time"] = json!("1e3")
        }),
        ("status as a number", |body| {
            body["responses"][0]["status"] = json!(0)
        }),
        ("a missing zero value", |body| {
            body["responses"][0]
                .as_object_mut()
                .unwrap()
                .remove("error");
        }),
        ("an undocumented field", |body| {
            body["responses"][0]["extra"] = json!("")
        }),
        ("camelCase output", |body| {
            let item = body["responses"][0].as_object_mut().unwrap();
            let value = item.remove("reset_time").unwrap();
            item.insert("resetTime".into(), value);
        }),
    ];
    for (what, breaking) in broken {
        let mut wrong = body.clone();
        breaking(&mut wrong);
        assert_invalid(&response_schema, &wrong, what);
    }

    let reply = call(&server, Method::GET, "/v1/HealthCheck", None, None).await;
    let mut health = spec.check("get", "/v1/HealthCheck", &reply);
    health["peer_count"] = json!("1");
    let health_schema = spec.validator(&json!({"$ref": "#/components/schemas/HealthCheckResp"}));
    assert_invalid(&health_schema, &health, "peer_count as a string");
    let live_schema = spec.validator(&json!({"$ref": "#/components/schemas/LiveCheckResp"}));
    assert_invalid(
        &live_schema,
        &json!({"status": "ok"}),
        "a non-empty LiveCheck",
    );
    let status_schema = spec.validator(&json!({"$ref": "#/components/schemas/Status"}));
    assert_invalid(
        &status_schema,
        &json!({"code": 3, "message": "x"}),
        "a Status without details",
    );

    // Request bodies the request schema rejects are also refused by the server (400).
    let request_schema = spec.get_rate_limits_request();
    for item in [
        json!({"name": "n", "unique_key": "k", "hits": true}),
        json!({"name": "n", "unique_key": "k", "hits": "1.5"}),
        json!({"name": "n", "unique_key": "k", "algorithm": "FOO"}),
        json!({"name": "n", "unique_key": "k", "uniqueKey": "k"}),
        json!({"name": "n", "unique_key": "k", "metadata": {"a": 1}}),
    ] {
        let request = json!({ "requests": [item] });
        assert_invalid(&request_schema, &request, "a wrong request");
        let reply = post_json(&server, request.to_string().into_bytes()).await;
        assert_eq!(reply.status, 400, "{request}");
        assert_eq!(code(&spec.check("post", GET_RATE_LIMITS, &reply)), 3);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn admin_answers_match_the_spec() {
    let spec = Spec::load();
    let server = start_node(&[]).await;
    // Traffic: one admitted and two refused hits of one key, one leaky bucket.
    let body = json!({"requests": [
        {"name": "openapi", "unique_key": "admin", "hits": 1, "limit": 1, "duration": 60000},
        {"name": "openapi", "unique_key": "admin", "hits": 1, "limit": 1, "duration": 60000},
        {"name": "openapi", "unique_key": "admin", "hits": 1, "limit": 1, "duration": 60000},
        {"name": "openapi", "unique_key": "leaky", "hits": 1, "limit": 5, "duration": 60000,
         "algorithm": "LEAKY_BUCKET"},
    ]});
    assert_eq!(
        post_json(&server, body.to_string().into_bytes())
            .await
            .status,
        200
    );

    let get = |path: &'static str| call(&server, Method::GET, path, None, None);
    let stats = spec.check("get", "/admin/stats", &get("/admin/stats").await);
    assert_eq!(stats["decisions"]["over_limit"], 2);
    assert_eq!(stats["top_limited"][0]["count"], 2);
    let top = spec.check(
        "get",
        "/admin/top_offenders",
        &get("/admin/top_offenders?window=hour").await,
    );
    assert_eq!(
        top["offenders"][0]["unique_key"],
        ringlimit::admin::redact::hashed_key("admin")
    );
    const KEY: &str = "/admin/keys/{name}/{unique_key}";
    for (path, algorithm) in [
        ("/admin/keys/openapi/admin", "TOKEN_BUCKET"),
        ("/admin/keys/openapi/leaky", "LEAKY_BUCKET"),
    ] {
        let state = spec.check("get", KEY, &get(path).await);
        assert_eq!(state["algorithm"], algorithm);
    }
    let missing = spec.check("get", KEY, &get("/admin/keys/openapi/none").await);
    assert_eq!(missing["found"], false);
    let peers = spec.check("get", "/admin/peers", &get("/admin/peers").await);
    assert_eq!(peers["peers"][0]["is_self"], true);
    let bad = get("/admin/top_offenders?window=week").await;
    assert_eq!(bad.status, 400);
    spec.check("get", "/admin/top_offenders", &bad);
    server.shutdown().await.unwrap();

    let locked = start_node(&["--admin-token=t"]).await;
    let refused = call(&locked, Method::GET, "/admin/peers", None, None).await;
    assert_eq!(refused.status, 401);
    spec.check("get", "/admin/peers", &refused);
    locked.shutdown().await.unwrap();
}

/// r8limiter's routes (`/allow`, its admin views, `/readyz`, `/livez`) answer as documented.
#[tokio::test]
async fn r8limiter_answers_match_the_spec() {
    let spec = Spec::load();
    let server = start_node(&[]).await;
    let post = |path: &'static str| call(&server, Method::POST, path, None, None);
    let get = |path: &'static str| call(&server, Method::GET, path, None, None);

    let allowed = spec.check(
        "post",
        "/allow",
        &post("/allow?user_id=oa&resource=read").await,
    );
    assert_eq!(allowed["tokens_left"], 9.0);
    let body = json!({"user_id": "oa", "resource": "read", "cost": 9});
    let request_schema =
        spec.validator(
            &spec.operation("post", "/allow").unwrap()["requestBody"]["content"]["application/json"]
                ["schema"],
        );
    assert_valid(&request_schema, &body, "the /allow body");
    let rest = call(
        &server,
        Method::POST,
        "/allow",
        Some("application/json"),
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(rest.status, 200);
    spec.check("post", "/allow", &rest);
    // Ten tokens at once are there only when the bucket is full again (a second after emptying).
    let denied = post("/allow?user_id=oa&resource=read&cost=10").await;
    assert_eq!(denied.status, 429);
    assert_eq!(spec.check("post", "/allow", &denied)["allowed"], false);
    for bad in [
        "/allow",
        "/allow?user_id=oa&resource=a%2Fb",
        "/allow?user_id=oa&cost=11",
    ] {
        let reply = post(bad).await;
        assert_eq!(reply.status, 400, "{bad}");
        spec.check("post", "/allow", &reply);
    }
    let wrong_method = get("/allow?user_id=oa").await;
    assert_eq!(wrong_method.status, 405);
    spec.check("post", "/allow", &wrong_method);

    let resources = spec.check("get", "/admin/resources", &get("/admin/resources").await);
    assert_eq!(resources["resources"]["read"]["source"], "discovered");
    let user = get("/admin/user/oa").await;
    assert_eq!(user.status, 200);
    let user = spec.check("get", "/admin/user/{user_id}", &user);
    assert_eq!(user["resources"][0]["resource"], "read");

    assert_eq!(
        spec.check("get", "/readyz", &get("/readyz").await)["ready"],
        true
    );
    assert_eq!(
        spec.check("get", "/livez", &get("/livez").await)["alive"],
        true
    );
    server.shutdown().await.unwrap();

    let locked = start_node(&["--admin-token=t"]).await;
    for path in ["/admin/resources", "/admin/user/oa"] {
        let refused = call(&locked, Method::GET, path, None, None).await;
        assert_eq!(refused.status, 401, "{path}");
        let documented = if path == "/admin/resources" {
            path
        } else {
            "/admin/user/{user_id}"
        };
        spec.check("get", documented, &refused);
    }
    locked.shutdown().await.unwrap();
}

#[tokio::test]
async fn rls_answers_match_the_spec() {
    let spec = Spec::load();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rls.yaml");
    std::fs::write(
        &config,
        "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 1}\n",
    )
    .unwrap();
    let flag = format!("--rls-config={}", config.display());
    let server = start_node(&[flag.as_str()]).await;
    let body =
        json!({"domain": "api", "descriptors": [{"entries": [{"key": "user", "value": "spec"}]}]});
    let request_schema =
        spec.validator(
            &spec.operation("post", "/json").unwrap()["requestBody"]["content"]["application/json"]
                ["schema"],
        );
    assert_valid(&request_schema, &body, "the /json body");
    let post = || {
        call(
            &server,
            Method::POST,
            "/json",
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    };
    let first = post().await;
    assert_eq!(first.status, 200);
    assert_eq!(spec.check("post", "/json", &first)["overallCode"], "OK");
    let second = post().await;
    assert_eq!(second.status, 429);
    assert_eq!(
        spec.check("post", "/json", &second)["overallCode"],
        "OVER_LIMIT"
    );
    let bad = call(
        &server,
        Method::POST,
        "/json",
        Some("application/json"),
        Some(b"{\"descriptors\": 7}".to_vec()),
    )
    .await;
    assert_eq!(bad.status, 400);
    spec.check("post", "/json", &bad);
    let listing = call(&server, Method::GET, "/rlconfig", None, None).await;
    assert_eq!(listing.status, 200);
    let text = spec.check("get", "/rlconfig", &listing);
    assert!(text.as_str().unwrap().contains("# source:"), "{text}");
    server.shutdown().await.unwrap();

    // Without a configuration /json is a 503 with a plain-text reason.
    let bare = start_node(&[]).await;
    let unconfigured = call(
        &bare,
        Method::POST,
        "/json",
        Some("application/json"),
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(unconfigured.status, 503);
    spec.check("post", "/json", &unconfigured);
    bare.shutdown().await.unwrap();
}
