//! Group commit: observations become envelopes in the disk buffer.
//!
//! Sensors send [`Observation`]s into a bounded channel. Once per flush
//! interval the batcher takes everything that arrived, gives each reading
//! its sequence number (in arrival order, from the buffer's never-repeating
//! allocator), groups the readings per sensor into wire [`Envelope`]s of at
//! most `max_readings` readings and `max_message_size` bytes, appends each
//! envelope as one buffer record and makes them durable with one `fdatasync`.
//!
//! Because a message is cut before it is written, its boundaries (and so its
//! `Nats-Msg-Id`) are recorded on disk: a resend after a lost ack or a crash
//! is byte-for-byte the same message, which the hub's duplicate window drops.
//!
//! The price is the documented power-cut window: readings taken since the
//! last flush live only in memory, so a power cut loses at most one flush
//! interval of readings.

use crate::buffer::{AppendError, AppendOutcome, Buffer, FlushError, SeqError};
use crate::sensors::Observation;
use crate::stats::AgentStats;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tributary_wire::{Clock, EncodeError, Envelope, Sample};

/// The buffer, shared by the batcher (append, flush) and the forwarder
/// (read, ack). The lock is only ever taken inside blocking sections, never
/// across an `.await`.
pub type SharedBuffer = Arc<Mutex<Buffer>>;

/// How the batcher cuts messages.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// Most readings in one envelope.
    pub max_readings: usize,
    /// Largest encoded envelope in bytes.
    pub max_message_size: usize,
}

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Sequence numbers could not be reserved (the meta file could not be
    /// written); the readings are kept in memory and retried.
    #[error("cannot reserve sequence numbers")]
    Seq(#[from] SeqError),
    /// Appending failed; the buffer must be reopened.
    #[error("cannot append to the buffer")]
    Append(#[source] AppendError),
    /// The fsync failed; readings since the last flush may be lost.
    #[error("cannot flush the buffer")]
    Flush(#[from] FlushError),
}

/// What one commit did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// Envelopes appended.
    pub messages: usize,
    /// Readings in them.
    pub readings: usize,
    /// Readings refused by the `drop_newest` policy.
    pub dropped_newest: usize,
    /// With the `block` policy: the buffer is full and readings are still
    /// pending; call again after acknowledgements freed space.
    pub blocked: bool,
}

/// Cuts pending observations into envelopes and writes them durably.
#[derive(Debug)]
pub struct Batcher {
    buffer: SharedBuffer,
    device: String,
    epoch: u64,
    limits: BatchLimits,
    stats: Arc<AgentStats>,
    /// Envelopes cut and sequenced but not yet appended (only while the
    /// `block` policy holds them back).
    held: Vec<(Vec<u8>, usize)>,
}

impl Batcher {
    /// A batcher for `device`, writing into `buffer`.
    pub fn new(
        buffer: SharedBuffer,
        device: String,
        limits: BatchLimits,
        stats: Arc<AgentStats>,
    ) -> Self {
        let epoch = buffer.lock().expect("buffer mutex poisoned").epoch();
        Batcher {
            buffer,
            device,
            epoch,
            limits,
            stats,
            held: Vec::new(),
        }
    }

    /// The installation epoch of the buffer.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether envelopes are held back by a full buffer (`block` policy).
    pub fn is_blocked(&self) -> bool {
        !self.held.is_empty()
    }

    /// Sequences, cuts, appends and flushes `pending` (which is emptied).
    /// Blocking I/O: call from a blocking task.
    pub fn commit(&mut self, pending: &mut Vec<Observation>) -> Result<Committed, CommitError> {
        let mut buffer = self.buffer.lock().expect("buffer mutex poisoned");
        if !pending.is_empty() {
            let seqs = buffer.allocate_seqs(pending.len() as u64)?;
            let envelopes = cut(
                &self.device,
                self.epoch,
                &self.limits,
                pending.drain(..).zip(seqs),
            );
            for env in envelopes {
                match env.encode() {
                    Ok(bytes) => self.held.push((bytes, env.samples.len())),
                    Err(e) => log_unencodable(&env, &e),
                }
            }
        }
        let mut done = Committed::default();
        let mut appended = 0;
        for (bytes, readings) in &self.held {
            match buffer.append(bytes) {
                Ok(AppendOutcome::Stored(_)) => {
                    done.messages += 1;
                    done.readings += readings;
                }
                Ok(AppendOutcome::DroppedNewest) => {
                    done.dropped_newest += readings;
                    self.stats
                        .dropped_readings
                        .fetch_add(*readings as u64, Ordering::Relaxed);
                }
                Err(AppendError::Full { .. }) => {
                    done.blocked = true;
                    break;
                }
                Err(e) => {
                    // Keep what was not appended; the caller reopens the buffer.
                    self.held.drain(..appended);
                    return Err(CommitError::Append(e));
                }
            }
            appended += 1;
        }
        self.held.drain(..appended);
        // Also persists the ack cursor when acknowledgements moved it; costs
        // nothing when neither records nor the cursor changed.
        buffer.flush()?;
        Ok(done)
    }
}

fn log_unencodable(env: &Envelope, e: &EncodeError) {
    tracing::error!(
        sensor = %env.sensor,
        readings = env.samples.len(),
        error = %e,
        "readings cannot be encoded and are dropped"
    );
}

/// Groups sequenced observations per sensor (keeping arrival order within a
/// sensor, sensors in order of first arrival) and cuts envelopes that
/// respect `limits`. One envelope never mixes clock states: a sensor's run
/// of readings is split where its clock state changes, so its envelopes
/// still come in the order of its readings.
pub fn cut(
    device: &str,
    epoch: u64,
    limits: &BatchLimits,
    sequenced: impl Iterator<Item = (Observation, u64)>,
) -> Vec<Envelope> {
    let mut groups: Vec<(Arc<crate::sensors::SensorMeta>, Clock, Vec<Sample>)> = Vec::new();
    for (obs, seq) in sequenced {
        let sample = Sample {
            seq,
            timestamp_ns: obs.timestamp_ns,
            value: obs.value,
        };
        // The sensor's latest group: later groups of a sensor hold later
        // readings, so appending only there keeps the sensor's order.
        let latest = groups
            .iter_mut()
            .rev()
            .find(|(meta, _, _)| Arc::ptr_eq(meta, &obs.sensor) || meta.id == obs.sensor.id);
        match latest {
            Some((_, clock, samples)) if *clock == obs.clock => samples.push(sample),
            _ => groups.push((obs.sensor, obs.clock, vec![sample])),
        }
    }
    let mut out = Vec::new();
    for (meta, clock, samples) in groups {
        let template = Envelope {
            device: device.to_owned(),
            epoch,
            sensor: meta.id.clone(),
            unit: meta.unit.clone(),
            tags: meta.tags.clone(),
            clock,
            samples: Vec::new(),
        };
        let fixed = envelope_overhead(&template);
        let mut current = template.clone();
        let mut size = fixed;
        for sample in samples {
            let len = sample.encoded_len();
            let full = current.samples.len() >= limits.max_readings
                || (!current.samples.is_empty() && size + len > limits.max_message_size);
            if full {
                out.push(std::mem::replace(&mut current, template.clone()));
                size = fixed;
            }
            size += len;
            current.samples.push(sample);
        }
        if !current.samples.is_empty() {
            out.push(current);
        }
    }
    out
}

/// Encoded size of an envelope without samples, plus the largest length
/// prefix a sample vector can need beyond the one already counted.
fn envelope_overhead(env: &Envelope) -> usize {
    env.encoded_len() + 9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::SensorMeta;
    use tributary_wire::Value;

    fn obs(sensor: &Arc<SensorMeta>, clock: Clock, ts: i64) -> Observation {
        Observation {
            sensor: sensor.clone(),
            timestamp_ns: ts,
            clock,
            value: Value::Int(ts),
        }
    }

    fn meta(id: &str) -> Arc<SensorMeta> {
        Arc::new(SensorMeta {
            id: id.into(),
            unit: None,
            tags: vec![],
        })
    }

    #[test]
    fn cut_never_mixes_clock_states_in_one_envelope_and_keeps_order_within_each() {
        let (temp, door) = (meta("temp"), meta("door"));
        let limits = BatchLimits {
            max_readings: 100,
            max_message_size: 1 << 20,
        };
        let observations = vec![
            obs(&temp, Clock::Unsynced, 1),
            obs(&door, Clock::Unsynced, 2),
            obs(&temp, Clock::Unsynced, 3),
            // The clock synchronizes (and may jump) between two readings.
            obs(&temp, Clock::Synced, 4),
            obs(&door, Clock::Synced, 5),
            obs(&temp, Clock::Synced, 6),
        ];
        let envelopes = cut("pi", 7, &limits, observations.into_iter().zip(10..));
        let summary: Vec<(&str, Clock, Vec<u64>)> = envelopes
            .iter()
            .map(|e| {
                (
                    e.sensor.as_str(),
                    e.clock,
                    e.samples.iter().map(|s| s.seq).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("temp", Clock::Unsynced, vec![10, 12]),
                ("door", Clock::Unsynced, vec![11]),
                ("temp", Clock::Synced, vec![13, 15]),
                ("door", Clock::Synced, vec![14]),
            ]
        );
        for e in &envelopes {
            e.validate().unwrap();
        }
    }

    #[test]
    fn a_sensor_whose_clock_state_flips_back_keeps_its_readings_in_order() {
        let temp = meta("temp");
        let limits = BatchLimits {
            max_readings: 100,
            max_message_size: 1 << 20,
        };
        let observations = [
            Clock::Unsynced,
            Clock::Synced,
            Clock::Unsynced,
            Clock::Unsynced,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, c)| obs(&temp, c, i as i64));
        let envelopes = cut("pi", 7, &limits, observations.zip(0..));
        let summary: Vec<(Clock, Vec<u64>)> = envelopes
            .iter()
            .map(|e| (e.clock, e.samples.iter().map(|s| s.seq).collect()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Clock::Unsynced, vec![0]),
                (Clock::Synced, vec![1]),
                (Clock::Unsynced, vec![2, 3]),
            ]
        );
    }

    #[test]
    fn cut_sets_the_clock_of_every_envelope_it_splits_by_the_limits() {
        let temp = meta("temp");
        let limits = BatchLimits {
            max_readings: 2,
            max_message_size: 1 << 20,
        };
        let observations = (0..5).map(|i| obs(&temp, Clock::Unknown, i));
        let envelopes = cut("pi", 7, &limits, observations.zip(0..));
        assert_eq!(envelopes.len(), 3);
        assert!(envelopes.iter().all(|e| e.clock == Clock::Unknown));
    }
}
