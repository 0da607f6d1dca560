//! [`Mosquitto`]: a real MQTT broker for the agent's MQTT sensors.
//!
//! Listens on a free loopback port, allows anonymous clients and persists its state (retained
//! messages, QoS 1 sessions and their queued messages) in its temp dir, so a restart keeps them.
//!
//! ```no_run
//! # fn main() -> tributary_tests::Result<()> {
//! let mut broker = tributary_tests::Mosquitto::start()?;
//! let (host, port) = ("127.0.0.1", broker.port());
//! broker.kill()?;
//! broker.restart()?; // same port, same persistence file
//! # Ok(()) }
//! ```

use crate::bins;
use crate::error::{HarnessError, Result};
use crate::ports::{free_port, is_listening};
use crate::process::{ProcessSpec, ServerProcess};
use std::path::PathBuf;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `mosquitto` process. Killed when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    process: ServerProcess,
    port: u16,
}

impl Mosquitto {
    /// Starts mosquitto on a free loopback port and waits until it accepts connections.
    pub fn start() -> Result<Self> {
        let binary = bins::mosquitto()?;
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("tributary-mosquitto-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating temp dir", std::env::temp_dir(), e))?;
        // Started as root, mosquitto switches to the `mosquitto` user, which cannot write the
        // persistence file into our temp dir; `user root` keeps it root (no effect otherwise).
        let running_as_root = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
        };
        let user = if running_as_root { "user root\n" } else { "" };
        let config = format!(
            "{user}listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence true\n\
             persistence_location {}/\n\
             autosave_interval 1\n\
             log_dest stdout\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n",
            dir.path().display()
        );
        let config_path = dir.path().join("mosquitto.conf");
        std::fs::write(&config_path, config)
            .map_err(|e| HarnessError::io("writing mosquitto config", &config_path, e))?;
        let spec = ProcessSpec::new("mosquitto", binary)
            .arg("-c")
            .arg(&config_path);
        let mut broker = Mosquitto {
            process: ServerProcess::start(spec, dir)?,
            port,
        };
        broker.wait_ready()?;
        Ok(broker)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let port = self.port;
        self.process.wait_until(READY_TIMEOUT, || {
            if is_listening(port) {
                Ok(true)
            } else {
                Err(format!("port {port} not accepting"))
            }
        })
    }

    /// The MQTT port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The temp dir holding the config and the persistence file `mosquitto.db`.
    pub fn data_dir(&self) -> PathBuf {
        self.process.dir().to_path_buf()
    }

    /// Restarts mosquitto with the same config, port and persistence (SIGKILLing it first if
    /// it runs) and waits until it accepts connections. Note that a SIGKILL loses what was not
    /// yet autosaved (every second); [`terminate`](Self::terminate) first saves everything.
    pub fn restart(&mut self) -> Result<()> {
        self.process.respawn()?;
        self.wait_ready()
    }

    /// A client subscribed (QoS 1, the subscription acknowledged) to
    /// `topic`, to see what an actuator publishes.
    pub async fn watch(&self, topic: &str) -> Result<Watcher> {
        let options =
            rumqttc::MqttOptions::new(format!("watch-{}", free_port()), "127.0.0.1", self.port);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
        let failed = |reason: String| HarnessError::NotReady {
            name: "mosquitto watcher".into(),
            waited: READY_TIMEOUT,
            reason,
            log: self.process.log_path().to_path_buf(),
            log_tail: self.process.log_tail(20),
        };
        client
            .subscribe(topic, rumqttc::QoS::AtLeastOnce)
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(failed(e.to_string())),
                }
            }
        })
        .await
        .map_err(|_| failed("no SUBACK".into()))??;
        Ok(Watcher {
            _client: client,
            events,
        })
    }
}

/// A subscribed MQTT client of [`Mosquitto::watch`].
pub struct Watcher {
    _client: rumqttc::AsyncClient,
    events: rumqttc::EventLoop,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// The payload of the next message published to the watched topic,
    /// or None when none comes within `timeout`.
    pub async fn next_payload(&mut self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, async {
            loop {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) =
                    self.events.poll().await
                {
                    return String::from_utf8_lossy(&p.payload).into_owned();
                }
            }
        })
        .await
        .ok()
    }
}

crate::process::delegate_process_methods!(Mosquitto);

/// Publishes one QoS 1 message to the broker on `127.0.0.1:port` and waits
/// for its PUBACK (10 s at most).
pub async fn publish(port: u16, topic: &str, payload: impl Into<Vec<u8>>) -> Result<()> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let failed = |reason: String| HarnessError::Mqtt { reason };
    let mut o = MqttOptions::new(format!("publisher-{n}"), "127.0.0.1", port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(o, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .map_err(|e| failed(e.to_string()))?;
    tokio::time::timeout(READY_TIMEOUT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(failed(e.to_string())),
            }
        }
    })
    .await
    .map_err(|_| failed(format!("no PUBACK for {topic} within {READY_TIMEOUT:?}")))??;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    Ok(())
}
