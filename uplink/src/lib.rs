//! `tributary-uplink`: drains the hub's JetStream stream into Kafka.
//!
//! [`run`] is the whole service: it creates or verifies the stream, binds
//! the durable pull consumer, checks (or creates) the Kafka topics, then
//! converts every message into records (one JSON record per reading, or the
//! bytes passed through), writes them with an idempotent `acks=all`
//! producer, and acknowledges each JetStream message only after Kafka
//! confirmed every record it produced. Bad messages go to a dead-letter
//! topic; an exactly-once mode removes the duplicates a crash would cause.
//!
//! ```no_run
//! # async fn f() -> Result<(), tributary_uplink::RunError> {
//! let config = tributary_config::load_uplink("uplink.toml".as_ref()).unwrap();
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! tributary_uplink::run(config, shutdown).await
//! # }
//! ```
//!
//! Modules: [`route`] (subjects to topics), [`records`] (messages to
//! records), [`dead_letter`] (what is one, what it keeps), [`readings`]
//! (the drain loop, NATS → Kafka), [`deliveries`] (which messages Kafka confirmed),
//! [`exactly_once`], [`kafka`], [`kafka_log`] (librdkafka's logs,
//! rate-limited),
//! [`jetstream`], [`nats_connect`], [`murmur2`], [`metrics`], [`health`],
//! [`control`] (the uplink as a NATS service), [`downlink`] (Kafka → NATS:
//! commands to devices), [`tail`] (the `tail`
//! subcommand), [`fleet`] (the `fleet` subcommand: the central command).

pub mod control;
pub mod dead_letter;
pub mod deliveries;
pub mod downlink;
pub mod exactly_once;
pub mod fleet;
pub mod health;
pub mod jetstream;
pub mod kafka;
pub mod kafka_log;
pub mod metrics;
pub mod murmur2;
pub mod nats_connect;
pub mod readings;
pub mod records;
pub mod route;
pub mod tail;

use crate::health::Health;
use crate::kafka::{KafkaSetupError, Topics};
use crate::metrics::Metrics;
use crate::route::Router;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_config::UplinkConfig;

/// Why the uplink stopped with an error. Every variant happens at start,
/// before anything was consumed: fix the cause and start again.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The hub could not be reached.
    #[error(transparent)]
    Nats(#[from] nats_connect::NatsConnectError),
    /// The stream or consumer could not be set up.
    #[error(transparent)]
    JetStream(#[from] jetstream::JetStreamError),
    /// Kafka could not be set up (configuration, missing topic, brokers).
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// The downlink failed (its command stream, positions or Kafka).
    #[error(transparent)]
    Downlink(#[from] downlink::DownlinkError),
    /// The downlink's task panicked (a bug: the message says where).
    #[error("the downlink panicked: {0}")]
    DownlinkPanicked(String),
    /// The metrics endpoint could not listen.
    #[error("cannot listen on {addr} for the metrics endpoint: {reason}")]
    Http {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why (in the message, so not also a `source`).
        reason: std::io::Error,
    },
}

/// Runs the uplink until `shutdown` is cancelled, then drains in-flight
/// work and returns.
pub async fn run(config: UplinkConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    run_with(
        config,
        shutdown,
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
    )
    .await
}

/// [`run`] with counters and health state the caller can read.
pub async fn run_with(
    config: UplinkConfig,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), RunError> {
    let tasks = tokio_util::task::TaskTracker::new();
    let stop_tasks = shutdown.child_token();
    let result = serve(&config, &shutdown, &stop_tasks, &tasks, metrics, health).await;
    stop_tasks.cancel();
    tasks.close();
    tasks.wait().await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    result
}

async fn serve(
    config: &UplinkConfig,
    shutdown: &CancellationToken,
    stop_tasks: &CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), RunError> {
    if let Some(addr) = config.http.listen {
        let handle = metrics::serve(
            addr,
            metrics.clone(),
            health.clone(),
            config.http.unhealthy_after.get(),
            stop_tasks.clone(),
        )
        .await
        .map_err(|reason| RunError::Http { addr, reason })?;
        tasks.spawn(async move {
            let _ = handle.await;
        });
        info!(%addr, "metrics at /metrics, health at /health");
    }
    let client = nats_connect::connect(&config.nats).await?;
    info!(urls = ?config.nats.urls, "connected to the hub");
    let js = async_nats::jetstream::new(client.clone());
    let stream = jetstream::ensure_stream(&js, config).await?;
    let router = Router::new(config);
    let mut topics = Topics::new(&config.kafka);
    // Refusals outlive a session and its producer (see dead_letter.rs).
    let mut refused = dead_letter::Refused::default();
    let dlq: Arc<str> = Arc::from(config.kafka.dead_letter_topic.as_str());
    for topic in router.fixed_topics().iter().chain([&dlq]) {
        let n = topics.partitions(topic).await?;
        info!(topic = %topic, partitions = n, "Kafka topic ready");
    }
    let exactly_once = config.exactly_once.enabled;
    if config.control.enabled {
        let main: Arc<str> = Arc::from(config.kafka.topic.as_str());
        let owned = if exactly_once {
            let eo = &config.exactly_once;
            let n = topics.partitions(&main).await?;
            (0..n)
                .filter(|p| exactly_once::owns(*p, eo.replica, eo.replica_count()))
                .collect()
        } else {
            Vec::new()
        };
        let source = control::StatusSource {
            mode: if exactly_once {
                "exactly_once"
            } else {
                "at_least_once"
            },
            stream: config.stream.name.clone(),
            consumer: jetstream::durable_name(config),
            owned_partitions: owned,
            started: std::time::Instant::now(),
        };
        let service = control::start(
            client.clone(),
            config,
            source,
            metrics.clone(),
            health.clone(),
            stop_tasks.clone(),
        )
        .await;
        match service {
            Ok(serve) => {
                tasks.spawn(serve);
            }
            Err(e) => warn!(error = %e, cause = %e.0, "running without the control service"),
        }
    }
    let heartbeat = Arc::new(AtomicU64::new(0));
    // The downlink beside the drain loop, on the same connection: if it
    // fails, the uplink ends with its cause (systemd restarts it).
    let downlink = (!config.downlink.is_empty()).then(|| {
        let part = downlink::Downlink {
            client: client.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        tokio::spawn(part.run(stop_tasks.clone()))
    });
    spawn_watchers(
        tasks,
        stop_tasks,
        config,
        client,
        health.clone(),
        heartbeat.clone(),
    );
    let readings_stop = shutdown.child_token();
    let drain = readings::Drain {
        config,
        stream: &stream,
        router: &router,
        topics: &mut topics,
        refused: &mut refused,
        metrics,
        health,
        heartbeat,
    };
    let readings = drain.run(&readings_stop);
    let Some(mut downlink) = downlink else {
        return readings.await;
    };
    tokio::pin!(readings);
    tokio::select! {
        result = &mut readings => {
            stop_tasks.cancel();
            let _ = downlink.await;
            result
        }
        ended = &mut downlink => {
            readings_stop.cancel();
            let result = readings.await;
            match ended {
                Ok(Ok(())) => result,
                Ok(Err(e)) => Err(RunError::Downlink(e)),
                Err(panic) => Err(RunError::DownlinkPanicked(panic.to_string())),
            }
        }
    }
}

/// Background tasks: NATS connection state and a Kafka metadata probe feed
/// the health state; the systemd watchdog is pinged while the drain loop
/// turns.
fn spawn_watchers(
    tasks: &tokio_util::task::TaskTracker,
    stop: &CancellationToken,
    config: &UplinkConfig,
    client: async_nats::Client,
    health: Arc<Health>,
    heartbeat: Arc<AtomicU64>,
) {
    let (stop1, h1) = (stop.clone(), health.clone());
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                () = stop1.cancelled() => return,
                _ = tick.tick() => {}
            }
            match client.connection_state() {
                async_nats::connection::State::Connected => h1.nats_up(),
                _ => h1.nats_down(),
            }
        }
    });
    let stop2 = stop.clone();
    let prober = match kafka::Prober::new(&config.kafka) {
        Ok(p) => Some(p),
        Err(e) => {
            warn!(error = %e, "cannot make the Kafka health probe; /health will report Kafka down");
            None
        }
    };
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        // A probe every 2 s through an outage: one line a minute.
        let mut failures = tributary_config::logging::Window::default();
        loop {
            tokio::select! {
                () = stop2.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(p) = prober.clone() else {
                health.kafka_down();
                continue;
            };
            // A probe of a frozen broker takes its 5 s timeout: never make
            // the stop wait for it.
            let probe = tokio::task::spawn_blocking(move || p.probe());
            let outcome = tokio::select! {
                () = stop2.cancelled() => return,
                outcome = probe => outcome,
            };
            match outcome {
                Ok(Ok(())) => {
                    health.kafka_up();
                    let failed = failures.clear();
                    if failed > 0 {
                        info!(failed_probes = failed, "Kafka answers again");
                    }
                }
                Ok(Err(e)) => {
                    let now = std::time::Instant::now();
                    if let tributary_config::logging::Decision::Log { suppressed } =
                        failures.decide(now, tributary_config::logging::ratelimit::LOG_EVERY)
                    {
                        warn!(error = %e, suppressed, "Kafka probe failed");
                    }
                    health.kafka_down();
                }
                Err(_) => health.kafka_down(),
            }
        }
    });
    if let Some(period) = sd_notify::watchdog_enabled() {
        let stop3 = stop.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            let mut last = u64::MAX;
            loop {
                tokio::select! {
                    () = stop3.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = heartbeat.load(Relaxed);
                if now != last {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    last = now;
                }
            }
        });
    }
}
