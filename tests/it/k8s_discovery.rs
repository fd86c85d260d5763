//! Kubernetes discovery against a fake Kubernetes API server on 127.0.0.1.
//!
//! The fake serves list and watch (`?watch=true`: newline-delimited watch events from a resource
//! version, `410 Gone` as an `ERROR` event for a version it has forgotten) of EndpointSlices and
//! Pods in one namespace, filtered by an equality label selector. The nodes reach it through a
//! kubeconfig file (`GUBER_K8S_KUBECONFIG`, plain HTTP on loopback). Three nodes share one gRPC
//! port on 127.0.0.1, .2 and .3, as pods of a Deployment share their container port.
//!
//! Every wait is bounded and polls every 50 ms; every watch stream ends by itself after 30 s.

use crate::common;
use crate::support_etcd::eventually;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ringlimit::config::server_config_from_args;
use ringlimit::server::{self, RunningServer};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const NAMESPACE: &str = "ringlimit-test";
const SERVICE: &str = "ringlimit";
/// How long a watch stream stays open at most.
const WATCH_LIFETIME: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Slices,
    Endpoints,
    Pods,
}

struct Logged {
    rv: u64,
    kind: Kind,
    event: &'static str,
    object: Value,
}

#[derive(Default)]
struct FakeState {
    rv: u64,
    slices: BTreeMap<String, Value>,
    endpoints: BTreeMap<String, Value>,
    pods: BTreeMap<String, Value>,
    log: Vec<Logged>,
    /// Watches from a resource version below this get `410 Gone`.
    oldest: u64,
    /// While set, lists and watches answer 500.
    failing: bool,
    lists: usize,
    /// Watch requests answered with a stream.
    watches: usize,
}

#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
    changed: watch::Sender<u64>,
    drops: watch::Sender<u64>,
}

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn upsert(&self, kind: Kind, name: &str, mut object: Value) {
        let rv = {
            let mut state = self.lock();
            state.rv += 1;
            let rv = state.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let map = match kind {
                Kind::Slices => &mut state.slices,
                Kind::Endpoints => &mut state.endpoints,
                Kind::Pods => &mut state.pods,
            };
            let event = if map.insert(name.to_string(), object.clone()).is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            state.log.push(Logged {
                rv,
                kind,
                event,
                object,
            });
            rv
        };
        self.changed.send_replace(rv);
    }

    fn delete(&self, kind: Kind, name: &str) {
        let rv = {
            let mut state = self.lock();
            state.rv += 1;
            let rv = state.rv;
            let map = match kind {
                Kind::Slices => &mut state.slices,
                Kind::Endpoints => &mut state.endpoints,
                Kind::Pods => &mut state.pods,
            };
            let Some(mut object) = map.remove(name) else {
                return;
            };
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            state.log.push(Logged {
                rv,
                kind,
                event: "DELETED",
                object,
            });
            rv
        };
        self.changed.send_replace(rv);
    }

    /// Closes every open watch stream (the server side of a dropped connection).
    fn drop_watches(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    /// Forgets every resource version so far (etcd compaction) and drops the watches: the
    /// watchers' next watch gets `410 Gone` and must list again.
    fn expire(&self) {
        {
            // Writes to other objects moved the version on, then history was compacted.
            let mut state = self.lock();
            state.rv += 1;
            state.oldest = state.rv;
        }
        self.drop_watches();
    }

    fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    fn lists(&self) -> usize {
        self.lock().lists
    }

    fn watches(&self) -> usize {
        self.lock().watches
    }
}

fn labels_match(object: &Value, selector: Option<&str>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| match term.split_once('=') {
        Some((key, value)) => object["metadata"]["labels"][key].as_str() == Some(value),
        None => false,
    })
}

fn line(value: &Value) -> Bytes {
    let mut text = value.to_string();
    text.push('\n');
    Bytes::from(text)
}

async fn serve(
    fake: Fake,
    kind: Kind,
    namespace: String,
    query: HashMap<String, String>,
) -> Response {
    if namespace != NAMESPACE {
        return (StatusCode::NOT_FOUND, "unknown namespace").into_response();
    }
    let selector = query.get("labelSelector").cloned();
    if std::env::var_os("FAKE_K8S_TRACE").is_some() {
        eprintln!("fake api: {kind:?} {query:?}");
    }
    let watching = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let (failing, oldest) = {
        let state = fake.lock();
        (state.failing, state.oldest)
    };
    if failing {
        let status = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"etcdserver: request timed out","reason":"InternalError","code":500});
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(status)).into_response();
    }
    if !watching {
        let mut state = fake.lock();
        state.lists += 1;
        let map = match kind {
            Kind::Slices => &state.slices,
            Kind::Endpoints => &state.endpoints,
            Kind::Pods => &state.pods,
        };
        let items: Vec<Value> = map
            .values()
            .filter(|o| labels_match(o, selector.as_deref()))
            .cloned()
            .collect();
        let (api_version, list_kind) = match kind {
            Kind::Slices => ("discovery.k8s.io/v1", "EndpointSliceList"),
            Kind::Endpoints => ("v1", "EndpointsList"),
            Kind::Pods => ("v1", "PodList"),
        };
        let body = json!({"apiVersion": api_version, "kind": list_kind,
            "metadata": {"resourceVersion": state.rv.to_string()}, "items": items});
        return axum::Json(body).into_response();
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    if from < oldest {
        let gone = json!({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},
            "status":"Failure","message":"too old resource version","reason":"Expired","code":410}});
        let _ = sender.try_send(Ok(line(&gone)));
    } else {
        let mut changed = fake.changed.subscribe();
        let mut drops = fake.drops.subscribe();
        // Counted once subscribed, so a watch counted after a drop is not ended by it.
        fake.lock().watches += 1;
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(WATCH_LIFETIME);
            tokio::pin!(deadline);
            let mut last = from;
            loop {
                let lines: Vec<(u64, Bytes)> = {
                    let state = fake.lock();
                    state
                        .log
                        .iter()
                        .filter(|e| e.kind == kind && e.rv > last)
                        .filter(|e| labels_match(&e.object, selector.as_deref()))
                        .map(|e| (e.rv, line(&json!({"type": e.event, "object": e.object}))))
                        .collect()
                };
                for (rv, bytes) in lines {
                    if sender.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                    last = rv;
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = drops.changed() => return,
                    _ = sender.closed() => return,
                    _ = &mut deadline => return,
                }
            }
        });
    }
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(ReceiverStream::new(receiver)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The fake API server and the kubeconfig that points at it.
struct FakeApi {
    fake: Fake,
    kubeconfig: tempfile::NamedTempFile,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApi {
    async fn start() -> Self {
        let (changed, _) = watch::channel(0);
        let (drops, _) = watch::channel(0);
        let fake = Fake {
            state: Arc::new(Mutex::new(FakeState::default())),
            changed,
            drops,
        };
        let app = Router::new()
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                get(
                    |State(fake): State<Fake>,
                     Path(namespace): Path<String>,
                     Query(query): Query<HashMap<String, String>>| {
                        serve(fake, Kind::Slices, namespace, query)
                    },
                ),
            )
            .route(
                "/api/v1/namespaces/{namespace}/endpoints",
                get(
                    |State(fake): State<Fake>,
                     Path(namespace): Path<String>,
                     Query(query): Query<HashMap<String, String>>| {
                        serve(fake, Kind::Endpoints, namespace, query)
                    },
                ),
            )
            .route(
                "/api/v1/namespaces/{namespace}/pods",
                get(
                    |State(fake): State<Fake>,
                     Path(namespace): Path<String>,
                     Query(query): Query<HashMap<String, String>>| {
                        serve(fake, Kind::Pods, namespace, query)
                    },
                ),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let address = listener.local_addr().expect("local address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{address}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {NAMESPACE}\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: test-token\n"
        );
        std::fs::write(kubeconfig.path(), text).expect("write the kubeconfig");
        Self {
            fake,
            kubeconfig,
            task,
        }
    }

    fn kubeconfig(&self) -> String {
        self.kubeconfig.path().display().to_string()
    }

    /// One EndpointSlice of the Service with one endpoint per `(ip, ready)`.
    fn set_slice(&self, name: &str, port: u16, endpoints: &[(&str, bool)]) {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(ip, ready)| json!({"addresses": [ip], "conditions": {"ready": ready}}))
            .collect();
        let object = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": SERVICE, "app": "ringlimit"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
        });
        self.fake.upsert(Kind::Slices, name, object);
    }

    /// A v1 Endpoints object labelled like Gubernator's Service (`app=gubernator`).
    fn set_endpoints(&self, name: &str, port: u16, ready: &[&str], not_ready: &[&str]) {
        let addresses =
            |ips: &[&str]| -> Vec<Value> { ips.iter().map(|ip| json!({"ip": ip})).collect() };
        let object = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "gubernator"}},
            "subsets": [{"addresses": addresses(ready), "notReadyAddresses": addresses(not_ready),
                "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}]}],
        });
        self.fake.upsert(Kind::Endpoints, name, object);
    }

    fn set_pod(&self, name: &str, ip: &str, ready: bool) {
        let object = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "ringlimit"}},
            "spec": {"containers": [{"name": "ringlimit"}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        self.fake.upsert(Kind::Pods, name, object);
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gRPC port free on 127.0.0.1, 127.0.0.2 and 127.0.0.3 alike.
fn shared_port() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = first.local_addr().expect("address").port();
        let others: Vec<_> = ["127.0.0.2", "127.0.0.3"]
            .iter()
            .map(|ip| TcpListener::bind((*ip, port)))
            .collect();
        if others.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no port free on 127.0.0.1-3");
}

async fn start_pod(api: &FakeApi, ip: &str, port: u16, mechanism: &[&str]) -> RunningServer {
    let mut args = vec![
        format!("--grpc-address={ip}:{port}"),
        format!("--http-address={ip}:0"),
        "--peer-discovery-type=k8s".to_string(),
        format!("--k8s-namespace={NAMESPACE}"),
        format!("--k8s-pod-ip={ip}"),
        format!("--k8s-pod-port={port}"),
        format!("--k8s-kubeconfig={}", api.kubeconfig()),
    ];
    args.extend(mechanism.iter().map(|a| a.to_string()));
    let config = server_config_from_args(args).expect("valid k8s configuration");
    server::start(&config).await.expect("node starts")
}

fn members(server: &RunningServer) -> BTreeSet<String> {
    server
        .node()
        .peers()
        .snapshot()
        .into_iter()
        .map(|peer| peer.grpc_address)
        .collect()
}

fn set(addresses: &[String]) -> BTreeSet<String> {
    addresses.iter().cloned().collect()
}

async fn all_agree(servers: &[&RunningServer], expected: &BTreeSet<String>, limit: Duration) {
    let agreed = eventually(limit, || async {
        servers.iter().all(|server| members(server) == *expected)
    })
    .await;
    let seen: Vec<_> = servers.iter().map(|server| members(server)).collect();
    assert!(
        agreed,
        "peer lists did not become {expected:?} within {limit:?}: {seen:?}"
    );
}

const SLICES: &[&str] = &["--k8s-service-name=ringlimit"];
const PODS: &[&str] = &["--k8s-watch-mechanism=pods", "--k8s-selector=app=ringlimit"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_pods_discover_each_other_through_endpointslices() {
    let api = FakeApi::start().await;
    let port = shared_port();
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let addresses: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    api.set_slice("ringlimit-abc", port, &[(ips[0], true), (ips[1], true)]);
    api.set_slice(
        "ringlimit-def",
        port,
        &[(ips[2], true), ("10.255.0.9", false)],
    );
    // An object of another Service is not ours.
    api.fake.upsert(
        Kind::Slices,
        "other",
        json!({"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
            "metadata":{"name":"other","namespace":NAMESPACE,"labels":{"kubernetes.io/service-name":"other"}},
            "addressType":"IPv4","endpoints":[{"addresses":["127.0.0.9"]}]}),
    );
    let a = start_pod(&api, ips[0], port, SLICES).await;
    let b = start_pod(&api, ips[1], port, SLICES).await;
    let c = start_pod(&api, ips[2], port, SLICES).await;
    let nodes = [&a, &b, &c];
    // The first list is in place when start returns.
    for node in nodes {
        assert_eq!(members(node), set(&addresses));
        let health = node.node().health_check().expect("healthy");
        assert_eq!(health.peer_count, 3);
        assert_eq!(health.advertise_address, node.grpc_address().to_string());
    }
    // The cluster answers: a key owned by another node is forwarded and decided.
    let mut client = common::grpc_client(&a).await;
    for i in 0..6 {
        let answer = client
            .get_rate_limits(ringlimit::proto::GetRateLimitsReq {
                requests: vec![common::token(&format!("k8s-{i}"), 1, 5, 60_000)],
            })
            .await
            .expect("answered")
            .into_inner();
        assert_eq!(answer.responses[0].error, "", "{answer:?}");
        assert_eq!(answer.responses[0].remaining, 4);
    }
    let before = api.fake.lists();
    // A pod becomes not ready, then goes away: followed within a second.
    api.set_slice("ringlimit-def", port, &[(ips[2], false)]);
    all_agree(&[&a, &b], &set(&addresses[..2]), Duration::from_secs(1)).await;
    api.set_slice("ringlimit-def", port, &[(ips[2], true)]);
    all_agree(&nodes, &set(&addresses), Duration::from_secs(1)).await;
    api.set_slice("ringlimit-abc", port, &[(ips[0], true)]);
    all_agree(
        &[&a, &c],
        &set(&[addresses[0].clone(), addresses[2].clone()]),
        Duration::from_secs(1),
    )
    .await;
    api.fake.delete(Kind::Slices, "ringlimit-def");
    all_agree(&[&a], &set(&addresses[..1]), Duration::from_secs(1)).await;
    assert_eq!(
        api.fake.lists(),
        before,
        "events came by watch, not by listing again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_are_followed_as_they_come_go_and_turn_unready() {
    let api = FakeApi::start().await;
    let port = shared_port();
    let a_address = format!("127.0.0.1:{port}");
    api.set_pod("ringlimit-a", "127.0.0.1", true);
    api.set_pod("ringlimit-b", "10.255.0.2", true);
    let node = start_pod(&api, "127.0.0.1", port, PODS).await;
    let b = format!("10.255.0.2:{port}");
    let c = format!("10.255.0.3:{port}");
    assert_eq!(members(&node), set(&[a_address.clone(), b.clone()]));
    api.set_pod("ringlimit-c", "10.255.0.3", true);
    all_agree(
        &[&node],
        &set(&[a_address.clone(), b.clone(), c.clone()]),
        Duration::from_secs(1),
    )
    .await;
    api.set_pod("ringlimit-b", "10.255.0.2", false);
    all_agree(
        &[&node],
        &set(&[a_address.clone(), c.clone()]),
        Duration::from_secs(1),
    )
    .await;
    api.fake.delete(Kind::Pods, "ringlimit-c");
    all_agree(
        &[&node],
        &set(std::slice::from_ref(&a_address)),
        Duration::from_secs(1),
    )
    .await;
    // A pod of another app is ignored.
    api.fake.upsert(
        Kind::Pods,
        "other",
        json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"other","namespace":NAMESPACE,
            "labels":{"app":"other"}},"spec":{"containers":[{"name":"x"}]},
            "status":{"phase":"Running","podIP":"10.255.0.9","conditions":[{"type":"Ready","status":"True"}]}}),
    );
    api.set_pod("ringlimit-b", "10.255.0.2", true);
    all_agree(
        &[&node],
        &set(&[a_address.clone(), b.clone()]),
        Duration::from_secs(1),
    )
    .await;
}

/// The environment of Gubernator's older Helm chart: `endpoints` by `GUBER_K8S_ENDPOINTS_SELECTOR`.
const OLDER_CHART: &[&str] = &[
    "--k8s-endpoints-selector=app=gubernator",
    "--k8s-watch-mechanism=endpoints",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_older_chart_watches_v1_endpoints_by_selector() {
    let api = FakeApi::start().await;
    let port = shared_port();
    let me = format!("127.0.0.1:{port}");
    let b = format!("10.255.0.2:{port}");
    api.set_endpoints(
        "gubernator",
        port,
        &["127.0.0.1", "10.255.0.2"],
        &["10.255.0.3"],
    );
    let node = start_pod(&api, "127.0.0.1", port, OLDER_CHART).await;
    assert_eq!(members(&node), set(&[me.clone(), b.clone()]));
    api.set_endpoints(
        "gubernator",
        port,
        &["127.0.0.1", "10.255.0.2", "10.255.0.3"],
        &[],
    );
    let c = format!("10.255.0.3:{port}");
    all_agree(
        &[&node],
        &set(&[me.clone(), b.clone(), c.clone()]),
        Duration::from_secs(1),
    )
    .await;
    api.set_endpoints(
        "gubernator",
        port,
        &["127.0.0.1", "10.255.0.3"],
        &["10.255.0.2"],
    );
    all_agree(
        &[&node],
        &set(&[me.clone(), c.clone()]),
        Duration::from_secs(1),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_watch_and_410_gone_recover_and_keep_the_last_list() {
    let api = FakeApi::start().await;
    let port = shared_port();
    let me = format!("127.0.0.1:{port}");
    let b = format!("10.255.0.2:{port}");
    let c = format!("10.255.0.3:{port}");
    api.set_slice("s1", port, &[("127.0.0.1", true), ("10.255.0.2", true)]);
    let node = start_pod(&api, "127.0.0.1", port, SLICES).await;
    let both = set(&[me.clone(), b.clone()]);
    assert_eq!(members(&node), both);

    // The server closes the stream: the watcher resumes from its resource version.
    let lists = api.fake.lists();
    let watches = api.fake.watches();
    api.fake.drop_watches();
    // The change must reach a resumed watch, not the one being dropped.
    common::wait_until(
        "the watcher to watch again",
        Duration::from_secs(5),
        || async { api.fake.watches() > watches },
    )
    .await;
    api.set_slice("s2", port, &[("10.255.0.3", true)]);
    all_agree(
        &[&node],
        &set(&[me.clone(), b.clone(), c.clone()]),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(api.fake.lists(), lists, "a resumed watch needs no new list");

    // 410 Gone: the watcher lists again (after its backoff); the list holds meanwhile.
    let three = set(&[me.clone(), b.clone(), c.clone()]);
    api.fake.expire();
    let mut kept = true;
    let relisted = eventually(Duration::from_secs(10), || {
        kept &= members(&node) == three;
        async { api.fake.lists() > lists }
    })
    .await;
    assert!(relisted, "the watcher listed again after 410 Gone");
    assert!(kept, "the last list held until the new list was complete");
    assert_eq!(members(&node), three);
    api.fake.delete(Kind::Slices, "s2");
    all_agree(&[&node], &both, Duration::from_secs(1)).await;

    // The API fails for a while: the last list stays, errors are counted, health holds.
    let errors = || {
        common::metric_sum(
            &node.node().render_metrics(),
            "ringlimit_kubernetes_watch_errors_total",
        )
    };
    assert!(errors() >= 1.0, "the 410 was counted");
    let before = errors();
    api.fake.set_failing(true);
    api.fake.drop_watches();
    let counted = eventually(Duration::from_secs(5), || async { errors() > before }).await;
    assert!(counted, "watch errors are counted");
    // Not a wait for something: the list must stay as it was for a while of failures.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        members(&node),
        both,
        "the last list is kept while the API fails"
    );
    assert!(node.node().health_check().is_ok(), "health does not flap");
    api.set_slice("s1", port, &[("127.0.0.1", true), ("10.255.0.3", true)]);
    api.fake.set_failing(false);
    // Kube's backoff reaches 3.2 s (+ jitter) after the failures above.
    all_agree(
        &[&node],
        &set(&[me.clone(), c.clone()]),
        Duration::from_secs(15),
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_api_server_does_not_stop_the_start() {
    let unused = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address: SocketAddr = unused.local_addr().expect("address");
    drop(unused);
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        kubeconfig.path(),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster:\n    server: http://{address}\n\
             contexts:\n- name: x\n  context:\n    cluster: x\n    user: x\ncurrent-context: x\nusers:\n- name: x\n  user: {{}}\n"
        ),
    )
    .expect("write");
    let config = server_config_from_args([
        "--grpc-address=127.0.0.1:0".to_string(),
        "--http-address=127.0.0.1:0".to_string(),
        "--peer-discovery-type=k8s".to_string(),
        "--k8s-pod-ip=127.0.0.1".to_string(),
        "--k8s-pod-port=1051".to_string(),
        "--k8s-service-name=ringlimit".to_string(),
        format!("--k8s-kubeconfig={}", kubeconfig.path().display()),
    ])
    .expect("valid");
    let started = tokio::time::Instant::now();
    let node = server::start(&config)
        .await
        .expect("starts without the API");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(members(&node), set(&["127.0.0.1:1051".to_string()]));
}

fn ringlimit_binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command.stdin(std::process::Stdio::null());
    command
}

#[test]
fn k8s_settings_errors_name_the_variable_and_exit_2() {
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "GUBER_K8S_POD_IP"),
        (&[("GUBER_K8S_POD_IP", "pod-7")], "GUBER_K8S_POD_IP"),
        (
            &[
                ("GUBER_K8S_POD_IP", "10.0.0.7"),
                ("GUBER_K8S_WATCH_MECHANISM", "pods"),
            ],
            "GUBER_K8S_SELECTOR",
        ),
        (
            &[
                ("GUBER_K8S_POD_IP", "10.0.0.7"),
                ("GUBER_K8S_WATCH_MECHANISM", "endpointslices"),
            ],
            "GUBER_K8S_SERVICE_NAME",
        ),
        (
            &[
                ("GUBER_K8S_POD_IP", "10.0.0.7"),
                ("GUBER_K8S_WATCH_MECHANISM", "gossip"),
            ],
            "GUBER_K8S_WATCH_MECHANISM",
        ),
    ];
    for (env, variable) in cases {
        let mut command = ringlimit_binary();
        command
            .env("GUBER_PEER_DISCOVERY_TYPE", "k8s")
            .env("GUBER_GRPC_ADDRESS", "127.0.0.1:0")
            .env("GUBER_HTTP_ADDRESS", "127.0.0.1:0")
            .env("GUBER_K8S_POD_PORT", "1051");
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().expect("the binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?}: {stderr}");
        let lines: Vec<_> = stderr.lines().filter(|line| !line.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{env:?}: {stderr}");
        assert!(lines[0].contains(variable), "{env:?}: {stderr}");
    }
}

#[test]
fn serve_help_lists_k8s() {
    let output = ringlimit_binary()
        .args(["serve", "--help"])
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for text in [
        "k8s",
        "GUBER_K8S_POD_IP",
        "GUBER_K8S_WATCH_MECHANISM",
        "endpointslices",
    ] {
        assert!(help.contains(text), "{text} missing from serve --help");
    }
}
