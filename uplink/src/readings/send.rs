//! A message's writes: each record to its partition (from its key, as
//! Kafka's default partitioner would pick it), with the exactly-once origin
//! header where that mode is on, all under one ticket of the producer's
//! ledger; and a message's dead letter in place of its records.
//!
//! When librdkafka's queue is full the write waits for room (it drains as
//! Kafka confirms), but never past shutdown nor, at least once, past
//! `kafka.delivery_timeout`.

use super::error::SessionError;
use super::session::{Dispatch, InFlight, Session};
use crate::dead_letter::record;
use crate::exactly_once::{Mark, Origin, owns};
use crate::kafka::{KafkaSetupError, permanent};
use crate::murmur2::partition_for_key;
use crate::records::{DeadReason, ORIGIN_HEADER, Record, Records};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::message::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tracing::warn;

impl Session<'_> {
    /// The partition of `rec`, from its key; `None` lets the producer pick.
    async fn partition(&mut self, rec: &Record<'_>) -> Result<Option<i32>, KafkaSetupError> {
        let Some(key) = rec.key else {
            return Ok(None);
        };
        let n = self.topics.partitions(rec.topic).await?;
        Ok(Some(partition_for_key(key, n)))
    }

    /// Starts the writes of one message's records (`dead_letter`: the
    /// label of the reason when they are its dead letter).
    pub(crate) async fn send(
        &mut self,
        msg: Message,
        seq: u64,
        records: &Records,
        dead_letter: Option<&'static str>,
    ) -> Result<Dispatch, SessionError> {
        let ledger = self.ledger();
        let ticket = ledger.open();
        let mut writes = 0u32;
        let eo = &self.config.exactly_once;
        let (replica, replicas) = (eo.replica, eo.replica_count());
        // The records of a message mostly share topic and key: the last
        // record's partition, and in exactly-once mode the partition's mark.
        let mut last: Option<(Record<'_>, Option<i32>)> = None;
        let mut mark: Option<Mark<'_>> = None;
        // The origin header's value, reused from record to record.
        let mut origin_value = String::new();
        // When librdkafka's queue was first found full for this message.
        let mut queue_full_since: Option<Instant> = None;
        for (index, rec) in records.iter().enumerate() {
            let partition = match last {
                Some((prev, p)) if same_target(&prev, &rec) => p,
                _ => match self.partition(&rec).await {
                    Ok(p) => p,
                    Err(e) => {
                        ledger.abandon(ticket, writes);
                        self.flush_mark(mark);
                        if writes == 0 {
                            warn!(error = %e, topic = %rec.topic, "topic unavailable; will retry the message");
                            return Ok(Dispatch::Answer(Box::new(msg), self.nak()));
                        }
                        return Err(SessionError::TopicUnavailable {
                            topic: rec.topic.to_string(),
                            source: e,
                        });
                    }
                },
            };
            last = Some((rec, partition));
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers().len() + 1);
            for (key, value) in rec.headers() {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
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
                let m = match hw.mark(mark.take(), rec.topic, p).await {
                    Ok(m) => mark.insert(m),
                    Err(e) => {
                        ledger.abandon(ticket, writes);
                        return Err(SessionError::Recovery(e));
                    }
                };
                if !m.admit(origin) {
                    self.metrics.skipped.fetch_add(1, Relaxed);
                    continue;
                }
                origin_value.clear();
                write!(origin_value, "{origin}").expect("writing to a String cannot fail");
                headers = headers.insert(Header {
                    key: ORIGIN_HEADER,
                    value: Some(origin_value.as_bytes()),
                });
            }
            let mut br = BaseRecord::with_opaque_to(rec.topic, ticket.opaque())
                .payload(rec.payload)
                .headers(headers);
            if let Some(k) = rec.key {
                br = br.key(&**k);
            }
            if let Some(p) = partition {
                br = br.partition(p);
            }
            loop {
                match self.producer.send(br) {
                    Ok(()) => {
                        writes += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The queue drains as Kafka confirms: wait, then try
                        // again, but never past shutdown nor, at least once,
                        // past `kafka.delivery_timeout` (Kafka is away: the
                        // session ends and the producer is replaced, as for
                        // a stalled write).
                        br = back;
                        let waited = queue_full_since.get_or_insert_with(Instant::now).elapsed();
                        let give_up = self.stop.is_cancelled()
                            || (self.high_water.is_none()
                                && waited >= self.config.kafka.delivery_timeout.get());
                        if give_up {
                            ledger.abandon(ticket, writes);
                            self.metrics.delivery_errors.fetch_add(1, Relaxed);
                            if writes == 0 && self.high_water.is_none() {
                                return Ok(Dispatch::Answer(Box::new(msg), self.nak()));
                            }
                            return Err(SessionError::QueueFull { waited });
                        }
                        tokio::select! {
                            () = self.stop.cancelled() => {}
                            () = tokio::time::sleep(Duration::from_millis(5)) => {}
                        }
                    }
                    Err((e, _)) if self.high_water.is_none() && writes == 0 => {
                        ledger.abandon(ticket, 0);
                        self.metrics.delivery_errors.fetch_add(1, Relaxed);
                        if permanent(&e) && dead_letter.is_none() {
                            let reason = DeadReason::Rejected(e.to_string());
                            return self.send_dead_letter(msg, seq, &reason).await;
                        }
                        warn!(error = %e, "the producer refused a record; will retry the message");
                        return Ok(Dispatch::Answer(Box::new(msg), self.nak()));
                    }
                    Err((e, _)) => {
                        ledger.abandon(ticket, writes);
                        self.metrics.delivery_errors.fetch_add(1, Relaxed);
                        return Err(SessionError::Refused(e));
                    }
                }
            }
        }
        self.flush_mark(mark);
        if writes == 0 {
            ledger.abandon(ticket, 0);
            return Ok(Dispatch::Answer(Box::new(msg), AckKind::Ack));
        }
        ledger.seal(
            ticket,
            writes,
            InFlight {
                msg,
                seq,
                dead_letter,
            },
        );
        self.publish_in_flight(&ledger);
        Ok(Dispatch::Pending)
    }

    /// Records in the high-water marks what was sent to `mark`'s partition.
    fn flush_mark(&mut self, mark: Option<Mark<'_>>) {
        if let (Some(hw), Some(mark)) = (self.high_water.as_mut(), mark) {
            hw.record(mark);
        }
    }

    /// Writes the dead-letter record of `msg` into `records`.
    pub(crate) fn dead_letter(
        &self,
        msg: &Message,
        seq: u64,
        reason: &DeadReason,
        records: &mut Records,
    ) {
        warn!(subject = %msg.subject, stream_seq = seq, reason = %reason, "dead-lettering a message");
        record(
            &Arc::from(self.config.kafka.dead_letter_topic.as_str()),
            msg.subject.as_str(),
            seq,
            msg.headers.as_ref(),
            &msg.payload,
            reason,
            self.max_record(),
            records,
        );
    }

    /// Sends `msg`'s dead letter in place of its records; a refusal by
    /// Kafka is remembered until the dead letter is written.
    pub(crate) async fn send_dead_letter(
        &mut self,
        msg: Message,
        seq: u64,
        reason: &DeadReason,
    ) -> Result<Dispatch, SessionError> {
        if let DeadReason::Rejected(why) = reason {
            self.refused.remember(seq, why);
        }
        let mut records = Records::default();
        self.dead_letter(&msg, seq, reason, &mut records);
        Box::pin(self.send(msg, seq, &records, Some(reason.label()))).await
    }
}

/// Whether two records of a message go to the same topic with the same
/// key (and so to the same partition).
fn same_target(a: &Record<'_>, b: &Record<'_>) -> bool {
    Arc::ptr_eq(a.topic, b.topic)
        && match (a.key, b.key) {
            (Some(x), Some(y)) => Arc::ptr_eq(x, y) || x == y,
            (None, None) => true,
            _ => false,
        }
}
