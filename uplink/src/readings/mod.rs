//! The readings direction, NATS → Kafka: drain sessions one after the
//! other until shutdown.
//!
//! A session ([`session::Session`]) owns one producer and one pull
//! consumer; its writes are in [`send`]. A session ends for shutdown, or
//! with a [`SessionError`] that only a new producer gets past: the old one
//! is purged and destroyed first (nothing it queued may land after a new
//! session has read what Kafka holds), JetStream redelivers what was not
//! acknowledged, and the next session starts after `consumer.nak_delay`.
//! In exactly-once mode every session first rewinds its consumer to what
//! Kafka holds ([`crate::exactly_once`]).
//!
//! The downlink (Kafka → NATS, [`crate::downlink`]) runs beside this loop
//! on the same connections; neither needs the other.

mod error;
mod send;
pub mod session;

pub use error::SessionError;
pub use session::{InFlight, Session, SessionEnd};

use crate::dead_letter::Refused;
use crate::exactly_once::HighWater;
use crate::health::Health;
use crate::kafka::{self, Topics};
use crate::metrics::Metrics;
use crate::route::Router;
use crate::{RunError, jetstream};
use async_nats::jetstream::stream::Stream;
use rdkafka::producer::Producer as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};
use tributary_config::UplinkConfig;
use tributary_config::logging::error_chain;

/// The flush after the drain, before the producer goes.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Everything the drain sessions share.
pub struct Drain<'a> {
    /// The configuration.
    pub config: &'a UplinkConfig,
    /// The readings stream.
    pub stream: &'a Stream,
    /// The routing table.
    pub router: &'a Router,
    /// Partition counts.
    pub topics: &'a mut Topics,
    /// Refusals that outlive a session (see [`crate::dead_letter`]).
    pub refused: &'a mut Refused,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Liveness.
    pub health: Arc<Health>,
    /// Bumped by the drain loop, for the systemd watchdog.
    pub heartbeat: Arc<AtomicU64>,
}

impl std::fmt::Debug for Drain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("stream", &self.config.stream.name)
            .finish_non_exhaustive()
    }
}

impl Drain<'_> {
    /// Runs sessions until `shutdown`; an error only when a new session
    /// cannot be set up (the producer's configuration, the consumer).
    pub async fn run(self, shutdown: &CancellationToken) -> Result<(), RunError> {
        let Drain {
            config,
            stream,
            router,
            topics,
            refused,
            metrics,
            health,
            heartbeat,
        } = self;
        let exactly_once = config.exactly_once.enabled;
        let mut first = true;
        loop {
            let producer = Arc::new(kafka::producer(
                &config.kafka,
                exactly_once,
                health.clone(),
            )?);
            warm_up(&producer, router.fixed_topics(), shutdown).await;
            let consumer = if exactly_once {
                jetstream::rewind_consumer(stream, config).await?.0
            } else {
                jetstream::bind_consumer(stream, config).await?
            };
            health.set_ready(true);
            if first {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                info!(
                    stream = %config.stream.name,
                    consumer = %jetstream::durable_name(config),
                    exactly_once,
                    "uplink started"
                );
                first = false;
            }
            let mut session = Session {
                config,
                router,
                producer: &producer,
                topics: &mut *topics,
                metrics: metrics.clone(),
                health: health.clone(),
                high_water: exactly_once.then(|| HighWater::new(&config.kafka)),
                heartbeat: heartbeat.clone(),
                stop: shutdown.clone(),
                refused: &mut *refused,
            };
            let end = session.run(&consumer, shutdown).await;
            drop(session);
            match end {
                SessionEnd::Shutdown => {
                    // The drain waited for every confirmation it could get
                    // (`delivery_timeout` + 5 s): what is still queued now will
                    // not be acknowledged to JetStream anyway, so a short flush.
                    let _ = tokio::task::spawn_blocking(move || producer.flush(FINAL_FLUSH)).await;
                    info!("uplink stopped");
                    return Ok(());
                }
                SessionEnd::Failed(why) => {
                    let (kind, why) = (why.kind(), error_chain(&why));
                    if exactly_once {
                        error!(
                            kind,
                            why,
                            "the drain session failed; starting a new one from what Kafka holds"
                        );
                    } else {
                        error!(
                            kind,
                            why,
                            "the drain session failed; starting a new one with a new producer (unacknowledged messages are redelivered)"
                        );
                    }
                    // Stop the old producer for good before reading what Kafka
                    // holds: nothing it queued may land after that. Purging
                    // and destroying it block (librdkafka joins its threads),
                    // so not on a runtime worker.
                    let teardown = tokio::task::spawn_blocking(move || {
                        producer
                            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                        drop(producer);
                    });
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        _ = teardown => {}
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(config.consumer.nak_delay.get()) => {}
                    }
                }
            }
        }
    }
}

/// How long the warm-up of a new producer waits for each topic's metadata.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(5);

/// [`kafka::warm_up`] on a blocking thread; given up on at `shutdown` (the
/// thread then ends within its timeout). A broker that does not answer is
/// the session's to meet, so a failed warm-up is only logged at debug.
async fn warm_up<T: Send + Sync + 'static>(
    producer: &Arc<kafka::Producer<T>>,
    topics: Vec<Arc<str>>,
    shutdown: &CancellationToken,
) {
    let started = std::time::Instant::now();
    let warming = producer.clone();
    let job =
        tokio::task::spawn_blocking(move || kafka::warm_up(&warming, &topics, WARM_UP_TIMEOUT));
    tokio::select! {
        () = shutdown.cancelled() => {}
        done = job => match done {
            Ok(Ok(())) => debug!(elapsed = ?started.elapsed(), "Kafka producer warmed up"),
            Ok(Err(e)) => debug!(error = %e, "Kafka producer warm-up unanswered; draining anyway"),
            Err(e) => debug!(error = %e, "Kafka producer warm-up did not finish"),
        },
    }
}
