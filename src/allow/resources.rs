//! The resources `/allow` knows and their limits, from `GUBER_ALLOW_RESOURCES`.
//!
//! The value is a comma-separated list of `NAME=LIMIT/DURATION[/BURST]`: `LIMIT` tokens refill
//! every `DURATION` (Go syntax), continuously, and the bucket holds at most `BURST` tokens (default
//! `LIMIT`). For example `default=10/1s,uploads=100/1h/20`. Each resource is a token bucket
//! ([`crate::refill`]), stored in the cluster as the leaky bucket `allow_<NAME>` keyed by user.
//!
//! A resource that is not listed uses the limit of [`DEFAULT_RESOURCE`] (as r8limiter does), and is
//! remembered as discovered ([`crate::admin::discovered`]); without a `default` entry, unlisted resources
//! are refused.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::go_duration;
use crate::refill::{RefillRate, TokenBucket};

/// The resource whose limit unlisted resources use.
pub const DEFAULT_RESOURCE: &str = "default";

/// How a resource got its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Listed in `GUBER_ALLOW_RESOURCES`.
    Configured,
    /// Not listed: the limit of [`DEFAULT_RESOURCE`].
    Discovered,
}

impl Source {
    /// The label `/admin/resources` shows.
    pub fn label(self) -> &'static str {
        match self {
            Source::Configured => "configured",
            Source::Discovered => "discovered",
        }
    }
}

/// The configured resources, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowResources {
    text: String,
    buckets: BTreeMap<String, TokenBucket>,
}

impl AllowResources {
    /// The bucket of `resource`, if configured.
    pub fn get(&self, resource: &str) -> Option<&TokenBucket> {
        self.buckets.get(resource)
    }

    /// The bucket `resource` uses: its own when configured, else the default resource's.
    pub fn resolve(&self, resource: &str) -> Option<(TokenBucket, Source)> {
        match self.buckets.get(resource) {
            Some(bucket) => Some((*bucket, Source::Configured)),
            None => self
                .buckets
                .get(DEFAULT_RESOURCE)
                .map(|bucket| (*bucket, Source::Discovered)),
        }
    }

    /// The configured resources and their buckets, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &TokenBucket)> {
        self.buckets
            .iter()
            .map(|(name, bucket)| (name.as_str(), bucket))
    }

    /// The configured resource names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.buckets.keys().map(String::as_str)
    }
}

impl fmt::Display for AllowResources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for AllowResources {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut buckets = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, spec) = entry
                .split_once('=')
                .ok_or_else(|| format!("'{entry}' is not NAME=LIMIT/DURATION[/BURST]"))?;
            let name = name.trim();
            if !valid_name(name) {
                return Err(format!(
                    "resource name '{name}' must be 1 to 64 letters, digits, '_', '-' or '.'"
                ));
            }
            let bucket =
                parse_spec(spec.trim()).map_err(|reason| format!("'{entry}': {reason}"))?;
            if buckets.insert(name.to_string(), bucket).is_some() {
                return Err(format!("resource '{name}' is configured twice"));
            }
        }
        Ok(Self {
            text: text.trim().to_string(),
            buckets,
        })
    }
}

/// The longest resource name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Whether `name` is a usable resource name: 1 to [`MAX_NAME_BYTES`] ASCII letters, digits, `_`,
/// `-` or `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn parse_spec(spec: &str) -> Result<TokenBucket, String> {
    let mut parts = spec.split('/');
    let (Some(limit), Some(duration)) = (parts.next(), parts.next()) else {
        return Err("expected LIMIT/DURATION[/BURST], e.g. 10/1s".into());
    };
    let burst = parts.next();
    if parts.next().is_some() {
        return Err("expected LIMIT/DURATION[/BURST], e.g. 10/1s".into());
    }
    let limit: u64 = limit
        .trim()
        .parse()
        .ok()
        .filter(|&limit| limit > 0)
        .ok_or_else(|| format!("the limit '{limit}' must be a whole number above 0"))?;
    let duration = go_duration::parse(duration)?;
    let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if duration_ms == 0 || duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "the duration '{duration:?}' must be a whole number of milliseconds, at least 1ms"
        ));
    }
    let burst = match burst {
        Some(burst) => burst
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("the burst '{burst}' must be a whole number"))?,
        None => i64::try_from(limit).map_err(|_| "the limit is too large".to_string())?,
    };
    let rate = RefillRate::new(limit, duration_ms).map_err(|e| e.to_string())?;
    TokenBucket::new(rate, burst).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_parse_with_default_and_explicit_burst() {
        let resources: AllowResources = "default=10/1s, uploads=100/1h/20".parse().unwrap();
        let default = resources.get("default").unwrap();
        assert_eq!(
            (default.burst(), default.limit(), default.duration_ms()),
            (10, 10, 1000)
        );
        let uploads = resources.get("uploads").unwrap();
        assert_eq!(uploads.burst(), 20);
        // 100 per hour is one per 36 s; a burst of 20 refills in 720 s.
        assert_eq!((uploads.limit(), uploads.duration_ms()), (20, 720_000));
        assert_eq!(
            resources.names().collect::<Vec<_>>(),
            ["default", "uploads"]
        );
        assert!(resources.get("other").is_none());
        assert_eq!(
            resources.resolve("other"),
            Some((*default, Source::Discovered))
        );
        assert_eq!(
            resources.resolve("uploads"),
            Some((*uploads, Source::Configured))
        );
        let no_default: AllowResources = "uploads=1/1s".parse().unwrap();
        assert_eq!(no_default.resolve("other"), None);
        assert_eq!(resources.to_string(), "default=10/1s, uploads=100/1h/20");
        assert!(
            "".parse::<AllowResources>()
                .unwrap()
                .get("default")
                .is_none()
        );
    }

    #[test]
    fn bad_entries_are_explained() {
        for (text, expected) in [
            ("default", "NAME=LIMIT/DURATION"),
            ("a=10", "LIMIT/DURATION"),
            ("a=0/1s", "above 0"),
            ("a=10/1parsec", "a=10/1parsec"),
            ("a=10/0s", "at least 1ms"),
            ("a=10/1s/0", "burst must be at least 1"),
            ("a=10/1s/x", "whole number"),
            ("a b=1/1s", "letters, digits"),
            ("a=1/1s,a=2/1s", "twice"),
            ("a=1/1s/2/3", "LIMIT/DURATION"),
        ] {
            let error = text.parse::<AllowResources>().unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
