//! The admin views: the `/admin/*` routes ([`http`], and r8limiter's `/admin/resources` and
//! `/admin/user/{user_id}` in [`resources`]), the node-to-node `ringlimit.v1.Admin` service
//! ([`grpc`]), and the fan-out that answers for the whole cluster by asking every peer and merging
//! ([`cluster`]; a peer that does not answer is listed, not fatal).
//!
//! They hold the [`Router`](crate::router::Router) (owners, peers, health), so they sit with the
//! other surfaces; what they report (counters, offender summaries, discovered resources) and their
//! access and redaction rules are in [`crate::admin`], which the evaluator records into.

pub mod cluster;
pub mod grpc;
pub mod http;
pub mod resources;
