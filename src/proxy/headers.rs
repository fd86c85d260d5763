//! Header rules of the proxy, as pure functions: which headers never cross a proxy, what the
//! upstream is told about the client, the `RateLimit-*` and `Retry-After` headers, and the JSON
//! bodies of the proxy's own answers.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::refill::Outcome;

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), and so are never
/// forwarded, in either direction. Headers listed in `Connection` are dropped too.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers, including every header named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Prepares a client's request headers for the upstream: hop-by-hop headers removed, `Host` set
/// to the upstream, and `X-Forwarded-For` / `-Host` / `-Proto` added.
///
/// From a trusted proxy, the peer's address is appended to the `X-Forwarded-For` it sent. From
/// anyone else, it is replaced: the upstream only ever sees a chain this proxy vouches for.
/// `Forwarded` is kept only from a trusted proxy believed to maintain it (`forwarded_trusted`,
/// `GUBER_PROXY_TRUST_FORWARDED`), and removed otherwise.
pub fn upstream_request_headers(
    headers: &mut HeaderMap,
    peer: IpAddr,
    peer_trusted: bool,
    forwarded_trusted: bool,
    upstream_authority: &str,
) {
    remove_hop_by_hop(headers);
    if !(peer_trusted && forwarded_trusted) {
        headers.remove(header::FORWARDED);
    }
    let peer = peer.to_canonical().to_string();
    let forwarded_for = if peer_trusted {
        let earlier: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .collect();
        if earlier.is_empty() {
            peer
        } else {
            format!("{}, {peer}", earlier.join(", "))
        }
    } else {
        peer
    };
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    set(headers, "x-forwarded-for", &forwarded_for);
    set(headers, header::HOST.as_str(), upstream_authority);
}

/// Adds `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds until the bucket
/// is full again, rounded up) for `outcome`, and `Retry-After` when it was denied.
pub fn add_rate_limit_headers(headers: &mut HeaderMap, outcome: &Outcome) {
    set(headers, "ratelimit-limit", &outcome.limit.to_string());
    set(
        headers,
        "ratelimit-remaining",
        &outcome.remaining.to_string(),
    );
    set(
        headers,
        "ratelimit-reset",
        &outcome.reset_secs().to_string(),
    );
    if !outcome.allowed {
        set(
            headers,
            header::RETRY_AFTER.as_str(),
            &outcome.retry_after_secs().to_string(),
        );
    }
}

/// The body of a `429 Too Many Requests`: `{"error":"rate_limited","retry_after":N}`.
pub fn rate_limited_body(outcome: &Outcome) -> String {
    serde_json::json!({ "error": "rate_limited", "retry_after": outcome.retry_after_secs() })
        .to_string()
}

/// The body of the proxy's own error answers: `{"error":code,"message":...}`.
pub fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "error": code, "message": message }).to_string()
}

fn set(headers: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

/// A response of `status` with the JSON `body` (the proxy's answers and `/allow`'s).
pub fn json_response(status: http::StatusCode, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("x-api-key", "k"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "x-api-key"]);
    }

    #[test]
    fn forwarding_headers_depend_on_trust() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut trusted = map(&[
            ("host", "api.example.com"),
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=203.0.113.1"),
        ]);
        let mut not_maintained = trusted.clone();
        upstream_request_headers(&mut trusted, ip, true, true, "127.0.0.1:9000");
        assert_eq!(trusted["x-forwarded-for"], "203.0.113.1, 10.0.0.5");
        assert_eq!(trusted["forwarded"], "for=203.0.113.1");
        assert_eq!(trusted["host"], "127.0.0.1:9000");
        assert_eq!(trusted["x-forwarded-host"], "api.example.com");
        assert_eq!(trusted["x-forwarded-proto"], "http");

        let mut untrusted = map(&[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")]);
        upstream_request_headers(&mut untrusted, ip, false, true, "up:80");
        assert_eq!(untrusted["x-forwarded-for"], "10.0.0.5");
        assert!(untrusted.get("forwarded").is_none());
        assert!(untrusted.get("x-forwarded-host").is_none());

        // A trusted proxy that does not maintain Forwarded: a client's Forwarded is dropped.
        upstream_request_headers(&mut not_maintained, ip, true, false, "up:80");
        assert!(not_maintained.get("forwarded").is_none());
        assert_eq!(not_maintained["x-forwarded-for"], "203.0.113.1, 10.0.0.5");
    }

    #[test]
    fn rate_limit_headers_and_body() {
        let outcome = Outcome {
            allowed: false,
            limit: 20,
            remaining: 0,
            retry_after_ms: 2001,
            reset_after_ms: 4000,
        };
        let mut headers = HeaderMap::new();
        add_rate_limit_headers(&mut headers, &outcome);
        assert_eq!(headers["ratelimit-limit"], "20");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-reset"], "4");
        assert_eq!(headers["retry-after"], "3");
        assert_eq!(
            rate_limited_body(&outcome),
            r#"{"error":"rate_limited","retry_after":3}"#
        );
        let allowed = Outcome {
            allowed: true,
            retry_after_ms: 0,
            remaining: 7,
            ..outcome
        };
        let mut headers = HeaderMap::new();
        add_rate_limit_headers(&mut headers, &allowed);
        assert!(headers.get("retry-after").is_none());
        assert_eq!(headers["ratelimit-remaining"], "7");
    }
}
