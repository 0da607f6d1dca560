//! The wire contract shared by `tributary-agent` and `tributary-uplink`.
//!
//! Everything that crosses a process boundary lives here, so that both ends
//! agree on it by construction:
//!
//! * [`Envelope`]: one NATS message, carrying one or more readings of one
//!   sensor, encoded as a format-version byte followed by postcard
//!   ([`Envelope::encode`], [`Envelope::decode`]), with the device's
//!   [`Clock`] state when the readings were taken (format version 2; version
//!   1 is still decoded);
//! * [`ReadingId`] and [`Envelope::msg_id`]: the stable ids that make resends
//!   harmless (the hub's `Nats-Msg-Id` duplicate window, the Kafka header);
//! * [`subject`]: the `<prefix>.<device>.<sensor>` subject scheme and the
//!   validation of ids as NATS subject tokens;
//! * [`json`]: the one-JSON-object-per-reading record written to Kafka;
//! * [`control`]: the control plane's subjects and the JSON documents agents
//!   and uplinks answer with;
//! * [`command`]: the downlink's commands to actuators and the outcomes
//!   devices report.
//!
//! The crate is deliberately small and free of async or I/O so that the agent
//! binary on a Pi Zero pays nothing for it.

pub mod command;
pub mod control;
mod envelope;
pub mod json;
pub mod subject;
mod value;

pub use envelope::{
    Clock, DecodeError, EncodeError, Envelope, EnvelopeError, MAX_SAMPLES, MAX_TAGS, MAX_TEXT_LEN,
    OLDEST_READ_VERSION, Reading, ReadingId, Sample, WIRE_VERSION,
};
pub use subject::IdError;
pub use value::Value;

/// Name of the NATS header carrying the message id the hub deduplicates on.
pub const NATS_MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Name of the Kafka (and NATS) header carrying the stable id of a reading.
pub const READING_ID_HEADER: &str = "tributary-reading-id";
