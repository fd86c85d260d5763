//! PLACEHOLDER: DNS discovery (being written).

use crate::config::ServerConfig;
use crate::peers::{PeerInfo, PeerList};

/// Why DNS discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Not built yet.
    #[error("dns discovery is not available in this build")]
    Unavailable,
}

/// A running DNS poller.
pub struct DnsDiscovery;

impl DnsDiscovery {
    /// Resolves the name now and then every poll interval, keeping `peers` current.
    pub async fn start(
        _config: &ServerConfig,
        _me: PeerInfo,
        _peers: PeerList,
    ) -> Result<Self, DnsError> {
        Err(DnsError::Unavailable)
    }

    /// Stops polling.
    pub async fn stop(self) {}
}
