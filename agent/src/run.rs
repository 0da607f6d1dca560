//! The agent's life cycle: open the buffer, start sensors, batcher and
//! forwarder, reload sensors on request, and stop everything in order on one
//! shutdown signal.
//!
//! Shutdown order, so that nothing accepted is lost: the sensors stop first;
//! the batcher commits what they sent (one last fsync); the forwarder waits
//! up to a deadline for the acks of messages in flight; the buffer is closed
//! (its cursor persisted). Whatever the hub did not acknowledge stays in the
//! buffer for the next start.

use crate::batcher::{BatchLimits, Batcher, CommitError, SharedBuffer};
use crate::buffer::{Buffer, BufferConfig, OpenError};
use crate::forwarder::{Backoff, ForwardError, ForwardSettings, Forwarder};
use crate::nats_connect::{self, ConnectError};
use crate::sensors::{self, Observation, SensorContext};
use crate::stats::AgentStats;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tributary_config::AgentConfig;

/// Observations waiting for the batcher; sensors wait when it is full.
const OBSERVATION_CHANNEL: usize = 1024;
/// Most observations held in memory between two flushes; reaching it
/// commits early.
const MAX_PENDING: usize = 16 * 1024;

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The buffer directory could not be opened; check its path and
    /// permissions.
    #[error("cannot open the buffer")]
    OpenBuffer(#[from] OpenError),
    /// The NATS connection could not be set up.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Writing to the buffer failed; restarting reopens and recovers it.
    #[error("buffer write failed")]
    Commit(#[from] CommitError),
    /// Reading the buffer failed; restarting reopens and recovers it.
    #[error("forwarding failed")]
    Forward(#[from] ForwardError),
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

/// Runs the agent until `shutdown` is cancelled. `reload` delivers new
/// configurations (SIGHUP): the sensors are restarted with the new list;
/// buffered data is kept. `ready` is called once the buffer is open.
pub async fn run(
    cfg: AgentConfig,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<AgentConfig>,
    ready: impl FnOnce(Handles),
) -> Result<(), RunError> {
    let stats = Arc::new(AgentStats::default());
    let bcfg = buffer_config(&cfg);
    let (buffer, report) = tokio::task::spawn_blocking(move || Buffer::open(bcfg)).await??;
    tracing::info!(
        dir = %cfg.buffer_dir().display(),
        records = report.records,
        torn_tail = report.torn_tail.is_some(),
        quarantined = report.quarantined.len(),
        "buffer open"
    );
    let buffer: SharedBuffer = Arc::new(Mutex::new(buffer));
    let device = cfg.agent.device.get_ref().clone();
    let client = nats_connect::connect(&cfg.nats, &format!("tributary-agent {device}")).await?;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(cfg.forward.ack_timeout.get())
        .max_ack_inflight(cfg.forward.max_in_flight.get() * 2)
        .backpressure_on_inflight(true)
        .build(client.clone());

    let committed = Arc::new(Notify::new());
    let acked = Arc::new(Notify::new());
    let forward_stop = CancellationToken::new();
    let forwarder = Forwarder::new(
        buffer.clone(),
        js,
        ForwardSettings {
            subject_prefix: cfg.forward.subject_prefix.clone(),
            ack_timeout: cfg.forward.ack_timeout.get(),
            max_in_flight: cfg.forward.max_in_flight.get(),
            backoff: Backoff::new(
                cfg.forward.backoff_initial.get(),
                cfg.forward.backoff_max.get(),
            ),
            drain_deadline: cfg.forward.ack_timeout.get(),
        },
        stats.clone(),
        committed.clone(),
        acked.clone(),
    );
    let forwarder = tokio::spawn(forwarder.run(forward_stop.clone()));

    let (tx, rx) = mpsc::channel::<Observation>(OBSERVATION_CHANNEL);
    let batcher = Batcher::new(
        buffer.clone(),
        device.clone(),
        BatchLimits {
            max_readings: cfg.forward.max_readings.get(),
            max_message_size: usize::try_from(cfg.forward.max_message_size.as_u64())
                .unwrap_or(usize::MAX),
        },
        stats.clone(),
    );
    let batcher = tokio::spawn(batch_loop(
        batcher,
        rx,
        cfg.buffer.flush_interval.get(),
        committed,
        acked,
        buffer.clone(),
        stats.clone(),
    ));
    let metrics = cfg.metrics.listen.map(|addr| {
        let stats = stats.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(addr, stats, stop).await {
                tracing::error!(%addr, error = %e, "metrics endpoint failed");
            }
        })
    });
    crate::clock::start(
        crate::clock::SystemClock::default(),
        stats.clone(),
        shutdown.clone(),
    )
    .await;
    ready(Handles {
        stats: stats.clone(),
    });

    let mut current = cfg;
    let mut sensor_stop = shutdown.child_token();
    let mut running = start_sensors(&current, &stats, &tx, &sensor_stop);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(new) = reload.recv() => {
                if new.agent != current.agent || new.buffer != current.buffer
                    || new.nats != current.nats || new.forward != current.forward {
                    tracing::warn!("only sensors and mqtt are reloaded; restart the agent to apply other changes");
                }
                sensor_stop.cancel();
                running.join().await;
                sensor_stop = shutdown.child_token();
                current.sensors = new.sensors;
                current.mqtt = new.mqtt;
                running = start_sensors(&current, &stats, &tx, &sensor_stop);
                tracing::info!(sensors = current.sensors.len(), "sensors reloaded");
            }
        }
    }
    sensor_stop.cancel();
    running.join().await;
    drop(tx);
    let batch_result = batcher.await?;
    forward_stop.cancel();
    let forward_result = forwarder.await?;
    client.flush().await.ok();
    let buffer = Arc::try_unwrap(buffer).map(|m| m.into_inner().expect("buffer mutex poisoned"));
    if let Ok(mut buffer) = buffer {
        let unacked = buffer.stats().unacked_records;
        tokio::task::spawn_blocking(move || {
            if let Err(e) = buffer.close() {
                tracing::warn!(error = %e, "closing the buffer failed; the next start recovers it");
            }
        })
        .await?;
        tracing::info!(unacknowledged = unacked, "agent stopped");
    }
    if let Some(metrics) = metrics {
        metrics.await?;
    }
    batch_result?;
    forward_result?;
    Ok(())
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

/// Collects observations and commits them once per flush interval.
async fn batch_loop(
    mut batcher: Batcher,
    mut rx: mpsc::Receiver<Observation>,
    flush_interval: Duration,
    committed: Arc<Notify>,
    acked: Arc<Notify>,
    buffer: SharedBuffer,
    stats: Arc<AgentStats>,
) -> Result<(), CommitError> {
    let mut pending: Vec<Observation> = Vec::new();
    let mut tick = tokio::time::interval(flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    while open || !pending.is_empty() || batcher.is_blocked() {
        let accepting = open && !batcher.is_blocked() && pending.len() < MAX_PENDING;
        tokio::select! {
            obs = rx.recv(), if accepting => match obs {
                Some(obs) => {
                    pending.push(obs);
                    continue;
                }
                None => open = false,
            },
            _ = tick.tick() => {}
            _ = acked.notified(), if batcher.is_blocked() => {}
        }
        if !open && batcher.is_blocked() {
            let readings: usize = pending.len();
            tracing::warn!(
                pending = readings,
                "buffer full at shutdown; readings held back by the block policy are lost"
            );
            break;
        }
        let (b, p, result) = tokio::task::spawn_blocking(move || {
            let result = batcher.commit(&mut pending);
            (batcher, pending, result)
        })
        .await
        .expect("commit task panicked");
        batcher = b;
        pending = p;
        let done = result?;
        if done.messages > 0 {
            committed.notify_one();
        }
        publish_buffer_stats(&buffer, &stats);
        stats.batcher_ticks.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn publish_buffer_stats(buffer: &SharedBuffer, stats: &AgentStats) {
    let s = buffer.lock().expect("buffer mutex poisoned").stats();
    stats
        .buffer_records
        .store(s.unacked_records, Ordering::Relaxed);
    stats.buffer_bytes.store(s.bytes_on_disk, Ordering::Relaxed);
    stats.oldest_unacked_unix_ms.store(
        s.oldest_unacked_appended_at_ms.unwrap_or(0),
        Ordering::Relaxed,
    );
    stats
        .bytes_written
        .store(s.bytes_written, Ordering::Relaxed);
    stats
        .dropped_records
        .store(s.dropped_oldest + s.dropped_newest, Ordering::Relaxed);
}
