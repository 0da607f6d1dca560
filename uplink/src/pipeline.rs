//! The drain loop: pull from JetStream, convert, produce, and acknowledge
//! each message only after Kafka confirmed every record it produced.
//!
//! Messages are handled in the order they arrive and their outcomes are
//! taken in the same order (a `FuturesOrdered`), while Kafka works on up to
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

use crate::exactly_once::{HighWater, Origin, owns};
use crate::health::Health;
use crate::kafka::{KafkaSetupError, Producer, Topics};
use crate::metrics::Metrics;
use crate::murmur2::partition_for_key;
use crate::records::{self, Converted, DeadReason, ORIGIN_HEADER, OutRecord};
use crate::route::Router;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::Message;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use tributary_config::UplinkConfig;

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was asked for; in-flight work was drained.
    Shutdown,
    /// Exactly-once: a write failed; the session must start over from
    /// what Kafka holds.
    Failed(String),
}

/// The outcome of one message's writes.
struct Completed {
    msg: Message,
    seq: u64,
    /// Whether these writes were the message's dead letter.
    dead_letter: bool,
    results: Vec<Result<(), KafkaError>>,
    started: Instant,
    /// Kafka did not confirm every write within `kafka.delivery_timeout`
    /// (at-least-once only); the unconfirmed ones are still queued in the
    /// producer.
    stalled: bool,
}

/// One drain session: a producer, a consumer and their bookkeeping.
pub struct Session<'a> {
    /// The configuration.
    pub config: &'a UplinkConfig,
    /// The routing table.
    pub router: &'a Router,
    /// The producer.
    pub producer: Producer,
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
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("exactly_once", &self.high_water.is_some())
            .finish_non_exhaustive()
    }
}

/// A record refused by Kafka for good: writing it again cannot succeed.
fn permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

enum Dispatch {
    /// Writes started; their outcome will come back through the queue.
    Pending(BoxFuture<'static, Completed>),
    /// The message can be answered now.
    Answer(Box<Message>, AckKind),
}

impl Session<'_> {
    /// Drains `consumer` until `shutdown`, or until a failure that ends the
    /// session in exactly-once mode.
    pub async fn run(
        &mut self,
        consumer: &PullConsumer,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let max_in_flight = self.config.consumer.max_ack_pending.get();
        let batch = self.config.consumer.pull_batch.get().min(max_in_flight);
        let mut inflight: FuturesOrdered<BoxFuture<'static, Completed>> = FuturesOrdered::new();
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
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    if let Err(why) = self.complete(done, &mut inflight).await {
                        break SessionEnd::Failed(why);
                    }
                }
                next = pull.next(), if inflight.len() < max_in_flight => match next {
                    Some(Ok(msg)) => match self.dispatch(msg).await {
                        Ok(Dispatch::Pending(f)) => inflight.push_back(f),
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
                _ = tick.tick() => {}
            }
            if reset {
                messages = None;
            }
        };
        drop(messages);
        let drain_for = self.config.kafka.delivery_timeout.get() + Duration::from_secs(5);
        let deadline = Instant::now() + drain_for;
        if !inflight.is_empty() {
            info!(in_flight = inflight.len(), "draining in-flight messages");
        }
        while !inflight.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, inflight.next()).await {
                Ok(Some(done)) => {
                    if let Err(why) = self.complete(done, &mut inflight).await {
                        warn!(why, "a write failed while draining");
                        if self.high_water.is_some() {
                            break;
                        }
                        // At-least-once: the failed message was nak'ed;
                        // the others still get their answers.
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        left = inflight.len(),
                        "drain timed out; unacknowledged messages will be redelivered"
                    );
                    break;
                }
            }
        }
        self.metrics.in_flight.store(0, Relaxed);
        end
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

    /// Converts a message and starts its writes.
    async fn dispatch(&mut self, msg: Message) -> Result<Dispatch, String> {
        self.metrics.consumed.fetch_add(1, Relaxed);
        let (seq, pending) = match msg.info() {
            Ok(i) => (i.stream_sequence, i.pending),
            Err(e) => {
                warn!(error = %e, subject = %msg.subject, "a message without JetStream info; terminating it");
                return Ok(Dispatch::Answer(Box::new(msg), AckKind::Term));
            }
        };
        self.metrics.js_pending.store(pending, Relaxed);
        let max_record =
            usize::try_from(self.config.kafka.max_record_bytes.as_u64()).unwrap_or(usize::MAX);
        let converted = records::convert(
            self.router,
            msg.subject.as_str(),
            msg.headers.as_ref(),
            &msg.payload,
            max_record,
        );
        let (records, dead_letter) = match converted {
            Converted::Records(recs, readings) => {
                self.metrics.readings.fetch_add(readings as u64, Relaxed);
                // Every topic must exist before anything is written.
                let mut missing = None;
                for r in &recs {
                    match self.topics.partitions(&r.topic).await {
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
                match missing {
                    None => (recs, false),
                    Some(reason) => (vec![self.dead_letter(&msg, seq, &reason)], true),
                }
            }
            Converted::Dead(reason) => (vec![self.dead_letter(&msg, seq, &reason)], true),
        };
        self.send(msg, seq, records, dead_letter).await
    }

    fn nak(&self) -> AckKind {
        AckKind::Nak(Some(self.config.consumer.nak_delay.get()))
    }

    fn dead_letter(&self, msg: &Message, seq: u64, reason: &DeadReason) -> OutRecord {
        warn!(subject = %msg.subject, stream_seq = seq, reason = %reason, "dead-lettering a message");
        self.metrics.dead_letter(reason.label());
        let max_record =
            usize::try_from(self.config.kafka.max_record_bytes.as_u64()).unwrap_or(usize::MAX);
        records::dead_letter(
            Arc::from(self.config.kafka.dead_letter_topic.as_str()),
            msg.subject.as_str(),
            seq,
            msg.headers.as_ref(),
            &msg.payload,
            reason,
            max_record,
        )
    }

    /// Starts the writes of one message's records.
    async fn send(
        &mut self,
        msg: Message,
        seq: u64,
        records: Vec<OutRecord>,
        dead_letter: bool,
    ) -> Result<Dispatch, String> {
        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(records.len());
        let eo = &self.config.exactly_once;
        let (replica, replicas) = (eo.replica, eo.replica_count());
        // The origin header's value, reused from record to record.
        let mut origin_value = String::new();
        for (index, rec) in records.iter().enumerate() {
            let partition = match &rec.key {
                Some(k) => {
                    let n = match self.topics.partitions(&rec.topic).await {
                        Ok(n) => n,
                        Err(e) => {
                            if deliveries.is_empty() {
                                warn!(error = %e, topic = %rec.topic, "topic unavailable; will retry the message");
                                return Ok(Dispatch::Answer(Box::new(msg), self.nak()));
                            }
                            return Err(format!(
                                "topic {} unavailable mid-message: {e}",
                                rec.topic
                            ));
                        }
                    };
                    Some(partition_for_key(k, n))
                }
                None => None,
            };
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len() + 1);
            for (k, v) in &rec.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            if let Some(hw) = self.high_water.as_mut() {
                let p = partition.expect("exactly-once records always have a key");
                if !owns(p, replica, replicas) {
                    self.metrics.skipped.fetch_add(1, Relaxed);
                    continue;
                }
                let origin = Origin {
                    seq,
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                };
                let mark = hw
                    .get(&rec.topic, p)
                    .await
                    .map_err(|e| format!("exactly-once: {e}"))?;
                if mark.is_some_and(|m| origin <= m) {
                    self.metrics.skipped.fetch_add(1, Relaxed);
                    continue;
                }
                hw.advance(&rec.topic, p, origin);
                origin_value.clear();
                write!(origin_value, "{origin}").expect("writing to a String cannot fail");
                headers = headers.insert(Header {
                    key: ORIGIN_HEADER,
                    value: Some(origin_value.as_bytes()),
                });
            }
            let mut fr = FutureRecord::to(&rec.topic)
                .payload(&rec.payload)
                .headers(headers);
            if let Some(k) = &rec.key {
                fr = fr.key(&**k);
            }
            if let Some(p) = partition {
                fr = fr.partition(p);
            }
            loop {
                match self.producer.send_result(fr) {
                    Ok(d) => {
                        deliveries.push(d);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The queue drains as Kafka confirms (or, at least
                        // once, as writes time out): wait, then try again.
                        fr = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) if self.high_water.is_none() && deliveries.is_empty() => {
                        self.metrics.delivery_errors.fetch_add(1, Relaxed);
                        if permanent(&e) && !dead_letter {
                            let reason = DeadReason::Rejected(e.to_string());
                            let dl = self.dead_letter(&msg, seq, &reason);
                            return Box::pin(self.send(msg, seq, vec![dl], true)).await;
                        }
                        warn!(error = %e, "the producer refused a record; will retry the message");
                        return Ok(Dispatch::Answer(Box::new(msg), self.nak()));
                    }
                    Err((e, _)) => {
                        self.metrics.delivery_errors.fetch_add(1, Relaxed);
                        return Err(format!("the producer refused a record: {e}"));
                    }
                }
            }
        }
        if deliveries.is_empty() {
            return Ok(Dispatch::Answer(Box::new(msg), AckKind::Ack));
        }
        self.metrics.in_flight.fetch_add(1, Relaxed);
        // Exactly-once writes wait for as long as it takes.
        let deadline = self.high_water.is_none().then(|| {
            tokio::time::Instant::from_std(started) + self.config.kafka.delivery_timeout.get()
        });
        Ok(Dispatch::Pending(Box::pin(async move {
            let mut results = Vec::with_capacity(deliveries.len());
            let mut stalled = false;
            // One timer for the whole message, not one per record: after
            // the deadline, a delivery that is not already in counts as
            // stalled (as `timeout_at` would have it).
            let timer = deadline.map(tokio::time::sleep_until);
            tokio::pin!(timer);
            for mut d in deliveries {
                let outcome = match timer.as_mut().as_pin_mut() {
                    Some(mut sleep) => tokio::select! {
                        biased;
                        r = &mut d => Some(r),
                        () = &mut sleep => None,
                    },
                    None => Some(d.await),
                };
                results.push(match outcome {
                    Some(Ok(Ok(_))) => Ok(()),
                    Some(Ok(Err((e, _)))) => Err(e),
                    Some(Err(_)) => Err(KafkaError::Canceled),
                    None => {
                        stalled = true;
                        Err(KafkaError::MessageProduction(
                            RDKafkaErrorCode::MessageTimedOut,
                        ))
                    }
                });
            }
            Completed {
                msg,
                seq,
                dead_letter,
                results,
                started,
                stalled,
            }
        })))
    }

    /// Acts on a message's write outcome: ack, nak, dead-letter or (in
    /// exactly-once mode) fail the session.
    async fn complete(
        &mut self,
        done: Completed,
        inflight: &mut FuturesOrdered<BoxFuture<'static, Completed>>,
    ) -> Result<(), String> {
        self.metrics.in_flight.fetch_sub(1, Relaxed);
        let ok = done.results.iter().filter(|r| r.is_ok()).count();
        self.metrics.produced.fetch_add(ok as u64, Relaxed);
        self.metrics.observe_delivery(done.started.elapsed());
        let Some(err) = done.results.into_iter().find_map(Result::err) else {
            self.health.kafka_up();
            self.answer(&done.msg, AckKind::Ack).await;
            return Ok(());
        };
        self.metrics.delivery_errors.fetch_add(1, Relaxed);
        if self.high_water.is_some() {
            return Err(format!(
                "a Kafka write of stream sequence {} failed: {err}",
                done.seq
            ));
        }
        if done.stalled {
            // The producer still holds the unconfirmed writes; it would
            // send them whenever Kafka answers, and cannot be told not to
            // without purging it. Replace it, and have JetStream redeliver
            // the message.
            self.health.kafka_down();
            self.answer(&done.msg, self.nak()).await;
            return Err(format!(
                "Kafka did not confirm the writes of stream sequence {} within {:?}; replacing the producer",
                done.seq,
                self.config.kafka.delivery_timeout.get()
            ));
        }
        if fatal(&err) {
            // An idempotent producer in a fatal state (fenced, epoch lost)
            // refuses every later write: a new session with a new producer
            // is the only way on. The message is redelivered.
            self.answer(&done.msg, self.nak()).await;
            return Err(format!(
                "the Kafka producer hit a fatal error at stream sequence {}: {err}; recreating it",
                done.seq
            ));
        }
        if permanent(&err) {
            if done.dead_letter {
                error!(error = %err, stream_seq = done.seq, "the dead-letter write was refused; terminating the message (it stays in the stream)");
                self.answer(&done.msg, AckKind::Term).await;
                return Ok(());
            }
            let reason = DeadReason::Rejected(err.to_string());
            let dl = self.dead_letter(&done.msg, done.seq, &reason);
            match self.send(done.msg, done.seq, vec![dl], true).await? {
                Dispatch::Pending(f) => inflight.push_front(f),
                Dispatch::Answer(msg, kind) => self.answer(&msg, kind).await,
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

/// Errors after which an idempotent producer accepts nothing more and must
/// be replaced.
fn fatal(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
        )
    )
}
