//! Checks the deployment files without Docker: docker-compose.yml describes an etcd plus three
//! ringlimit nodes that find each other through it, with healthchecks, Prometheus and Grafana; the
//! Dockerfile is a multi-stage build that runs as a non-root user; the Prometheus, Grafana and
//! Kubernetes files under deploy/ parse and agree with each other and with what the nodes export.

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

// ---------------------------------------------------------------------------------------------
// Everything below: healthchecks, Prometheus, Grafana, Kubernetes.

/// Every metric a node exports, without the `_bucket`/`_sum`/`_count` series of histograms. The
/// dashboard and the alerts may use only these: this list documents what the code must export.
const EXPORTED_METRICS: &[&str] = &[
    "gubernator_getratelimit_counter",
    "gubernator_over_limit_counter",
    "gubernator_check_error_counter",
    "gubernator_cache_access_count",
    "gubernator_unexpired_evictions_count",
    "gubernator_cache_size",
    "gubernator_concurrent_checks_counter",
    "gubernator_grpc_request_counts",
    "gubernator_grpc_request_duration",
    "ringlimit_grpc_request_duration_seconds",
    "ringlimit_forwarded_items_total",
    "ringlimit_peer_calls_total",
    "gubernator_batch_send_duration",
    "ringlimit_batch_send_duration_seconds",
    "ringlimit_peer_call_items",
    "gubernator_batch_send_retries",
    "gubernator_global_send_duration",
    "gubernator_broadcast_duration",
    "ringlimit_global_send_duration_seconds",
    "ringlimit_broadcast_duration_seconds",
    "gubernator_global_send_errors",
    "gubernator_broadcast_errors",
    "gubernator_updatepeerglobals_counter",
    "gubernator_global_send_queue_length",
    "gubernator_global_queue_length",
    "ringlimit_global_hits_dropped_total",
    "ringlimit_decisions_total",
    "ringlimit_request_duration_seconds",
    "ringlimit_items_per_call",
    "ringlimit_peers",
    "ringlimit_etcd_registered",
    "ringlimit_kubernetes_watch_errors_total",
    "ringlimit_build_info",
    "ringlimit_peer_auth_refused_total",
    "ringlimit_peer_input_rejected_total",
    // The proxy's (`ringlimit proxy`), on its own /metrics and on an embedded node's.
    "ringlimit_proxy_requests_total",
    "ringlimit_proxy_decision_duration_seconds",
    "ringlimit_proxy_upstream_requests_total",
    "ringlimit_proxy_upstream_duration_seconds",
];

/// The metric names a PromQL expression uses: the `[a-z_]+` words starting with `gubernator_` or
/// `ringlimit_`, each mapped to its exported name (a histogram's `_bucket`, `_sum` and `_count`
/// series belong to the histogram). Names that are not exported are returned as they are.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .filter(|word| word.starts_with("gubernator_") || word.starts_with("ringlimit_"))
        .map(|word| {
            if EXPORTED_METRICS.contains(&word) {
                return word.to_string();
            }
            ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| word.strip_suffix(suffix))
                .find(|base| EXPORTED_METRICS.contains(base))
                .unwrap_or(word)
                .to_string()
        })
        .collect()
}

fn assert_known_metrics(context: &str, expr: &str) {
    let names = metric_names(expr);
    assert!(
        !names.is_empty(),
        "{context}: uses no ringlimit metric: {expr}"
    );
    for name in names {
        assert!(
            EXPORTED_METRICS.contains(&name.as_str()),
            "{context}: `{name}` is not a metric ringlimit exports: {expr}"
        );
    }
}

/// The list above is true: the node (or the proxy) registers every name in it.
#[test]
fn the_exported_metrics_list_matches_the_code() {
    let proxy = ringlimit::proxy::metrics::ProxyMetrics::new();
    let mut registered = ringlimit::metrics::Metrics::new().names();
    registered.extend(
        proxy
            .collectors()
            .iter()
            .flat_map(|collector| collector.desc())
            .map(|desc| desc.fq_name.clone()),
    );
    for name in EXPORTED_METRICS {
        assert!(
            registered.iter().any(|registered| registered == name),
            "{name} is listed as exported but not registered"
        );
    }
}

#[test]
fn metric_names_are_extracted_from_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, method) (rate(ringlimit_grpc_request_duration_seconds_bucket{instance=~"$instance"}[1m])))"#
        ),
        ["ringlimit_grpc_request_duration_seconds"]
    );
    assert_eq!(
        metric_names("rate(gubernator_unexpired_evictions_count[1m]) + ringlimit_nope_sum"),
        ["gubernator_unexpired_evictions_count", "ringlimit_nope_sum"]
    );
    assert_eq!(
        metric_names("sum(rate(ringlimit_items_per_call_count[1m]))"),
        ["ringlimit_items_per_call"]
    );
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn service<'a>(services: &'a [(String, Value)], name: &str) -> &'a Value {
    services
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, service)| service)
        .unwrap_or_else(|| panic!("a {name} service"))
}

/// A service's bind mounts as (host path relative to the repository, container path); named
/// volumes are skipped.
fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|volume| match volume {
            Value::String(short) => {
                let mut parts = short.split(':');
                let source = parts.next()?.to_string();
                let target = parts.next()?.to_string();
                Some((source, target))
            }
            Value::Mapping(_) if volume["type"].as_str() == Some("bind") => Some((
                volume["source"].as_str()?.to_string(),
                volume["target"].as_str()?.to_string(),
            )),
            _ => None,
        })
        .filter(|(source, _)| source.starts_with("./") || source.starts_with('/'))
        .map(|(source, target)| (source.trim_start_matches("./").to_string(), target))
        .collect()
}

/// The host file a container path of `service` comes from, looking through directory mounts.
fn host_path(service: &Value, container_path: &str) -> Option<String> {
    bind_mounts(service)
        .into_iter()
        .find_map(|(source, target)| {
            if container_path == target {
                Some(source)
            } else {
                container_path
                    .strip_prefix(&format!("{}/", target.trim_end_matches('/')))
                    .map(|rest| format!("{source}/{rest}"))
            }
        })
}

fn ports(service: &Value) -> Vec<String> {
    service["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(published)
        .collect()
}

fn node_names(services: &[(String, Value)]) -> Vec<String> {
    services
        .iter()
        .filter(|(_, service)| is_ringlimit(service))
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn every_node_has_a_healthcheck_running_ringlimit_healthcheck() {
    let services = services(&compose());
    let nodes = node_names(&services);
    assert_eq!(nodes.len(), 3);
    for name in nodes {
        let check = &service(&services, &name)["healthcheck"];
        assert_ne!(check["disable"].as_bool(), Some(true), "{name}");
        let command = match &check["test"] {
            Value::Sequence(words) => words
                .iter()
                .map(|w| w.as_str().expect("test words are strings"))
                .filter(|w| *w != "CMD" && *w != "CMD-SHELL")
                .collect::<Vec<_>>()
                .join(" "),
            Value::String(line) => line.clone(),
            other => panic!("{name}: healthcheck test {other:?}"),
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        assert!(
            words.len() >= 2
                && words[0].rsplit('/').next() == Some("ringlimit")
                && words[1] == "healthcheck",
            "{name} runs `ringlimit healthcheck`: {command}"
        );
        for key in ["interval", "timeout", "retries"] {
            assert!(!check[key].is_null(), "{name}: healthcheck sets {key}");
        }
    }
}

#[test]
fn compose_runs_prometheus_and_grafana_with_files_that_exist() {
    let services = services(&compose());
    let prometheus = service(&services, "prometheus");
    let grafana = service(&services, "grafana");
    assert!(
        prometheus["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("prom/prometheus")),
        "prometheus image"
    );
    assert!(
        grafana["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("grafana/grafana")),
        "grafana image"
    );
    assert!(ports(prometheus).contains(&"9090".to_string()));
    assert!(ports(grafana).contains(&"3000".to_string()));

    // Every bind mount of every service names a file or directory of the repository.
    for (name, service) in &services {
        for (source, target) in bind_mounts(service) {
            assert!(
                root().join(&source).exists(),
                "{name} mounts {source} at {target}, which does not exist"
            );
        }
    }

    // Prometheus reads the configuration file it is given, which is ours.
    let command = serde_norway::to_string(&prometheus["command"]).expect("command");
    let config = command
        .split_whitespace()
        .find_map(|word| word.strip_prefix("--config.file="))
        .unwrap_or("/etc/prometheus/prometheus.yml");
    assert_eq!(
        host_path(prometheus, config).as_deref(),
        Some("deploy/prometheus/prometheus.yml"),
        "prometheus reads {config}"
    );

    // Grafana: anonymous viewers, our provisioning, the dashboard where the provider looks.
    let environment = environment(grafana);
    assert_eq!(env(&environment, "GF_AUTH_ANONYMOUS_ENABLED"), Some("true"));
    assert_eq!(
        env(&environment, "GF_AUTH_ANONYMOUS_ORG_ROLE"),
        Some("Viewer")
    );
    let provisioning =
        env(&environment, "GF_PATHS_PROVISIONING").unwrap_or("/etc/grafana/provisioning");
    assert_eq!(
        host_path(grafana, provisioning).as_deref(),
        Some("deploy/grafana/provisioning")
    );
    let providers = yaml("deploy/grafana/provisioning/dashboards/ringlimit.yml");
    let dashboards = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("the provider's path");
    assert_eq!(
        host_path(grafana, &format!("{dashboards}/ringlimit.json")).as_deref(),
        Some("deploy/grafana/ringlimit.json"),
        "the dashboard is mounted where the provider loads from"
    );
    if let Some(home) = env(&environment, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        assert_eq!(
            host_path(grafana, home).as_deref(),
            Some("deploy/grafana/ringlimit.json")
        );
    }
}

fn as_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

#[test]
fn prometheus_scrapes_the_three_nodes_every_five_seconds() {
    let compose = compose();
    let services = services(&compose);
    let config = yaml("deploy/prometheus/prometheus.yml");
    let expected: BTreeSet<String> = node_names(&services)
        .into_iter()
        .map(|name| format!("{name}:1050"))
        .collect();
    assert_eq!(expected.len(), 3);
    let jobs = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|job| {
            job["static_configs"]
                .as_sequence()
                .into_iter()
                .flatten()
                .flat_map(|sc| sc["targets"].as_sequence().into_iter().flatten())
                .any(|t| t.as_str().is_some_and(|t| expected.contains(t)))
        })
        .expect("a job scraping the nodes");
    let targets: BTreeSet<String> = job["static_configs"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|sc| sc["targets"].as_sequence().into_iter().flatten())
        .map(as_string)
        .collect();
    assert_eq!(targets, expected, "the nodes' HTTP ports");
    assert_eq!(
        job["metrics_path"].as_str().unwrap_or("/metrics"),
        "/metrics"
    );
    let interval = job["scrape_interval"]
        .as_str()
        .or(config["global"]["scrape_interval"].as_str())
        .expect("a scrape interval");
    assert_eq!(interval, "5s");

    // Rule files are mounted and hold alerts on exported metrics.
    let prometheus = service(&services, "prometheus");
    let rule_files = config["rule_files"].as_sequence().expect("rule_files");
    assert!(!rule_files.is_empty());
    for rule_file in rule_files {
        let rule_file = rule_file.as_str().expect("a path");
        let host = host_path(prometheus, rule_file)
            .unwrap_or_else(|| panic!("{rule_file} is mounted into prometheus"));
        let rules = yaml(&host);
        let mut alerts = 0;
        for group in rules["groups"].as_sequence().expect("groups") {
            assert!(group["name"].as_str().is_some_and(|n| !n.is_empty()));
            for rule in group["rules"].as_sequence().expect("rules") {
                let name = rule["alert"].as_str().expect("alerting rules only");
                let expr = as_string(&rule["expr"]);
                assert!(!expr.trim().is_empty(), "{name} has an expr");
                if !expr.contains("up{") {
                    assert_known_metrics(name, &expr);
                }
                assert!(
                    rule["annotations"]["summary"].as_str().is_some(),
                    "{name} has a summary"
                );
                alerts += 1;
            }
        }
        assert!(alerts >= 3, "{host}: {alerts} alerts");
    }
}

#[test]
fn grafana_provisions_the_prometheus_datasource_and_the_dashboard_provider() {
    let services = services(&compose());
    let dir = root().join("deploy/grafana/provisioning");
    for sub in ["datasources", "dashboards"] {
        let entries: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap_or_else(|e| panic!("provisioning/{sub}: {e}"))
            .map(|e| e.expect("entry").path())
            .collect();
        assert!(!entries.is_empty(), "provisioning/{sub} has files");
        for path in entries {
            let text = std::fs::read_to_string(&path).expect("readable");
            let value: Value = serde_norway::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
            assert_eq!(value["apiVersion"].as_u64(), Some(1), "{}", path.display());
        }
    }
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let datasource = datasources["datasources"]
        .as_sequence()
        .expect("datasources")
        .iter()
        .find(|d| d["uid"].as_str() == Some("prometheus"))
        .expect("a datasource with uid prometheus");
    assert_eq!(datasource["type"].as_str(), Some("prometheus"));
    let url = datasource["url"].as_str().expect("a url");
    let host = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap_or_default();
    assert_eq!(
        host, "prometheus",
        "the datasource reaches the compose service"
    );
    assert!(services.iter().any(|(name, _)| name == host));
    assert!(url.ends_with(":9090"), "{url}");

    let providers = yaml("deploy/grafana/provisioning/dashboards/ringlimit.yml");
    let provider = &providers["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/ringlimit.json")).expect("the dashboard is JSON")
}

/// The dashboard's panels, rows excluded and the panels of collapsed rows included.
fn dashboard_panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            panels.extend(panel["panels"].as_array().into_iter().flatten().cloned());
        } else {
            panels.push(panel.clone());
        }
    }
    panels
}

#[test]
fn the_dashboard_shows_exported_metrics_from_the_prometheus_datasource() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "ringlimit");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    let schema = dashboard["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let instance = variables
        .iter()
        .find(|v| v["name"] == "instance")
        .expect("an $instance variable");
    assert_eq!(instance["datasource"]["uid"], "prometheus");

    let panels = dashboard_panels(&dashboard);
    assert!(panels.len() >= 6, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {panel}");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id"
        );
        let unit = panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(!unit.is_empty(), "{title} has a unit");
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: a target without expr");
            assert_eq!(
                target["datasource"]["uid"].as_str().unwrap_or("prometheus"),
                "prometheus"
            );
            assert!(expr.contains("$instance"), "{title}: filters by $instance");
            assert_known_metrics(title, expr);
            used.extend(metric_names(expr));
        }
    }
    // The headline signals are all on it.
    for name in [
        "ringlimit_decisions_total",
        "gubernator_over_limit_counter",
        "gubernator_grpc_request_duration",
        "ringlimit_grpc_request_duration_seconds",
        "ringlimit_forwarded_items_total",
        "ringlimit_peer_calls_total",
        "ringlimit_peers",
        "gubernator_cache_size",
        "gubernator_unexpired_evictions_count",
        "gubernator_global_send_queue_length",
        "gubernator_global_send_errors",
        "ringlimit_etcd_registered",
        "ringlimit_proxy_requests_total",
        "ringlimit_proxy_decision_duration_seconds",
        "ringlimit_proxy_upstream_requests_total",
        "ringlimit_proxy_upstream_duration_seconds",
    ] {
        assert!(used.contains(name), "the dashboard shows {name}");
    }
}

// --- Kubernetes ---

const KUBERNETES: &str = "deploy/kubernetes";

/// Every manifest of deploy/kubernetes except the kustomization, as (file name, documents).
fn manifests() -> Vec<(String, Vec<Value>)> {
    let mut files: Vec<_> = std::fs::read_dir(root().join(KUBERNETES))
        .expect("deploy/kubernetes")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .filter(|name| name != "kustomization.yaml" && name != "kustomization.yml")
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|name| {
            let text = read(&format!("{KUBERNETES}/{name}"));
            let documents: Vec<Value> = serde_norway::Deserializer::from_str(&text)
                .map(|document| {
                    <Value as serde::Deserialize>::deserialize(document)
                        .unwrap_or_else(|e| panic!("{name} is not YAML: {e}"))
                })
                .filter(|document| !document.is_null())
                .collect();
            assert!(!documents.is_empty(), "{name} holds a manifest");
            for document in &documents {
                assert!(
                    document["apiVersion"].as_str().is_some()
                        && document["kind"].as_str().is_some(),
                    "{name}: every document has apiVersion and kind"
                );
                assert!(
                    document["metadata"]["name"].as_str().is_some(),
                    "{name}: every object has a name"
                );
            }
            (name, documents)
        })
        .collect()
}

fn objects() -> Vec<Value> {
    manifests().into_iter().flat_map(|(_, docs)| docs).collect()
}

fn of_kind<'a>(objects: &'a [Value], kinds: &[&str]) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| kinds.contains(&k)))
        .collect()
}

fn workload(objects: &[Value]) -> &Value {
    let workloads = of_kind(objects, &["StatefulSet", "Deployment"]);
    assert_eq!(workloads.len(), 1, "one StatefulSet or Deployment");
    workloads[0]
}

/// Whether `selector` (a label mapping) selects objects labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_mapping().expect("a selector");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| &labels[k.as_str().unwrap()] == v)
}

/// `500ms`, `5s`, `1m`, `1h` in milliseconds.
fn millis(duration: &str) -> u64 {
    let split = duration
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(duration.len());
    let (number, unit) = duration.split_at(split);
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("duration {duration}"));
    number
        * match unit {
            "ms" => 1,
            "s" | "" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => panic!("duration {duration}"),
        }
}

#[test]
fn kustomization_lists_every_manifest() {
    let kustomization = yaml(&format!("{KUBERNETES}/kustomization.yaml"));
    assert_eq!(kustomization["kind"].as_str(), Some("Kustomization"));
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(as_string)
        .collect();
    let present: BTreeSet<String> = manifests().into_iter().map(|(name, _)| name).collect();
    assert_eq!(listed, present);
    assert!(root().join(KUBERNETES).join("README.md").is_file());
}

#[test]
fn kubernetes_runs_three_nodes_behind_a_headless_and_a_client_service() {
    let objects = objects();
    let workload = workload(&objects);
    assert_eq!(workload["spec"]["replicas"].as_u64(), Some(3));
    let pod_labels = &workload["spec"]["template"]["metadata"]["labels"];
    assert!(selects(
        &workload["spec"]["selector"]["matchLabels"],
        pod_labels
    ));

    let services = of_kind(&objects, &["Service"]);
    assert_eq!(services.len(), 2, "two Services");
    for service in &services {
        let name = service["metadata"]["name"].as_str().unwrap();
        assert!(
            selects(&service["spec"]["selector"], pod_labels),
            "{name} selects the nodes"
        );
    }
    let (headless, client): (Vec<&Value>, Vec<&Value>) = services
        .iter()
        .partition(|s| s["spec"]["clusterIP"].as_str() == Some("None"));
    assert_eq!(headless.len(), 1, "one headless Service");
    assert_eq!(client.len(), 1, "one client Service");
    let headless = headless[0];
    assert_eq!(
        headless["metadata"]["name"].as_str(),
        Some("ringlimit-peers")
    );
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "peers find each other before they are ready"
    );
    let client = client[0];
    assert_eq!(client["metadata"]["name"].as_str(), Some("ringlimit"));
    let client_ports: BTreeSet<u64> = client["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    assert_eq!(client_ports, BTreeSet::from([1050, 1051]));

    let budgets = of_kind(&objects, &["PodDisruptionBudget"]);
    assert_eq!(budgets.len(), 1, "a PodDisruptionBudget");
    assert_eq!(budgets[0]["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert!(selects(
        &budgets[0]["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
}

/// `(name, value)` pairs.
type Pairs = Vec<(String, String)>;

/// The container's env as name → value, and name → downward API field path.
fn container_env(container: &Value) -> (Pairs, Pairs) {
    let mut values = Vec::new();
    let mut fields = Vec::new();
    for var in container["env"].as_sequence().expect("env") {
        let name = var["name"].as_str().expect("a name").to_string();
        if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            fields.push((name, path.to_string()));
        } else if !var["valueFrom"].is_null() {
            // From a Secret or ConfigMap: neither a value nor a downward API field.
        } else {
            values.push((name, as_string(&var["value"])));
        }
    }
    (values, fields)
}

#[test]
fn the_nodes_discover_each_other_through_the_headless_service() {
    let objects = objects();
    let workload = workload(&objects);
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    let container = &containers[0];
    assert_eq!(container["image"].as_str(), Some("ringlimit:latest"));
    let (values, fields) = container_env(container);
    let order: Vec<String> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    let position = |name: &str| order.iter().position(|n| n == name);
    // A $(VAR) reference works only for a variable defined earlier in the list.
    let defined_before = |var: &str, user: &str| {
        assert!(
            position(var) < position(user),
            "{var} is defined before {user} refers to it"
        );
    };

    assert_eq!(env(&values, "GUBER_PEER_DISCOVERY_TYPE"), Some("dns"));
    assert_eq!(env(&values, "GUBER_GRPC_ADDRESS"), Some("0.0.0.0:1051"));
    assert_eq!(env(&values, "GUBER_HTTP_ADDRESS"), Some("0.0.0.0:1050"));
    assert_eq!(env(&values, "GUBER_SHUTDOWN_DRAIN_DELAY"), Some("5s"));

    assert_eq!(
        env(&values, "GUBER_ADVERTISE_ADDRESS"),
        Some("$(POD_IP):1051")
    );
    assert_eq!(env(&fields, "POD_IP"), Some("status.podIP"));
    defined_before("POD_IP", "GUBER_ADVERTISE_ADDRESS");

    let headless = of_kind(&objects, &["Service"])
        .into_iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless Service");
    let headless_name = headless["metadata"]["name"].as_str().unwrap();
    let fqdn = env(&values, "GUBER_DNS_FQDN").expect("GUBER_DNS_FQDN");
    let namespace = fqdn
        .strip_prefix(&format!("{headless_name}."))
        .and_then(|rest| rest.strip_suffix(".svc.cluster.local"))
        .unwrap_or_else(|| panic!("{fqdn} names {headless_name}.<namespace>.svc.cluster.local"));
    if namespace == "$(POD_NAMESPACE)" {
        assert_eq!(env(&fields, "POD_NAMESPACE"), Some("metadata.namespace"));
        defined_before("POD_NAMESPACE", "GUBER_DNS_FQDN");
    } else {
        assert!(
            !namespace.is_empty() && !namespace.contains('.'),
            "a fixed namespace: {namespace}"
        );
    }
    // DNS discovery pairs each record with the advertised port: the headless Service must
    // publish it.
    assert!(
        headless["spec"]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|p| p["port"].as_u64() == Some(1051))
    );
}

#[test]
fn the_node_pods_are_probed_bounded_and_locked_down() {
    let objects = objects();
    let workload = workload(&objects);
    let pod = &workload["spec"]["template"];
    let spec = &pod["spec"];
    let container = &spec["containers"][0];

    let container_ports: BTreeSet<u64> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    assert_eq!(container_ports, BTreeSet::from([1050, 1051]));
    // A named probe port must be one of the container's.
    let port_of = |port: &Value| -> u64 {
        match port {
            Value::Number(n) => n.as_u64().unwrap(),
            Value::String(name) => container["ports"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("no container port named {name}")),
            other => panic!("probe port {other:?}"),
        }
    };

    let readiness = &container["readinessProbe"];
    if !readiness["grpc"].is_null() {
        assert_eq!(port_of(&readiness["grpc"]["port"]), 1051);
    } else {
        assert_eq!(
            readiness["httpGet"]["path"].as_str(),
            Some("/v1/HealthCheck")
        );
        assert_eq!(port_of(&readiness["httpGet"]["port"]), 1050);
    }
    let liveness = &container["livenessProbe"];
    assert_eq!(liveness["httpGet"]["path"].as_str(), Some("/v1/LiveCheck"));
    assert_eq!(port_of(&liveness["httpGet"]["port"]), 1050);

    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                !container["resources"][kind][resource].is_null(),
                "resources.{kind}.{resource}"
            );
        }
    }

    // The grace period covers the drain delay and the shutdown timeout.
    let (values, _) = container_env(container);
    let drain = millis(env(&values, "GUBER_SHUTDOWN_DRAIN_DELAY").unwrap_or("0s"));
    let timeout = millis(env(&values, "GUBER_SHUTDOWN_TIMEOUT").unwrap_or("30s"));
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds")
        * 1000;
    assert!(
        grace > drain + timeout,
        "grace {grace}ms > drain {drain}ms + timeout {timeout}ms"
    );

    let pod_security = &spec["securityContext"];
    let security = &container["securityContext"];
    assert!(
        security["runAsNonRoot"].as_bool() == Some(true)
            || pod_security["runAsNonRoot"].as_bool() == Some(true),
        "runAsNonRoot"
    );
    for context in [pod_security, security] {
        if let Some(uid) = context["runAsUser"].as_u64() {
            assert_ne!(uid, 0, "runAsUser");
        }
    }
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    let dropped: Vec<String> = security["capabilities"]["drop"]
        .as_sequence()
        .expect("capabilities.drop")
        .iter()
        .map(as_string)
        .collect();
    assert!(dropped.iter().any(|c| c == "ALL"), "drops ALL: {dropped:?}");

    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("1050"));
    assert_eq!(
        annotations["prometheus.io/path"]
            .as_str()
            .unwrap_or("/metrics"),
        "/metrics"
    );
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    logical
        .iter()
        .filter_map(|line| line.split_once(char::is_whitespace))
        .map(|(instruction, rest)| (instruction.to_uppercase(), rest.trim().to_string()))
        .collect()
}

#[test]
fn the_image_checks_its_health_with_ringlimit_healthcheck() {
    let instructions = dockerfile_instructions();
    let last_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("a FROM");
    let healthcheck = instructions[last_from..]
        .iter()
        .find(|(i, _)| i == "HEALTHCHECK")
        .map(|(_, rest)| rest.clone())
        .expect("the runtime stage has a HEALTHCHECK");
    let (options, command) = healthcheck
        .split_once("CMD")
        .expect("HEALTHCHECK [options] CMD ...");
    for option in ["--interval=", "--timeout=", "--start-period="] {
        assert!(options.contains(option), "HEALTHCHECK sets {option}");
    }
    let command = command.trim();
    let words: Vec<String> = if command.starts_with('[') {
        serde_json::from_str(command).expect("exec form is a JSON array")
    } else {
        command.split_whitespace().map(String::from).collect()
    };
    assert!(
        words.len() >= 2
            && words[0].rsplit('/').next() == Some("ringlimit")
            && words[1] == "healthcheck",
        "runs `ringlimit healthcheck`: {words:?}"
    );
}

// --- Kubernetes, the k8s discovery variant (deploy/k8s-discovery) ---

const K8S_VARIANT: &str = "deploy/k8s-discovery";

/// Every `GUBER_*` variable `ringlimit serve` reads, with its long flag.
fn config_variables() -> Vec<(String, String)> {
    use clap::Args;
    let command = ringlimit::config::ServerConfig::augment_args(clap::Command::new("serve"));
    command
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_string();
            Some((env, arg.get_long()?.to_string()))
        })
        .collect()
}

/// The documents of a multi-document YAML file.
fn documents(path: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(&read(path))
        .map(|document| {
            <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// `base` with `patch` applied as a strategic merge of env lists (merge key `name`,
/// `$patch: delete` removes an entry, new entries go last).
fn merge_env(base: &[Value], patch: &[Value]) -> Vec<Value> {
    let mut merged: Vec<Value> = base.to_vec();
    for entry in patch {
        let name = entry["name"].as_str().expect("env entries have names");
        let position = merged.iter().position(|e| e["name"].as_str() == Some(name));
        let delete = entry["$patch"].as_str() == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                merged.remove(i);
            }
            (None, true) => panic!("the patch deletes {name}, which the base does not set"),
            (Some(i), false) => merged[i] = entry.clone(),
            (None, false) => merged.push(entry.clone()),
        }
    }
    merged
}

#[test]
fn the_k8s_discovery_variant_patches_the_base_and_may_only_read() {
    let kustomization = yaml(&format!("{K8S_VARIANT}/kustomization.yaml"));
    assert_eq!(kustomization["kind"].as_str(), Some("Kustomization"));
    assert!(
        kustomization["namespace"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "a namespace, so kustomize completes the RoleBinding's subject"
    );
    let resources: Vec<String> = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(as_string)
        .collect();
    assert!(
        resources.contains(&"../kubernetes".to_string()),
        "the base manifests (a sibling: kustomize refuses a base that contains its overlay)"
    );
    for resource in resources.iter().filter(|r| *r != "../kubernetes") {
        assert!(
            root().join(K8S_VARIANT).join(resource).is_file(),
            "{resource}"
        );
    }
    let patches = kustomization["patches"].as_sequence().expect("patches");
    let patch_paths: Vec<String> = patches
        .iter()
        .filter_map(|p| p["path"].as_str().map(str::to_string))
        .collect();
    assert_eq!(patch_paths, ["deployment-patch.yaml"]);

    // RBAC: one ServiceAccount, a Role that may only read, bound to that account.
    let rbac = documents(&format!("{K8S_VARIANT}/rbac.yaml"));
    let kinds: Vec<&str> = rbac.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Role", "RoleBinding"]);
    let account = rbac[0]["metadata"]["name"].as_str().expect("account name");
    let role = &rbac[1];
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_sequence().expect("rules") {
        let verbs: BTreeSet<String> = rule["verbs"]
            .as_sequence()
            .expect("verbs")
            .iter()
            .map(as_string)
            .collect();
        assert_eq!(
            verbs,
            BTreeSet::from(["get", "list", "watch"].map(String::from))
        );
        for group in rule["apiGroups"].as_sequence().expect("apiGroups") {
            for resource in rule["resources"].as_sequence().expect("resources") {
                granted.insert(format!("{}/{}", as_string(group), as_string(resource)));
            }
        }
    }
    assert_eq!(
        granted,
        BTreeSet::from(
            ["/pods", "/endpoints", "discovery.k8s.io/endpointslices"].map(String::from)
        )
    );
    let binding = &rbac[2];
    assert_eq!(binding["roleRef"]["kind"].as_str(), Some("Role"));
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["kind"].as_str(),
        Some("ServiceAccount")
    );
    assert_eq!(binding["subjects"][0]["name"].as_str(), Some(account));
    assert_eq!(
        binding["subjects"][0]["namespace"], kustomization["namespace"],
        "kustomize does not rewrite a subject's namespace"
    );

    // The patched Deployment: the base's, with k8s discovery's variables.
    let patch = yaml(&format!("{K8S_VARIANT}/deployment-patch.yaml"));
    let objects = objects();
    let base = workload(&objects);
    assert_eq!(patch["kind"], base["kind"]);
    assert_eq!(patch["metadata"]["name"], base["metadata"]["name"]);
    let pod = &patch["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"].as_str(), Some(account));
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(true));
    let base_container = &base["spec"]["template"]["spec"]["containers"][0];
    let patch_container = &pod["containers"][0];
    assert_eq!(patch_container["name"], base_container["name"]);
    let merged_env = merge_env(
        base_container["env"].as_sequence().expect("base env"),
        patch_container["env"].as_sequence().expect("patch env"),
    );
    let mut merged = serde_norway::Mapping::new();
    merged.insert(Value::from("env"), Value::Sequence(merged_env));
    let (values, fields) = container_env(&Value::Mapping(merged));
    assert_eq!(env(&values, "GUBER_PEER_DISCOVERY_TYPE"), Some("k8s"));
    assert!(
        values
            .iter()
            .chain(&fields)
            .all(|(name, _)| !name.starts_with("GUBER_DNS_")),
        "no DNS settings left"
    );
    assert_eq!(env(&fields, "GUBER_K8S_POD_IP"), Some("status.podIP"));
    assert_eq!(
        env(&fields, "GUBER_K8S_NAMESPACE"),
        Some("metadata.namespace")
    );
    let grpc_port = base_container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("grpc"))
        .and_then(|p| p["containerPort"].as_u64())
        .expect("a grpc port");
    assert_eq!(
        env(&values, "GUBER_K8S_POD_PORT"),
        Some(grpc_port.to_string().as_str())
    );
    // The watched Service is the client Service, whose endpoints follow readiness.
    let client = of_kind(&objects, &["Service"])
        .into_iter()
        .find(|s| s["spec"]["clusterIP"].as_str() != Some("None"))
        .expect("a client Service");
    assert_eq!(
        env(&values, "GUBER_K8S_SERVICE_NAME"),
        client["metadata"]["name"].as_str()
    );

    // Every GUBER_* name, in the base and in the variant, is a variable of the configuration,
    // and the variant's environment is a valid k8s configuration.
    let variables = config_variables();
    let flag = |name: &str| {
        variables
            .iter()
            .find(|(env, _)| env == name)
            .map(|(_, long)| long.clone())
    };
    let (base_values, base_fields) = container_env(base_container);
    for (name, _) in values
        .iter()
        .chain(&fields)
        .chain(&base_values)
        .chain(&base_fields)
    {
        if name.starts_with("GUBER_") {
            assert!(flag(name).is_some(), "{name} is not a ringlimit variable");
        }
    }
    let sample = |field: &str| match field {
        "status.podIP" => "10.0.0.7".to_string(),
        "metadata.namespace" => "ringlimit".to_string(),
        other => panic!("unexpected field {other}"),
    };
    let mut args: Vec<String> = Vec::new();
    for (name, value) in &values {
        let value = value
            .replace("$(POD_IP)", "10.0.0.7")
            .replace("$(POD_NAMESPACE)", "ringlimit");
        if let Some(long) = flag(name) {
            args.push(format!("--{long}={value}"));
        }
    }
    for (name, field) in &fields {
        if let Some(long) = flag(name) {
            args.push(format!("--{long}={}", sample(field)));
        }
    }
    let config = ringlimit::config::server_config_from_args(args).expect("a valid configuration");
    let settings = ringlimit::peers::discovery::k8s::K8sSettings::from_config(
        &ringlimit::peers::discovery::DiscoveryOptions::from(&config).k8s,
    )
    .expect("valid k8s settings");
    assert_eq!(settings.me_address(), "10.0.0.7:1051");
    assert_eq!(settings.namespace, "ringlimit");
    assert_eq!(
        settings.label_selector,
        "kubernetes.io/service-name=ringlimit"
    );
}

// --- Kubernetes, the etcd and TLS variants (deploy/etcd-discovery, deploy/tls) ---

/// The kustomization at `path` (checked to be one) and its resources.
fn kustomization(path: &str) -> (Value, Vec<String>) {
    let kustomization = yaml(path);
    assert_eq!(kustomization["kind"].as_str(), Some("Kustomization"));
    let resources = kustomization["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(as_string)
        .collect();
    (kustomization, resources)
}

/// A variant's kustomization, checked to build on the base (a sibling) with one Deployment patch.
fn variant_kustomization(dir: &str) -> Value {
    let (kustomization, resources) = kustomization(&format!("{dir}/kustomization.yaml"));
    assert_eq!(resources, ["../kubernetes"], "the base, as a sibling");
    let patch_paths: Vec<String> = kustomization["patches"]
        .as_sequence()
        .expect("patches")
        .iter()
        .filter_map(|p| p["path"].as_str().map(str::to_string))
        .collect();
    assert_eq!(patch_paths, ["deployment-patch.yaml"]);
    kustomization
}

/// A variant's Deployment patch applied to the base: the base's container, the patch's, and the
/// merged env list (checked to patch the same Deployment and container).
struct PatchedContainer {
    base: Value,
    patch: Value,
    pod: Value,
    env: Vec<Value>,
}

fn patched_container(dir: &str) -> PatchedContainer {
    let patch = yaml(&format!("{dir}/deployment-patch.yaml"));
    let objects = objects();
    let base = workload(&objects);
    assert_eq!(patch["kind"], base["kind"]);
    assert_eq!(patch["metadata"]["name"], base["metadata"]["name"]);
    let base_container = base["spec"]["template"]["spec"]["containers"][0].clone();
    let pod = patch["spec"]["template"]["spec"].clone();
    let container = pod["containers"][0].clone();
    assert_eq!(container["name"], base_container["name"]);
    let env = merge_env(
        base_container["env"].as_sequence().expect("base env"),
        container["env"].as_sequence().expect("patch env"),
    );
    PatchedContainer {
        base: base_container,
        patch: container,
        pod,
        env,
    }
}

impl PatchedContainer {
    /// The merged environment: plain values and downward-API fields.
    fn values_and_fields(&self) -> (Pairs, Pairs) {
        let mut merged = serde_norway::Mapping::new();
        merged.insert(Value::from("env"), Value::Sequence(self.env.clone()));
        container_env(&Value::Mapping(merged))
    }

    /// The container port of the base named `name`.
    fn base_port(&self, name: &str) -> Option<u64> {
        self.base["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
    }
}

/// The `GUBER_*` variables of an environment as `ringlimit serve` reads them (each checked to be a
/// variable of the configuration; `$(POD_IP)` and `$(POD_NAMESPACE)` given sample values).
fn serve_config(values: &Pairs, fields: &Pairs) -> ringlimit::config::ServerConfig {
    let variables = config_variables();
    let flag = |name: &str| {
        variables
            .iter()
            .find(|(env, _)| env == name)
            .map(|(_, long)| long.clone())
    };
    let mut args: Vec<String> = Vec::new();
    for (name, value) in values.iter().filter(|(name, _)| name.starts_with("GUBER_")) {
        let long = flag(name).unwrap_or_else(|| panic!("{name} is not a ringlimit variable"));
        let value = value
            .replace("$(POD_IP)", "10.0.0.7")
            .replace("$(POD_NAMESPACE)", "ringlimit");
        args.push(format!("--{long}={value}"));
    }
    for (name, _) in fields.iter().filter(|(name, _)| name.starts_with("GUBER_")) {
        assert!(flag(name).is_some(), "{name} is not a ringlimit variable");
    }
    ringlimit::config::server_config_from_args(args).expect("a valid configuration")
}

#[test]
fn the_etcd_discovery_variant_patches_the_base_into_a_valid_etcd_configuration() {
    const VARIANT: &str = "deploy/etcd-discovery";
    let kustomization = variant_kustomization(VARIANT);
    // The headless Service served DNS discovery only; the variant deletes the base's.
    let deleted: Vec<Value> = kustomization["patches"]
        .as_sequence()
        .expect("patches")
        .iter()
        .filter_map(|p| p["patch"].as_str())
        .map(|text| serde_norway::from_str(text).expect("an inline patch is YAML"))
        .collect();
    let objects = objects();
    let headless = of_kind(&objects, &["Service"])
        .into_iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("the base's headless Service");
    assert!(
        deleted
            .iter()
            .any(|d| d["$patch"].as_str() == Some("delete")
                && d["kind"].as_str() == Some("Service")
                && d["metadata"]["name"] == headless["metadata"]["name"]),
        "the headless Service is deleted: {deleted:?}"
    );

    // The patched Deployment: the base's, with etcd discovery's variables.
    let patched = patched_container(VARIANT);
    let (values, fields) = patched.values_and_fields();
    assert_eq!(env(&values, "GUBER_PEER_DISCOVERY_TYPE"), Some("etcd"));
    assert!(
        values
            .iter()
            .chain(&fields)
            .all(|(name, _)| !name.starts_with("GUBER_DNS_")),
        "no DNS settings left"
    );
    // A node registers its advertise address: the pod IP and the gRPC port.
    let grpc_port = patched.base_port("grpc").expect("a grpc port");
    assert_eq!(
        env(&values, "GUBER_ADVERTISE_ADDRESS"),
        Some(format!("$(POD_IP):{grpc_port}").as_str())
    );

    // The environment is a valid etcd configuration of `ringlimit serve`.
    let config = serve_config(&values, &fields);
    let discovery = ringlimit::peers::discovery::DiscoveryOptions::from(&config);
    assert!(matches!(
        discovery.mechanism,
        ringlimit::peers::discovery::Mechanism::Etcd
    ));
    assert!(
        !discovery.etcd.endpoints.is_empty()
            && discovery.etcd.endpoints.iter().all(|e| e.contains(':')),
        "endpoints with ports: {:?}",
        discovery.etcd.endpoints
    );
    assert!(discovery.etcd.key_prefix.ends_with('/'));
    // A crashed node leaves the others' rings within the lease TTL.
    assert!(discovery.etcd.lease_ttl <= std::time::Duration::from_secs(30));
}

#[test]
fn the_tls_variant_mounts_its_certificates_requires_the_peer_secret_and_probes_over_https() {
    const VARIANT: &str = "deploy/tls";
    variant_kustomization(VARIANT);
    let patched = patched_container(VARIANT);
    let container = &patched.patch;

    // The certificates come from the Secret `ringlimit-tls`, mounted read-only where the
    // variables point.
    let volume = &patched.pod["volumes"][0];
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("ringlimit-tls")
    );
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the Secret is mounted");
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let directory = mount["mountPath"].as_str().expect("a mount path");
    let (values, fields) = patched.values_and_fields();
    for (name, file) in [
        ("GUBER_TLS_CERT", "tls.crt"),
        ("GUBER_TLS_KEY", "tls.key"),
        ("GUBER_TLS_CA", "ca.crt"),
    ] {
        assert_eq!(
            env(&values, name),
            Some(format!("{directory}/{file}").as_str()),
            "{name}"
        );
    }
    // The peer plane needs a client certificate, and the peer secret is required, not optional.
    assert_eq!(env(&values, "GUBER_TLS_CLIENT_AUTH"), Some("request"));
    let secret = patched
        .env
        .iter()
        .find(|e| e["name"].as_str() == Some("GUBER_PEER_SECRET"))
        .expect("GUBER_PEER_SECRET");
    assert_eq!(
        secret["valueFrom"]["secretKeyRef"]["optional"].as_bool(),
        Some(false)
    );

    // The kubelet's gRPC probe speaks plaintext only: readiness moves to /readyz over HTTPS
    // (the patch removes the base's gRPC probe), liveness to HTTPS.
    assert!(
        patched.base["readinessProbe"]["grpc"].is_mapping(),
        "the base probes gRPC"
    );
    let readiness = &container["readinessProbe"];
    assert!(
        readiness["grpc"].is_null()
            && readiness
                .as_mapping()
                .is_some_and(|m| m.contains_key("grpc")),
        "the patch deletes the gRPC probe (grpc: null)"
    );
    assert_eq!(readiness["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(readiness["httpGet"]["scheme"].as_str(), Some("HTTPS"));
    assert_eq!(
        container["livenessProbe"]["httpGet"]["scheme"].as_str(),
        Some("HTTPS")
    );
    for probe in [
        &readiness["httpGet"],
        &container["livenessProbe"]["httpGet"],
    ] {
        let port = probe["port"].as_str().expect("a named port");
        assert!(
            patched.base_port(port).is_some(),
            "{port} is a port of the base"
        );
    }

    // The environment is a valid configuration of `ringlimit serve`.
    let config = serve_config(&values, &fields);
    assert_eq!(
        config.tls_cert.as_deref(),
        Some("/etc/ringlimit/tls/tls.crt")
    );
}

// --- Kubernetes: the peer secret and the optional overlays (monitoring, restricted) ---

/// The documents of one YAML file under deploy/kubernetes.
fn kubernetes_documents(path: &str) -> Vec<Value> {
    let text = read(&format!("{KUBERNETES}/{path}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            <Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
        })
        .filter(|document| !document.is_null())
        .collect()
}

/// An overlay's kustomization: it builds on the base (`../`) and adds `extra`.
fn assert_overlay(dir: &str, extra: &str) {
    let (_, resources) = kustomization(&format!("{KUBERNETES}/{dir}/kustomization.yaml"));
    assert_eq!(resources, ["../", extra], "{dir}");
    assert!(root().join(KUBERNETES).join(dir).join(extra).is_file());
}

#[test]
fn the_peer_secret_comes_from_an_optional_secret() {
    let objects = objects();
    let container = &workload(&objects)["spec"]["template"]["spec"]["containers"][0];
    let var = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|var| var["name"].as_str() == Some("GUBER_PEER_SECRET"))
        .expect("GUBER_PEER_SECRET is set from a Secret");
    let reference = &var["valueFrom"]["secretKeyRef"];
    assert_eq!(reference["name"].as_str(), Some("ringlimit-peer-secret"));
    assert_eq!(reference["key"].as_str(), Some("secret"));
    assert_eq!(
        reference["optional"].as_bool(),
        Some(true),
        "a cluster without the Secret still starts (and warns)"
    );
    let text = read(&format!("{KUBERNETES}/deployment.yaml"));
    assert!(
        text.contains("kubectl create secret generic ringlimit-peer-secret"),
        "the manifest says how to create it"
    );
}

#[test]
fn the_monitoring_overlay_scrapes_each_node_once_through_the_client_service() {
    assert_overlay("monitoring", "servicemonitor.yaml");
    let monitors = kubernetes_documents("monitoring/servicemonitor.yaml");
    assert_eq!(monitors.len(), 1);
    let monitor = &monitors[0];
    assert_eq!(monitor["kind"].as_str(), Some("ServiceMonitor"));
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let endpoints = monitor["spec"]["endpoints"]
        .as_sequence()
        .expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["path"].as_str(), Some("/metrics"));
    let port = endpoints[0]["port"].as_str().expect("a named port");
    // The Services the monitor selects that have that port: exactly the client Service.
    let objects = objects();
    let scraped: Vec<&str> = of_kind(&objects, &["Service"])
        .into_iter()
        .filter(|service| {
            selects(
                &monitor["spec"]["selector"]["matchLabels"],
                &service["metadata"]["labels"],
            )
        })
        .filter(|service| {
            service["spec"]["ports"]
                .as_sequence()
                .is_some_and(|ports| ports.iter().any(|p| p["name"].as_str() == Some(port)))
        })
        .map(|service| service["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(scraped, ["ringlimit"], "each node is scraped once");
    let service = of_kind(&objects, &["Service"])
        .into_iter()
        .find(|service| service["metadata"]["name"].as_str() == Some("ringlimit"))
        .unwrap();
    let target = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(port))
        .unwrap()["targetPort"]
        .clone();
    let container = &workload(&objects)["spec"]["template"]["spec"]["containers"][0];
    let (values, _) = container_env(container);
    let http = values
        .iter()
        .find(|(name, _)| name == "GUBER_HTTP_ADDRESS")
        .map(|(_, value)| value.clone())
        .expect("GUBER_HTTP_ADDRESS");
    let container_port = container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == target)
        .expect("the Service's target port is a container port")["containerPort"]
        .as_u64()
        .unwrap();
    assert!(
        http.ends_with(&format!(":{container_port}")),
        "/metrics is served on the HTTP listener ({http})"
    );
}

#[test]
fn the_restricted_overlay_admits_the_nodes_and_labelled_clients_only() {
    assert_overlay("restricted", "network-policy.yaml");
    let policies = kubernetes_documents("restricted/network-policy.yaml");
    assert_eq!(policies.len(), 1);
    let policy = &policies[0];
    assert_eq!(policy["kind"].as_str(), Some("NetworkPolicy"));
    let objects = objects();
    let pod_labels = &workload(&objects)["spec"]["template"]["metadata"]["labels"];
    assert!(
        selects(&policy["spec"]["podSelector"]["matchLabels"], pod_labels),
        "the policy applies to the nodes"
    );
    assert_eq!(
        policy["spec"]["policyTypes"].as_sequence().unwrap(),
        &vec![Value::from("Ingress")]
    );
    // (who, ports): every rule admits one kind of caller on the ports it needs.
    let rules: Vec<(Value, Vec<u64>)> = policy["spec"]["ingress"]
        .as_sequence()
        .expect("ingress rules")
        .iter()
        .map(|rule| {
            let from = rule["from"].as_sequence().expect("from");
            assert_eq!(from.len(), 1);
            let ports = rule["ports"]
                .as_sequence()
                .expect("ports")
                .iter()
                .map(|p| p["port"].as_u64().expect("a numeric port"))
                .collect();
            (from[0].clone(), ports)
        })
        .collect();
    let peers = rules
        .iter()
        .find(|(from, _)| selects(&from["podSelector"]["matchLabels"], pod_labels))
        .expect("a rule for the nodes themselves");
    assert_eq!(peers.1, [1051], "peers call each other on gRPC only");
    assert!(
        peers.0["namespaceSelector"].is_null(),
        "peers: same namespace"
    );
    let label = |name: &str| {
        rules
            .iter()
            .find(|(from, _)| from["podSelector"]["matchLabels"][name].as_str() == Some("true"))
            .unwrap_or_else(|| panic!("a rule for pods labelled {name}"))
    };
    assert_eq!(label("ringlimit.io/client").1, [1051, 1050]);
    assert_eq!(label("ringlimit.io/scraper").1, [1050]);
    assert_eq!(rules.len(), 3, "nobody else");
}
