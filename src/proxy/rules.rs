//! Per-route and per-key limits: the proxy's rules file, validated once at start.
//!
//! The file is TOML, a list of `[[rule]]` tables tried in order; the first rule whose every given
//! matcher matches decides the limit. A request no rule matches gets the default limit
//! (`RATE_LIMIT_RPS` and `BURST`), under the rule name `default`.
//!
//! ```toml
//! [[rule]]
//! name = "login"              # the limit's name in the cluster: proxy_login
//! path_prefix = "/login"      # matches /login and /login/..., not /loginx
//! methods = ["POST"]
//! rate_limit_rps = 0.5
//! burst = 3
//!
//! [[rule]]
//! name = "partners"
//! keys = ["partner-key-1"]    # values of the key header (X-API-Key)
//! rate_limit_rps = 100
//! burst = 200
//!
//! [[rule]]
//! name = "health"
//! path_prefix = "/healthz"
//! unlimited = true            # never counted
//! ```
//!
//! Each rule has its own bucket per client key, so a client limited on `/login` still has its
//! whole default limit elsewhere.

use std::path::Path;

use http::Method;
use serde::Deserialize;

use crate::refill::{RefillRate, TokenBucket};

/// The limit a matching request is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleLimit {
    /// A token bucket per client key.
    Limited(TokenBucket),
    /// Not counted at all.
    Unlimited,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name; the cluster limit is `proxy_<name>`.
    pub name: String,
    path_prefix: Option<String>,
    methods: Vec<Method>,
    keys: Vec<String>,
    /// The limit of requests that match.
    pub limit: RuleLimit,
}

impl Rule {
    /// The rule every unmatched request falls to.
    pub fn default_rule(limit: TokenBucket) -> Self {
        Self {
            name: "default".into(),
            path_prefix: None,
            methods: Vec::new(),
            keys: Vec::new(),
            limit: RuleLimit::Limited(limit),
        }
    }

    /// Whether a request with `method`, `path` and client key header value `key` matches.
    pub fn matches(&self, method: &Method, path: &str, key: Option<&str>) -> bool {
        let path_ok = self
            .path_prefix
            .as_deref()
            .is_none_or(|prefix| path_has_prefix(path, prefix));
        let method_ok = self.methods.is_empty() || self.methods.contains(method);
        let key_ok =
            self.keys.is_empty() || key.is_some_and(|key| self.keys.iter().any(|k| k == key));
        path_ok && method_ok && key_ok
    }
}

/// `path` is `prefix`, or continues it at a segment boundary.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// The rules in order, then the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
    default: Rule,
}

impl Rules {
    /// Only the default limit.
    pub fn only_default(limit: TokenBucket) -> Self {
        Self {
            rules: Vec::new(),
            default: Rule::default_rule(limit),
        }
    }

    /// The first rule that matches, else the default.
    pub fn find(&self, method: &Method, path: &str, key: Option<&str>) -> &Rule {
        self.rules
            .iter()
            .find(|rule| rule.matches(method, path, key))
            .unwrap_or(&self.default)
    }

    /// Reads and validates the rules file at `path`.
    pub fn load(path: &Path, default: TokenBucket) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|error| RulesError {
            file: path.display().to_string(),
            message: format!("cannot read it: {error}"),
        })?;
        Self::parse(&text, default).map_err(|mut error| {
            error.file = path.display().to_string();
            error
        })
    }

    /// Parses and validates rules from TOML text.
    pub fn parse(text: &str, default: TokenBucket) -> Result<Self, RulesError> {
        let error = |message: String| RulesError {
            file: String::new(),
            message,
        };
        let file: RulesFile = toml::from_str(text).map_err(|e| error(e.to_string()))?;
        let mut rules: Vec<Rule> = Vec::with_capacity(file.rule.len());
        for (index, raw) in file.rule.into_iter().enumerate() {
            let rule = raw
                .validate()
                .map_err(|message| error(format!("rule {}: {message}", index + 1)))?;
            if rule.name == "default" || rules.iter().any(|other| other.name == rule.name) {
                return Err(error(format!(
                    "rule {}: the name '{}' is used twice (\"default\" is reserved)",
                    index + 1,
                    rule.name
                )));
            }
            rules.push(rule);
        }
        Ok(Self {
            rules,
            default: Rule::default_rule(default),
        })
    }
}

/// A rules file that cannot be used, with the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rules file {file}: {message}")]
pub struct RulesError {
    file: String,
    message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    path_prefix: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
    rate_limit_rps: Option<f64>,
    burst: Option<i64>,
    #[serde(default)]
    unlimited: bool,
}

impl RawRule {
    fn validate(self) -> Result<Rule, String> {
        let named = |message: String| format!("'{}': {message}", self.name);
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(format!(
                "the name '{}' must be 1 to 64 letters, digits, '_', '-' or '.'",
                self.name
            ));
        }
        if let Some(prefix) = &self.path_prefix
            && !prefix.starts_with('/')
        {
            return Err(named(format!("path_prefix '{prefix}' must start with '/'")));
        }
        let methods = self
            .methods
            .iter()
            .map(|text| {
                Method::from_bytes(text.to_ascii_uppercase().as_bytes())
                    .map_err(|_| named(format!("'{text}' is not an HTTP method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.keys.iter().any(String::is_empty) {
            return Err(named("keys must not be empty strings".into()));
        }
        let limit = match (self.unlimited, self.rate_limit_rps, self.burst) {
            (true, None, None) => RuleLimit::Unlimited,
            (true, _, _) => {
                return Err(named(
                    "unlimited = true cannot be combined with rate_limit_rps or burst".into(),
                ));
            }
            (false, Some(rps), Some(burst)) => {
                let rate = RefillRate::per_second(rps).map_err(|e| named(e.to_string()))?;
                RuleLimit::Limited(TokenBucket::new(rate, burst).map_err(|e| named(e.to_string()))?)
            }
            (false, _, _) => {
                return Err(named(
                    "set both rate_limit_rps and burst, or unlimited = true".into(),
                ));
            }
        };
        Ok(Rule {
            name: self.name,
            path_prefix: self.path_prefix,
            methods,
            keys: self.keys,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_bucket() -> TokenBucket {
        TokenBucket::new(RefillRate::per_second(10.0).unwrap(), 20).unwrap()
    }

    const EXAMPLE: &str = r#"
[[rule]]
name = "login"
path_prefix = "/login"
methods = ["post"]
rate_limit_rps = 0.5
burst = 3

[[rule]]
name = "partners"
keys = ["partner-key-1"]
rate_limit_rps = 100
burst = 200

[[rule]]
name = "health"
path_prefix = "/healthz"
unlimited = true
"#;

    #[test]
    fn first_match_wins_and_unmatched_fall_to_default() {
        let rules = Rules::parse(EXAMPLE, default_bucket()).unwrap();
        let find = |method: Method, path: &str, key: Option<&str>| {
            rules.find(&method, path, key).name.clone()
        };
        assert_eq!(find(Method::POST, "/login", None), "login");
        assert_eq!(
            find(Method::POST, "/login/sso", Some("partner-key-1")),
            "login"
        );
        assert_eq!(find(Method::GET, "/login", None), "default");
        assert_eq!(find(Method::POST, "/loginx", None), "default");
        assert_eq!(
            find(Method::GET, "/orders", Some("partner-key-1")),
            "partners"
        );
        assert_eq!(find(Method::GET, "/orders", Some("other")), "default");
        assert_eq!(
            rules.find(&Method::GET, "/healthz", None).limit,
            RuleLimit::Unlimited
        );
        let login = rules.find(&Method::POST, "/login", None);
        assert!(matches!(login.limit, RuleLimit::Limited(b) if b.burst() == 3));
    }

    #[test]
    fn bad_files_say_which_rule_and_why() {
        let check = |text: &str, expected: &str| {
            let error = Rules::parse(text, default_bucket())
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{error} lacks {expected}");
        };
        check(
            "[[rule]]\nname='a'\n",
            "rule 1: 'a': set both rate_limit_rps and burst",
        );
        check(
            "[[rule]]\nname='a'\nunlimited=true\n[[rule]]\nname='a'\nunlimited=true\n",
            "rule 2: the name 'a' is used twice",
        );
        check("[[rule]]\nname='default'\nunlimited=true\n", "reserved");
        check(
            "[[rule]]\nname='a'\npath_prefix='x'\nunlimited=true\n",
            "must start with '/'",
        );
        check(
            "[[rule]]\nname='a'\nrate_limit_rps=0\nburst=1\n",
            "positive number",
        );
        check(
            "[[rule]]\nname='a'\nrate_limit_rps=1\nburst=0\n",
            "burst must be at least 1",
        );
        check(
            "[[rule]]\nname='a'\nunlimited=true\nburts=3\n",
            "unknown field",
        );
        check("[[rule]]\nname='a b'\nunlimited=true\n", "letters, digits");
        check(
            "[[rule]]\nname='a'\nmethods=['GE T']\nunlimited=true\n",
            "not an HTTP method",
        );
        check("[[rule]\n", "TOML");
    }

    #[test]
    fn missing_file_is_reported() {
        let error =
            Rules::load(Path::new("/nonexistent/rules.toml"), default_bucket()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("/nonexistent/rules.toml: cannot read it")
        );
    }
}
