//! The peers this node knows about: itself and, in a cluster, the other nodes.
//!
//! A single node's peer list holds only itself; discovery (static lists, etcd, DNS) replaces the list
//! as membership changes, and every replacement rebuilds the consistent-hash [`Ring`] of the local
//! data center's peers. Routing and health answers read one consistent [`Membership`] snapshot.

pub mod client;
pub mod discovery;
pub mod failures;
pub mod liveness;
pub mod ring;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

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
    /// Which change this is: 0 for the list a node starts with, one more for every change since.
    pub version: u64,
    /// For each peer, the version at which it last entered the list.
    entered_at: HashMap<String, u64>,
}

impl Membership {
    /// Peers of the ring (other than `me`) that entered the list after `version`: new peers, and
    /// peers that left and came back (a restart), even when both changes happened between two
    /// looks at the list and the ring looks the same as before.
    pub fn ring_peers_entered_after(&self, version: u64, me: &str) -> Vec<String> {
        self.ring
            .peers()
            .iter()
            .map(|peer| peer.grpc_address.as_str())
            .filter(|address| *address != me)
            .filter(|address| {
                self.entered_at
                    .get(*address)
                    .is_some_and(|at| *at > version)
            })
            .map(str::to_string)
            .collect()
    }

    fn new(mut peers: Vec<PeerInfo>, data_center: &str, previous: Option<&Membership>) -> Self {
        peers.sort_by(|a, b| a.grpc_address.cmp(&b.grpc_address));
        peers.dedup_by(|a, b| a.grpc_address == b.grpc_address);
        let local: Vec<PeerInfo> = peers
            .iter()
            .filter(|peer| peer.data_center == data_center)
            .cloned()
            .collect();
        let version = previous.map_or(0, |previous| previous.version + 1);
        let entered_at = peers
            .iter()
            .map(|peer| {
                let at = previous
                    .and_then(|previous| previous.entered_at.get(&peer.grpc_address))
                    .copied()
                    .unwrap_or(version);
                (peer.grpc_address.clone(), at)
            })
            .collect();
        Self {
            ring: Ring::new(&local),
            peers,
            version,
            entered_at,
        }
    }
}

/// How long a peer that left the list still counts as a recent member: a leaving node hands off
/// what changed after it deregistered, and its receivers must still take that from it.
pub const RECENT_MEMBER_TTL: Duration = Duration::from_secs(60);

/// The most recently departed peers remembered (the oldest are forgotten first).
const RECENT_MEMBERS_CAPACITY: usize = 256;

/// The current membership, shared by every part of the node.
#[derive(Debug, Clone)]
pub struct PeerList {
    me: PeerInfo,
    current: Arc<RwLock<Arc<Membership>>>,
    /// Bumped on every change, for tasks that react to membership changes (state handoff).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Peers that left the list recently (gRPC address, when), oldest first.
    departed: Arc<Mutex<VecDeque<(String, Instant)>>>,
}

impl PeerList {
    /// A list that holds only this node.
    pub fn single(me: PeerInfo) -> Self {
        let membership = Membership::new(vec![me.clone()], &me.data_center, None);
        Self {
            me,
            current: Arc::new(RwLock::new(Arc::new(membership))),
            changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            departed: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    /// Whether `address` is a member now, or left the list less than [`RECENT_MEMBER_TTL`] ago.
    pub fn is_or_was_member(&self, address: &str) -> bool {
        if self
            .membership()
            .peers
            .iter()
            .any(|peer| peer.grpc_address == address)
        {
            return true;
        }
        let now = Instant::now();
        let departed = crate::mutex::lock(&self.departed);
        departed.iter().any(|(peer, left)| {
            peer == address && now.saturating_duration_since(*left) < RECENT_MEMBER_TTL
        })
    }

    /// Remembers the peers of `before` that `after` no longer holds.
    fn remember_departed(&self, before: &[PeerInfo], after: &[PeerInfo]) {
        let now = Instant::now();
        let mut departed = crate::mutex::lock(&self.departed);
        departed.retain(|(peer, left)| {
            now.saturating_duration_since(*left) < RECENT_MEMBER_TTL
                && !after.iter().any(|member| &member.grpc_address == peer)
        });
        for peer in before {
            if !after
                .iter()
                .any(|member| member.grpc_address == peer.grpc_address)
            {
                departed.push_back((peer.grpc_address.clone(), now));
            }
        }
        while departed.len() > RECENT_MEMBERS_CAPACITY {
            departed.pop_front();
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
        let mut current = match self.current.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        let membership = Membership::new(peers, &self.me.data_center, Some(&current));
        if current.peers == membership.peers {
            return false;
        }
        let before = std::mem::replace(&mut *current, Arc::new(membership));
        let after = Arc::clone(&current);
        drop(current);
        self.remember_departed(&before.peers, &after.peers);
        self.changes.send_modify(|version| *version += 1);
        true
    }

    /// How many times [`PeerList::replace`] changed the membership.
    pub fn version(&self) -> u64 {
        *self.changes.borrow()
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

    #[test]
    fn departed_peers_stay_recent_members_until_they_return_or_expire() {
        let peer = |address: &str| PeerInfo {
            grpc_address: address.into(),
            http_address: String::new(),
            data_center: String::new(),
        };
        let list = PeerList::single(peer("a:1"));
        assert!(list.is_or_was_member("a:1"));
        assert!(!list.is_or_was_member("b:1"));
        list.replace(vec![peer("a:1"), peer("b:1")]);
        assert!(list.is_or_was_member("b:1"));
        list.replace(vec![peer("a:1")]);
        assert!(list.is_or_was_member("b:1"), "b left just now");
        assert!(!list.is_or_was_member("c:1"));
        list.replace(vec![peer("a:1"), peer("b:1")]);
        list.replace(vec![peer("a:1"), peer("b:1"), peer("c:1")]);
        assert_eq!(list.departed.lock().unwrap().len(), 0, "b returned");
    }

    fn peer(address: &str, data_center: &str) -> PeerInfo {
        PeerInfo {
            grpc_address: address.into(),
            http_address: String::new(),
            data_center: data_center.into(),
        }
    }

    #[test]
    fn a_peer_that_left_and_came_back_shows_as_entered_after_the_earlier_look() {
        let list = PeerList::single(peer("A", ""));
        list.replace(vec![peer("A", ""), peer("B", ""), peer("C", "")]);
        let looked = list.membership();
        assert_eq!(looked.version, 1);
        assert_eq!(
            looked.ring_peers_entered_after(0, "A"),
            vec!["B".to_string(), "C".to_string()]
        );
        assert!(looked.ring_peers_entered_after(1, "A").is_empty());
        // B restarts: it leaves and comes back before anyone looks again.
        list.replace(vec![peer("A", ""), peer("C", "")]);
        list.replace(vec![peer("A", ""), peer("B", ""), peer("C", "")]);
        let now = list.membership();
        assert_eq!(
            now.ring.peers(),
            looked.ring.peers(),
            "the ring looks the same"
        );
        assert_eq!(now.version, 3);
        assert_eq!(
            now.ring_peers_entered_after(looked.version, "A"),
            vec!["B".to_string()]
        );
        // An unchanged list is not a change.
        assert!(!list.replace(vec![peer("C", ""), peer("B", ""), peer("A", "")]));
        assert_eq!(list.membership().version, 3);
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
