//! `ringlimit proxy`: a rate-limiting reverse proxy in front of an HTTP API.
//!
//! Every request is keyed (the `X-API-Key` header, else the client's address), matched against the
//! rules, and decided by the cluster; allowed requests stream to the upstream and back, denied ones
//! get `429 Too Many Requests`. Because the cluster decides, any number of proxy replicas share
//! each limit.
//!
//! The rules (key extraction, trusted proxies, path normalisation, rules matching, header
//! computation) are pure and live in their own modules; [`server`] is the thin I/O around them, and
//! [`decider`] asks the cluster (an embedded node or a remote one).
//!
//! The proxy never fails open because of the client's own input: a key header that cannot be a
//! limit key is a 400 ([`key`]), an item the cluster refuses as invalid is never let through
//! ([`decider::DecideError::Invalid`]), and only a cluster that cannot decide goes through
//! `GUBER_PROXY_ON_CLUSTER_ERROR`.

pub mod client_ip;
pub mod decider;
pub mod headers;
pub mod key;
pub mod metrics;
pub mod path;
pub mod rules;
pub mod server;

use std::time::Duration;

use http::{HeaderName, Uri};

pub use client_ip::TrustedProxies;
pub use decider::Decider;
pub use key::client_key;
pub use metrics::ProxyMetrics;
pub use rules::{RuleLimit, Rules};
pub use server::{ProxyError, RunningProxy, start};

/// What to do when the cluster cannot decide (`GUBER_PROXY_ON_CLUSTER_ERROR`; the command line's
/// parser of it is the binary's, so the library knows nothing of clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Let the request through, without `RateLimit-*` headers.
    Open,
    /// Answer `503 Service Unavailable` with `{"error":"rate_limiter_unavailable",...}`.
    Closed,
}

/// The proxy's validated configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where to listen (`host:port`).
    pub bind_addr: String,
    /// Where allowed requests go.
    pub upstream: Upstream,
    /// The limits.
    pub rules: Rules,
    /// The header whose value is the client key (`X-API-Key`).
    pub key_header: HeaderName,
    /// Peers whose `X-Forwarded-For` / `Forwarded` are believed.
    pub trusted_proxies: TrustedProxies,
    /// What to do when the cluster cannot decide.
    pub failure_mode: FailureMode,
    /// How long the upstream may take to start answering.
    pub upstream_timeout: Duration,
    /// The longest limit key the cluster accepts (`GUBER_MAX_KEY_LENGTH`); longer key headers
    /// are refused with 400 before the cluster is asked.
    pub max_key_bytes: usize,
    /// How long a client may take to send a request's head (`GUBER_PROXY_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body (`GUBER_PROXY_BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// The most open client connections (`GUBER_PROXY_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

/// The upstream base URL: `http://host:port` with an optional base path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: String,
    base_path: String,
}

/// An `UPSTREAM_URL` that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{url}' is not a usable upstream URL: {reason}")]
pub struct UpstreamError {
    url: String,
    reason: &'static str,
}

impl std::str::FromStr for Upstream {
    type Err = UpstreamError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let error = |reason| UpstreamError {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| error("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(error("only http:// upstreams are supported")),
            None => return Err(error("give the scheme, e.g. http://127.0.0.1:9000")),
        }
        let authority = uri.authority().ok_or_else(|| error("no host"))?.to_string();
        if uri.query().is_some() {
            return Err(error("a query is not allowed in the upstream URL"));
        }
        Ok(Self {
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

impl Upstream {
    /// `host:port` of the upstream (its `Host` header).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The upstream URI for a request to `original` (the base path, then the request's path and
    /// query, unchanged).
    pub fn uri_for(&self, original: &Uri) -> Result<Uri, http::Error> {
        let path_and_query = original.path_and_query().map_or("/", |pq| pq.as_str());
        Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
            .path_and_query(format!("{}{path_and_query}", self.base_path))
            .build()
    }
}

/// The cluster limit name of a rule.
pub fn limit_name(rule: &str) -> String {
    format!("proxy_{rule}")
}

/// `:8080` (Go's "every interface") as `0.0.0.0:8080`; anything else unchanged.
pub fn normalize_bind_addr(address: &str) -> String {
    if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_validated_and_joined() {
        let up: Upstream = "http://127.0.0.1:9000/api/".parse().unwrap();
        assert_eq!(up.authority(), "127.0.0.1:9000");
        let uri = up.uri_for(&"/v1/x?a=1&b=%20".parse().unwrap()).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:9000/api/v1/x?a=1&b=%20");
        let up: Upstream = "http://example.com".parse().unwrap();
        assert_eq!(
            up.uri_for(&"/".parse().unwrap()).unwrap().to_string(),
            "http://example.com/"
        );
        for bad in [
            "https://example.com",
            "example.com:80",
            "http://x/?q=1",
            "::",
        ] {
            assert!(bad.parse::<Upstream>().is_err(), "{bad}");
        }
    }

    #[test]
    fn limit_names_are_prefixed() {
        assert_eq!(limit_name("default"), "proxy_default");
    }

    #[test]
    fn go_style_bind_addresses() {
        assert_eq!(normalize_bind_addr(":8080"), "0.0.0.0:8080");
        assert_eq!(normalize_bind_addr("127.0.0.1:0"), "127.0.0.1:0");
    }
}
