//! Tests of the agent configuration: parsing, defaults, and errors that name
//! the file, line, column and key.

use crate::{AgentConfig, ConfigError, WhenFull, parse};
use std::path::Path;
use std::time::Duration;

fn load(text: &str) -> Result<AgentConfig, ConfigError> {
    parse(text, Path::new("agent.toml"))
}

fn invalid(text: &str) -> (String, Option<usize>, String) {
    let err = load(text).unwrap_err();
    (
        err.key().unwrap_or_default().to_owned(),
        err.line(),
        err.to_string(),
    )
}

#[test]
fn a_minimal_config_needs_only_the_device_and_gets_working_defaults() {
    let c = load("[agent]\ndevice = \"pi-1\"\n").unwrap();
    assert_eq!(c.agent.device.get_ref(), "pi-1");
    assert_eq!(c.nats.urls, ["nats://127.0.0.1:4222"]);
    assert_eq!(c.buffer.when_full, WhenFull::DropOldest);
    assert_eq!(c.buffer.flush_interval.get(), Duration::from_secs(1));
    assert_eq!(c.buffer.max_size.as_u64(), 64 * 1024 * 1024);
    assert_eq!(c.buffer_dir(), Path::new("/var/lib/tributary/buffer"));
    assert_eq!(c.forward.subject_prefix, "tributary");
    assert_eq!(c.metrics.stall_after.get(), Duration::from_secs(60));
    assert!(c.sensors.is_empty());
}

#[test]
fn a_watchdog_stall_window_shorter_than_the_longest_backoff_is_refused() {
    let (key, _, msg) = invalid(
        "[agent]\ndevice = \"d\"\n[forward]\nbackoff_max = \"2min\"\n[metrics]\nstall_after = \"1min\"\n",
    );
    assert_eq!(key, "metrics.stall_after");
    assert!(msg.contains("forward.backoff_max"), "{msg}");
}

#[test]
fn a_misspelled_key_is_named_with_its_line_and_the_expected_keys() {
    let (key, line, msg) = invalid(
        "[agent]\ndevice = \"pi-1\"\n\n[[sensors.simulated]]\nid = \"t\"\nintervall = \"5s\"\n",
    );
    assert_eq!(line, Some(6), "{msg}");
    assert!(
        key.contains("intervall") || key.starts_with("sensors.simulated"),
        "{key}: {msg}"
    );
    assert!(msg.contains("unknown field `intervall`"), "{msg}");
    assert!(msg.contains("`interval`"), "{msg}");
    assert!(msg.starts_with("agent.toml:6:"), "{msg}");
}

#[test]
fn a_bad_duration_is_named_with_its_key_path_and_line() {
    let (key, line, msg) = invalid(
        "[agent]\ndevice = \"pi-1\"\n\n[[sensors.simulated]]\nid = \"t\"\ninterval = \"5 parsecs\"\n",
    );
    assert_eq!(key, "sensors.simulated[0].interval", "{msg}");
    assert_eq!(line, Some(6), "{msg}");
    assert!(msg.contains("agent.toml:6:"), "{msg}");
}

#[test]
fn a_zero_interval_is_refused() {
    let (key, _, msg) = invalid(
        "[agent]\ndevice = \"pi-1\"\n[[sensors.file]]\nid = \"t\"\npath = \"/x\"\ninterval = \"0s\"\n",
    );
    assert_eq!(key, "sensors.file[0].interval", "{msg}");
    assert!(msg.contains("greater than zero"), "{msg}");
}

#[test]
fn a_missing_device_is_reported() {
    let (_, _, msg) = invalid("[agent]\nstate_dir = \"/tmp\"\n");
    assert!(msg.contains("missing field `device`"), "{msg}");
}

#[test]
fn a_device_id_that_is_not_a_subject_token_points_at_its_line() {
    let (key, line, msg) = invalid("[agent]\n\ndevice = \"pi.kitchen\"\n");
    assert_eq!((key.as_str(), line), ("agent.device", Some(3)), "{msg}");
    assert!(msg.contains("'.'"), "{msg}");
}

#[test]
fn duplicate_sensor_ids_are_refused_naming_both() {
    let (key, line, msg) = invalid(
        "[agent]\ndevice = \"d\"\n[[sensors.simulated]]\nid = \"t\"\n[[sensors.system]]\nid = \"t\"\nmetric = \"load1\"\n",
    );
    assert_eq!(key, "sensors.system[0].id");
    assert_eq!(line, Some(6));
    assert!(msg.contains("sensors.simulated[0].id"), "{msg}");
}

#[test]
fn an_unknown_when_full_policy_lists_the_known_ones() {
    let (key, _, msg) = invalid("[agent]\ndevice = \"d\"\n[buffer]\nwhen_full = \"panic\"\n");
    assert_eq!(key, "buffer.when_full");
    assert!(
        msg.contains("drop_oldest") && msg.contains("block"),
        "{msg}"
    );
}

#[test]
fn sizes_are_written_for_humans() {
    let c = load(
        "[agent]\ndevice = \"d\"\n[buffer]\nmax_size = \"8 MiB\"\nsegment_size = \"256 KiB\"\n",
    )
    .unwrap();
    assert_eq!(c.buffer.max_size.as_u64(), 8 << 20);
    assert_eq!(c.buffer.segment_size.as_u64(), 256 << 10);
    let (key, _, _) = invalid(
        "[agent]\ndevice = \"d\"\n[buffer]\nmax_size = \"1 MiB\"\nsegment_size = \"1 MiB\"\n",
    );
    assert_eq!(key, "buffer.segment_size");
}

#[test]
fn an_mqtt_id_template_may_use_topic_segments_that_exist() {
    let ok = "[agent]\ndevice = \"d\"\n[[sensors.mqtt]]\nid = \"{1}_temperature\"\ntopic = \"zigbee2mqtt/+\"\npointer = \"/temperature\"\n";
    load(ok).unwrap();
    let (key, _, msg) = invalid(&ok.replace("{1}", "{5}"));
    assert_eq!(key, "sensors.mqtt[0].id", "{msg}");
}

#[test]
fn two_ways_of_authenticating_are_refused() {
    let (key, _, _) = invalid(
        "[agent]\ndevice = \"d\"\n[nats]\ntoken = \"t\"\ncredentials_file = \"/x.creds\"\n",
    );
    assert_eq!(key, "nats.user");
}

#[test]
fn secrets_are_not_printed_when_the_config_is_shown() {
    let c =
        load("[agent]\ndevice = \"d\"\n[nats]\nuser = \"u\"\npassword = \"hunter2\"\n").unwrap();
    let shown = toml::to_string(&c).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn the_example_configs_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("agent") && name.ends_with(".toml") {
            crate::load_agent(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        } else if name.starts_with("uplink") && name.ends_with(".toml") {
            crate::load_uplink(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "found only {n} example configs in {}",
        dir.display()
    );
}
