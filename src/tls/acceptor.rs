//! Accepting TLS connections ourselves, for both servers.
//!
//! One task accepts TCP connections and starts a handshake task per connection, bounded by a
//! timeout, so a slow or silent client delays nobody else. At most `max_handshakes` handshakes run
//! at once; beyond that a new connection is closed at once, so a flood of connections that never
//! finish their handshake costs bounded memory and CPU. Each handshake takes the *current*
//! server configuration from the [`ArcSwap`], which is what makes a SIGHUP reload reach new
//! connections. Completed connections are handed over through a bounded channel: tonic reads them
//! as a `Stream` (`serve_with_incoming_shutdown`), axum as a [`axum::serve::Listener`]. Dropping the
//! [`TlsIncoming`] stops the accept task and closes the port; the handshake tasks belong to the
//! accept task (a `JoinSet`), so they are cancelled with it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

/// Completed handshakes waiting for the server to pick them up.
const READY_CONNECTIONS: usize = 128;

/// A stream of TLS connections accepted on one listener.
pub struct TlsIncoming {
    connections: mpsc::Receiver<TlsStream<TcpStream>>,
    local_address: SocketAddr,
    accept_task: JoinHandle<()>,
}

impl TlsIncoming {
    /// Starts accepting on `listener`, each handshake with the configuration current at that time,
    /// at most `handshake_timeout` long, and at most `max_handshakes` at once.
    pub fn new(
        listener: TcpListener,
        config: Arc<ArcSwap<rustls::ServerConfig>>,
        handshake_timeout: Duration,
        max_handshakes: usize,
    ) -> Self {
        let local_address = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (ready, connections) = mpsc::channel(READY_CONNECTIONS);
        let limits = HandshakeLimits {
            timeout: handshake_timeout,
            slots: Arc::new(Semaphore::new(max_handshakes.max(1))),
        };
        let accept_task = tokio::spawn(accept_loop(listener, config, limits, ready));
        Self {
            connections,
            local_address,
            accept_task,
        }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// How long one handshake may take, and how many may run at once.
struct HandshakeLimits {
    timeout: Duration,
    slots: Arc<Semaphore>,
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ArcSwap<rustls::ServerConfig>>,
    limits: HandshakeLimits,
    ready: mpsc::Sender<TlsStream<TcpStream>>,
) {
    let handshake_timeout = limits.timeout;
    // Owned here: dropped (and so aborted) with the accept task.
    let mut handshakes = tokio::task::JoinSet::new();
    loop {
        // Reap the finished ones, so the set holds only handshakes in progress.
        while handshakes.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&limits.slots).try_acquire_owned() else {
            tracing::debug!(%peer, "too many TLS handshakes in progress; closing the connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
        let ready = ready.clone();
        handshakes.spawn(async move {
            let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
            drop(slot);
            match handshake {
                Ok(Ok(stream)) => {
                    // The server is gone when this fails; the connection just closes.
                    let _ = ready.send(stream).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?handshake_timeout, "TLS handshake timed out")
                }
            }
        });
    }
}

impl tokio_stream::Stream for TlsIncoming {
    type Item = std::io::Result<TlsStream<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.connections.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(stream) => {
                let peer = stream.get_ref().0.peer_addr().unwrap_or(self.local_address);
                (stream, peer)
            }
            // The accept task only ends when this side is dropped, so this is not reached;
            // never resolving is the listener contract's "no more connections".
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_address)
    }
}
