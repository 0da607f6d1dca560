//! One drain session: pull from JetStream, convert, produce, and
//! acknowledge each message only after Kafka confirmed every record it
//! produced. The writes themselves are in [`super::send`].
//!
//! Messages are handled in the order they arrive; each one's records carry
//! its ticket in the producer's [`Ledger`], which hands back the messages
//! whose writes all came back, while Kafka works on up to
//! `consumer.max_ack_pending` of them at once. When Kafka is slow or down
//! the in-flight window fills and pulling stops; failed writes are nak'ed
//! with `consumer.nak_delay` (at-least-once) or end the session
//! (exactly-once, where writes never time out).
//!
//! At-least-once, a message whose writes Kafka has not confirmed within
//! `kafka.delivery_timeout` is nak'ed and ends the session, so that the
//! producer holding the stuck writes is purged and replaced by a new one.
//! librdkafka itself never times writes out (see
//! [`producer_config`](crate::kafka::producer_config) for why).

use super::error::SessionError;
use crate::dead_letter::Refused;
use crate::deliveries::{Ledger, Outcome};
use crate::exactly_once::HighWater;
use crate::health::Health;
use crate::kafka::{KafkaSetupError, Producer, Topics, fatal, permanent};
use crate::metrics::Metrics;
use crate::records::{self, DeadReason, Records};
use crate::route::Router;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::Message;
use futures::StreamExt;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::Producer as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use tributary_config::UplinkConfig;
use tributary_config::logging::error_chain;

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was asked for; in-flight work was drained.
    Shutdown,
    /// A failure only a new session (with a new producer, and in
    /// exactly-once mode a fresh look at what Kafka holds) gets past.
    Failed(SessionError),
}

/// A message whose records are being written, held by the producer's
/// [`Ledger`] until Kafka answered for every one of them.
#[derive(Debug)]
pub struct InFlight {
    pub(super) msg: Message,
    pub(super) seq: u64,
    /// When these writes are the message's dead letter: its reason's label.
    pub(crate) dead_letter: Option<&'static str>,
}

/// One drain session: a producer, a consumer and their bookkeeping.
pub struct Session<'a> {
    /// The configuration.
    pub config: &'a UplinkConfig,
    /// The routing table.
    pub router: &'a Router,
    /// The producer.
    pub producer: &'a Producer<InFlight>,
    /// Partition counts.
    pub topics: &'a mut Topics,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Liveness.
    pub health: Arc<Health>,
    /// Exactly-once state, `None` in at-least-once mode.
    pub high_water: Option<HighWater>,
    /// Bumped on every loop turn, for the systemd watchdog.
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
    /// The shutdown signal, also heeded while a write waits for room in
    /// librdkafka's queue.
    pub stop: CancellationToken,
    /// Messages Kafka refused for good, kept across sessions until their
    /// dead letters are written.
    pub refused: &'a mut Refused,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("exactly_once", &self.high_water.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) enum Dispatch {
    /// Writes started; the ledger tells when Kafka answered for them.
    Pending,
    /// The message can be answered now.
    Answer(Box<Message>, AckKind),
}

impl Session<'_> {
    pub(super) fn ledger(&self) -> Arc<Ledger<InFlight>> {
        self.producer.context().ledger().clone()
    }

    /// Drains `consumer` until `shutdown`, or until a failure that ends the
    /// session in exactly-once mode.
    pub async fn run(
        &mut self,
        consumer: &PullConsumer,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let max_in_flight = self.config.consumer.max_ack_pending.get();
        let batch = self.config.consumer.pull_batch.get().min(max_in_flight);
        let ledger = self.ledger();
        let mut done = Vec::new();
        let mut records = Records::default();
        let mut messages = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let end = loop {
            self.heartbeat.fetch_add(1, Relaxed);
            if messages.is_none() {
                match consumer
                    .stream()
                    .max_messages_per_batch(batch)
                    .messages()
                    .await
                {
                    Ok(m) => messages = Some(m),
                    Err(e) => {
                        warn!(error = %e, "cannot start pulling from JetStream; retrying");
                        self.health.nats_down();
                        tokio::select! {
                            () = shutdown.cancelled() => break SessionEnd::Shutdown,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            }
            let pull = messages.as_mut().expect("set above");
            let mut reset = false;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break SessionEnd::Shutdown,
                () = ledger.notified() => {
                    if let Err(why) = self.complete_done(&ledger, &mut done).await {
                        break SessionEnd::Failed(why);
                    }
                }
                next = pull.next(), if ledger.in_flight() < max_in_flight => match next {
                    Some(Ok(msg)) => match self.dispatch(msg, &mut records).await {
                        Ok(Dispatch::Pending) => {}
                        Ok(Dispatch::Answer(msg, kind)) => self.answer(&msg, kind).await,
                        Err(why) => break SessionEnd::Failed(why),
                    },
                    Some(Err(e)) => {
                        debug!(error = %e, "JetStream pull stream error");
                        if matches!(
                            e.kind(),
                            async_nats::jetstream::consumer::pull::MessagesErrorKind::ConsumerDeleted
                        ) {
                            reset = true;
                        }
                    }
                    None => reset = true,
                },
                _ = tick.tick() => {
                    if let Err(why) = self.check_stalled(&ledger).await {
                        break SessionEnd::Failed(why);
                    }
                }
            }
            if reset {
                messages = None;
            }
        };
        drop(messages);
        let drain_for = self.config.kafka.delivery_timeout.get() + Duration::from_secs(5);
        let deadline = Instant::now() + drain_for;
        if ledger.in_flight() > 0 {
            info!(
                in_flight = ledger.in_flight(),
                "draining in-flight messages"
            );
        }
        while ledger.in_flight() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, ledger.notified()).await {
                Ok(()) => {
                    if let Err(why) = self.complete_done(&ledger, &mut done).await {
                        warn!(error = %error_chain(&why), "a write failed while draining");
                        if self.high_water.is_some() {
                            break;
                        }
                        // At-least-once: the failed message was nak'ed;
                        // the others still get their answers.
                    }
                }
                Err(_) => {
                    warn!(
                        left = ledger.in_flight(),
                        "drain timed out; unacknowledged messages will be redelivered"
                    );
                    break;
                }
            }
        }
        self.metrics.in_flight.store(0, Relaxed);
        end
    }

    /// Answers every message whose writes all came back. Every one is
    /// answered; the first failure that ends the session is returned.
    async fn complete_done(
        &mut self,
        ledger: &Ledger<InFlight>,
        done: &mut Vec<(InFlight, Outcome)>,
    ) -> Result<(), SessionError> {
        ledger.take_done(done);
        let mut result = Ok(());
        for (flight, outcome) in done.drain(..) {
            let r = self.complete(flight, outcome).await;
            if result.is_ok() {
                result = r;
            }
        }
        self.publish_in_flight(ledger);
        result
    }

    /// Sets the in-flight gauge from the ledger.
    pub(super) fn publish_in_flight(&self, ledger: &Ledger<InFlight>) {
        let n = i64::try_from(ledger.in_flight()).unwrap_or(i64::MAX);
        self.metrics.in_flight.store(n, Relaxed);
    }

    /// At-least-once: a message whose writes Kafka has not answered for
    /// within `kafka.delivery_timeout` is nak'ed and ends the session, so
    /// that the producer holding the stuck writes is purged and replaced.
    /// Exactly-once writes wait for as long as it takes.
    async fn check_stalled(&mut self, ledger: &Ledger<InFlight>) -> Result<(), SessionError> {
        if self.high_water.is_some() {
            return Ok(());
        }
        let timeout = self.config.kafka.delivery_timeout.get();
        let Some(before) = Instant::now().checked_sub(timeout) else {
            return Ok(());
        };
        let Some((flight, outcome)) = ledger.take_stalled(before) else {
            return Ok(());
        };
        self.metrics.delivery_errors.fetch_add(1, Relaxed);
        self.metrics
            .produced
            .fetch_add(u64::from(outcome.confirmed), Relaxed);
        // The producer still holds the unconfirmed writes; it would send
        // them whenever Kafka answers, and cannot be told not to without
        // purging it. Replace it, and have JetStream redeliver the message.
        self.health.kafka_down();
        self.answer(&flight.msg, self.nak()).await;
        Err(SessionError::Stalled {
            seq: flight.seq,
            timeout,
        })
    }
    async fn answer(&self, msg: &Message, kind: AckKind) {
        let counter = match kind {
            AckKind::Ack => &self.metrics.acked,
            AckKind::Term => &self.metrics.terminated,
            _ => &self.metrics.naked,
        };
        counter.fetch_add(1, Relaxed);
        if let Err(e) = msg.ack_with(kind).await {
            warn!(error = %e, "cannot answer a JetStream message; it will be redelivered");
        }
    }

    /// Converts a message into `records` and starts their writes.
    async fn dispatch(
        &mut self,
        msg: Message,
        records: &mut Records,
    ) -> Result<Dispatch, SessionError> {
        self.metrics.consumed.fetch_add(1, Relaxed);
        let (seq, pending) = match msg.info() {
            Ok(i) => (i.stream_sequence, i.pending),
            Err(e) => {
                warn!(error = %e, subject = %msg.subject, "a message without JetStream info; terminating it");
                return Ok(Dispatch::Answer(Box::new(msg), AckKind::Term));
            }
        };
        self.metrics.js_pending.store(pending, Relaxed);
        if let Some(reason) = self.refused.take(seq) {
            // Refused before, maybe by a producer replaced since: straight
            // to the dead-letter topic, not to the broker that refused it.
            return self.send_dead_letter(msg, seq, &reason).await;
        }
        let converted = records::convert(
            self.router,
            msg.subject.as_str(),
            msg.headers.as_ref(),
            &msg.payload,
            self.max_record(),
            records,
        );
        let dead = match converted {
            Ok(()) => {
                self.metrics
                    .readings
                    .fetch_add(records.readings() as u64, Relaxed);
                if records
                    .iter()
                    .next()
                    .is_some_and(|r| Arc::ptr_eq(r.topic, self.router.outcome_topic()))
                {
                    self.metrics.outcomes.fetch_add(1, Relaxed);
                }
                // Every topic must exist before anything is written.
                let mut missing = None;
                let mut checked: Option<&Arc<str>> = None;
                for r in records.iter() {
                    if checked.is_some_and(|t| Arc::ptr_eq(t, r.topic)) {
                        continue;
                    }
                    checked = Some(r.topic);
                    match self.topics.partitions(r.topic).await {
                        Ok(_) => {}
                        Err(KafkaSetupError::MissingTopic(t)) => {
                            missing = Some(DeadReason::Rejected(format!(
                                "topic {t:?} does not exist and kafka.create_topics is false"
                            )));
                            break;
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot learn a topic's partitions; will retry the message");
                            self.health.kafka_down();
                            return Ok(Dispatch::Answer(Box::new(msg), self.nak()));
                        }
                    }
                }
                missing
            }
            Err(reason) => Some(reason),
        };
        if let Some(reason) = &dead {
            self.dead_letter(&msg, seq, reason, records);
        }
        self.send(msg, seq, records, dead.as_ref().map(DeadReason::label))
            .await
    }

    pub(crate) fn max_record(&self) -> usize {
        usize::try_from(self.config.kafka.max_record_bytes.as_u64()).unwrap_or(usize::MAX)
    }

    pub(super) fn nak(&self) -> AckKind {
        AckKind::Nak(Some(self.config.consumer.nak_delay.get()))
    }

    /// Acts on a message's write outcome: ack, nak, dead-letter or (in
    /// exactly-once mode) fail the session.
    async fn complete(&mut self, done: InFlight, outcome: Outcome) -> Result<(), SessionError> {
        self.metrics
            .produced
            .fetch_add(u64::from(outcome.confirmed), Relaxed);
        self.metrics.observe_delivery(outcome.opened.elapsed());
        let Some(err) = outcome.error else {
            self.health.kafka_up();
            if let Some(label) = done.dead_letter {
                self.metrics.dead_letter(label);
                self.refused.forget(done.seq);
            }
            self.answer(&done.msg, AckKind::Ack).await;
            return Ok(());
        };
        self.metrics.delivery_errors.fetch_add(1, Relaxed);
        if self.high_water.is_some() {
            return Err(SessionError::WriteFailed {
                seq: done.seq,
                source: err,
            });
        }
        if fatal(&err) {
            // An idempotent producer in a fatal state (fenced, epoch lost)
            // refuses every later write: a new session with a new producer
            // is the only way on. The message is redelivered.
            self.answer(&done.msg, self.nak()).await;
            return Err(SessionError::FatalProducer {
                seq: done.seq,
                source: err,
            });
        }
        if permanent(&err) {
            if done.dead_letter.is_some() {
                error!(error = %err, stream_seq = done.seq, "the dead-letter write was refused; terminating the message (it stays in the stream)");
                self.answer(&done.msg, AckKind::Term).await;
                return Ok(());
            }
            let reason = DeadReason::Rejected(err.to_string());
            let sent = self.send_dead_letter(done.msg, done.seq, &reason).await?;
            if let Dispatch::Answer(msg, kind) = sent {
                self.answer(&msg, kind).await;
            }
            return Ok(());
        }
        if matches!(
            err.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.health.kafka_down();
        }
        warn!(error = %err, stream_seq = done.seq, "a Kafka write failed; the message will be redelivered");
        self.answer(&done.msg, self.nak()).await;
        Ok(())
    }
}
