//! Protection against overload and hostile clients, kept apart from request logic.
//!
//! A rate limiter sits in front of everything else, so it must itself stay up when clients misbehave
//! or simply send too much. Every guard here sheds work early and cheaply instead of queueing it:
//!
//! - [`admission`]: at most `GUBER_MAX_CONCURRENT_REQUESTS` client calls (every RPC and route but
//!   the probes) and `GUBER_MAX_CONCURRENT_PEER_REQUESTS` calls from other nodes execute at once;
//!   the next one is refused at once with `RESOURCE_EXHAUSTED` (HTTP 429). [`classify`] decides
//!   the pool from the path.
//! - [`deadline`]: a caller's `grpc-timeout` bounds the node's work, including the calls it makes
//!   to peers on the caller's behalf; an expired deadline is answered `DEADLINE_EXCEEDED`.
//! - [`layer`]: the tower layer that applies both to the gRPC server and to the HTTP gateway.
//! - [`connections`]: at most `GUBER_MAX_CONNECTIONS` open connections per listener.
//! - [`idle`]: gRPC connections that send nothing for `GUBER_GRPC_IDLE_TIMEOUT` are closed.
//! - [`http_server`]: the HTTP/1.1 server loop with header and body read timeouts, so slow clients
//!   (slowloris) cannot hold connections and memory.
//! - [`nodelay`]: accepted connections with `TCP_NODELAY`, so multi-segment answers never wait
//!   40 ms for a delayed ACK.
//!
//! Input limits on the request itself (message size, key and name length, i64 ranges) live where
//! requests are decoded and validated: [`crate::request`], [`crate::http::gateway`], [`crate::grpc`].

/// Implements `AsyncWrite` and tonic's `Connected` for a connection wrapper `$wrapper<T>` by
/// passing both straight to its `io` field: the wrappers here change how a connection is read or
/// how long it lives, never what is written or where it came from.
macro_rules! pass_writes_and_connect_info_to_io {
    ($wrapper:ident) => {
        impl<T: ::tokio::io::AsyncWrite + Unpin> ::tokio::io::AsyncWrite for $wrapper<T> {
            fn poll_write(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }

            fn poll_flush(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.io).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
            }
        }

        impl<T: ::tonic::transport::server::Connected> ::tonic::transport::server::Connected
            for $wrapper<T>
        {
            type ConnectInfo = T::ConnectInfo;

            fn connect_info(&self) -> Self::ConnectInfo {
                self.io.connect_info()
            }
        }
    };
}

pub mod admission;
pub mod classify;
pub mod connections;
pub mod deadline;
pub mod http_server;
pub mod idle;
pub mod layer;
pub mod nodelay;

pub use admission::{Admission, AdmissionPools};
pub use connections::ConnectionLimit;
pub use layer::{CallLimitsLayer, GrpcRejection, Rejection};
