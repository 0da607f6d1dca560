//! Operator-mode (JWT) credentials for the Tributary hub, without `nsc`:
//! an operator, one account for the fleet, and per-device users issued by
//! the account's scoped signing key, whose template is the plain-accounts
//! template `cross/hub/device-user.conf` (compiled in, [`template`]) with
//! `{{name()}}` for the device id. Both modes of the hub therefore grant a
//! device the same subjects: publishing its own readings and events, its
//! own JetStream acks, read-back consumer `rb-<device>` and commands
//! consumer `cmd-<device>`, and nothing else.
//!
//! ```
//! # fn demo() -> Result<(), tributary_creds::CredsError> {
//! use tributary_creds::Fleet;
//! let fleet = Fleet::generate("my-operator")?;
//! let hub_config = fleet.resolver_config(); // operator + account JWTs, no seeds
//! let device = fleet.device_creds("pi-kitchen")?; // `.creds` text: device.text()
//! let uplink = fleet.central_creds("uplink"); // every permission of the account
//! # let _ = (hub_config, device, uplink); Ok(()) }
//! ```
//!
//! `tributary-uplink creds init <dir>` and `creds device <name>` are the
//! command line over [`Fleet`] (README: "Setting up the hub"). Scoped
//! templates with `{{name()}}` need nats-server >= 2.11 on the hub.
//! Seeds are written only to new files of mode 0600 and never shown by
//! `Debug`.

pub mod creds;
pub mod fleet;
pub mod jwt;
pub mod template;

pub use creds::Creds;
pub use fleet::Fleet;
pub use template::DevicePermissions;

use std::path::{Path, PathBuf};

/// What can go wrong making, keeping or reading credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists; credentials are never overwritten.
    #[error("{path} already exists; not overwriting credentials (move it away first)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A seed file does not hold a seed of its kind (the seed is not shown).
    #[error("{path} does not hold a valid {kind} nkey seed")]
    BadSeed {
        /// The file.
        path: PathBuf,
        /// Which key it should hold.
        kind: &'static str,
    },
    /// A JWT does not decode or its signature does not verify.
    #[error("not a valid NATS JWT: {reason}")]
    BadJwt {
        /// What is wrong.
        reason: String,
    },
    /// A JWT of the directory was not issued for its keys.
    #[error("{path} was not issued for the keys beside it")]
    Mismatch {
        /// The JWT file.
        path: PathBuf,
    },
    /// The device id cannot be a device (a NATS subject token).
    #[error(transparent)]
    Device(#[from] tributary_wire::subject::IdError),
    /// The device id holds template braces the server would expand.
    #[error("device id {device:?} contains `{{{{` or `}}}}`, which the server's templates expand")]
    TemplateInName {
        /// The id as given.
        device: String,
    },
    /// The compiled-in device template does not have the expected shape.
    #[error("cross/hub/device-user.conf, {section}: {reason}")]
    Template {
        /// `publish` or `subscribe`.
        section: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl CredsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        CredsError::Io {
            path: path.to_owned(),
            source,
        }
    }
}
