//! Live counters of the agent, shared by the sensors (which read some of them
//! as `system` metrics), the link, the buffer thread, and the Prometheus
//! endpoint.
//!
//! Plain atomics and one short-held std mutex for the per-sensor map; nothing
//! here is held across an `.await`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use tributary_wire::{Clock, Value};

/// Counters of one sensor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SensorCounters {
    /// Readings taken and handed to the buffer.
    pub readings: u64,
    /// Readings suppressed by the deadband.
    pub suppressed: u64,
    /// Failed reads (unreadable file, bad payload, command failure…).
    pub errors: u64,
}

/// What the control plane's `status` shows of one sensor: its counters,
/// its last reading and its last error.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SensorState {
    /// The counters.
    pub counters: SensorCounters,
    /// The last reading sent: its value and when it was taken (UTC ns).
    pub last: Option<(Value, i64)>,
    /// The last failed read: what went wrong and when (UTC ns).
    pub last_error: Option<(String, i64)>,
}

/// Everything the agent counts.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Records (messages) waiting in the buffer, not yet acknowledged.
    pub buffer_records: AtomicU64,
    /// Bytes the buffer uses on disk.
    pub buffer_bytes: AtomicU64,
    /// Unix time in ms when the oldest unacknowledged record was appended;
    /// 0 when the buffer is empty.
    pub oldest_unacked_unix_ms: AtomicU64,
    /// Readings refused by the `drop_newest` policy.
    pub dropped_readings: AtomicU64,
    /// Buffer records (messages) dropped by the when-full policy, oldest or
    /// newest.
    pub dropped_records: AtomicU64,
    /// Messages published and acknowledged by the hub.
    pub acked_messages: AtomicU64,
    /// Readings in acknowledged messages.
    pub acked_readings: AtomicU64,
    /// Publish attempts that failed or timed out (each is retried).
    pub publish_failures: AtomicU64,
    /// Sum of publish-to-ack latencies in microseconds (with `acked_messages`
    /// gives the mean).
    pub ack_latency_us_total: AtomicU64,
    /// Bytes written to the buffer's files.
    pub bytes_written: AtomicU64,
    /// Flush ticks the link went through (watchdog progress).
    pub batcher_ticks: AtomicU64,
    /// Times the link woke up to do something (watchdog progress).
    pub forwarder_wakeups: AtomicU64,
    /// The link's state (`crate::link::LinkState` code: 0 catching
    /// up, the state at start, 1 live, 2 spilling).
    pub link_state: AtomicU8,
    /// Spills: group commits of messages the hub had not acknowledged
    /// within the flush interval.
    pub spills: AtomicU64,
    /// Messages written to the buffer by spills.
    pub spilled_messages: AtomicU64,
    /// Read backs of what the hub holds that succeeded (before resends).
    pub read_backs: AtomicU64,
    /// Read backs that failed or timed out (everything was resent).
    pub read_back_failures: AtomicU64,
    /// Messages not sent again because a read back found them held.
    pub already_stored_messages: AtomicU64,
    /// `fdatasync`/`fsync` calls of the buffer since start.
    pub buffer_syncs: AtomicU64,
    /// Times the buffer found its file system full before its size cap
    /// (the when-full policy acted) or a write failed with `ENOSPC`.
    pub buffer_disk_full: AtomicU64,
    /// Damaged buffer files moved to the quarantine directory on open.
    pub buffer_quarantined_files: AtomicU64,
    /// Unacknowledged buffer records lost to damaged or missing files, as
    /// far as open could tell.
    pub buffer_lost_records: AtomicU64,
    /// From the timestamp of a message's first reading to the hub's ack.
    pub ack_latency: crate::latency::LatencyHistogram,
    /// The system clock's state as last seen by [`crate::clock::watch`]
    /// (read with [`AgentStats::clock`]); unknown until it first looked.
    clock_state: AtomicU8,
    /// The buffer's installation epoch (set once it is open).
    pub epoch: AtomicU64,
    /// Unix time in ms when the agent started (set by `run`).
    pub started_unix_ms: AtomicU64,
    sensors: Mutex<BTreeMap<String, SensorState>>,
}

impl AgentStats {
    /// Adds one reading taken by `sensor`: `value`, taken at `timestamp_ns`.
    pub fn reading(&self, sensor: &str, value: &Value, timestamp_ns: i64) {
        self.with_sensor(sensor, |s| {
            s.counters.readings += 1;
            match &mut s.last {
                // Reuses a text value's allocation.
                Some((last, ts)) => {
                    last.clone_from(value);
                    *ts = timestamp_ns;
                }
                None => s.last = Some((value.clone(), timestamp_ns)),
            }
        });
    }

    /// Adds one reading of `sensor` suppressed by its deadband.
    pub fn suppressed(&self, sensor: &str) {
        self.with_sensor(sensor, |s| s.counters.suppressed += 1);
    }

    /// Adds one failed read of `sensor`, which failed with `error`.
    pub fn error(&self, sensor: &str, error: &dyn std::fmt::Display) {
        let now = crate::sensors::now_unix_ns();
        self.with_sensor(sensor, |s| {
            s.counters.errors += 1;
            s.last_error = Some((error.to_string(), now));
        });
    }

    /// A copy of the per-sensor counters.
    pub fn sensors(&self) -> BTreeMap<String, SensorCounters> {
        self.sensors
            .lock()
            .expect("stats mutex poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.counters))
            .collect()
    }

    /// A copy of what is known of every sensor.
    pub fn sensor_states(&self) -> BTreeMap<String, SensorState> {
        self.sensors.lock().expect("stats mutex poisoned").clone()
    }

    /// The counters of one sensor.
    pub fn sensor(&self, sensor: &str) -> SensorCounters {
        self.sensor_state(sensor).counters
    }

    /// What is known of one sensor.
    pub fn sensor_state(&self, sensor: &str) -> SensorState {
        self.sensors
            .lock()
            .expect("stats mutex poisoned")
            .get(sensor)
            .cloned()
            .unwrap_or_default()
    }

    fn with_sensor(&self, sensor: &str, f: impl FnOnce(&mut SensorState)) {
        let mut map = self.sensors.lock().expect("stats mutex poisoned");
        match map.get_mut(sensor) {
            Some(c) => f(c),
            None => f(map.entry(sensor.to_owned()).or_default()),
        }
    }

    /// The system clock's state as last probed: what a reading taken now
    /// carries. [`Clock::Unknown`] until the clock watcher first looked.
    pub fn clock(&self) -> Clock {
        match self.clock_state.load(Ordering::Relaxed) {
            1 => Clock::Synced,
            2 => Clock::Unsynced,
            _ => Clock::Unknown,
        }
    }

    /// Records the system clock's state (by the clock watcher).
    pub fn set_clock(&self, clock: Clock) {
        let v = match clock {
            Clock::Unknown => 0,
            Clock::Synced => 1,
            Clock::Unsynced => 2,
        };
        self.clock_state.store(v, Ordering::Relaxed);
    }

    /// Reads an atomic counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_state_is_unknown_until_set_and_then_reads_back_as_set() {
        let stats = AgentStats::default();
        assert_eq!(stats.clock(), Clock::Unknown);
        for clock in [Clock::Synced, Clock::Unsynced, Clock::Unknown] {
            stats.set_clock(clock);
            assert_eq!(stats.clock(), clock);
        }
    }

    #[test]
    fn a_sensor_keeps_its_last_reading_and_its_last_error_next_to_its_counts() {
        let stats = AgentStats::default();
        stats.reading("t", &Value::Float(1.5), 10);
        stats.reading("t", &Value::Text("on".into()), 20);
        stats.error("t", &"no such file");
        let s = stats.sensor_state("t");
        assert_eq!(s.counters.readings, 1 + 1);
        assert_eq!(s.counters.errors, 1);
        assert_eq!(s.last, Some((Value::Text("on".into()), 20)));
        assert_eq!(
            s.last_error.as_ref().map(|e| e.0.as_str()),
            Some("no such file")
        );
        assert_eq!(stats.sensor_state("other"), SensorState::default());
    }
}
