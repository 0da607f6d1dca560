//! What can go wrong when a sensor is read. Every variant names the input
//! that failed, so the (rate-limited) log line tells the operator what to fix.

use std::path::PathBuf;
use std::time::Duration;

/// A failed read. The sensor yields no reading for it; the failure is
/// counted in [`crate::stats::AgentStats::error`] and logged.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// A file could not be read: check the path and its permissions.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file or output held no number where one was expected.
    #[error("{origin} holds no number (starts with {snippet:?})")]
    NoNumber {
        /// The file or program.
        origin: String,
        /// The first bytes of what was there.
        snippet: String,
    },
    /// The glob is not a valid pattern.
    #[error("invalid glob {pattern:?}: {reason}")]
    BadGlob {
        /// The pattern.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The glob matched no path: the device is absent or the pattern wrong.
    #[error("glob {pattern:?} matches no path")]
    GlobNoMatch {
        /// The pattern.
        pattern: String,
    },
    /// The glob matched several paths; it must match exactly one.
    #[error("glob {pattern:?} matches {count} paths ({matches}); make it match exactly one")]
    GlobSeveral {
        /// The pattern.
        pattern: String,
        /// How many paths matched.
        count: usize,
        /// The first few matches.
        matches: String,
    },
    /// A float was NaN or infinite: not a measurement.
    #[error("value {0} is not a finite number")]
    NotFinite(f64),
    /// A text value is longer than the wire allows.
    #[error("text value of {len} bytes is longer than {max}")]
    TextTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A 1-wire `w1_slave` file whose CRC line does not end in `YES`.
    #[error("1-wire CRC check failed in {path} (line {line:?}); check wiring and pull-up")]
    W1Crc {
        /// The `w1_slave` file.
        path: PathBuf,
        /// The CRC line.
        line: String,
    },
    /// 85 °C: the DS18B20's power-on value, read before a conversion finished.
    #[error("1-wire sensor {path} reported 85 °C, its power-on value (no conversion done)")]
    W1PowerOn {
        /// The file.
        path: PathBuf,
    },
    /// A `w1_slave` file not in the expected two-line format.
    #[error("malformed 1-wire file {path}: {reason}")]
    W1Malformed {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: &'static str,
    },
    /// The program could not be started: check that it exists and is executable.
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The program exited with a failure status.
    #[error("{program:?} exited with {status}: {stderr:?}")]
    Exit {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The start of its standard error.
        stderr: String,
    },
    /// The program ran longer than its timeout and was killed.
    #[error("{program:?} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The program wrote more than the agent reads.
    #[error("{program:?} wrote more than {max} bytes to standard output")]
    OutputTooLarge {
        /// The program.
        program: String,
        /// The limit.
        max: usize,
    },
    /// A payload or output that could not be turned into a value.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// An MQTT sensor id template gave an id that is not a NATS token.
    #[error("id template {template:?} on topic {topic:?}: {reason}")]
    BadId {
        /// The template.
        template: String,
        /// The topic of the message.
        topic: String,
        /// What is wrong.
        reason: String,
    },
    /// A templated MQTT sensor has seen too many different ids.
    #[error("id template {template:?} already produced {max} ids; {id:?} is ignored")]
    TooManyIds {
        /// The template.
        template: String,
        /// The id that was refused.
        id: String,
        /// The limit.
        max: usize,
    },
    /// A /proc file without the expected field.
    #[error("{path} has no field {field}")]
    MissingField {
        /// The file.
        path: PathBuf,
        /// The field.
        field: &'static str,
    },
    /// `statvfs` of the buffer directory failed.
    #[error("cannot get free space of {path}: {source}")]
    Statvfs {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The previous read has not returned within the sensor's interval; no
    /// new read is started until it does.
    #[error(
        "the read has not returned within the sensor's interval of {interval:?} and is still running"
    )]
    Overdue {
        /// The sensor's interval.
        interval: Duration,
    },
    /// A blocking read task panicked or was cancelled.
    #[error("read task failed: {0}")]
    Task(String),
}

/// A payload (MQTT message or program output) that is not a value.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Larger than the configured maximum.
    #[error("payload of {len} bytes is larger than the maximum of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Not UTF-8 text.
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    /// Not a number, boolean or `ON`/`OFF`.
    #[error("payload {snippet:?} is not a number, true/false or ON/OFF")]
    NotAValue {
        /// The start of the payload.
        snippet: String,
    },
    /// Expected JSON, got something else.
    #[error("payload is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON pointer points at nothing.
    #[error("JSON has nothing at pointer {pointer:?}")]
    PointerMissing {
        /// The pointer.
        pointer: String,
    },
    /// The JSON pointer points at null, an object or an array.
    #[error("JSON at pointer {pointer:?} is {kind}, not a number, boolean or string")]
    Unsupported {
        /// The pointer.
        pointer: String,
        /// What was found.
        kind: &'static str,
    },
}
