//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`), configured like
//! envoyproxy/ratelimit, counted by the cluster.
//!
//! Envoy users run envoyproxy/ratelimit with Redis; ringlimit answers the same calls with the same
//! configuration files, but keeps the counters in its own ring. Every matched descriptor limit
//! becomes an ordinary Gubernator item ([`counters`]) whose key holds the domain, the descriptor's
//! entries and the window, so ownership, batching, forwarding and handoff are the cluster's as for
//! any `GetRateLimits` item, and the only thing this module needs from the node is "evaluate this
//! batch" ([`counters::Counters`]). Everything else is pure code over a clock: the configuration
//! ([`config`], read through [`yaml`] for line numbers), the windows ([`window`]) and the decision
//! ([`decide`]). [`reload`] keeps the configuration current, [`service`] and [`http`] are the
//! gRPC and HTTP faces, [`metrics`] the envoy-shaped counters. docs/envoy.md has the reasoning.

pub mod config;
pub mod counters;
pub mod decide;
pub mod window;
pub mod yaml;

/// Envoy's generated wire types (from the `envoy-types` crate).
pub mod wire {
    pub use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
        RateLimitDescriptor, rate_limit_descriptor,
    };
    pub use envoy_types::pb::envoy::service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse, rate_limit_response, rate_limit_service_client,
        rate_limit_service_server,
    };
}
