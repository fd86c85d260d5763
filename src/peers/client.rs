//! Connections to the other peers: one lazily connected gRPC channel and one batching task per
//! peer, created on first use and dropped when the peer leaves the cluster.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::batching::{BatchConfig, ForwardError, PeerBatcher, PeerCallMetrics};
use crate::metrics::Metrics;
use crate::proto::{self, peers_v1_client::PeersV1Client};

/// How peer clients are built.
#[derive(Debug, Clone)]
pub struct PeerClientOptions {
    /// Batching policy for every peer.
    pub batch: BatchConfig,
    /// Timeout of one peer call (`GUBER_BATCH_TIMEOUT`).
    pub timeout: Duration,
    /// The largest message a peer call may carry.
    pub max_message_size: usize,
    /// TLS for peer calls (`None`: plaintext).
    pub tls: Option<crate::tls::connector::TlsConnector>,
}

/// The clients of every peer this node forwards to, keyed by gRPC address.
pub struct PeerClients {
    options: PeerClientOptions,
    metrics: Metrics,
    clients: RwLock<HashMap<String, PeerClient>>,
}

/// One peer's connection: direct calls, and the batching task for forwarded items.
#[derive(Clone)]
struct PeerClient {
    grpc: PeersV1Client<Channel>,
    batcher: PeerBatcher,
}

impl PeerClients {
    /// An empty set of clients.
    pub fn new(options: PeerClientOptions, metrics: Metrics) -> Self {
        Self {
            options,
            metrics,
            clients: RwLock::new(HashMap::new()),
        }
    }

    /// Forwards `item` to the peer at `address` and waits for its answer.
    pub async fn forward(
        &self,
        address: &str,
        item: proto::RateLimitReq,
        no_batching: bool,
    ) -> Result<proto::RateLimitResp, ForwardError> {
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
        let mut grpc = self.client(address)?.grpc;
        let sent = items.len();
        let call = grpc.get_peer_rate_limits(proto::GetPeerRateLimitsReq { requests: items });
        let answers = tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ForwardError::Timeout(timeout))?
            .map_err(ForwardError::from)?
            .into_inner()
            .rate_limits;
        if answers.len() != sent {
            return Err(ForwardError::Mismatch {
                sent,
                answered: answers.len(),
            });
        }
        Ok(answers)
    }

    /// Sends GLOBAL state to the peer at `address` (`UpdatePeerGlobals`), bounded by `timeout`.
    pub async fn update_peer_globals(
        &self,
        address: &str,
        globals: Vec<proto::UpdatePeerGlobal>,
        timeout: Duration,
    ) -> Result<(), ForwardError> {
        let mut grpc = self.client(address)?.grpc;
        let call = grpc.update_peer_globals(proto::UpdatePeerGlobalsReq { globals });
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| ForwardError::Timeout(timeout))?
            .map_err(ForwardError::from)?;
        Ok(())
    }

    /// Drops the clients of peers not in `addresses` (their queued items are still sent).
    pub fn retain(&self, addresses: &[&str]) {
        let mut clients = match self.clients.write() {
            Ok(clients) => clients,
            Err(poisoned) => poisoned.into_inner(),
        };
        clients.retain(|address, _| addresses.contains(&address.as_str()));
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
        let client = self.connect(address)?;
        clients.insert(address.to_string(), client.clone());
        Ok(client)
    }

    fn connect(&self, address: &str) -> Result<PeerClient, ForwardError> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|error| ForwardError::Unavailable(format!("invalid address: {error}")))?
            .connect_timeout(self.options.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = match &self.options.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.clone()),
            None => endpoint.connect_lazy(),
        };
        let client = PeersV1Client::new(channel)
            .max_decoding_message_size(self.options.max_message_size)
            .max_encoding_message_size(self.options.max_message_size);
        let metrics = PeerCallMetrics {
            items: self.metrics.forwarded_items.with_label_values(&[address]),
            calls: self.metrics.peer_calls.with_label_values(&[address]),
            duration: self
                .metrics
                .batch_send_duration
                .with_label_values(&[address]),
            queue_length: self
                .metrics
                .batch_queue_length
                .with_label_values(&[address]),
        };
        let batcher = PeerBatcher::spawn(
            client.clone(),
            self.options.batch.clone(),
            self.options.timeout,
            metrics,
        )
        .map_err(|error| ForwardError::Unavailable(format!("invalid batching: {error}")))?;
        Ok(PeerClient {
            grpc: client,
            batcher,
        })
    }
}
