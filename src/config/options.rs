//! Configuration translated into each module's options, in one place.
//!
//! Domain modules take their own options structs and never read [`ServerConfig`]: how a
//! `GUBER_*` variable maps onto a setting (and which settings share a variable) is decided here,
//! once, and `server::start` only picks these up.

use std::path::PathBuf;

use clap::ValueEnum;

use super::{DiscoveryType, ServerConfig, WatchMechanismArg};
use crate::admin::AdminOptions;
use crate::allow::AllowOptions;
use crate::global::GlobalOptions;
use crate::handoff::HandoffOptions;
use crate::owner_failure::{OwnerFailureOptions, OwnerFailurePolicy};
use crate::peers::discovery::dns::DnsOptions;
use crate::peers::discovery::etcd::EtcdOptions;
use crate::peers::discovery::k8s::{K8sOptions, WatchMechanism};
use crate::peers::discovery::{DiscoveryOptions, Mechanism};
use crate::request::InputLimits;
use crate::rls::RlsOptions;
use crate::tls::TlsConfig;

/// `GUBER_OWNER_FAILURE_POLICY` as clap parses it (the domain's `OwnerFailurePolicy` knows
/// nothing of clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OwnerFailurePolicyArg {
    /// A per-item error naming the owner (Gubernator's behaviour).
    #[default]
    Error,
    /// Answer from a local fallback bucket and send the admitted hits to the owner later.
    Local,
}

impl From<OwnerFailurePolicyArg> for OwnerFailurePolicy {
    fn from(arg: OwnerFailurePolicyArg) -> Self {
        match arg {
            OwnerFailurePolicyArg::Error => OwnerFailurePolicy::Error,
            OwnerFailurePolicyArg::Local => OwnerFailurePolicy::Local,
        }
    }
}

impl From<DiscoveryType> for Mechanism {
    fn from(kind: DiscoveryType) -> Self {
        match kind {
            DiscoveryType::None => Mechanism::None,
            DiscoveryType::Static => Mechanism::Static,
            DiscoveryType::Etcd => Mechanism::Etcd,
            DiscoveryType::Dns => Mechanism::Dns,
            DiscoveryType::K8s => Mechanism::K8s,
        }
    }
}

impl From<WatchMechanismArg> for WatchMechanism {
    fn from(arg: WatchMechanismArg) -> Self {
        match arg {
            WatchMechanismArg::Endpoints => WatchMechanism::Endpoints,
            WatchMechanismArg::Endpointslices => WatchMechanism::Endpointslices,
            WatchMechanismArg::Pods => WatchMechanism::Pods,
        }
    }
}

impl From<&ServerConfig> for DiscoveryOptions {
    fn from(config: &ServerConfig) -> Self {
        DiscoveryOptions {
            mechanism: config.peer_discovery_type.into(),
            peers: config.peers.clone(),
            etcd: EtcdOptions {
                endpoints: config.etcd_endpoints.clone(),
                key_prefix: config.etcd_key_prefix.clone(),
                dial_timeout: config.etcd_dial_timeout,
                lease_ttl: config.etcd_lease_ttl,
                user: config.etcd_user.clone(),
                password: config.etcd_password.clone(),
                tls_cert: config.etcd_tls_cert.clone(),
                tls_key: config.etcd_tls_key.clone(),
                tls_ca: config.etcd_tls_ca.clone(),
                tls_skip_verify: config.etcd_tls_skip_verify,
            },
            dns: DnsOptions {
                fqdn: config.dns_fqdn.clone(),
                poll_interval: config.dns_poll_interval,
            },
            k8s: K8sOptions {
                namespace: config.k8s_namespace.clone(),
                pod_ip: config.k8s_pod_ip.clone(),
                pod_port: config.k8s_pod_port,
                grpc_address: config.grpc_address.clone(),
                advertise_address: config.advertise_address.clone(),
                selector: config.k8s_selector.clone(),
                endpoints_selector: config.k8s_endpoints_selector.clone(),
                service_name: config.k8s_service_name.clone(),
                watch_mechanism: config.k8s_watch_mechanism.map(WatchMechanism::from),
                kubeconfig: config.k8s_kubeconfig.clone(),
            },
        }
    }
}

impl From<&ServerConfig> for TlsConfig {
    fn from(config: &ServerConfig) -> Self {
        TlsConfig {
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
            auto: config.tls_auto,
            ca: config.tls_ca.clone(),
            client_auth: config.tls_client_auth,
            client_auth_ca_cert: config.tls_client_auth_ca_cert.clone(),
            client_auth_cert: config.tls_client_auth_cert.clone(),
            client_auth_key: config.tls_client_auth_key.clone(),
            client_auth_server_name: config.tls_client_auth_server_name.clone(),
            insecure_skip_verify: config.tls_insecure_skip_verify,
            min_version: config.tls_min_version,
            advertise_address: config.advertise_address().to_string(),
            has_peers: config.peer_discovery_type != DiscoveryType::None,
        }
    }
}

impl From<&ServerConfig> for RlsOptions {
    fn from(config: &ServerConfig) -> Self {
        RlsOptions {
            config_path: config
                .rls_config
                .as_deref()
                .map(str::trim)
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            service: crate::rls::decide::Options {
                global_shadow_mode: config.rls_shadow_mode,
                stop_increment_when_over_limit: config.rls_stop_increment_when_over_limit,
                headers: config.rls_response_headers,
                near_limit_ratio: config.rls_near_limit_ratio,
            },
        }
    }
}

impl From<&ServerConfig> for AdminOptions {
    fn from(config: &ServerConfig) -> Self {
        AdminOptions {
            enabled: config.admin_enabled,
            token: config.admin_token.clone().filter(|token| !token.is_empty()),
            capacity: usize::try_from(config.admin_top_capacity).unwrap_or(100),
            peer_timeout: config.admin_peer_timeout,
            show_keys: config.admin_show_keys,
            // Set from the bound HTTP listener by `server::start`; until then, assume exposed.
            http_loopback_only: false,
            discovered_capacity: usize::try_from(config.allow_discovered_max).unwrap_or(usize::MAX),
        }
    }
}

impl From<&ServerConfig> for AllowOptions {
    fn from(config: &ServerConfig) -> Self {
        AllowOptions {
            resources: config.allow_resources.clone(),
            idempotency_ttl: config.allow_idempotency_ttl,
            idempotency_capacity: config.allow_idempotency_capacity,
            // The records' node may itself forward to the limit's owner.
            peer_timeout: config.batch_timeout.saturating_mul(2),
            max_user_id_bytes: usize::try_from(config.max_key_length).unwrap_or(usize::MAX),
        }
    }
}

impl From<&ServerConfig> for GlobalOptions {
    fn from(config: &ServerConfig) -> Self {
        GlobalOptions {
            sync_wait: config.global_sync_wait,
            timeout: config.global_timeout,
            batch_limit: usize::try_from(config.global_batch_limit).unwrap_or(1000),
            force: config.force_global,
            ..GlobalOptions::default()
        }
    }
}

impl From<&ServerConfig> for OwnerFailureOptions {
    fn from(config: &ServerConfig) -> Self {
        OwnerFailureOptions {
            policy: config.owner_failure_policy.into(),
            fallback_capacity: config.cache_size,
            sync_wait: config.global_sync_wait,
            timeout: config.batch_timeout,
            ..OwnerFailureOptions::default()
        }
    }
}

impl From<&ServerConfig> for InputLimits {
    fn from(config: &ServerConfig) -> Self {
        InputLimits {
            max_key_bytes: usize::try_from(config.max_key_length).unwrap_or(usize::MAX),
        }
    }
}

impl From<&ServerConfig> for HandoffOptions {
    fn from(config: &ServerConfig) -> Self {
        HandoffOptions {
            delay: config.handoff_delay,
            timeout: config.handoff_timeout,
            join_wait: config.handoff_join_wait,
            leave_wait: config.handoff_leave_wait,
            on_leave: matches!(
                config.peer_discovery_type,
                DiscoveryType::Etcd | DiscoveryType::Dns | DiscoveryType::K8s
            ),
            snapshot_path: config
                .snapshot_path
                .as_deref()
                .map(str::trim)
                .filter(|path| !path.is_empty())
                .map(PathBuf::from),
            ..HandoffOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_by_name() {
        let parse =
            |name| OwnerFailurePolicyArg::from_str(name, true).map(OwnerFailurePolicy::from);
        assert_eq!(parse("local"), Ok(OwnerFailurePolicy::Local));
        assert_eq!(parse("error"), Ok(OwnerFailurePolicy::Error));
        assert!(parse("maybe").is_err());
        assert_eq!(
            OwnerFailurePolicy::from(OwnerFailurePolicyArg::default()),
            OwnerFailurePolicy::Error
        );
    }
}
