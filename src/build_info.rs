//! What this binary was built from: the version, the git commit and the build date, recorded by
//! `build.rs` (the commit is `unknown` when the build had no git and no `RINGLIMIT_GIT_COMMIT`).
//! `ringlimit --version` prints them and the start log line carries the commit, so an operator
//! can tell which build a node runs.

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short git commit the binary was built from, or `unknown`.
pub const GIT_COMMIT: &str = env!("RINGLIMIT_GIT_COMMIT");

/// The build date, `YYYY-MM-DD` (UTC).
pub const BUILD_DATE: &str = env!("RINGLIMIT_BUILD_DATE");

/// What `--version` prints after the program name: `0.1.0 (commit abc1234, built 2026-01-31)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RINGLIMIT_GIT_COMMIT"),
    ", built ",
    env!("RINGLIMIT_BUILD_DATE"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_long_version_names_all_three() {
        assert!(LONG_VERSION.starts_with(VERSION));
        assert!(LONG_VERSION.contains(&format!("commit {GIT_COMMIT}")));
        assert_eq!(BUILD_DATE.len(), 10, "{BUILD_DATE}");
        assert!(!GIT_COMMIT.is_empty());
    }
}
