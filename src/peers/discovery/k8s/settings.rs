//! The `GUBER_K8S_*` settings, checked once at start into what the watcher needs.
//!
//! Kept apart from the watcher so that every rule (which selector wins, which mechanism is the
//! default, what `me` is) is a pure function of the configuration, unit-tested, and so that
//! `ringlimit serve` can refuse a bad setting with one line and exit 2 before anything starts.

use std::net::IpAddr;

/// What Kubernetes discovery watches (`GUBER_K8S_WATCH_MECHANISM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMechanism {
    /// The v1 Endpoints objects matching `GUBER_K8S_SELECTOR` (Gubernator's older default).
    Endpoints,
    /// The EndpointSlices of the Service `GUBER_K8S_SERVICE_NAME`.
    Endpointslices,
    /// The pods matching `GUBER_K8S_SELECTOR`.
    Pods,
}

/// The `GUBER_K8S_*` settings as given, before they are checked ([`K8sSettings::from_config`]);
/// built from the node's configuration by `config::options`.
#[derive(Debug, Clone, Default)]
pub struct K8sOptions {
    /// `GUBER_K8S_NAMESPACE`.
    pub namespace: String,
    /// `GUBER_K8S_POD_IP`.
    pub pod_ip: Option<String>,
    /// `GUBER_K8S_POD_PORT`.
    pub pod_port: Option<u16>,
    /// `GUBER_GRPC_ADDRESS` (the pod port defaults to its port).
    pub grpc_address: String,
    /// `GUBER_ADVERTISE_ADDRESS` as configured (warned about when it differs from the pod's).
    pub advertise_address: Option<String>,
    /// `GUBER_K8S_SELECTOR`.
    pub selector: Option<String>,
    /// `GUBER_K8S_ENDPOINTS_SELECTOR` (Gubernator's older name of the selector).
    pub endpoints_selector: Option<String>,
    /// `GUBER_K8S_SERVICE_NAME`.
    pub service_name: Option<String>,
    /// `GUBER_K8S_WATCH_MECHANISM`; `None` picks the default.
    pub watch_mechanism: Option<WatchMechanism>,
    /// `GUBER_K8S_KUBECONFIG`.
    pub kubeconfig: Option<String>,
}

/// A `GUBER_K8S_*` setting that is missing or wrong; the message names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}: {reason}")]
pub struct SettingsError {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn error(variable: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        reason: reason.into(),
    }
}

/// The objects the watcher lists and watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// Endpoints (`v1`) matching the label selector.
    Endpoints,
    /// EndpointSlices (`discovery.k8s.io/v1`) matching the label selector.
    EndpointSlices,
    /// Pods (`v1`) matching the label selector.
    Pods,
}

/// What Kubernetes discovery needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K8sSettings {
    /// The namespace watched.
    pub namespace: String,
    /// This pod's IP.
    pub pod_ip: IpAddr,
    /// The gRPC port of every peer.
    pub pod_port: u16,
    /// The mechanism asked for (or the default).
    pub mechanism: WatchMechanism,
    /// The kind of object watched.
    pub watched: Watched,
    /// The label selector sent to the API server.
    pub label_selector: String,
    /// An explicit kubeconfig file.
    pub kubeconfig: Option<String>,
}

/// `ip:port`, with the IP in brackets when it is IPv6 (`[fd00::1]:1051`).
pub fn peer_address(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl K8sSettings {
    /// Checks the `GUBER_K8S_*` settings of `config`.
    ///
    /// * `GUBER_K8S_POD_IP` is required and must be an IP address.
    /// * `GUBER_K8S_POD_PORT` defaults to the port of `GUBER_GRPC_ADDRESS`.
    /// * The selector is `GUBER_K8S_SELECTOR`, else `GUBER_K8S_ENDPOINTS_SELECTOR`.
    /// * The mechanism defaults to `endpointslices` when `GUBER_K8S_SERVICE_NAME` is set, else
    ///   `endpoints` (so both the older and the newer Gubernator Helm chart work unchanged).
    /// * `endpointslices` needs a service name; `endpoints` and `pods` need a selector.
    pub fn from_config(config: &K8sOptions) -> Result<Self, SettingsError> {
        let namespace = config.namespace.trim().to_string();
        if namespace.is_empty() {
            return Err(error("GUBER_K8S_NAMESPACE", "must not be empty"));
        }
        let pod_ip_text = non_empty(&config.pod_ip).ok_or_else(|| {
            error(
                "GUBER_K8S_POD_IP",
                "is required for k8s discovery (set it from the downward API: status.podIP)",
            )
        })?;
        let pod_ip: IpAddr = pod_ip_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                error(
                    "GUBER_K8S_POD_IP",
                    format!("'{pod_ip_text}' is not an IP address"),
                )
            })?;
        let pod_port = match config.pod_port {
            Some(port) => port,
            None => config
                .grpc_address
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .filter(|port| *port != 0)
                .ok_or_else(|| {
                    error(
                        "GUBER_K8S_POD_PORT",
                        format!(
                            "is required: GUBER_GRPC_ADDRESS '{}' has no fixed port to default to",
                            config.grpc_address
                        ),
                    )
                })?,
        };
        let selector =
            non_empty(&config.selector).or_else(|| non_empty(&config.endpoints_selector));
        let service = non_empty(&config.service_name);
        let mechanism = config.watch_mechanism.unwrap_or(if service.is_some() {
            WatchMechanism::Endpointslices
        } else {
            WatchMechanism::Endpoints
        });
        let by_service = |service: &str| format!("kubernetes.io/service-name={service}");
        let (watched, label_selector) = match mechanism {
            WatchMechanism::Endpointslices => {
                let service = service.ok_or_else(|| {
                    error(
                        "GUBER_K8S_SERVICE_NAME",
                        "is required when GUBER_K8S_WATCH_MECHANISM is endpointslices",
                    )
                })?;
                (Watched::EndpointSlices, by_service(&service))
            }
            WatchMechanism::Endpoints | WatchMechanism::Pods => {
                let selector = selector.ok_or_else(|| {
                    error(
                        "GUBER_K8S_SELECTOR",
                        format!(
                            "is required when GUBER_K8S_WATCH_MECHANISM is {} \
                             (GUBER_K8S_ENDPOINTS_SELECTOR is read when it is unset; \
                             or set GUBER_K8S_SERVICE_NAME to watch EndpointSlices)",
                            if mechanism == WatchMechanism::Pods {
                                "pods"
                            } else {
                                "endpoints"
                            }
                        ),
                    )
                })?;
                let watched = if mechanism == WatchMechanism::Pods {
                    Watched::Pods
                } else {
                    Watched::Endpoints
                };
                (watched, selector)
            }
        };
        if label_selector.chars().any(char::is_whitespace) {
            let variable = if mechanism == WatchMechanism::Endpointslices {
                "GUBER_K8S_SERVICE_NAME"
            } else {
                "GUBER_K8S_SELECTOR"
            };
            return Err(error(
                variable,
                format!("'{label_selector}' must not contain spaces"),
            ));
        }
        Ok(Self {
            namespace,
            pod_ip,
            pod_port,
            mechanism,
            watched,
            label_selector,
            kubeconfig: non_empty(&config.kubeconfig),
        })
    }

    /// This node's address as peers list it: `GUBER_K8S_POD_IP:GUBER_K8S_POD_PORT`.
    pub fn me_address(&self) -> String {
        peer_address(self.pod_ip, self.pod_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Result<K8sSettings, SettingsError> {
        let mut all = vec!["--peer-discovery-type=k8s", "--grpc-address=0.0.0.0:1051"];
        all.extend_from_slice(args);
        let config = crate::config::server_config_from_args(all).unwrap();
        K8sSettings::from_config(&crate::peers::discovery::DiscoveryOptions::from(&config).k8s)
    }

    #[test]
    fn the_older_helm_chart_watches_endpoints_by_selector() {
        let s = settings(&[
            "--k8s-pod-ip=10.0.0.7",
            "--k8s-pod-port=81",
            "--k8s-endpoints-selector=app=gubernator",
            "--k8s-watch-mechanism=endpoints",
        ])
        .unwrap();
        assert_eq!(s.watched, Watched::Endpoints);
        assert_eq!(s.label_selector, "app=gubernator");
        assert_eq!(s.namespace, "default");
        assert_eq!(s.me_address(), "10.0.0.7:81");
    }

    #[test]
    fn the_newer_selector_name_wins_and_a_service_name_means_endpointslices() {
        let s = settings(&[
            "--k8s-pod-ip=10.0.0.7",
            "--k8s-selector=app=new",
            "--k8s-endpoints-selector=app=old",
            "--k8s-watch-mechanism=pods",
        ])
        .unwrap();
        assert_eq!(
            (s.watched, s.label_selector.as_str()),
            (Watched::Pods, "app=new")
        );
        assert_eq!(s.pod_port, 1051, "the port of the gRPC address");
        let s = settings(&["--k8s-pod-ip=10.0.0.7", "--k8s-service-name=guber"]).unwrap();
        assert_eq!(s.mechanism, WatchMechanism::Endpointslices);
        assert_eq!(s.label_selector, "kubernetes.io/service-name=guber");
    }

    #[test]
    fn errors_name_the_variable() {
        let variable = |args: &[&str]| settings(args).unwrap_err().variable;
        assert_eq!(variable(&["--k8s-selector=a=b"]), "GUBER_K8S_POD_IP");
        assert_eq!(
            variable(&["--k8s-pod-ip=pod", "--k8s-selector=a=b"]),
            "GUBER_K8S_POD_IP"
        );
        assert_eq!(
            variable(&[
                "--k8s-pod-ip=10.0.0.1",
                "--k8s-watch-mechanism=endpointslices"
            ]),
            "GUBER_K8S_SERVICE_NAME"
        );
        assert_eq!(
            variable(&["--k8s-pod-ip=10.0.0.1", "--k8s-watch-mechanism=pods"]),
            "GUBER_K8S_SELECTOR"
        );
        assert_eq!(variable(&["--k8s-pod-ip=10.0.0.1"]), "GUBER_K8S_SELECTOR");
        assert!(
            settings(&["--k8s-pod-ip=10.0.0.1"])
                .unwrap_err()
                .to_string()
                .starts_with("invalid configuration: GUBER_K8S_SELECTOR")
        );
    }

    #[test]
    fn ipv6_pods_are_bracketed() {
        let s = settings(&[
            "--k8s-pod-ip=fd00::7",
            "--k8s-pod-port=81",
            "--k8s-selector=a=b",
        ])
        .unwrap();
        assert_eq!(s.me_address(), "[fd00::7]:81");
    }
}
