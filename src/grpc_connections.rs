//! Plaintext gRPC connections served by hyper's HTTP/2 server directly, without tonic's server
//! around it.
//!
//! Why: on the bench machine a no-op `GetRateLimits` answered through tonic's server costs 19–22 µs
//! of user CPU per call, and the same answer through hyper's HTTP/2 server with a plain service
//! costs 12–15 µs (the `h2` crate alone: 12–14 µs; Redis's Lua call: 12–15.5 µs), in paired runs
//! under h2load (bench/analysis.md, change 9; `examples/h2_noop_server.rs`). The difference is
//! tonic's per-call wrapping (its `Svc`, `RecoverError` and `GrpcTimeout` services, axum's router,
//! their boxed futures and bodies), not HTTP/2. So the per-core runtimes
//! ([`crate::grpc_runtimes`]) serve their connections here: hyper's HTTP/2 server, the node's
//! layers, and [`crate::grpc::Dispatch`], which hands `V1` and `PeersV1` calls to their servers
//! directly and every other service to tonic's routes.
//!
//! What tonic's server gave is kept: HTTP/2 only, the keep-alive PING interval and timeout, the
//! bound on concurrent streams, the maximum connection age (then a graceful shutdown), and on stop
//! a graceful shutdown of every connection (GOAWAY, the calls in progress finish). A client's
//! `grpc-timeout` is applied by the node's call-limits layer, as on every surface. Unlike tonic's
//! server, hyper's bound on streams a client makes the server reset stays on (hyper's default).
//!
//! TLS connections, and all connections under `GUBER_GRPC_RUNTIMES=shared`, are still served by
//! tonic's server, with the same layers and services.

use std::convert::Infallible;
use std::io;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// What serves a connection's calls: the node's layers over its services.
pub trait GrpcService:
    tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
    > + Clone
    + Send
    + 'static
{
}

impl<S> GrpcService for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static
{
}

/// The HTTP/2 settings of every connection (the `GUBER_GRPC_*` settings tonic's server took).
#[derive(Debug, Clone)]
pub struct Http2Settings {
    /// The most streams (calls) a client may have open on one connection.
    pub max_concurrent_streams: u32,
    /// How often an idle connection is PINGed; `None`: never.
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// How long a connection may live before it is shut down gracefully; `None`: for ever.
    pub max_connection_age: Option<Duration>,
}

/// Serves every connection of `incoming` with `service` until `incoming` ends or `stop` resolves;
/// then shuts every connection down gracefully and returns once all have closed. Each connection
/// is a task of this function's own, on the calling runtime.
pub async fn serve<I, IO, S>(
    incoming: I,
    service: S,
    settings: Http2Settings,
    stop: impl Future<Output = ()>,
) where
    I: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: GrpcService,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        // gRPC servers send no `date` header (grpc-go, so Gubernator, does not); hyper would
        // format and HPACK-encode one on every answer.
        .auto_date_header(false)
        .max_concurrent_streams(settings.max_concurrent_streams)
        .keep_alive_interval(settings.keepalive_interval)
        .keep_alive_timeout(settings.keepalive_timeout);
    let (shut_down, shutting_down) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut incoming = std::pin::pin!(incoming);
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = incoming.next() => match accepted {
                Some(Ok(io)) => {
                    connections.spawn(connection(
                        builder.clone(),
                        io,
                        service.clone(),
                        settings.max_connection_age,
                        shutting_down.clone(),
                    ));
                }
                Some(Err(error)) => {
                    // As tonic's accept loop: log and go on.
                    tracing::debug!(%error, "gRPC accept failed");
                }
                None => break,
            },
            // Reap the connections that closed, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = shut_down.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it closes, shutting it down gracefully when it reaches `max_age`
/// or when `shutting_down` turns true.
async fn connection<IO, S>(
    builder: hyper::server::conn::http2::Builder<TokioExecutor>,
    io: IO,
    service: S,
    max_age: Option<Duration>,
    mut shutting_down: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: GrpcService,
    S::Future: Send + 'static,
{
    let service = TowerToHyperService::new(service.map_request(
        |request: http::Request<hyper::body::Incoming>| request.map(tonic::body::Body::new),
    ));
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let aged = async {
        match max_age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    let mut aged = std::pin::pin!(aged);
    let mut graceful = false;
    loop {
        tokio::select! {
            served = &mut connection => {
                if let Err(error) = served {
                    tracing::debug!(%error, "gRPC connection ended with an error");
                }
                return;
            }
            () = &mut aged, if !graceful => {
                graceful = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = shutting_down.wait_for(|stop| *stop), if !graceful => {
                graceful = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{Notify, mpsc, oneshot};

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(10);

    fn settings(max_connection_age: Option<Duration>) -> Http2Settings {
        Http2Settings {
            max_concurrent_streams: 16,
            keepalive_interval: None,
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age,
        }
    }

    /// A service whose `/slow` calls report their arrival and wait for `gate`; other calls are
    /// answered at once.
    fn service(
        arrived: mpsc::UnboundedSender<()>,
        gate: Arc<Notify>,
    ) -> impl tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(move |request: http::Request<tonic::body::Body>| {
            let arrived = arrived.clone();
            let gate = Arc::clone(&gate);
            async move {
                if request.uri().path() == "/slow" {
                    let _ = arrived.send(());
                    gate.notified().await;
                }
                Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
            }
        })
    }

    async fn client(
        address: std::net::SocketAddr,
    ) -> (
        h2::client::SendRequest<Bytes>,
        tokio::task::JoinHandle<Result<(), h2::Error>>,
    ) {
        let tcp = TcpStream::connect(address).await.expect("connects");
        let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2");
        (send, tokio::spawn(connection))
    }

    fn request(path: &str) -> http::Request<()> {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{path}"))
            .body(())
            .expect("a request")
    }

    async fn listener() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let address = listener.local_addr().expect("bound");
        (listener, address)
    }

    #[tokio::test]
    async fn at_stop_a_call_in_progress_finishes_before_serve_returns() {
        let (listener, address) = listener().await;
        let (arrived, mut arrivals) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let mut serving = tokio::spawn(serve(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            service(arrived, Arc::clone(&gate)),
            settings(None),
            async move {
                let _ = stopped.await;
            },
        ));
        let (mut send, _connection) = client(address).await;
        let (answer, _) = send.send_request(request("/slow"), true).expect("sent");
        arrivals.recv().await.expect("the call arrived");
        stop.send(()).expect("serve is running");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut serving)
                .await
                .is_err(),
            "serve waits for the call in progress"
        );
        gate.notify_one();
        let answer = tokio::time::timeout(PATIENCE, answer)
            .await
            .expect("answered in time")
            .expect("the call in progress is answered");
        assert_eq!(answer.status(), http::StatusCode::OK);
        tokio::time::timeout(PATIENCE, serving)
            .await
            .expect("serve returns once the connection closed")
            .expect("no panic");
    }

    #[tokio::test]
    async fn a_connection_past_its_maximum_age_is_closed_after_its_calls() {
        let (listener, address) = listener().await;
        let (arrived, mut arrivals) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(serve(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            service(arrived, Arc::clone(&gate)),
            settings(Some(Duration::from_millis(200))),
            async move {
                let _ = stopped.await;
            },
        ));
        let (mut send, mut connection) = client(address).await;
        let (answer, _) = send.send_request(request("/slow"), true).expect("sent");
        arrivals.recv().await.expect("the call arrived");
        // Past its age, the connection stays open while its call is in progress...
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!connection.is_finished(), "closed with a call in progress");
        gate.notify_one();
        let answer = tokio::time::timeout(PATIENCE, answer)
            .await
            .expect("answered in time")
            .expect("the call in progress is answered");
        assert_eq!(answer.status(), http::StatusCode::OK);
        // ...and closes once it is done, while the server goes on accepting.
        tokio::time::timeout(PATIENCE, &mut connection)
            .await
            .expect("the old connection closes")
            .expect("no panic")
            .expect("closed gracefully");
        let (mut send, _connection) = client(address).await;
        let (answer, _) = send.send_request(request("/fast"), true).expect("sent");
        let answer = tokio::time::timeout(PATIENCE, answer)
            .await
            .expect("answered in time")
            .expect("a new connection is served");
        assert_eq!(answer.status(), http::StatusCode::OK);
        stop.send(()).expect("serve is running");
        tokio::time::timeout(PATIENCE, serving)
            .await
            .expect("serve returns at stop")
            .expect("no panic");
    }

    #[tokio::test]
    async fn answers_carry_no_date_header_as_grpc_go_sends_none() {
        let (listener, address) = listener().await;
        let (arrived, _arrivals) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(serve(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            service(arrived, Arc::new(Notify::new())),
            settings(None),
            async move {
                let _ = stopped.await;
            },
        ));
        let (mut send, _connection) = client(address).await;
        let (answer, _) = send.send_request(request("/fast"), true).expect("sent");
        let answer = tokio::time::timeout(PATIENCE, answer)
            .await
            .expect("answered in time")
            .expect("answered");
        assert_eq!(answer.status(), http::StatusCode::OK);
        assert_eq!(answer.headers().get(http::header::DATE), None);
        stop.send(()).expect("serve is running");
        tokio::time::timeout(PATIENCE, serving)
            .await
            .expect("serve returns at stop")
            .expect("no panic");
    }
}
