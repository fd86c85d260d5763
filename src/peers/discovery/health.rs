//! Whether a clustered node is serving alone because it has no discovery backend.
//!
//! With etcd (or DNS) unreachable at start, a node serves with only itself in its peer list: it
//! answers every key from its own state. Every node started that way does the same, so a cluster
//! of N such nodes admits up to N times each limit, a silent split brain. Health must say so:
//! HealthCheck, `grpc.health.v1` (Kubernetes readiness) and `ringlimit healthcheck` report such a
//! node unhealthy until it has registered (etcd) or resolved its peers (DNS), unless the operator
//! chose availability with `GUBER_SERVE_ALONE_HEALTHY`. Requests are answered either way.
//!
//! A node that lost its backend but still holds a list of several peers is not alone: it keeps
//! routing with the last list, and stays healthy, so an etcd outage does not take every node out of
//! its Service at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The discovery backend a node depends on for membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// etcd registration and watch.
    Etcd,
    /// DNS resolution.
    Dns,
}

/// The live state of a node's discovery backend, shared with the discovery task.
#[derive(Debug, Clone)]
pub struct BackendStatus {
    /// Which backend.
    pub backend: Backend,
    /// True while the node is registered (etcd) or its last resolution succeeded (DNS).
    pub connected: Arc<AtomicBool>,
    /// What the backend is reached at (etcd endpoints, DNS name), for the health message.
    pub target: String,
}

impl BackendStatus {
    /// Whether the backend is connected now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// Why a node is unhealthy because it serves alone without its discovery backend, or `None`.
///
/// `local_peers` is the number of peers in this node's data center, itself included;
/// `serve_alone_healthy` is `GUBER_SERVE_ALONE_HEALTHY`.
pub fn serving_alone(
    backend: Backend,
    connected: bool,
    target: &str,
    local_peers: usize,
    serve_alone_healthy: bool,
) -> Option<String> {
    if connected || local_peers > 1 || serve_alone_healthy {
        return None;
    }
    let cause = match backend {
        Backend::Etcd => format!("not registered in etcd ({target} unreachable)"),
        Backend::Dns => format!("no DNS answer for {target}"),
    };
    Some(format!(
        "{cause}: this node serves alone, so each limit may be granted once per such node \
         (set GUBER_SERVE_ALONE_HEALTHY=true to report this as healthy)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_and_disconnected_is_unhealthy_and_names_the_cause() {
        let message = serving_alone(Backend::Etcd, false, "127.0.0.1:1", 1, false).unwrap();
        assert!(message.starts_with("not registered in etcd (127.0.0.1:1 unreachable)"));
        assert!(message.contains("GUBER_SERVE_ALONE_HEALTHY"));
        let message = serving_alone(Backend::Dns, false, "peers.local", 1, false).unwrap();
        assert!(message.starts_with("no DNS answer for peers.local"));
    }

    #[test]
    fn connected_or_with_peers_or_opted_out_is_healthy() {
        assert_eq!(serving_alone(Backend::Etcd, true, "e", 1, false), None);
        assert_eq!(
            serving_alone(Backend::Etcd, false, "e", 3, false),
            None,
            "a lost backend with a list of peers keeps the last list"
        );
        assert_eq!(serving_alone(Backend::Etcd, false, "e", 1, true), None);
    }
}
