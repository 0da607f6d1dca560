//! The control plane's configuration: the agent's `[control]` table, and the
//! *fleet part* of an agent's configuration that the central command puts
//! into JetStream KV (one key per device).
//!
//! ```toml
//! [control]
//! subject_prefix = "tributary-ctl"   # requests: tributary-ctl.device.<device>.<endpoint>
//! fleet_bucket = "tributary-config"  # KV bucket, key = the device id
//! ```
//!
//! The fleet part is a TOML document with only `[mqtt]` and
//! `[[sensors.*]]` tables, the part SIGHUP reloads today: the NATS
//! connection, the device id and the buffer come only from the local file,
//! which stays the bootstrap. [`apply_fleet`] lays a fleet part over the
//! local configuration and validates the result exactly as a file is
//! validated, with errors pointing at the line of the fleet document.

use crate::agent::MqttBroker;
use crate::sensors::Sensors;
use crate::spans::written;
use crate::{AgentConfig, ConfigError, Validate, ValidationError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `[control]` table: the agent as a NATS service, and its
/// configuration from the fleet store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlSection {
    /// Answer control requests (`status`, `read`, `config`) as the NATS
    /// service `tributary-agent`, and watch the fleet store. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Prefix of the control subjects: requests go to
    /// `<prefix>.device.<device>.<endpoint>`, events come from
    /// `<prefix>.event.<device>.<kind>`. It must lie outside what the
    /// readings stream captures, so it may not be `forward.subject_prefix`
    /// nor start with it. Default `"tributary-ctl"`.
    #[serde(default = "default_control_prefix")]
    pub subject_prefix: String,
    /// Take the sensor and MQTT part of the configuration from the fleet
    /// store when it holds a value for this device. Default `true`.
    #[serde(default = "yes")]
    pub fleet_config: bool,
    /// The JetStream KV bucket of the fleet store (its key for this device
    /// is the device id). Default `"tributary-config"`.
    #[serde(default = "default_bucket")]
    pub fleet_bucket: String,
    /// The hub's JetStream domain (`jetstream { domain: … }` in its
    /// configuration). nats-server does not carry the plain JetStream API
    /// (`$JS.API.>`) over a leafnode connection; behind a leaf the fleet
    /// store is reached as `$JS.<domain>.API.>`. `""`: no domain (only for
    /// an agent connected to the hub itself). Default `"hub"`.
    #[serde(default = "default_domain")]
    pub fleet_domain: String,
}

/// The hub's default JetStream domain.
pub fn default_domain() -> String {
    "hub".to_owned()
}

fn yes() -> bool {
    true
}

/// The control subjects' default prefix.
pub fn default_control_prefix() -> String {
    "tributary-ctl".to_owned()
}

/// The fleet store's default bucket.
pub fn default_bucket() -> String {
    "tributary-config".to_owned()
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            enabled: true,
            subject_prefix: default_control_prefix(),
            fleet_config: true,
            fleet_bucket: default_bucket(),
            fleet_domain: default_domain(),
        }
    }
}

/// Whether the NATS subject pattern `pattern` (`*` one token, `>` the
/// rest) matches the subject `subject`.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Whether `name` may name a KV bucket (`[A-Za-z0-9_-]+`).
pub fn valid_bucket(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `key` may be a KV key (`[-/_=.A-Za-z0-9]+`, not starting or
/// ending with `.`).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
}

impl ControlSection {
    /// The subject of `endpoint` of `device`.
    pub fn request_subject(&self, device: &str, endpoint: &str) -> String {
        format!("{}.device.{device}.{endpoint}", self.subject_prefix)
    }

    /// The subject of `device`'s events of `kind`.
    pub fn event_subject(&self, device: &str, kind: &str) -> String {
        format!("{}.event.{device}.{kind}", self.subject_prefix)
    }

    /// Checks the table against the rest of the agent's configuration.
    pub(crate) fn validate(
        &self,
        source: &str,
        readings_prefix: &str,
        device: &str,
    ) -> Result<(), ValidationError> {
        tributary_wire::subject::validate_prefix(&self.subject_prefix)
            .map_err(|e| ValidationError::new("control.subject_prefix", None, e.to_string()))?;
        let p = &self.subject_prefix;
        if p == readings_prefix || p.starts_with(&format!("{readings_prefix}.")) {
            return Err(ValidationError::new(
                "control.subject_prefix",
                None,
                format!(
                    "\"{p}\" lies inside forward.subject_prefix \"{readings_prefix}\", whose \
                     subjects the readings stream captures: control requests would be stored as \
                     readings; choose a prefix of its own, such as \"{readings_prefix}-ctl\""
                ),
            ));
        }
        if !valid_bucket(&self.fleet_bucket) {
            return Err(ValidationError::new(
                "control.fleet_bucket",
                None,
                format!(
                    "\"{}\" is not a JetStream KV bucket name: use letters, digits, `_` and `-`",
                    self.fleet_bucket
                ),
            ));
        }
        if !self.fleet_domain.is_empty() && !valid_bucket(&self.fleet_domain) {
            return Err(ValidationError::new(
                "control.fleet_domain",
                None,
                format!(
                    "\"{}\" is not a JetStream domain: use letters, digits, `_` and `-`, or \"\" for none",
                    self.fleet_domain
                ),
            ));
        }
        if self.enabled
            && self.fleet_config
            && !valid_key(device)
            && written(source, "control.fleet_config")
        {
            return Err(ValidationError::new(
                "control.fleet_config",
                None,
                format!(
                    "agent.device \"{device}\" cannot be a JetStream KV key (letters, digits and \
                     `-/_=.` only), so the fleet store cannot hold its configuration; set \
                     control.fleet_config = false or rename the device"
                ),
            ));
        }
        Ok(())
    }

    /// Whether the fleet store is watched for `device` (enabled, and the
    /// device id can be a KV key).
    pub fn watches_fleet(&self, device: &str) -> bool {
        self.enabled && self.fleet_config && valid_key(device)
    }
}

/// The uplink's `[control]` table: the uplink as the NATS service
/// `tributary-uplink`, answering `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkControl {
    /// Answer `status` requests (and `$SRV.PING|INFO|STATS`). Default
    /// `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Prefix of the control subjects: `status` is answered on
    /// `<prefix>.uplink.<consumer>.<service id>.status`. Default
    /// `"tributary-ctl"`, as the agents'.
    #[serde(default = "default_control_prefix")]
    pub subject_prefix: String,
}

impl Default for UplinkControl {
    fn default() -> Self {
        UplinkControl {
            enabled: true,
            subject_prefix: default_control_prefix(),
        }
    }
}

impl UplinkControl {
    /// The status subject of the uplink with durable consumer `consumer`
    /// and NATS service id `id`.
    pub fn status_subject(&self, consumer: &str, id: &str) -> String {
        format!("{}.uplink.{consumer}.{id}.status", self.subject_prefix)
    }

    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        tributary_wire::subject::validate_prefix(&self.subject_prefix)
            .map_err(|e| ValidationError::new("control.subject_prefix", None, e.to_string()))
    }
}

/// The part of an agent's configuration the fleet store may set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetPart {
    /// The MQTT broker of `[[sensors.mqtt]]`; the default when absent.
    #[serde(default)]
    pub mqtt: MqttBroker,
    /// The sensors.
    #[serde(default)]
    pub sensors: Sensors,
}

/// Tables of the local file that the fleet store may not set.
const LOCAL_ONLY: &[&str] = &["agent", "nats", "forward", "buffer", "metrics", "control"];

/// Parses a fleet document: TOML with only `[mqtt]` and `[[sensors.*]]`.
/// `origin` names it in errors (such as `kv://tributary-config/pi-1@7`).
pub fn parse_fleet(text: &str, origin: &Path) -> Result<FleetPart, ConfigError> {
    // The same parse as the spans' lookups (no second TOML value model).
    let local = toml::de::DeTable::parse(text).ok().and_then(|doc| {
        doc.get_ref()
            .keys()
            .map(|k| k.get_ref().to_string())
            .find(|k| LOCAL_ONLY.contains(&k.as_str()))
    });
    if let Some(key) = local {
        return Err(ConfigError::from_validation(
            origin,
            text,
            ValidationError::new(
                key.clone(),
                crate::spans::find(text, &key),
                format!(
                    "[{key}] comes only from the device's local file; the fleet store sets \
                     [mqtt] and [[sensors.*]]"
                ),
            ),
        ));
    }
    let de =
        toml::Deserializer::parse(text).map_err(|e| ConfigError::from_toml(origin, text, "", e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ConfigError::from_toml(origin, text, &path, e.into_inner())
    })
}

/// `base` (the local file's configuration) with its sensors and MQTT
/// broker replaced by the fleet document `text`, validated as a file is;
/// errors point into `text`.
pub fn apply_fleet(
    base: &AgentConfig,
    text: &str,
    origin: &Path,
) -> Result<AgentConfig, ConfigError> {
    let part = parse_fleet(text, origin)?;
    let mut merged = base.clone();
    merged.mqtt = part.mqtt;
    merged.sensors = part.sensors;
    merged
        .validate(text)
        .map_err(|v| ConfigError::from_validation(origin, text, v))?;
    Ok(merged)
}

/// Validates a fleet document without the device's local file (for the
/// central command): against a minimal configuration of device `device`.
pub fn validate_fleet(device: &str, text: &str, origin: &Path) -> Result<FleetPart, ConfigError> {
    let base_text = format!("[agent]\ndevice = {device:?}\n");
    let base: AgentConfig = crate::parse(&base_text, Path::new("(device)"))?;
    let merged = apply_fleet(&base, text, origin)?;
    Ok(FleetPart {
        mqtt: merged.mqtt,
        sensors: merged.sensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> AgentConfig {
        crate::parse(
            "[agent]\ndevice = \"pi-1\"\n[[sensors.simulated]]\nid = \"local\"\n",
            Path::new("agent.toml"),
        )
        .unwrap()
    }

    #[test]
    fn a_fleet_document_replaces_the_sensors_and_keeps_the_rest() {
        let text = "[[sensors.simulated]]\nid = \"from-fleet\"\ninterval = \"2s\"\n";
        let cfg = apply_fleet(&base(), text, Path::new("kv")).unwrap();
        assert_eq!(cfg.sensors.simulated.len(), 1);
        assert_eq!(cfg.sensors.simulated[0].id.get_ref(), "from-fleet");
        assert_eq!(cfg.agent, base().agent);
        assert_eq!(cfg.nats, base().nats);
    }

    #[test]
    fn a_local_only_table_in_a_fleet_document_is_refused_with_its_line() {
        let text = "[[sensors.simulated]]\nid = \"a\"\n\n[nats]\nurls = [\"nats://x:4222\"]\n";
        let e = apply_fleet(&base(), text, Path::new("kv")).unwrap_err();
        assert_eq!(e.key(), Some("nats"));
        assert_eq!(e.line(), Some(4), "{e}");
        assert!(e.to_string().contains("local file"), "{e}");
    }

    #[test]
    fn a_broken_rule_in_a_fleet_document_names_its_key_and_line() {
        let text = "[[sensors.simulated]]\nid = \"a\"\n[[sensors.simulated]]\nid = \"a\"\n";
        let e = apply_fleet(&base(), text, Path::new("kv")).unwrap_err();
        assert_eq!(e.line(), Some(4), "{e}");
        assert!(e.key().unwrap().starts_with("sensors.simulated[1]"), "{e}");
        let text = "[[sensors.simulated]]\nid = \"a\"\ninterval = \"soon\"\n";
        let e = apply_fleet(&base(), text, Path::new("kv")).unwrap_err();
        assert_eq!(e.line(), Some(3), "{e}");
        let e = apply_fleet(&base(), "[[sensors.simulated]\n", Path::new("kv")).unwrap_err();
        assert_eq!(e.line(), Some(1), "{e}");
    }

    #[test]
    fn a_fleet_document_validates_without_the_local_file() {
        let text = "[mqtt]\nhost = \"broker\"\n[[sensors.mqtt]]\nid = \"t\"\ntopic = \"a/b\"\n";
        let part = validate_fleet("pi-1", text, Path::new("f.toml")).unwrap();
        assert_eq!(part.mqtt.host, "broker");
        assert!(validate_fleet("pi-1", "[[sensors.nope]]\n", Path::new("f.toml")).is_err());
    }

    #[test]
    fn a_control_prefix_inside_the_readings_prefix_is_refused() {
        for prefix in ["tributary", "tributary.ctl"] {
            let text =
                format!("[agent]\ndevice = \"d\"\n[control]\nsubject_prefix = \"{prefix}\"\n");
            let e = crate::parse::<AgentConfig>(&text, Path::new("a.toml")).unwrap_err();
            assert_eq!(e.key(), Some("control.subject_prefix"), "{e}");
            assert_eq!(e.line(), Some(4), "{e}");
        }
        let ok = "[agent]\ndevice = \"d\"\n[control]\nsubject_prefix = \"tributary-ctl\"\n";
        crate::parse::<AgentConfig>(ok, Path::new("a.toml")).unwrap();
    }

    #[test]
    fn subject_patterns_match_as_nats_matches_them() {
        assert!(subject_matches("tributary.>", "tributary.a.b"));
        assert!(!subject_matches(
            "tributary.>",
            "tributary-ctl.device.a.status"
        ));
        assert!(!subject_matches("tributary.>", "tributary"));
        assert!(subject_matches(">", "tributary-ctl.device.a.status"));
        assert!(subject_matches("*.device.*.status", "x.device.a.status"));
        assert!(!subject_matches("*.device.*", "x.device.a.status"));
    }

    #[test]
    fn an_uplink_stream_that_would_capture_control_subjects_is_refused() {
        let text = "[stream]\nsubjects = [\">\"]\n";
        let e = crate::parse::<crate::UplinkConfig>(text, Path::new("u.toml")).unwrap_err();
        assert_eq!(e.key(), Some("stream.subjects"), "{e}");
        crate::parse::<crate::UplinkConfig>("", Path::new("u.toml")).unwrap();
    }

    #[test]
    fn kv_names_are_checked_like_the_server_does() {
        assert!(valid_key("pi-kitchen") && valid_key("site/a.b=c_d"));
        assert!(!valid_key("pi:1") && !valid_key(".a") && !valid_key("a.") && !valid_key(""));
        assert!(valid_bucket("tributary-config") && !valid_bucket("a.b") && !valid_bucket(""));
    }

    #[test]
    fn subjects_follow_the_documented_layout() {
        let c = ControlSection::default();
        assert_eq!(
            c.request_subject("pi-1", "status"),
            "tributary-ctl.device.pi-1.status"
        );
        assert_eq!(
            c.event_subject("pi-1", "config"),
            "tributary-ctl.event.pi-1.config"
        );
    }
}
