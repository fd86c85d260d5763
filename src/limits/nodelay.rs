//! Accepted TCP connections with Nagle's algorithm turned off (`TCP_NODELAY`).
//!
//! Why this exists: with Nagle on, a server's answer that leaves in more than one TCP segment
//! waits for the client to acknowledge the first one, and Linux clients delay that ACK by up to
//! 40 ms. A `GetRateLimits` answer of more than a handful of items is such an answer, so every
//! batched call (and every forwarded batch between peers) paid 40 ms before this module existed.
//! tonic's `serve_with_incoming` and axum's listener accept sockets as the kernel gives them, with
//! Nagle on; every listener of ringlimit accepts through one of the two adapters here instead.
//! Outgoing connections need nothing: tonic's `Endpoint` sets `TCP_NODELAY` by default, and the
//! TLS acceptor and connector and the proxy's upstream connector set it themselves.

use std::io;

use futures_util::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;

/// The accepted connections of `listener`, each with `TCP_NODELAY` set, as a stream for tonic's
/// `serve_with_incoming`.
pub fn incoming(listener: TcpListener) -> impl Stream<Item = io::Result<TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|tcp| {
            disable_nagle(tcp);
        })
    })
}

/// `listener` as an axum listener whose accepted connections have `TCP_NODELAY` set.
pub fn listener(listener: TcpListener) -> axum::serve::TapIo<TcpListener, fn(&mut TcpStream)> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp: &mut TcpStream| disable_nagle(tcp))
}

/// Turns Nagle's algorithm off on one connection. A failure (the peer already reset the
/// connection) is harmless: the connection is about to fail anyway.
pub fn disable_nagle(tcp: &TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn incoming_connections_have_nodelay_set() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let mut accepted = Box::pin(incoming(listener));
        let _client = TcpStream::connect(address).await.expect("connect");
        let server_side = accepted.next().await.expect("one").expect("accepted");
        assert!(server_side.nodelay().expect("read TCP_NODELAY"));
    }

    #[tokio::test]
    async fn axum_listener_connections_have_nodelay_set() {
        use axum::serve::Listener;
        let mut listener = listener(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        let address = listener.local_addr().expect("address");
        let _client = TcpStream::connect(address).await.expect("connect");
        let (server_side, _) = listener.accept().await;
        assert!(server_side.nodelay().expect("read TCP_NODELAY"));
    }
}
