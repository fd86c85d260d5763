//! The peer plane's one gate: every RPC that only nodes of the cluster should call passes
//! [`PeerAuthLayer`], applied once to the whole gRPC server in `server.rs`.
//!
//! Why one layer instead of a check per service: a service added later is guarded without anyone
//! remembering to guard it. The layer decides by the request path, and it is deny-by-default:
//! only the public services (`pb.gubernator.V1`, Envoy's `envoy.service.ratelimit.v3.RateLimitService`,
//! `grpc.health.v1`, reflection) pass unchecked;
//! every other path (PeersV1, `ringlimit.v1.Handoff`, `ringlimit.v1.Admin`,
//! `ringlimit.v1.AllowV1`, anything new) is the peer plane.
//!
//! Two independent checks, each on when configured:
//! - **a verified client certificate** (`GUBER_TLS_CLIENT_AUTH=request` or `require-and-verify`):
//!   rustls only records certificates it verified against the client CA, so presence is enough;
//! - **the shared secret** (`GUBER_PEER_SECRET` / `GUBER_PEER_SECRET_FILE`): every node sends it
//!   in the [`SECRET_METADATA_KEY`] header on every peer call ([`PeerChannel`]), and the layer
//!   compares it in constant time.
//!
//! A refused call is answered `UNAUTHENTICATED` before it is decoded, so it changes nothing; it is
//! counted in `ringlimit_peer_auth_refused_total{service}` (labels from [`PeerService`], never
//! from the caller) and never logged with what it carried.

use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use prometheus::IntCounterVec;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::secret::constant_time_eq;

/// The metadata header that carries the peer secret on every node-to-node call.
pub const SECRET_METADATA_KEY: &str = "ringlimit-peer-secret";

/// The gRPC services anyone who reaches the port may call; every other path is the peer plane.
const PUBLIC_SERVICES: [&str; 5] = [
    "/pb.gubernator.V1/",
    "/envoy.service.ratelimit.v3.RateLimitService/",
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The shared secret of the peer plane. Its `Debug` output never shows the value.
#[derive(Clone)]
pub struct PeerSecret {
    value: Arc<str>,
    header: AsciiMetadataValue,
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(***)")
    }
}

/// Why the peer secret settings cannot be used. Messages name the variable, never the value.
#[derive(Debug, thiserror::Error)]
pub enum PeerSecretError {
    /// Both the value and the file are set.
    #[error(
        "invalid configuration: GUBER_PEER_SECRET and GUBER_PEER_SECRET_FILE are both set; set one"
    )]
    Both,
    /// The file could not be read.
    #[error("invalid configuration: GUBER_PEER_SECRET_FILE = '{path}': cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds nothing (after removing its trailing newline).
    #[error("invalid configuration: GUBER_PEER_SECRET_FILE = '{path}': the file is empty")]
    EmptyFile {
        /// The file.
        path: String,
    },
    /// The secret cannot travel in a header: only printable ASCII, without leading or trailing
    /// spaces.
    #[error(
        "invalid configuration: {variable}: the secret must be printable ASCII without leading or trailing spaces"
    )]
    NotPrintable {
        /// The variable it came from.
        variable: &'static str,
    },
}

impl PeerSecret {
    /// The secret from `GUBER_PEER_SECRET` (`value`) or the file named by
    /// `GUBER_PEER_SECRET_FILE` (`file`, trailing newline removed). `None` when neither is set
    /// (an empty value counts as unset).
    pub fn from_settings(
        value: Option<&str>,
        file: Option<&str>,
    ) -> Result<Option<Self>, PeerSecretError> {
        let value = value.filter(|value| !value.is_empty());
        let file = file.map(str::trim).filter(|file| !file.is_empty());
        match (value, file) {
            (Some(_), Some(_)) => Err(PeerSecretError::Both),
            (Some(value), None) => Self::new(value, "GUBER_PEER_SECRET").map(Some),
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| PeerSecretError::Read {
                        path: path.to_string(),
                        source,
                    })?;
                let text = text
                    .strip_suffix('\n')
                    .map(|text| text.strip_suffix('\r').unwrap_or(text))
                    .unwrap_or(&text);
                if text.is_empty() {
                    return Err(PeerSecretError::EmptyFile {
                        path: path.to_string(),
                    });
                }
                Self::new(text, "GUBER_PEER_SECRET_FILE").map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// A secret that must be printable ASCII without leading or trailing spaces (so a header
    /// carries it unchanged); `variable` names its source in the error.
    pub fn new(value: &str, variable: &'static str) -> Result<Self, PeerSecretError> {
        let printable = !value.is_empty()
            && value.bytes().all(|byte| (0x20..0x7f).contains(&byte))
            && !value.starts_with(' ')
            && !value.ends_with(' ');
        let header = printable
            .then(|| MetadataValue::try_from(value).ok())
            .flatten()
            .ok_or(PeerSecretError::NotPrintable { variable })?;
        Ok(Self {
            value: Arc::from(value),
            header,
        })
    }

    /// Whether `given` is the secret (constant time).
    pub fn matches(&self, given: &[u8]) -> bool {
        constant_time_eq(given, self.value.as_bytes())
    }
}

/// The peer-plane service a path belongs to: the `service` label of the refusal metric, from a
/// fixed set so that a caller cannot create label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerService {
    /// `pb.gubernator.PeersV1`.
    Peers,
    /// `ringlimit.v1.Handoff`.
    Handoff,
    /// `ringlimit.v1.Admin`.
    Admin,
    /// `ringlimit.v1.AllowV1`.
    Allow,
    /// Any other path that is not public (unknown services included).
    Other,
}

impl PeerService {
    /// The peer-plane service of `path`, or `None` for a public service.
    pub fn of_path(path: &str) -> Option<Self> {
        if PUBLIC_SERVICES
            .iter()
            .any(|service| path.starts_with(service))
        {
            return None;
        }
        let service = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .map_or("", |(service, _)| service);
        Some(match service {
            "pb.gubernator.PeersV1" => PeerService::Peers,
            "ringlimit.v1.Handoff" => PeerService::Handoff,
            "ringlimit.v1.Admin" => PeerService::Admin,
            "ringlimit.v1.AllowV1" => PeerService::Allow,
            _ => PeerService::Other,
        })
    }

    /// Every service, for metrics that start at 0.
    pub const ALL: [PeerService; 5] = [
        PeerService::Peers,
        PeerService::Handoff,
        PeerService::Admin,
        PeerService::Allow,
        PeerService::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            PeerService::Peers => "peers",
            PeerService::Handoff => "handoff",
            PeerService::Admin => "admin",
            PeerService::Allow => "allow",
            PeerService::Other => "other",
        }
    }
}

/// Why a peer-plane call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Client auth is on and the connection presented no verified client certificate.
    #[error(
        "peer RPCs require a client certificate signed by the cluster's CA (GUBER_TLS_CLIENT_AUTH)"
    )]
    NoClientCertificate,
    /// A secret is configured and the call carried none.
    #[error("peer RPCs require the cluster's peer secret (GUBER_PEER_SECRET)")]
    NoSecret,
    /// A secret is configured and the call carried another one.
    #[error("the peer secret does not match (GUBER_PEER_SECRET)")]
    WrongSecret,
}

impl From<Refusal> for tonic::Status {
    fn from(refusal: Refusal) -> Self {
        tonic::Status::unauthenticated(refusal.to_string())
    }
}

/// What the peer plane requires of a caller.
#[derive(Debug, Clone, Default)]
pub struct PeerAuthPolicy {
    /// The shared secret every peer call must carry, if configured.
    pub secret: Option<PeerSecret>,
    /// Whether a verified client certificate is required (client auth is on).
    pub require_client_certificate: bool,
}

impl PeerAuthPolicy {
    /// Whether anything protects the peer plane.
    pub fn is_open(&self) -> bool {
        self.secret.is_none() && !self.require_client_certificate
    }

    /// Checks one peer-plane call: `has_client_certificate` says whether its connection presented
    /// a verified certificate, `presented` is its secret header, if any.
    pub fn check(
        &self,
        has_client_certificate: bool,
        presented: Option<&[u8]>,
    ) -> Result<(), Refusal> {
        if self.require_client_certificate && !has_client_certificate {
            return Err(Refusal::NoClientCertificate);
        }
        if let Some(secret) = &self.secret {
            let presented = presented.ok_or(Refusal::NoSecret)?;
            if !secret.matches(presented) {
                return Err(Refusal::WrongSecret);
            }
        }
        Ok(())
    }
}

/// The tower layer that guards the peer plane of a tonic server (see the module docs).
#[derive(Clone)]
pub struct PeerAuthLayer {
    policy: Arc<PeerAuthPolicy>,
    refused: IntCounterVec,
}

impl PeerAuthLayer {
    /// A layer enforcing `policy`, counting refusals in `refused` (by service label).
    pub fn new(policy: PeerAuthPolicy, refused: IntCounterVec) -> Self {
        Self {
            policy: Arc::new(policy),
            refused,
        }
    }
}

impl<S> Layer<S> for PeerAuthLayer {
    type Service = PeerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerAuth {
            inner,
            policy: Arc::clone(&self.policy),
            refused: self.refused.clone(),
        }
    }
}

/// The service made by [`PeerAuthLayer`].
#[derive(Clone)]
pub struct PeerAuth<S> {
    inner: S,
    policy: Arc<PeerAuthPolicy>,
    refused: IntCounterVec,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for PeerAuth<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    /// The inner call, or the refusal (no allocation on the way to the inner service).
    type Future = Either<S::Future, Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        if let Some(service) = PeerService::of_path(request.uri().path()) {
            let has_certificate = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(TlsConnectInfo::peer_certs)
                .is_some_and(|certificates| !certificates.is_empty());
            let presented = request
                .headers()
                .get(SECRET_METADATA_KEY)
                .map(http::HeaderValue::as_bytes);
            if let Err(refusal) = self.policy.check(has_certificate, presented) {
                self.refused.with_label_values(&[service.label()]).inc();
                let response = tonic::Status::from(refusal).into_http::<ResBody>();
                return Either::Right(std::future::ready(Ok(response)));
            }
        }
        Either::Left(self.inner.call(request))
    }
}

/// Attaches the peer secret (when configured) and the trace context (when tracing) to every call a
/// node makes to another node.
#[derive(Debug, Clone, Default)]
pub struct AttachSecret {
    secret: Option<PeerSecret>,
}

impl AttachSecret {
    /// Attaches `secret` (nothing when `None`).
    pub fn new(secret: Option<PeerSecret>) -> Self {
        Self { secret }
    }
}

impl Interceptor for AttachSecret {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(secret) = &self.secret {
            request
                .metadata_mut()
                .insert(SECRET_METADATA_KEY, secret.header.clone());
        }
        // The trace continues on the other node (`traceparent`), when tracing.
        crate::telemetry::inject(request.metadata_mut());
        Ok(request)
    }
}

/// The channel of every node-to-node client: the peers' transport, with the secret attached.
pub type PeerChannel = InterceptedService<Channel, AttachSecret>;

/// `channel` with `secret` attached to every call.
pub fn peer_channel(channel: Channel, secret: Option<PeerSecret>) -> PeerChannel {
    InterceptedService::new(channel, AttachSecret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_public_services_are_outside_the_peer_plane() {
        for path in [
            "/pb.gubernator.V1/GetRateLimits",
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            "/pb.gubernator.V1/HealthCheck",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(PeerService::of_path(path), None, "{path}");
        }
        for (path, service) in [
            (
                "/pb.gubernator.PeersV1/UpdatePeerGlobals",
                PeerService::Peers,
            ),
            ("/ringlimit.v1.Handoff/Transfer", PeerService::Handoff),
            ("/ringlimit.v1.Admin/LocalStats", PeerService::Admin),
            ("/ringlimit.v1.AllowV1/Allow", PeerService::Allow),
            ("/ringlimit.v1.Future/Call", PeerService::Other),
            ("/pb.gubernator.V1x/GetRateLimits", PeerService::Other),
            ("", PeerService::Other),
        ] {
            assert_eq!(PeerService::of_path(path), Some(service), "{path}");
        }
    }

    #[test]
    fn the_policy_requires_what_is_configured() {
        let open = PeerAuthPolicy::default();
        assert!(open.is_open());
        assert_eq!(open.check(false, None), Ok(()));

        let secret = PeerAuthPolicy {
            secret: Some(PeerSecret::new("s3cret", "GUBER_PEER_SECRET").unwrap()),
            require_client_certificate: false,
        };
        assert!(!secret.is_open());
        assert_eq!(secret.check(false, Some(b"s3cret")), Ok(()));
        assert_eq!(secret.check(true, None), Err(Refusal::NoSecret));
        assert_eq!(
            secret.check(true, Some(b"s3cre")),
            Err(Refusal::WrongSecret)
        );
        assert_eq!(secret.check(true, Some(b"")), Err(Refusal::WrongSecret));

        let both = PeerAuthPolicy {
            require_client_certificate: true,
            ..secret
        };
        assert_eq!(
            both.check(false, Some(b"s3cret")),
            Err(Refusal::NoClientCertificate)
        );
        assert_eq!(both.check(true, Some(b"s3cret")), Ok(()));
    }

    #[test]
    fn secrets_come_from_one_setting_and_files_lose_their_trailing_newline() {
        assert!(PeerSecret::from_settings(None, None).unwrap().is_none());
        assert!(
            PeerSecret::from_settings(Some(""), Some(" "))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            PeerSecret::from_settings(Some("a"), Some("/nonexistent")),
            Err(PeerSecretError::Both)
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from file\r\n").unwrap();
        let secret = PeerSecret::from_settings(None, path.to_str())
            .unwrap()
            .unwrap();
        assert!(secret.matches(b"from file"));
        assert!(!secret.matches(b"from file\r\n"));
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            PeerSecret::from_settings(None, path.to_str()),
            Err(PeerSecretError::EmptyFile { .. })
        ));
        assert!(matches!(
            PeerSecret::from_settings(None, Some("/nonexistent/secret")),
            Err(PeerSecretError::Read { .. })
        ));
    }

    #[test]
    fn secrets_that_a_header_would_change_are_refused_and_never_shown() {
        for bad in [" lead", "trail ", "tab\there", "new\nline", "é"] {
            assert!(
                PeerSecret::new(bad, "GUBER_PEER_SECRET").is_err(),
                "{bad:?}"
            );
        }
        let secret = PeerSecret::new("hunter2", "GUBER_PEER_SECRET").unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
        let error = PeerSecret::new("hunter 2 ", "GUBER_PEER_SECRET").unwrap_err();
        assert!(!error.to_string().contains("hunter"));
    }

    #[test]
    fn the_secret_is_attached_to_every_call() {
        let mut attach =
            AttachSecret::new(Some(PeerSecret::new("s", "GUBER_PEER_SECRET").unwrap()));
        let request = attach.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get(SECRET_METADATA_KEY).unwrap(), "s");
        let request = AttachSecret::default()
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(request.metadata().get(SECRET_METADATA_KEY).is_none());
    }
}
