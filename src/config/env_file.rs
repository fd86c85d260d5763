//! `--config FILE`: Gubernator's `KEY=value` configuration files.
//!
//! Each known `GUBER_*` key becomes the matching command-line flag, placed before the real
//! arguments, so the precedence is: flags, then the file, then the environment, then defaults
//! (Gubernator's file also overrides the environment).

use std::path::Path;

/// One `KEY=value` entry of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The variable name, e.g. `GUBER_CACHE_SIZE`.
    pub key: String,
    /// Its value, with surrounding quotes removed.
    pub value: String,
}

/// Reads `path` and parses its entries.
pub fn read(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read config file '{}': {error}", path.display()))?;
    parse(&text).map_err(|error| format!("config file '{}': {error}", path.display()))
}

/// Parses `KEY=value` lines; blank lines and lines starting with `#` are skipped.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=value, got '{line}'", index + 1))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: invalid key '{key}'", index + 1));
        }
        entries.push(Entry {
            key: key.to_string(),
            value: unquote(value.trim()).to_string(),
        });
    }
    Ok(entries)
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// Finds the value of `--config FILE` or `--config=FILE` in `args`.
pub fn config_path(args: &[String]) -> Option<String> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            return None;
        }
        if arg == "--config" {
            return iter.next().cloned();
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_comments_and_quotes() {
        let entries = parse(
            "# a comment\n\nGUBER_CACHE_SIZE=100\nexport GUBER_DATA_CENTER=\"east\"\n GUBER_LOG_LEVEL = 'debug' \n",
        )
        .unwrap();
        assert_eq!(
            entries,
            vec![
                Entry {
                    key: "GUBER_CACHE_SIZE".into(),
                    value: "100".into()
                },
                Entry {
                    key: "GUBER_DATA_CENTER".into(),
                    value: "east".into()
                },
                Entry {
                    key: "GUBER_LOG_LEVEL".into(),
                    value: "debug".into()
                },
            ]
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        assert_eq!(
            parse("GUBER_A=1\nnot a pair\n").unwrap_err(),
            "line 2: expected KEY=value, got 'not a pair'"
        );
        assert!(parse("BAD KEY=1").unwrap_err().contains("invalid key"));
    }

    #[test]
    fn finds_the_config_flag_in_both_spellings() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["ringlimit", "--config", "a.env"])),
            Some("a.env".into())
        );
        assert_eq!(
            config_path(&args(&["ringlimit", "--config=b.env"])),
            Some("b.env".into())
        );
        assert_eq!(config_path(&args(&["ringlimit", "serve"])), None);
    }
}
