//! One simulated device: the agent's own parts, as `tributary_agent::run`
//! assembles them, fed by a counter instead of sensors.
//!
//! Each device has its own configuration (parsed from TOML like a real
//! `agent.toml`, its own `state_dir`), its own buffer (opened and owned by
//! its own buffer thread), its own NATS connection to its leaf with its own
//! user and password, its own JetStream context (`run::jetstream`), link
//! and batcher. Only the sensors are replaced: one counter per device takes
//! a reading every `interval`, with a phase so that the fleet's readings
//! spread over the interval instead of arriving in one burst, and counts
//! what it took. The control service, the clock watcher, commands and the
//! metrics endpoint are not started (`[control] enabled = false`): they
//! do nothing while nobody asks, and their idle timers would only measure
//! tokio.

use anyhow::Context as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_agent::batcher::{self, BatchError, Message};
use tributary_agent::buffer::Buffer;
use tributary_agent::buffer_owner::{self, BufferThread};
use tributary_agent::link::LinkError;
use tributary_agent::run::{self, MESSAGE_CHANNEL, OBSERVATION_CHANNEL};
use tributary_agent::sensors::{Observation, SensorMeta};
use tributary_agent::stats::AgentStats;
use tributary_config::AgentConfig;
use tributary_wire::{Clock, Value};

/// The sensor every simulated device has.
pub const SENSOR: &str = "count";

/// The id of device `i`.
pub fn device_id(i: usize) -> String {
    format!("fleet-{i:05}")
}

/// The password of device `device` at its leaf.
pub fn password(device: &str) -> String {
    format!("pw-{device}")
}

/// The configuration of `device`, connecting to `leaf_url` with its own
/// user (`leaf-<device>`, as `cross/hub/device-user.conf` names it) and
/// the agent's defaults otherwise, apart from a smaller buffer (1,000 of
/// them share one disk).
pub fn config(device: &str, leaf_url: &str, state_dir: &Path) -> anyhow::Result<AgentConfig> {
    let text = format!(
        r#"
[agent]
device = "{device}"
state_dir = "{state}"

[nats]
urls = ["{leaf_url}"]
user = "leaf-{device}"
password = "{password}"

[buffer]
max_size = "1 MiB"
segment_size = "256 KiB"

[control]
enabled = false
"#,
        state = state_dir.display(),
        password = password(device),
    );
    tributary_config::parse(&text, Path::new("fleet.toml"))
        .with_context(|| format!("the configuration of {device}"))
}

/// A running simulated device.
pub struct Device {
    /// Its id.
    pub id: String,
    /// Its counters (acks, spills, the hub-ack latency histogram).
    pub stats: Arc<AgentStats>,
    /// Readings taken so far (the next counter value).
    pub taken: Arc<AtomicI64>,
    sensor_stop: CancellationToken,
    sensor: JoinHandle<()>,
    batcher: JoinHandle<Result<(), BatchError>>,
    link: JoinHandle<Result<(), LinkError>>,
    buffer: BufferThread,
    client: async_nats::Client,
}

impl Device {
    /// Opens the buffer, connects, starts link, batcher and the counter
    /// (its first reading after `phase`, then one every `interval`).
    pub async fn start(
        cfg: AgentConfig,
        phase: Duration,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let device = cfg.agent.device.get_ref().clone();
        let stats = Arc::new(AgentStats::default());
        let bcfg = run::buffer_config(&cfg);
        let (buffer, _report) = tokio::task::spawn_blocking(move || Buffer::open(bcfg))
            .await?
            .with_context(|| format!("opening the buffer of {device}"))?;
        let (handle, buffer_thread) = buffer_owner::spawn(buffer, stats.clone())?;
        stats.epoch.store(handle.epoch(), Relaxed);
        let client = tributary_agent::nats_connect::connect(&cfg.nats, &format!("fleet {device}"))
            .await
            .with_context(|| format!("connecting {device}"))?;
        let (msg_tx, msg_rx) = mpsc::channel::<Message>(MESSAGE_CHANNEL);
        // As the agent wires them: the batcher sees when the link is idle.
        let (link, batch) = run::hub_link(client.clone(), handle.clone(), &cfg, stats.clone());
        let link = tokio::spawn(link.run(msg_rx, CancellationToken::new()));
        let (obs_tx, obs_rx) = mpsc::channel::<Observation>(OBSERVATION_CHANNEL);
        let batcher = tokio::spawn(batcher::run(obs_rx, msg_tx, handle, batch));
        let taken = Arc::new(AtomicI64::new(0));
        let sensor_stop = CancellationToken::new();
        let sensor = tokio::spawn(counter(
            obs_tx,
            taken.clone(),
            phase,
            interval,
            sensor_stop.clone(),
        ));
        Ok(Device {
            id: device,
            stats,
            taken,
            sensor_stop,
            sensor,
            batcher,
            link,
            buffer: buffer_thread,
            client,
        })
    }

    /// Stops as the agent does: the counter, then the batcher (its input
    /// closed), then the link (after its drain: acks awaited, the rest
    /// spilled), then the buffer thread. Its id and the readings it took.
    pub async fn stop(mut self) -> anyhow::Result<(String, i64)> {
        self.sensor_stop.cancel();
        self.sensor.await?;
        self.batcher.await??;
        self.link.await??;
        self.buffer.finished().await?;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.flush()).await;
        Ok((self.id, self.taken.load(Relaxed)))
    }
}

/// Takes a reading every `interval` (the first after `phase`): the counter
/// value 0, 1, 2… stamped with the time it was taken.
async fn counter(
    tx: mpsc::Sender<Observation>,
    taken: Arc<AtomicI64>,
    phase: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    let meta = Arc::new(SensorMeta {
        id: SENSOR.to_owned(),
        unit: None,
        tags: Vec::new(),
    });
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let value = taken.load(Relaxed);
        let obs = Observation {
            sensor: meta.clone(),
            timestamp_ns: i64::try_from(tributary_tests::bench::now_ns()).unwrap_or(i64::MAX),
            clock: Clock::Synced,
            value: Value::Int(value),
        };
        if tx.send(obs).await.is_err() {
            return;
        }
        taken.store(value + 1, Relaxed);
    }
}
