//! A real single-member etcd for integration tests: free loopback ports, a temporary data dir, and
//! an RAII guard that kills it and removes the dir. Requires the `etcd` binary (CI installs it with
//! `scripts/install-deps --test`); a missing binary fails the test rather than skipping it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Certificate, Client, ConnectOptions, GetOptions, TlsOptions};

/// How often bounded waits poll.
pub const POLL: Duration = Duration::from_millis(50);

/// A running (or stopped) etcd with a fixed data dir and ports.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    tls: Option<TlsFiles>,
}

/// A CA and a server certificate for 127.0.0.1 signed by it (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server certificate (SAN IP:127.0.0.1).
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

/// Generates a CA and a server certificate in `dir` with the `openssl` command.
pub fn generate_tls(dir: &std::path::Path) -> TlsFiles {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!("openssl is needed for the TLS test (scripts/install-deps --test): {e}")
            });
        assert!(status.success(), "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ringlimit-test-ca",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extension file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

fn etcd_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "etcd is not installed (no `etcd` on PATH): these tests need a real etcd; \
             run scripts/install-deps --test (installs Debian's etcd-server)"
        )
    })
}

/// A prefix no other test uses.
pub fn unique_prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("/test-{name}-{}-{nanos}/", std::process::id())
}

impl Etcd {
    /// Starts etcd and waits (at most 15 s) until it answers.
    pub async fn start() -> Etcd {
        Self::start_with(false).await
    }

    /// Starts etcd serving clients over TLS only (certificates from [`generate_tls`]).
    pub async fn start_tls() -> Etcd {
        Self::start_with(true).await
    }

    /// The TLS files, for a TLS etcd.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    async fn start_with(tls: bool) -> Etcd {
        let dir = tempfile::tempdir().expect("a temporary data dir");
        let tls = tls.then(|| generate_tls(dir.path()));
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            tls,
        };
        etcd.spawn();
        etcd.wait_ready().await;
        etcd
    }

    /// `127.0.0.1:<client port>`, as ringlimit's `--etcd-endpoints` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let mut command = Command::new(etcd_binary());
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()));
        }
        let child = command
            .arg("--name=t")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let probe = async {
                let mut client = Client::connect([self.endpoint()], self.options()).await?;
                client.get("ready", None).await
            };
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not answer on {} within 15 s; log:\n{}",
                self.endpoint(),
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops etcd abruptly (SIGKILL); the data dir is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again with the same data dir and ports.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }

    fn options(&self) -> Option<ConnectOptions> {
        self.tls.as_ref().map(|tls| {
            let ca = std::fs::read(&tls.ca).expect("CA file");
            ConnectOptions::new()
                .with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(ca)))
        })
    }

    /// A client of this etcd.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], self.options())
            .await
            .expect("etcd client connects")
    }

    /// The keys under `prefix`, sorted (empty if etcd does not answer within a second).
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let get = async {
            let mut client = Client::connect([self.endpoint()], self.options()).await?;
            client
                .get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_keys_only()),
                )
                .await
        };
        match tokio::time::timeout(Duration::from_secs(1), get).await {
            Ok(Ok(response)) => {
                let mut keys: Vec<String> = response
                    .kvs()
                    .iter()
                    .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
                    .collect();
                keys.sort();
                keys
            }
            _ => Vec::new(),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        // The TempDir field removes the data dir.
    }
}

/// The bounded poll every test uses (see `common::eventually`).
pub use crate::common::eventually;
