//! The `ringlimit` binary's configuration handling: invalid values stop the start with one line that
//! names the variable, and `--config FILE` configures the node.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ringlimit() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command.stdin(Stdio::null());
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

#[test]
fn invalid_environment_values_fail_with_one_line_naming_the_variable() {
    for (variable, value) in [
        ("GUBER_CACHE_SIZE", "lots"),
        ("GUBER_BATCH_WAIT", "5 parsecs"),
        ("GUBER_BATCH_LIMIT", "5000"),
        ("GUBER_LOG_FORMAT", "xml"),
        ("GUBER_LOG_LEVEL", "verbose"),
        ("GUBER_PEER_DISCOVERY_TYPE", "carrier-pigeon"),
        ("GUBER_DISABLE_BATCHING", "perhaps"),
    ] {
        let output = ringlimit()
            .env(variable, value)
            .output()
            .expect("the binary runs");
        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<_> = stderr.lines().filter(|line| !line.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{variable}: {stderr}");
        assert!(lines[0].contains(variable), "{variable}: {stderr}");
    }
}

/// `GUBER_LOG_LEVEL=warning` (Gubernator's spelling) used to be read by tracing as a target name,
/// which hid every line, even a fatal bind error: the node exited 1 without a word.
#[test]
fn gubernator_log_level_names_still_show_a_fatal_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port to collide with");
    let address = taken.local_addr().expect("address").to_string();
    for level in ["warning", "error", "fatal"] {
        let output = ringlimit()
            .env("GUBER_LOG_LEVEL", level)
            .env("GUBER_GRPC_ADDRESS", &address)
            .env("GUBER_HTTP_ADDRESS", format!("127.0.0.1:{}", free_port()))
            .output()
            .expect("the binary runs");
        assert!(!output.status.success(), "{level}: the bind must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("cannot listen on") && stderr.contains(&address),
            "GUBER_LOG_LEVEL={level}: the fatal error is not shown: {stderr:?}"
        );
    }
}

#[test]
fn help_lists_the_environment_variables() {
    let output = ringlimit().arg("--help").output().expect("the binary runs");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "GUBER_GRPC_ADDRESS",
        "GUBER_HTTP_ADDRESS",
        "GUBER_CACHE_SIZE",
    ] {
        assert!(help.contains(variable), "{help}");
    }
    let output = ringlimit()
        .args(["serve", "--help"])
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
}

#[test]
fn config_file_configures_the_node() {
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let dir = std::env::temp_dir().join(format!("ringlimit-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.env");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(
        file,
        "# a node\nGUBER_HTTP_ADDRESS={http}\nGUBER_GRPC_ADDRESS={grpc}"
    )
    .unwrap();
    writeln!(file, "GUBER_DATA_CENTER=\"dc-from-file\"").unwrap();
    drop(file);

    let mut child = ringlimit()
        .arg(format!("--config={}", path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let url = format!("http://{http}/v1/HealthCheck");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let attempt = std::net::TcpStream::connect(&http).ok().and_then(|_| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async { reqwest::get(&url).await.ok()?.text().await.ok() })
        });
        if let Some(body) = attempt {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the node never answered on {http}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(body.contains(r#""data_center":"dc-from-file""#), "{body}");
    assert!(
        body.contains(&format!(r#""advertise_address":"{grpc}""#)),
        "{body}"
    );
}

/// `ringlimit --version` names the version, the commit it was built from (`git rev-parse --short
/// HEAD` of this checkout, or `unknown` without git) and the build date.
#[test]
fn version_prints_the_commit_and_the_build_date() {
    let output = ringlimit()
        .arg("--version")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.trim();
    let prefix = format!("ringlimit {} (commit ", env!("CARGO_PKG_VERSION"));
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected version line: {line}"));
    let (commit, date) = rest
        .strip_suffix(')')
        .and_then(|rest| rest.split_once(", built "))
        .unwrap_or_else(|| panic!("unexpected version line: {line}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    match head {
        Some(head) if std::env::var_os("RINGLIMIT_GIT_COMMIT").is_none() => {
            assert_eq!(commit, head, "{line}")
        }
        _ => assert!(!commit.is_empty(), "{line}"),
    }
    let parts: Vec<&str> = date.split('-').collect();
    assert!(
        parts.len() == 3
            && parts[0].len() == 4
            && parts.iter().all(|part| part.parse::<u32>().is_ok()),
        "{line}"
    );
}
