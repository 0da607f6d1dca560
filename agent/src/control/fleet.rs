//! Configuration from the fleet store: a JetStream KV bucket on the hub
//! with one key per device, read through the leaf.
//!
//! [`watch`] reads this device's key every few seconds and hands each new
//! revision to the supervisor, quietly trying again while the hub or the
//! bucket is not there. [`FleetState`] is the
//! supervisor's side: it lays a value over the local file and validates it
//! exactly as `check` validates a file ([`tributary_config::check::
//! check_fleet`]); a valid one becomes the running configuration and is
//! kept in the state directory ([`super::fleet_file`]); an invalid one is
//! refused, the running configuration stays, and the refusal (error, key,
//! line, column) shows in `status` and in a `config` event. A deleted key
//! brings the local file's sensors back. The local file stays the
//! bootstrap: the NATS connection, the device id and the buffer come only
//! from it.

use super::fleet_file::{self, Stored};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tributary_config::{AgentConfig, ConfigError};
use tributary_wire::control::{CONTROL_FORMAT, ConfigEvent, ConfigOrigin, FleetKey, Refusal};

/// A value of this device's key as the watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetValue {
    /// Its KV revision.
    pub revision: u64,
    /// The fleet document; `None` when the key was deleted or purged.
    pub text: Option<String>,
}

/// How often the device's key is read.
pub const POLL: Duration = Duration::from_secs(3);
/// How long one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The header a KV client marks deletes and purges with.
const KV_OPERATION: &str = "KV-Operation";

/// Reads `key` of `bucket` every [`POLL`] until `stop`, sending each new
/// revision to `tx`.
///
/// A read is one JetStream direct get of the key's last value
/// (`$JS.<domain>.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<key>`): a plain
/// request, so the agent carries no consumer machinery (the 4 MB binary
/// goal), nothing lives on the hub between reads, and a hub can allow a
/// device exactly its own key. A new value is seen within one poll. While
/// the bucket does not exist or the hub is away the reads fail quietly
/// (logged once, then at debug) and the configuration in force stays.
pub async fn watch(
    client: async_nats::Client,
    domain: String,
    bucket: String,
    key: String,
    tx: mpsc::Sender<FleetValue>,
    stop: CancellationToken,
) {
    let api = if domain.is_empty() {
        "$JS.API".to_owned()
    } else {
        format!("$JS.{domain}.API")
    };
    let subject = format!("{api}.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{key}");
    let mut seen: Option<u64> = None;
    let mut failing: Option<String> = None;
    loop {
        let request = async_nats::Request::new()
            .payload(bytes::Bytes::new())
            .timeout(Some(READ_TIMEOUT));
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.send_request(subject.clone(), request) => r,
        };
        let outcome = match read {
            Ok(msg) => value_of(&msg),
            Err(e) => Err(match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    "no fleet bucket on the hub (or the hub is away)".to_owned()
                }
                _ => e.to_string(),
            }),
        };
        match outcome {
            Ok(value) => {
                if let Some(why) = failing.take() {
                    tracing::info!(%bucket, %key, was = %why, "fleet store readable again");
                }
                if let Some(v) = value.filter(|v| seen != Some(v.revision)) {
                    seen = Some(v.revision);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = tx.send(v) => if r.is_err() { return },
                    }
                }
            }
            Err(why) => {
                if failing.is_none() {
                    tracing::info!(%bucket, %key, error = %why,
                        "cannot read the fleet store; running the configuration in force and trying again");
                } else {
                    tracing::debug!(%bucket, %key, error = %why, "fleet store still unreadable");
                }
                failing = Some(why);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The value a direct get answered: `None` when the key has none (404).
fn value_of(msg: &async_nats::Message) -> Result<Option<FleetValue>, String> {
    if let Some(status) = msg.status {
        if status == async_nats::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status != async_nats::StatusCode::OK {
            return Err(format!(
                "the hub answered {status}{}",
                msg.description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ));
        }
    }
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let revision = header("Nats-Sequence")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| "the hub's answer carries no Nats-Sequence".to_owned())?;
    let deleted = header(KV_OPERATION).is_some_and(|op| op == "DEL" || op == "PURGE");
    Ok(Some(FleetValue {
        revision,
        text: (!deleted).then(|| String::from_utf8_lossy(&msg.payload).into_owned()),
    }))
}

/// What the supervisor should do after [`FleetState::offer`].
#[derive(Debug)]
pub enum Decision {
    /// Run this configuration (sensors and MQTT changed); publish the event.
    Apply(Box<AgentConfig>, ConfigEvent),
    /// Keep running what runs; publish the event.
    Refused(ConfigEvent),
    /// Nothing new (the value in force, or one already refused).
    Nothing,
}

/// The fleet part in force over the local file, and the last refusal.
#[derive(Debug)]
pub struct FleetState {
    file: AgentConfig,
    file_path: Option<PathBuf>,
    key: Option<FleetKey>,
    copy: PathBuf,
    applied: Option<Stored>,
    refused: Option<Refusal>,
}

impl FleetState {
    /// Starts from the local file `file` (read from `file_path`) and, when
    /// the fleet store is watched, the copy kept in the state directory;
    /// returns the configuration to run. Blocking (file reads).
    pub fn open(file: AgentConfig, file_path: Option<PathBuf>) -> (FleetState, AgentConfig) {
        let device = file.agent.device.get_ref().clone();
        let key = file.control.watches_fleet(&device).then(|| FleetKey {
            bucket: file.control.fleet_bucket.clone(),
            key: device,
        });
        let copy = fleet_file::path(&file.agent.state_dir);
        let mut state = FleetState {
            file,
            file_path,
            key,
            copy,
            applied: None,
            refused: None,
        };
        let running = state.start_config();
        (state, running)
    }

    fn start_config(&mut self) -> AgentConfig {
        let Some(key) = &self.key else {
            return self.file.clone();
        };
        let stored = match fleet_file::load(&self.copy) {
            Ok(Some(s)) if s.bucket == key.bucket && s.key == key.key => s,
            Ok(_) => return self.file.clone(),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e),
                    "not using the kept fleet configuration; running the local file until the fleet store answers");
                return self.file.clone();
            }
        };
        match self.validate(&stored) {
            Ok(cfg) => {
                tracing::info!(
                    revision = stored.revision,
                    "running the kept fleet configuration"
                );
                self.applied = Some(stored);
                cfg
            }
            Err(e) => {
                tracing::warn!(error = %e, "the kept fleet configuration no longer fits the local file; running the local file");
                self.file.clone()
            }
        }
    }

    fn origin_path(key: &FleetKey, revision: u64) -> PathBuf {
        PathBuf::from(format!("kv://{}/{}@{revision}", key.bucket, key.key))
    }

    fn validate(&self, stored: &Stored) -> Result<AgentConfig, ConfigError> {
        let key = FleetKey {
            bucket: stored.bucket.clone(),
            key: stored.key.clone(),
        };
        tributary_config::check::check_fleet(
            &self.file,
            &stored.toml,
            &Self::origin_path(&key, stored.revision),
        )
    }

    /// Where the running configuration came from.
    pub fn origin(&self) -> ConfigOrigin {
        ConfigOrigin {
            source: if self.applied.is_some() {
                "fleet"
            } else {
                "file"
            }
            .to_owned(),
            file: self.file_path.as_deref().map(|p| p.display().to_string()),
            fleet: self.key.clone(),
            revision: self.applied.as_ref().map(|s| s.revision),
            refused: self.refused.clone(),
        }
    }

    /// Decides about a value the watcher saw. Blocking (validation reads
    /// secret files; the kept copy is written).
    pub fn offer(&mut self, value: FleetValue) -> Decision {
        let Some(key) = self.key.clone() else {
            return Decision::Nothing;
        };
        let event = |outcome: &str, refusal: Option<Refusal>| ConfigEvent {
            format: CONTROL_FORMAT,
            device: key.key.clone(),
            outcome: outcome.to_owned(),
            revision: value.revision,
            refusal,
            ts: tributary_wire::json::rfc3339(crate::sensors::now_unix_ns()),
        };
        let Some(text) = value.text.clone() else {
            if self.applied.is_none() {
                return Decision::Nothing;
            }
            if let Err(e) = fleet_file::remove(&self.copy) {
                tracing::warn!(error = %crate::error_chain(&e), "cannot remove the kept fleet configuration");
            }
            self.applied = None;
            tracing::info!(
                revision = value.revision,
                "fleet configuration deleted; back to the local file's sensors"
            );
            return Decision::Apply(Box::new(self.file.clone()), event("cleared", None));
        };
        let same = |s: &Stored| s.revision == value.revision && s.toml == text;
        if self.applied.as_ref().is_some_and(same)
            || self
                .refused
                .as_ref()
                .is_some_and(|r| r.revision == value.revision)
        {
            return Decision::Nothing;
        }
        let stored = Stored {
            format: fleet_file::FORMAT,
            bucket: key.bucket.clone(),
            key: key.key.clone(),
            revision: value.revision,
            toml: text,
        };
        match self.validate(&stored) {
            Ok(cfg) => {
                if let Err(e) = fleet_file::save(&self.copy, &stored) {
                    // It runs; it is only not kept for a start without the hub.
                    tracing::warn!(error = %crate::error_chain(&e), "cannot keep the fleet configuration in the state directory");
                }
                tracing::info!(
                    revision = value.revision,
                    sensors = cfg.sensors.len(),
                    "fleet configuration applied"
                );
                self.applied = Some(stored);
                self.refused = None;
                Decision::Apply(Box::new(cfg), event("applied", None))
            }
            Err(e) => {
                let refusal = refusal(value.revision, &e);
                tracing::warn!(revision = value.revision, error = %e, "fleet configuration refused; the running configuration stays");
                self.refused = Some(refusal.clone());
                Decision::Refused(event("refused", Some(refusal)))
            }
        }
    }

    /// A new local file (SIGHUP): the configuration to run, the fleet part
    /// in force laid over it again. Blocking.
    pub fn rebase(&mut self, file: AgentConfig) -> AgentConfig {
        self.file = file;
        let Some(stored) = self.applied.clone() else {
            return self.file.clone();
        };
        match self.validate(&stored) {
            Ok(cfg) => {
                tracing::info!(
                    revision = stored.revision,
                    "the fleet configuration stays in force over the reloaded file"
                );
                cfg
            }
            Err(e) => {
                tracing::warn!(error = %e, "the fleet configuration no longer fits the reloaded file; running the file's sensors");
                self.refused = Some(refusal(stored.revision, &e));
                self.applied = None;
                self.file.clone()
            }
        }
    }

    /// The kept copy's path.
    pub fn copy_path(&self) -> &Path {
        &self.copy
    }
}

fn refusal(revision: u64, e: &ConfigError) -> Refusal {
    let (line, column) = match e {
        ConfigError::Invalid {
            location: Some(l), ..
        } => (Some(l.line), Some(l.column)),
        _ => (None, None),
    };
    Refusal {
        revision,
        error: e.to_string(),
        key: e.key().map(str::to_owned),
        line,
        column,
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
