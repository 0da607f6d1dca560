//! The uplink as the NATS service `tributary-uplink`: `status` (mode,
//! stream, consumer pending, in flight, produced/acked/dead-lettered,
//! Kafka and NATS reachability, owned partitions in exactly-once mode) on
//! `<prefix>.uplink.<consumer>.<service id>.status`, plus
//! `$SRV.PING|INFO|STATS` (the service metadata names the status subject,
//! so `tributary-uplink fleet uplinks` finds every uplink). The documents
//! are [`tributary_wire::control`]'s.

use crate::health::Health;
use crate::metrics::Metrics;
use async_nats::service::ServiceExt;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_config::UplinkConfig;
use tributary_wire::control::{
    CONTROL_FORMAT, STATUS_SUBJECT_METADATA, UPLINK_SERVICE, UplinkStatus,
};

/// What the status is made of, besides the live counters.
#[derive(Debug, Clone)]
pub struct StatusSource {
    /// `at_least_once` or `exactly_once`.
    pub mode: &'static str,
    /// The stream drained.
    pub stream: String,
    /// The durable consumer.
    pub consumer: String,
    /// Partitions of `kafka.topic` this uplink writes (exactly-once).
    pub owned_partitions: Vec<i32>,
    /// When the uplink started.
    pub started: Instant,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the NATS service {UPLINK_SERVICE}")]
pub struct ServiceError(#[source] pub async_nats::Error);

/// Starts the service; it answers until `stop`.
pub async fn start(
    client: async_nats::Client,
    config: &UplinkConfig,
    source: StatusSource,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<impl Future<Output = ()> + Send + 'static, ServiceError> {
    // The status subject names this instance: a unique token, as the
    // client's inboxes have.
    let inbox = client.new_inbox();
    let id = inbox.rsplit('.').next().unwrap_or(&inbox).to_owned();
    let subject = config.control.status_subject(&source.consumer, &id);
    let service = client
        .service_builder()
        .description("Tributary uplink: NATS JetStream to Kafka")
        .metadata(HashMap::from([
            (STATUS_SUBJECT_METADATA.to_owned(), subject.clone()),
            ("consumer".to_owned(), source.consumer.clone()),
        ]))
        .start(UPLINK_SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(ServiceError)?;
    let mut status = service
        .endpoint_builder()
        .name("status")
        .add(subject.clone())
        .await
        .map_err(ServiceError)?;
    tracing::info!(%subject, "control service ready");
    Ok(async move {
        loop {
            let req = tokio::select! {
                _ = stop.cancelled() => break,
                r = status.next() => match r { Some(r) => r, None => break },
            };
            let doc = uplink_status(&source, &metrics, &health, &client);
            let body = serde_json::to_vec(&doc)
                .map(bytes::Bytes::from)
                .map_err(|e| async_nats::service::error::Error {
                    code: 500,
                    status: format!("cannot encode the status: {e}"),
                });
            if let Err(e) = req.respond(body).await {
                tracing::debug!(error = %e, "cannot send a status reply");
            }
        }
        let _ = service.stop().await;
    })
}

/// The status now.
pub fn uplink_status(
    source: &StatusSource,
    metrics: &Metrics,
    health: &Health,
    client: &async_nats::Client,
) -> UplinkStatus {
    UplinkStatus {
        format: CONTROL_FORMAT,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: source.started.elapsed().as_secs_f64(),
        mode: source.mode.to_owned(),
        stream: source.stream.clone(),
        consumer: source.consumer.clone(),
        consumer_pending: Some(metrics.js_pending.load(Relaxed)),
        in_flight: u64::try_from(metrics.in_flight.load(Relaxed)).unwrap_or(0),
        produced: metrics.produced.load(Relaxed),
        acked: metrics.acked.load(Relaxed),
        dead_lettered: metrics.dead_lettered.iter().map(|c| c.load(Relaxed)).sum(),
        kafka_reachable: health.kafka_down_for().is_none(),
        nats_connected: client.connection_state() == async_nats::connection::State::Connected,
        owned_partitions: source.owned_partitions.clone(),
    }
}
