//! r8limiter's quickstart and API table, called exactly as its README and its own integration tests
//! call them, against a default node (no configuration): each check asserts r8limiter's answer.
//!
//! The quickstart's curl commands are
//!
//! ```text
//! curl -i -X POST "http://localhost:8000/allow?user_id=a&resource=read&cost=1"
//! curl -i -X POST "http://localhost:8000/allow?user_id=a&resource=pay&cost=1" -H "Idempotency-Key: 12345"
//! curl -i -X POST "http://localhost:8000/allow?user_id=a&resource=pay&cost=1" -H "Idempotency-Key: 12345"
//! curl -X POST "http://localhost:8000/allow?user_id=test"
//! ```
//!
//! (only the port differs). The API table adds the `idempotency` query parameter,
//! `/admin/stats`, `/admin/user/{user_id}`, `/admin/resources`, `/admin/top_offenders`,
//! `/metrics` with `requests_total{result}`, `active_keys` and `request_latency_seconds`, and
//! `/readyz` and `/livez`. Everything stays on 127.0.0.1 and every loop is bounded.

use crate::common;

use common::{http_url, start_node};
use ringlimit::server::RunningServer;
use serde_json::Value;

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// `curl -i -X <method> "<url>" [-H "<name>: <value>"]`.
async fn curl(
    server: &RunningServer,
    method: &str,
    path: &str,
    header: Option<(&str, &str)>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = reqwest::Client::new().request(method, http_url(server, path));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("request is sent");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

/// r8limiter's `/allow` body: exactly `allowed`, `retry_after` and `tokens_left`, both numbers.
fn assert_allow_shape(reply: &Reply, allowed: bool) -> (f64, f64) {
    let body = reply.json();
    let object = body.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["allowed", "retry_after", "tokens_left"],
        "{}",
        reply.body
    );
    assert_eq!(body["allowed"], allowed, "{}", reply.body);
    let retry_after = body["retry_after"]
        .as_f64()
        .expect("retry_after is a number");
    let tokens_left = body["tokens_left"]
        .as_f64()
        .expect("tokens_left is a number");
    // Numbers with fractions, as r8limiter writes them (`0.0`, never `0`).
    assert!(reply.body.contains("\"retry_after\":") && !reply.body.contains("\"retry_after\":0,"));
    assert!(tokens_left >= 0.0 && retry_after >= 0.0);
    (retry_after, tokens_left)
}

#[tokio::test]
async fn the_quickstart_works_unchanged_on_a_default_node() {
    let node = start_node(&[]).await;

    // 1. Hit the endpoint: `read` is not configured anywhere; it uses the default limit.
    let first = curl(&node, "POST", "/allow?user_id=a&resource=read&cost=1", None).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let (retry_after, tokens_left) = assert_allow_shape(&first, true);
    assert_eq!(retry_after, 0.0);
    assert!((8.0..10.0).contains(&tokens_left), "{}", first.body);

    // 2. "Allows up to capacity, then throttles": a 429 with the same shape and Retry-After.
    let mut denied = None;
    for _ in 0..50 {
        let reply = curl(&node, "POST", "/allow?user_id=a&resource=read&cost=1", None).await;
        if reply.status == 429 {
            denied = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let denied = denied.expect("the default capacity (10) runs out within 50 calls");
    let (retry_after, tokens_left) = assert_allow_shape(&denied, false);
    assert!(retry_after > 0.0 && retry_after <= 1.0, "{}", denied.body);
    assert!(tokens_left < 1.0, "{}", denied.body);
    assert!(denied.headers.contains_key("retry-after"));

    // 3. The idempotent call, twice: the same answer, spent once (the node's admitted decisions
    // grow by one; timing-free, unlike counting tokens of a bucket that refills 10 a second).
    let admitted = || async {
        curl(&node, "GET", "/admin/stats?scope=local", None)
            .await
            .json()["decisions"]["under_limit"]
            .as_u64()
            .expect("a count")
    };
    let before = admitted().await;
    let key = Some(("Idempotency-Key", "12345"));
    let paid = curl(&node, "POST", "/allow?user_id=a&resource=pay&cost=1", key).await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_allow_shape(&paid, true);
    let again = curl(&node, "POST", "/allow?user_id=a&resource=pay&cost=1", key).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, paid.body, "the repeat answers the first answer");
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(admitted().await, before + 1, "one spend for the two calls");

    // 4. The API table's `idempotency` query parameter does the same.
    let by_param = "/allow?user_id=b&resource=pay&cost=1&idempotency=67890";
    let first_param = curl(&node, "POST", by_param, None).await;
    assert_eq!(first_param.status, 200, "{}", first_param.body);
    let repeat_param = curl(&node, "POST", by_param, None).await;
    assert_eq!(repeat_param.body, first_param.body);
    assert_eq!(repeat_param.headers["idempotent-replayed"], "true");

    // r8limiter's own integration test: answers (denied ones among them) echo X-Request-ID.
    let echoed = curl(
        &node,
        "POST",
        "/allow?user_id=a&resource=read&cost=10",
        Some(("X-Request-ID", "itest-req-123")),
    )
    .await;
    assert!(matches!(echoed.status, 200 | 429), "{}", echoed.body);
    assert_eq!(echoed.headers["x-request-id"], "itest-req-123");

    // 5. The README's "test a request": the resource defaults to `default`.
    let test = curl(&node, "POST", "/allow?user_id=test", None).await;
    assert_eq!(test.status, 200, "{}", test.body);
    assert_allow_shape(&test, true);

    // 6. /admin/stats answers.
    assert_eq!(curl(&node, "GET", "/admin/stats", None).await.status, 200);

    // 7. /admin/user/{user_id}: tokens and refill ETAs per resource, without spending. A bucket
    // of the default limit (10 a second) is forgotten a second after its last hit, so spend just
    // before looking.
    curl(&node, "POST", "/allow?user_id=a&resource=read&cost=1", None).await;
    let user = curl(&node, "GET", "/admin/user/a", None).await;
    assert_eq!(user.status, 200, "{}", user.body);
    let user_json = user.json();
    assert!(user_json["user_id"].is_string());
    let tokens_of = |view: &Value, name: &str| {
        view["resources"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|resource| resource["resource"] == name)
            .map(|resource| resource["tokens"].as_f64().expect("a number"))
    };
    for resource in user_json["resources"].as_array().expect("a list") {
        for field in [
            "tokens",
            "next_token_seconds",
            "full_refill_seconds",
            "capacity",
            "refill_rate_per_sec",
        ] {
            assert!(resource[field].is_number(), "{field}: {}", user.body);
        }
        assert!(resource["tokens"].as_f64().unwrap() <= 10.0);
    }
    let read = tokens_of(&user_json, "read").expect("the read bucket just spent is listed");
    // A peek spends nothing: looking again finds at least as many tokens (or a full, forgotten
    // bucket).
    let again = curl(&node, "GET", "/admin/user/a", None).await.json();
    if let Some(later) = tokens_of(&again, "read") {
        assert!(later >= read, "{read} then {later}");
    }

    // 8. /admin/resources: a dict of resource → config, with the discovered `read` and `pay`.
    let listed = curl(&node, "GET", "/admin/resources", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    for name in ["read", "pay", "default"] {
        let resource = &listed["resources"][name];
        assert_eq!(resource["capacity"], 10, "{name}: {listed}");
        assert_eq!(resource["refill_rate_per_sec"], 10.0, "{name}: {listed}");
    }
    assert_eq!(listed["resources"]["read"]["source"], "discovered");
    assert_eq!(listed["resources"]["default"]["source"], "configured");

    // 9. /admin/top_offenders answers (`a` was refused).
    let top = curl(&node, "GET", "/admin/top_offenders", None).await;
    assert_eq!(top.status, 200, "{}", top.body);

    // 10. /metrics has r8limiter's series.
    let metrics = curl(&node, "GET", "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    for needle in [
        "# HELP requests_total",
        "requests_total{result=\"allow\"}",
        "requests_total{result=\"deny\"}",
        "# TYPE active_keys gauge",
        "request_latency_seconds_bucket{endpoint=\"/allow\"",
    ] {
        assert!(metrics.body.contains(needle), "{needle} is missing");
    }
    let denies: f64 = metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix("requests_total{result=\"deny\"} "))
        .and_then(|value| value.trim().parse().ok())
        .expect("a deny count");
    assert!(denies >= 1.0, "the throttled call is counted");

    // 11, 12. The probes.
    let ready = curl(&node, "GET", "/readyz", None).await;
    assert_eq!(
        (ready.status, ready.json()["ready"].clone()),
        (200, Value::Bool(true))
    );
    let live = curl(&node, "GET", "/livez", None).await;
    assert_eq!(
        (live.status, live.json()["alive"].clone()),
        (200, Value::Bool(true))
    );

    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn what_r8limiter_users_may_get_wrong_is_a_clear_400() {
    let node = start_node(&[]).await;
    for (path, header, expected) in [
        (
            "/allow?user_id=a&resource=pay&idempotency=1",
            Some(("Idempotency-Key", "2")),
            "differ",
        ),
        (
            "/allow?user_id=a&resource=has%20space",
            None,
            "resource must be 1 to 64",
        ),
        (
            "/allow?user_id=a&resource=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            None,
            "resource must be 1 to 64",
        ),
    ] {
        let reply = curl(&node, "POST", path, header).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        let body = reply.json();
        assert_eq!(body["error"], "invalid_request");
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{}",
            reply.body
        );
    }
    // A configured list without `default`: an unlisted resource has no limit to use.
    let strict = start_node(&["--allow-resources=read=5/1s"]).await;
    let reply = curl(&strict, "POST", "/allow?user_id=a&resource=pay", None).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply.body.contains("no 'default' resource"),
        "{}",
        reply.body
    );
    assert_eq!(
        curl(&strict, "POST", "/allow?user_id=a&resource=read", None)
            .await
            .status,
        200
    );
    strict.shutdown().await.unwrap();
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn invented_resource_names_are_listed_within_the_bound() {
    let node = start_node(&["--allow-discovered-max=5"]).await;
    for i in 0..20 {
        let reply = curl(
            &node,
            "POST",
            &format!("/allow?user_id=u&resource=invented-{i}"),
            None,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let listed = curl(&node, "GET", "/admin/resources", None).await.json();
    let discovered: Vec<&str> = listed["resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, resource)| resource["source"] == "discovered")
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        discovered,
        [
            "invented-15",
            "invented-16",
            "invented-17",
            "invented-18",
            "invented-19"
        ],
        "the 5 most recently used"
    );
    assert_eq!(listed["discovered_max"], 5);
    // Names are never metric labels.
    let metrics = curl(&node, "GET", "/metrics", None).await.body;
    assert!(!metrics.contains("invented-"));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn readyz_fails_and_livez_holds_while_draining() {
    let node = start_node(&["--shutdown-drain-delay=1s"]).await;
    let address = node.http_address();
    let shutdown = tokio::spawn(node.shutdown());
    // Bounded poll: readiness turns 503 within the drain delay, while liveness stays 200.
    let client = reqwest::Client::new();
    let mut saw_not_ready = false;
    for _ in 0..50 {
        let Ok(ready) = client.get(format!("http://{address}/readyz")).send().await else {
            break;
        };
        if ready.status() == 503 {
            let body: Value = ready.json().await.unwrap();
            assert_eq!(body["ready"], false);
            assert!(body["reason"].as_str().unwrap().contains("shutting down"));
            let live = client
                .get(format!("http://{address}/livez"))
                .send()
                .await
                .unwrap();
            assert_eq!(live.status(), 200);
            saw_not_ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(saw_not_ready, "/readyz answered 503 while draining");
    shutdown.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_admin_views_answer_for_the_whole_cluster() {
    use common::{Cluster, spread_key};
    let cluster = Cluster::start(3, &["--allow-resources=default=5/1m"]).await;
    // A user whose `read` bucket lives on node 2; node 0 answers the call and the views.
    let user = (0..10_000)
        .map(|i| spread_key("r8", i))
        .find(|user| cluster.owner_of("allow_read", user) == 2)
        .expect("a user owned by node 2");
    let spent = curl(
        &cluster.nodes[0],
        "POST",
        &format!("/allow?user_id={user}&resource=read&cost=1"),
        None,
    )
    .await;
    assert_eq!(spent.status, 200, "{}", spent.body);
    assert_eq!(spent.json()["tokens_left"], 4.0);
    // `write` is discovered on node 1 only.
    let other = curl(
        &cluster.nodes[1],
        "POST",
        &format!("/allow?user_id={user}&resource=write&cost=2"),
        None,
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.body);

    let listed = curl(&cluster.nodes[0], "GET", "/admin/resources", None)
        .await
        .json();
    for name in ["read", "write"] {
        assert_eq!(
            listed["resources"][name]["source"], "discovered",
            "{listed}"
        );
    }
    assert_eq!(listed["nodes"].as_array().unwrap().len(), 3, "{listed}");

    let view = curl(
        &cluster.nodes[0],
        "GET",
        &format!("/admin/user/{user}"),
        None,
    )
    .await;
    assert_eq!(view.status, 200, "{}", view.body);
    let view = view.json();
    assert_eq!(view["user_id"], ringlimit::admin::redact::hashed_key(&user));
    let resources = view["resources"].as_array().unwrap();
    let names: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["resource"].as_str())
        .collect();
    assert_eq!(names, ["read", "write"], "{view}");
    // Read from node 2 without spending: 4 tokens and a little refill (one token per 12 s).
    let read = &resources[0];
    assert_eq!(read["owner"], cluster.address(2));
    let tokens = read["tokens"].as_f64().unwrap();
    assert!((4.0..4.5).contains(&tokens), "{view}");
    assert_eq!(read["next_token_seconds"], 0.0);
    let full = read["full_refill_seconds"].as_f64().unwrap();
    assert!(full > 6.0 && full <= 12.0, "{view}");
    let write = &resources[1];
    assert!(
        (3.0..3.5).contains(&write["tokens"].as_f64().unwrap()),
        "{view}"
    );
    cluster.shutdown().await;
}
