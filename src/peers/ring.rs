//! PLACEHOLDER: the consistent-hash ring (being written).

use super::PeerInfo;

/// Which peer owns which key.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    peers: Vec<PeerInfo>,
}

impl Ring {
    /// A ring over `peers` (the caller passes only the local data center's peers).
    pub fn new(peers: &[PeerInfo]) -> Self {
        Self {
            peers: peers.to_vec(),
        }
    }

    /// The owner of `hash_key` (`name_unique_key`), or `None` for an empty ring.
    pub fn owner(&self, _hash_key: &str) -> Option<&PeerInfo> {
        self.peers.first()
    }

    /// The number of peers in the ring.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the ring has no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}
