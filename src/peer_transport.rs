//! The transport of forwarded calls: HTTP/2 spoken with `h2` directly, under
//! [`crate::peer_unary`] (forwarded batches, in one piece) and tonic's generated `PeersV1` client.
//!
//! Why not tonic's `Channel`: a forwarded item is on the caller's critical path, and the channel
//! puts four tasks between the caller and the socket (tower's `Buffer` worker, hyper's dispatch
//! task, the h2 connection task, hyper's body pipe) and writes every request in two segments:
//! hyper hands the body to its pipe only once the connection task has opened the stream, so
//! HEADERS leave in one write and DATA in a second (`strace -f` on the forwarding node: a
//! 47-byte write, then a 59-byte one, for every call). Here the caller opens the stream and
//! queues the whole message before the connection task runs, so HEADERS and DATA leave in one
//! write (96 bytes), and the answer wakes the caller straight from the connection task. That
//! alone, with the connection still on the main runtime, took the forwarding node's CPU per
//! forwarded call at low load from 186 to 148 µs (`/proc/PID/stat` around a 4 s run); the hop's
//! latency did not move beyond the noise.
//!
//! Each peer gets a small pool of connections, one per core. A call made on one of the per-core
//! gRPC runtimes ([`crate::grpc_runtimes`]) uses that runtime's connection, whose task runs on
//! the same thread: the request, the answer and the caller's wake-up never cross threads. Moving
//! the connection's task from the main runtime to the caller's took the peer hop at low load from
//! 165–209 µs to 109–134 µs (three paired `bench/hop.sh` runs) and the forwarding node's CPU per
//! forwarded call from 148 to 96 µs. Other callers (batches sent from the main runtime) take the
//! connections round robin. A connection is opened on first use and again after it fails; a
//! keep-alive PING finds one whose peer vanished without closing it, and a connection that
//! misses the answer is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;

use crate::mutex::lock;
use crate::peer_auth::{AttachSecret, PeerSecret};
use crate::tls::connector::TlsConnector;

/// A forwarding client's channel: the transport, with the peer secret attached to every call.
pub type PeerCallChannel = InterceptedService<PeerTransport, AttachSecret>;

/// How a peer's connections are opened and kept.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// How long opening a connection (TCP, then TLS) may take.
    pub connect_timeout: Duration,
    /// Connections in the pool (at least 1).
    pub connections: usize,
    /// How often each connection sends a keep-alive PING.
    pub keep_alive_interval: Duration,
    /// How long the PING's answer may take before the connection is dropped.
    pub keep_alive_timeout: Duration,
    /// TLS for the connections (`None`: plaintext).
    pub tls: Option<TlsConnector>,
}

impl TransportOptions {
    /// Plaintext connections, one per core, a PING every 30 s answered within 20 s.
    pub fn new(connect_timeout: Duration, tls: Option<TlsConnector>) -> Self {
        Self {
            connect_timeout,
            connections: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(20),
            tls,
        }
    }
}

/// Why a call could not be carried to the peer. The peer's own answers (a gRPC status) are not
/// errors here: they come back as responses.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The connection could not be opened within the connect timeout.
    #[error("connecting to {address} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The peer.
        address: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The connection could not be opened (refused, unreachable, TLS handshake failed).
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The peer.
        address: String,
        /// Why.
        reason: String,
    },
    /// The connection failed under the call (the peer closed it, reset the stream or vanished).
    #[error("connection to {address} failed: {reason}")]
    Broken {
        /// The peer.
        address: String,
        /// Why.
        reason: String,
    },
    /// The call's message could not be read from tonic's encoder.
    #[error("cannot encode the request: {0}")]
    Encode(String),
}

/// A peer's pool of HTTP/2 connections, as a tower service tonic's clients call. Cloning shares
/// the pool; the connections' tasks end when the last clone is dropped.
#[derive(Clone)]
pub struct PeerTransport {
    shared: Arc<Shared>,
}

struct Shared {
    address: Arc<str>,
    /// `http://` or `https://` and the address: the `:scheme` and `:authority` of every call.
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    options: TransportOptions,
    slots: Vec<Slot>,
    next: AtomicUsize,
    /// The connections' tasks (they drive the socket and send the keep-alive PINGs), each on the
    /// runtime of the call that opened its connection; aborted when the pool is dropped.
    tasks: Mutex<JoinSet<()>>,
}

/// One connection of the pool: the sender of its open connection, if any, and a gate that lets
/// one caller at a time open it.
#[derive(Default)]
struct Slot {
    sender: Mutex<Option<h2::client::SendRequest<Bytes>>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Slot {
    /// The slot's connection once it can take a new stream, if it has one that still works.
    async fn open_sender(&self) -> Option<h2::client::SendRequest<Bytes>> {
        let cached = lock(&self.sender).clone()?;
        cached.ready().await.ok()
    }
}

impl PeerTransport {
    /// A pool for the peer at `address` (`host:port`), connecting on first use.
    pub fn new(address: &str, options: TransportOptions) -> Result<Self, http::Error> {
        let scheme = if options.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        };
        let authority = http::uri::Authority::try_from(address)?;
        let slots = (0..options.connections.max(1))
            .map(|_| Slot::default())
            .collect();
        Ok(Self {
            shared: Arc::new(Shared {
                address: Arc::from(address),
                scheme,
                authority,
                options,
                slots,
                next: AtomicUsize::new(0),
                tasks: Mutex::new(JoinSet::new()),
            }),
        })
    }

    /// Sends a request of `parts` whose body is `message` (its gRPC frames, complete) and returns
    /// the peer's response (see [`crate::peer_unary`]).
    pub async fn send_message(
        &self,
        parts: http::request::Parts,
        message: Bytes,
    ) -> Result<http::Response<ResponseBody>, TransportError> {
        self.shared.send_message(parts, message).await
    }

    /// The transport with the peer secret (when configured) on every call.
    pub fn with_secret(self, secret: Option<PeerSecret>) -> PeerCallChannel {
        InterceptedService::new(self, AttachSecret::new(secret))
    }
}

impl Shared {
    /// Sends `request` over the next connection of the pool and returns the peer's response.
    async fn send(
        self: Arc<Self>,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, TransportError> {
        let (parts, body) = request.into_parts();
        // A unary call's body is its one encoded message, ready at once.
        let message = body
            .collect()
            .await
            .map_err(|status| TransportError::Encode(status.to_string()))?
            .to_bytes();
        let response = self.send_message(parts, message).await?;
        Ok(response.map(tonic::body::Body::new))
    }

    /// Sends a request of `parts` whose body is `message` (its gRPC frames, complete) over the
    /// next connection of the pool, and returns the peer's response.
    async fn send_message(
        &self,
        mut parts: http::request::Parts,
        message: Bytes,
    ) -> Result<http::Response<ResponseBody>, TransportError> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri = http::Uri::from_parts(uri).map_err(|error| self.broken(error))?;
        let slot = &self.slots[self.slot_index()];
        let mut sender = self.ready_sender(slot).await?;
        let request = http::Request::from_parts(parts, ());
        let end_of_stream = message.is_empty();
        let (response, mut stream) = sender
            .send_request(request, end_of_stream)
            .map_err(|error| self.broken(error))?;
        if !end_of_stream {
            // Queued before the connection task opens the stream: HEADERS and DATA go in one
            // write. h2 keeps what the flow-control window does not admit yet.
            stream
                .send_data(message, true)
                .map_err(|error| self.broken(error))?;
        }
        let response = response.await.map_err(|error| self.broken(error))?;
        let (parts, body) = response.into_parts();
        Ok(http::Response::from_parts(
            parts,
            ResponseBody {
                stream: body,
                data_done: false,
                address: Arc::clone(&self.address),
            },
        ))
    }

    /// The connection a call uses: on a per-core gRPC runtime ([`crate::grpc_runtimes`]), that
    /// runtime's own (its task runs there, so the call never leaves its thread); elsewhere the
    /// next one, round robin.
    fn slot_index(&self) -> usize {
        let index = crate::grpc_runtimes::current_shard()
            .unwrap_or_else(|| self.next.fetch_add(1, Ordering::Relaxed));
        index % self.slots.len()
    }

    /// The slot's connection once it can take a new stream, opened if there is none or it failed.
    async fn ready_sender(
        &self,
        slot: &Slot,
    ) -> Result<h2::client::SendRequest<Bytes>, TransportError> {
        if let Some(sender) = slot.open_sender().await {
            return Ok(sender);
        }
        let _opening = slot.connecting.lock().await;
        // Another caller may have opened it while this one waited.
        if let Some(sender) = slot.open_sender().await {
            return Ok(sender);
        }
        *lock(&slot.sender) = None;
        // Boxed: opening a connection (TCP, TLS, the HTTP/2 handshake) is a large future, rarely
        // run; inline, every call's future would carry it and be copied with it.
        let sender = Box::pin(self.connect()).await?;
        *lock(&slot.sender) = Some(sender.clone());
        sender.ready().await.map_err(|error| self.broken(error))
    }

    /// Opens one connection and starts its task.
    async fn connect(&self) -> Result<h2::client::SendRequest<Bytes>, TransportError> {
        let timeout = self.options.connect_timeout;
        let opened = tokio::time::timeout(timeout, self.open()).await;
        let opened = opened.map_err(|_| TransportError::ConnectTimeout {
            address: self.address.to_string(),
            timeout,
        })?;
        opened.map_err(|reason| TransportError::Connect {
            address: self.address.to_string(),
            reason,
        })
    }

    async fn open(&self) -> Result<h2::client::SendRequest<Bytes>, String> {
        match &self.options.tls {
            None => {
                let tcp = TcpStream::connect(&*self.address)
                    .await
                    .map_err(|error| error.to_string())?;
                tcp.set_nodelay(true).map_err(|error| error.to_string())?;
                self.start(tcp).await
            }
            Some(tls) => {
                let uri = http::Uri::try_from(format!("https://{}", self.authority))
                    .map_err(|error| error.to_string())?;
                let io = tower::ServiceExt::oneshot(tls.clone(), uri)
                    .await
                    .map_err(|error| error.to_string())?
                    .into_inner();
                self.start(io).await
            }
        }
    }

    /// The HTTP/2 handshake over `io`, and the connection's task.
    async fn start<T>(&self, io: T) -> Result<h2::client::SendRequest<Bytes>, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = client_settings()
            .handshake(io)
            .await
            .map_err(|error| error.to_string())?;
        let keep_alive = (
            self.options.keep_alive_interval,
            self.options.keep_alive_timeout,
        );
        let mut tasks = lock(&self.tasks);
        // Forget the tasks of connections that ended.
        while tasks.try_join_next().is_some() {}
        // On the runtime of the call that opened it: on a gRPC runtime of its own, the connection's
        // reads and writes and the wake-ups of its callers stay on one thread.
        tasks.spawn(drive(connection, keep_alive));
        Ok(sender)
    }

    fn broken(&self, error: impl std::fmt::Display) -> TransportError {
        broken(&self.address, error)
    }
}

/// The HTTP/2 settings of a peer connection: hyper's client defaults (which tonic's channel used
/// before), not h2's bare ones: windows large enough that a full batch is not paced by
/// WINDOW_UPDATE round trips (h2's default is 64 KiB), a bound on the headers a peer may send
/// (h2's default is 16 MiB), and no server push.
fn client_settings() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .max_header_list_size(16 * 1024)
        .max_send_buffer_size(1024 * 1024)
        .initial_max_send_streams(100)
        .enable_push(false);
    builder
}

/// Drives one connection until it closes, fails, or misses a keep-alive PING's answer; the pool's
/// senders of it fail from then on, and the next call opens a new one.
async fn drive<T>(
    mut connection: h2::client::Connection<T, Bytes>,
    (interval, timeout): (Duration, Duration),
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(mut ping_pong) = connection.ping_pong() else {
        let _ = connection.await;
        return;
    };
    loop {
        tokio::select! {
            _ = &mut connection => return,
            () = tokio::time::sleep(interval) => {}
        }
        let pong = tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque()));
        tokio::select! {
            _ = &mut connection => return,
            answered = pong => {
                if !matches!(answered, Ok(Ok(_))) {
                    tracing::debug!("a peer connection missed its keep-alive answer; dropped");
                    return;
                }
            }
        }
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for PeerTransport {
    type Response = http::Response<tonic::body::Body>;
    type Error = TransportError;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is per connection, awaited in the call (bounded by the caller's timeout).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(Arc::clone(&self.shared).send(request))
    }
}

/// A response's body: the DATA frames, then the trailers (where gRPC puts its status), giving
/// the flow-control window back as the data is read.
pub struct ResponseBody {
    stream: h2::RecvStream,
    data_done: bool,
    /// The peer, for errors.
    address: Arc<str>,
}

/// The connection to `address` failed under a call.
fn broken(address: &str, error: impl std::fmt::Display) -> TransportError {
    TransportError::Broken {
        address: address.to_string(),
        reason: error.to_string(),
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = TransportError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TransportError>>> {
        let this = self.get_mut();
        if !this.data_done {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(broken(&this.address, error)))),
                None => this.data_done = true,
            }
        }
        match ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(broken(&this.address, error)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::peers_v1_client::PeersV1Client;
    use crate::proto::peers_v1_server::{PeersV1, PeersV1Server};
    use crate::proto::{self, GetPeerRateLimitsReq, GetPeerRateLimitsResp};
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    /// Answers each item with its key as the error text; refuses calls of no item.
    #[derive(Clone, Default)]
    struct EchoOwner {
        secrets: Arc<Mutex<Vec<Option<String>>>>,
    }

    #[tonic::async_trait]
    impl PeersV1 for EchoOwner {
        async fn get_peer_rate_limits(
            &self,
            request: Request<GetPeerRateLimitsReq>,
        ) -> Result<Response<GetPeerRateLimitsResp>, Status> {
            let secret = request
                .metadata()
                .get(crate::peer_auth::SECRET_METADATA_KEY)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string);
            lock(&self.secrets).push(secret);
            let requests = request.into_inner().requests;
            if requests.is_empty() {
                return Err(Status::invalid_argument("no items"));
            }
            let rate_limits = requests
                .into_iter()
                .map(|item| proto::RateLimitResp {
                    error: item.unique_key,
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(GetPeerRateLimitsResp { rate_limits }))
        }

        async fn update_peer_globals(
            &self,
            _request: Request<proto::UpdatePeerGlobalsReq>,
        ) -> Result<Response<proto::UpdatePeerGlobalsResp>, Status> {
            Ok(Response::new(proto::UpdatePeerGlobalsResp {}))
        }
    }

    /// Serves `owner` on `listener` until the returned sender is dropped or fired.
    fn serve(
        owner: &EchoOwner,
        listener: TcpListener,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(PeersV1Server::new(owner.clone()))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stopped.await;
            });
        let task = tokio::spawn(async move {
            let _ = server.await;
        });
        (stop, task)
    }

    /// An owner served on a loopback port: the owner, its address, and what stops it.
    async fn served_owner() -> (
        EchoOwner,
        String,
        (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
    ) {
        let owner = EchoOwner::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = serve(&owner, listener);
        (owner, address, server)
    }

    fn client(address: &str, options: TransportOptions) -> PeersV1Client<PeerCallChannel> {
        let secret = PeerSecret::new("s3cret-s3cret-s3cret", "GUBER_PEER_SECRET").unwrap();
        PeersV1Client::new(
            PeerTransport::new(address, options)
                .unwrap()
                .with_secret(Some(secret)),
        )
    }

    fn options() -> TransportOptions {
        TransportOptions {
            connections: 2,
            ..TransportOptions::new(Duration::from_secs(2), None)
        }
    }

    fn keys(keys: &[&str]) -> GetPeerRateLimitsReq {
        GetPeerRateLimitsReq {
            requests: keys
                .iter()
                .map(|key| proto::RateLimitReq {
                    unique_key: key.to_string(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// The source of a failed call's status, when it is the transport's error.
    fn transport_error(status: &Status) -> Option<&TransportError> {
        std::error::Error::source(status)?.downcast_ref::<TransportError>()
    }

    #[tokio::test]
    async fn calls_over_every_connection_of_the_pool_reach_the_peer_with_the_secret() {
        let (owner, address, _server) = served_owner().await;
        let mut client = client(&address, options());
        // More calls than connections: each connection is opened, then reused.
        for round in 0..5 {
            let key = format!("k{round}");
            let answer = client
                .get_peer_rate_limits(keys(&[&key, "other"]))
                .await
                .unwrap()
                .into_inner();
            let errors: Vec<_> = answer
                .rate_limits
                .iter()
                .map(|r| r.error.as_str())
                .collect();
            assert_eq!(errors, [key.as_str(), "other"]);
        }
        let secrets = lock(&owner.secrets).clone();
        assert_eq!(secrets, vec![Some("s3cret-s3cret-s3cret".to_string()); 5]);
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_default_flow_control_window_goes_through() {
        let (_owner, address, _server) = served_owner().await;
        // About 200 KB each way, beyond HTTP/2's initial 64 KiB windows.
        let keys_sent: Vec<String> = (0..1000).map(|i| format!("{i:0>200}")).collect();
        let refs: Vec<&str> = keys_sent.iter().map(String::as_str).collect();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            client(&address, options()).get_peer_rate_limits(keys(&refs)),
        )
        .await
        .expect("answered")
        .unwrap()
        .into_inner();
        let echoed: Vec<&str> = answer
            .rate_limits
            .iter()
            .map(|r| r.error.as_str())
            .collect();
        assert_eq!(echoed, refs);
    }

    #[tokio::test]
    async fn a_status_the_peer_answers_comes_back_as_that_status() {
        let (_owner, address, _server) = served_owner().await;
        let status = client(&address, options())
            .get_peer_rate_limits(keys(&[]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "no items");
        assert!(transport_error(&status).is_none());
    }

    #[tokio::test]
    async fn a_peer_that_refuses_connections_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let status = client(&address, options())
            .get_peer_rate_limits(keys(&["k"]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                transport_error(&status),
                Some(TransportError::Connect { .. })
            ),
            "{status:?}"
        );
    }

    #[tokio::test]
    async fn a_restarted_peer_is_reached_again_on_a_new_connection() {
        let owner = EchoOwner::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, server) = serve(&owner, listener);
        let mut client = client(
            &address,
            TransportOptions {
                connections: 1,
                ..options()
            },
        );
        client.get_peer_rate_limits(keys(&["a"])).await.unwrap();
        stop.send(()).unwrap();
        server.await.unwrap();
        // The old connection is closed: the next call opens a new one, to the restarted peer.
        let listener = TcpListener::bind(&address).await.unwrap();
        let (_stop, _server) = serve(&owner, listener);
        let mut answered = None;
        for _ in 0..50 {
            match client.get_peer_rate_limits(keys(&["b"])).await {
                Ok(answer) => {
                    answered = Some(answer.into_inner());
                    break;
                }
                Err(status) => {
                    assert!(transport_error(&status).is_some(), "{status:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        let answered = answered.expect("the restarted peer answers");
        assert_eq!(answered.rate_limits[0].error, "b");
    }

    #[tokio::test]
    async fn a_connection_whose_peer_never_answers_the_keep_alive_is_dropped() {
        // Accepts and reads, never writes: an HTTP/2 peer that vanished without closing.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let mut client = client(
            &address,
            TransportOptions {
                connections: 1,
                keep_alive_interval: Duration::from_millis(50),
                keep_alive_timeout: Duration::from_millis(100),
                ..options()
            },
        );
        let call = client.get_peer_rate_limits(keys(&["k"]));
        // Without the keep-alive the call would wait forever.
        let status = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the call fails once the keep-alive is missed")
            .unwrap_err();
        assert!(
            matches!(
                transport_error(&status),
                Some(TransportError::Broken { .. })
            ),
            "{status:?}"
        );
        silent.abort();
    }
}
