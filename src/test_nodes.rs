//! Nodes for the crate's own tests: real servers on loopback ports, started from command-line
//! flags like `ringlimit serve`, and a peer that accepts connections and never answers, for the
//! tests about what a node does while an owner is silent.

use crate::request::LimitKey;
use crate::server::{RunningServer, start};

/// A node on loopback ports in a static cluster whose only other peer accepts connections and
/// never answers (it stays silent while the returned listener lives), with `flags`.
pub(crate) async fn node_with_a_silent_peer(flags: &[&str]) -> (RunningServer, SilentPeer) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let address = listener.local_addr().expect("bound").to_string();
    let peers = format!("--peers={address}");
    let server = node(&[&["--peer-discovery-type=static", &peers], flags].concat()).await;
    (
        server,
        SilentPeer {
            address,
            _listener: listener,
        },
    )
}

/// A node on loopback ports, with `flags` on top of the defaults.
pub(crate) async fn node(flags: &[&str]) -> RunningServer {
    let loopback = ["--grpc-address=127.0.0.1:0", "--http-address=127.0.0.1:0"];
    let config = crate::config::server_config_from_args(loopback.iter().chain(flags).copied())
        .expect("valid configuration");
    start(&config).await.expect("the node starts")
}

/// A peer that accepts connections and never answers, while this lives.
pub(crate) struct SilentPeer {
    /// The silent peer's address, a member of the node's static peer list.
    pub(crate) address: String,
    _listener: std::net::TcpListener,
}

impl SilentPeer {
    /// The first key `candidates` makes (of 0, 1, 2, ...) that the silent peer owns and that
    /// satisfies `also`.
    pub(crate) fn owns_first(
        &self,
        server: &RunningServer,
        candidates: impl Fn(u32) -> LimitKey,
        also: impl Fn(&LimitKey) -> bool,
    ) -> LimitKey {
        let router = server.node().router();
        (0..10_000)
            .map(candidates)
            .find(|key| router.owner_of(key).as_deref() == Some(self.address.as_str()) && also(key))
            .expect("a key the silent peer owns")
    }
}
