//! TLS on both ports and between peers: real servers on loopback, certificates made here with
//! rcgen in a temporary directory. Clients are tonic's own TLS client (an independent rustls
//! setup), reqwest for the gateway, and raw tokio-rustls to see which certificate a port presents.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Cluster, OVER, UNDER, start_node, token};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use ringlimit::config::server_config_from_args;
use ringlimit::proto::{self, peers_v1_client::PeersV1Client, v1_client::V1Client};
use ringlimit::server::RunningServer;
use ringlimit::tls::connector::{ClientTlsOptions, TlsConnector, client_config};
use ringlimit::tls::{TlsConfig, TlsMinVersion, check_config};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for localhost and 127.0.0.1, usable to serve and as a client certificate.
    fn leaf(&self, name: &str) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A node's TLS files in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(ca: &Ca, leaf: &Leaf) -> Self {
        let files = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        files.write("ca.pem", &ca.pem);
        files.write("cert.pem", &leaf.cert);
        files.write("key.pem", &leaf.key);
        files
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Replaces `name` atomically (write a sibling, then rename), as a certificate manager would.
    fn write(&self, name: &str, contents: &str) {
        let temporary = self.dir.path().join(format!(".{name}.new"));
        std::fs::write(&temporary, contents).expect("write file");
        std::fs::rename(&temporary, self.dir.path().join(name)).expect("rename file");
    }

    /// Flags for a node serving `cert.pem` with `ca.pem` and client-auth `mode`.
    fn flags(&self, mode: &str) -> Vec<String> {
        vec![
            format!("--tls-cert={}", self.path("cert.pem")),
            format!("--tls-key={}", self.path("key.pem")),
            format!("--tls-ca={}", self.path("ca.pem")),
            format!("--tls-client-auth={mode}"),
        ]
    }
}

async fn start_tls_node(flags: &[String]) -> RunningServer {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_node(&flags).await
}

/// A channel with tonic's own TLS client, verifying the server against `ca` as `localhost`.
async fn tls_channel(
    address: impl std::fmt::Display,
    ca: &str,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert, &leaf.key));
    }
    Endpoint::from_shared(format!("https://{address}"))?
        .tls_config(tls)?
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// One GetRateLimits call over a fresh TLS connection; the error as text (a refused handshake
/// fails either the connect or, under TLS 1.3, the first call).
async fn call_over_tls(
    address: impl std::fmt::Display,
    ca: &str,
    identity: Option<&Leaf>,
    key: &str,
) -> Result<proto::RateLimitResp, String> {
    let channel = tls_channel(address, ca, identity)
        .await
        .map_err(|error| format!("connect: {error:?}"))?;
    let mut client = V1Client::new(channel);
    let response = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token(key, 1, 10, 60_000)],
        })
        .await
        .map_err(|status| format!("call: {status:?}"))?;
    response
        .into_inner()
        .responses
        .pop()
        .ok_or_else(|| "no answer".to_string())
}

/// One PeersV1 call over a fresh TLS connection: the gRPC status or the connection error.
async fn call_peers_v1(
    address: impl std::fmt::Display,
    ca: &str,
    identity: Option<&Leaf>,
) -> Result<(), (Option<tonic::Code>, String)> {
    let channel = tls_channel(address, ca, identity)
        .await
        .map_err(|error| (None, format!("connect: {error:?}")))?;
    PeersV1Client::new(channel)
        .get_peer_rate_limits(proto::GetPeerRateLimitsReq {
            requests: vec![token("peer-call", 1, 10, 60_000)],
        })
        .await
        .map(|_| ())
        .map_err(|status| (Some(status.code()), status.message().to_string()))
}

/// One call to each of ringlimit's own peer services over `channel`: the service and the outcome.
async fn ringlimit_peer_services(
    channel: Channel,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    use ringlimit::admin::proto::{LocalStatsReq, admin_client::AdminClient};
    use ringlimit::handoff::pb::{TransferReq, handoff_client::HandoffClient};
    use ringlimit::proto::ringlimit_v1::{AllowReq, allow_v1_client::AllowV1Client};
    vec![
        (
            "Handoff",
            HandoffClient::new(channel.clone())
                .transfer(TransferReq::default())
                .await
                .map(|_| ()),
        ),
        (
            "Admin",
            AdminClient::new(channel.clone())
                .local_stats(LocalStatsReq::default())
                .await
                .map(|_| ()),
        ),
        (
            "AllowV1",
            AllowV1Client::new(channel)
                .allow(AllowReq::default())
                .await
                .map(|_| ()),
        ),
    ]
}

/// A rustls client configuration trusting `ca` (or nothing, with `insecure`).
fn rustls_client(ca: Option<&str>, insecure: bool, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let roots = ca.map(|pem| {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.expect("CA PEM")).expect("CA certificate");
        }
        roots
    });
    client_config(ClientTlsOptions {
        roots,
        identity: None,
        insecure_skip_verify: insecure,
        min_version: TlsMinVersion::Tls12,
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
    })
    .expect("client configuration")
}

/// The certificate a TLS port presents (its first certificate), or `None` if no handshake.
async fn presented_certificate(address: &str) -> Option<CertificateDer<'static>> {
    let config = Arc::new(rustls_client(None, true, &[b"h2"]));
    let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
    let name = ServerName::try_from("localhost").ok()?;
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .ok()?
    .ok()?;
    stream.get_ref().1.peer_certificates()?.first().cloned()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("certificate PEM")
}

#[tokio::test]
async fn grpc_over_tls_with_a_good_ca() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf("node");
    let files = Files::new(&ca, &leaf);
    let node = start_tls_node(&files.flags("none")).await;

    let answer = call_over_tls(node.grpc_address(), &ca.pem, None, "grpc-tls")
        .await
        .expect("TLS call succeeds");
    assert_eq!(answer.status, UNDER);
    assert_eq!(answer.remaining, 9);

    // A client that trusts another CA does not get through.
    let other = Ca::new("other CA");
    let refused = call_over_tls(node.grpc_address(), &other.pem, None, "grpc-tls").await;
    assert!(refused.is_err(), "{refused:?}");
    // Plaintext is refused on a TLS port.
    let plaintext = Endpoint::from_shared(format!("http://{}", node.grpc_address()))
        .unwrap()
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    let plaintext_refused = match plaintext {
        Ok(channel) => V1Client::new(channel)
            .health_check(proto::HealthCheckReq {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(plaintext_refused);
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn http_gateway_over_tls() {
    let ca = Ca::new("test CA");
    let files = Files::new(&ca, &ca.leaf("node"));
    let node = start_tls_node(&files.flags("none")).await;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(rustls_client(Some(&ca.pem), false, &[b"http/1.1"]))
        .build()
        .expect("HTTPS client");
    let base = format!("https://localhost:{}", node.http_address().port());

    let health = client
        .get(format!("{base}/v1/HealthCheck"))
        .send()
        .await
        .expect("HTTPS health check");
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.expect("JSON");
    assert_eq!(body["status"], "healthy");

    let body = r#"{"requests":[{"name":"test","unique_key":"https","hits":"3","limit":"5","duration":"60000"}]}"#;
    for expected_remaining in ["2", "0"] {
        let response = client
            .post(format!("{base}/v1/GetRateLimits"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("HTTPS GetRateLimits");
        assert_eq!(response.status(), 200);
        let value: serde_json::Value = response.json().await.expect("JSON");
        let item = &value["responses"][0];
        if expected_remaining == "2" {
            assert_eq!(item["status"], "UNDER_LIMIT", "{value}");
            assert_eq!(item["remaining"], expected_remaining, "{value}");
        } else {
            assert_eq!(item["status"], "OVER_LIMIT", "{value}");
        }
    }

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/v1/HealthCheck", node.http_address()))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn mtls_accepts_a_good_client_and_refuses_a_missing_or_wrong_certificate() {
    let ca = Ca::new("cluster CA");
    let files = Files::new(&ca, &ca.leaf("node"));
    let node = start_tls_node(&files.flags("require-and-verify")).await;
    let address = node.grpc_address();

    let good = ca.leaf("client");
    let answer = call_over_tls(address, &ca.pem, Some(&good), "mtls")
        .await
        .expect("a client with a good certificate is served");
    assert_eq!(answer.status, UNDER);

    let missing = call_over_tls(address, &ca.pem, None, "mtls").await;
    assert!(missing.is_err(), "no client certificate: {missing:?}");

    let stranger = Ca::new("stranger CA").leaf("client");
    let wrong = call_over_tls(address, &ca.pem, Some(&stranger), "mtls").await;
    assert!(wrong.is_err(), "certificate from another CA: {wrong:?}");

    // The refused attempts did not count: the next good call sees the second hit only.
    let answer = call_over_tls(address, &ca.pem, Some(&good), "mtls")
        .await
        .expect("good client again");
    assert_eq!(answer.remaining, 8);

    // The HTTP port requires the certificate too.
    let no_cert = reqwest::Client::builder()
        .use_preconfigured_tls(rustls_client(Some(&ca.pem), false, &[b"http/1.1"]))
        .build()
        .expect("HTTPS client")
        .get(format!(
            "https://localhost:{}/v1/HealthCheck",
            node.http_address().port()
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(no_cert.is_err(), "{no_cert:?}");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_cluster_whose_peers_talk_mtls_forwards_correctly() {
    let ca = Ca::new("cluster CA");
    let files = Files::new(&ca, &ca.leaf("peer"));
    // Client certificates and the peer secret together: every forward carries both.
    let mut flags = files.flags("require-and-verify");
    flags.push("--peer-secret=mtls-and-secret".to_string());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start(3, &flags).await;
    let client_leaf = ca.leaf("client");

    for owner in 0..3 {
        let key = cluster.key_owned_by(owner, "mtls-forward");
        let entry = (owner + 1) % 3;
        let other = (owner + 2) % 3;
        // Two hits through one non-owner, one through the other, one at the owner.
        let mut remaining = Vec::new();
        for via in [entry, entry, other, owner] {
            let answer = call_over_tls(cluster.address(via), &ca.pem, Some(&client_leaf), &key)
                .await
                .unwrap_or_else(|error| panic!("call via node {via} for owner {owner}: {error}"));
            assert_eq!(answer.error, "", "via node {via}");
            assert_eq!(answer.status, UNDER);
            if via != owner {
                assert_eq!(
                    answer.metadata.get("owner"),
                    Some(&cluster.address(owner)),
                    "forwarded to the owner"
                );
            }
            remaining.push(answer.remaining);
        }
        assert_eq!(remaining, vec![9, 8, 7, 6], "owner {owner}");
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_peer_without_a_client_certificate_cannot_call_peers_v1() {
    let ca = Ca::new("cluster CA");
    let files = Files::new(&ca, &ca.leaf("node"));
    let peer = ca.leaf("peer");

    // `request`: V1 serves clients without a certificate, PeersV1 refuses them.
    let node = start_tls_node(&files.flags("request")).await;
    let v1 = call_over_tls(node.grpc_address(), &ca.pem, None, "request-mode").await;
    assert!(v1.is_ok(), "V1 without a certificate: {v1:?}");
    let refused = call_peers_v1(node.grpc_address(), &ca.pem, None).await;
    match refused {
        Err((Some(code), message)) => {
            assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
            assert!(message.contains("client certificate"), "{message}");
        }
        other => panic!("PeersV1 without a certificate: {other:?}"),
    }
    call_peers_v1(node.grpc_address(), &ca.pem, Some(&peer))
        .await
        .expect("PeersV1 with a good certificate");
    // The rest of the peer plane is guarded the same way.
    let channel = tls_channel(node.grpc_address(), &ca.pem, None)
        .await
        .expect("connects without a certificate under `request`");
    for (service, status) in ringlimit_peer_services(channel).await {
        let status = status.expect_err(service);
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{service}: {status:?}"
        );
    }
    let channel = tls_channel(node.grpc_address(), &ca.pem, Some(&peer))
        .await
        .expect("connects with a certificate");
    for (service, status) in ringlimit_peer_services(channel).await {
        if let Err(status) = status {
            assert_ne!(
                status.code(),
                tonic::Code::Unauthenticated,
                "{service}: {status:?}"
            );
        }
    }
    // A certificate from another CA fails the handshake even under `request`.
    let stranger = Ca::new("stranger CA").leaf("peer");
    assert!(
        call_peers_v1(node.grpc_address(), &ca.pem, Some(&stranger))
            .await
            .is_err()
    );
    node.shutdown().await.expect("clean shutdown");

    // `require-and-verify`: the handshake itself fails.
    let node = start_tls_node(&files.flags("require-and-verify")).await;
    let refused = call_peers_v1(node.grpc_address(), &ca.pem, None).await;
    assert!(
        matches!(&refused, Err((code, _)) if *code != Some(tonic::Code::Ok)),
        "{refused:?}"
    );
    call_peers_v1(node.grpc_address(), &ca.pem, Some(&peer))
        .await
        .expect("PeersV1 with a good certificate");
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn tls_auto_starts_and_serves() {
    let node = start_node(&["--tls-auto"]).await;
    // The self-signed certificate verifies against nothing, so a verifying client is refused...
    let verifying = TlsConnector::fixed(rustls_client(None, false, &[b"h2"]), None);
    let refused = match Endpoint::from_shared(format!("http://{}", node.grpc_address()))
        .unwrap()
        .connect_with_connector(verifying)
        .await
    {
        Ok(channel) => V1Client::new(channel)
            .health_check(proto::HealthCheckReq {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(refused);
    // ...and a client that skips verification is served.
    let insecure = TlsConnector::fixed(rustls_client(None, true, &[b"h2"]), None);
    let channel = Endpoint::from_shared(format!("http://{}", node.grpc_address()))
        .unwrap()
        .connect_with_connector(insecure)
        .await
        .expect("TLS connects");
    let mut client = V1Client::new(channel);
    let answer = client
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token("auto", 11, 10, 60_000)],
        })
        .await
        .expect("call succeeds")
        .into_inner()
        .responses;
    assert_eq!(answer[0].status, OVER);

    let health = reqwest::Client::builder()
        .use_preconfigured_tls(rustls_client(None, true, &[b"http/1.1"]))
        .build()
        .expect("HTTPS client")
        .get(format!(
            "https://127.0.0.1:{}/v1/HealthCheck",
            node.http_address().port()
        ))
        .send()
        .await
        .expect("HTTPS health check");
    assert_eq!(health.status(), 200);
    let presented = presented_certificate(&node.http_address().to_string())
        .await
        .expect("a certificate is presented");
    assert!(!presented.is_empty());
    node.shutdown().await.expect("clean shutdown");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// Polls (at most `limit`, every 50 ms) until both ports present `expected`.
async fn wait_for_certificate(addresses: &[&str], expected: &CertificateDer<'_>, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut all = true;
        for address in addresses {
            if presented_certificate(address).await.as_ref() != Some(expected) {
                all = false;
            }
        }
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addresses:?} did not present the expected certificate within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificates_without_a_restart() {
    let ca = Ca::new("reload CA");
    let first = ca.leaf("first");
    let second = ca.leaf("second");
    let files = Files::new(&ca, &first);
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .env("GUBER_GRPC_ADDRESS", &grpc)
        .env("GUBER_HTTP_ADDRESS", &http)
        .env("GUBER_TLS_CERT", files.path("cert.pem"))
        .env("GUBER_TLS_KEY", files.path("key.pem"))
        .env("GUBER_TLS_CA", files.path("ca.pem"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut node = KillOnDrop(child);
    let pid = node.0.id().to_string();

    wait_for_certificate(&[&grpc, &http], &der(&first.cert), Duration::from_secs(30)).await;
    // A connection made before the reload keeps working after it.
    let before = tls_channel(&grpc, &ca.pem, None)
        .await
        .expect("connects before the reload");

    files.write("key.pem", &second.key);
    files.write("cert.pem", &second.cert);
    let status = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    wait_for_certificate(&[&grpc, &http], &der(&second.cert), Duration::from_secs(10)).await;

    let answer = V1Client::new(before)
        .get_rate_limits(proto::GetRateLimitsReq {
            requests: vec![token("reload", 1, 5, 60_000)],
        })
        .await
        .expect("the old connection still serves");
    assert_eq!(answer.into_inner().responses[0].remaining, 4);
    let answer = call_over_tls(&grpc, &ca.pem, None, "reload-new-connection")
        .await
        .expect("a new connection is served");
    assert_eq!(answer.remaining, 9);

    // A broken file on reload keeps the current certificate.
    files.write("cert.pem", "not a certificate");
    let status = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    wait_for_certificate(&[&grpc], &der(&second.cert), Duration::from_secs(5)).await;
    assert!(
        node.0.try_wait().expect("status").is_none(),
        "the node keeps running"
    );
}

/// Kills the spawned node when the test ends, whether it passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tls_error(args: &[String]) -> String {
    let mut all = vec![
        "--grpc-address=127.0.0.1:0".to_string(),
        "--http-address=127.0.0.1:0".to_string(),
    ];
    all.extend_from_slice(args);
    let config = server_config_from_args(all).expect("the flags parse");
    let error = check_config(&TlsConfig::from(&config)).expect_err("the TLS settings are refused");
    error.to_string()
}

fn assert_one_line_naming(error: &str, variable: &str) {
    assert!(
        error.starts_with("invalid configuration: ") && error.contains(variable),
        "expected an error naming {variable}: {error}"
    );
    assert!(!error.contains('\n'), "{error}");
}

#[tokio::test]
async fn bad_tls_settings_fail_with_one_line_naming_the_variable() {
    let ca = Ca::new("config CA");
    let leaf = ca.leaf("node");
    let files = Files::new(&ca, &leaf);
    let cert = format!("--tls-cert={}", files.path("cert.pem"));
    let key = format!("--tls-key={}", files.path("key.pem"));
    let ca_flag = format!("--tls-ca={}", files.path("ca.pem"));

    assert_one_line_naming(&tls_error(std::slice::from_ref(&key)), "GUBER_TLS_KEY");
    assert_one_line_naming(&tls_error(std::slice::from_ref(&cert)), "GUBER_TLS_CERT");
    assert_one_line_naming(&tls_error(std::slice::from_ref(&ca_flag)), "GUBER_TLS_CA");
    assert_one_line_naming(
        &tls_error(&["--tls-auto".into(), cert.clone(), key.clone()]),
        "GUBER_TLS_AUTO",
    );
    assert_one_line_naming(
        &tls_error(&[
            cert.clone(),
            key.clone(),
            "--tls-client-auth=require-and-verify".into(),
        ]),
        "GUBER_TLS_CLIENT_AUTH",
    );
    assert_one_line_naming(
        &tls_error(&[
            cert.clone(),
            key.clone(),
            format!("--tls-client-auth-cert={}", files.path("cert.pem")),
        ]),
        "GUBER_TLS_CLIENT_AUTH_CERT",
    );

    // Unreadable, empty and mismatched files name the variable and the file.
    let missing = files.path("missing.pem");
    let error = tls_error(&[format!("--tls-cert={missing}"), key.clone()]);
    assert_one_line_naming(&error, "GUBER_TLS_CERT");
    assert!(error.contains(&missing), "{error}");
    files.write("empty.pem", "");
    let error = tls_error(&[
        cert.clone(),
        format!("--tls-key={}", files.path("empty.pem")),
    ]);
    assert_one_line_naming(&error, "GUBER_TLS_KEY");
    assert!(error.contains("empty.pem"), "{error}");
    files.write("other-key.pem", &ca.leaf("other").key);
    let error = tls_error(&[
        cert.clone(),
        format!("--tls-key={}", files.path("other-key.pem")),
    ]);
    assert_one_line_naming(&error, "GUBER_TLS_KEY");
    let error = tls_error(&[
        cert.clone(),
        key.clone(),
        format!("--tls-ca={}", files.path("key.pem")),
    ]);
    assert_one_line_naming(&error, "GUBER_TLS_CA");

    // The server refuses to start with the same error.
    let config = server_config_from_args([
        "--grpc-address=127.0.0.1:0".to_string(),
        "--http-address=127.0.0.1:0".to_string(),
        key.clone(),
    ])
    .expect("the flags parse");
    let error = ringlimit::server::start(&config)
        .await
        .err()
        .expect("the server does not start");
    assert_one_line_naming(&error.to_string(), "GUBER_TLS_KEY");
}

#[test]
fn the_binary_reports_bad_tls_settings_as_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.pem");
    for (variables, named) in [
        (
            vec![("GUBER_TLS_KEY", Path::new("/dev/null"))],
            "GUBER_TLS_KEY",
        ),
        (
            vec![
                ("GUBER_TLS_CERT", missing.as_path()),
                ("GUBER_TLS_KEY", missing.as_path()),
            ],
            "GUBER_TLS_CERT",
        ),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringlimit"));
        command
            .env("GUBER_GRPC_ADDRESS", "127.0.0.1:0")
            .env("GUBER_HTTP_ADDRESS", "127.0.0.1:0")
            .stdin(Stdio::null());
        for (variable, value) in &variables {
            command.env(variable, value);
        }
        let output = command.output().expect("the binary runs");
        assert_eq!(output.status.code(), Some(2), "{variables:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<_> = stderr.lines().filter(|line| !line.is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(named), "{stderr}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_ringlimit"))
        .env("GUBER_TLS_CLIENT_AUTH", "sometimes")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GUBER_TLS_CLIENT_AUTH"));
}

/// Runs the binary with `args` (bounded to 30 s) and returns (exit code, stdout, stderr).
async fn run_client(args: &[String]) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ringlimit"));
    command
        .args(args)
        .env_remove("GUBER_TLS_CA")
        .env_remove("GUBER_TLS_CERT")
        .env_remove("GUBER_TLS_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("the client finishes in time")
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_subcommands_talk_to_an_mtls_node() {
    let ca = Ca::new("operator CA");
    let files = Files::new(&ca, &ca.leaf("node"));
    let operator = ca.leaf("operator");
    files.write("operator.pem", &operator.cert);
    files.write("operator-key.pem", &operator.key);
    let node = start_tls_node(&files.flags("require-and-verify")).await;
    let tls_flags = vec![
        format!("--tls-ca={}", files.path("ca.pem")),
        format!("--tls-cert={}", files.path("operator.pem")),
        format!("--tls-key={}", files.path("operator-key.pem")),
    ];
    let grpc = node.grpc_address().to_string();
    let http = node.http_address().to_string();

    let mut check = vec![
        "check".to_string(),
        format!("--address={grpc}"),
        "--name=test".into(),
        "--key=cli".into(),
        "--limit=5".into(),
        "--duration=1m".into(),
    ];
    check.extend(tls_flags.clone());
    let (code, stdout, stderr) = run_client(&check).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("UNDER_LIMIT remaining 4/5"), "{stdout}");
    // Without the client certificate the node refuses.
    let (code, _, stderr) = run_client(&check[..check.len() - 2]).await;
    assert_eq!(code, Some(1), "{stderr}");

    let mut healthcheck = vec!["healthcheck".to_string(), format!("--url=https://{http}")];
    healthcheck.extend(tls_flags.clone());
    let (code, stdout, stderr) = run_client(&healthcheck).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("healthy"), "{stdout}");
    // https:// without a CA is a clear error, not a hang.
    let (code, stdout, _) =
        run_client(&["healthcheck".to_string(), format!("--url=https://{http}")]).await;
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("--tls-ca"), "{stdout}");

    for protocol in ["grpc", "http"] {
        let mut bench = vec![
            "bench".to_string(),
            "--warmup=0s".into(),
            "--calls=50".into(),
            "--json".into(),
        ];
        if protocol == "http" {
            bench.push("--http".into());
            bench.push(format!("--target=http://{http}"));
        } else {
            bench.push(format!("--target={grpc}"));
        }
        bench.extend(tls_flags.clone());
        let (code, stdout, stderr) = run_client(&bench).await;
        assert_eq!(code, Some(0), "{protocol}: {stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
        assert_eq!(report["calls"], 50, "{protocol}: {report}");
        assert_eq!(
            report["errors"].as_object().map(|errors| errors.len()),
            Some(0),
            "{protocol}: {report}"
        );
    }
    node.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let ca = Ca::new("version CA");
    let files = Files::new(&ca, &ca.leaf("node"));
    let mut flags = files.flags("none");
    flags.push("--tls-min-version=1.3".into());
    let node = start_tls_node(&flags).await;
    let handshake = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&ca.pem)).expect("CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let address = node.grpc_address();
        async move {
            let tcp = tokio::net::TcpStream::connect(address).await.expect("TCP");
            let name = ServerName::try_from("localhost").expect("name");
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map(|stream| stream.get_ref().1.protocol_version())
        }
    };
    static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    assert!(handshake(&TLS12_ONLY).await.is_err());
    assert_eq!(
        handshake(&TLS13_ONLY).await.expect("TLS 1.3"),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    node.shutdown().await.expect("clean shutdown");
}

#[test]
fn empty_tls_variables_mean_unset() {
    let config = {
        // Empty values, as compose files often leave them, parse as the defaults.
        let config = server_config_from_args([
            "--tls-client-auth=",
            "--tls-min-version=",
            "--tls-cert=",
            "--tls-key=",
        ])
        .expect("empty values parse");
        check_config(&TlsConfig::from(&config)).expect("TLS stays off");
        config
    };
    assert_eq!(config.tls_client_auth, ringlimit::tls::ClientAuth::None);
    assert_eq!(config.tls_min_version, TlsMinVersion::Tls12);
}

/// A server TLS configuration with a self-signed certificate, and a loopback listener (with its
/// address) for an acceptor to take.
async fn self_signed_listener() -> (rustls::ServerConfig, tokio::net::TcpListener, String) {
    let identity = ringlimit::tls::auto::self_signed(&[]).expect("certificate");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![identity.certificate], identity.key)
    .expect("server configuration");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    (config, listener, address)
}

#[tokio::test]
async fn handshakes_in_progress_are_bounded_and_time_out() {
    use tokio_stream::StreamExt;

    let (config, listener, address) = self_signed_listener().await;
    let mut incoming = ringlimit::tls::acceptor::TlsIncoming::new(
        listener,
        Arc::new(arc_swap::ArcSwap::from_pointee(config)),
        Duration::from_secs(2),
        1,
    );

    // A client that connects and never says a word holds the only handshake slot...
    let silent = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    // (Connections are accepted in order, and the slot is taken before the next accept.)
    // ...so a real client is closed at once instead of queueing behind it.
    assert!(presented_certificate(&address).await.is_none());
    // Once the silent client's handshake times out, clients are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while presented_certificate(&address).await.is_none() {
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served = tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .expect("a completed handshake is handed over");
    assert!(matches!(served, Some(Ok(_))));
    drop(silent);
}

/// The handshake tasks belong to the acceptor: dropping it (as the servers do at shutdown) closes
/// a connection whose handshake is still in progress, instead of leaving it to the handshake
/// timeout in a detached task.
#[tokio::test]
async fn dropping_the_acceptor_cancels_its_handshakes() {
    use tokio::io::AsyncReadExt;

    let (config, listener, address) = self_signed_listener().await;
    let incoming = ringlimit::tls::acceptor::TlsIncoming::new(
        listener,
        Arc::new(arc_swap::ArcSwap::from_pointee(config)),
        Duration::from_secs(60),
        1,
    );
    let mut silent = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    // The silent client's handshake holds the only slot once a real client is turned away.
    assert!(presented_certificate(&address).await.is_none());
    drop(incoming);
    let mut buffer = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buffer))
        .await
        .expect("the handshake in progress was cancelled with the acceptor");
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "closed, not answered: {closed:?}"
    );
}
