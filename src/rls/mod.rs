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

/// The file descriptor set of `envoy.service.ratelimit.v3.RateLimitService` for gRPC reflection
/// (built from `proto/reflection/`, the wire shape only; see build.rs).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("envoy_rls_descriptor");

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

pub mod http;
pub mod metrics;
pub mod reload;
pub mod service;

use std::path::PathBuf;
use std::sync::Arc;

use crate::node::Node;

/// The RLS of a node: the service and its configuration state.
pub struct Rls {
    /// The service (gRPC and `/json`).
    pub service: Arc<service::RlsService<Node>>,
    /// The configuration in force.
    pub state: Arc<reload::RlsState>,
}

/// What a node's RLS is started with (`GUBER_RLS_*`; translated from the node's configuration by
/// `config::options`, so this module knows nothing of the command line).
#[derive(Debug, Clone)]
pub struct RlsOptions {
    /// The configuration file (`GUBER_RLS_CONFIG`), if any.
    pub config_path: Option<PathBuf>,
    /// The service's answering options.
    pub service: decide::Options,
}

/// Loads the configuration file (an error fails the start) and builds the service over `node`.
pub fn start(options: RlsOptions, node: &Arc<Node>) -> Result<Rls, config::ConfigError> {
    let source = options.config_path;
    let metrics = Arc::new(metrics::RlsMetrics::new(node.metrics()));
    let state = Arc::new(reload::RlsState::load(source, metrics)?);
    let service = Arc::new(service::RlsService::new(
        Arc::clone(node),
        Arc::clone(&state),
        options.service,
    ));
    Ok(Rls { service, state })
}
