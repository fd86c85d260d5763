//! Hostile input: slow HTTP clients are cut off, oversized messages and over-long keys and names
//! are refused, every extreme i64 in every numeric field either saturates or is an item error
//! (never a panic, a failed call or damaged state), and proptest drives arbitrary items through
//! validation and the algorithms, and through the `Node` API.

use crate::common;

use std::time::{Duration, Instant};

use common::{ApiClient, Surface, start_node};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ringlimit::algorithms::{self, Bucket};
use ringlimit::proto;
use ringlimit::request::{self, InputLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `stream` until the server closes it or `within` passes; returns what was read and
/// whether it was closed in time.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let deadline = tokio::time::Instant::now() + within;
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&received).into(), true),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into(), false),
        }
    }
}

#[tokio::test]
async fn slow_header_clients_are_cut_off() {
    let server = start_node(&["--http-header-timeout=500ms"]).await;

    // A slowloris: a valid start, then one header byte every 100 ms, forever.
    let mut slow = TcpStream::connect(server.http_address()).await.unwrap();
    slow.write_all(b"POST /v1/GetRateLimits HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut cut_off = false;
    // Bounded: at most 50 bytes (5 s) before giving up.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if slow.write_all(b"x").await.is_err() {
            cut_off = true;
            break;
        }
        let mut probe = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
        {
            cut_off = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(cut_off, "the slow client was never disconnected");
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "cut off after {elapsed:?}"
    );

    // A connection that never sends a byte is closed too.
    let mut silent = TcpStream::connect(server.http_address()).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(3)).await;
    assert!(closed, "an idle connection is closed");

    // Normal clients are unaffected.
    let mut client = ApiClient::new(&server, Surface::Http).await;
    client.one(common::token("fine", 1, 10, 60_000)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_body_clients_get_408_and_are_disconnected() {
    let server = start_node(&["--http-body-timeout=500ms"]).await;
    let mut slow = TcpStream::connect(server.http_address()).await.unwrap();
    slow.write_all(
        b"POST /v1/GetRateLimits HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\n\r\n{\"requests\":",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":4"), "{answer}");
    assert!(closed, "the connection is closed after the 408");
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_messages_are_refused_on_both_surfaces() {
    let server = start_node(&["--max-request-size=2048"]).await;
    let big = vec![common::token(&"k".repeat(1000), 1, 10, 60_000); 4];
    let mut grpc = ApiClient::new(&server, Surface::Grpc).await;
    let failure = grpc.get_rate_limits(big.clone()).await.unwrap_err();
    assert_eq!(
        failure.code,
        tonic::Code::ResourceExhausted as i32,
        "{failure:?}"
    );
    let response = reqwest::Client::new()
        .post(common::http_url(&server, "/v1/GetRateLimits"))
        .body(ringlimit::http::json::encode_get_rate_limits_req(
            &proto::GetRateLimitsReq { requests: big },
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    // The node still serves normal calls.
    grpc.one(common::token("small", 1, 10, 60_000)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn over_long_keys_and_names_are_item_errors() {
    let server = start_node(&["--max-key-length=64"]).await;
    for surface in [Surface::Grpc, Surface::Http] {
        let mut client = ApiClient::new(&server, surface).await;
        let long_key = common::token(&"k".repeat(65), 1, 10, 60_000);
        let long_name = proto::RateLimitReq {
            name: "n".repeat(100),
            ..common::token("k", 1, 10, 60_000)
        };
        let at_limit = proto::RateLimitReq {
            name: "n".repeat(64),
            ..common::token(&"k".repeat(64), 1, 10, 60_000)
        };
        let answers = client
            .get_rate_limits(vec![long_key, long_name, at_limit])
            .await
            .expect("item problems never fail the call");
        assert_eq!(
            answers[0].error,
            "field 'unique_key' is 65 bytes long; the maximum is 64"
        );
        assert_eq!(
            answers[1].error,
            "field 'name' is 100 bytes long; the maximum is 64"
        );
        assert_eq!(answers[2].error, "", "{surface:?}");
    }
    server.shutdown().await.unwrap();
}

/// The values every numeric field is tried with.
const EXTREMES: [i64; 7] = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
/// Behaviours that change the arithmetic.
const BEHAVIORS: [i32; 4] = [0, 4, 8, 32];

/// Every (field, value, algorithm, behaviour) case, each on its own key.
fn extreme_items() -> Vec<proto::RateLimitReq> {
    let mut items = Vec::new();
    for field in ["hits", "limit", "duration", "burst", "created_at"] {
        for value in EXTREMES {
            for algorithm in [0, 1] {
                for behavior in BEHAVIORS {
                    let mut item = proto::RateLimitReq {
                        name: "extreme".into(),
                        unique_key: format!("{field}:{value}:{algorithm}:{behavior}"),
                        hits: 1,
                        limit: 10,
                        duration: if behavior == 4 { 1 } else { 60_000 },
                        algorithm,
                        behavior,
                        ..Default::default()
                    };
                    match field {
                        "hits" => item.hits = value,
                        "limit" => item.limit = value,
                        "duration" => item.duration = value,
                        "burst" => item.burst = value,
                        _ => item.created_at = Some(value),
                    }
                    items.push(item);
                }
            }
        }
    }
    items
}

/// The item error validation must give `item`, if any.
fn expected_error(item: &proto::RateLimitReq) -> Option<&'static str> {
    if item.limit < 0 {
        return Some("field 'limit' cannot be negative");
    }
    if item.duration < 0 {
        return Some("field 'duration' cannot be negative");
    }
    if item.burst < 0 {
        return Some("field 'burst' cannot be negative");
    }
    if item.behavior & 4 != 0 && !(0..=5).contains(&item.duration) {
        return Some("DURATION_IS_GREGORIAN");
    }
    if item.behavior & 4 == 0 && item.algorithm == 1 && item.duration == 0 {
        return Some("must be greater than 0 for LEAKY_BUCKET");
    }
    None
}

#[tokio::test]
async fn every_extreme_i64_saturates_or_is_an_item_error() {
    let server = start_node(&[]).await;
    let items = extreme_items();
    assert_eq!(items.len(), 5 * EXTREMES.len() * 2 * BEHAVIORS.len());
    for surface in [Surface::Grpc, Surface::Http] {
        let mut client = ApiClient::new(&server, surface).await;
        let sentinel = proto::RateLimitReq {
            name: format!("sentinel-{surface:?}"),
            ..common::token("k", 1, 1000, 3_600_000)
        };
        let mut call = vec![sentinel.clone()];
        call.extend(items.iter().map(|item| proto::RateLimitReq {
            name: format!("{}-{surface:?}", item.name),
            ..item.clone()
        }));
        call.push(sentinel.clone());
        // Twice: the second round evaluates every extreme against the state the first one left.
        for round in 0..2 {
            let answers = client
                .get_rate_limits(call.clone())
                .await
                .expect("no value fails the call");
            assert_eq!(answers.len(), call.len());
            for (item, answer) in call.iter().zip(&answers).skip(1).take(items.len()) {
                match expected_error(item) {
                    Some(error) => assert!(
                        answer.error.contains(error),
                        "{surface:?} {}: expected '{error}', got {answer:?}",
                        item.unique_key
                    ),
                    None => {
                        assert_eq!(answer.error, "", "{surface:?} {}", item.unique_key);
                        assert!(answer.status == 0 || answer.status == 1);
                        assert!(
                            answer.remaining >= 0,
                            "{surface:?} {}: {answer:?}",
                            item.unique_key
                        );
                    }
                }
            }
            // No extreme item disturbed another key: the sentinel took exactly its two hits.
            let first = &answers[0];
            let last = &answers[answers.len() - 1];
            assert_eq!(first.remaining, 999 - 2 * round, "{surface:?}");
            assert_eq!(last.remaining, 998 - 2 * round, "{surface:?}");
        }
    }
    // Still healthy and serving.
    let mut client = ApiClient::new(&server, Surface::Grpc).await;
    client.one(common::token("after", 1, 10, 60_000)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn out_of_range_json_integers_are_invalid_argument() {
    let server = start_node(&[]).await;
    let url = common::http_url(&server, "/v1/GetRateLimits");
    for value in [
        "\"9223372036854775808\"",
        "\"-9223372036854775809\"",
        "1e30",
        "\"1.5\"",
        "18446744073709551616",
    ] {
        let body = format!(
            r#"{{"requests":[{{"name":"n","unique_key":"k","hits":{value},"limit":10,"duration":1000}}]}}"#
        );
        let response = reqwest::Client::new()
            .post(&url)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{value}");
    }
    server.shutdown().await.unwrap();
}

/// Any i64, biased towards the boundaries.
fn edgy() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        -3i64..=3,
        0i64..=100_000,
        1_700_000_000_000i64..1_800_000_000_000,
    ]
}

/// Any string a client could send: empty, short, arbitrary Unicode, or far too long.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z_]{1,8}",
        ".{0,24}",
        (1000usize..1100).prop_map(|len| "x".repeat(len)),
    ]
}

/// Any wire item, with every field arbitrary.
fn any_item() -> impl Strategy<Value = proto::RateLimitReq> {
    (
        (any_text(), any_text(), edgy(), edgy(), edgy()),
        (
            prop_oneof![any::<i32>(), 0i32..=2],
            prop_oneof![any::<i32>(), 0i32..=63],
            edgy(),
            prop::option::of(edgy()),
        ),
    )
        .prop_map(
            |(
                (name, unique_key, hits, limit, duration),
                (algorithm, behavior, burst, created_at),
            )| {
                proto::RateLimitReq {
                    name,
                    unique_key,
                    hits,
                    limit,
                    duration,
                    algorithm,
                    behavior,
                    burst,
                    created_at,
                    metadata: Default::default(),
                }
            },
        )
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    /// Validation and evaluation never panic for any sequence of wire items on one key, at any
    /// server time; an item that fails validation never reaches the bucket.
    #[test]
    fn no_wire_item_panics_validation_or_the_algorithms(
        steps in prop::collection::vec((any_item(), edgy()), 1..8),
        start in edgy(),
    ) {
        let mut now = start;
        let mut stored: Option<Bucket> = None;
        for (item, step) in steps {
            now = now.saturating_add(step);
            let Ok(request) = request::validate(&item, now, InputLimits::default()) else {
                continue;
            };
            prop_assert!(request.limit >= 0 && request.burst >= 0);
            let evaluation = algorithms::evaluate(stored.as_ref(), &request, now);
            prop_assert!(evaluation.decision.remaining >= 0, "{:?} {:?}", request, evaluation);
            evaluation.next.apply_to(&mut stored);
        }
    }
}

/// No call of arbitrary items fails or panics through the `Node` API, and none disturbs another
/// key: a sentinel key's count stays exact across every case.
#[test]
fn no_wire_item_panics_the_node_or_disturbs_other_keys() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(start_node(&["--cache-size=500"]));
    let node = server.node().clone();
    let sentinel = proto::RateLimitReq {
        name: "sentinel\u{0}".into(),
        ..common::token("k", 1, i64::MAX, 3_600_000)
    };
    // Each run takes one sentinel hit (shrinking reruns cases, so count runs, not cases).
    let taken = std::cell::Cell::new(0i64);
    let mut runner = TestRunner::new(Config {
        cases: 300,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(any_item(), 0..24), |items| {
            let count = items.len();
            let (answers, check) = runtime.block_on(async {
                let answers = node.get_rate_limits(items.clone()).await;
                let check = node.get_rate_limits(vec![sentinel.clone()]).await;
                (answers, check)
            });
            let answers = answers.expect("item values never fail the call");
            prop_assert_eq!(answers.len(), count);
            for (item, answer) in items.iter().zip(&answers) {
                if answer.error.is_empty() {
                    prop_assert!(answer.remaining >= 0, "{:?} -> {:?}", item, answer);
                }
            }
            taken.set(taken.get() + 1);
            let check = check.expect("the sentinel call succeeds");
            prop_assert_eq!(check[0].remaining, i64::MAX - taken.get());
            Ok(())
        })
        .unwrap();
    runtime.block_on(server.shutdown()).unwrap();
}
