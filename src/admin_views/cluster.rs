//! Answering admin views for the whole cluster: asking every peer, merging, and reporting the
//! peers that did not answer.
//!
//! Peers are asked concurrently, each call bounded by the admin peer timeout, over a channel per
//! peer kept for the next view. A failed peer is listed with its error and the answer is built from
//! the others, so one dead node never hides the rest of the cluster.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use crate::peer_auth::PeerChannel;

use crate::admin::offenders::Window;
use crate::admin::peek;
use crate::admin::proto::{self, admin_client::AdminClient};
use crate::admin::sketch::{Counted, SpaceSaving};
use crate::proto::{self as wire, v1_client::V1Client};
use crate::request::LimitKey;
use crate::router::Router;

/// Why a call to a peer's admin service failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    /// The peer's address is not a valid URI authority.
    #[error("invalid peer address '{0}'")]
    InvalidAddress(String),
    /// The peer did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer answered with an error status (or could not be reached).
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// The admin views' calls to peers, over the router's shared channels.
pub struct AdminClients {
    timeout: Duration,
    token: Option<String>,
}

impl AdminClients {
    /// Clients whose calls take at most `timeout` and carry `token` as a bearer token.
    pub fn new(timeout: Duration, token: Option<String>) -> Self {
        Self {
            timeout,
            token: token.filter(|token| !token.is_empty()),
        }
    }

    /// The clients of `router`'s node, from its admin options (the peer timeout and the token).
    pub fn of(router: &Router) -> Self {
        let options = router.evaluator().admin().options();
        Self::new(options.peer_timeout, options.token.clone())
    }

    /// Asks the peer at `address` for its own counters and summary of `window`.
    pub async fn local_stats(
        &self,
        router: &Router,
        address: &str,
        window: proto::Window,
    ) -> Result<proto::LocalStatsResp, PeerCallError> {
        let mut client = AdminClient::new(self.channel(router, address)?);
        let request = self.request(proto::LocalStatsReq {
            window: window as i32,
        });
        self.bounded(client.local_stats(request)).await
    }

    /// Asks the peer at `address` for its stored state of `key`.
    pub async fn peek(
        &self,
        router: &Router,
        address: &str,
        key: &LimitKey,
    ) -> Result<proto::PeekLimitResp, PeerCallError> {
        let mut client = AdminClient::new(self.channel(router, address)?);
        let request = self.request(proto::PeekLimitReq {
            name: key.name.clone(),
            unique_key: key.unique_key.clone(),
        });
        self.bounded(client.peek_limit(request)).await
    }

    /// Asks the peer at `address` for its `HealthCheck`.
    pub async fn health(
        &self,
        router: &Router,
        address: &str,
    ) -> Result<wire::HealthCheckResp, PeerCallError> {
        let mut client = V1Client::new(self.channel(router, address)?);
        self.bounded(client.health_check(wire::HealthCheckReq {}))
            .await
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, PeerCallError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| PeerCallError::Timeout(self.timeout))?
            .map(tonic::Response::into_inner)
            .map_err(PeerCallError::from)
    }

    fn channel(&self, router: &Router, address: &str) -> Result<PeerChannel, PeerCallError> {
        router
            .peer_clients()
            .channel(address, self.timeout, false)
            .map_err(|_| PeerCallError::InvalidAddress(address.to_string()))
    }
}

/// A peer that did not answer a cluster-wide view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailedPeer {
    /// Its gRPC address.
    pub address: String,
    /// What went wrong.
    pub error: String,
}

/// Decision counts and the offender summary of several nodes, merged.
#[derive(Debug, Clone)]
pub struct ClusterStats {
    /// Decisions answered `UNDER_LIMIT`.
    pub under_limit: u64,
    /// Decisions answered `OVER_LIMIT`.
    pub over_limit: u64,
    /// The merged offender summary.
    pub offenders: SpaceSaving,
    /// The `/allow` resources discovered by any node, sorted, without repeats.
    pub discovered: Vec<String>,
    /// The nodes whose share is included.
    pub answered: Vec<String>,
    /// The nodes that did not answer.
    pub failed: Vec<FailedPeer>,
}

/// This node's own counters and summary of `window`.
pub fn local_stats(router: &Router, window: Window) -> proto::LocalStatsResp {
    let admin = router.evaluator().admin();
    let (under_limit, over_limit) = admin.decisions();
    let summary = admin.offenders(window, router.evaluator().clock().now_ms());
    proto::LocalStatsResp {
        advertise_address: router.peers().me().grpc_address.clone(),
        under_limit,
        over_limit,
        offenders: Some(sketch_to_wire(&summary)),
        discovered_resources: admin.discovered().names(),
    }
}

/// This node's share only, as a [`ClusterStats`].
pub fn node_stats(router: &Router, window: Window) -> ClusterStats {
    let mut stats = empty_stats(router);
    add(&mut stats, local_stats(router, window));
    stats
}

/// The counters and merged summary of `window` over every member of the cluster.
pub async fn cluster_stats(router: &Router, window: Window) -> ClusterStats {
    let membership = router.peers().membership();
    let me = &router.peers().me().grpc_address;
    let members: Vec<&str> = membership
        .peers
        .iter()
        .map(|peer| peer.grpc_address.as_str())
        .collect();
    router.forget_departed_peers();
    let others = members.iter().filter(|address| *address != me);
    let calls = others.map(|address| async move {
        let answer = AdminClients::of(router)
            .local_stats(router, address, window_to_wire(window))
            .await;
        (address.to_string(), answer)
    });
    let answers = join_all(calls).await;
    let mut stats = node_stats(router, window);
    for (address, answer) in answers {
        match answer {
            Ok(share) => add(&mut stats, share),
            Err(error) => stats.failed.push(FailedPeer {
                address,
                error: error.to_string(),
            }),
        }
    }
    stats.answered.sort();
    stats
}

fn empty_stats(router: &Router) -> ClusterStats {
    ClusterStats {
        under_limit: 0,
        over_limit: 0,
        offenders: SpaceSaving::new(router.evaluator().admin().options().capacity),
        discovered: Vec::new(),
        answered: Vec::new(),
        failed: Vec::new(),
    }
}

fn add(stats: &mut ClusterStats, share: proto::LocalStatsResp) {
    stats.under_limit = stats.under_limit.saturating_add(share.under_limit);
    stats.over_limit = stats.over_limit.saturating_add(share.over_limit);
    if let Some(sketch) = share.offenders {
        stats.offenders.merge(&sketch_from_wire(sketch));
    }
    merge_discovered(&mut stats.discovered, share.discovered_resources);
    stats.answered.push(share.advertise_address);
}

/// The most discovered resources taken from one peer's answer (its own bound is at most this).
pub const MAX_DISCOVERED_PER_PEER: usize = 10_000;

/// Adds a peer's discovered resources to `merged` (sorted, without repeats); a peer's list is
/// cut at [`MAX_DISCOVERED_PER_PEER`] and names that could not be resources are skipped.
pub fn merge_discovered(merged: &mut Vec<String>, share: Vec<String>) {
    merged.extend(
        share
            .into_iter()
            .take(MAX_DISCOVERED_PER_PEER)
            .filter(|name| crate::allow::resources::valid_name(name)),
    );
    merged.sort();
    merged.dedup();
}

/// The state of `key` as its owner stores it, and the owner's address. Reads only.
pub async fn peek(
    router: &Router,
    key: &LimitKey,
) -> Result<(String, proto::PeekLimitResp), PeerCallError> {
    match router.owner_of(key) {
        None => Ok((
            router.peers().me().grpc_address.clone(),
            peek_local(router, key),
        )),
        Some(owner) => {
            let state = AdminClients::of(router).peek(router, &owner, key).await?;
            Ok((owner, state))
        }
    }
}

/// This node's stored state of `key`.
pub fn peek_local(router: &Router, key: &LimitKey) -> proto::PeekLimitResp {
    peek::state_of(
        router.evaluator().store().get(key).as_ref(),
        router.evaluator().clock().now_ms(),
    )
}

/// One member as `/admin/peers` shows it.
#[derive(Debug, Clone)]
pub struct PeerView {
    /// Its gRPC (advertise) address.
    pub grpc_address: String,
    /// Its HTTP address, when known.
    pub http_address: String,
    /// Its data center.
    pub data_center: String,
    /// Whether it is the node answering.
    pub is_self: bool,
    /// Whether it is on this node's ring (same data center).
    pub in_ring: bool,
    /// Its own health answer, or why it could not be had.
    pub health: Result<wire::HealthCheckResp, String>,
    /// How long its health answer took, in ms.
    pub latency_ms: f64,
}

/// Every member and its health, as this node sees the cluster.
pub async fn peers(router: &Router) -> Vec<PeerView> {
    let membership = router.peers().membership();
    let me = router.peers().me().grpc_address.clone();
    let ring: Vec<&str> = membership
        .ring
        .peers()
        .iter()
        .map(|peer| peer.grpc_address.as_str())
        .collect();
    let views = membership.peers.iter().map(|peer| {
        let is_self = peer.grpc_address == me;
        let in_ring = ring.contains(&peer.grpc_address.as_str());
        async move {
            let started = Instant::now();
            let health = if is_self {
                router.health_check().map_err(|error| error.to_string())
            } else {
                AdminClients::of(router)
                    .health(router, &peer.grpc_address)
                    .await
                    .map_err(|error| error.to_string())
            };
            PeerView {
                grpc_address: peer.grpc_address.clone(),
                http_address: peer.http_address.clone(),
                data_center: peer.data_center.clone(),
                is_self,
                in_ring,
                health,
                latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            }
        }
    });
    join_all(views).await
}

/// The wire window of `window`.
pub fn window_to_wire(window: Window) -> proto::Window {
    match window {
        Window::SinceStart => proto::Window::SinceStart,
        Window::Minute => proto::Window::Minute,
        Window::Hour => proto::Window::Hour,
        Window::Day => proto::Window::Day,
    }
}

/// The window a wire value names (unknown values read as since start).
pub fn window_from_wire(value: i32) -> Window {
    match proto::Window::try_from(value) {
        Ok(proto::Window::Minute) => Window::Minute,
        Ok(proto::Window::Hour) => Window::Hour,
        Ok(proto::Window::Day) => Window::Day,
        _ => Window::SinceStart,
    }
}

/// A summary as it travels between nodes.
pub fn sketch_to_wire(summary: &SpaceSaving) -> proto::Sketch {
    proto::Sketch {
        capacity: u32::try_from(summary.capacity()).unwrap_or(u32::MAX),
        total: summary.total(),
        floor: summary.floor(),
        entries: summary
            .top(usize::MAX)
            .into_iter()
            .map(|entry| proto::SketchEntry {
                name: entry.name,
                unique_key: entry.unique_key,
                count: entry.count,
                error: entry.error,
            })
            .collect(),
    }
}

/// A summary received from a peer (a peer's capacity is honoured up to 10,000 entries).
pub fn sketch_from_wire(sketch: proto::Sketch) -> SpaceSaving {
    let capacity = usize::try_from(sketch.capacity)
        .unwrap_or(1)
        .clamp(1, 10_000);
    let entries = sketch
        .entries
        .into_iter()
        .map(|entry| Counted {
            name: entry.name,
            unique_key: entry.unique_key,
            count: entry.count,
            error: entry.error,
        })
        .collect();
    SpaceSaving::from_parts(capacity, sketch.total, sketch.floor, entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovered_resources_merge_sorted_without_repeats_or_bad_names() {
        let mut merged = Vec::new();
        merge_discovered(&mut merged, vec!["read".into(), "pay".into()]);
        merge_discovered(
            &mut merged,
            vec![
                "write".into(),
                "read".into(),
                "bad name".into(),
                String::new(),
            ],
        );
        assert_eq!(merged, ["pay", "read", "write"]);
        let flood: Vec<String> = (0..20_000).map(|i| format!("r{i}")).collect();
        merge_discovered(&mut merged, flood);
        assert_eq!(merged.len(), 3 + MAX_DISCOVERED_PER_PEER);
    }
}
