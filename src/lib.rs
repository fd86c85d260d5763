//! ringlimit: a peer-to-peer clustered rate-limit service, wire-compatible with Gubernator v2.
//!
//! The crate is organised as one concept per module:
//! - [`algorithms`]: token and leaky bucket, pure functions of (bucket, request, now);
//! - [`request`]: validation of wire items into limit keys and algorithm requests;
//! - [`store`]: the bounded in-memory store, atomic per key;
//! - [`node`]: the single code path behind every API surface;
//! - [`grpc`] and [`http`]: thin translations from gRPC and JSON to [`node::Node`];
//! - [`server`]: listeners, health, reflection and graceful shutdown;
//! - [`config`], [`metrics`], [`peers`], [`clock`], [`error`]: the supporting pieces;
//! - [`admin`]: the admin views (stats, top offenders, one key's state, peers);
//! - [`client`], [`embedded`] and [`middleware`]: the Rust library (a client with `consume`, a
//!   node inside your own process, and a `tower` layer for axum and tonic services).

#![warn(missing_docs)]

pub mod admin;
pub mod algorithms;
pub mod allow;
pub mod batching;
pub mod build_info;
pub mod client;
pub mod clock;
pub mod config;
pub mod embedded;
pub mod error;
pub mod evaluator;
pub mod global;
pub mod go_duration;
pub mod grpc;
pub mod handoff;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod node;
pub mod owed;
pub mod owner_failure;
pub mod peers;
pub mod proto;
pub mod proxy;
pub mod refill;
pub mod request;
pub mod router;
pub mod secret;
pub mod server;
pub mod store;
pub mod tls;

pub use embedded::EmbeddedNode;
