//! A real single-member etcd for integration tests: free loopback ports, a temporary data dir, and
//! an RAII guard that kills it and removes the dir. Requires the `etcd` binary (CI installs it with
//! `scripts/install-deps`); a missing binary fails the test rather than skipping it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, GetOptions};

/// How often bounded waits poll.
pub const POLL: Duration = Duration::from_millis(50);

/// A running (or stopped) etcd with a fixed data dir and ports.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
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
             run scripts/install-deps (installs Debian's etcd-server)"
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
        let mut etcd = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("a temporary data dir"),
            client_port: free_port(),
            peer_port: free_port(),
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
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log file");
        let child = Command::new(etcd_binary())
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
                let mut client = Client::connect([self.endpoint()], None).await?;
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

    /// A client of this etcd.
    pub async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None)
            .await
            .expect("etcd client connects")
    }

    /// The keys under `prefix`, sorted (empty if etcd does not answer within a second).
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let get = async {
            let mut client = Client::connect([self.endpoint()], None).await?;
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

/// Polls `condition` every 50 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
