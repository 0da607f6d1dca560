//! [`NatsCluster`]: a clustered JetStream hub of three real `nats-server`s on loopback, the
//! shape of a production hub (see the README's "Setting up the hub").
//!
//! ```no_run
//! # async fn demo() -> tributary_tests::Result<()> {
//! use tributary_tests::NatsCluster;
//! let mut hub = NatsCluster::start(3)?; // routes between all nodes, JetStream domain `hub`
//! let leaf = hub.leaf()?; // one remote listing every node's leafnode listener
//! let urls = hub.client_urls(); // what the uplink's `nats.urls` lists
//! let node = hub.stream_leader_node("TRIBUTARY").await?;
//! hub.kill(node)?;
//! hub.restart(node)?;
//! # Ok(()) }
//! ```
//!
//! Each node has a client, a cluster (route), a leafnode and a monitoring listener on free
//! loopback ports and its JetStream store in its own temp dir, kept across restarts. Nodes are
//! SIGKILLed when the cluster is dropped. Calls block (they poll): use a multi-thread runtime.
//!
//! From nats-server 2.10 on the nodes fsync every write before acknowledging it
//! (`sync_interval: always`, as the shipped `config/examples/hub-cluster.conf`), unlike the
//! single [`NatsServer`] hub; `TRIBUTARY_HUB_SYNC_INTERVAL` overrides it for both. Debian's
//! 2.9.10 has no such setting: a SIGKILL of every node may lose the writes of the last moments.

use crate::bins;
use crate::error::{HarnessError, Result};
use crate::nats::{JETSTREAM_DOMAIN, NatsOptions, NatsServer, http_get, nats_version, quote};
use crate::ports::{free_port, is_listening};
use crate::process::{ProcessSpec, ServerProcess};
use std::time::Duration;

/// How long a node (or the whole cluster's JetStream) may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `cluster { name }` of the test hub.
pub const CLUSTER_NAME: &str = "tributary-hub";

#[derive(Debug)]
struct Node {
    process: ServerProcess,
    name: String,
    port: u16,
    http_port: u16,
    leaf_port: u16,
}

/// A JetStream cluster of `nats-server` nodes. Killed when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    version: (u32, u32, u32),
}

impl NatsCluster {
    /// Starts `size` nodes routed to each other and waits until every node's JetStream is
    /// healthy and knows the meta leader.
    pub fn start(size: usize) -> Result<Self> {
        assert!(size >= 1, "a cluster needs a node");
        let binary = bins::nats_server()?;
        let version = nats_version(&binary);
        let ports: Vec<(u16, u16, u16, u16)> = (0..size)
            .map(|_| (free_port(), free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, route, _)| format!("\"nats-route://127.0.0.1:{route}\""))
            .collect();
        let mut nodes = Vec::with_capacity(size);
        for (i, &(port, http_port, route_port, leaf_port)) in ports.iter().enumerate() {
            let name = format!("hub-{}", (b'a' + i as u8) as char);
            let dir = tempfile::Builder::new()
                .prefix(&format!("tributary-nats-{name}-"))
                .tempdir()
                .map_err(|e| HarnessError::io("creating temp dir", std::env::temp_dir(), e))?;
            let config = format!(
                "server_name: {name:?}\n\
                 listen: \"127.0.0.1:{port}\"\n\
                 http: \"127.0.0.1:{http_port}\"\n\
                 max_payload: 1MB\n\
                 jetstream {{\n  store_dir: {store}\n  domain: {JETSTREAM_DOMAIN}\n  \
                 max_memory_store: 256MB\n  max_file_store: 64GB\n{sync}}}\n\
                 cluster {{\n  name: {CLUSTER_NAME}\n  listen: \"127.0.0.1:{route_port}\"\n  \
                 routes: [{routes}]\n}}\n\
                 leafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"\n}}\n",
                store = quote(&dir.path().join("jetstream")),
                routes = routes.join(", "),
                sync = sync_interval(version),
            );
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, config)
                .map_err(|e| HarnessError::io("writing nats config", &path, e))?;
            let spec = ProcessSpec::new(name.clone(), binary.clone())
                .arg("-c")
                .arg(&path);
            nodes.push(Node {
                process: ServerProcess::start(spec, dir)?,
                name,
                port,
                http_port,
                leaf_port,
            });
        }
        let mut cluster = NatsCluster { nodes, version };
        for i in 0..size {
            cluster.wait_node_ready(i)?;
        }
        Ok(cluster)
    }

    fn wait_node_ready(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let (port, http_port) = (node.port, node.http_port);
        node.process
            .wait_until(READY_TIMEOUT, || node_ready(port, http_port))
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has a node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The binary's version, e.g. `(2, 9, 10)`.
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// `nats://127.0.0.1:PORT` of every node, in node order.
    pub fn client_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect()
    }

    /// `nats-leaf://127.0.0.1:PORT` of every node's leafnode listener.
    pub fn leaf_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats-leaf://127.0.0.1:{}", n.leaf_port))
            .collect()
    }

    /// The `server_name` of node `i` (`hub-a`, `hub-b`, …).
    pub fn server_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node called `name`.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The process of node `i` (pid, log).
    pub fn process(&self, i: usize) -> &ServerProcess {
        &self.nodes[i].process
    }

    /// GETs a monitoring endpoint of node `i` and returns the body.
    pub fn monitor(&self, i: usize, path: &str) -> Result<String> {
        let (_, body) = http_get(self.nodes[i].http_port, path)
            .map_err(|e| HarnessError::io("monitoring request", path, e))?;
        Ok(body)
    }

    /// A leafnode (no JetStream) whose remote lists every node; returns once one node holds
    /// the link.
    pub fn leaf(&self) -> Result<NatsServer> {
        self.leaf_with(NatsOptions::default())
    }

    /// [`leaf`](Self::leaf) with options: its own clients' authentication
    /// (`auth`, or users with permissions in `extra_config`), TLS.
    pub fn leaf_with(&self, options: NatsOptions) -> Result<NatsServer> {
        NatsServer::leaf_of_cluster(
            &self.leaf_urls(),
            self.nodes.iter().map(|n| n.http_port).collect(),
            options,
        )
    }

    /// A client connected to the whole cluster (it fails over between nodes).
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let urls = self.client_urls();
        let addrs: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| u.parse().expect("a loopback nats:// URL parses"))
            .collect();
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(addrs)
            .await
            .map_err(|e| HarnessError::NatsConnect {
                url: urls.join(","),
                source: e,
            })
    }

    /// The node leading `stream`, from the stream info; polls (up to 30 s) until there is a
    /// leader among the running nodes.
    pub async fn stream_leader_node(&mut self, stream: &str) -> Result<usize> {
        let js = async_nats::jetstream::with_domain(self.connect().await?, JETSTREAM_DOMAIN);
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no answer");
        while std::time::Instant::now() < deadline {
            match js.get_stream(stream).await {
                Ok(mut s) => match s.info().await {
                    Ok(info) => {
                        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
                        match leader.as_deref().and_then(|l| self.node_named(l)) {
                            Some(i) if self.nodes[i].process.is_running() => return Ok(i),
                            _ => last = format!("leader {leader:?} is not a running node"),
                        }
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(HarnessError::NotReady {
            name: format!("stream {stream}"),
            waited: READY_TIMEOUT,
            reason: format!("no stream leader: {last}"),
            log: self.nodes[0].process.log_path().to_path_buf(),
            log_tail: self.nodes[0].process.log_tail(30),
        })
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        self.nodes[i].process.kill()
    }

    /// Restarts node `i` with its config, ports and store (SIGKILLing it first if it runs) and
    /// waits until its JetStream is healthy.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.nodes[i].process.respawn()?;
        self.wait_node_ready(i)
    }

    /// SIGKILLs every node, then starts them all again and waits for all of them.
    pub fn kill_all_and_restart(&mut self) -> Result<()> {
        for node in &mut self.nodes {
            node.process.kill()?;
        }
        for node in &mut self.nodes {
            node.process.respawn()?;
        }
        for i in 0..self.nodes.len() {
            self.wait_node_ready(i)?;
        }
        Ok(())
    }
}

/// The nodes' JetStream `sync_interval`: `$TRIBUTARY_HUB_SYNC_INTERVAL` when set, else
/// `always` from nats-server 2.10 on (the setting of the shipped `config/examples/hub*.conf`:
/// fsync before acknowledging, so that killing every node loses nothing acknowledged), else
/// the server's default (2.9 does not know the key).
fn sync_interval(version: (u32, u32, u32)) -> String {
    let value = std::env::var("TRIBUTARY_HUB_SYNC_INTERVAL")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| (version >= (2, 10, 0)).then(|| "always".to_owned()));
    value
        .map(|v| format!("  sync_interval: {v:?}\n"))
        .unwrap_or_default()
}

/// A node is ready when its client port accepts, `/healthz` answers 200 and `/jsz` names a
/// meta leader (the cluster's JetStream can place streams).
fn node_ready(port: u16, http_port: u16) -> std::result::Result<bool, String> {
    if !is_listening(port) {
        return Err(format!("client port {port} not accepting"));
    }
    let (status, body) = http_get(http_port, "/healthz").map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("/healthz answered {status}: {body}"));
    }
    let (_, body) = http_get(http_port, "/jsz").map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("/jsz: {e}"))?;
    match json["meta_cluster"]["leader"].as_str() {
        Some(l) if !l.is_empty() => Ok(true),
        _ => Err("no JetStream meta leader yet".into()),
    }
}
