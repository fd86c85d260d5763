//! DNS discovery: the peers are the addresses a DNS name resolves to.
//!
//! `dns_fqdn` is resolved now and then every `dns_poll_interval` (with the system resolver, as
//! `<fqdn>:<port>` where the port is this node's advertised gRPC port, since every node of such a
//! deployment listens on the same port). Each resolved IP becomes a peer `ip:port` in this node's
//! data center. A failed or empty resolution keeps the last list: a resolver hiccup says nothing
//! about which peers are alive, and emptying the list would make this node unhealthy and strand
//! every key on it. The entry that is this node keeps this node's HTTP address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::peers::{PeerInfo, PeerList};

/// What DNS discovery is started with (`GUBER_DNS_*`; built from the node's configuration by
/// `config::options`).
#[derive(Debug, Clone, Default)]
pub struct DnsOptions {
    /// `GUBER_DNS_FQDN`: the name whose A/AAAA records are the peers.
    pub fqdn: Option<String>,
    /// `GUBER_DNS_POLL_INTERVAL`.
    pub poll_interval: Duration,
}

/// The shortest poll interval honored, so a zero interval does not spin.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long one resolution may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why DNS discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The DNS settings are incomplete or inconsistent.
    #[error("dns discovery configuration: {0}")]
    Config(String),
}

/// A running DNS poller.
pub struct DnsDiscovery {
    /// True while the last resolution succeeded with at least one address.
    resolved: Arc<AtomicBool>,
    fqdn: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DnsDiscovery {
    /// Resolves the name now and then every poll interval, keeping `peers` current.
    pub async fn start(
        config: &DnsOptions,
        me: PeerInfo,
        peers: PeerList,
    ) -> Result<Self, DnsError> {
        let fqdn = config
            .fqdn
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                DnsError::Config("GUBER_DNS_FQDN is required for dns discovery".to_string())
            })?
            .to_string();
        let port = grpc_port(&me.grpc_address)?;
        let interval = config.poll_interval.max(MIN_POLL_INTERVAL);
        let resolved = Arc::new(AtomicBool::new(false));
        resolved.store(poll_once(&fqdn, port, &me, &peers).await, Ordering::Relaxed);
        let (stop, mut stopped) = watch::channel(false);
        let flag = Arc::clone(&resolved);
        let name = fqdn.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate; we just resolved
            loop {
                tokio::select! {
                    _ = ticker.tick() => {
                        flag.store(poll_once(&fqdn, port, &me, &peers).await, Ordering::Relaxed);
                    }
                    _ = stop_requested(&mut stopped) => break,
                }
            }
        });
        Ok(Self {
            resolved,
            fqdn: name,
            stop,
            task,
        })
    }

    /// Whether the last resolution succeeded, and the name, for health.
    pub fn backend_status(&self) -> super::health::BackendStatus {
        super::health::BackendStatus {
            backend: super::health::Backend::Dns,
            connected: Arc::clone(&self.resolved),
            target: self.fqdn.clone(),
        }
    }

    /// Stops polling.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if timeout(Duration::from_secs(1), &mut task).await.is_err() {
            task.abort();
        }
    }
}

/// The port of this node's advertised gRPC address (`host:port` or `[v6]:port`).
pub fn grpc_port(address: &str) -> Result<u16, DnsError> {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .filter(|port| *port != 0)
        .ok_or_else(|| {
            DnsError::Config(format!(
                "the advertise address '{address}' has no port for dns discovery"
            ))
        })
}

/// The peers for a set of resolved addresses: one per distinct address, in `me`'s data center;
/// the one that is `me` keeps `me`'s HTTP address.
pub fn peers_from_addresses(addresses: &[SocketAddr], me: &PeerInfo) -> Vec<PeerInfo> {
    let mut list: Vec<PeerInfo> = Vec::with_capacity(addresses.len());
    for address in addresses {
        let grpc_address = address.to_string();
        if list.iter().any(|peer| peer.grpc_address == grpc_address) {
            continue;
        }
        let http_address = if grpc_address == me.grpc_address {
            me.http_address.clone()
        } else {
            String::new()
        };
        list.push(PeerInfo {
            grpc_address,
            http_address,
            data_center: me.data_center.clone(),
        });
    }
    list
}

/// Resolves once and replaces the list unless resolution failed or found nothing; returns whether
/// it found something.
async fn poll_once(fqdn: &str, port: u16, me: &PeerInfo, peers: &PeerList) -> bool {
    let resolved = match timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((fqdn, port))).await {
        Ok(Ok(addresses)) => addresses.collect::<Vec<_>>(),
        Ok(Err(error)) => {
            tracing::warn!(%fqdn, %error, "dns discovery: resolution failed; keeping the last peer list");
            return false;
        }
        Err(_) => {
            tracing::warn!(%fqdn, "dns discovery: resolution timed out; keeping the last peer list");
            return false;
        }
    };
    if resolved.is_empty() {
        tracing::warn!(%fqdn, "dns discovery: the name resolved to nothing; keeping the last peer list");
        return false;
    }
    let list = peers_from_addresses(&resolved, me);
    let old = peers.snapshot();
    let diff = super::etcd::diff_peers(&old, &list);
    if peers.replace(list) {
        for address in &diff.joined {
            tracing::info!(peer = %address, "peer joined");
        }
        for address in &diff.left {
            tracing::info!(peer = %address, "peer left");
        }
    }
    true
}

/// Resolves once `stop` holds `true` (or its sender is gone).
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> PeerInfo {
        PeerInfo {
            grpc_address: "127.0.0.1:1051".into(),
            http_address: "127.0.0.1:1050".into(),
            data_center: "dc".into(),
        }
    }

    #[test]
    fn ports_come_from_the_advertise_address() {
        assert_eq!(grpc_port("10.0.0.1:1051").unwrap(), 1051);
        assert_eq!(grpc_port("[::1]:7").unwrap(), 7);
        assert!(grpc_port("host").is_err());
        assert!(grpc_port("host:0").is_err());
    }

    #[test]
    fn each_address_is_a_peer_in_this_data_center() {
        let addresses: Vec<SocketAddr> = vec![
            "127.0.0.1:1051".parse().unwrap(),
            "10.0.0.2:1051".parse().unwrap(),
            "[::1]:1051".parse().unwrap(),
            "10.0.0.2:1051".parse().unwrap(),
        ];
        let list = peers_from_addresses(&addresses, &me());
        let names: Vec<_> = list.iter().map(|p| p.grpc_address.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:1051", "10.0.0.2:1051", "[::1]:1051"]);
        assert!(list.iter().all(|p| p.data_center == "dc"));
        assert_eq!(list[0].http_address, "127.0.0.1:1050");
        assert_eq!(list[1].http_address, "");
    }

    #[tokio::test]
    async fn a_missing_name_is_a_configuration_error() {
        let config = crate::config::server_config_from_args(["--peer-discovery-type=dns"]).unwrap();
        let options = super::super::DiscoveryOptions::from(&config).dns;
        let result = DnsDiscovery::start(&options, me(), PeerList::single(me())).await;
        assert!(matches!(result, Err(DnsError::Config(_))));
    }

    #[tokio::test]
    async fn a_failed_resolution_keeps_the_last_list() {
        let list = PeerList::single(me());
        poll_once("nonexistent.invalid", 1051, &me(), &list).await;
        assert_eq!(list.snapshot(), vec![me()]);
    }
}
