//! Typed, strict TOML configuration of `tributary-agent` and `tributary-uplink`.
//!
//! Every table is `deny_unknown_fields`, every field is documented, durations
//! and sizes are written for humans (`"10s"`, `"64 MiB"`), and defaults work
//! out of the box. Loading a file ([`load_agent`], [`load_uplink`]) parses it
//! and validates it; any mistake comes back as a [`ConfigError`] that names
//! the file, the line and column, the key (as a dotted path such as
//! `sensors.file[0].interval`) and what was expected. With feature
//! `client`, `check_agent` and `check_uplink` also resolve every secret
//! and read every file the programs will need (module `check`). Sizes and
//! counts are read by [`size`], with errors in the user's terms. With
//! feature `logging`, module `logging` sets up both programs' logs (the
//! one piece here that is not configuration: both binaries need it, and it
//! needs no crate of its own).

pub mod actuators;
pub mod agent;
#[cfg(feature = "client")]
pub mod check;
pub mod control;
pub mod downlink;
mod error;
#[cfg(feature = "logging")]
pub mod logging;
mod nats;
#[cfg(feature = "client")]
pub mod nats_client;
mod sensors;
pub mod size;
mod spans;
mod types;
pub mod uplink;

pub use agent::{AgentConfig, WhenFull};
#[cfg(feature = "client")]
pub use check::{check_agent, check_uplink};
pub use control::{
    ControlSection, FleetPart, UplinkControl, apply_fleet, parse_fleet, validate_fleet,
};
pub use error::{ConfigError, Location};
pub use nats::{NatsConnection, TlsFiles};
pub use sensors::*;
pub use types::{NonZeroDuration, Secret, SecretError};
pub use uplink::UplinkConfig;

use serde::de::DeserializeOwned;
use std::path::Path;

/// A configuration that can check itself after parsing.
pub trait Validate {
    /// Checks rules that types alone cannot express. `source` is the TOML
    /// text, so that errors can point at a line.
    fn validate(&self, source: &str) -> Result<(), ValidationError>;
}

/// A rule broken by a parsed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted path of the offending key.
    pub key: String,
    /// Byte range in the source the error points at, when known.
    pub span: Option<std::ops::Range<usize>>,
    /// What is wrong and what is expected instead.
    pub message: String,
}

impl ValidationError {
    /// An error at `key`, pointing at `span`.
    pub fn new(
        key: impl Into<String>,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        ValidationError {
            key: key.into(),
            span,
            message: message.into(),
        }
    }
}

/// Parses and validates a configuration from TOML text. `origin` names the
/// source (usually the file path) in errors.
pub fn parse<T: DeserializeOwned + Validate>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    let de =
        toml::Deserializer::parse(text).map_err(|e| ConfigError::from_toml(origin, text, "", e))?;
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::from_toml(origin, text, &path, e.into_inner())
    })?;
    value
        .validate(text)
        .map_err(|v| ConfigError::from_validation(origin, text, v))?;
    Ok(value)
}

/// The text of the configuration file `path`.
pub(crate) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_owned(),
        source,
    })
}

fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    parse(&read(path)?, path)
}

/// Reads, parses and validates the agent's configuration file.
pub fn load_agent(path: &Path) -> Result<AgentConfig, ConfigError> {
    load(path)
}

/// Reads, parses and validates the uplink's configuration file.
pub fn load_uplink(path: &Path) -> Result<UplinkConfig, ConfigError> {
    load(path)
}
