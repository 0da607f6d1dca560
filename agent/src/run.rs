//! The agent's life cycle: lock the state directory, open the buffer on its
//! own thread, start sensors, batcher and link, reload sensors on request,
//! and supervise it all.
//!
//! Supervision (mini-redis's `run` is the model): the loop selects on the
//! shutdown signal, on reloads, on values from the fleet store, and on the
//! end of every task it started — the buffer thread, the batcher, the link,
//! the clock watcher, the control service and the metrics endpoint. None
//! of them ends on its own in a healthy agent, so the first that does ends
//! the run: the others are stopped in order and [`run`] returns the cause,
//! so the process exits non-zero and systemd restarts it. A half-alive
//! agent (sensors running, nothing committing or forwarding) cannot happen.
//!
//! Reloads: the sensors (and MQTT broker) are restarted with a new list,
//! from SIGHUP (the local file again) or from the fleet store
//! ([`crate::control::fleet`]: validated as `check` validates a file, kept
//! in the state directory, reported as an event); buffered data is kept.
//! A fleet value in force stays laid over a reloaded file.
//!
//! Shutdown order, so that nothing accepted is lost and every state ends
//! within a bound: the sensors stop first (a sensor stuck in a read is
//! abandoned, not waited for); the batcher cuts what they sent; the link
//! publishes that if the hub is reachable, waits up to `forward.ack_timeout`
//! for the acks in flight, spills whatever is unacknowledged to the buffer
//! and closes it (cursor persisted). Whatever the hub did not acknowledge
//! stays in the buffer for the next start.

use crate::batcher::{self, BatchError, BatchLimits, BatchSettings, Message};
use crate::buffer::{Buffer, BufferConfig, OpenError};
use crate::buffer_owner::{self, BufferHandle, BufferThreadError};
use crate::control::fleet::{Decision, FleetState, FleetValue};
use crate::control::{self, ControlError, Running};
use crate::link::{Backoff, HubPublisher, Link, LinkError, LinkSettings};
use crate::nats_connect::{self, ConnectError};
use crate::sensors::{self, Observation, SensorContext};
use crate::state_lock::{LockError, StateLock};
use crate::stats::AgentStats;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_config::AgentConfig;

/// Observations waiting for the batcher; sensors wait when it is full.
pub const OBSERVATION_CHANNEL: usize = 1024;
/// Cut messages waiting for the link; the batcher waits when it is full.
pub const MESSAGE_CHANNEL: usize = 256;
/// How long stopping sensors may take before they are abandoned.
const SENSOR_STOP: Duration = Duration::from_secs(2);
/// How long the stop waits for the command task (an actuator being set).
const COMMANDS_STOP: Duration = Duration::from_secs(2);
/// How long the last NATS flush may take at shutdown.
const FINAL_FLUSH: Duration = Duration::from_secs(1);
/// Fleet values waiting for the supervisor; the watcher waits when full.
const FLEET_CHANNEL: usize = 4;
/// How long handing a control event to the NATS client may take.
const EVENT_PUBLISH: Duration = Duration::from_secs(1);

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Another agent runs on the same state directory.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The buffer directory could not be opened; check its path and
    /// permissions.
    #[error("cannot open the buffer")]
    OpenBuffer(#[from] OpenError),
    /// The NATS connection could not be set up.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The buffer failed (I/O error); restarting reopens and recovers it.
    #[error("the buffer failed")]
    Buffer(#[from] BufferThreadError),
    /// The batcher stopped.
    #[error("the batcher stopped")]
    Batch(#[from] BatchError),
    /// The link stopped.
    #[error("the link stopped")]
    Link(#[from] LinkError),
    /// The control service stopped.
    #[error("the control service stopped")]
    Control(#[from] ControlError),
    /// The metrics endpoint failed (e.g. its port is taken).
    #[error("the metrics endpoint on {addr} failed")]
    Metrics {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// A task ended although nothing asked it to (a bug).
    #[error("the {0} ended unexpectedly")]
    Ended(&'static str),
    /// A task panicked.
    #[error("a task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What the running agent exposes to its caller.
#[derive(Debug, Clone)]
pub struct Handles {
    /// Live counters.
    pub stats: Arc<AgentStats>,
}

/// The buffer configuration for `cfg`.
pub fn buffer_config(cfg: &AgentConfig) -> BufferConfig {
    BufferConfig {
        dir: cfg.buffer_dir(),
        max_bytes: cfg.buffer.max_size.as_u64(),
        segment_bytes: cfg.buffer.segment_size.as_u64(),
        when_full: cfg.buffer.when_full,
    }
}

/// The link settings for `cfg`.
pub fn link_settings(cfg: &AgentConfig) -> LinkSettings {
    LinkSettings {
        subject_prefix: cfg.forward.subject_prefix.clone(),
        ack_timeout: cfg.forward.ack_timeout.get(),
        max_in_flight: cfg.forward.max_in_flight.get(),
        backoff: Backoff::new(
            cfg.forward.backoff_initial.get(),
            cfg.forward.backoff_max.get(),
        ),
        flush_interval: cfg.buffer.flush_interval.get(),
        drain_deadline: cfg.forward.ack_timeout.get(),
        readback_dir: Some(cfg.buffer_dir()),
    }
}

/// The batcher settings for `cfg`.
pub fn batch_settings(cfg: &AgentConfig) -> BatchSettings {
    BatchSettings {
        device: cfg.agent.device.get_ref().clone(),
        subject_prefix: cfg.forward.subject_prefix.clone(),
        limits: BatchLimits {
            max_readings: cfg.forward.max_readings.get(),
            max_message_size: usize::try_from(cfg.forward.max_message_size.as_u64())
                .unwrap_or(usize::MAX),
        },
        linger: cfg.forward.linger,
        link_idle: None,
    }
}

/// The JetStream context the link publishes with, as `cfg` says: acks
/// awaited up to `forward.ack_timeout`, at most twice `forward.max_in_flight`
/// in flight (the publisher waits beyond). Public for tools and benchmarks
/// that assemble the agent's parts themselves (the fleet simulator).
pub fn jetstream(client: async_nats::Client, cfg: &AgentConfig) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(cfg.forward.ack_timeout.get())
        .max_ack_inflight(cfg.forward.max_in_flight.get() * 2)
        .backpressure_on_inflight(true)
        .build(client)
}

/// The link to the hub over `client` and the batcher settings that go
/// with it (the batcher sees when the link is idle), as the agent wires
/// them.
pub fn hub_link(
    client: async_nats::Client,
    buffer: BufferHandle,
    cfg: &AgentConfig,
    stats: Arc<AgentStats>,
) -> (Link<HubPublisher>, BatchSettings) {
    let publisher = HubPublisher::new(
        jetstream(client.clone(), cfg),
        client,
        &cfg.control.fleet_domain,
        &cfg.forward.subject_prefix,
        cfg.agent.device.get_ref(),
        cfg.forward.ack_timeout.get(),
    );
    let link = Link::new(publisher, buffer, link_settings(cfg), stats);
    let batch = BatchSettings {
        link_idle: Some(link.idle_watch()),
        ..batch_settings(cfg)
    };
    (link, batch)
}

/// The tasks the supervisor watches.
struct Tasks {
    link: JoinHandle<Result<(), LinkError>>,
    batcher: JoinHandle<Result<(), BatchError>>,
    buffer: buffer_owner::BufferThread,
    metrics: Option<JoinHandle<Result<(), RunError>>>,
    control: Option<JoinHandle<Result<(), ControlError>>>,
    control_stop: CancellationToken,
    /// The clock watcher; it ends only when `clock_stop` is cancelled.
    clock: JoinHandle<()>,
    clock_stop: CancellationToken,
    /// The command task, when there are actuators.
    commands: Option<JoinHandle<()>>,
    commands_stop: CancellationToken,
}

/// Runs the agent until `shutdown` is cancelled or a task fails. `cfg` is
/// the local file's configuration, read from `file` (shown by the control
/// plane). `reload` delivers new configurations (SIGHUP): the sensors are
/// restarted with the new list; buffered data is kept. `ready` is called
/// once the buffer is open and every task runs.
pub async fn run(
    cfg: AgentConfig,
    file: Option<PathBuf>,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<AgentConfig>,
    ready: impl FnOnce(Handles),
) -> Result<(), RunError> {
    let stats = Arc::new(AgentStats::default());
    stats
        .started_unix_ms
        .store(crate::sensors::now_unix_ms(), Relaxed);
    let _lock = StateLock::take(&cfg.buffer_dir())?;
    let bcfg = buffer_config(&cfg);
    let (buffer, report) = tokio::task::spawn_blocking(move || Buffer::open(bcfg)).await??;
    tracing::info!(
        dir = %cfg.buffer_dir().display(),
        records = report.records,
        torn_tail = report.torn_tail.is_some(),
        quarantined = report.quarantined.len(),
        records_lost = report.records_lost(),
        "buffer open"
    );
    buffer_owner::count_open_report(&report, &stats);
    let (handle, buffer_thread) = buffer_owner::spawn(buffer, stats.clone())?;
    stats.epoch.store(handle.epoch(), Relaxed);
    let (mut fleet, cfg) = tokio::task::spawn_blocking(move || FleetState::open(cfg, file)).await?;
    let device = cfg.agent.device.get_ref().clone();
    let client = nats_connect::connect(&cfg.nats, &format!("tributary-agent {device}")).await?;

    let link_stop = CancellationToken::new();
    let (msg_tx, msg_rx) = mpsc::channel::<Message>(MESSAGE_CHANNEL);
    let (link, batch) = hub_link(client.clone(), handle.clone(), &cfg, stats.clone());
    let link = tokio::spawn(link.run(msg_rx, link_stop.clone()));
    let (obs_tx, obs_rx) = mpsc::channel::<Observation>(OBSERVATION_CHANNEL);
    let batcher = tokio::spawn(batcher::run(obs_rx, msg_tx, handle, batch));
    let metrics_stop = CancellationToken::new();
    let metrics = cfg.metrics.listen.map(|addr| {
        let stats = stats.clone();
        let stop = metrics_stop.clone();
        tokio::spawn(async move {
            crate::metrics::serve(addr, stats, stop)
                .await
                .map_err(|source| RunError::Metrics { addr, source })
        })
    });
    let clock_stop = CancellationToken::new();
    let clock = crate::clock::start(
        crate::clock::SystemClock::default(),
        stats.clone(),
        clock_stop.clone(),
    )
    .await;
    let (running_tx, running_rx) = watch::channel(Arc::new(Running {
        config: cfg.clone(),
        origin: fleet.origin(),
    }));
    let (fleet_tx, mut fleet_rx) = mpsc::channel::<FleetValue>(FLEET_CHANNEL);
    let control_stop = CancellationToken::new();
    let control = cfg.control.enabled.then(|| {
        control::spawn(
            client.clone(),
            running_rx,
            stats.clone(),
            fleet_tx,
            control_stop.clone(),
        )
    });
    let commands_stop = CancellationToken::new();
    let commands = crate::commands::spawn(
        client.clone(),
        cfg.clone(),
        stats.clone(),
        commands_stop.clone(),
    );
    let events = Events {
        client: client.clone(),
        subject: cfg
            .control
            .event_subject(cfg.agent.device.get_ref(), "config"),
    };
    let mut tasks = Tasks {
        link,
        batcher,
        buffer: buffer_thread,
        metrics,
        control,
        control_stop,
        clock,
        clock_stop,
        commands,
        commands_stop,
    };
    ready(Handles {
        stats: stats.clone(),
    });

    let mut current = cfg;
    let mut sensor_stop = CancellationToken::new();
    let mut running = start_sensors(&current, &stats, &obs_tx, &sensor_stop);
    let mut ended_early = Ended::default();
    let failure = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            Some(new) = reload.recv() => {
                if new.agent != current.agent || new.buffer != current.buffer
                    || new.nats != current.nats || new.forward != current.forward
                    || new.control != current.control || new.metrics != current.metrics {
                    tracing::warn!("only sensors and mqtt are reloaded; restart the agent to apply other changes");
                }
                let (f, cfg) = tokio::task::spawn_blocking(move || {
                    let cfg = fleet.rebase(new);
                    (fleet, cfg)
                })
                .await?;
                fleet = f;
                restart_sensors(&mut current, cfg, &mut running, &mut sensor_stop, &stats, &obs_tx).await;
                running_tx.send_replace(Arc::new(Running { config: current.clone(), origin: fleet.origin() }));
                tracing::info!(sensors = current.sensors.len(), "sensors reloaded");
            }
            Some(value) = fleet_rx.recv() => {
                let (f, decision) = tokio::task::spawn_blocking(move || {
                    let d = fleet.offer(value);
                    (fleet, d)
                })
                .await?;
                fleet = f;
                match decision {
                    Decision::Nothing => {}
                    Decision::Refused(event) => events.publish(&event).await,
                    Decision::Apply(cfg, event) => {
                        restart_sensors(&mut current, *cfg, &mut running, &mut sensor_stop, &stats, &obs_tx).await;
                        events.publish(&event).await;
                    }
                }
                running_tx.send_replace(Arc::new(Running { config: current.clone(), origin: fleet.origin() }));
            }
            r = &mut tasks.link => {
                ended_early.link = true;
                break Some(ended("link", r.map(|r| r.map_err(RunError::from))));
            }
            r = &mut tasks.batcher => {
                ended_early.batcher = true;
                break Some(ended("batcher", r.map(|r| r.map_err(RunError::from))));
            }
            r = tasks.buffer.finished() => {
                break Some(r.err().map_or(RunError::Ended("buffer thread"), RunError::from));
            }
            r = join_optional(&mut tasks.metrics) => break Some(ended("metrics endpoint", r)),
            r = join_optional(&mut tasks.control) => {
                break Some(ended("control service", r.map(|r| r.map_err(RunError::from))));
            }
            r = join_optional(&mut tasks.commands) => {
                break Some(ended("command task", r.map(|()| Ok(()))));
            }
            r = &mut tasks.clock => {
                ended_early.clock = true;
                break Some(ended("clock watcher", r.map(|()| Ok(()))));
            }
        }
    };
    if let Some(e) = &failure {
        tracing::error!(error = %crate::error_chain(e), "a task failed; stopping the agent");
    }
    // Orderly stop: sensors, then the batcher (it ends when their channel
    // closes), then the link (it ends when the batcher's channel closes,
    // after its drain), which closes the buffer.
    sensor_stop.cancel();
    stop_sensors(running).await;
    drop(obs_tx);
    if failure.is_some() {
        // A part failed: the link must not wait for a batcher that may be
        // stuck; it still spills what it holds if the buffer lives.
        link_stop.cancel();
    }
    let outcome = finish(tasks, ended_early, &metrics_stop).await;
    if tokio::time::timeout(FINAL_FLUSH, client.flush())
        .await
        .is_err()
    {
        tracing::debug!("the last NATS flush did not finish; the hub is unreachable");
    }
    match failure {
        Some(e) => Err(e),
        None => outcome,
    }
}

/// Which tasks the supervisor already saw end.
#[derive(Debug, Default)]
struct Ended {
    link: bool,
    batcher: bool,
    clock: bool,
}

/// Waits for every task not yet ended, after the sensors stopped; the
/// first error wins (buffer, link, batcher, metrics).
async fn finish(
    mut tasks: Tasks,
    ended_early: Ended,
    metrics_stop: &CancellationToken,
) -> Result<(), RunError> {
    let batch = if ended_early.batcher {
        Ok(())
    } else {
        flatten((&mut tasks.batcher).await)
    };
    let link = if ended_early.link {
        Ok(())
    } else {
        flatten((&mut tasks.link).await)
    };
    metrics_stop.cancel();
    tasks.clock_stop.cancel();
    tasks.control_stop.cancel();
    tasks.commands_stop.cancel();
    if let Some(c) = tasks.commands.take() {
        // An actuator being set is let finish within its own bound (a
        // program's timeout); past COMMANDS_STOP it is abandoned.
        if tokio::time::timeout(COMMANDS_STOP, c).await.is_err() {
            tracing::warn!("the command task did not stop within {COMMANDS_STOP:?}; abandoned");
        }
    }
    let control = match tasks.control.take() {
        Some(c) => c
            .await
            .map_err(RunError::from)
            .and_then(|r| r.map_err(RunError::from)),
        None => Ok(()),
    };
    let clock = if ended_early.clock {
        Ok(())
    } else {
        flatten::<RunError>((&mut tasks.clock).await.map(Ok))
    };
    let metrics = match tasks.metrics.take() {
        Some(m) => m.await.map_err(RunError::from).and_then(|r| r),
        None => Ok(()),
    };
    tasks.buffer.finished().await?;
    link?;
    batch?;
    clock?;
    control?;
    metrics
}

fn flatten<E: Into<RunError>>(
    r: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), RunError> {
    match r {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(RunError::Task(e)),
    }
}

/// What a task's end means: an error, or an unexpected end.
fn ended(
    what: &'static str,
    result: Result<Result<(), RunError>, tokio::task::JoinError>,
) -> RunError {
    match result {
        Ok(Ok(())) => RunError::Ended(what),
        Ok(Err(e)) => e,
        Err(e) => RunError::Task(e),
    }
}

/// The end of an optional task; pending forever when there is none.
async fn join_optional<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(t) => {
            let r = t.await;
            *task = None;
            r
        }
        None => futures::future::pending().await,
    }
}

/// Where the supervisor publishes what it did with fleet values.
struct Events {
    client: async_nats::Client,
    subject: String,
}

impl Events {
    /// Publishes `event` (core NATS: whoever listens centrally sees it;
    /// `status` keeps the last refusal for those who did not).
    async fn publish(&self, event: &tributary_wire::control::ConfigEvent) {
        let Ok(body) = serde_json::to_vec(event) else {
            return;
        };
        let publish = self.client.publish(self.subject.clone(), body.into());
        match tokio::time::timeout(EVENT_PUBLISH, publish).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot publish a config event"),
            Err(_) => tracing::debug!("publishing a config event timed out"),
        }
    }
}

/// Stops the sensors, takes the sensors and MQTT broker of `new` into
/// `current`, and starts them again.
async fn restart_sensors(
    current: &mut AgentConfig,
    new: AgentConfig,
    running: &mut sensors::Sensors,
    stop: &mut CancellationToken,
    stats: &Arc<AgentStats>,
    tx: &mpsc::Sender<Observation>,
) {
    stop.cancel();
    let old = std::mem::replace(running, sensors::Sensors::none());
    stop_sensors(old).await;
    *stop = CancellationToken::new();
    current.sensors = new.sensors;
    current.mqtt = new.mqtt;
    *running = start_sensors(current, stats, tx, stop);
}

fn start_sensors(
    cfg: &AgentConfig,
    stats: &Arc<AgentStats>,
    tx: &mpsc::Sender<Observation>,
    stop: &CancellationToken,
) -> sensors::Sensors {
    let ctx = SensorContext {
        stats: stats.clone(),
        buffer_dir: cfg.buffer_dir(),
        device: cfg.agent.device.get_ref().clone(),
    };
    sensors::spawn(cfg, ctx, tx.clone(), stop.clone())
}

/// Waits for the sensor tasks, abandoning those that do not stop in time.
async fn stop_sensors(sensors: sensors::Sensors) {
    if tokio::time::timeout(SENSOR_STOP, sensors.join())
        .await
        .is_err()
    {
        tracing::warn!("sensors did not stop within {SENSOR_STOP:?}; abandoned");
    }
}
