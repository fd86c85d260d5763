//! envoy ratelimit's YAML configuration: parsing and validation.
//!
//! One file holds one domain. Validation follows envoy ratelimit's `config_impl.go` (empty or
//! duplicate domain, empty key, duplicate key/value at one level, unknown field, bad unit, `unlimited`
//! with a unit, an empty or self-naming `replaces`), is stricter where upstream silently accepts a
//! mistake (a wrong type, a negative or fractional `requests_per_unit`, a duplicate mapping key), and
//! every error names the file, the line and the field (as `descriptors[0].rate_limit.unit`), so an
//! operator can fix a rejected reload without guessing. The two extensions, `unit_multiplier` and
//! `rate_limits` (several limits on one descriptor), are described in docs/envoy.md.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use super::window::Unit;
use super::yaml::{self, Node, Value};

/// The largest configuration file read, in bytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The most limits one descriptor may carry (`rate_limits`).
pub const MAX_LIMITS_PER_RULE: usize = 16;

/// The largest `unit_multiplier`: windows of up to this many units.
pub const MAX_UNIT_MULTIPLIER: u32 = 1_000_000;

/// Why a configuration was rejected: the file, the line (0 when the whole file is meant), the
/// field (empty when none applies) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, as configured (a path).
    pub file: String,
    /// The 1-based line, or 0 for the file as a whole.
    pub line: usize,
    /// The field's path in the file (`descriptors[1].rate_limit.unit`), or empty.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// One limit: `requests_per_unit` hits per window of `unit_multiplier` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Hits admitted per window; 0 refuses every hit.
    pub requests_per_unit: u32,
    /// The unit.
    pub unit: Unit,
    /// How many units one window lasts (1 unless the `unit_multiplier` extension is used).
    pub multiplier: u32,
}

impl Limit {
    /// The window's length in seconds.
    pub fn window_seconds(&self) -> u64 {
        self.unit
            .seconds()
            .saturating_mul(u64::from(self.multiplier.max(1)))
    }
}

/// A descriptor's `rate_limit` (or the `rate_limits` extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The limits; empty when `unlimited`.
    pub limits: Vec<Limit>,
    /// `unlimited: true`: answered OK with remaining 4294967295, nothing counted.
    pub unlimited: bool,
    /// The rule's `name` (for `replaces`).
    pub name: Option<String>,
    /// The names of rules this one replaces when both match one request.
    pub replaces: Vec<String>,
}

/// One configured descriptor (a node of the domain's tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The entry key it matches.
    pub key: String,
    /// The entry value it matches: empty for any value, a trailing `*` for a prefix.
    pub value: String,
    /// Where it is configured.
    pub line: usize,
    /// envoy ratelimit's stat key: `domain.key_value.key2` (the metrics' `key` label).
    pub stat_key: String,
    /// The limit, if this level has one.
    pub rate_limit: Option<RateLimit>,
    /// Over-limit answers are turned into OK (and counted as shadow mode).
    pub shadow_mode: bool,
    /// Metrics per request value (`stat_key_value`) when the rule has no value of its own.
    pub detailed_metric: bool,
    /// The next level, matched against the request's next entry.
    pub children: Level,
}

/// One level of a domain's descriptor tree, indexed as envoy ratelimit looks it up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Level {
    /// The rules in file order.
    pub rules: Vec<Rule>,
    /// Rules with a value, by key and then value (looked up by `&str`, without building a pair).
    exact: HashMap<String, HashMap<String, usize>>,
    by_key: HashMap<String, usize>,
    wildcards: Vec<usize>,
}

impl Level {
    /// The rule for one request entry: `key` + exact `value` first, then a wildcard of this level
    /// (the first in file order whose prefix matches), then `key` alone.
    pub fn lookup(&self, key: &str, value: &str) -> Option<&Rule> {
        let index = self
            .exact
            .get(key)
            .and_then(|values| values.get(value))
            .copied()
            .or_else(|| {
                self.wildcards.iter().copied().find(|&index| {
                    let rule = &self.rules[index];
                    rule.key == key
                        && value.starts_with(rule.value.strip_suffix('*').unwrap_or(&rule.value))
                })
            })
            .or_else(|| self.by_key.get(key).copied())?;
        self.rules.get(index)
    }

    fn insert(&mut self, rule: Rule) -> Result<(), usize> {
        let index = self.rules.len();
        let slot = if rule.value.is_empty() {
            self.by_key.get(&rule.key)
        } else {
            self.exact
                .get(&rule.key)
                .and_then(|values| values.get(&rule.value))
        };
        if let Some(&existing) = slot {
            return Err(self.rules[existing].line);
        }
        if rule.value.is_empty() {
            self.by_key.insert(rule.key.clone(), index);
        } else {
            if rule.value.ends_with('*') {
                self.wildcards.push(index);
            }
            self.exact
                .entry(rule.key.clone())
                .or_default()
                .insert(rule.value.clone(), index);
        }
        self.rules.push(rule);
        Ok(())
    }
}

/// One domain: the contents of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The domain's name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// The top level of descriptors.
    pub root: Level,
}

impl Domain {
    /// The rule that applies to a descriptor's entries, as envoy ratelimit's `GetLimit` finds it:
    /// walk the levels entry by entry; a rule applies only when it is matched at the last entry
    /// and has a `rate_limit`; a request deeper than the configuration gets no rule.
    pub fn find<'a, I>(&self, entries: I) -> Option<&Rule>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
        I::IntoIter: ExactSizeIterator,
    {
        let entries = entries.into_iter();
        let last = entries.len().checked_sub(1)?;
        let mut level = &self.root;
        for (index, (key, value)) in entries.enumerate() {
            let rule = level.lookup(key, value)?;
            if index == last {
                return rule.rate_limit.as_ref().map(|_| rule);
            }
            if rule.children.rules.is_empty() {
                return None;
            }
            level = &rule.children;
        }
        None
    }
}

/// A whole configuration: every domain, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RlsConfig {
    /// The domains by name.
    pub domains: BTreeMap<String, Domain>,
}

impl RlsConfig {
    /// Joins parsed files, refusing a domain that two files define.
    pub fn from_domains(domains: Vec<Domain>) -> Result<Self, ConfigError> {
        let mut config = RlsConfig::default();
        for domain in domains {
            if let Some(first) = config.domains.get(&domain.name) {
                return Err(ConfigError {
                    file: domain.file.clone(),
                    line: 0,
                    field: "domain".into(),
                    message: format!(
                        "duplicate domain '{}' (also defined in {})",
                        domain.name, first.file
                    ),
                });
            }
            config.domains.insert(domain.name.clone(), domain);
        }
        Ok(config)
    }

    /// The configuration as text, one line per limited descriptor (the `/rlconfig` view), in the
    /// shape of envoy ratelimit's dump.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for domain in self.domains.values() {
            dump_level(&domain.root, &mut out);
        }
        out
    }
}

fn dump_level(level: &Level, out: &mut String) {
    for rule in &level.rules {
        if let Some(rate_limit) = &rule.rate_limit {
            let _ = write!(out, "{}:", rule.stat_key);
            if rate_limit.unlimited {
                let _ = write!(out, " unlimited=true");
            }
            for limit in &rate_limit.limits {
                let _ = write!(
                    out,
                    " unit={} requests_per_unit={}",
                    limit.unit.wire_name(),
                    limit.requests_per_unit
                );
                if limit.multiplier > 1 {
                    let _ = write!(out, " unit_multiplier={}", limit.multiplier);
                }
            }
            let _ = write!(out, ", shadow_mode: {}", rule.shadow_mode);
            if let Some(name) = &rate_limit.name {
                let _ = write!(out, ", name: {name}");
            }
            if !rate_limit.replaces.is_empty() {
                let _ = write!(out, ", replaces: {}", rate_limit.replaces.join(","));
            }
            out.push('\n');
        }
        dump_level(&rule.children, out);
    }
}

/// Parses and validates one file's text.
pub fn parse_domain(file: &str, text: &str) -> Result<Domain, ConfigError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(ConfigError {
            file: file.into(),
            line: 0,
            field: String::new(),
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    let root = yaml::parse(text).map_err(|error| ConfigError {
        file: file.into(),
        line: error.line,
        field: String::new(),
        message: format!("invalid YAML: {}", error.message),
    })?;
    let parser = FileParser { file };
    parser.domain(&root)
}

struct FileParser<'a> {
    file: &'a str,
}

/// The fields of one mapping, checked against the allowed names.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node, usize)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<(&'n Node, usize)> {
        self.entries
            .iter()
            .find(|(key, node, _)| *key == name && node.value != Value::Null)
            .map(|(_, node, line)| (*node, *line))
    }
}

impl FileParser<'_> {
    fn error(&self, line: usize, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            line,
            field: field.into(),
            message: message.into(),
        }
    }

    /// The fields of a mapping at `path`, refusing names not in `allowed`.
    fn fields<'n>(
        &self,
        node: &'n Node,
        path: &str,
        allowed: &[&str],
    ) -> Result<Fields<'n>, ConfigError> {
        let Value::Map(entries) = &node.value else {
            return Err(self.error(
                node.line,
                path,
                format!("expected a mapping, found {}", node.value.kind()),
            ));
        };
        let mut fields = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Value::Scalar { text, .. } = &key.value else {
                return Err(self.error(key.line, path, "a key that is not a string"));
            };
            let field = join(path, text);
            if !allowed.contains(&text.as_str()) {
                return Err(self.error(
                    key.line,
                    &field,
                    format!(
                        "unknown field '{text}' (expected one of: {})",
                        allowed.join(", ")
                    ),
                ));
            }
            fields.push((text.as_str(), value, key.line));
        }
        Ok(Fields { entries: fields })
    }

    /// The optional string field `name` of `fields` at `path`; empty when absent.
    fn string_field(
        &self,
        fields: &Fields<'_>,
        path: &str,
        name: &str,
    ) -> Result<String, ConfigError> {
        match fields.get(name) {
            Some((node, line)) => self.string(node, line, &join(path, name)),
            None => Ok(String::new()),
        }
    }

    /// The optional boolean field `name` of `fields` at `path`; false when absent.
    fn flag_field(&self, fields: &Fields<'_>, path: &str, name: &str) -> Result<bool, ConfigError> {
        match fields.get(name) {
            Some((node, line)) => self.boolean(node, line, &join(path, name)),
            None => Ok(false),
        }
    }

    fn string(&self, node: &Node, line: usize, field: &str) -> Result<String, ConfigError> {
        match &node.value {
            Value::Scalar { text, .. } => Ok(text.clone()),
            Value::Null => Ok(String::new()),
            other => Err(self.error(
                line,
                field,
                format!("expected a string, found {}", other.kind()),
            )),
        }
    }

    fn boolean(&self, node: &Node, line: usize, field: &str) -> Result<bool, ConfigError> {
        match &node.value {
            Value::Scalar { text, plain: true } if text == "true" => Ok(true),
            Value::Scalar { text, plain: true } if text == "false" => Ok(false),
            other => Err(self.error(
                line,
                field,
                format!("expected true or false, found {}", describe(other)),
            )),
        }
    }

    fn unsigned(
        &self,
        node: &Node,
        line: usize,
        field: &str,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let parsed = match &node.value {
            Value::Scalar { text, plain: true }
                if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) =>
            {
                text.parse::<u64>().ok().filter(|number| *number <= max)
            }
            _ => None,
        };
        parsed.ok_or_else(|| {
            self.error(
                line,
                field,
                format!(
                    "expected a whole number from 0 to {max}, found {}",
                    describe(&node.value)
                ),
            )
        })
    }

    fn list<'n>(
        &self,
        node: &'n Node,
        line: usize,
        field: &str,
    ) -> Result<&'n [Node], ConfigError> {
        match &node.value {
            Value::Seq(items) => Ok(items),
            other => Err(self.error(
                line,
                field,
                format!("expected a list, found {}", other.kind()),
            )),
        }
    }

    fn domain(&self, root: &Node) -> Result<Domain, ConfigError> {
        if root.value == Value::Null {
            return Err(self.error(0, "domain", "the file is empty"));
        }
        let fields = self.fields(root, "", &["domain", "descriptors"])?;
        let name = self.string_field(&fields, "", "domain")?;
        if name.is_empty() {
            return Err(self.error(root.line, "domain", "config file cannot have empty domain"));
        }
        let mut level = Level::default();
        if let Some((node, line)) = fields.get("descriptors") {
            self.level(node, line, "descriptors", &name, &mut level)?;
        }
        Ok(Domain {
            name,
            file: self.file.into(),
            root: level,
        })
    }

    fn level(
        &self,
        node: &Node,
        line: usize,
        path: &str,
        parent_key: &str,
        level: &mut Level,
    ) -> Result<(), ConfigError> {
        for (index, item) in self.list(node, line, path)?.iter().enumerate() {
            let path = format!("{path}[{index}]");
            let rule = self.rule(item, &path, parent_key)?;
            let (rule_line, stat_key) = (rule.line, rule.stat_key.clone());
            if let Err(first) = level.insert(rule) {
                return Err(self.error(
                    rule_line,
                    &path,
                    format!(
                        "duplicate descriptor composite key '{stat_key}' (first at line {first})"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn rule(&self, node: &Node, path: &str, parent_key: &str) -> Result<Rule, ConfigError> {
        let fields = self.fields(
            node,
            path,
            &[
                "key",
                "value",
                "rate_limit",
                "rate_limits",
                "descriptors",
                "shadow_mode",
                "detailed_metric",
            ],
        )?;
        let key = self.string_field(&fields, path, "key")?;
        if key.is_empty() {
            return Err(self.error(node.line, &join(path, "key"), "descriptor has empty key"));
        }
        let value = self.string_field(&fields, path, "value")?;
        let mut stat_key = format!("{parent_key}.{key}");
        if !value.is_empty() {
            stat_key.push('_');
            stat_key.push_str(&value);
        }
        let rate_limit = match (fields.get("rate_limit"), fields.get("rate_limits")) {
            (Some(_), Some((_, line))) => {
                return Err(self.error(
                    line,
                    &join(path, "rate_limits"),
                    "use either rate_limit or rate_limits, not both",
                ));
            }
            (Some((node, _)), None) => Some(self.rate_limit(node, &join(path, "rate_limit"))?),
            (None, Some((node, line))) => {
                Some(self.rate_limits(node, line, &join(path, "rate_limits"))?)
            }
            (None, None) => None,
        };
        let shadow_mode = self.flag_field(&fields, path, "shadow_mode")?;
        let detailed_metric = self.flag_field(&fields, path, "detailed_metric")?;
        let mut children = Level::default();
        if let Some((node, line)) = fields.get("descriptors") {
            self.level(
                node,
                line,
                &join(path, "descriptors"),
                &stat_key,
                &mut children,
            )?;
        }
        Ok(Rule {
            key,
            value,
            line: node.line,
            stat_key,
            rate_limit,
            shadow_mode,
            detailed_metric,
            children,
        })
    }

    fn rate_limit(&self, node: &Node, path: &str) -> Result<RateLimit, ConfigError> {
        let fields = self.fields(
            node,
            path,
            &[
                "unit",
                "requests_per_unit",
                "unlimited",
                "name",
                "replaces",
                "unit_multiplier",
            ],
        )?;
        let unlimited = self.flag_field(&fields, path, "unlimited")?;
        let name = Some(self.string_field(&fields, path, "name")?).filter(|name| !name.is_empty());
        let mut replaces = Vec::new();
        if let Some((list, line)) = fields.get("replaces") {
            let list_path = join(path, "replaces");
            for (index, item) in self.list(list, line, &list_path)?.iter().enumerate() {
                let item_path = format!("{list_path}[{index}]");
                let entry = self.fields(item, &item_path, &["name"])?;
                let replaced = self.string_field(&entry, &item_path, "name")?;
                if replaced.is_empty() {
                    return Err(self.error(
                        item.line,
                        &join(&item_path, "name"),
                        "should not have an empty replaces entry",
                    ));
                }
                if name.as_deref() == Some(replaced.as_str()) {
                    return Err(self.error(
                        item.line,
                        &join(&item_path, "name"),
                        "replaces should not contain name of same descriptor",
                    ));
                }
                replaces.push(replaced);
            }
        }
        let limits = if unlimited {
            if let Some((unit, line)) = fields.get("unit") {
                let text = self.string(unit, line, &join(path, "unit"))?;
                if Unit::from_name(&text).is_some() {
                    return Err(self.error(
                        line,
                        &join(path, "unit"),
                        "should not specify rate limit unit when unlimited",
                    ));
                }
            }
            Vec::new()
        } else {
            vec![self.limit(&fields, node.line, path)?]
        };
        Ok(RateLimit {
            limits,
            unlimited,
            name,
            replaces,
        })
    }

    fn rate_limits(&self, node: &Node, line: usize, path: &str) -> Result<RateLimit, ConfigError> {
        let items = self.list(node, line, path)?;
        if items.is_empty() {
            return Err(self.error(line, path, "an empty list of limits"));
        }
        if items.len() > MAX_LIMITS_PER_RULE {
            return Err(self.error(
                line,
                path,
                format!("more than {MAX_LIMITS_PER_RULE} limits"),
            ));
        }
        let mut limits: Vec<Limit> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{index}]");
            let fields = self.fields(
                item,
                &item_path,
                &["unit", "requests_per_unit", "unit_multiplier"],
            )?;
            let limit = self.limit(&fields, item.line, &item_path)?;
            if limits
                .iter()
                .any(|seen| seen.window_seconds() == limit.window_seconds())
            {
                return Err(self.error(
                    item.line,
                    &item_path,
                    "two limits with the same window length",
                ));
            }
            limits.push(limit);
        }
        Ok(RateLimit {
            limits,
            unlimited: false,
            name: None,
            replaces: Vec::new(),
        })
    }

    fn limit(&self, fields: &Fields<'_>, line: usize, path: &str) -> Result<Limit, ConfigError> {
        let (unit_text, unit_line) = match fields.get("unit") {
            Some((node, line)) => (self.string(node, line, &join(path, "unit"))?, line),
            None => (String::new(), line),
        };
        let unit = Unit::from_name(&unit_text).ok_or_else(|| {
            self.error(
                unit_line,
                &join(path, "unit"),
                format!(
                    "invalid rate limit unit '{unit_text}' (expected second, minute, hour, day, week, month or year)"
                ),
            )
        })?;
        let requests_per_unit = match fields.get("requests_per_unit") {
            Some((node, line)) => self.unsigned(
                node,
                line,
                &join(path, "requests_per_unit"),
                u64::from(u32::MAX),
            )?,
            None => 0,
        };
        let multiplier = match fields.get("unit_multiplier") {
            Some((node, line)) => {
                let field = join(path, "unit_multiplier");
                let multiplier =
                    self.unsigned(node, line, &field, u64::from(MAX_UNIT_MULTIPLIER))?;
                if multiplier == 0 {
                    return Err(self.error(line, &field, "must be at least 1"));
                }
                multiplier
            }
            None => 1,
        };
        Ok(Limit {
            requests_per_unit: u32::try_from(requests_per_unit).unwrap_or(u32::MAX),
            unit,
            multiplier: u32::try_from(multiplier).unwrap_or(MAX_UNIT_MULTIPLIER),
        })
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Scalar { text, .. } => {
            let short: String = text.chars().take(40).collect();
            format!("'{short}'")
        }
        other => other.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(text: &str) -> ConfigError {
        parse_domain("f.yaml", text).expect_err("should be rejected")
    }

    fn accept(text: &str) -> Domain {
        parse_domain("f.yaml", text).unwrap_or_else(|error| panic!("{error}"))
    }

    const BASIC: &str = "\
domain: basic
descriptors:
  - key: key1
    rate_limit:
      unit: second
      requests_per_unit: 5
  - key: key1
    value: value1
    rate_limit:
      unit: MINUTE
      requests_per_unit: 10
  - key: key2
    value: pre*
    rate_limit: {unit: hour, requests_per_unit: 20}
  - key: nested
    descriptors:
      - key: inner
        rate_limit:
          unlimited: true
          name: inner
      - key: zero
        shadow_mode: true
        rate_limit: {unit: day, requests_per_unit: 0, replaces: [{name: inner}]}
";

    #[test]
    fn a_full_file_parses_with_stat_keys() {
        let domain = accept(BASIC);
        assert_eq!(domain.name, "basic");
        let rule = domain.find([("key1", "other")]).unwrap();
        assert_eq!(rule.stat_key, "basic.key1");
        assert_eq!(
            rule.rate_limit.as_ref().unwrap().limits[0],
            Limit {
                requests_per_unit: 5,
                unit: Unit::Second,
                multiplier: 1
            }
        );
        // The most specific match wins.
        assert_eq!(
            domain.find([("key1", "value1")]).unwrap().stat_key,
            "basic.key1_value1"
        );
        assert_eq!(
            domain.find([("key2", "prefix")]).unwrap().stat_key,
            "basic.key2_pre*"
        );
        assert!(domain.find([("key2", "nope")]).is_none());
        let inner = domain.find([("nested", "x"), ("inner", "y")]).unwrap();
        assert!(inner.rate_limit.as_ref().unwrap().unlimited);
        let zero = domain.find([("nested", "x"), ("zero", "")]).unwrap();
        assert!(zero.shadow_mode);
        assert_eq!(zero.stat_key, "basic.nested.zero");
        // No rule at a level without a limit, nor deeper than the configuration.
        assert!(domain.find([("nested", "x")]).is_none());
        assert!(domain.find([("key1", "v"), ("more", "v")]).is_none());
        assert!(domain.find([("unknown", "v")]).is_none());
        assert!(
            domain
                .find(std::iter::empty::<(&str, &str)>().collect::<Vec<_>>())
                .is_none()
        );
        let dump = RlsConfig::from_domains(vec![domain]).unwrap().dump();
        assert!(
            dump.contains(
                "basic.key1_value1: unit=MINUTE requests_per_unit=10, shadow_mode: false"
            ),
            "{dump}"
        );
        assert!(
            dump.contains("basic.nested.inner: unlimited=true"),
            "{dump}"
        );
    }

    #[test]
    fn extensions_parse() {
        let domain = accept(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, unit_multiplier: 5, requests_per_unit: 3}\n  - key: m\n    rate_limits:\n      - {unit: second, requests_per_unit: 10}\n      - {unit: day, requests_per_unit: 250}\n",
        );
        let k = domain.find([("k", "")]).unwrap();
        assert_eq!(
            k.rate_limit.as_ref().unwrap().limits[0].window_seconds(),
            300
        );
        let m = domain.find([("m", "")]).unwrap();
        assert_eq!(m.rate_limit.as_ref().unwrap().limits.len(), 2);
    }

    #[test]
    fn rejects_empty_domain() {
        let error = reject("descriptors: []\n");
        assert_eq!((error.field.as_str(), error.line), ("domain", 1));
        assert!(
            error
                .to_string()
                .starts_with("f.yaml:1: field `domain`: config file cannot have empty domain")
        );
        reject("domain: ''\n");
        reject("");
    }

    #[test]
    fn rejects_duplicate_domain() {
        let a = accept("domain: d\n");
        let mut b = accept("domain: d\n");
        b.file = "g.yaml".into();
        let error = RlsConfig::from_domains(vec![a, b]).unwrap_err();
        assert_eq!(error.file, "g.yaml");
        assert!(error.message.contains("duplicate domain 'd'") && error.message.contains("f.yaml"));
    }

    #[test]
    fn rejections_name_the_line_and_the_field() {
        for (text, line, field, message) in [
            (
                "domain: d\ndescriptors:\n  - value: v\n",
                3,
                "descriptors[0].key",
                "empty key",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n  - key: k\n",
                4,
                "descriptors[1]",
                "duplicate descriptor composite key 'd.k'",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      request_per_unit: 5\n",
                6,
                "descriptors[0].rate_limit.request_per_unit",
                "unknown field 'request_per_unit'",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 5\n",
                5,
                "descriptors[0].rate_limit.unit",
                "invalid rate limit unit 'fortnight'",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      unit: second\n",
                6,
                "descriptors[0].rate_limit.unit",
                "should not specify rate limit unit when unlimited",
            ),
            (
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      name: me\n      replaces:\n        - name: me\n",
                8,
                "descriptors[0].rate_limit.replaces[0].name",
                "same descriptor",
            ),
        ] {
            let error = reject(text);
            assert_eq!((error.line, error.field.as_str()), (line, field), "{text}");
            assert!(error.message.contains(message), "{error}");
        }
    }

    #[test]
    fn rejects_duplicate_key_at_one_level() {
        let error = reject(
            "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: k\n        value: v\n      - key: k\n        value: v\n",
        );
        assert_eq!(error.field, "descriptors[0].descriptors[1]");
        assert!(error.message.contains("'d.a.k_v'"));
        // The same key with and without a value, or at different levels, is fine.
        accept(
            "domain: d\ndescriptors:\n  - key: k\n  - key: k\n    value: v\n    descriptors: [{key: k}]\n",
        );
    }

    #[test]
    fn rejects_unknown_field() {
        assert_eq!(reject("domain: d\nfoo: 1\n").field, "foo");
        assert_eq!(
            reject("domain: d\ndescriptors:\n  - key: k\n    limit: 1\n").field,
            "descriptors[0].limit"
        );
    }

    #[test]
    fn rejects_bad_unit() {
        reject(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: unknown, requests_per_unit: 5}\n",
        );
        // A limit without a unit is a bad unit too (as upstream).
        let error =
            reject("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {requests_per_unit: 5}\n");
        assert_eq!(error.field, "descriptors[0].rate_limit.unit");
    }

    #[test]
    fn rejects_an_empty_replaces_entry() {
        let error = reject(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      replaces:\n        - name: ''\n",
        );
        assert!(error.message.contains("empty replaces entry"));
    }

    #[test]
    fn rejects_a_requests_per_unit_that_is_not_a_whole_number() {
        for bad in ["-1", "1.5", "'5'", "ten", "4294967296"] {
            let error = reject(&format!(
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: {bad}\n"
            ));
            assert_eq!(
                (error.line, error.field.as_str()),
                (6, "descriptors[0].rate_limit.requests_per_unit"),
                "{bad}"
            );
        }
    }

    #[test]
    fn rejects_a_flag_that_is_not_a_boolean() {
        let error = reject("domain: d\ndescriptors:\n  - key: k\n    shadow_mode: sometimes\n");
        assert_eq!(error.field, "descriptors[0].shadow_mode");
    }

    #[test]
    fn rejects_wrong_shapes() {
        assert_eq!(reject("- a\n").field, "");
        assert_eq!(
            reject("domain: d\ndescriptors: {key: k}\n").field,
            "descriptors"
        );
        assert_eq!(reject("domain: [d]\n").field, "domain");
    }

    #[test]
    fn rejects_a_duplicate_mapping_key() {
        let error = reject("domain: d\ndomain: e\n");
        assert_eq!(error.line, 2);
        assert!(error.message.contains("duplicate mapping key"));
    }

    #[test]
    fn rejects_invalid_yaml_with_its_line() {
        let error = reject("domain: d\ndescriptors:\n  - key: [k\n");
        assert!(error.line >= 3, "{error}");
        assert!(error.message.starts_with("invalid YAML"));
    }

    #[test]
    fn rejects_bad_extensions() {
        assert_eq!(
            reject("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, unit_multiplier: 0}\n").field,
            "descriptors[0].rate_limit.unit_multiplier"
        );
        assert_eq!(
            reject("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second}\n    rate_limits: [{unit: day}]\n").field,
            "descriptors[0].rate_limits"
        );
        assert_eq!(
            reject(
                "domain: d\ndescriptors:\n  - key: k\n    rate_limits: [{unit: day}, {unit: day}]\n"
            )
            .field,
            "descriptors[0].rate_limits[1]"
        );
        assert_eq!(
            reject(
                "domain: d\ndescriptors:\n  - key: k\n    rate_limits: [{unit: day, name: x}]\n"
            )
            .field,
            "descriptors[0].rate_limits[0].name"
        );
        reject("domain: d\ndescriptors:\n  - key: k\n    rate_limits: []\n");
    }

    #[test]
    fn rejects_an_oversized_file() {
        let text = format!("domain: d\n#{}\n", "x".repeat(MAX_FILE_BYTES));
        assert!(reject(&text).message.contains("larger than"));
    }
}
