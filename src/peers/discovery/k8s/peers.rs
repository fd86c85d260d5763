//! Kubernetes objects → the peer list: which addresses are ready, and the list they make.
//!
//! Pure functions and a small state machine over the watcher's events, so readiness rules,
//! address formatting, deduplication and ordering are unit-tested with plain values; the
//! watcher in `mod.rs` only feeds them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::settings::peer_address;
use crate::peers::PeerInfo;

/// The ready addresses of an EndpointSlice: per endpoint the first address (the addresses of
/// one endpoint are the same pod), when its `ready` condition is true or unknown (the API says to
/// read unknown as ready) and it is not terminating. FQDN slices and unparsable addresses are
/// skipped.
pub fn slice_addresses(slice: &EndpointSlice) -> Vec<IpAddr> {
    if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
        return Vec::new();
    }
    slice
        .endpoints
        .iter()
        .filter(|endpoint| {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            ready && !terminating
        })
        .filter_map(|endpoint| endpoint.addresses.first())
        .filter_map(|address| address.parse::<IpAddr>().ok())
        .collect()
}

/// The ready addresses of a v1 Endpoints object: `subsets[].addresses` (the not-ready ones are
/// listed apart, in `notReadyAddresses`). Unparsable addresses are skipped.
pub fn endpoints_addresses(endpoints: &Endpoints) -> Vec<IpAddr> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|subset| subset.addresses.iter().flatten())
        .filter_map(|address| address.ip.parse::<IpAddr>().ok())
        .collect()
}

/// The address of a pod that is ready: running, not being deleted, its `Ready` condition
/// `True`, and an IP assigned.
pub fn pod_address(pod: &Pod) -> Vec<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let running = status.phase.as_deref() == Some("Running");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True");
    if !running || !ready {
        return Vec::new();
    }
    status
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
        .into_iter()
        .collect()
}

/// The peer list for a set of ready IPs: one peer `ip:port` per distinct IP, sorted by IP, in
/// `me`'s data center; the one that is `me` keeps `me`'s HTTP address.
pub fn peers_from_ips<'a>(
    ips: impl IntoIterator<Item = &'a IpAddr>,
    port: u16,
    me: &PeerInfo,
) -> Vec<PeerInfo> {
    let distinct: BTreeSet<IpAddr> = ips.into_iter().copied().collect();
    distinct
        .into_iter()
        .map(|ip| {
            let grpc_address = peer_address(ip, port);
            let http_address = if grpc_address == me.grpc_address {
                me.http_address.clone()
            } else {
                String::new()
            };
            PeerInfo {
                grpc_address,
                http_address,
                data_center: me.data_center.clone(),
            }
        })
        .collect()
}

/// `delay` scaled into `[delay/2, delay]` by `random`, so the nodes of a cluster do not retry
/// against the API server in step.
pub fn jittered(delay: std::time::Duration, random: u64) -> std::time::Duration {
    let half = delay / 2;
    let extra = u128::from(random % 1024) * half.as_nanos() / 1024;
    half + std::time::Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX))
}

/// One watcher event, reduced to what discovery needs: object names and their ready IPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A (re)list begins: objects listed next replace everything once it is done.
    Relist,
    /// An object seen by the (re)list.
    Listed(String, Vec<IpAddr>),
    /// The (re)list is complete.
    ListDone,
    /// An object was added or modified.
    Applied(String, Vec<IpAddr>),
    /// An object was deleted.
    Deleted(String),
}

/// The watched objects' ready IPs, folded from [`Change`]s. Until the first list completes
/// nothing is known; during a relist the last complete view stays in force, so a dropped watch
/// or a `410 Gone` never empties the peer list.
#[derive(Debug, Default)]
pub struct WatchedObjects {
    current: BTreeMap<String, Vec<IpAddr>>,
    relisting: Option<BTreeMap<String, Vec<IpAddr>>>,
    synced: bool,
}

impl WatchedObjects {
    /// Applies one change; returns whether the view may have changed (and should be published).
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Relist => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            Change::Listed(name, ips) => {
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(name, ips);
                false
            }
            Change::ListDone => {
                self.current = self.relisting.take().unwrap_or_default();
                self.synced = true;
                true
            }
            Change::Applied(name, ips) => {
                let changed = self.current.get(&name) != Some(&ips);
                self.current.insert(name, ips);
                self.synced && changed
            }
            Change::Deleted(name) => self.current.remove(&name).is_some() && self.synced,
        }
    }

    /// Whether a complete list has been seen.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Every ready IP of every object.
    pub fn ips(&self) -> impl Iterator<Item = &IpAddr> {
        self.current.values().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};

    fn me() -> PeerInfo {
        PeerInfo {
            grpc_address: "10.0.0.2:81".into(),
            http_address: "10.0.0.2:80".into(),
            data_center: "dc".into(),
        }
    }

    fn endpoint(address: &str, ready: Option<bool>, terminating: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![address.to_string()],
            conditions: Some(EndpointConditions {
                ready,
                terminating,
                serving: None,
            }),
            ..Endpoint::default()
        }
    }

    fn slice(address_type: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: address_type.to_string(),
            endpoints,
            ..EndpointSlice::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_ready_endpoints_count_and_unknown_is_ready() {
        let s = slice(
            "IPv4",
            vec![
                endpoint("10.0.0.1", Some(true), None),
                endpoint("10.0.0.2", None, None),
                endpoint("10.0.0.3", Some(false), None),
                endpoint("10.0.0.4", Some(true), Some(true)),
                endpoint("not-an-ip", Some(true), None),
                Endpoint::default(),
            ],
        );
        assert_eq!(slice_addresses(&s), [ip("10.0.0.1"), ip("10.0.0.2")]);
        let fqdn = slice("FQDN", vec![endpoint("10.0.0.1", Some(true), None)]);
        assert!(slice_addresses(&fqdn).is_empty());
    }

    #[test]
    fn only_ready_endpoints_addresses_count() {
        use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset};
        let address = |ip: &str| EndpointAddress {
            ip: ip.to_string(),
            ..EndpointAddress::default()
        };
        let endpoints = Endpoints {
            subsets: Some(vec![
                EndpointSubset {
                    addresses: Some(vec![address("10.0.0.1"), address("bad")]),
                    not_ready_addresses: Some(vec![address("10.0.0.9")]),
                    ..EndpointSubset::default()
                },
                EndpointSubset {
                    addresses: Some(vec![address("fd00::2")]),
                    ..EndpointSubset::default()
                },
            ]),
            ..Endpoints::default()
        };
        assert_eq!(
            endpoints_addresses(&endpoints),
            [ip("10.0.0.1"), ip("fd00::2")]
        );
        assert!(endpoints_addresses(&Endpoints::default()).is_empty());
    }

    fn pod(phase: &str, ready: &str, ip_text: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.to_string()),
                pod_ip: ip_text.map(str::to_string),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn only_running_ready_pods_with_an_ip_count() {
        assert_eq!(
            pod_address(&pod("Running", "True", Some("10.0.0.1"))),
            [ip("10.0.0.1")]
        );
        assert!(pod_address(&pod("Running", "False", Some("10.0.0.1"))).is_empty());
        assert!(pod_address(&pod("Pending", "True", Some("10.0.0.1"))).is_empty());
        assert!(pod_address(&pod("Running", "True", None)).is_empty());
        let mut deleting = pod("Running", "True", Some("10.0.0.1"));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert!(pod_address(&deleting).is_empty());
        assert!(pod_address(&Pod::default()).is_empty());
    }

    #[test]
    fn peers_are_distinct_sorted_and_formatted_with_the_pod_port() {
        let ips = [
            ip("10.0.0.3"),
            ip("fd00::1"),
            ip("10.0.0.2"),
            ip("10.0.0.3"),
        ];
        let peers = peers_from_ips(&ips, 81, &me());
        let names: Vec<_> = peers.iter().map(|p| p.grpc_address.as_str()).collect();
        assert_eq!(names, ["10.0.0.2:81", "10.0.0.3:81", "[fd00::1]:81"]);
        assert_eq!(
            peers[0].http_address, "10.0.0.2:80",
            "me keeps its HTTP address"
        );
        assert_eq!(peers[1].http_address, "");
        assert!(peers.iter().all(|p| p.data_center == "dc"));
    }

    #[test]
    fn jitter_keeps_the_delay_between_half_and_whole() {
        let delay = std::time::Duration::from_millis(800);
        for random in [0, 1, 511, 1023, 1024, u64::MAX] {
            let jittered = jittered(delay, random);
            assert!(jittered >= delay / 2 && jittered <= delay, "{jittered:?}");
        }
        assert_eq!(jittered(delay, 0), delay / 2);
    }

    #[test]
    fn nothing_is_published_before_the_first_list_and_a_relist_keeps_the_last_view() {
        let mut objects = WatchedObjects::default();
        assert!(!objects.apply(Change::Relist));
        assert!(!objects.apply(Change::Listed("a".into(), vec![ip("10.0.0.1")])));
        assert!(!objects.synced());
        assert!(objects.apply(Change::ListDone));
        assert!(objects.apply(Change::Applied("b".into(), vec![ip("10.0.0.2")])));
        assert!(!objects.apply(Change::Applied("b".into(), vec![ip("10.0.0.2")])));
        // A relist after 410 Gone: the old view holds until the new list is complete.
        objects.apply(Change::Relist);
        objects.apply(Change::Listed("b".into(), vec![ip("10.0.0.2")]));
        assert_eq!(objects.ips().count(), 2);
        assert!(objects.apply(Change::ListDone));
        assert_eq!(objects.ips().copied().collect::<Vec<_>>(), [ip("10.0.0.2")]);
        assert!(objects.apply(Change::Deleted("b".into())));
        assert!(!objects.apply(Change::Deleted("b".into())));
        assert_eq!(objects.ips().count(), 0);
    }
}
