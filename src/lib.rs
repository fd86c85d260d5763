//! ringlimit: a peer-to-peer clustered rate-limit service, wire-compatible with Gubernator v2.
//!
//! The crate is organised as one concept per module:
//! - [`algorithms`]: token and leaky bucket, pure functions of (bucket, request, now);
//! - [`request`]: validation of wire items into limit keys and algorithm requests;
//! - [`store`]: the bounded in-memory store, atomic per key;
//! - [`node`]: the single code path behind every API surface;
//! - [`grpc`] and [`http`]: thin translations from gRPC and JSON to [`node::Node`];
//! - [`server`]: listeners, health, reflection and graceful shutdown;
//! - [`config`], [`metrics`], [`peers`], [`clock`], [`error`]: the supporting pieces.

#![warn(missing_docs)]

pub mod algorithms;
pub mod batching;
pub mod clock;
pub mod config;
pub mod error;
pub mod global;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod proto;
pub mod request;
pub mod server;
pub mod store;
pub mod tls;
