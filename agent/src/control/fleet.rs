//! Configuration from the fleet store: a JetStream KV bucket on the hub
//! with one key per device, read through the leaf.
//!
//! [`watch`] follows this device's key (its latest value first, then every
//! change) and hands each value to the supervisor, retrying with backoff
//! while the hub or the bucket is not there. [`FleetState`] is the
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
use futures::StreamExt;
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

/// First wait after the fleet store failed; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts to reach the fleet store.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often a bucket that does not exist (yet) is looked for: the fleet
/// store is optional, and its first value should arrive soon after the
/// central command created it.
const MISSING_BUCKET_RETRY: Duration = Duration::from_secs(5);
/// How long opening the bucket and its watch may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Follows `key` in `bucket` until `stop`, sending each value to `tx`.
pub async fn watch(
    js: async_nats::jetstream::Context,
    bucket: String,
    key: String,
    tx: mpsc::Sender<FleetValue>,
    stop: CancellationToken,
) {
    let mut wait = RETRY_MIN;
    let mut failing = false;
    loop {
        let opened = open(&js, &bucket, &key);
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(OPEN_TIMEOUT, opened) => r.unwrap_or_else(|_| Err(("timed out".to_owned(), false))),
        };
        let problem = match opened {
            Ok(mut entries) => {
                if failing {
                    tracing::info!(%bucket, %key, "fleet store reachable again");
                } else {
                    tracing::debug!(%bucket, %key, "watching the fleet store");
                }
                failing = false;
                wait = RETRY_MIN;
                loop {
                    let entry = tokio::select! {
                        _ = stop.cancelled() => return,
                        e = entries.next() => e,
                    };
                    let entry = match entry {
                        Some(Ok(e)) => e,
                        Some(Err(e)) => break e.to_string(),
                        None => break "the watch ended".to_owned(),
                    };
                    let Ok(info) = entry.info() else {
                        break "a fleet store message without JetStream metadata".to_owned();
                    };
                    let revision = info.stream_sequence;
                    let deleted = entry
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(KV_OPERATION))
                        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                    let value = FleetValue {
                        revision,
                        text: (!deleted)
                            .then(|| String::from_utf8_lossy(&entry.payload).into_owned()),
                    };
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = tx.send(value) => if r.is_err() { return },
                    }
                }
            }
            Err((e, true)) => {
                // Not an outage: nobody created the bucket (yet).
                tracing::debug!(%bucket, error = %e, "no fleet bucket; looking again in {MISSING_BUCKET_RETRY:?}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(MISSING_BUCKET_RETRY) => {}
                }
                continue;
            }
            Err((e, false)) => e,
        };
        if failing {
            tracing::debug!(%bucket, %key, error = %problem, "fleet store still unreachable");
        } else {
            tracing::info!(%bucket, %key, error = %problem,
                "fleet store unreachable; running the configuration in force and trying again");
        }
        failing = true;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// The header a KV client marks deletes and purges with.
const KV_OPERATION: &str = "KV-Operation";

/// Opens an ordered consumer of `key` in `bucket`: the latest value, then
/// every change. Made here rather than with async-nats's KV watch, so that
/// the consumer has a name and the create request's subject carries the
/// key (`$JS.<domain>.API.CONSUMER.CREATE.KV_<bucket>.<name>.$KV.<bucket>.<key>`):
/// a hub can then allow a device to read its own key and no other. The
/// error says whether the bucket does not exist (not an outage).
async fn open(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    key: &str,
) -> Result<async_nats::jetstream::consumer::push::Ordered, (String, bool)> {
    use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
    use async_nats::jetstream::context::GetStreamErrorKind;
    let stream = js.get_stream(format!("KV_{bucket}")).await.map_err(|e| {
        let missing = matches!(e.kind(), GetStreamErrorKind::JetStream(j)
            if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND);
        (format!("cannot open the bucket: {e}"), missing)
    })?;
    let inbox = js.client().new_inbox();
    let unique = inbox.rsplit('.').next().unwrap_or("0").to_owned();
    let token: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            name: Some(format!("tributary-{token}-{unique}")),
            description: Some("tributary-agent fleet configuration watch".to_owned()),
            deliver_subject: inbox,
            filter_subject: format!("$KV.{bucket}.{key}"),
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(|e| (format!("cannot watch the key: {e}"), false))?;
    consumer
        .messages()
        .await
        .map_err(|e| (format!("cannot watch the key: {e}"), false))
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
