//! A bound on the open connections of one listener.
//!
//! Every accepted connection takes a slot until it closes. A connection accepted while every slot
//! is taken is closed at once: the client sees its connection reset instead of hanging in the
//! kernel's accept queue, and the node's file descriptors and per-connection memory stay bounded
//! whatever a client opens. The wrapper works on any accepted stream, so it composes with TLS:
//! limit the TCP connections, then run the handshake on [`Limited`] streams.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection slots of one listener. Cloning shares the slots.
#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
    /// A name for log lines (`grpc`, `http`).
    listener: &'static str,
}

impl ConnectionLimit {
    /// At most `max` (at least 1) open connections on the listener named `listener`.
    pub fn new(max: usize, listener: &'static str) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            listener,
        }
    }

    /// Takes a slot for `io`, or closes `io` and returns `None` when none is free.
    pub fn admit<T>(&self, io: T) -> Option<Limited<T>> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => Some(Limited { io, _slot: slot }),
            Err(_) => {
                tracing::warn!(
                    listener = self.listener,
                    max = self.max,
                    "connection limit reached; closing a new connection"
                );
                drop(io);
                None
            }
        }
    }

    /// The connections open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Wraps a stream of accepted connections (such as tonic's `serve_with_incoming` input):
    /// connections beyond the limit are closed and left out; accept errors pass through.
    pub fn limit_incoming<S, T>(
        &self,
        incoming: S,
    ) -> impl Stream<Item = io::Result<Limited<T>>> + Send + 'static
    where
        S: Stream<Item = io::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let limit = self.clone();
        incoming.filter_map(move |accepted| {
            let admitted = match accepted {
                Ok(io) => limit.admit(io).map(Ok),
                Err(error) => Some(Err(error)),
            };
            std::future::ready(admitted)
        })
    }
}

/// An accepted connection holding one slot of its listener until it is dropped.
#[derive(Debug)]
pub struct Limited<T> {
    io: T,
    _slot: OwnedSemaphorePermit,
}

impl<T> Limited<T> {
    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The same slot held by `convert(connection)`, as when a connection moves to another
    /// runtime; when `convert` fails the connection is gone and its slot is freed.
    pub fn try_map<U, E>(self, convert: impl FnOnce(T) -> Result<U, E>) -> Result<Limited<U>, E> {
        Ok(Limited {
            io: convert(self.io)?,
            _slot: self._slot,
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

pass_writes_and_connect_info_to_io!(Limited);

/// An axum listener whose connections are bounded by a [`ConnectionLimit`].
pub struct LimitedListener<L> {
    inner: L,
    limit: ConnectionLimit,
}

impl<L> LimitedListener<L> {
    /// Bounds the connections of `inner` by `limit`.
    pub fn new(inner: L, limit: ConnectionLimit) -> Self {
        Self { inner, limit }
    }
}

impl<L> axum::serve::Listener for LimitedListener<L>
where
    L: axum::serve::Listener,
    L::Io: Unpin,
{
    type Io = Limited<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, address) = self.inner.accept().await;
            if let Some(limited) = self.limit.admit(io) {
                return (limited, address);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_beyond_the_limit_are_refused_until_one_closes() {
        let limit = ConnectionLimit::new(2, "test");
        let first = limit.admit(1).expect("first fits");
        let _second = limit.admit(2).expect("second fits");
        assert!(limit.admit(3).is_none());
        assert_eq!(limit.open(), 2);
        drop(first);
        assert_eq!(limit.open(), 1);
        assert_eq!(limit.admit(4).map(|limited| *limited.get_ref()), Some(4));
    }

    #[tokio::test]
    async fn incoming_streams_drop_the_excess_and_pass_errors() {
        let limit = ConnectionLimit::new(1, "test");
        let accepted =
            futures_util::stream::iter(vec![Ok(1), Ok(2), Err(io::Error::other("accept failed"))]);
        let out: Vec<io::Result<Limited<i32>>> = limit.limit_incoming(accepted).collect().await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ref().map(|l| *l.get_ref()).ok(), Some(1));
        assert!(out[1].is_err());
    }
}
