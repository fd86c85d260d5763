//! Peer discovery: how a node learns the cluster's membership and keeps its [`PeerList`] current.
//!
//! Each mechanism runs in the background and calls [`PeerList::replace`] whenever membership
//! changes; the ring is rebuilt there. [`DiscoveryHandle::leave`] takes the node out of the cluster
//! on graceful shutdown (for etcd: delete the key and revoke the lease; for DNS and Kubernetes:
//! stop watching) before draining.

pub mod dns;
pub mod etcd;
pub mod health;
pub mod k8s;

use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;

use super::{PeerInfo, PeerList};

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The configuration is incomplete or inconsistent for the chosen mechanism.
    #[error("{0}")]
    Config(String),
    /// etcd discovery failed to start.
    #[error(transparent)]
    Etcd(#[from] etcd::EtcdError),
    /// DNS discovery failed to start.
    #[error(transparent)]
    Dns(#[from] dns::DnsError),
    /// A `GUBER_K8S_*` setting is missing or wrong.
    #[error(transparent)]
    K8sSettings(#[from] k8s::SettingsError),
    /// Kubernetes discovery failed to start.
    #[cfg(feature = "k8s")]
    #[error(transparent)]
    K8s(#[from] k8s::K8sError),
}

/// Which discovery mechanism a node runs (`GUBER_PEER_DISCOVERY_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mechanism {
    /// No discovery: a single node that owns every key.
    #[default]
    None,
    /// A fixed list of peers from `GUBER_PEERS`.
    Static,
    /// Registration and watch in etcd.
    Etcd,
    /// A/AAAA records of `GUBER_DNS_FQDN`, polled.
    Dns,
    /// The Kubernetes API, watched.
    K8s,
}

/// What discovery is started with: the mechanism and the settings of each (only the chosen one's
/// are read). Built from the node's configuration by `config::options`, so discovery knows
/// nothing of the command line.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryOptions {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// `GUBER_PEERS`, for [`Mechanism::Static`].
    pub peers: Vec<String>,
    /// For [`Mechanism::Etcd`].
    pub etcd: etcd::EtcdOptions,
    /// For [`Mechanism::Dns`].
    pub dns: dns::DnsOptions,
    /// For [`Mechanism::K8s`].
    pub k8s: k8s::K8sOptions,
}

/// A running discovery mechanism.
pub enum DiscoveryHandle {
    /// Nothing runs: the peer list was set once.
    Fixed,
    /// etcd registration and watch.
    Etcd(etcd::EtcdDiscovery),
    /// DNS polling.
    Dns(dns::DnsDiscovery),
    /// A Kubernetes API watch.
    #[cfg(feature = "k8s")]
    K8s(k8s::K8sDiscovery),
}

impl DiscoveryHandle {
    /// The state of the backend this node's membership depends on; `None` for fixed lists.
    pub fn backend_status(&self) -> Option<health::BackendStatus> {
        match self {
            DiscoveryHandle::Etcd(etcd) => Some(etcd.backend_status()),
            DiscoveryHandle::Dns(dns) => Some(dns.backend_status()),
            DiscoveryHandle::Fixed => None,
            #[cfg(feature = "k8s")]
            DiscoveryHandle::K8s(_) => None,
        }
    }

    /// Leaves the cluster (deregisters where that means something) and stops discovery.
    pub async fn leave(self) {
        match self {
            DiscoveryHandle::Fixed => {}
            DiscoveryHandle::Etcd(etcd) => etcd.leave().await,
            DiscoveryHandle::Dns(dns) => dns.stop().await,
            #[cfg(feature = "k8s")]
            DiscoveryHandle::K8s(k8s) => k8s.stop().await,
        }
    }
}

/// Starts the discovery that `options` ask for, keeping `peers` current. `me` is this node as peers
/// should see it; discovery's own metrics go to `metrics`.
pub async fn start(
    options: &DiscoveryOptions,
    me: PeerInfo,
    peers: PeerList,
    metrics: &Metrics,
) -> Result<DiscoveryHandle, DiscoveryError> {
    match options.mechanism {
        Mechanism::None => Ok(DiscoveryHandle::Fixed),
        Mechanism::Static => {
            peers.replace(static_peers(&options.peers, &me)?);
            Ok(DiscoveryHandle::Fixed)
        }
        Mechanism::Etcd => Ok(DiscoveryHandle::Etcd(
            etcd::EtcdDiscovery::start(&options.etcd, me, peers).await?,
        )),
        Mechanism::Dns => Ok(DiscoveryHandle::Dns(
            dns::DnsDiscovery::start(&options.dns, me, peers).await?,
        )),
        #[cfg(feature = "k8s")]
        Mechanism::K8s => Ok(DiscoveryHandle::K8s(
            k8s::K8sDiscovery::start(&options.k8s, me, peers, metrics.k8s_watch_errors.clone())
                .await?,
        )),
        #[cfg(not(feature = "k8s"))]
        Mechanism::K8s => {
            let _ = metrics;
            Err(DiscoveryError::Config(
                "GUBER_PEER_DISCOVERY_TYPE=k8s: this build has no Kubernetes discovery \
                 (built without the `k8s` feature)"
                    .into(),
            ))
        }
    }
}

/// Whether `first` turned true within `wait` (a backend's first registration or complete list).
pub(crate) async fn first_within(wait: Duration, mut first: watch::Receiver<bool>) -> bool {
    tokio::time::timeout(wait, first.wait_for(|done| *done))
        .await
        .is_ok()
}

/// The peers of a static list: every listed address in this node's data center, plus this node.
pub fn static_peers(addresses: &[String], me: &PeerInfo) -> Result<Vec<PeerInfo>, DiscoveryError> {
    let mut peers = vec![me.clone()];
    for address in addresses.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        if !address.contains(':') {
            return Err(DiscoveryError::Config(format!(
                "GUBER_PEERS: '{address}' is not a host:port gRPC address"
            )));
        }
        peers.push(PeerInfo {
            grpc_address: address.to_string(),
            http_address: String::new(),
            data_center: me.data_center.clone(),
        });
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> PeerInfo {
        PeerInfo {
            grpc_address: "a:1051".into(),
            http_address: String::new(),
            data_center: "dc".into(),
        }
    }

    #[test]
    fn static_peers_include_this_node_and_the_list() {
        let peers = static_peers(&["b:1051".into(), " c:1051 ".into(), "".into()], &me()).unwrap();
        let addresses: Vec<_> = peers.iter().map(|p| p.grpc_address.as_str()).collect();
        assert_eq!(addresses, ["a:1051", "b:1051", "c:1051"]);
        assert!(peers.iter().all(|p| p.data_center == "dc"));
    }

    #[test]
    fn static_peers_need_ports() {
        assert!(static_peers(&["b".into()], &me()).is_err());
    }
}
