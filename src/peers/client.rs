//! Connections to the other peers: one lazily connected gRPC channel and one batcher (with its
//! timer task) per peer, created on first use and dropped when the peer leaves the cluster; and the one registry
//! of channels the other node-to-node clients (handoff, the admin fan-out, `/allow`'s records)
//! share, pruned by the same rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tonic::transport::Endpoint;

use crate::batching::budget::MessageBudget;
use crate::batching::{BatchConfig, ForwardError, PeerBatcher, PeerCallMetrics};
use crate::metrics::{DropReason, DroppedMessage, Metrics};
use crate::peer_auth::{self, AttachSecret, PeerChannel};
use crate::peer_transport::{PeerCallChannel, PeerTransport, TransportOptions};
use crate::peer_unary::PeerUnaryClient;
use crate::peers::liveness::{Admission, Failure, LivenessConfig, MonotonicClock, PeerLiveness};
use crate::proto::{self, peers_v1_client::PeersV1Client};
use crate::telemetry::{self, PeerCall};
use tracing::Instrument;

/// How peer clients are built.
#[derive(Debug, Clone)]
pub struct PeerClientOptions {
    /// Batching policy for every peer.
    pub batch: BatchConfig,
    /// Timeout of one peer call (`GUBER_BATCH_TIMEOUT`).
    pub timeout: Duration,
    /// The largest message a peer call may carry.
    pub max_message_size: usize,
    /// When a peer is judged down and left alone.
    pub liveness: LivenessConfig,
    /// TLS for peer calls (`None`: plaintext).
    pub tls: Option<crate::tls::connector::TlsConnector>,
    /// The peer secret sent on every call to another node (`GUBER_PEER_SECRET`), if configured.
    pub secret: Option<crate::peer_auth::PeerSecret>,
}

/// The clients of every peer this node forwards to, keyed by gRPC address.
pub struct PeerClients {
    options: PeerClientOptions,
    metrics: Metrics,
    clients: RwLock<HashMap<String, PeerClient>>,
    channels: RwLock<HashMap<ChannelKey, PeerChannel>>,
    liveness: Arc<PeerLiveness>,
    /// The peers' batcher timer tasks, joined by [`PeerClients::close`].
    tasks: Mutex<JoinSet<()>>,
    /// The runtime the clients were created on, entered whenever a channel or batching task is
    /// created: a call served on a gRPC runtime of its own (`crate::grpc_runtimes`) may be the
    /// first to need a peer, and what it starts must outlive that runtime.
    runtime: Option<tokio::runtime::Handle>,
}

/// A shared channel: the peer's address, and how it connects (connect timeout, `TCP_NODELAY`).
type ChannelKey = (String, Duration, bool);

/// A peer address that is not a valid URI authority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer address {address}: {reason}")]
pub struct InvalidAddress {
    /// The address.
    pub address: String,
    /// Why it is invalid.
    pub reason: String,
}

/// One peer's connection: direct calls, and the batcher of forwarded items.
#[derive(Clone)]
struct PeerClient {
    grpc: PeersV1Client<PeerCallChannel>,
    batcher: PeerBatcher,
}

impl PeerClients {
    /// An empty set of clients.
    pub fn new(options: PeerClientOptions, metrics: Metrics) -> Self {
        let liveness = Arc::new(PeerLiveness::new(
            options.liveness.clone(),
            Arc::new(MonotonicClock::default()),
        ));
        Self {
            options,
            metrics,
            clients: RwLock::new(HashMap::new()),
            channels: RwLock::new(HashMap::new()),
            liveness,
            tasks: Mutex::new(JoinSet::new()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// The byte budget of one message to a peer (peers share `GUBER_MAX_REQUEST_SIZE`).
    pub fn message_budget(&self) -> MessageBudget {
        MessageBudget::for_limit(self.options.max_message_size)
    }

    /// Which peers are down (calls to them fail at once with `ForwardError::PeerDown`).
    pub fn liveness(&self) -> &PeerLiveness {
        &self.liveness
    }

    /// Fails at once when `address` is marked down.
    fn admit(&self, address: &str) -> Result<(), ForwardError> {
        match self.liveness.admit(address) {
            Admission::Up | Admission::Probe => Ok(()),
            Admission::Down(down) => Err(ForwardError::PeerDown(down.to_string())),
        }
    }

    /// Records the outcome of a direct call to `address`.
    fn observe<T>(&self, address: &str, outcome: &Result<T, ForwardError>) {
        observe(&self.liveness, address, outcome.as_ref().map(|_| ()));
    }

    /// Forwards `item` to the peer at `address` and waits for its answer.
    pub async fn forward(
        &self,
        address: &str,
        item: proto::RateLimitReq,
        no_batching: bool,
    ) -> Result<proto::RateLimitResp, ForwardError> {
        self.admit(address)?;
        let client = self.client(address)?;
        client.batcher.forward(item, no_batching).await
    }

    /// Sends `items` to the peer at `address` in one unbatched `GetPeerRateLimits` call, bounded by
    /// `timeout`.
    pub async fn get_peer_rate_limits(
        &self,
        address: &str,
        items: Vec<proto::RateLimitReq>,
        timeout: Duration,
    ) -> Result<Vec<proto::RateLimitResp>, ForwardError> {
        self.admit(address)?;
        let mut grpc = self.client(address)?.grpc;
        let sent = items.len();
        let span = telemetry::peer_span(PeerCall::Forward, address, sent, None, []);
        let call = grpc
            .get_peer_rate_limits(proto::GetPeerRateLimitsReq { requests: items })
            .instrument(span.clone());
        let outcome = match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(ForwardError::Timeout(timeout)),
            Ok(Err(status)) => Err(ForwardError::from(status)),
            Ok(Ok(response)) => proto::one_answer_per_item(
                response.into_inner().rate_limits,
                sent,
                ForwardError::mismatch,
            ),
        };
        if let Err(error) = &outcome {
            telemetry::record_error(&span, error);
        }
        self.observe(address, &outcome);
        outcome
    }

    /// Sends GLOBAL state to the peer at `address` (`UpdatePeerGlobals`), bounded by `timeout`.
    pub async fn update_peer_globals(
        &self,
        address: &str,
        globals: Vec<proto::UpdatePeerGlobal>,
        timeout: Duration,
    ) -> Result<(), ForwardError> {
        self.admit(address)?;
        let mut grpc = self.client(address)?.grpc;
        let span = telemetry::peer_span(PeerCall::GlobalSync, address, globals.len(), None, []);
        let call = grpc
            .update_peer_globals(proto::UpdatePeerGlobalsReq { globals })
            .instrument(span.clone());
        let outcome = match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(ForwardError::Timeout(timeout)),
            Ok(Err(status)) => Err(ForwardError::from(status)),
            Ok(Ok(_)) => Ok(()),
        };
        if let Err(error) = &outcome {
            telemetry::record_error(&span, error);
        }
        self.observe(address, &outcome);
        outcome
    }

    /// Drops the clients of peers not in `addresses` (their queued items are still sent).
    pub fn retain(&self, addresses: &[&str]) {
        let mut clients = match self.clients.write() {
            Ok(clients) => clients,
            Err(poisoned) => poisoned.into_inner(),
        };
        clients.retain(|address, _| addresses.contains(&address.as_str()));
        drop(clients);
        let mut channels = match self.channels.write() {
            Ok(channels) => channels,
            Err(poisoned) => poisoned.into_inner(),
        };
        channels.retain(|(address, _, _), _| addresses.contains(&address.as_str()));
        drop(channels);
        self.liveness.retain(|peer| addresses.contains(&peer));
        // Forget the batching tasks of departed peers that have finished.
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
    }

    /// Drops every client and channel and waits (at most `within`) for the batching tasks to
    /// answer what they hold and end; the ones still running then are aborted. For shutdown, once
    /// nothing forwards any more.
    pub async fn close(&self, within: Duration) {
        match self.clients.write() {
            Ok(mut clients) => clients.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
        match self.channels.write() {
            Ok(mut channels) => channels.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        let joined =
            tokio::time::timeout(within, async { while tasks.join_next().await.is_some() {} })
                .await;
        if joined.is_err() {
            tracing::warn!(
                tasks = tasks.len(),
                "peer batching tasks still running at shutdown; aborted"
            );
            tasks.shutdown().await;
        }
    }

    /// The shared, lazily connected channel to the node at `address` (see
    /// [`PeerClients::connect_lazy`]), connecting within `connect_timeout`, with `TCP_NODELAY`
    /// when `nodelay`. Every node-to-node client but forwarding's own uses it; it is dropped with
    /// the peer's other clients when the peer leaves.
    pub fn channel(
        &self,
        address: &str,
        connect_timeout: Duration,
        nodelay: bool,
    ) -> Result<PeerChannel, InvalidAddress> {
        let key = (address.to_string(), connect_timeout, nodelay);
        if let Ok(channels) = self.channels.read()
            && let Some(channel) = channels.get(&key)
        {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| InvalidAddress {
                address: address.to_string(),
                reason: error.to_string(),
            })?
            .connect_timeout(connect_timeout);
        if nodelay {
            endpoint = endpoint.tcp_nodelay(true);
        }
        let mut channels = match self.channels.write() {
            Ok(channels) => channels,
            Err(poisoned) => poisoned.into_inner(),
        };
        let _main_runtime = self.runtime.as_ref().map(|runtime| runtime.enter());
        let channel = channels
            .entry(key)
            .or_insert_with(|| self.connect_lazy(endpoint));
        Ok(channel.clone())
    }

    /// The number of peers with a client.
    pub fn len(&self) -> usize {
        match self.clients.read() {
            Ok(clients) => clients.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Whether no peer has a client yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn client(&self, address: &str) -> Result<PeerClient, ForwardError> {
        if let Ok(clients) = self.clients.read()
            && let Some(client) = clients.get(address)
        {
            return Ok(client.clone());
        }
        let mut clients = match self.clients.write() {
            Ok(clients) => clients,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(client) = clients.get(address) {
            return Ok(client.clone());
        }
        let _main_runtime = self.runtime.as_ref().map(|runtime| runtime.enter());
        let client = self.connect(address)?;
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// A lazily connected channel through `endpoint` over the peers' transport: TLS (mTLS when
    /// configured) or plaintext, with the peer secret (when configured) on every call. Every
    /// ringlimit-to-ringlimit client uses it (PeersV1 and the `ringlimit.v1` services), so a TLS
    /// cluster speaks TLS on every call between nodes and every peer RPC carries the secret.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> PeerChannel {
        let channel = match &self.options.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.clone()),
            None => endpoint.connect_lazy(),
        };
        peer_auth::peer_channel(channel, self.options.secret.clone())
    }

    fn connect(&self, address: &str) -> Result<PeerClient, ForwardError> {
        let transport = TransportOptions::new(self.options.timeout, self.options.tls.clone());
        let transport = PeerTransport::new(address, transport)
            .map_err(|error| ForwardError::Unavailable(format!("invalid address: {error}")))?;
        // Forwarded batches go in one piece (`peer_unary`); the other peer calls through tonic.
        let forwarding = PeerUnaryClient::new(
            transport.clone(),
            AttachSecret::new(self.options.secret.clone()),
            self.options.max_message_size,
        );
        let channel = transport.with_secret(self.options.secret.clone());
        let client = PeersV1Client::new(channel)
            .max_decoding_message_size(self.options.max_message_size)
            .max_encoding_message_size(self.options.max_message_size);
        let metrics = PeerCallMetrics {
            items: self.metrics.forwarded_items.with_label_values(&[address]),
            calls: self.metrics.peer_calls.with_label_values(&[address]),
            items_per_call: self.metrics.peer_call_items.with_label_values(&[address]),
            duration: self
                .metrics
                .batch_send_duration_seconds
                .with_label_values(&[address]),
            duration_summary: self.metrics.batch_send_duration.with_label_value(address),
            queue_length: self
                .metrics
                .batch_queue_length
                .with_label_values(&[address]),
            oversized: self
                .metrics
                .peer_items_dropped(DroppedMessage::Forward, DropReason::Oversized),
        };
        let liveness = Arc::clone(&self.liveness);
        let peer = address.to_string();
        let batcher = PeerBatcher::spawn_observed(
            address,
            forwarding,
            self.options.batch.clone(),
            self.options.timeout,
            metrics,
            Arc::new(move |outcome| observe(&liveness, &peer, outcome)),
            &mut lock(&self.tasks),
        )
        .map_err(|error| ForwardError::Unavailable(format!("invalid batching: {error}")))?;
        Ok(PeerClient {
            grpc: client,
            batcher,
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Tells `liveness` what a call's outcome says about the peer. Failures that are about the
/// request or this node (a full queue, an overloaded or refusing peer) say nothing about whether
/// the peer is alive.
fn observe(liveness: &PeerLiveness, address: &str, outcome: Result<(), &ForwardError>) {
    match outcome {
        Ok(()) => liveness.on_success(address),
        Err(error) => {
            if let Some(failure) = liveness_failure(error) {
                liveness.on_failure(address, failure, &error.to_string());
            }
        }
    }
}

/// How a failed call counts towards marking its peer down, if at all.
pub fn liveness_failure(error: &ForwardError) -> Option<Failure> {
    match error {
        ForwardError::Unavailable(_) => Some(Failure::Connection),
        ForwardError::Timeout(_) | ForwardError::Mismatch { .. } => Some(Failure::Call),
        ForwardError::Status { code, .. } => match code {
            tonic::Code::ResourceExhausted
            | tonic::Code::InvalidArgument
            | tonic::Code::OutOfRange
            | tonic::Code::Cancelled => None,
            _ => Some(Failure::Call),
        },
        ForwardError::QueueFull
        | ForwardError::Closed
        | ForwardError::PeerDown(_)
        | ForwardError::TooLarge { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peers_v1_server::{PeersV1, PeersV1Server};
    use tokio::net::TcpListener;
    use tokio::sync::Semaphore;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    /// Answers every item UNDER_LIMIT, each call once it gets a permit from `gate`; records the
    /// keys of every call as it arrives.
    #[derive(Clone)]
    struct GatedOwner {
        gate: Arc<Semaphore>,
        arrived: Arc<Mutex<Vec<Vec<String>>>>,
    }

    #[tonic::async_trait]
    impl PeersV1 for GatedOwner {
        async fn get_peer_rate_limits(
            &self,
            request: Request<proto::GetPeerRateLimitsReq>,
        ) -> Result<Response<proto::GetPeerRateLimitsResp>, Status> {
            let keys = request
                .get_ref()
                .requests
                .iter()
                .map(|item| item.unique_key.clone())
                .collect();
            lock(&self.arrived).push(keys);
            let permit = self.gate.acquire().await;
            drop(permit);
            let rate_limits = request
                .into_inner()
                .requests
                .iter()
                .map(|_| proto::RateLimitResp::default())
                .collect();
            Ok(Response::new(proto::GetPeerRateLimitsResp { rate_limits }))
        }

        async fn update_peer_globals(
            &self,
            _request: Request<proto::UpdatePeerGlobalsReq>,
        ) -> Result<Response<proto::UpdatePeerGlobalsResp>, Status> {
            Ok(Response::new(proto::UpdatePeerGlobalsResp {}))
        }
    }

    fn item(key: &str) -> proto::RateLimitReq {
        proto::RateLimitReq {
            name: "n".into(),
            unique_key: key.into(),
            hits: 1,
            limit: 10,
            duration: 60_000,
            ..Default::default()
        }
    }

    /// Batches whose task cannot run (the batcher's runtime is gone) give their call slots back,
    /// and starting them does not deadlock when a dropped batch's slot releases the next one.
    #[tokio::test]
    async fn batches_dropped_with_their_runtime_give_their_slots_back() {
        let gate = Arc::new(Semaphore::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let owner = GatedOwner {
            gate: Arc::clone(&gate),
            arrived: Arc::default(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeersV1Server::new(owner))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        // The clients (and so the batcher) belong to a runtime that is shut down below.
        let batcher_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let options = PeerClientOptions {
            batch: BatchConfig {
                limit: 1,
                max_in_flight: 1,
                ..BatchConfig::default()
            },
            timeout: Duration::from_secs(5),
            max_message_size: 4 * 1024 * 1024,
            liveness: LivenessConfig::default(),
            tls: None,
            secret: None,
        };
        let clients = {
            let _entered = batcher_runtime.enter();
            let clients = PeerClients::new(options, Metrics::default());
            // Creates the batcher on that runtime.
            clients.client(&address).map(|_| ()).unwrap();
            Arc::new(clients)
        };
        batcher_runtime.shutdown_background();

        // An idle peer: the first item goes from this task and waits at the gate.
        let first = tokio::spawn({
            let (clients, address) = (Arc::clone(&clients), address.clone());
            async move { clients.forward(&address, item("a"), false).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Two more queue behind it, one batch each.
        let queued: Vec<_> = ["b", "c"]
            .into_iter()
            .map(|key| {
                let (clients, address) = (Arc::clone(&clients), address.clone());
                tokio::spawn(async move { clients.forward(&address, item(key), false).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        gate.add_permits(100);
        // The first answer releases "b"'s batch to a runtime that is gone: its task is dropped at
        // once, its slot comes back and releases "c"'s, dropped the same way.
        let bounded = Duration::from_secs(10);
        let answered = tokio::time::timeout(bounded, first).await.unwrap().unwrap();
        assert!(answered.is_ok(), "{answered:?}");
        for call in queued {
            let outcome = tokio::time::timeout(bounded, call)
                .await
                .expect("no deadlock")
                .unwrap();
            assert_eq!(outcome, Err(ForwardError::Closed));
        }
        // Every slot is back: the peer is idle again, and the next item goes from its caller.
        let next = tokio::time::timeout(bounded, clients.forward(&address, item("d"), false))
            .await
            .expect("the slot came back");
        assert!(next.is_ok(), "{next:?}");
    }

    /// A served [`GatedOwner`] with its gate closed, and clients of it that batch by `batch`.
    async fn gated_owner_and_clients(batch: BatchConfig) -> (GatedOwner, String, Arc<PeerClients>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let owner = GatedOwner {
            gate: Arc::new(Semaphore::new(0)),
            arrived: Arc::default(),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PeersV1Server::new(owner.clone()))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let options = PeerClientOptions {
            batch,
            timeout: Duration::from_secs(10),
            max_message_size: 4 * 1024 * 1024,
            liveness: LivenessConfig::default(),
            tls: None,
            secret: None,
        };
        let clients = Arc::new(PeerClients::new(options, Metrics::default()));
        (owner, address, clients)
    }

    /// Forwards `key` from a task of its own.
    fn forward(
        clients: &Arc<PeerClients>,
        address: &str,
        key: &str,
    ) -> tokio::task::JoinHandle<Result<proto::RateLimitResp, ForwardError>> {
        let (clients, address, item) = (Arc::clone(clients), address.to_string(), item(key));
        tokio::spawn(async move { clients.forward(&address, item, false).await })
    }

    /// Waits (at most 5 s) until the owner has seen `calls` calls, and returns their keys.
    async fn calls_arrived(owner: &GatedOwner, calls: usize) -> Vec<Vec<String>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let arrived = lock(&owner.arrived).clone();
            if arrived.len() >= calls || tokio::time::Instant::now() >= deadline {
                return arrived;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (at most 5 s) until `items` items are queued for the peer at `address`.
    async fn queued(clients: &PeerClients, address: &str, items: i64) {
        let gauge = clients
            .metrics
            .batch_queue_length
            .with_label_values(&[address]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while gauge.get() != items && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(gauge.get(), items, "items queued");
    }

    /// Lets every call through and checks that each of `callers` was answered.
    async fn answered(
        owner: &GatedOwner,
        callers: Vec<tokio::task::JoinHandle<Result<proto::RateLimitResp, ForwardError>>>,
    ) {
        owner.gate.add_permits(1000);
        for caller in callers {
            let outcome = tokio::time::timeout(Duration::from_secs(10), caller)
                .await
                .expect("answered")
                .unwrap();
            assert!(outcome.is_ok(), "{outcome:?}");
        }
    }

    /// The caller whose item starts a queue behind a slow call sends it when it is due, in a
    /// second call, without waiting for the first.
    #[tokio::test]
    async fn an_item_queued_behind_a_slow_call_goes_in_a_second_call_when_due() {
        let batch = BatchConfig {
            wait: Duration::from_millis(50),
            max_in_flight: 2,
            ..BatchConfig::default()
        };
        let (owner, address, clients) = gated_owner_and_clients(batch).await;
        let first = forward(&clients, &address, "a");
        assert_eq!(calls_arrived(&owner, 1).await, [["a"]]);
        let second = forward(&clients, &address, "b");
        assert_eq!(calls_arrived(&owner, 2).await, [["a"], ["b"]]);
        answered(&owner, vec![first, second]).await;
    }

    /// When the caller keeping a queue's time gives up before it is due, the items queued after
    /// its own still go when due (the timer task takes over), not only when the slow call ends.
    #[tokio::test]
    async fn a_queue_whose_keeper_gave_up_still_goes_when_due() {
        let batch = BatchConfig {
            wait: Duration::from_millis(300),
            max_in_flight: 2,
            ..BatchConfig::default()
        };
        let (owner, address, clients) = gated_owner_and_clients(batch).await;
        let first = forward(&clients, &address, "a");
        assert_eq!(calls_arrived(&owner, 1).await, [["a"]]);
        let keeper = forward(&clients, &address, "b");
        queued(&clients, &address, 1).await;
        keeper.abort();
        let _ = keeper.await;
        let after = forward(&clients, &address, "c");
        // "b" is not sent: its caller stopped listening.
        assert_eq!(calls_arrived(&owner, 2).await, [["a"], ["c"]]);
        answered(&owner, vec![first, after]).await;
    }

    /// An item that a batch released by its size could not take still goes when it is due (the
    /// timer task keeps its time: its caller found the queue started by another).
    #[tokio::test]
    async fn an_item_a_batch_left_behind_goes_when_due() {
        use prost::Message;
        let big = "c".repeat(300);
        let batch = BatchConfig {
            wait: Duration::from_millis(300),
            max_in_flight: 3,
            // "c" alone fills a batch: with "b" queued before it, "b" goes without it.
            max_bytes: crate::batching::budget::framed_len(item(&big).encoded_len()),
            ..BatchConfig::default()
        };
        let (owner, address, clients) = gated_owner_and_clients(batch).await;
        let first = forward(&clients, &address, "a");
        assert_eq!(calls_arrived(&owner, 1).await, [["a"]]);
        let second = forward(&clients, &address, "b");
        queued(&clients, &address, 1).await;
        let third = forward(&clients, &address, &big);
        let arrived = calls_arrived(&owner, 3).await;
        assert_eq!(arrived, [["a".to_string()], ["b".into()], [big]]);
        answered(&owner, vec![first, second, third]).await;
    }
}
