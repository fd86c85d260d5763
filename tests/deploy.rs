//! Checks the deployment files without Docker: docker-compose.yml describes an etcd plus three
//! ringlimit nodes that find each other through it, and the Dockerfile is a multi-stage build that
//! runs as a non-root user.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_norway::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml"))
        .expect("docker-compose.yml is readable");
    let mut value: Value = serde_norway::from_str(&text).expect("docker-compose.yml is YAML");
    // Compose resolves `<<: *anchor` merge keys; so must we.
    value.apply_merge().expect("merge keys resolve");
    value
}

fn services(compose: &Value) -> Vec<(String, Value)> {
    compose["services"]
        .as_mapping()
        .expect("a services mapping")
        .iter()
        .map(|(name, service)| {
            let mut service = service.clone();
            service.apply_merge().expect("merge keys resolve");
            (
                name.as_str()
                    .expect("service names are strings")
                    .to_string(),
                service,
            )
        })
        .collect()
}

/// A service's environment as name → value, from either the mapping or the `KEY=value` list form.
fn environment(service: &Value) -> Vec<(String, String)> {
    let scalar = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    match &service["environment"] {
        Value::Mapping(map) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Value::Sequence(list) => list
            .iter()
            .filter_map(|item| item.as_str())
            .filter_map(|item| item.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        _ => Vec::new(),
    }
}

fn env<'a>(environment: &'a [(String, String)], name: &str) -> Option<&'a str> {
    environment
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn is_ringlimit(service: &Value) -> bool {
    !service["build"].is_null()
        || service["image"]
            .as_str()
            .is_some_and(|image| image.starts_with("ringlimit"))
}

/// The host side of a published port (`"1050:1050"`, `"127.0.0.1:1050:1050"` or long form).
fn published(port: &Value) -> String {
    match port {
        Value::String(short) => {
            let parts: Vec<&str> = short.split(':').collect();
            if parts.len() >= 2 {
                parts[..parts.len() - 1].join(":")
            } else {
                short.clone()
            }
        }
        Value::Mapping(_) => match &port["published"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        },
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[test]
fn compose_runs_etcd_and_three_nodes_that_discover_each_other_through_it() {
    let compose = compose();
    let services = services(&compose);
    let etcd = services
        .iter()
        .find(|(name, _)| name == "etcd")
        .map(|(_, service)| service)
        .expect("an etcd service");
    let image = etcd["image"].as_str().expect("etcd has an image");
    assert!(image.contains("etcd"), "etcd image: {image}");
    let command = serde_norway::to_string(&etcd["command"]).expect("command");
    assert!(command.contains("--listen-client-urls=http://0.0.0.0:2379"));
    assert!(command.contains("--advertise-client-urls=http://etcd:2379"));

    let nodes: Vec<_> = services
        .iter()
        .filter(|(_, service)| is_ringlimit(service))
        .collect();
    assert_eq!(nodes.len(), 3, "three ringlimit services");
    let mut advertised = BTreeSet::new();
    for (name, service) in &nodes {
        let environment = environment(service);
        assert_eq!(
            env(&environment, "GUBER_PEER_DISCOVERY_TYPE"),
            Some("etcd"),
            "{name} uses etcd discovery"
        );
        let endpoints = env(&environment, "GUBER_ETCD_ENDPOINTS").expect("etcd endpoints");
        assert!(
            endpoints.split(',').any(|e| e.trim() == "etcd:2379"),
            "{name} reaches the etcd service: {endpoints}"
        );
        assert_eq!(
            env(&environment, "GUBER_GRPC_ADDRESS"),
            Some("0.0.0.0:1051")
        );
        assert_eq!(
            env(&environment, "GUBER_HTTP_ADDRESS"),
            Some("0.0.0.0:1050")
        );
        let advertise = env(&environment, "GUBER_ADVERTISE_ADDRESS").expect("advertise address");
        assert_eq!(
            advertise,
            format!("{name}:1051"),
            "{name} advertises the name peers reach it by"
        );
        advertised.insert(advertise.to_string());
        let depends = serde_norway::to_string(&service["depends_on"]).expect("depends_on");
        assert!(depends.contains("etcd"), "{name} depends on etcd");
    }
    assert_eq!(advertised.len(), 3, "distinct advertise addresses");
}

#[test]
fn published_ports_are_distinct() {
    let compose = compose();
    let mut seen = BTreeSet::new();
    let mut ringlimit_ports = BTreeSet::new();
    for (name, service) in services(&compose) {
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let host = published(port);
            assert!(seen.insert(host.clone()), "{name} publishes {host} twice");
            if is_ringlimit(&service) {
                ringlimit_ports.insert(host);
            }
        }
    }
    let expected: BTreeSet<String> = ["1050", "1051", "2050", "2051", "3050", "3051"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(ringlimit_ports, expected);
}

#[test]
fn every_build_context_has_a_dockerfile() {
    let compose = compose();
    let mut builds = 0;
    for (name, service) in services(&compose) {
        let (context, dockerfile) = match &service["build"] {
            Value::Null => continue,
            Value::String(context) => (context.clone(), "Dockerfile".to_string()),
            build => (
                build["context"].as_str().unwrap_or(".").to_string(),
                build["dockerfile"]
                    .as_str()
                    .unwrap_or("Dockerfile")
                    .to_string(),
            ),
        };
        builds += 1;
        let path = root().join(&context).join(&dockerfile);
        assert!(
            Path::new(&path).is_file(),
            "{name}: {} does not exist",
            path.display()
        );
    }
    assert!(builds >= 3, "the ringlimit services are built here");
}

#[test]
fn the_dockerfile_is_multi_stage_and_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile is readable");
    let instructions: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(char::is_whitespace))
        .map(|(instruction, rest)| (instruction.to_uppercase(), rest.trim().to_string()))
        .collect();
    let froms: Vec<&String> = instructions
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, rest)| rest)
        .collect();
    assert!(froms.len() >= 2, "multi-stage build: {froms:?}");
    assert!(
        froms[0].to_lowercase().contains(" as "),
        "the build stage is named: {}",
        froms[0]
    );
    assert!(
        instructions
            .iter()
            .any(|(i, rest)| i == "COPY" && rest.starts_with("--from=")),
        "the runtime stage copies the binary from the build stage"
    );
    assert!(
        instructions
            .iter()
            .any(|(i, rest)| i == "RUN" && rest.contains("protobuf-compiler")),
        "the build stage installs protoc"
    );
    // The last USER of the final stage decides who runs the binary.
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("a FROM");
    let user = instructions[last_from..]
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, rest)| rest.clone())
        .expect("the runtime stage sets USER");
    let user = user.split(':').next().unwrap_or_default();
    assert!(
        user != "root" && user != "0" && !user.is_empty(),
        "runs as non-root, got USER {user}"
    );
}
