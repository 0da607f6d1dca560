//! Sensors: everything that produces readings.
//!
//! [`spawn`] starts one task per polled sensor (`file`, `w1`, `command`,
//! `system`, `simulated`) and one MQTT client task for all `mqtt` sensors.
//! Each turns what it reads into an [`Observation`] and sends it into the
//! bounded channel the batcher drains; when that channel is full, the sensor
//! waits (memory stays bounded; a polled sensor skips the ticks it missed).
//!
//! Rules every sensor follows:
//!
//! * A failed read yields no reading, never a made-up value: it is counted
//!   ([`AgentStats::error`]) and logged with rate limiting (first failure at
//!   `warn`, then at most one line a minute per sensor carrying the number of
//!   failures in between, and a line on recovery). The other sensors carry on.
//! * Floats must be finite: NaN and infinities are errors.
//! * With a `deadband`, a reading is sent only when it moved by more than the
//!   deadband from the last one sent (non-numeric values: when they changed),
//!   and at least every `heartbeat` readings; the others are counted as
//!   suppressed ([`AgentStats::suppressed`]).
//! * Reads that touch the filesystem or wait for the kernel (a 1-wire
//!   conversion takes ~750 ms) run on tokio's blocking pool; programs run
//!   under a timeout and are killed when it expires.
//!
//! Everything stops when the shutdown token is cancelled; [`Sensors::join`]
//! waits until every task has finished.

mod command;
mod deadband;
mod error;
mod file;
#[doc(hidden)]
pub mod fuzz_api;
pub mod mqtt;
mod parse;
mod ratelimit;
mod simulated;
mod system;
mod w1;

pub use error::{PayloadError, SensorError};

use crate::stats::AgentStats;
use deadband::Deadband;
use ratelimit::ErrorLog;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tributary_config::{AgentConfig, SensorCommon};
use tributary_wire::{Clock, Value};

/// One reading of one sensor, on its way to the buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Who produced it; shared by all readings of the sensor.
    pub sensor: Arc<SensorMeta>,
    /// When it was read: UTC nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Whether the system clock was synchronized when `timestamp_ns` was
    /// taken ([`AgentStats::clock`] at that moment).
    pub clock: Clock,
    /// What was read.
    pub value: Value,
}

/// The fixed description of a sensor, allocated once per sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorMeta {
    /// Sensor id (a NATS subject token).
    pub id: String,
    /// Unit of its values.
    pub unit: Option<String>,
    /// Tags, sorted by key.
    pub tags: Vec<(String, String)>,
}

impl SensorMeta {
    fn of(s: &dyn SensorCommon) -> Arc<Self> {
        Arc::new(SensorMeta {
            id: s.id().get_ref().clone(),
            unit: s.unit().map(str::to_owned),
            tags: s
                .tags()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// What the sensors need from the rest of the agent.
#[derive(Debug, Clone)]
pub struct SensorContext {
    /// Shared counters: written per sensor, read by `system` metrics.
    pub stats: Arc<AgentStats>,
    /// The buffer's directory, whose filesystem `disk_free` measures.
    pub buffer_dir: PathBuf,
    /// This device's id.
    pub device: String,
}

/// The running sensor tasks.
#[derive(Debug)]
pub struct Sensors {
    tasks: JoinSet<()>,
}

impl Sensors {
    /// No sensors (a placeholder while they are restarted).
    pub fn none() -> Sensors {
        Sensors {
            tasks: JoinSet::new(),
        }
    }

    /// How many tasks run (polled sensors, plus one for MQTT if any).
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until every task has finished (after the shutdown token was
    /// cancelled). A panicked task is logged.
    pub async fn join(mut self) {
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                if e.is_panic() {
                    tracing::error!(error = %e, "a sensor task panicked");
                }
            }
        }
    }
}

/// Where a polled sensor's values come from.
#[derive(Debug)]
enum Source {
    File(file::FileSource),
    W1(w1::W1Source),
    Command(command::CommandSource),
    System(system::SystemSource),
    // Boxed: its random generator makes it several times larger than the rest.
    Simulated(Box<simulated::SimulatedSource>),
}

impl Source {
    async fn read(&mut self) -> Result<Value, SensorError> {
        let v = match self {
            Source::File(s) => s.read().await,
            Source::W1(s) => s.read().await,
            Source::Command(s) => s.read().await,
            Source::System(s) => s.read().await,
            Source::Simulated(s) => Ok(s.read()),
        }?;
        parse::check(v)
    }
}

/// A polled sensor ready to run.
#[derive(Debug)]
struct Polled {
    meta: Arc<SensorMeta>,
    interval: Duration,
    deadband: Deadband,
    source: Source,
}

/// Every polled sensor of `cfg`, ready to run.
fn polled(cfg: &AgentConfig, ctx: &SensorContext) -> Vec<Polled> {
    let s = &cfg.sensors;
    let mut polled = Vec::new();
    macro_rules! add {
        ($list:expr, $make:expr) => {
            for c in &$list {
                polled.push(Polled {
                    meta: SensorMeta::of(c),
                    interval: c.interval.get(),
                    deadband: Deadband::new(c.deadband, c.heartbeat),
                    source: $make(c),
                });
            }
        };
    }
    add!(s.simulated, |c| Source::Simulated(Box::new(
        simulated::SimulatedSource::new(c)
    )));
    add!(s.system, |c| Source::System(system::SystemSource::new(
        c,
        ctx.buffer_dir.clone(),
        ctx.stats.clone()
    )));
    add!(s.file, |c| Source::File(file::FileSource::new(c)));
    add!(s.w1, |c| Source::W1(w1::W1Source::new(c)));
    add!(s.command, |c| Source::Command(command::CommandSource::new(
        c
    )));
    polled
}

/// Starts one task per polled sensor and one MQTT client task (if any mqtt
/// sensors), all owned by the returned handle; they stop when `shutdown` is
/// cancelled. Observations go to `out` (bounded; when it is full a sensor
/// waits). Must be called within a tokio runtime.
pub fn spawn(
    cfg: &AgentConfig,
    ctx: SensorContext,
    out: mpsc::Sender<Observation>,
    shutdown: CancellationToken,
) -> Sensors {
    let polled = polled(cfg, &ctx);
    let mut tasks = JoinSet::new();
    let spread = polled.len() > 1;
    for p in polled {
        tasks.spawn(run_polled(
            p,
            spread,
            ctx.stats.clone(),
            out.clone(),
            shutdown.clone(),
        ));
    }
    if !cfg.sensors.mqtt.is_empty() {
        let task = mqtt::MqttTask::new(cfg);
        tasks.spawn(task.run(ctx.stats.clone(), out.clone(), shutdown.clone()));
    }
    tracing::debug!(device = %ctx.device, tasks = tasks.len(), "sensors started");
    Sensors { tasks }
}

/// How long a read on request may take.
pub const READ_NOW_TIMEOUT: Duration = Duration::from_secs(4);

/// What a read on request found.
#[derive(Debug)]
pub enum ReadNow {
    /// A polled sensor, read just now by a source of its own (the running
    /// task is not disturbed): the value and when it was read (UTC ns).
    Read(Value, i64),
    /// The read failed.
    Failed(SensorError),
    /// An MQTT sensor (or one only the stats know): the last value
    /// received and when (UTC ns).
    Last(Value, i64),
    /// No sensor has this id, or an MQTT sensor that has received nothing.
    Unknown,
}

/// Reads the sensor `id` of `cfg` once, now: a polled sensor through a
/// fresh source (within [`READ_NOW_TIMEOUT`]), an MQTT sensor from the last
/// value it received.
pub async fn read_now(cfg: &AgentConfig, ctx: &SensorContext, id: &str) -> ReadNow {
    if let Some(mut p) = polled(cfg, ctx).into_iter().find(|p| p.meta.id == id) {
        return match tokio::time::timeout(READ_NOW_TIMEOUT, p.source.read()).await {
            Ok(Ok(v)) => ReadNow::Read(v, now_unix_ns()),
            Ok(Err(e)) => ReadNow::Failed(e),
            Err(_) => ReadNow::Failed(SensorError::Overdue {
                interval: READ_NOW_TIMEOUT,
            }),
        };
    }
    match ctx.stats.sensor_state(id).last {
        Some((v, ts)) => ReadNow::Last(v, ts),
        None => ReadNow::Unknown,
    }
}

/// Reads a polled sensor once per interval until `shutdown`, first after
/// its [`phase`] when `spread` (several sensors are polled).
async fn run_polled(
    mut p: Polled,
    spread: bool,
    stats: Arc<AgentStats>,
    out: mpsc::Sender<Observation>,
    shutdown: CancellationToken,
) {
    let offset = if spread {
        phase(&p.meta.id, p.interval)
    } else {
        Duration::ZERO
    };
    let first = tokio::time::Instant::now() + offset;
    let mut tick = tokio::time::interval_at(first, p.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut log = ErrorLog::default();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A read that outlives its interval (a hung sysfs, IIO or NFS read,
        // a FIFO nobody writes) costs only this sensor: each interval it
        // misses is counted as an error, and no second read is started
        // while it hangs, so a stuck sensor holds at most one blocking
        // thread.
        let result = {
            let read = p.source.read();
            tokio::pin!(read);
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    r = &mut read => break r,
                    _ = tick.tick() => {
                        let e = SensorError::Overdue { interval: p.interval };
                        stats.error(&p.meta.id, &e);
                        log.failed(&p.meta.id, &e);
                    }
                }
            }
        };
        if !deliver(
            &p.meta,
            &mut p.deadband,
            &mut log,
            result,
            &stats,
            &out,
            &shutdown,
        )
        .await
        {
            return;
        }
    }
}

/// Counts, logs, filters and sends the outcome of one read. False when the
/// sensor must stop (shutdown, or the receiver is gone).
pub(crate) async fn deliver(
    meta: &Arc<SensorMeta>,
    deadband: &mut Deadband,
    log: &mut ErrorLog,
    result: Result<Value, SensorError>,
    stats: &AgentStats,
    out: &mpsc::Sender<Observation>,
    shutdown: &CancellationToken,
) -> bool {
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            stats.error(&meta.id, &e);
            log.failed(&meta.id, &e);
            return true;
        }
    };
    log.ok(&meta.id);
    if !deadband.admit(&value) {
        stats.suppressed(&meta.id);
        return true;
    }
    let obs = Observation {
        sensor: meta.clone(),
        clock: stats.clock(),
        timestamp_ns: now_unix_ns(),
        value,
    };
    let permit = tokio::select! {
        biased;
        r = out.reserve() => match r {
            Ok(permit) => permit,
            Err(_) => return false,
        },
        // Stopping while the channel is full: one last try without waiting.
        _ = shutdown.cancelled() => {
            if let Ok(permit) = out.try_reserve() {
                stats.reading(&meta.id, &obs.value, obs.timestamp_ns);
                permit.send(obs);
            }
            return false;
        }
    };
    stats.reading(&meta.id, &obs.value, obs.timestamp_ns);
    permit.send(obs);
    true
}

/// The longest a polled sensor's first read waits after start.
pub const MAX_PHASE: Duration = Duration::from_secs(1);

/// When a polled sensor first reads after start, when several sensors are
/// polled (one alone reads at once): a stable offset from its id, spread
/// over its interval (at most [`MAX_PHASE`]). Sensors with the
/// same interval then do not all read in the same instant — as Prometheus
/// spreads the scrapes of one interval — so their readings leave as a
/// steady trickle instead of one burst per interval (lower latency, an
/// even load on the CPU and the link). The same id always gets the same
/// offset.
pub fn phase(sensor_id: &str, interval: Duration) -> Duration {
    let spread = u64::try_from(interval.min(MAX_PHASE).as_nanos()).unwrap_or(u64::MAX);
    if spread == 0 {
        return Duration::ZERO;
    }
    // FNV-1a, then splitmix64's finalizer so that ids differing in their
    // last character land far apart; stable across builds and platforms.
    let mut h = sensor_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // Whole milliseconds: tokio's timer does not resolve finer.
    let ms = (spread / 1_000_000).max(1);
    Duration::from_millis(h % ms)
}

/// Now, in UTC nanoseconds since the Unix epoch.
pub(crate) fn now_unix_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_unix_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs a blocking read on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SensorError> + Send + 'static,
) -> Result<T, SensorError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SensorError::Task(e.to_string()))?
}

/// An agent configuration with device `test` and the given sensor tables.
#[cfg(test)]
pub(crate) fn test_config(sensors: &str) -> AgentConfig {
    let text = format!("[agent]\ndevice = \"test\"\n{sensors}");
    tributary_config::parse(&text, std::path::Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[cfg(test)]
#[path = "spawn_tests.rs"]
mod spawn_tests;
