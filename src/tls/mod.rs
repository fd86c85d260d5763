//! TLS for the gRPC port (clients and peers), the HTTP port, and the calls a node makes to its peers.
//!
//! Why it is built this way:
//! - **Reload without restart.** The rustls configurations live behind [`ArcSwap`]s. Connections are
//!   accepted here ([`acceptor::TlsIncoming`]), and each handshake reads the current configuration,
//!   so SIGHUP ([`TlsState::reload`]) changes what new connections see while established ones keep
//!   theirs. Peer calls connect through [`connector::TlsConnector`], which reads the current client
//!   configuration the same way.
//! - **One TLS stack.** rustls with ring, the provider tonic's `tls-ring` already brings; no
//!   openssl, no second provider. Every configuration names its provider explicitly.
//! - **PeersV1 is for peers.** With `GUBER_TLS_CLIENT_AUTH=require-and-verify` a connection without a
//!   valid client certificate fails its handshake. With `request` the handshake accepts clients
//!   without a certificate (a presented one must still verify), so V1 stays open to them, and
//!   the peer plane's gate ([`crate::peer_auth`]) refuses their peer RPCs with `UNAUTHENTICATED`.
//! - **Errors name the setting.** A missing file, a file without PEM, a key that does not match its
//!   certificate, or an inconsistent combination stops the start with one line naming the variable.

pub mod acceptor;
pub mod auto;
pub mod connector;
pub mod pem;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a client may take to complete its TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most TLS handshakes in progress at once per port; more connections are closed at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// Whether the TLS ports ask clients for a certificate (`GUBER_TLS_CLIENT_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificates: anyone who reaches the port may call it (PeersV1 included).
    None,
    /// Ask for a client certificate and verify it when given; clients without one may call V1, but
    /// not PeersV1. (Gubernator's `request-cert` and `verify-cert` are accepted as aliases.)
    Request,
    /// Every connection must present a certificate signed by the client CA (mTLS).
    RequireAndVerify,
}

/// The oldest TLS version accepted and offered (`GUBER_TLS_MIN_VERSION`). rustls implements
/// TLS 1.2 and 1.3 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMinVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl ClientAuth {
    /// The mode as `GUBER_TLS_CLIENT_AUTH` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Request => "request",
            Self::RequireAndVerify => "require-and-verify",
        }
    }
}

impl TlsMinVersion {
    /// The version as `GUBER_TLS_MIN_VERSION` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls12 => "1.2",
            Self::Tls13 => "1.3",
        }
    }

    /// The rustls protocol versions this allows.
    pub fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static TLS12_AND_13: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            Self::Tls12 => &TLS12_AND_13,
            Self::Tls13 => &TLS13_ONLY,
        }
    }
}

/// Parses `GUBER_TLS_CLIENT_AUTH` in any case; empty means `none`, as with Gubernator.
pub fn parse_client_auth(text: &str) -> Result<ClientAuth, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(ClientAuth::None);
    }
    match text.to_ascii_lowercase().as_str() {
        "none" => Ok(ClientAuth::None),
        "request" | "request-cert" | "verify-cert" => Ok(ClientAuth::Request),
        "require-and-verify" => Ok(ClientAuth::RequireAndVerify),
        _ => Err(format!(
            "'{text}' is not a client-auth mode (none, request, require-and-verify)"
        )),
    }
}

/// Parses `GUBER_TLS_MIN_VERSION` (`1.2` or `1.3`, optionally `tls` prefixed); empty means `1.2`.
pub fn parse_min_version(text: &str) -> Result<TlsMinVersion, String> {
    let trimmed = text.trim();
    let version = trimmed
        .strip_prefix("tls")
        .or_else(|| trimmed.strip_prefix("TLS"))
        .unwrap_or(trimmed)
        .trim_start_matches(['v', ' ']);
    match version {
        "" | "1.2" => Ok(TlsMinVersion::Tls12),
        "1.3" => Ok(TlsMinVersion::Tls13),
        "1.0" | "1.1" => Err(format!(
            "'{trimmed}': TLS {version} is not supported (rustls implements 1.2 and 1.3)"
        )),
        _ => Err(format!("'{trimmed}' is not a TLS version (1.2 or 1.3)")),
    }
}

/// Why TLS cannot be set up. Each message is one line that names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Settings that do not go together.
    #[error("invalid configuration: {variable} {reason}")]
    Conflict {
        /// The variable at fault.
        variable: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read.
    #[error("invalid configuration: {variable} = '{path}': cannot read: {source}")]
    Read {
        /// The variable that names the file.
        variable: &'static str,
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file was read but does not hold what the setting needs.
    #[error("invalid configuration: {variable} = '{path}': {reason}")]
    File {
        /// The variable that names the file.
        variable: &'static str,
        /// The file.
        path: String,
        /// What is wrong with its content.
        reason: String,
    },
    /// rustls refused the certificates (e.g. a key that does not match its certificate).
    #[error("invalid configuration: {variable}: {reason}")]
    Rustls {
        /// The variable most likely at fault.
        variable: &'static str,
        /// rustls' reason.
        reason: String,
    },
    /// The self-signed certificate of `GUBER_TLS_AUTO` could not be made.
    #[error("invalid configuration: GUBER_TLS_AUTO: cannot generate a certificate: {0}")]
    Generate(rcgen::Error),
}

impl TlsError {
    /// rustls refused the protocol versions of `GUBER_TLS_MIN_VERSION`.
    pub(crate) fn min_version(error: rustls::Error) -> Self {
        TlsError::Rustls {
            variable: "GUBER_TLS_MIN_VERSION",
            reason: error.to_string(),
        }
    }
}

/// The node's `GUBER_TLS_*` settings as given, before they are checked ([`TlsSettings`]);
/// translated from the node's configuration by `config::options`, so TLS knows nothing of the
/// command line. A variable set to the empty string counts as unset.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `GUBER_TLS_CERT`.
    pub cert: Option<String>,
    /// `GUBER_TLS_KEY`.
    pub key: Option<String>,
    /// `GUBER_TLS_AUTO`.
    pub auto: bool,
    /// `GUBER_TLS_CA`.
    pub ca: Option<String>,
    /// `GUBER_TLS_CLIENT_AUTH`.
    pub client_auth: ClientAuth,
    /// `GUBER_TLS_CLIENT_AUTH_CA_CERT`.
    pub client_auth_ca_cert: Option<String>,
    /// `GUBER_TLS_CLIENT_AUTH_CERT`.
    pub client_auth_cert: Option<String>,
    /// `GUBER_TLS_CLIENT_AUTH_KEY`.
    pub client_auth_key: Option<String>,
    /// `GUBER_TLS_CLIENT_AUTH_SERVER_NAME`.
    pub client_auth_server_name: Option<String>,
    /// `GUBER_TLS_INSECURE_SKIP_VERIFY`.
    pub insecure_skip_verify: bool,
    /// `GUBER_TLS_MIN_VERSION`.
    pub min_version: TlsMinVersion,
    /// The address this node advertises to peers (`GUBER_ADVERTISE_ADDRESS`, else the gRPC
    /// address); its host names `GUBER_TLS_AUTO`'s certificate.
    pub advertise_address: String,
    /// Whether this node discovers peers (it will call them, so their certificates need a CA).
    pub has_peers: bool,
}

/// Where this node's own certificate comes from.
#[derive(Debug, Clone)]
enum IdentitySource {
    /// `GUBER_TLS_CERT` and `GUBER_TLS_KEY`.
    Files { cert: String, key: String },
    /// `GUBER_TLS_AUTO`: self-signed for these extra names (besides localhost).
    Auto { names: Vec<String> },
}

/// The TLS settings of a node, checked for consistency (files are read by [`TlsState::load`]).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    identity: IdentitySource,
    ca: Option<String>,
    client_auth: ClientAuth,
    client_auth_ca: Option<String>,
    client_identity: Option<(String, String)>,
    server_name: Option<String>,
    insecure_skip_verify: bool,
    min_version: TlsMinVersion,
}

/// `Some` for a set, non-empty value (an empty variable counts as unset).
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn conflict(variable: &'static str, reason: impl Into<String>) -> TlsError {
    TlsError::Conflict {
        variable,
        reason: reason.into(),
    }
}

impl TlsSettings {
    /// The TLS settings of `config`: `None` when TLS is off (no `GUBER_TLS_CERT`, no
    /// `GUBER_TLS_AUTO`), an error naming the variable for an inconsistent combination.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Self>, TlsError> {
        let cert = set(&config.cert);
        let key = set(&config.key);
        let identity = match (cert, key, config.auto) {
            (Some(_), _, true) | (None, Some(_), true) => {
                return Err(conflict(
                    "GUBER_TLS_AUTO",
                    "cannot be combined with GUBER_TLS_CERT or GUBER_TLS_KEY: use either files or a self-signed certificate",
                ));
            }
            (Some(cert), Some(key), false) => Some(IdentitySource::Files {
                cert: cert.to_string(),
                key: key.to_string(),
            }),
            (None, Some(_), false) => {
                return Err(conflict(
                    "GUBER_TLS_KEY",
                    "is set but GUBER_TLS_CERT is not",
                ));
            }
            (Some(_), None, false) => {
                return Err(conflict(
                    "GUBER_TLS_CERT",
                    "is set but GUBER_TLS_KEY is not",
                ));
            }
            (None, None, true) => Some(IdentitySource::Auto {
                names: advertise_host(config).into_iter().collect(),
            }),
            (None, None, false) => None,
        };
        let client_cert = set(&config.client_auth_cert);
        let client_key = set(&config.client_auth_key);
        let Some(identity) = identity else {
            let tls_only = [
                ("GUBER_TLS_CA", set(&config.ca).is_some()),
                (
                    "GUBER_TLS_CLIENT_AUTH",
                    config.client_auth != ClientAuth::None,
                ),
                (
                    "GUBER_TLS_CLIENT_AUTH_CA_CERT",
                    set(&config.client_auth_ca_cert).is_some(),
                ),
                ("GUBER_TLS_CLIENT_AUTH_CERT", client_cert.is_some()),
                ("GUBER_TLS_CLIENT_AUTH_KEY", client_key.is_some()),
                (
                    "GUBER_TLS_CLIENT_AUTH_SERVER_NAME",
                    set(&config.client_auth_server_name).is_some(),
                ),
                (
                    "GUBER_TLS_INSECURE_SKIP_VERIFY",
                    config.insecure_skip_verify,
                ),
            ];
            if let Some((variable, _)) = tls_only.iter().find(|(_, is_set)| *is_set) {
                return Err(conflict(
                    variable,
                    "is set but TLS is off: set GUBER_TLS_CERT and GUBER_TLS_KEY, or GUBER_TLS_AUTO=true",
                ));
            }
            return Ok(None);
        };
        let client_identity = match (client_cert, client_key) {
            (Some(cert), Some(key)) => Some((cert.to_string(), key.to_string())),
            (Some(_), None) => {
                return Err(conflict(
                    "GUBER_TLS_CLIENT_AUTH_CERT",
                    "is set but GUBER_TLS_CLIENT_AUTH_KEY is not",
                ));
            }
            (None, Some(_)) => {
                return Err(conflict(
                    "GUBER_TLS_CLIENT_AUTH_KEY",
                    "is set but GUBER_TLS_CLIENT_AUTH_CERT is not",
                ));
            }
            (None, None) => None,
        };
        let ca = set(&config.ca).map(str::to_string);
        let client_auth_ca = set(&config.client_auth_ca_cert).map(str::to_string);
        if config.client_auth != ClientAuth::None && ca.is_none() && client_auth_ca.is_none() {
            return Err(conflict(
                "GUBER_TLS_CLIENT_AUTH",
                "needs GUBER_TLS_CA (or GUBER_TLS_CLIENT_AUTH_CA_CERT) to verify client certificates",
            ));
        }
        Ok(Some(Self {
            identity,
            ca,
            client_auth: config.client_auth,
            client_auth_ca,
            client_identity,
            server_name: set(&config.client_auth_server_name).map(str::to_string),
            insecure_skip_verify: config.insecure_skip_verify,
            min_version: config.min_version,
        }))
    }

    /// Whether peer-plane callers (PeersV1, Handoff, Admin, AllowV1) must present a verified
    /// client certificate.
    pub fn peers_require_client_certificate(&self) -> bool {
        self.client_auth != ClientAuth::None
    }
}

/// The host part of the advertise address, for `GUBER_TLS_AUTO`'s certificate names.
fn advertise_host(config: &TlsConfig) -> Option<String> {
    let address = config.advertise_address.as_str();
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_matches(|c| c == '[' || c == ']');
    (!host.is_empty() && host != "0.0.0.0" && host != "::").then(|| host.to_string())
}

/// The certificates and keys read from the files (or generated), from which the rustls
/// configurations are built.
struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<rustls::RootCertStore>,
    peer_roots: Option<rustls::RootCertStore>,
    client_identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

/// A node's live TLS configurations: the gRPC and HTTP server sides and the peer-client side, each
/// swappable, and the settings to rebuild them from on reload.
pub struct TlsState {
    settings: TlsSettings,
    /// `GUBER_TLS_AUTO`'s identity, made once so that a reload keeps it.
    generated: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    grpc: Arc<ArcSwap<rustls::ServerConfig>>,
    http: Arc<ArcSwap<rustls::ServerConfig>>,
    peer_client: Arc<ArcSwap<rustls::ClientConfig>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The TLS state of `config`, loaded: `None` when TLS is off.
pub fn from_config(config: &TlsConfig) -> Result<Option<Arc<TlsState>>, TlsError> {
    match TlsSettings::from_config(config)? {
        Some(settings) => {
            if settings.ca.is_none() && !settings.insecure_skip_verify && config.has_peers {
                tracing::warn!(
                    "GUBER_TLS_CA is not set: calls to peers cannot verify their certificates; \
                     set GUBER_TLS_CA (or GUBER_TLS_INSECURE_SKIP_VERIFY for tests)"
                );
            }
            Ok(Some(Arc::new(TlsState::load(settings)?)))
        }
        None => Ok(None),
    }
}

/// Checks `config`'s TLS settings and files as the server would at start, without serving.
pub fn check_config(config: &TlsConfig) -> Result<(), TlsError> {
    if let Some(settings) = TlsSettings::from_config(config)? {
        TlsState::load(settings)?;
    }
    Ok(())
}

/// The protocol a port negotiates with ALPN.
const GRPC_ALPN: &[&[u8]] = &[b"h2"];
const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

impl TlsState {
    /// Reads the files (or makes the self-signed certificate) and builds every configuration.
    pub fn load(settings: TlsSettings) -> Result<Self, TlsError> {
        let generated = match &settings.identity {
            IdentitySource::Auto { names } => {
                let identity = auto::self_signed(names)?;
                Some((identity.certificate, identity.key))
            }
            IdentitySource::Files { .. } => None,
        };
        let material = read_material(&settings, generated.as_ref())?;
        let (grpc, http, peer_client) = build_configs(&settings, material)?;
        Ok(Self {
            settings,
            generated,
            grpc: Arc::new(ArcSwap::from_pointee(grpc)),
            http: Arc::new(ArcSwap::from_pointee(http)),
            peer_client: Arc::new(ArcSwap::from_pointee(peer_client)),
        })
    }

    /// Reads the files again and swaps in new configurations for new connections. On an error the
    /// previous configurations stay in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = read_material(&self.settings, self.generated.as_ref())?;
        let (grpc, http, peer_client) = build_configs(&self.settings, material)?;
        self.grpc.store(Arc::new(grpc));
        self.http.store(Arc::new(http));
        self.peer_client.store(Arc::new(peer_client));
        Ok(())
    }

    /// The settings this state was loaded from.
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Accepts TLS connections for the gRPC port on `listener`.
    pub fn grpc_incoming(&self, listener: TcpListener) -> acceptor::TlsIncoming {
        Self::incoming(listener, &self.grpc)
    }

    /// Accepts TLS connections for the HTTP port on `listener`.
    pub fn http_incoming(&self, listener: TcpListener) -> acceptor::TlsIncoming {
        Self::incoming(listener, &self.http)
    }

    /// Accepts TLS connections on `listener` with `config`, within the handshake bounds.
    fn incoming(
        listener: TcpListener,
        config: &Arc<ArcSwap<rustls::ServerConfig>>,
    ) -> acceptor::TlsIncoming {
        acceptor::TlsIncoming::new(
            listener,
            Arc::clone(config),
            HANDSHAKE_TIMEOUT,
            MAX_HANDSHAKES,
        )
    }

    /// A connector for gRPC channels to peers (always the current client configuration).
    pub fn peer_connector(&self) -> connector::TlsConnector {
        connector::TlsConnector::new(
            Arc::clone(&self.peer_client),
            self.settings.server_name.clone(),
        )
    }

    /// Reloads on every SIGHUP until `stopped` turns true (Unix only; elsewhere nothing happens).
    pub fn spawn_reload_on_sighup(
        self: &Arc<Self>,
        stopped: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let state = Arc::clone(self);
        tokio::spawn(async move { state.reload_on_sighup(stopped).await })
    }

    #[cfg(unix)]
    async fn reload_on_sighup(&self, mut stopped: watch::Receiver<bool>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; TLS certificates will not reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    match self.reload() {
                        Ok(()) => tracing::info!("SIGHUP: TLS certificates reloaded"),
                        Err(error) => tracing::error!(
                            %error,
                            "SIGHUP: TLS reload failed; the previous certificates stay in use"
                        ),
                    }
                }
            }
        }
    }

    #[cfg(not(unix))]
    async fn reload_on_sighup(&self, _stopped: watch::Receiver<bool>) {}
}

fn read_material(
    settings: &TlsSettings,
    generated: Option<&(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> Result<Material, TlsError> {
    let (chain, key) = match (&settings.identity, generated) {
        (IdentitySource::Files { cert, key }, _) => {
            pem::read_identity(("GUBER_TLS_CERT", cert), ("GUBER_TLS_KEY", key))?
        }
        (IdentitySource::Auto { .. }, Some((cert, key))) => (vec![cert.clone()], key.clone_key()),
        (IdentitySource::Auto { names }, None) => {
            let identity = auto::self_signed(names)?;
            (vec![identity.certificate], identity.key)
        }
    };
    let peer_roots = match &settings.ca {
        Some(ca) => Some(pem::read_root_store("GUBER_TLS_CA", ca)?),
        None => None,
    };
    let client_roots = match (&settings.client_auth_ca, &peer_roots) {
        (Some(path), _) => Some(pem::read_root_store("GUBER_TLS_CLIENT_AUTH_CA_CERT", path)?),
        (None, roots) => roots.clone(),
    };
    let client_identity = match &settings.client_identity {
        Some((cert, key)) => Some(pem::read_identity(
            ("GUBER_TLS_CLIENT_AUTH_CERT", cert),
            ("GUBER_TLS_CLIENT_AUTH_KEY", key),
        )?),
        None => None,
    };
    Ok(Material {
        chain,
        key,
        client_roots,
        peer_roots,
        client_identity,
    })
}

/// The gRPC server, HTTP server and peer client configurations.
fn build_configs(
    settings: &TlsSettings,
    material: Material,
) -> Result<
    (
        rustls::ServerConfig,
        rustls::ServerConfig,
        rustls::ClientConfig,
    ),
    TlsError,
> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_variable = match settings.identity {
        IdentitySource::Files { .. } => "GUBER_TLS_KEY",
        IdentitySource::Auto { .. } => "GUBER_TLS_AUTO",
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(settings.min_version.versions())
        .map_err(TlsError::min_version)?;
    let builder = match (settings.client_auth, material.client_roots) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(roots)) => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            if mode == ClientAuth::Request {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|error| TlsError::Rustls {
                variable: if settings.client_auth_ca.is_some() {
                    "GUBER_TLS_CLIENT_AUTH_CA_CERT"
                } else {
                    "GUBER_TLS_CA"
                },
                reason: format!("cannot verify client certificates with it: {error}"),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let peer_identity = material
        .client_identity
        .unwrap_or_else(|| (material.chain.clone(), material.key.clone_key()));
    let mut grpc = builder
        .with_single_cert(material.chain, material.key)
        .map_err(|error| TlsError::Rustls {
            variable: key_variable,
            reason: format!("the key and certificate cannot be used together: {error}"),
        })?;
    let mut http = grpc.clone();
    grpc.alpn_protocols = GRPC_ALPN.iter().map(|p| p.to_vec()).collect();
    http.alpn_protocols = HTTP_ALPN.iter().map(|p| p.to_vec()).collect();

    let peer_client = connector::client_config(connector::ClientTlsOptions {
        roots: material.peer_roots,
        identity: Some(peer_identity),
        insecure_skip_verify: settings.insecure_skip_verify,
        min_version: settings.min_version,
        alpn: GRPC_ALPN.iter().map(|p| p.to_vec()).collect(),
    })
    .map_err(|error| match error {
        TlsError::Rustls { reason, .. } => TlsError::Rustls {
            variable: if settings.client_identity.is_some() {
                "GUBER_TLS_CLIENT_AUTH_KEY"
            } else {
                key_variable
            },
            reason,
        },
        other => other,
    })?;
    Ok((grpc, http, peer_client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_auth_accepts_gubernator_spellings_and_empty() {
        assert_eq!(parse_client_auth(""), Ok(ClientAuth::None));
        assert_eq!(parse_client_auth("NONE"), Ok(ClientAuth::None));
        assert_eq!(parse_client_auth("request-cert"), Ok(ClientAuth::Request));
        assert_eq!(parse_client_auth("verify-cert"), Ok(ClientAuth::Request));
        assert_eq!(
            parse_client_auth("require-and-verify"),
            Ok(ClientAuth::RequireAndVerify)
        );
        let error = parse_client_auth("sometimes").unwrap_err();
        assert!(error.contains("require-and-verify"), "{error}");
    }

    #[test]
    fn min_version_is_1_2_or_1_3() {
        assert_eq!(parse_min_version(""), Ok(TlsMinVersion::Tls12));
        assert_eq!(parse_min_version("1.2"), Ok(TlsMinVersion::Tls12));
        assert_eq!(parse_min_version("tls1.3"), Ok(TlsMinVersion::Tls13));
        assert!(
            parse_min_version("1.0")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(parse_min_version("2").is_err());
        assert_eq!(TlsMinVersion::Tls13.versions().len(), 1);
    }

    #[test]
    fn auto_certificates_name_the_advertise_host() {
        let config = crate::config::server_config_from_args([
            "--advertise-address=10.1.2.3:1051",
            "--tls-auto",
        ])
        .unwrap();
        let config = TlsConfig::from(&config);
        assert_eq!(advertise_host(&config).as_deref(), Some("10.1.2.3"));
        let settings = TlsSettings::from_config(&config).unwrap().unwrap();
        assert!(!settings.peers_require_client_certificate());
        let config =
            crate::config::server_config_from_args(["--grpc-address=0.0.0.0:1051"]).unwrap();
        assert_eq!(advertise_host(&TlsConfig::from(&config)), None);
    }
}
