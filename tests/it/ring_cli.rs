//! `ringlimit ring`: the owner of each key, from arguments or standard input, as lines or JSON,
//! agreeing with the library's ring; and one clear error when no peers are given.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use ringlimit::peers::{PeerInfo, Ring};

const PEERS: [&str; 3] = ["10.0.0.1:1051", "10.0.0.2:1051", "10.0.0.3:1051"];

fn ringlimit() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command.env_remove("GUBER_PEERS").stdin(Stdio::null());
    command
}

fn run_with_stdin(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("a stdin pipe")
        .write_all(input.as_bytes())
        .expect("stdin accepts the keys");
    child.wait_with_output().expect("the binary finishes")
}

/// SplitMix64's finaliser: a well-mixed id for `i`.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn ring() -> Ring {
    let peers: Vec<PeerInfo> = PEERS
        .iter()
        .map(|address| PeerInfo {
            grpc_address: address.to_string(),
            http_address: String::new(),
            data_center: String::new(),
        })
        .collect();
    Ring::new(&peers)
}

fn expected_owner(ring: &Ring, key: &str) -> String {
    ring.owner(key).expect("an owner").grpc_address.clone()
}

/// The `(key, owner)` pairs of tab-separated output, checking its shape.
fn parse_lines(output: &Output) -> Vec<(String, String)> {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .expect("UTF-8 output")
        .lines()
        .map(|line| {
            let (key, owner) = line.split_once('\t').expect("key<TAB>owner");
            assert!(!owner.contains('\t'), "{line:?}");
            (key.to_string(), owner.to_string())
        })
        .collect()
}

fn check_owners(pairs: &[(String, String)], keys: &[String]) {
    let ring = ring();
    let got: Vec<&String> = pairs.iter().map(|(key, _)| key).collect();
    let want: Vec<&String> = keys.iter().collect();
    assert_eq!(got, want, "one line per key, in order");
    for (key, owner) in pairs {
        assert!(PEERS.contains(&owner.as_str()), "{owner} is not a peer");
        assert_eq!(*owner, expected_owner(&ring, key), "owner of {key}");
    }
}

#[test]
fn keys_given_as_arguments_print_their_owners() {
    // Unrelated unique keys (well-mixed hex ids): FNV-1 puts keys that differ only in their last
    // byte or two close together, so sequential ids would often share one owner.
    let keys: Vec<String> = (1u64..=50)
        .map(|i| format!("requests_per_sec_account:{:016x}", mix(i)))
        .collect();
    let output = ringlimit()
        .arg("ring")
        .arg("--peers")
        .arg(PEERS.join(","))
        .args(&keys)
        .output()
        .expect("the binary runs");
    let pairs = parse_lines(&output);
    check_owners(&pairs, &keys);
    // Fifty keys over three peers use more than one of them.
    let mut owners: Vec<&String> = pairs.iter().map(|(_, owner)| owner).collect();
    owners.sort();
    owners.dedup();
    assert!(owners.len() > 1, "{owners:?}");
}

#[test]
fn keys_are_read_from_standard_input_skipping_blank_lines() {
    let mut command = ringlimit();
    command.args(["ring", "--peers", &PEERS.join(",")]);
    let output = run_with_stdin(command, "name_a\n\n   \nname_b\r\nname_c");
    let pairs = parse_lines(&output);
    check_owners(&pairs, &["name_a".into(), "name_b".into(), "name_c".into()]);
}

#[test]
fn peers_come_from_guber_peers_and_name_prefixes_the_keys() {
    let output = ringlimit()
        .env("GUBER_PEERS", PEERS.join(","))
        .args([
            "ring",
            "--name",
            "requests_per_sec",
            "account:1",
            "account:2",
        ])
        .output()
        .expect("the binary runs");
    let pairs = parse_lines(&output);
    check_owners(
        &pairs,
        &[
            "requests_per_sec_account:1".into(),
            "requests_per_sec_account:2".into(),
        ],
    );
}

#[test]
fn json_output_is_an_array_of_key_and_owner() {
    let keys: Vec<String> = (0..20).map(|i| format!("name_key{i}")).collect();
    let mut command = ringlimit();
    command.args(["ring", "--json", "--peers", &PEERS.join(",")]);
    let output = run_with_stdin(command, &keys.join("\n"));
    assert!(output.status.success(), "{output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON output");
    let entries = value.as_array().expect("a JSON array");
    let pairs: Vec<(String, String)> = entries
        .iter()
        .map(|entry| {
            let object = entry.as_object().expect("an object");
            assert_eq!(object.len(), 2, "{entry}");
            (
                object["key"].as_str().expect("a string key").to_string(),
                object["owner"]
                    .as_str()
                    .expect("a string owner")
                    .to_string(),
            )
        })
        .collect();
    check_owners(&pairs, &keys);
}

#[test]
fn no_peers_is_one_clear_line_and_exit_code_2() {
    for (peers_env, args) in [
        (None, vec!["ring", "name_key"]),
        (Some(""), vec!["ring", "name_key"]),
        (None, vec!["ring", "--peers", " , ", "name_key"]),
    ] {
        let mut command = ringlimit();
        if let Some(value) = peers_env {
            command.env("GUBER_PEERS", value);
        }
        let output = command.args(&args).output().expect("the binary runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|line| !line.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("peers"), "{stderr}");
    }
}

#[test]
fn help_documents_the_output_format() {
    let output = ringlimit()
        .args(["ring", "--help"])
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("<key>\\t<owner>"), "{help}");
    assert!(help.contains("--json"), "{help}");
    assert!(help.contains("GUBER_PEERS"), "{help}");
}
