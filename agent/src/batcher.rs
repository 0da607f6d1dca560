//! Cutting readings into messages: observations become encoded envelopes
//! within a few milliseconds of being taken.
//!
//! Sensors send [`Observation`]s into a bounded channel. The batcher takes
//! the first one, lingers up to `forward.linger` for more (taking everything
//! that is already waiting without delay), then cuts: it gives each reading
//! its sequence number (in arrival order, from the buffer's never-repeating
//! allocator), groups the readings per sensor and clock state into wire
//! [`Envelope`]s of at most `max_readings` readings and `max_message_size`
//! bytes, encodes each once, and hands the [`Message`]s to the link. A cut
//! happens earlier as soon as the pending readings could fill a message.
//!
//! Because a message is cut and encoded exactly once, its bytes and its
//! `Nats-Msg-Id` never change: whether it is published at once, written to
//! the disk buffer and resent after an outage, or resent after a crash, the
//! hub sees the identical message and its duplicate window drops repeats.
//!
//! Durability is the link's business (see [`crate::link`]): a message is on
//! the disk or acknowledged by the hub within one flush interval of the
//! moment its first reading arrived here.

use crate::buffer_owner::{BufferGone, BufferHandle};
use crate::link_idle::LinkIdle;
use crate::sensors::Observation;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tributary_wire::{Clock, EncodeError, Envelope, Sample};

/// How the batcher cuts messages.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// Most readings in one envelope.
    pub max_readings: usize,
    /// Largest encoded envelope in bytes.
    pub max_message_size: usize,
}

/// One cut message, encoded once, ready to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// The encoded envelope.
    pub bytes: Bytes,
    /// `<prefix>.<device>.<sensor>`.
    pub subject: String,
    /// Its `Nats-Msg-Id`.
    pub msg_id: String,
    /// Readings in it.
    pub readings: usize,
    /// When its first reading reached the batcher: the link makes it
    /// durable within one flush interval of this.
    pub taken_at: Instant,
    /// Timestamp of its first reading (UTC ns), for latency figures.
    pub first_timestamp_ns: i64,
}

/// Why the batcher stopped.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Sequence numbers could not be had: the buffer thread stopped (its
    /// own error is the cause).
    #[error("cannot reserve sequence numbers")]
    Seqs(#[from] BufferGone),
    /// The link stopped taking messages (its own error is the cause).
    #[error("the link stopped taking messages")]
    LinkGone,
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// The device id.
    pub device: String,
    /// Subject prefix.
    pub subject_prefix: String,
    /// Message size limits.
    pub limits: BatchLimits,
    /// How long the first pending reading waits for company while the
    /// link is busy.
    pub linger: Duration,
    /// The link's idle signal; `None`: always linger.
    pub link_idle: Option<LinkIdle>,
}

/// Cuts observations from `rx` into messages for `out` until `rx` closes
/// (the sensors stopped); then cuts what is pending and returns.
pub async fn run(
    mut rx: mpsc::Receiver<Observation>,
    out: mpsc::Sender<Message>,
    buffer: BufferHandle,
    mut settings: BatchSettings,
) -> Result<(), BatchError> {
    let epoch = buffer.epoch();
    let mut idle = settings.link_idle.take();
    let mut pending: Vec<(Observation, Instant)> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut open = true;
    while open {
        if pending.is_empty() {
            match rx.recv().await {
                Some(obs) => {
                    pending_bytes += obs_size(&obs);
                    pending.push((obs, Instant::now()));
                }
                None => break,
            }
        }
        // Whatever is already waiting joins without delay.
        while !full(&pending, pending_bytes, &settings.limits) {
            match rx.try_recv() {
                Ok(obs) => {
                    pending_bytes += obs_size(&obs);
                    pending.push((obs, Instant::now()));
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let deadline = pending[0].1 + settings.linger;
        while open && !full(&pending, pending_bytes, &settings.limits) {
            if idle.as_ref().is_some_and(LinkIdle::is_idle) {
                break;
            }
            tokio::select! {
                biased;
                obs = rx.recv() => match obs {
                    Some(obs) => {
                        pending_bytes += obs_size(&obs);
                        pending.push((obs, Instant::now()));
                    }
                    None => open = false,
                },
                _ = wait_idle(&mut idle) => break,
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        cut_and_send(&mut pending, &out, &buffer, epoch, &settings, &mut idle).await?;
        pending_bytes = 0;
    }
    if !pending.is_empty() {
        cut_and_send(&mut pending, &out, &buffer, epoch, &settings, &mut idle).await?;
    }
    Ok(())
}

/// Resolves when the link becomes idle; never without a signal.
async fn wait_idle(idle: &mut Option<LinkIdle>) {
    match idle {
        Some(idle) => idle.wait_idle().await,
        None => std::future::pending().await,
    }
}

/// Whether the pending readings could fill one message already.
fn full(pending: &[(Observation, Instant)], bytes: usize, limits: &BatchLimits) -> bool {
    pending.len() >= limits.max_readings || bytes >= limits.max_message_size
}

/// An upper bound of what an observation adds to an envelope.
fn obs_size(obs: &Observation) -> usize {
    Sample::encoded_len_of(u64::MAX, obs.timestamp_ns, &obs.value)
}

async fn cut_and_send(
    pending: &mut Vec<(Observation, Instant)>,
    out: &mpsc::Sender<Message>,
    buffer: &BufferHandle,
    epoch: u64,
    settings: &BatchSettings,
    idle: &mut Option<LinkIdle>,
) -> Result<(), BatchError> {
    if pending.is_empty() {
        return Ok(());
    }
    let seqs = buffer.allocate_seqs(pending.len() as u64).await?;
    let taken: Vec<Instant> = pending.iter().map(|(_, at)| *at).collect();
    let sequenced = pending.drain(..).map(|(obs, _)| obs).zip(seqs.clone());
    let envelopes = cut(&settings.device, epoch, &settings.limits, sequenced);
    for env in envelopes {
        let Some(message) = encode(&env, &settings.subject_prefix, |seq| {
            usize::try_from(seq - seqs.start)
                .ok()
                .and_then(|i| taken.get(i))
                .copied()
        }) else {
            continue;
        };
        out.send(message).await.map_err(|_| BatchError::LinkGone)?;
        if let Some(idle) = idle {
            idle.sent();
        }
    }
    Ok(())
}

/// Encodes one envelope into a [`Message`]; `taken_at` maps a sequence
/// number to the arrival of its reading (the message counts from its first). None (logged) if it cannot be
/// encoded.
fn encode(
    env: &Envelope,
    prefix: &str,
    taken_at: impl Fn(u64) -> Option<Instant>,
) -> Option<Message> {
    let bytes = match env.encode() {
        Ok(bytes) => bytes,
        Err(e) => {
            log_unencodable(env, &e);
            return None;
        }
    };
    // Samples keep their arrival order: the first arrived first.
    let first = env.samples.first()?;
    let taken_at = taken_at(first.seq).unwrap_or_else(Instant::now);
    Some(Message {
        bytes: bytes.into(),
        subject: env.subject(prefix),
        msg_id: env.msg_id(),
        readings: env.samples.len(),
        taken_at,
        first_timestamp_ns: first.timestamp_ns,
    })
}

/// Cuts and encodes already sequenced observations into messages, as the
/// batcher does (for tools and benchmarks that fill a buffer directly).
pub fn messages(
    device: &str,
    epoch: u64,
    limits: &BatchLimits,
    prefix: &str,
    sequenced: impl Iterator<Item = (Observation, u64)>,
) -> Vec<Message> {
    cut(device, epoch, limits, sequenced)
        .iter()
        .filter_map(|env| encode(env, prefix, |_| None))
        .collect()
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
#[path = "batcher_tests.rs"]
mod tests;
