//! The client key: which bucket a request spends from.
//!
//! The key header (`X-API-Key`) is the client's own input, so it is checked before it becomes a
//! limit key: a value the cluster would refuse as an item (longer than `GUBER_MAX_KEY_LENGTH` with
//! its `key:` prefix) or that is not visible ASCII text is refused with 400 `invalid_api_key`.
//! It never falls back to the client's address and never reaches the cluster as an invalid item,
//! where the failure policy (`open`) would have let it through uncounted. A header that is absent,
//! empty or only whitespace means "no key": the client's address is the key.

use std::net::IpAddr;

use http::HeaderValue;

/// The prefix of keys taken from the key header.
const API_KEY_PREFIX: &str = "key:";

/// Why the key header cannot key a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    /// The value has bytes that are not visible ASCII (or tab/space).
    #[error("is not visible ASCII text")]
    NotText,
    /// The value is longer than a limit key may be.
    #[error("is {len} bytes long; at most {max} bytes are accepted (GUBER_MAX_KEY_LENGTH)")]
    TooLong {
        /// Its length in bytes, trimmed.
        len: usize,
        /// The most accepted.
        max: usize,
    },
}

/// The API key in the key header `value`, trimmed: `None` when absent or blank; an error when it
/// could not be a limit key of at most `max_key_bytes` (the node's `GUBER_MAX_KEY_LENGTH`).
pub fn api_key(
    value: Option<&HeaderValue>,
    max_key_bytes: usize,
) -> Result<Option<&str>, ApiKeyError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| ApiKeyError::NotText)?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let max = max_key_bytes.saturating_sub(API_KEY_PREFIX.len());
    if text.len() > max {
        return Err(ApiKeyError::TooLong {
            len: text.len(),
            max,
        });
    }
    Ok(Some(text))
}

/// The unique key of a client: `key:<header value>` when the key header is set, else
/// `ip:<address>`. The prefixes keep an API key that looks like an address apart from the address.
pub fn client_key(api_key: Option<&str>, client_ip: IpAddr) -> String {
    match api_key {
        Some(key) => format!("{API_KEY_PREFIX}{key}"),
        None => format!("ip:{client_ip}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_prefer_the_header_and_never_collide_with_addresses() {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_key(Some("abc"), ip), "key:abc");
        assert_eq!(client_key(None, ip), "ip:192.0.2.1");
        assert_ne!(client_key(Some("192.0.2.1"), ip), client_key(None, ip));
    }

    #[test]
    fn header_values_are_checked_before_they_become_keys() {
        let value = |text: &str| HeaderValue::from_str(text).unwrap();
        assert_eq!(api_key(None, 1024), Ok(None));
        assert_eq!(api_key(Some(&value("  ")), 1024), Ok(None));
        assert_eq!(api_key(Some(&value(" abc ")), 1024), Ok(Some("abc")));
        let longest = "k".repeat(1020);
        assert_eq!(
            api_key(Some(&value(&longest)), 1024),
            Ok(Some(longest.as_str()))
        );
        // With its prefix the key is exactly GUBER_MAX_KEY_LENGTH long: accepted by the node.
        assert_eq!(client_key(Some(&longest), [0, 0, 0, 0].into()).len(), 1024);
        assert_eq!(
            api_key(Some(&value(&"k".repeat(1021))), 1024),
            Err(ApiKeyError::TooLong {
                len: 1021,
                max: 1020
            })
        );
        let binary = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert_eq!(api_key(Some(&binary), 1024), Err(ApiKeyError::NotText));
    }
}
