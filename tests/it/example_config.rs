//! `examples/ringlimit.conf` lists every `GUBER_*` setting of a node with its default, in the
//! `--config FILE` format, and cannot go stale: every variable the configuration defines must be in
//! it, every active line must hold the default, and the file must load through the real parser.
//!
//! Settings without a default (files, secrets, addresses derived at start) are listed commented
//! out (`# GUBER_X=`). `RINGLIMIT_BLESS_EXAMPLE=1 cargo test --test it example_config` rewrites the
//! file from the configuration's help and defaults.

use std::collections::BTreeMap;

use clap::Args;
use ringlimit::config::{self, ServerConfig};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ringlimit.conf");

/// Every `GUBER_*` option of a node: variable → (default, help).
fn options() -> BTreeMap<String, (Option<String>, String)> {
    let command = ServerConfig::augment_args(clap::Command::new("ringlimit"));
    command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_string();
            if !env.starts_with("GUBER_") {
                return None;
            }
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            let default = (!defaults.is_empty()).then(|| defaults.join(","));
            let help = arg
                .get_help()
                .map(|help| help.to_string())
                .unwrap_or_default();
            Some((env, (default, help)))
        })
        .collect()
}

/// The file as the bless mode writes it.
fn render(options: &BTreeMap<String, (Option<String>, String)>) -> String {
    let mut text = String::from(
        "# ringlimit: every node setting with its default, in the format of `ringlimit --config FILE`\n\
         # (KEY=value lines; `#` starts a comment). Precedence: flags, then this file, then the\n\
         # environment, then the defaults. Settings without a default are commented out.\n\
         # Checked by tests/it/example_config.rs, so it lists every GUBER_* variable.\n",
    );
    for (env, (default, help)) in options {
        text.push('\n');
        for line in help.lines() {
            text.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
        match default {
            Some(value) => text.push_str(&format!("{env}={value}\n")),
            None => text.push_str(&format!("# {env}=\n")),
        }
    }
    text
}

#[test]
fn the_example_configuration_lists_every_setting_with_its_default() {
    let options = options();
    if std::env::var_os("RINGLIMIT_BLESS_EXAMPLE").is_some() {
        std::fs::write(PATH, render(&options)).expect("write the example");
    }
    let text = std::fs::read_to_string(PATH).expect("examples/ringlimit.conf exists");
    // Active lines, through the real parser of configuration files.
    let entries = config::env_file::parse(&text).expect("the example parses");
    let mut listed: BTreeMap<String, Option<String>> = entries
        .iter()
        .map(|entry| (entry.key.clone(), Some(entry.value.clone())))
        .collect();
    // Commented-out settings: `# GUBER_X=`.
    for line in text.lines() {
        if let Some((key, _)) = line
            .strip_prefix("# ")
            .and_then(|rest| rest.split_once('='))
            .filter(|(key, _)| key.starts_with("GUBER_") && !key.contains(' '))
        {
            listed.entry(key.to_string()).or_insert(None);
        }
    }
    for (env, (default, _)) in &options {
        let Some(value) = listed.get(env) else {
            panic!("examples/ringlimit.conf does not list {env}");
        };
        assert_eq!(
            value, default,
            "examples/ringlimit.conf: {env} must show its default"
        );
    }
    for key in listed.keys() {
        assert!(
            options.contains_key(key),
            "examples/ringlimit.conf lists {key}, which is not a setting"
        );
    }

    // The file loads as a node's configuration, and configures exactly the defaults.
    let command = ServerConfig::augment_args(clap::Command::new("ringlimit"));
    let args = vec![
        "ringlimit".to_string(),
        "--config".to_string(),
        PATH.to_string(),
    ];
    let (expanded, warnings) =
        config::expand_config_file(args, &command).expect("the example expands");
    assert!(warnings.is_empty(), "{warnings:?}");
    let flags: Vec<String> = expanded
        .into_iter()
        .skip(1)
        .filter(|arg| !arg.starts_with("--config") && arg != PATH)
        .collect();
    let from_file = config::server_config_from_args(flags).expect("the example is valid");
    let defaults = config::server_config_from_args(Vec::<String>::new()).expect("defaults");
    assert_eq!(from_file.describe(), defaults.describe());
}
