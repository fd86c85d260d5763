//! The peers this node knows about: itself and, in a cluster, the other nodes.
//!
//! A single node's peer list holds only itself; discovery (static lists, etcd, DNS) replaces the list
//! as membership changes, and every replacement rebuilds the consistent-hash [`Ring`] of the local
//! data center's peers. Routing and health answers read one consistent [`Membership`] snapshot.

pub mod budget;
pub mod client;
pub mod discovery;
pub mod failures;
pub mod liveness;
pub mod ring;

use std::sync::{Arc, RwLock};

pub use ring::Ring;

use crate::proto;

/// One node of the cluster as peers see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// The gRPC address peers and clients reach it on (its advertise address).
    pub grpc_address: String,
    /// Its HTTP gateway address, when known.
    pub http_address: String,
    /// Its data center; only peers of the local data center share ownership.
    pub data_center: String,
}

/// One consistent view of the cluster: the peers and the ring built from them.
#[derive(Debug, Clone)]
pub struct Membership {
    /// Every known peer, of every data center, sorted by gRPC address.
    pub peers: Vec<PeerInfo>,
    /// The ring of the local data center's peers.
    pub ring: Ring,
}

impl Membership {
    fn new(mut peers: Vec<PeerInfo>, data_center: &str) -> Self {
        peers.sort_by(|a, b| a.grpc_address.cmp(&b.grpc_address));
        peers.dedup_by(|a, b| a.grpc_address == b.grpc_address);
        let local: Vec<PeerInfo> = peers
            .iter()
            .filter(|peer| peer.data_center == data_center)
            .cloned()
            .collect();
        Self {
            ring: Ring::new(&local),
            peers,
        }
    }
}

/// The current membership, shared by every part of the node.
#[derive(Debug, Clone)]
pub struct PeerList {
    me: PeerInfo,
    current: Arc<RwLock<Arc<Membership>>>,
    /// Bumped on every change, for tasks that react to membership changes (state handoff).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl PeerList {
    /// A list that holds only this node.
    pub fn single(me: PeerInfo) -> Self {
        let membership = Membership::new(vec![me.clone()], &me.data_center);
        Self {
            me,
            current: Arc::new(RwLock::new(Arc::new(membership))),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// This node.
    pub fn me(&self) -> &PeerInfo {
        &self.me
    }

    /// The current membership snapshot.
    pub fn membership(&self) -> Arc<Membership> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// A snapshot of every known peer, this node included when it is registered.
    pub fn snapshot(&self) -> Vec<PeerInfo> {
        self.membership().peers.clone()
    }

    /// Replaces the peer list and rebuilds the ring. Returns whether anything changed.
    pub fn replace(&self, peers: Vec<PeerInfo>) -> bool {
        let membership = Membership::new(peers, &self.me.data_center);
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if current.peers == membership.peers {
            return false;
        }
        *current = Arc::new(membership);
        drop(current);
        self.changes.send_modify(|version| *version += 1);
        true
    }

    /// A receiver told of every change made by [`PeerList::replace`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The health answer for this membership: healthy unless this node is missing from its own
    /// list.
    pub fn health(&self) -> proto::HealthCheckResp {
        let membership = self.membership();
        let peers = &membership.peers;
        let (local, region): (Vec<_>, Vec<_>) = peers
            .iter()
            .partition(|peer| peer.data_center == self.me.data_center);
        let registered = peers
            .iter()
            .any(|peer| peer.grpc_address == self.me.grpc_address);
        let to_health = |peer: &&PeerInfo| proto::PeerHealthResp {
            grpc_address: peer.grpc_address.clone(),
            data_center: peer.data_center.clone(),
        };
        let (status, message) = if registered {
            ("healthy", String::new())
        } else {
            (
                "unhealthy",
                "this instance is not found in the peer list".to_string(),
            )
        };
        proto::HealthCheckResp {
            status: status.to_string(),
            message,
            peer_count: i32::try_from(peers.len()).unwrap_or(i32::MAX),
            advertise_address: self.me.grpc_address.clone(),
            local_peers: local.iter().map(to_health).collect(),
            region_peers: region.iter().map(to_health).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(address: &str, data_center: &str) -> PeerInfo {
        PeerInfo {
            grpc_address: address.into(),
            http_address: String::new(),
            data_center: data_center.into(),
        }
    }

    #[test]
    fn a_single_node_is_healthy_and_lists_itself() {
        let list = PeerList::single(peer("A", ""));
        let health = list.health();
        assert_eq!(health.status, "healthy");
        assert_eq!(health.message, "");
        assert_eq!(health.peer_count, 1);
        assert_eq!(health.advertise_address, "A");
        assert_eq!(health.local_peers.len(), 1);
        assert_eq!(health.local_peers[0].grpc_address, "A");
        assert!(health.region_peers.is_empty());
    }

    #[test]
    fn missing_from_its_own_list_is_unhealthy() {
        let list = PeerList::single(peer("A", ""));
        list.replace(vec![peer("B", "")]);
        let health = list.health();
        assert_eq!(health.status, "unhealthy");
        assert_eq!(
            health.message,
            "this instance is not found in the peer list"
        );
    }

    #[test]
    fn peers_of_other_data_centers_are_region_peers() {
        let list = PeerList::single(peer("A", "east"));
        list.replace(vec![peer("A", "east"), peer("B", "west")]);
        let health = list.health();
        assert_eq!(health.peer_count, 2);
        assert_eq!(health.local_peers.len(), 1);
        assert_eq!(health.region_peers[0].grpc_address, "B");
    }
}
