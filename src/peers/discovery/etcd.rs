//! PLACEHOLDER: etcd discovery (being written).

use crate::config::ServerConfig;
use crate::peers::{PeerInfo, PeerList};

/// Why etcd discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// Not built yet.
    #[error("etcd discovery is not available in this build")]
    Unavailable,
}

/// A running etcd registration and watch.
pub struct EtcdDiscovery;

impl EtcdDiscovery {
    /// Registers `me` and watches the prefix, keeping `peers` current.
    pub async fn start(
        _config: &ServerConfig,
        _me: PeerInfo,
        _peers: PeerList,
    ) -> Result<Self, EtcdError> {
        Err(EtcdError::Unavailable)
    }

    /// Deletes the registration, revokes the lease and stops watching.
    pub async fn leave(self) {}
}
