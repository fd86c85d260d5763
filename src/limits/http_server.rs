//! The HTTP/1.1 server loop of the gateway, with read timeouts for slow clients.
//!
//! `axum::serve` has no read timeouts, so a client that sends its headers or body one byte at a
//! time (slowloris) can hold a connection, a task and a buffer forever. This loop serves the same
//! axum router with hyper directly and bounds both phases of reading a request:
//!
//! - **headers**: hyper's `header_read_timeout` closes a connection whose request head has not fully
//!   arrived within `GUBER_HTTP_HEADER_TIMEOUT` of the server starting to wait for it. This also
//!   bounds idle kept-alive connections, and connections that never send a byte.
//! - **body**: [`TimedBody`] fails the body when it has not fully arrived within
//!   `GUBER_HTTP_BODY_TIMEOUT` of the head; the gateway answers 408 and hyper closes the connection,
//!   since the rest of the body was never read.
//!
//! The gateway speaks HTTP/1.1 only, like Gubernator's plaintext grpc-gateway (Go's `net/http`
//! serves HTTP/2 only over TLS); gRPC has its own port. Shutdown is graceful as with `axum::serve`:
//! stop accepting, let each connection finish its request, then return. The connection tasks
//! belong to the loop (a `JoinSet`): when the loop's task is aborted (a shutdown past its timeout),
//! they are cut off with it rather than left running.
//!
//! `ringlimit proxy` serves its router with the same loop ([`serve`]), which gives each request the
//! peer's address as axum's `ConnectInfo`, as `into_make_service_with_connect_info` would.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Sleep;
use tower::ServiceExt;

/// How long a client may take to send each part of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// From waiting for a request head to having all of it (`GUBER_HTTP_HEADER_TIMEOUT`).
    pub header: Duration,
    /// From the head to the end of the body (`GUBER_HTTP_BODY_TIMEOUT`).
    pub body: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for open requests to finish.
/// Every request carries `ConnectInfo` with its connection's peer address (the gateway's handlers
/// ignore it; `ringlimit proxy` reads it).
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    timeouts: HttpTimeouts,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Clone + Send + Sync + 'static,
{
    let (stop, stopped) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap the finished ones, so the set holds only open connections.
        while connections.try_join_next().is_some() {}
        let (io, address) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        connections.spawn(serve_connection(
            io,
            router.clone(),
            timeouts,
            ConnectInfo(address),
            stopped.clone(),
        ));
    }
    drop(listener);
    // Receivers may all be gone already; that is fine.
    let _ = stop.send(true);
    drop(stopped);
    // Every connection finishes its request and ends.
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection<I, A>(
    io: I,
    router: Router,
    timeouts: HttpTimeouts,
    connect_info: ConnectInfo<A>,
    mut stopped: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    A: Clone + Send + Sync + 'static,
{
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let mut request =
            request.map(|body| axum::body::Body::new(TimedBody::new(body, timeouts.body)));
        request.extensions_mut().insert(connect_info.clone());
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "HTTP connection closed");
            }
        }
        () = async {
            // An error means the server is gone, which also means stop.
            let _ = stopped.wait_for(|stop| *stop).await;
        } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// The error of a body that did not arrive in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// Whether `error`, or any error it wraps, is a [`BodyTimeout`]; the gateway answers those 408.
pub fn body_timeout_in(error: &(dyn StdError + 'static)) -> Option<BodyTimeout> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(timeout) = error.downcast_ref::<BodyTimeout>() {
            return Some(*timeout);
        }
        current = error.source();
    }
    None
}

/// A request body that fails with [`BodyTimeout`] unless it ends within its timeout.
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<B> TimedBody<B> {
    /// `inner`, which must end within `timeout` from now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(self.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that never sends anything.
    struct Stalled;

    impl Body for Stalled {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_with_body_timeout() {
        let body = TimedBody::new(Stalled, Duration::from_secs(5));
        let error = body.collect().await.expect_err("the body times out");
        assert_eq!(
            body_timeout_in(error.as_ref()),
            Some(BodyTimeout(Duration::from_secs(5)))
        );
    }

    /// Aborting the loop's task closes the connections it serves, even one whose request is
    /// still running: they are its tasks, not detached ones.
    #[tokio::test]
    async fn aborting_the_server_cuts_off_its_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (entered, mut handler_entered) = tokio::sync::mpsc::channel::<()>(1);
        let router = Router::new().route(
            "/hang",
            axum::routing::get(move || {
                let entered = entered.clone();
                async move {
                    let _ = entered.send(()).await;
                    std::future::pending::<&'static str>().await
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let timeouts = HttpTimeouts {
            header: Duration::from_secs(60),
            body: Duration::from_secs(60),
        };
        let server = tokio::spawn(serve(
            listener,
            router,
            timeouts,
            std::future::pending::<()>(),
        ));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), handler_entered.recv())
            .await
            .expect("the request reached its handler");
        server.abort();
        let _ = server.await;
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
            .await
            .expect("the connection was closed with the server");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "closed, not answered: {read:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_is_passed_through() {
        let inner = http_body_util::Full::new(bytes::Bytes::from_static(b"{}"));
        let body = TimedBody::new(inner, Duration::from_secs(5));
        let collected = body.collect().await.expect("no timeout").to_bytes();
        assert_eq!(&collected[..], b"{}");
    }
}
