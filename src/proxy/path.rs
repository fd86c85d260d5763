//! The path rules match against: one spelling per resource.
//!
//! Upstream servers treat `//login`, `/%6Cogin`, `/a/../login` and `/login/.` as `/login`, so a
//! rule that compared the raw path could be dodged by respelling it. [`normalize`] maps every such
//! spelling to one form before the rules see it (RFC 3986 §6.2.2):
//!
//! - percent-encoded **unreserved** characters (`A-Z a-z 0-9 - . _ ~`) are decoded, and the hex
//!   digits of every other escape are upper-cased (`%2f` → `%2F`); reserved characters stay
//!   encoded, because decoding `%2F` would change which segments the path has;
//! - runs of `/` collapse into one;
//! - `.` and `..` segments are removed (RFC 3986 §5.2.4; `..` never climbs above the root).
//!
//! A path that ends in `/`, `/.` or `/..` keeps a trailing `/` (`/login/.` → `/login/`), which still
//! matches the prefix `/login`. The upstream is always sent the path exactly as the client wrote
//! it; the normalised form is only for matching.

use std::borrow::Cow;

/// `path` in its normalised form; borrowed when it already is.
pub fn normalize(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') {
        // `*` (OPTIONS *) or an empty path: nothing to match against a prefix.
        return Cow::Borrowed(path);
    }
    if is_normal(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    Cow::Owned(remove_dot_segments(&decoded))
}

/// Whether `path` (starting with `/`) is already normal: no `%`, no `//`, no `.`/`..` segment.
fn is_normal(path: &str) -> bool {
    !path.contains('%')
        && !path.contains("//")
        && path[1..]
            .split('/')
            .all(|segment| segment != "." && segment != "..")
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes of unreserved characters and upper-cases the others; a `%` that does not
/// start a valid escape is kept as it is.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(index + 1).copied().and_then(hex_value),
                bytes.get(index + 2).copied().and_then(hex_value),
            )
        {
            let decoded = high * 16 + low;
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                out.push('%');
                out.push(char::from(bytes[index + 1].to_ascii_uppercase()));
                out.push(char::from(bytes[index + 2].to_ascii_uppercase()));
            }
            index += 3;
            continue;
        }
        // Copy up to the next '%' in one go (keeps multi-byte characters whole).
        let next = path[index + 1..]
            .find('%')
            .map_or(bytes.len(), |offset| index + 1 + offset);
        out.push_str(&path[index..next]);
        index = next;
    }
    out
}

/// Collapses repeated slashes and removes `.` and `..` segments of an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn respellings_of_login_are_login() {
        for (raw, normal) in [
            ("/login", "/login"),
            ("//login", "/login"),
            ("///login//x", "/login/x"),
            ("/%6Cogin", "/login"),
            ("/%6cogin", "/login"),
            ("/a/../login", "/login"),
            ("/login/.", "/login/"),
            ("/login/", "/login/"),
            ("/./login", "/login"),
            ("/../../login", "/login"),
            ("/%2E%2E/login", "/login"),
            ("/%2e/login", "/login"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/", "/"),
            ("//", "/"),
        ] {
            assert_eq!(normalize(raw), normal, "{raw}");
        }
    }

    #[test]
    fn reserved_escapes_stay_encoded_with_upper_case_hex() {
        assert_eq!(normalize("/a%2fb"), "/a%2Fb");
        assert_eq!(normalize("/a%2Fb/../c"), "/c");
        assert_eq!(normalize("/a%20b%3a"), "/a%20b%3A");
        assert_eq!(normalize("/100%"), "/100%");
        assert_eq!(normalize("/%zz"), "/%zz");
        assert_eq!(normalize("/%4"), "/%4");
        assert_eq!(normalize("/caf%C3%A9"), "/caf%C3%A9");
        assert_eq!(normalize("/ünï/./x"), "/ünï/x");
    }

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(normalize("/v1/orders/17"), Cow::Borrowed(_)));
        assert!(matches!(normalize("*"), Cow::Borrowed("*")));
        assert!(matches!(normalize("/a/"), Cow::Borrowed(_)));
    }

    /// Paths built from the characters that matter: slashes, dots, escapes, letters.
    fn paths() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("/"),
                Just("."),
                Just(".."),
                Just("%2E"),
                Just("%2f"),
                Just("%6C"),
                Just("%"),
                Just("a"),
                Just("login"),
                Just("~"),
            ],
            0..12,
        )
        .prop_map(|parts| format!("/{}", parts.concat()))
    }

    proptest! {
        #[test]
        fn normalizing_is_idempotent_and_leaves_no_dodges(path in paths()) {
            let once = normalize(&path).into_owned();
            let twice = normalize(&once).into_owned();
            prop_assert_eq!(&twice, &once);
            prop_assert!(once.starts_with('/'));
            prop_assert!(!once.contains("//"), "{}", once);
            prop_assert!(
                once[1..].split('/').all(|s| s != "." && s != ".."),
                "{}", once
            );
            prop_assert!(!once.contains("%6C") && !once.contains("%2E"), "{}", once);
        }

        #[test]
        fn extra_slashes_and_dot_segments_never_change_the_result(path in paths()) {
            let padded = path.replace('/', "//./");
            prop_assert_eq!(normalize(&padded), normalize(&path));
        }
    }
}
