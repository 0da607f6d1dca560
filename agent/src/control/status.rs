//! The `status` document of a device, made from the live counters
//! ([`AgentStats`]) and what runs ([`Running`]).

use super::Running;
use crate::link::LinkState;
use crate::sensors::now_unix_ns;
use crate::stats::{AgentStats, SensorState};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use tributary_wire::Clock;
use tributary_wire::control::{BufferStatus, CONTROL_FORMAT, DeviceStatus, SensorStatus, Timed};

/// `value`, taken at `ts_ns`, with its age now.
pub fn timed<T>(value: T, ts_ns: i64) -> Timed<T> {
    let age_ns = now_unix_ns().saturating_sub(ts_ns).max(0);
    Timed {
        value,
        ts: tributary_wire::json::rfc3339(ts_ns),
        age_s: age_ns as f64 / 1e9,
    }
}

fn age_s_since_unix_ms(ms: u64) -> f64 {
    if ms == 0 {
        return 0.0;
    }
    let now_ms = u64::try_from(now_unix_ns() / 1_000_000).unwrap_or(0);
    now_ms.saturating_sub(ms) as f64 / 1000.0
}

/// The status of this device now.
pub fn device_status(running: &Running, stats: &AgentStats) -> DeviceStatus {
    let cfg = &running.config;
    // Every configured sensor, and every id the stats know (MQTT templates
    // make ids at run time).
    let mut sensors: BTreeMap<String, SensorState> = cfg
        .sensors
        .all()
        .filter(|(kind, _, _)| *kind != "mqtt")
        .map(|(_, _, s)| (s.id().get_ref().clone(), SensorState::default()))
        .collect();
    sensors.extend(stats.sensor_states());
    DeviceStatus {
        format: CONTROL_FORMAT,
        device: cfg.agent.device.get_ref().clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: age_s_since_unix_ms(stats.started_unix_ms.load(Relaxed)),
        epoch: stats.epoch.load(Relaxed),
        link: LinkState::from_code(stats.link_state.load(Relaxed))
            .name()
            .to_owned(),
        buffer: BufferStatus {
            records: stats.buffer_records.load(Relaxed),
            bytes: stats.buffer_bytes.load(Relaxed),
            oldest_unsent_age_s: age_s_since_unix_ms(stats.oldest_unacked_unix_ms.load(Relaxed)),
            dropped_readings: stats.dropped_readings.load(Relaxed),
            dropped_records: stats.dropped_records.load(Relaxed),
        },
        acked_messages: stats.acked_messages.load(Relaxed),
        acked_readings: stats.acked_readings.load(Relaxed),
        publish_failures: stats.publish_failures.load(Relaxed),
        clock: match stats.clock() {
            Clock::Synced => "synced",
            Clock::Unsynced => "unsynced",
            Clock::Unknown => "unknown",
        }
        .to_owned(),
        config: running.origin.clone(),
        sensors: sensors
            .into_iter()
            .map(|(id, s)| SensorStatus {
                id,
                readings: s.counters.readings,
                suppressed: s.counters.suppressed,
                errors: s.counters.errors,
                last: s.last.map(|(v, ts)| timed((&v).into(), ts)),
                last_error: s.last_error.map(|(e, ts)| timed(e, ts)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_wire::Value;
    use tributary_wire::control::{ConfigOrigin, JsonValue};

    fn running() -> Running {
        let cfg = tributary_config::parse(
            "[agent]\ndevice = \"pi-1\"\n[[sensors.simulated]]\nid = \"quiet\"\n\
             [[sensors.simulated]]\nid = \"t\"\n",
            std::path::Path::new("a.toml"),
        )
        .unwrap();
        Running {
            config: cfg,
            origin: ConfigOrigin {
                source: "file".into(),
                file: Some("a.toml".into()),
                fleet: None,
                revision: None,
                refused: None,
            },
        }
    }

    #[test]
    fn the_status_lists_configured_sensors_with_their_last_value_and_error() {
        let stats = AgentStats::default();
        stats.epoch.store(42, Relaxed);
        stats.buffer_records.store(3, Relaxed);
        let ts = now_unix_ns() - 2_000_000_000;
        stats.reading("t", &Value::Float(21.5), ts);
        stats.error("t", &"garbage on the bus");
        let s = device_status(&running(), &stats);
        assert_eq!(
            (s.device.as_str(), s.epoch, s.buffer.records),
            ("pi-1", 42, 3)
        );
        assert_eq!(s.link, "catching_up");
        let ids: Vec<_> = s.sensors.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["quiet", "t"]);
        let t = &s.sensors[1];
        let last = t.last.as_ref().unwrap();
        assert_eq!(last.value, JsonValue::Float(21.5));
        assert!((1.5..10.0).contains(&last.age_s), "{}", last.age_s);
        assert_eq!(t.last_error.as_ref().unwrap().value, "garbage on the bus");
        assert_eq!((t.readings, t.errors), (1, 1));
        assert!(s.sensors[0].last.is_none());
    }
}
