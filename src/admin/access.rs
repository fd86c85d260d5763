//! Who may read the admin views over HTTP.
//!
//! The views list the keys the cluster refuses, and behind `ringlimit proxy` those keys are API
//! keys, so they must not answer the whole network by default. Without `GUBER_ADMIN_TOKEN` they
//! answer only when the HTTP listener is bound to a loopback address (127.0.0.0/8, `::1`,
//! `localhost`), where only local processes can reach them; on any other address they answer 403
//! naming the variable, so the operator learns what to set. With a token, every caller must
//! present it as `Authorization: Bearer <token>` (401 otherwise), wherever the listener is.
//!
//! The decision is a pure function of the configuration and the presented header; the bound
//! address is read once, at start, by `server::start`.

use std::net::SocketAddr;

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    /// No token is configured and the HTTP listener is not loopback-only (HTTP 403).
    #[error(
        "the admin views are served on a non-loopback address; set GUBER_ADMIN_TOKEN and send \
         'Authorization: Bearer <token>', or bind GUBER_HTTP_ADDRESS to 127.0.0.1 or ::1"
    )]
    TokenRequired,
    /// A token is configured and the request did not present it (HTTP 401).
    #[error("a valid admin bearer token is required")]
    Unauthorized,
}

/// Whether an HTTP listener bound to `address` is reachable from this host only.
pub fn is_loopback(address: &SocketAddr) -> bool {
    address.ip().to_canonical().is_loopback()
}

/// Decides an admin request: `token` is the configured token (empty counts as none),
/// `loopback_only` whether the HTTP listener is loopback-only, `presented` the `Authorization`
/// header.
pub fn check(
    token: Option<&str>,
    loopback_only: bool,
    presented: Option<&str>,
) -> Result<(), AccessDenied> {
    match token.filter(|token| !token.is_empty()) {
        None if loopback_only => Ok(()),
        None => Err(AccessDenied::TokenRequired),
        Some(token) if bearer_matches(token, presented) => Ok(()),
        Some(_) => Err(AccessDenied::Unauthorized),
    }
}

/// Whether `presented` (an `Authorization` value) is `Bearer <token>` (compared in constant time).
pub fn bearer_matches(token: &str, presented: Option<&str>) -> bool {
    presented
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| {
            super::constant_time_eq(given.trim().as_bytes(), token.as_bytes())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_listeners_are_recognised() {
        for address in [
            "127.0.0.1:1050",
            "127.9.9.9:80",
            "[::1]:1050",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(is_loopback(&address.parse().unwrap()), "{address}");
        }
        for address in ["0.0.0.0:1050", "[::]:1050", "10.0.0.1:1050", "192.0.2.1:80"] {
            assert!(!is_loopback(&address.parse().unwrap()), "{address}");
        }
    }

    #[test]
    fn without_a_token_only_loopback_listeners_answer() {
        assert_eq!(check(None, true, None), Ok(()));
        assert_eq!(check(Some(""), true, None), Ok(()));
        assert_eq!(check(None, false, None), Err(AccessDenied::TokenRequired));
        assert_eq!(
            check(None, false, Some("Bearer anything")),
            Err(AccessDenied::TokenRequired)
        );
        assert!(
            AccessDenied::TokenRequired
                .to_string()
                .contains("GUBER_ADMIN_TOKEN")
        );
    }

    #[test]
    fn with_a_token_it_is_required_everywhere() {
        for loopback_only in [true, false] {
            let check = |presented| check(Some("s3cret"), loopback_only, presented);
            assert_eq!(check(Some("Bearer s3cret")), Ok(()));
            assert_eq!(check(Some("bearer  s3cret ")), Ok(()));
            assert_eq!(check(Some("Bearer wrong")), Err(AccessDenied::Unauthorized));
            assert_eq!(check(Some("s3cret")), Err(AccessDenied::Unauthorized));
            assert_eq!(check(None), Err(AccessDenied::Unauthorized));
        }
    }
}
