//! The client side: rustls client configurations and a connector that gives tonic channels TLS
//! connections built from the *current* configuration (so a reload reaches new peer connections).
//!
//! tonic's own `ClientTlsConfig` is fixed when the channel is made and cannot skip verification;
//! a connector of our own can do both, with the same rustls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::{TlsError, TlsMinVersion};

/// What a client configuration is built from.
pub struct ClientTlsOptions {
    /// CAs that may sign the server's certificate (`None`: no CA, so only
    /// `insecure_skip_verify` lets a handshake succeed).
    pub roots: Option<rustls::RootCertStore>,
    /// The client certificate chain and key presented when the server asks for one.
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// Accept any server certificate (tests only).
    pub insecure_skip_verify: bool,
    /// The oldest TLS version offered.
    pub min_version: TlsMinVersion,
    /// The application protocols offered with ALPN (`h2` for gRPC).
    pub alpn: Vec<Vec<u8>>,
}

/// A rustls client configuration from `options`, with the ring provider.
pub fn client_config(options: ClientTlsOptions) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(options.min_version.versions())
        .map_err(TlsError::min_version)?;
    let builder = if options.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipServerVerification(provider)))
    } else {
        builder.with_root_certificates(options.roots.unwrap_or_else(rustls::RootCertStore::empty))
    };
    let mut config = match options.identity {
        Some((chain, key)) => {
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| TlsError::Rustls {
                    variable: "GUBER_TLS_CLIENT_AUTH_KEY",
                    reason: format!(
                        "the client key and certificate cannot be used together: {error}"
                    ),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = options.alpn;
    Ok(config)
}

/// A tower connector for `tonic::transport::Endpoint::connect_with_connector`: TCP to the URI's
/// host and port, then a TLS handshake with the current client configuration. The server name
/// checked is `server_name` when set (`GUBER_TLS_CLIENT_AUTH_SERVER_NAME`), else the URI's host
/// (a DNS name or an IP address). Give the endpoint an `http://` URI: TLS is added here.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ArcSwap<rustls::ClientConfig>>,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector that reads `config` at each connection.
    pub fn new(config: Arc<ArcSwap<rustls::ClientConfig>>, server_name: Option<String>) -> Self {
        Self {
            config,
            server_name,
        }
    }

    /// A connector with a fixed configuration (the client subcommands).
    pub fn fixed(config: rustls::ClientConfig, server_name: Option<String>) -> Self {
        Self::new(Arc::new(ArcSwap::from_pointee(config)), server_name)
    }
}

type ConnectFuture = Pin<
    Box<
        dyn Future<Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>>
            + Send,
    >,
>;

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.load_full();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let invalid =
                |reason: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, reason);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("no host in '{uri}'")))?
                .trim_matches(|c| c == '[' || c == ']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = server_name.unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name.clone())
                .map_err(|error| invalid(format!("invalid TLS server name '{name}': {error}")))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Accepts every server certificate, but still checks the handshake signatures
/// (`GUBER_TLS_INSECURE_SKIP_VERIFY`, `--tls-insecure-skip-verify`; tests only).
#[derive(Debug)]
struct SkipServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
