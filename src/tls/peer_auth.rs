//! PeersV1 is the cluster's internal API: with client authentication on (`request` or
//! `require-and-verify`), a caller must have presented a client certificate that the handshake
//! verified against the client CA. Under `require-and-verify` the handshake already guarantees it;
//! under `request` this interceptor is what keeps clients without a certificate (who may call V1)
//! out of PeersV1.

use tonic::{Request, Status};

/// A tonic interceptor for the PeersV1 service.
#[derive(Debug, Clone, Copy)]
pub struct PeerAuthInterceptor {
    require_client_certificate: bool,
}

impl PeerAuthInterceptor {
    /// Refuses callers without a verified client certificate when `require_client_certificate`;
    /// otherwise lets every call through.
    pub fn new(require_client_certificate: bool) -> Self {
        Self {
            require_client_certificate,
        }
    }
}

impl tonic::service::Interceptor for PeerAuthInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if !self.require_client_certificate {
            return Ok(request);
        }
        // rustls only records certificates it verified, so any certificate here is a valid one.
        let verified = request
            .peer_certs()
            .is_some_and(|certificates| !certificates.is_empty());
        if verified {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "PeersV1 requires a client certificate signed by the cluster's CA (GUBER_TLS_CLIENT_AUTH)",
            ))
        }
    }
}
