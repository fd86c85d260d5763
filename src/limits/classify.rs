//! Which admission pool a call draws from, decided from its path alone.
//!
//! Every RPC and HTTP route costs the node work, so every one takes a slot, except the probes: a
//! saturated node must still answer its health checks, or orchestrators would restart it for
//! being busy. Node-to-node services draw from their own pool, so clients that fill theirs cannot
//! starve the peers that forward, sync, hand off and fan out through this node (which would turn
//! one node's overload into the whole cluster's). Pure: a path in, a class out.

/// The admission pool of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    /// A probe: never refused for load.
    Exempt,
    /// A call from another node: the peer pool (`GUBER_MAX_CONCURRENT_PEER_REQUESTS`).
    Peer,
    /// Everything else: the client pool (`GUBER_MAX_CONCURRENT_REQUESTS`).
    Client,
}

/// gRPC services only other nodes call.
const PEER_SERVICES: [&str; 4] = [
    "/pb.gubernator.PeersV1/",
    "/ringlimit.v1.Handoff/",
    "/ringlimit.v1.AllowV1/",
    "/ringlimit.v1.Admin/",
];

/// Probe paths, gRPC and HTTP.
const PROBES: [&str; 6] = [
    "/pb.gubernator.V1/HealthCheck",
    "/pb.gubernator.V1/LiveCheck",
    "/v1/HealthCheck",
    "/v1/LiveCheck",
    "/readyz",
    "/livez",
];

/// The pool a call to `path` (the request URI's path) draws from.
pub fn classify(path: &str) -> CallClass {
    if PROBES.contains(&path) || path.starts_with("/grpc.health.v1.Health/") {
        CallClass::Exempt
    } else if PEER_SERVICES
        .iter()
        .any(|service| path.starts_with(service))
    {
        CallClass::Peer
    } else {
        CallClass::Client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_class(class: CallClass, paths: &[&str]) {
        for path in paths {
            assert_eq!(classify(path), class, "{path}");
        }
    }

    #[test]
    fn probes_are_exempt() {
        assert_class(
            CallClass::Exempt,
            &[
                "/pb.gubernator.V1/HealthCheck",
                "/pb.gubernator.V1/LiveCheck",
                "/grpc.health.v1.Health/Check",
                "/grpc.health.v1.Health/Watch",
                "/v1/HealthCheck",
                "/v1/LiveCheck",
                "/readyz",
                "/livez",
            ],
        );
    }

    #[test]
    fn node_to_node_services_use_the_peer_pool() {
        assert_class(
            CallClass::Peer,
            &[
                "/pb.gubernator.PeersV1/GetPeerRateLimits",
                "/pb.gubernator.PeersV1/UpdatePeerGlobals",
                "/ringlimit.v1.Handoff/Transfer",
                "/ringlimit.v1.AllowV1/Allow",
                "/ringlimit.v1.Admin/LocalStats",
            ],
        );
    }

    #[test]
    fn every_other_rpc_and_route_uses_the_client_pool() {
        assert_class(
            CallClass::Client,
            &[
                "/pb.gubernator.V1/GetRateLimits",
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "/v1/GetRateLimits",
                "/allow",
                "/metrics",
                "/admin/stats",
                "/admin/keys/a/b",
                "/",
                "/unknown",
                // Look-alikes of exempt paths are not exempt.
                "/v1/HealthCheck/x",
                "/pb.gubernator.V1/HealthCheckX",
            ],
        );
    }
}
