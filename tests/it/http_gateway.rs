//! The HTTP JSON gateway as a grpc-gateway client sees it: exact JSON text, lenient input, and
//! errors in the `google.rpc.Status` shape with grpc-gateway's HTTP statuses.

use crate::common;

use common::{http_url, now_ms, start_node};
use serde_json::Value;

async fn post(url: &str, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request is sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn error_body(text: &str) -> (i64, String) {
    let value: Value = serde_json::from_str(text).expect("error body is JSON");
    assert_eq!(value["details"], Value::Array(vec![]), "{text}");
    (
        value["code"].as_i64().expect("code"),
        value["message"].as_str().expect("message").to_string(),
    )
}

#[tokio::test]
async fn answers_have_grpc_gateway_text_shape() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let created_at = now_ms();
    let body = format!(
        r#"{{"requests":[{{"name":"shape","unique_key":"k","hits":1,"limit":10,"duration":60000,"created_at":"{created_at}"}}]}}"#
    );
    let (status, text) = post(&url, "application/json", body).await;
    assert_eq!(status, 200, "{text}");
    let expected = format!(
        r#"{{"responses":[{{"status":"UNDER_LIMIT","limit":"10","remaining":"9","reset_time":"{}","error":"","metadata":{{}}}}]}}"#,
        created_at + 60_000
    );
    assert_eq!(text, expected);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn input_accepts_camel_case_strings_enum_names_and_unknown_fields() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let body = r#"{"requests":[{"name":"camel","uniqueKey":"k","hits":"2","limit":"5",
        "duration":"60000","algorithm":"TOKEN_BUCKET","behavior":0,"somethingNew":{"x":1}}],
        "unknownTopLevel":true}"#;
    let (status, text) = post(&url, "application/json", body).await;
    assert_eq!(status, 200, "{text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["responses"][0]["remaining"], "3");
    assert_eq!(value["responses"][0]["limit"], "5");

    // curl -d sends application/x-www-form-urlencoded; grpc-gateway reads it as JSON.
    let (status, text) = post(&url, "application/x-www-form-urlencoded", body).await;
    assert_eq!(status, 200, "{text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["responses"][0]["remaining"], "1");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn over_limit_is_written_as_an_enum_name() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let body =
        r#"{"requests":[{"name":"n","unique_key":"over","hits":3,"limit":2,"duration":60000}]}"#;
    let (_, text) = post(&url, "application/json", body).await;
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["responses"][0]["status"], "OVER_LIMIT");
    assert_eq!(value["responses"][0]["remaining"], "2");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn empty_and_missing_request_lists_answer_an_empty_list() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    // grpc-gateway reads an empty body as the empty message.
    for body in [r#"{"requests":[]}"#, "{}", ""] {
        let (status, text) = post(&url, "application/json", body).await;
        assert_eq!((status, text.as_str()), (200, r#"{"responses":[]}"#));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_live_checks() {
    let server = start_node(&[]).await;
    let advertise = server.grpc_address().to_string();
    let response = reqwest::get(http_url(&server, "/v1/HealthCheck"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        format!(
            r#"{{"status":"healthy","message":"","peer_count":1,"advertise_address":"{advertise}","local_peers":[{{"grpc_address":"{advertise}","data_center":""}}],"region_peers":[]}}"#
        )
    );
    let response = reqwest::get(http_url(&server, "/v1/LiveCheck"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "{}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_truncated_and_non_utf8_bodies_are_invalid_argument() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let bodies: [&[u8]; 4] = [
        b"{not json",
        br#"{"requests":[{"name":"n","unique_key":"k""#,
        b"\xff\xfe{}",
        br#"{"requests":[{"name":"n","unique_key":"k","hits":"lots"}]}"#,
    ];
    for body in bodies {
        let (status, text) = post(&url, "application/json", body.to_vec()).await;
        assert_eq!(status, 400, "{text}");
        let (code, message) = error_body(&text);
        assert_eq!(code, 3, "{text}");
        assert!(!message.is_empty());
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn too_many_items_is_out_of_range() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let items: Vec<String> = (0..1001)
        .map(|i| {
            format!(r#"{{"name":"n","unique_key":"k{i}","hits":1,"limit":1,"duration":1000}}"#)
        })
        .collect();
    let body = format!(r#"{{"requests":[{}]}}"#, items.join(","));
    let (status, text) = post(&url, "application/json", body).await;
    assert_eq!(status, 400);
    assert_eq!(
        error_body(&text),
        (
            11,
            "Requests.RateLimits list too large; max size is '1000'".to_string()
        )
    );
    // Counted before anything is built: a quarter of a million empty items (about 750 kB, each
    // of which used to become a JSON value and then an item), and 1001 with a bad item among
    // them, get the same answer.
    let empty = format!(r#"{{"requests":[{}]}}"#, vec!["{}"; 250_000].join(","));
    let bad = format!(r#"{{"requests":[{},{{"hits":true}}]}}"#, items.join(","));
    for body in [empty, bad] {
        let (status, text) = post(&url, "application/json", body).await;
        assert_eq!(status, 400);
        assert_eq!(error_body(&text).0, 11, "{text}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let padding = "x".repeat(1024 * 1024 + 1);
    let body = format!(r#"{{"requests":[],"padding":"{padding}"}}"#);
    let (status, text) = post(&url, "application/json", body).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(error_body(&text).0, 8);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_content_type_is_refused() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let (status, text) = post(&url, "application/x-protobuf", "{}").await;
    assert_eq!(status, 415, "{text}");
    let (code, message) = error_body(&text);
    assert_eq!(code, 3);
    assert!(message.contains("application/x-protobuf"), "{message}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let server = start_node(&[]).await;
    let response = reqwest::get(http_url(&server, "/v1/Nope")).await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(error_body(&response.text().await.unwrap()).0, 5);

    let response = reqwest::get(http_url(&server, "/v1/GetRateLimits"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 501);
    assert_eq!(error_body(&response.text().await.unwrap()).0, 12);

    let (status, text) = post(
        &http_url(&server, "/v1/HealthCheck"),
        "application/json",
        "{}",
    )
    .await;
    assert_eq!(status, 501);
    assert_eq!(error_body(&text).0, 12);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_items_get_item_errors_and_leave_state_alone() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let long_key = "k".repeat(2000);
    let body = format!(
        r#"{{"requests":[
        {{"name":"bad","unique_key":"k","hits":1,"limit":10,"duration":60000}},
        {{"name":"","unique_key":"k","hits":1,"limit":10,"duration":60000}},
        {{"name":"bad","unique_key":"k","hits":1,"limit":10,"duration":60000,"algorithm":7}},
        {{"name":"bad","unique_key":"k","hits":1,"limit":-1,"duration":60000}},
        {{"name":"bad","unique_key":"k","hits":1,"limit":10,"duration":-5}},
        {{"name":"bad","unique_key":"k","hits":1,"limit":10,"duration":60000,"algorithm":"LEAKY_BUCKET","burst":-1}},
        {{"name":"bad","unique_key":"k","hits":1,"limit":10,"duration":0,"algorithm":"LEAKY_BUCKET"}},
        {{"name":"bad","unique_key":"k","hits":1,"limit":10,"duration":9,"behavior":4}},
        {{"name":"bad","unique_key":"{long_key}","hits":1,"limit":10,"duration":60000}},
        {{"name":"bad","unique_key":"k","hits":0,"limit":10,"duration":60000}}
        ]}}"#
    );
    let (status, text) = post(&url, "application/json", body).await;
    assert_eq!(status, 200, "{text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    let errors: Vec<&str> = value["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors[0], "");
    assert_eq!(errors[1], "field 'namespace' cannot be empty");
    assert_eq!(errors[2], "invalid rate limit algorithm '7'");
    assert_eq!(errors[3], "field 'limit' cannot be negative");
    assert_eq!(errors[4], "field 'duration' cannot be negative");
    assert_eq!(errors[5], "field 'burst' cannot be negative");
    assert!(errors[6].contains("LEAKY_BUCKET"), "{}", errors[6]);
    assert!(errors[7].contains("DURATION_IS_GREGORIAN"), "{}", errors[7]);
    assert!(errors[8].contains("maximum is 1024"), "{}", errors[8]);
    // The final query sees only the first item's hit: no bad item changed the stored state.
    assert_eq!(errors[9], "");
    assert_eq!(value["responses"][9]["remaining"], "9");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn extreme_values_never_fail_the_call() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let (max, min) = (i64::MAX, i64::MIN);
    let body = format!(
        r#"{{"requests":[
        {{"name":"x","unique_key":"a","hits":"{max}","limit":"{max}","duration":"{max}","created_at":"{max}"}},
        {{"name":"x","unique_key":"b","hits":"{min}","limit":"{max}","duration":"{max}"}},
        {{"name":"x","unique_key":"c","hits":"{max}","limit":"{max}","duration":"{max}","algorithm":1,"burst":"{max}","created_at":"{min}"}},
        {{"name":"x","unique_key":"d","hits":"{min}","limit":1,"duration":1,"algorithm":1}},
        {{"name":"x","unique_key":"e","hits":1,"limit":0,"duration":1000,"algorithm":1}}
        ]}}"#
    );
    let (status, text) = post(&url, "application/json", body).await;
    assert_eq!(status, 200, "{text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["responses"].as_array().unwrap().len(), 5);
    // A leaky bucket with limit 0 never admits and never divides by zero.
    assert_eq!(value["responses"][4]["status"], "OVER_LIMIT");
    assert_eq!(value["responses"][4]["remaining"], "0");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let server = start_node(&[]).await;
    let url = http_url(&server, "/v1/GetRateLimits");
    let body =
        r#"{"requests":[{"name":"m","unique_key":"k","hits":5,"limit":1,"duration":60000}]}"#;
    post(&url, "application/json", body).await;
    let response = reqwest::get(http_url(&server, "/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"gubernator_getratelimit_counter{calltype="local"} 1"#),
        "{text}"
    );
    assert!(text.contains("gubernator_over_limit_counter 1"), "{text}");
    assert!(text.contains("gubernator_cache_size 1"), "{text}");
    assert!(
        text.contains(r#"gubernator_grpc_request_counts{method="/pb.gubernator.V1/GetRateLimits",status="success"} 1"#),
        "{text}"
    );
    server.shutdown().await.unwrap();
}
