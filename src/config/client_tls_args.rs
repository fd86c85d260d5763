//! TLS options of the client subcommands (`check`, `healthcheck`, `bench`), so an operator can talk
//! to a node that serves TLS. Any of them turns TLS on. The environment variables are the node's
//! own, so inside a node's container the node's CA and certificate are used without flags.

use clap::Args;

use crate::tls::connector::{ClientTlsOptions, TlsConnector, client_config};
use crate::tls::{TlsError, TlsMinVersion, pem};

/// `--tls-*` flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// Connect with TLS and verify the node's certificate with this CA (PEM).
    #[arg(long, env = "GUBER_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<String>,

    /// Connect with TLS and present this client certificate (PEM; for mTLS), with --tls-key.
    #[arg(
        long,
        env = "GUBER_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<String>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "GUBER_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<String>,

    /// Connect with TLS without verifying the node's certificate (tests, GUBER_TLS_AUTO nodes).
    #[arg(long, env = "GUBER_TLS_INSECURE_SKIP_VERIFY", default_value = "false",
          value_parser = super::parse_bool, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub tls_insecure_skip_verify: bool,

    /// The name the node's certificate must hold [default: the host of the address].
    #[arg(long, env = "GUBER_TLS_CLIENT_AUTH_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// Whether any option asks for TLS.
    pub fn enabled(&self) -> bool {
        non_empty(&self.tls_ca).is_some()
            || non_empty(&self.tls_cert).is_some()
            || self.tls_insecure_skip_verify
    }

    /// The rustls configuration these options describe (`None` without TLS), offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Option<rustls::ClientConfig>, TlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let roots = match non_empty(&self.tls_ca) {
            Some(path) => Some(pem::read_root_store("--tls-ca (GUBER_TLS_CA)", path)?),
            None => None,
        };
        let identity = match (non_empty(&self.tls_cert), non_empty(&self.tls_key)) {
            (Some(cert), Some(key)) => Some(pem::read_identity(
                ("--tls-cert (GUBER_TLS_CERT)", cert),
                ("--tls-key (GUBER_TLS_KEY)", key),
            )?),
            _ => None,
        };
        client_config(ClientTlsOptions {
            roots,
            identity,
            insecure_skip_verify: self.tls_insecure_skip_verify,
            min_version: TlsMinVersion::Tls12,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        })
        .map(Some)
    }

    /// A connector for gRPC channels (`None` without TLS).
    pub fn grpc_connector(&self) -> Result<Option<TlsConnector>, TlsError> {
        Ok(self.client_config(&[b"h2"])?.map(|config| {
            TlsConnector::fixed(config, non_empty(&self.tls_server_name).map(str::to_string))
        }))
    }

    /// The server name to verify for a connection to `host` (the override, else `host`).
    pub fn server_name_for(&self, host: &str) -> String {
        non_empty(&self.tls_server_name)
            .map(str::to_string)
            .unwrap_or_else(|| host.trim_matches(|c| c == '[' || c == ']').to_string())
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}
