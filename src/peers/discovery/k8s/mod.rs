//! Kubernetes discovery (`GUBER_PEER_DISCOVERY_TYPE=k8s`), configured as Gubernator's.
//!
//! A [`kube::runtime::watcher()`] lists and watches, in `GUBER_K8S_NAMESPACE`, the EndpointSlices
//! of `GUBER_K8S_SERVICE_NAME` (`endpointslices`), or the v1 Endpoints objects (`endpoints`) or
//! pods (`pods`) matching `GUBER_K8S_SELECTOR`. `endpoints` reads the v1 Endpoints API, as
//! Gubernator does, deprecated since Kubernetes 1.33 but served: a deployment made for
//! Gubernator's older chart keeps working with the Role it already has (list/watch on
//! `endpoints`). Every ready address
//! becomes a peer `IP:GUBER_K8S_POD_PORT`; `GUBER_K8S_POD_IP:GUBER_K8S_POD_PORT` is this node.
//! The rules are in [`peers`] and [`settings`]; this module is the I/O.
//!
//! # Failures
//!
//! * **The API server is unreachable at start.** The node waits up to [`START_WAIT`] for the
//!   first complete list, then serves alone (like etcd discovery) while the watcher retries.
//! * **The watch drops, or the API server answers `410 Gone`.** The watcher resumes from the last
//!   resource version, or lists again; until that list is complete the last peer list stays in
//!   force (a lost connection says nothing about which peers are alive). Failed attempts back off
//!   exponentially, 0.8 s doubling to 30 s with jitter, reset only by data from the server (kube's
//!   own `default_backoff` resets on the `Init` event the watcher yields before every list
//!   attempt, so against a down API server it retried about once a second). Each one is counted in
//!   `ringlimit_kubernetes_watch_errors_total`; the log gets one warning when an outage starts
//!   and one line with the first event after it, not one per retry (the binary's log setup keeps
//!   kube's own watcher lines to errors). Health does not change, since the list does not.
//! * **No ready address at all** (every pod not ready, or the objects deleted). The last list is
//!   kept, as DNS discovery does with an empty answer: emptying it would strand every key.
//!
//! On graceful leave the watcher stops; the node is dropped by its peers when Kubernetes marks
//! the terminating pod not ready, which the handoff's leave (`on_leave`, as for DNS) waits for.

#[cfg(feature = "k8s")]
pub mod peers;
pub mod settings;
#[cfg(feature = "k8s")]
mod watch;

use super::{DiscoveryOptions, Mechanism};
pub use settings::{K8sOptions, K8sSettings, SettingsError, WatchMechanism, Watched};
#[cfg(feature = "k8s")]
pub use watch::{K8sDiscovery, K8sError, START_WAIT};

/// This node's address under k8s discovery, when that is the configured mechanism.
pub fn advertise_address(options: &DiscoveryOptions) -> Result<Option<String>, SettingsError> {
    if options.mechanism != Mechanism::K8s {
        return Ok(None);
    }
    let me = K8sSettings::from_config(&options.k8s)?.me_address();
    if let Some(advertise) = options
        .k8s
        .advertise_address
        .as_deref()
        .filter(|a| !a.is_empty() && *a != me)
    {
        tracing::warn!(
            %advertise,
            pod_address = %me,
            "k8s discovery: GUBER_ADVERTISE_ADDRESS differs from GUBER_K8S_POD_IP:GUBER_K8S_POD_PORT; \
             peers list this node by the pod address, so that is advertised"
        );
    }
    Ok(Some(me))
}
