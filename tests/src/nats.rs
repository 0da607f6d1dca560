//! [`NatsServer`]: a real `nats-server` as a JetStream hub or as a leafnode of a hub.
//!
//! ```no_run
//! # async fn demo() -> tributary_tests::Result<()> {
//! use tributary_tests::NatsServer;
//! let mut hub = NatsServer::hub()?; // JetStream, client + leafnode + monitoring listeners
//! let leaf = NatsServer::leaf(&hub)?; // no JetStream, connected to the hub when this returns
//! let on_hub = hub.connect().await?;
//! let on_leaf = async_nats::connect(leaf.client_url()).await.unwrap();
//! hub.kill()?;
//! hub.restart()?; // same port, same JetStream store
//! leaf.wait_leaf_connected(std::time::Duration::from_secs(10))?;
//! # Ok(()) }
//! ```
//!
//! The binary is `$TRIBUTARY_NATS_SERVER` or `nats-server` from `PATH`/`/usr/sbin`; the generated
//! config suits both Debian's 2.9.10 and 2.15.x (the leaf's `reconnect` interval is written as
//! whole seconds for < 2.10 and as a duration string from 2.10 on).
//!
//! All calls block (they poll with `std::thread::sleep`): in `#[tokio::test]`s use
//! `flavor = "multi_thread"` so client tasks keep running meanwhile.

use crate::bins;
use crate::certs::TlsFiles;
use crate::error::{HarnessError, Result};
use crate::jwt::JwtAuth;
use crate::ports::{free_port, is_listening};
use crate::process::{ProcessSpec, ServerProcess};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// User and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl Credentials {
    /// Credentials from a user and a password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }
}

/// How clients must authenticate on the client port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// User and password.
    UserPassword(Credentials),
    /// A shared token.
    Token(String),
    /// An nkey: the server knows the public key derived from this user seed (`SU…`, see
    /// [`ClientAuth::new_nkey`]); clients sign the server's nonce with the seed.
    Nkey {
        /// The user's seed.
        seed: String,
    },
    /// Decentralized JWT auth (operator mode): clients present the user's `.creds` file. A leaf
    /// with this binds its link to the hub to the account.
    Jwt(Box<JwtAuth>),
}

impl ClientAuth {
    /// A fresh random user nkey.
    pub fn new_nkey() -> Self {
        ClientAuth::Nkey {
            seed: nkeys::KeyPair::new_user()
                .seed()
                .expect("a new key pair has a seed"),
        }
    }
}

/// Optional settings of a hub or leaf; `NatsOptions::default()` is plain, open loopback.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// Require TLS from clients on the client port (see [`crate::TestCerts`]).
    pub tls: Option<TlsFiles>,
    /// Require authentication from clients on the client port.
    pub auth: Option<ClientAuth>,
    /// Hub: credentials leafnodes must present. Leaf: credentials it presents to the hub.
    pub leaf_credentials: Option<Credentials>,
    /// Extra top-level config text appended verbatim.
    pub extra_config: String,
    /// Leaf: extra text inside its remote, e.g. `credentials: "/x/pi.creds"` (a hub in
    /// operator mode) or a `tls { ca_file: "…" }` block (a hub's TLS leafnode listener).
    pub leaf_remote: String,
    /// The `nats-server` binary of this server (default: [`bins::nats_server`]), e.g. a
    /// hub on the current release while its leafs run Debian's.
    pub binary: Option<PathBuf>,
    /// Hub: JetStream's `sync_interval` (e.g. `always`, needs nats-server >= 2.10); takes
    /// precedence over `TRIBUTARY_HUB_SYNC_INTERVAL`.
    pub sync_interval: Option<String>,
    /// Hub: the `host:port` its leafnode listener advertises instead of its own. A leaf adds
    /// the advertised address to its remote's URLs and reconnects there too, past a
    /// [`TcpProxy`](crate::TcpProxy) put between them: tests that sever such a proxy
    /// advertise an address where nothing listens.
    pub leaf_advertise: Option<String>,
}

#[derive(Debug, Clone)]
enum Role {
    Hub { leaf_port: u16 },
    Leaf { hub_http_ports: Vec<u16> },
}

/// The hub's JetStream domain: what makes its JetStream API reachable from
/// behind a leaf (`$JS.hub.API.>`; the server does not carry `$JS.API.>`
/// over leafnode connections), as the agent's `[control] fleet_domain`
/// expects by default.
pub const JETSTREAM_DOMAIN: &str = "hub";

/// A `nats-server` process: a JetStream hub or a leafnode. Killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    process: ServerProcess,
    role: Role,
    port: u16,
    http_port: u16,
    name: String,
    options: NatsOptions,
    version: (u32, u32, u32),
}

impl NatsServer {
    /// Starts a hub: JetStream with its store in the temp dir, a client listener, a leafnode
    /// listener and HTTP monitoring, all on free loopback ports. Returns once JetStream is
    /// healthy.
    pub fn hub() -> Result<Self> {
        Self::hub_with(NatsOptions::default())
    }

    /// [`hub`](Self::hub) with options (TLS, auth, leafnode credentials).
    pub fn hub_with(options: NatsOptions) -> Result<Self> {
        let leaf_port = free_port();
        Self::start(Role::Hub { leaf_port }, options)
    }

    /// Starts a leafnode of `hub` without JetStream; returns once the leaf connection is up
    /// on both sides.
    pub fn leaf(hub: &NatsServer) -> Result<Self> {
        Self::leaf_with(hub, NatsOptions::default())
    }

    /// [`leaf`](Self::leaf) with options; `options.leaf_credentials` are presented to the hub.
    pub fn leaf_with(hub: &NatsServer, options: NatsOptions) -> Result<Self> {
        let Role::Hub { leaf_port } = hub.role else {
            panic!("NatsServer::leaf needs a hub, got the leaf {}", hub.name);
        };
        let url = match &options.leaf_credentials {
            Some(c) => format!(
                "nats-leaf://{}:{}@127.0.0.1:{leaf_port}",
                c.user, c.password
            ),
            None => format!("nats-leaf://127.0.0.1:{leaf_port}"),
        };
        let hub_http_ports = vec![hub.http_port];
        let mut server = Self::spawn(Role::Leaf { hub_http_ports }, options, Some(url))?;
        server.wait_ready()?;
        server.wait_leaf_connected(READY_TIMEOUT)?;
        Ok(server)
    }

    /// A leafnode whose one remote lists every node of a clustered hub
    /// (`leaf_urls`, `nats-leaf://…`; it connects to one and fails over to
    /// the others), `hub_http_ports` their monitoring ports. Returns once one
    /// node sees the link. See [`crate::NatsCluster::leaf`].
    pub fn leaf_of_cluster(
        leaf_urls: &[String],
        hub_http_ports: Vec<u16>,
        options: NatsOptions,
    ) -> Result<Self> {
        let urls = leaf_urls.join(",");
        let mut server = Self::spawn(Role::Leaf { hub_http_ports }, options, Some(urls))?;
        server.wait_ready()?;
        server.wait_leaf_connected(READY_TIMEOUT)?;
        Ok(server)
    }

    fn start(role: Role, options: NatsOptions) -> Result<Self> {
        let mut server = Self::spawn(role, options, None)?;
        server.wait_ready()?;
        Ok(server)
    }

    fn spawn(role: Role, options: NatsOptions, hub_url: Option<String>) -> Result<Self> {
        let binary = match &options.binary {
            Some(binary) => binary.clone(),
            None => bins::nats_server()?,
        };
        let version = nats_version(&binary);
        let port = free_port();
        let http_port = free_port();
        let name = match role {
            Role::Hub { .. } => format!("hub-{port}"),
            Role::Leaf { .. } => format!("leaf-{port}"),
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("tributary-nats-{name}-"))
            .tempdir()
            .map_err(|e| HarnessError::io("creating temp dir", std::env::temp_dir(), e))?;
        let config = render_config(
            &name,
            port,
            http_port,
            &role,
            &options,
            hub_url.as_deref(),
            dir.path(),
            version,
        );
        let config_path = dir.path().join("nats.conf");
        std::fs::write(&config_path, config)
            .map_err(|e| HarnessError::io("writing nats config", &config_path, e))?;
        let spec = ProcessSpec::new(name.clone(), binary)
            .arg("-c")
            .arg(&config_path);
        let process = ServerProcess::start(spec, dir)?;
        Ok(NatsServer {
            process,
            role,
            port,
            http_port,
            name,
            options,
            version,
        })
    }

    fn wait_ready(&mut self) -> Result<()> {
        let (port, http_port) = (self.port, self.http_port);
        let hub = matches!(self.role, Role::Hub { .. });
        self.process.wait_until(READY_TIMEOUT, || {
            if !is_listening(port) {
                return Err(format!("client port {port} not accepting"));
            }
            if hub {
                // 200 once JetStream is up.
                let (status, body) = http_get(http_port, "/healthz").map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("/healthz answered {status}: {body}"));
                }
            }
            Ok(true)
        })
    }

    /// Waits until this leaf's connection to its hub is up, as seen by both the leaf's and the
    /// hub's `/leafz`. Use it after restarting the hub or the leaf.
    ///
    /// # Panics
    /// When called on a hub.
    pub fn wait_leaf_connected(&self, timeout: Duration) -> Result<()> {
        let Role::Leaf { hub_http_ports } = &self.role else {
            panic!("wait_leaf_connected is for leafs; {} is a hub", self.name);
        };
        let http_port = self.http_port;
        let start = std::time::Instant::now();
        let mut reason = String::new();
        while start.elapsed() < timeout {
            match leaf_connected(http_port, hub_http_ports) {
                Ok(true) => return Ok(()),
                Ok(false) => reason = "no leafnode connection yet".into(),
                Err(e) => reason = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(HarnessError::NotReady {
            name: self.name.clone(),
            waited: timeout,
            reason: format!("leafnode connection to the hub not up: {reason}"),
            log: self.process.log_path().to_path_buf(),
            log_tail: self.process.log_tail(30),
        })
    }

    /// The ports this leaf's leafnode connections reach their hub on, from its `/leafz`: the
    /// hub's leafnode port, or a [`TcpProxy`](crate::TcpProxy)'s when the link goes through one.
    pub fn leaf_remote_ports(&self) -> Result<Vec<u16>> {
        let body = self.monitor("/leafz")?;
        let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
            HarnessError::io(
                "parsing /leafz",
                "/leafz",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        Ok(json["leafs"]
            .as_array()
            .map(|leafs| {
                leafs
                    .iter()
                    .filter_map(|l| l["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `nats://127.0.0.1:PORT` (`tls://…` when the client port requires TLS).
    pub fn client_url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "tls"
        } else {
            "nats"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port (`/varz`, `/jsz`, `/leafz`, `/healthz`…).
    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// The hub's leafnode listener port; `None` for a leaf.
    pub fn leafnode_port(&self) -> Option<u16> {
        match self.role {
            Role::Hub { leaf_port } => Some(leaf_port),
            Role::Leaf { .. } => None,
        }
    }

    /// The server's data: the JetStream store dir of a hub, the temp dir of a leaf. Kept across
    /// restarts.
    pub fn data_dir(&self) -> PathBuf {
        match self.role {
            Role::Hub { .. } => self.process.dir().join("jetstream"),
            Role::Leaf { .. } => self.process.dir().to_path_buf(),
        }
    }

    /// The generated config file.
    pub fn config_path(&self) -> PathBuf {
        self.process.dir().join("nats.conf")
    }

    /// The `server_name` (`hub-PORT` or `leaf-PORT`).
    pub fn server_name(&self) -> &str {
        &self.name
    }

    /// The binary's version, e.g. `(2, 9, 10)`; `(0, 0, 0)` if `--version` was unreadable.
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// The options the server was started with.
    pub fn options(&self) -> &NatsOptions {
        &self.options
    }

    /// GETs a monitoring endpoint (e.g. `/jsz?streams=1`) and returns the body.
    pub fn monitor(&self, path: &str) -> Result<String> {
        let (_, body) = http_get(self.http_port, path)
            .map_err(|e| HarnessError::io("monitoring request", path, e))?;
        Ok(body)
    }

    /// Connects an async-nats client to the client port with this server's auth and TLS
    /// (presenting the test client certificate when clients are verified).
    pub async fn connect(&self) -> Result<async_nats::Client> {
        let mut opts = async_nats::ConnectOptions::new();
        match &self.options.auth {
            Some(ClientAuth::UserPassword(c)) => {
                opts = opts.user_and_password(c.user.clone(), c.password.clone());
            }
            Some(ClientAuth::Token(t)) => opts = opts.token(t.clone()),
            Some(ClientAuth::Nkey { seed }) => opts = opts.nkey(seed.clone()),
            Some(ClientAuth::Jwt(auth)) => {
                opts = opts
                    .credentials(&auth.creds())
                    .map_err(|e| HarnessError::io("using test credentials", Path::new("-"), e))?;
            }
            None => {}
        }
        if let Some(tls) = &self.options.tls {
            opts = opts.require_tls(true).add_root_certificates(tls.ca.clone());
            if tls.verify_clients {
                let dir = tls.ca.parent().unwrap_or(Path::new("."));
                opts = opts.add_client_certificate(
                    dir.join("client-cert.pem"),
                    dir.join("client-key.pem"),
                );
            }
        }
        opts.connect(self.client_url())
            .await
            .map_err(|e| HarnessError::NatsConnect {
                url: self.client_url(),
                source: e,
            })
    }

    /// Restarts the server with the same config, ports and data (SIGKILLing it first if it
    /// runs) and waits until its client port accepts (a hub: until JetStream is healthy).
    /// A restarted leaf reconnects to its hub on its own: call
    /// [`wait_leaf_connected`](Self::wait_leaf_connected) when the test needs the link.
    pub fn restart(&mut self) -> Result<()> {
        self.process.respawn()?;
        self.wait_ready()
    }
}

crate::process::delegate_process_methods!(NatsServer);

fn leaf_connected(leaf_http: u16, hub_http: &[u16]) -> std::result::Result<bool, String> {
    let count = |port: u16| -> std::result::Result<u64, String> {
        let (status, body) = http_get(port, "/leafz").map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("/leafz on {port} answered {status}"));
        }
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("/leafz on {port}: {e}"))?;
        Ok(json["leafnodes"].as_u64().unwrap_or(0))
    };
    if count(leaf_http)? < 1 {
        return Ok(false);
    }
    // A node of a cluster may be down: it cannot be the one holding the link.
    let hubs: u64 = hub_http.iter().filter_map(|p| count(*p).ok()).sum();
    Ok(hubs >= 1)
}

/// A minimal HTTP/1.0 GET against the loopback monitoring port: (status, body).
pub(crate) fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// `nats-server --version` → (major, minor, patch); (0, 0, 0) when unreadable.
pub(crate) fn nats_version(binary: &Path) -> (u32, u32, u32) {
    let out = std::process::Command::new(binary).arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    parse_version(&text).unwrap_or((0, 0, 0))
}

fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.trim().rsplit('v').next()?;
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??, parts.next()??))
}

pub(crate) fn quote(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

#[allow(clippy::too_many_arguments)]
fn render_config(
    name: &str,
    port: u16,
    http_port: u16,
    role: &Role,
    options: &NatsOptions,
    hub_url: Option<&str>,
    dir: &Path,
    version: (u32, u32, u32),
) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "server_name: {name:?}");
    let _ = writeln!(c, "listen: \"127.0.0.1:{port}\"");
    let _ = writeln!(c, "http: \"127.0.0.1:{http_port}\"");
    let _ = writeln!(c, "max_payload: 1MB");
    if let Some(tls) = &options.tls {
        let _ = writeln!(
            c,
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {}\n  timeout: 5\n}}",
            quote(&tls.cert),
            quote(&tls.key),
            quote(&tls.ca),
            tls.verify_clients
        );
    }
    match &options.auth {
        Some(ClientAuth::UserPassword(cr)) => {
            let _ = writeln!(
                c,
                "authorization {{\n  user: {:?}\n  password: {:?}\n}}",
                cr.user, cr.password
            );
        }
        Some(ClientAuth::Token(t)) => {
            let _ = writeln!(c, "authorization {{\n  token: {t:?}\n}}");
        }
        Some(ClientAuth::Nkey { seed }) => {
            let public = nkeys::KeyPair::from_seed(seed)
                .expect("ClientAuth::Nkey holds a valid user seed")
                .public_key();
            let _ = writeln!(
                c,
                "authorization {{\n  users = [ {{ nkey: {public:?} }} ]\n}}"
            );
        }
        Some(ClientAuth::Jwt(auth)) => c.push_str(&auth.server_config()),
        None => {}
    }
    match role {
        Role::Hub { leaf_port } => {
            // max_file_store above the 10 GiB the uplink's stream reserves by
            // default (stream.max_bytes), or it could not create its stream.
            // `TRIBUTARY_HUB_SYNC_INTERVAL=always` (nats-server >= 2.10): the
            // durability setting of config/examples/hub.conf, for its benchmarks.
            let sync = options
                .sync_interval
                .clone()
                .or_else(|| std::env::var("TRIBUTARY_HUB_SYNC_INTERVAL").ok())
                .filter(|v| !v.is_empty())
                .map(|v| format!("  sync_interval: {v:?}\n"))
                .unwrap_or_default();
            let _ = writeln!(
                c,
                "jetstream {{\n  store_dir: {}\n  domain: {JETSTREAM_DOMAIN}\n  max_memory_store: 256MB\n  max_file_store: 64GB\n{sync}}}",
                quote(&dir.join("jetstream"))
            );
            let _ = writeln!(c, "leafnodes {{\n  listen: \"127.0.0.1:{leaf_port}\"");
            if let Some(address) = &options.leaf_advertise {
                let _ = writeln!(c, "  advertise: {address:?}");
            }
            if let Some(cr) = &options.leaf_credentials {
                let _ = writeln!(
                    c,
                    "  authorization {{\n    user: {:?}\n    password: {:?}\n  }}",
                    cr.user, cr.password
                );
            }
            let _ = writeln!(c, "}}");
        }
        Role::Leaf { .. } => {
            // 2.9 parses `reconnect` as whole seconds only; 2.10+ wants a duration string.
            let reconnect = if version >= (2, 10, 0) { "\"1s\"" } else { "1" };
            // In operator mode the link to the hub belongs to the account.
            let account = match &options.auth {
                Some(ClientAuth::Jwt(auth)) => format!(", account: {:?}", auth.account()),
                _ => String::new(),
            };
            // One remote; several comma-separated URLs are the nodes of a cluster.
            let urls: Vec<String> = hub_url
                .unwrap_or_default()
                .split(',')
                .map(|u| format!("{u:?}"))
                .collect();
            let remote = match options.leaf_remote.trim() {
                "" => String::new(),
                extra => format!("\n      {extra}\n    "),
            };
            let _ = writeln!(
                c,
                "leafnodes {{\n  reconnect: {reconnect}\n  remotes [\n    {{ urls: [{}]{account}{remote} }}\n  ]\n}}",
                urls.join(", ")
            );
        }
    }
    c.push_str(&options.extra_config);
    c.push('\n');
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_both_supported_servers_parse() {
        assert_eq!(parse_version("nats-server: v2.9.10\n"), Some((2, 9, 10)));
        assert_eq!(parse_version("nats-server: v2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn a_leaf_config_writes_reconnect_in_the_syntax_of_its_version() {
        let role = Role::Leaf {
            hub_http_ports: vec![1],
        };
        let opts = NatsOptions::default();
        let old = render_config(
            "l",
            1,
            2,
            &role,
            &opts,
            Some("nats-leaf://x:3"),
            Path::new("/d"),
            (2, 9, 10),
        );
        let new = render_config(
            "l",
            1,
            2,
            &role,
            &opts,
            Some("nats-leaf://x:3"),
            Path::new("/d"),
            (2, 15, 1),
        );
        assert!(old.contains("reconnect: 1\n"), "{old}");
        assert!(new.contains("reconnect: \"1s\""), "{new}");
        assert!(new.contains("nats-leaf://x:3"), "{new}");
        assert!(!new.contains("jetstream"), "{new}");
    }
}

/// Why a JetStream API request got no good answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiRefusal {
    /// No answer came (no responders, timeout, permission violation).
    #[error("no answer")]
    NoAnswer(#[from] async_nats::RequestError),
    /// The answer was a non-OK status or a JetStream error body.
    #[error("{status:?}: {body}")]
    Refused {
        /// The answer's status, if any.
        status: Option<async_nats::StatusCode>,
        /// The answer's payload.
        body: String,
    },
}

/// A raw JetStream API request (e.g. from a device's client behind a leaf,
/// to see what its permissions allow): the answer's payload, or why there
/// was none. Waits 2 s for the answer.
pub async fn jetstream_api(
    client: &async_nats::Client,
    subject: String,
    body: &str,
) -> std::result::Result<String, ApiRefusal> {
    let request = async_nats::Request::new()
        .payload(body.to_owned().into())
        .timeout(Some(Duration::from_secs(2)));
    let msg = client.send_request(subject, request).await?;
    let text = String::from_utf8_lossy(&msg.payload).into_owned();
    if msg.status.is_some_and(|s| s != async_nats::StatusCode::OK) || text.contains("\"error\"") {
        return Err(ApiRefusal::Refused {
            status: msg.status,
            body: text,
        });
    }
    Ok(text)
}
