//! ringlimit: a peer-to-peer clustered rate-limit service, wire-compatible with Gubernator v2.
//!
//! # What a library user gets
//!
//! - [`client::Client`]: a gRPC client of any ringlimit (or Gubernator) node, with `consume`;
//! - [`EmbeddedNode`] ([`embedded`]): a cluster member inside your own process, answering in
//!   process and over the network;
//! - [`middleware::RateLimitLayer`]: a `tower` layer for axum and tonic services, backed by a
//!   client or an embedded node;
//! - [`algorithms`]: token bucket, leaky bucket and Gregorian windows as pure functions of
//!   (bucket, request, now), with [`request`] (validation of wire items) and [`proto`] (the wire
//!   types).
//!
//! With `default-features = false` the library compiles neither the command line's dependencies
//! (the `cli` feature: reqwest, indicatif, hdrhistogram) nor Kubernetes discovery (the `k8s`
//! feature: kube, k8s-openapi).
//!
//! # What the binary is made of
//!
//! The other public modules are what the `ringlimit` binary and the integration tests build on
//! ([`server`], [`config`], [`peers`], [`http`], [`grpc`], [`tls`], [`metrics`], [`admin`],
//! [`allow`], [`handoff`], [`proxy`], [`limits`], ...). Inside the crate, one request goes
//! surface → router → evaluator (or a peer) → store: the router (`router.rs`) owns the cluster
//! (membership, forwarding, owner-failure, handoff gating, health), the evaluator
//! (`evaluator.rs`) owns this node's decisions, and the node (`node.rs`) only wires them; see
//! `architecture.md`.

#![warn(missing_docs)]

pub mod admin;
pub(crate) mod admin_views;
pub mod algorithms;
pub mod allow;
pub(crate) mod batching;
pub mod build_info;
pub mod client;
pub mod clock;
pub mod config;
pub mod embedded;
pub mod error;
pub(crate) mod evaluator;
pub(crate) mod global;
pub mod go_duration;
pub mod grpc;
pub mod grpc_codec;
pub mod grpc_connections;
pub mod grpc_runtimes;
pub mod grpc_unary;
pub mod handoff;
pub mod http;
pub(crate) mod json_lists;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub(crate) mod mutex;
pub(crate) mod node;
pub(crate) mod owed;
pub(crate) mod owner_failure;
pub mod peer_auth;
pub mod peer_transport;
pub mod peer_unary;
pub mod peers;
pub mod proto;
pub mod proxy;
pub mod refill;
pub mod request;
pub mod rls;
pub(crate) mod router;
pub(crate) mod secret;
pub mod server;
#[cfg(test)]
mod shutdown_tests;
pub mod store;
pub(crate) mod tasks;
pub mod telemetry;
#[cfg(test)]
mod test_nodes;
pub mod tls;
pub mod wire_items;
pub(crate) mod xorshift;

pub use embedded::EmbeddedNode;
pub use node::Node;
