//! The envelope: one NATS message carrying readings of one sensor.
//!
//! # Byte layout (format version 2, written; versions 1 and 2, read)
//!
//! ```text
//! +---------+----------------------------------------------------------+
//! | u8 = 2  | postcard(device, epoch, sensor, unit, tags, clock,        |
//! |         |          samples)                     = postcard(Envelope)|
//! +---------+----------------------------------------------------------+
//! | u8 = 1  | postcard(device, epoch, sensor, unit, tags, samples)      |
//! +---------+----------------------------------------------------------+
//! ```
//!
//! Version 2 adds one field, `clock` ([`Clock`]): what the device knew
//! about its own clock when it took the samples. postcard writes it as the
//! variant's index, one varint byte: `0` = [`Clock::Unknown`], `1` =
//! [`Clock::Synced`], `2` = [`Clock::Unsynced`]. These numbers are the
//! contract: variants are never reordered, new ones only appended (and a
//! decoder that does not know an index rejects the envelope as malformed).
//!
//! Version 1 (agents before the clock field) is still decoded, forever: old
//! agents in the field keep meeting new uplinks. A version-1 envelope
//! decodes with `clock` = [`Clock::Unknown`], since its agent did not say.
//! `tests/fixtures/` holds golden bytes of both versions that must keep
//! decoding. This build only ever writes version 2 ([`WIRE_VERSION`]).
//!
//! postcard fixes the byte order of everything it writes (varints, little
//! endian where fixed width), so the encoding does not depend on the machine.
//! The leading version byte lets a future format coexist on the same stream:
//! a decoder rejects a version it does not know with
//! [`DecodeError::UnknownVersion`] instead of misreading it.
//!
//! Encoding is deterministic: the same envelope always gives the same bytes,
//! which is what lets the agent resend a message after a lost ack and have
//! the hub's duplicate window recognise it.

use crate::subject::{self, IdError};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The format version written by this crate.
pub const WIRE_VERSION: u8 = 2;
/// The oldest format version this crate still decodes (every version from
/// it up to [`WIRE_VERSION`] is read).
pub const OLDEST_READ_VERSION: u8 = 1;
/// The most samples one envelope may carry.
pub const MAX_SAMPLES: usize = 10_000;
/// The most tags one sensor may carry.
pub const MAX_TAGS: usize = 32;
/// The longest text (unit, tag key or value, text value) in bytes.
pub const MAX_TEXT_LEN: usize = 256;

/// One NATS message: a batch of samples of one sensor of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The device (a NATS subject token).
    pub device: String,
    /// The agent installation's epoch: chosen once when the agent's buffer is
    /// created, so sequence numbers of a re-installed device never collide.
    pub epoch: u64,
    /// The sensor (a NATS subject token).
    pub sensor: String,
    /// The unit of every sample, if the sensor has one.
    pub unit: Option<String>,
    /// Tags of the sensor, sorted by key, keys unique.
    pub tags: Vec<(String, String)>,
    /// The state of the device's clock when every one of the samples was
    /// taken (an agent never mixes states in one envelope). Since format
    /// version 2; [`Clock::Unknown`] for a version-1 envelope.
    pub clock: Clock,
    /// The samples, in the order they were taken; never empty.
    pub samples: Vec<Sample>,
}

/// What the device knew about its wall clock when it took a reading.
///
/// A Raspberry Pi has no real-time clock: until NTP (or another source)
/// synchronized it after boot, its time may be hours or years off, and it
/// jumps when it is set. The agent asks the system; the reading carries the
/// answer all the way into Kafka.
///
/// On the wire it is the variant's index (see the module's byte layout); in
/// JSON its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// Nobody said: a version-1 envelope, or an agent that could not tell
    /// (no time-synchronization service it knows of). Index 0.
    Unknown,
    /// The clock was synchronized: the timestamp is as good as the time
    /// service. Index 1.
    Synced,
    /// The clock was not (yet) synchronized: the timestamp may be far off.
    /// Index 2.
    Unsynced,
}

impl Clock {
    /// Whether the clock was known to be synchronized.
    pub fn is_synced(&self) -> bool {
        *self == Clock::Synced
    }

    /// The lowercase name used in JSON and logs: `synced`, `unsynced`,
    /// `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Clock::Unknown => "unknown",
            Clock::Synced => "synced",
            Clock::Unsynced => "unsynced",
        }
    }
}

impl fmt::Display for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of a format-version-1 envelope: [`Envelope`] without `clock`.
/// Only decoded (and, in tests, encoded to make version-1 bytes).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct EnvelopeV1 {
    device: String,
    epoch: u64,
    sensor: String,
    unit: Option<String>,
    tags: Vec<(String, String)>,
    samples: Vec<Sample>,
}

impl From<EnvelopeV1> for Envelope {
    fn from(v1: EnvelopeV1) -> Self {
        Envelope {
            device: v1.device,
            epoch: v1.epoch,
            sensor: v1.sensor,
            unit: v1.unit,
            tags: v1.tags,
            clock: Clock::Unknown,
            samples: v1.samples,
        }
    }
}

/// One measurement inside an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Per-device sequence number; never repeats within an epoch.
    pub seq: u64,
    /// When it was taken: nanoseconds since the Unix epoch, UTC.
    pub timestamp_ns: i64,
    /// What was measured.
    pub value: Value,
}

/// One reading with everything it needs to stand alone (as in Kafka).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'a> {
    /// The device it came from.
    pub device: &'a str,
    /// The agent installation's epoch.
    pub epoch: u64,
    /// The sensor it came from.
    pub sensor: &'a str,
    /// Its unit, if any.
    pub unit: Option<&'a str>,
    /// The sensor's tags.
    pub tags: &'a [(String, String)],
    /// The device's clock state when the sample was taken.
    pub clock: Clock,
    /// The sample itself.
    pub sample: &'a Sample,
}

/// The stable id of one reading: device, epoch and sequence number.
///
/// Written as `device:epoch:seq`. A device id may itself contain `:`; parsing
/// splits from the right, where epoch and sequence are plain numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadingId {
    /// The device.
    pub device: String,
    /// The installation epoch.
    pub epoch: u64,
    /// The sequence number.
    pub seq: u64,
}

impl fmt::Display for ReadingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.device, self.epoch, self.seq)
    }
}

impl std::str::FromStr for ReadingId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IdError::BadReadingId(s.to_owned());
        let (rest, seq) = s.rsplit_once(':').ok_or_else(bad)?;
        let (device, epoch) = rest.rsplit_once(':').ok_or_else(bad)?;
        subject::validate_token("device", device)?;
        Ok(ReadingId {
            device: device.to_owned(),
            epoch: epoch.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Why an envelope could not be decoded. The input is never trusted: every
/// way it can be wrong is one of these, never a panic.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The message had no bytes at all.
    #[error("empty message: expected a format-version byte")]
    Empty,
    /// The message was written by a format this build does not know.
    #[error(
        "unknown wire format version {0} (this build reads versions {OLDEST_READ_VERSION} to {WIRE_VERSION})"
    )]
    UnknownVersion(u8),
    /// The message ends before the envelope does.
    #[error("truncated envelope: the message ends before the envelope does")]
    Truncated,
    /// The envelope is followed by bytes that belong to nothing.
    #[error("{0} trailing bytes after the envelope")]
    TrailingBytes(usize),
    /// The bytes are not a postcard envelope.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// The envelope decoded but breaks a rule of the contract.
    #[error("invalid envelope: {0}")]
    Invalid(#[from] EnvelopeError),
}

/// Why an envelope could not be encoded.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EncodeError {
    /// The envelope breaks a rule of the contract; nothing was encoded.
    #[error("invalid envelope: {0}")]
    Invalid(#[from] EnvelopeError),
    /// postcard failed (only on allocation-style failures).
    #[error("postcard encoding failed: {0}")]
    Postcard(String),
}

/// A rule of the contract that an envelope breaks.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvelopeError {
    /// The device or sensor id is not a valid NATS subject token.
    #[error(transparent)]
    Id(#[from] IdError),
    /// An envelope must carry at least one sample.
    #[error("the envelope carries no samples")]
    NoSamples,
    /// Too many samples in one envelope.
    #[error("{0} samples in one envelope (at most {MAX_SAMPLES})")]
    TooManySamples(usize),
    /// Too many tags.
    #[error("{0} tags (at most {MAX_TAGS})")]
    TooManyTags(usize),
    /// Tags must be sorted by key with unique keys, so encoding is canonical.
    #[error("tag keys must be sorted and unique (at {0:?})")]
    UnsortedTags(String),
    /// A unit, tag or text value is longer than [`MAX_TEXT_LEN`] bytes.
    #[error("{what} is {len} bytes long (at most {MAX_TEXT_LEN})")]
    TextTooLong {
        /// Which text.
        what: &'static str,
        /// How long it was.
        len: usize,
    },
    /// JSON cannot carry NaN or infinity.
    #[error("sample {seq} has a non-finite float value")]
    NonFinite {
        /// The sequence number of the sample.
        seq: u64,
    },
}

impl Envelope {
    /// Checks every rule of the contract.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        subject::validate_token("device", &self.device)?;
        subject::validate_token("sensor", &self.sensor)?;
        if self.samples.is_empty() {
            return Err(EnvelopeError::NoSamples);
        }
        if self.samples.len() > MAX_SAMPLES {
            return Err(EnvelopeError::TooManySamples(self.samples.len()));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(EnvelopeError::TooManyTags(self.tags.len()));
        }
        check_len("unit", self.unit.as_deref().unwrap_or(""))?;
        for (i, (k, v)) in self.tags.iter().enumerate() {
            check_len("tag key", k)?;
            check_len("tag value", v)?;
            if i > 0 && self.tags[i - 1].0 >= *k {
                return Err(EnvelopeError::UnsortedTags(k.clone()));
            }
        }
        for s in &self.samples {
            match &s.value {
                Value::Float(f) if !f.is_finite() => {
                    return Err(EnvelopeError::NonFinite { seq: s.seq });
                }
                Value::Text(t) => check_len("text value", t)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Encodes the envelope: version byte, then postcard. Deterministic.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.validate()?;
        let mut out = vec![WIRE_VERSION];
        postcard::to_io(self, &mut out).map_err(|e| EncodeError::Postcard(e.to_string()))?;
        Ok(out)
    }

    /// Length of [`Envelope::encode`]'s output, computed without encoding.
    pub fn encoded_len(&self) -> usize {
        1 + postcard::experimental::serialized_size(self).unwrap_or(usize::MAX - 1)
    }

    /// Decodes and validates an envelope of any version this build reads
    /// (a version-1 envelope gets [`Clock::Unknown`]). Never panics,
    /// whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        let env = match version {
            1 => Envelope::from(take_all::<EnvelopeV1>(body)?),
            2 => take_all::<Envelope>(body)?,
            other => return Err(DecodeError::UnknownVersion(other)),
        };
        env.validate()?;
        Ok(env)
    }

    /// The message id the hub deduplicates on: `device:epoch:first_seq+count`.
    ///
    /// It depends only on the envelope's content, so the same batch sent again
    /// (after a lost ack, or after the agent restarted) carries the same id.
    pub fn msg_id(&self) -> String {
        let first = self.samples.first().map_or(0, |s| s.seq);
        format!(
            "{}:{}:{}+{}",
            self.device,
            self.epoch,
            first,
            self.samples.len()
        )
    }

    /// The NATS subject of this envelope under `prefix`.
    pub fn subject(&self, prefix: &str) -> String {
        subject::subject(prefix, &self.device, &self.sensor)
    }

    /// The readings this envelope carries, each standing alone.
    pub fn readings(&self) -> impl Iterator<Item = Reading<'_>> {
        self.samples.iter().map(move |sample| Reading {
            device: &self.device,
            epoch: self.epoch,
            sensor: &self.sensor,
            unit: self.unit.as_deref(),
            tags: &self.tags,
            clock: self.clock,
            sample,
        })
    }
}

/// postcard-decodes a `T` that must span all of `body`.
fn take_all<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, DecodeError> {
    let (value, rest): (T, &[u8]) = postcard::take_from_bytes(body).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        other => DecodeError::Malformed(other.to_string()),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

impl Sample {
    /// Bytes this sample adds to an encoded envelope.
    pub fn encoded_len(&self) -> usize {
        Sample::encoded_len_of(self.seq, self.timestamp_ns, &self.value)
    }

    /// Bytes a sample of these fields would add, without building it (a
    /// struct is written as its fields in order, so this is the same size).
    pub fn encoded_len_of(seq: u64, timestamp_ns: i64, value: &Value) -> usize {
        postcard::experimental::serialized_size(&(seq, timestamp_ns, value)).unwrap_or(usize::MAX)
    }
}

impl Reading<'_> {
    /// The stable id of this reading.
    pub fn id(&self) -> ReadingId {
        ReadingId {
            device: self.device.to_owned(),
            epoch: self.epoch,
            seq: self.sample.seq,
        }
    }
}

fn check_len(what: &'static str, s: &str) -> Result<(), EnvelopeError> {
    if s.len() > MAX_TEXT_LEN {
        Err(EnvelopeError::TextTooLong { what, len: s.len() })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
