//! How unique keys are shown in admin views.
//!
//! A unique key is often a secret: behind `ringlimit proxy` it is `key:<API key>`. Admin answers
//! end up in terminals, tickets and logs, so by default they show a stable short hash instead:
//! `h:` and the first 16 hex digits (64 bits) of the **unkeyed SHA-256** of the unique key. The
//! same key always shows the same hash, on every node and across restarts, so operators can follow
//! an offender and compare views; an operator who knows a key can compute its hash (or peek at it
//! by the raw key, which still works). The hash is unkeyed, so it hides high-entropy keys (API
//! keys) but not guessable ones (a client's IP address could be found by trying addresses).
//! `GUBER_ADMIN_SHOW_KEYS=true` shows keys as they are.
//!
//! Only the answering node's presentation changes: peers still exchange raw keys over
//! `ringlimit.v1.Admin`, because summaries are merged by key.

use ring::digest::{SHA256, digest};

/// The prefix that marks a hashed key.
pub const HASH_PREFIX: &str = "h:";

/// `h:` + the first 16 hex digits of SHA-256(`unique_key`).
pub fn hashed_key(unique_key: &str) -> String {
    let hash = digest(&SHA256, unique_key.as_bytes());
    let mut shown = String::with_capacity(HASH_PREFIX.len() + 16);
    shown.push_str(HASH_PREFIX);
    for byte in &hash.as_ref()[..8] {
        shown.push_str(&format!("{byte:02x}"));
    }
    shown
}

/// `unique_key` as an admin view shows it: raw when `show_keys`, else [`hashed_key`].
pub fn shown_key(unique_key: String, show_keys: bool) -> String {
    if show_keys {
        unique_key
    } else {
        hashed_key(&unique_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_to_a_stable_short_prefixed_form() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223…
        assert_eq!(hashed_key("abc"), "h:ba7816bf8f01cfea");
        assert_eq!(hashed_key("key:secret"), hashed_key("key:secret"));
        assert_ne!(hashed_key("key:a"), hashed_key("key:b"));
        assert_eq!(hashed_key("").len(), 18);
    }

    #[test]
    fn show_keys_keeps_them_raw() {
        assert_eq!(shown_key("key:secret".into(), true), "key:secret");
        assert_eq!(shown_key("abc".into(), false), "h:ba7816bf8f01cfea");
    }
}
