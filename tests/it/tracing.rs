//! OpenTelemetry tracing between two real node processes and an in-process OTLP/gRPC collector,
//! all on loopback.
//!
//! Real processes, because tracing is configured per process by the standard `OTEL_*` variables
//! and installs a process-wide subscriber. The batch processor's delay is set to a minute, so the
//! spans reach the collector only through the flush of a graceful shutdown (SIGTERM): the test
//! checks that flush too. Every wait is bounded.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use ringlimit::peers::{PeerInfo, Ring};
use ringlimit::proto::{self, v1_client::V1Client};
use tonic::transport::Channel;

use crate::common::{spread_key, token};

/// The client's trace: the node must continue it (W3C `traceparent`).
const CLIENT_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// One span as the collector received it, with its node's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<KeyValue>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|attribute| attribute.key == key)
            .and_then(|attribute| attribute.value.as_ref())
            .and_then(|value| value.value.as_ref())
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attribute(key) {
            Some(Value::IntValue(value)) => Some(*value),
            _ => None,
        }
    }

    fn string(&self, key: &str) -> Option<&str> {
        match self.attribute(key) {
            Some(Value::StringValue(value)) => Some(value),
            _ => None,
        }
    }
}

/// An OTLP/gRPC collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| match &attribute.value {
                    Some(AnyValue {
                        value: Some(Value::StringValue(name)),
                    }) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push(Received {
                        service: service.clone(),
                        name: span.name,
                        kind: span.kind,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: span.attributes,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl Collector {
    /// Serves on a free loopback port; returns its `http://` endpoint.
    async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("bound");
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{address}"))
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

/// One node process with its own `OTEL_*` environment.
struct Node {
    child: Option<Child>,
    grpc: String,
    http: String,
}

impl Node {
    fn start(grpc: &str, peers: &str, otel: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
        for (key, _) in std::env::vars() {
            if key.starts_with("GUBER_") || key.starts_with("OTEL_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let http = format!("127.0.0.1:{}", free_port());
        let child = command
            .arg(format!("--grpc-address={grpc}"))
            .arg(format!("--http-address={http}"))
            .arg("--peer-discovery-type=static")
            .arg(format!("--peers={peers}"))
            .arg("--shutdown-drain-delay=0s")
            .arg("--log-level=warn")
            .envs(otel.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        Node {
            child: Some(child),
            grpc: grpc.to_string(),
            http,
        }
    }

    /// A client of the node, once it listens (bounded: 20 s).
    async fn client(&self) -> V1Client<Channel> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match V1Client::connect(format!("http://{}", self.grpc)).await {
                Ok(client) => return client,
                Err(error) if Instant::now() > deadline => {
                    panic!("{} never came up: {error}", self.grpc)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// SIGTERM, then waits (at most 30 s) for a clean exit.
    async fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = child.try_wait().expect("wait works") {
                assert_eq!(exit.code(), Some(0), "{} exited uncleanly", self.grpc);
                return;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.grpc);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Two nodes with `otel` (plus their own service names), and a key that `b` owns.
fn two_nodes(otel: &[(&str, &str)]) -> (Node, Node, String) {
    let a = format!("127.0.0.1:{}", free_port());
    let b = format!("127.0.0.1:{}", free_port());
    let peers = format!("{a},{b}");
    let members: Vec<PeerInfo> = [&a, &b]
        .into_iter()
        .map(|address| PeerInfo {
            grpc_address: address.clone(),
            http_address: String::new(),
            data_center: String::new(),
        })
        .collect();
    let ring = Ring::new(&members);
    let key = (0..10_000)
        .map(|i| spread_key("traced", i))
        .find(|key| ring.owner_of("test", key).map(|p| &p.grpc_address) == Some(&b))
        .expect("a key that b owns");
    let with_name = |name| {
        let mut vars = otel.to_vec();
        vars.push(("OTEL_SERVICE_NAME", name));
        vars
    };
    let node_a = Node::start(&a, &peers, &with_name("node-a"));
    let node_b = Node::start(&b, &peers, &with_name("node-b"));
    (node_a, node_b, key)
}

/// Sends one GetRateLimits for `key` to `node`, as a client whose trace is [`CLIENT_TRACE_ID`];
/// `owner` must answer it (through `node`).
async fn call_with_traceparent(node: &Node, key: &str, owner: &str) {
    // The owner listens before the call is forwarded to it: a refused connection would mark it
    // down for a second, and the forward would fail (this raced when both processes started).
    let deadline = Instant::now() + Duration::from_secs(20);
    while V1Client::connect(format!("http://{owner}")).await.is_err() {
        assert!(Instant::now() < deadline, "{owner} never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = node.client().await;
    let mut request = tonic::Request::new(proto::GetRateLimitsReq {
        requests: vec![token(key, 1, 10, 60_000)],
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01")
            .parse()
            .expect("ASCII"),
    );
    let answer = client
        .get_rate_limits(request)
        .await
        .expect("the call succeeds")
        .into_inner();
    assert_eq!(answer.responses.len(), 1);
    let answer = &answer.responses[0];
    assert_eq!(answer.error, "", "{answer:?}");
    assert_eq!(
        answer.metadata.get("owner").map(String::as_str),
        Some(owner),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_call_is_one_trace_across_both_nodes() {
    let (collector, endpoint) = Collector::start().await;
    let (mut a, mut b, key) = two_nodes(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        // Nothing is exported before shutdown: the flush on SIGTERM delivers every span.
        ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
    ]);
    call_with_traceparent(&a, &key, &b.grpc).await;
    // The HTTP gateway continues the client's trace too.
    let http_answer = reqwest::Client::new()
        .post(format!("http://{}/v1/GetRateLimits", a.http))
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"),
        )
        .json(&serde_json::json!({"requests": [{
            "name": "test", "unique_key": key, "hits": 1, "limit": 10, "duration": 60000
        }]}))
        .send()
        .await
        .expect("the HTTP call succeeds");
    assert_eq!(http_answer.status(), 200);
    // Both nodes end cleanly and flush on the way out.
    a.terminate().await;
    b.terminate().await;

    let deadline = Instant::now() + Duration::from_secs(10);
    // The span of `service` named `name` of `kind` in the client's trace whose parent is `parent`.
    let find = |spans: &[Received], service: &str, name: &str, kind: SpanKind, parent: &str| {
        spans
            .iter()
            .find(|span| {
                span.service == service
                    && span.name == name
                    && span.kind == kind as i32
                    && span.trace_id == CLIENT_TRACE_ID
                    && span.parent_span_id == parent
            })
            .cloned()
    };
    // One trace, with these parents: the client's span → node a's server span → a's forward
    // (client span) → node b's server span.
    let (server_a, client_a, server_b) = loop {
        let spans = collector.spans();
        let server_a = find(
            &spans,
            "node-a",
            "pb.gubernator.V1/GetRateLimits",
            SpanKind::Server,
            CLIENT_SPAN_ID,
        );
        let client_a = server_a.as_ref().and_then(|server_a| {
            find(
                &spans,
                "node-a",
                "pb.gubernator.PeersV1/GetPeerRateLimits",
                SpanKind::Client,
                &server_a.span_id,
            )
        });
        let server_b = client_a.as_ref().and_then(|client_a| {
            find(
                &spans,
                "node-b",
                "pb.gubernator.PeersV1/GetPeerRateLimits",
                SpanKind::Server,
                &client_a.span_id,
            )
        });
        let found = (server_a, client_a, server_b);
        if let (Some(server_a), Some(client_a), Some(server_b)) = found {
            break (server_a, client_a, server_b);
        }
        assert!(
            Instant::now() < deadline,
            "the collector never received the three linked spans of the trace; it has: {:#?}",
            spans
                .iter()
                .map(|span| (
                    &span.service,
                    &span.name,
                    span.kind,
                    &span.trace_id,
                    &span.parent_span_id
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Useful attributes, and never the key.
    assert_eq!(server_a.string("rpc.system"), Some("grpc"));
    assert_eq!(server_a.int("ringlimit.items"), Some(1), "{server_a:#?}");
    assert_eq!(server_a.int("rpc.grpc.status_code"), Some(0));
    assert_eq!(client_a.int("ringlimit.items"), Some(1));
    let (host, port) = b.grpc.rsplit_once(':').expect("host:port");
    assert_eq!(client_a.string("server.address"), Some(host));
    assert_eq!(client_a.int("server.port"), port.parse().ok());
    assert_eq!(server_b.int("ringlimit.items"), Some(1));
    let spans = collector.spans();
    for span in &spans {
        for attribute in &span.attributes {
            let shown = format!("{:?}", attribute.value);
            assert!(
                !shown.contains(&key),
                "span {} carries the key in {}",
                span.name,
                attribute.key
            );
        }
    }
    let http_a = spans
        .iter()
        .find(|span| span.service == "node-a" && span.name == "POST /v1/GetRateLimits")
        .unwrap_or_else(|| panic!("no HTTP server span: {spans:#?}"));
    assert_eq!(http_a.kind, SpanKind::Server as i32);
    assert_eq!(http_a.trace_id, CLIENT_TRACE_ID);
    assert_eq!(http_a.parent_span_id, CLIENT_SPAN_ID);
    assert_eq!(http_a.int("http.response.status_code"), Some(200));
    assert_eq!(http_a.int("ringlimit.items"), Some(1));
    // Health checks are not traced (the test's client made none; probes make many).
    assert!(
        spans
            .iter()
            .all(|span| !span.name.starts_with("grpc.health"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_nothing_is_exported() {
    let (collector, endpoint) = Collector::start().await;
    // An endpoint is set, and `none` still turns tracing off (Gubernator's off switch).
    let (mut a, mut b, key) = two_nodes(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_TRACES_EXPORTER", "none"),
    ]);
    call_with_traceparent(&a, &key, &b.grpc).await;
    a.terminate().await;
    b.terminate().await;
    // Both processes have exited: anything they exported has arrived.
    let spans = collector.spans();
    assert!(spans.is_empty(), "exported with tracing off: {spans:#?}");
}

#[test]
fn a_bad_otel_value_is_one_line_and_exit_2() {
    let cases: HashMap<&str, [(&str, &str); 2]> = HashMap::from([
        (
            "OTEL_TRACES_SAMPLER",
            [
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_TRACES_SAMPLER", "sometimes"),
            ],
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                ("OTEL_SERVICE_NAME", "x"),
            ],
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            [
                ("OTEL_TRACES_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        ),
    ]);
    for (variable, env) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
        for (key, _) in std::env::vars() {
            if key.starts_with("GUBER_") || key.starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        let output = command
            .arg("--grpc-address=127.0.0.1:0")
            .arg("--http-address=127.0.0.1:0")
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{variable}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{variable}: {stderr}");
        assert!(
            stderr.starts_with(&format!("invalid configuration: {variable} = '")),
            "{stderr}"
        );
    }
}
