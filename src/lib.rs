//! ringlimit: a peer-to-peer clustered rate-limit service, wire-compatible with Gubernator v2.

#![warn(missing_docs)]

pub mod algorithms;
pub mod clock;
pub mod http;
pub mod proto;
