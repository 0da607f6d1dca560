//! The soak's verifier: reads the whole readings topic back and accounts for every reading
//! each agent generated.
//!
//! A sensor is a counter that starts at 0 at every start of its agent, and every reading
//! carries the device's never-repeating sequence number and the wall-clock time it was
//! taken. So, per sensor and per run of the agent (the runs are told apart by time: the soak
//! records when it started and ended each), the readings generated are the counter values
//! `0..n`, where `n` is the larger of one past the highest value delivered and the agent's
//! own `tributary_agent_sensor_readings_total` scraped just before the run ended. A value
//! of a run that ended cleanly that never arrived is *missing*. One of a SIGKILLed run is
//! *lost to the kill* when it may have been taken within the power-cut window before the
//! kill — its delivered predecessor (or the run's start) is at most [`WINDOW_SLACK`] older
//! than `flush_interval` before the kill — and *missing* otherwise.
//!
//! Records are also counted per reading id (*duplicated*: copies beyond the first) and in
//! Kafka order (*out of order*: a record of a sensor whose sequence number is below one
//! already seen for that sensor; a device's records share one partition). A duplicate whose
//! copies come from different stream messages (exactly-once mode only: the stream sequence
//! in header `tributary-origin`) was stored twice by the hub — a resend the duplicate
//! window and the agent's read back did not catch; one from the same stream message was
//! written twice by an uplink.

use super::rig::{Rig, RunEnd, TOPIC, sensor_ids};
use super::{FLUSH_INTERVAL, Mode, Result};
use crate::KafkaReader;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// What the window may exceed `flush_interval` by: a sensor's interval and linger (the
/// predecessor was taken that much earlier) and scheduling on a loaded machine.
pub const WINDOW_SLACK: Duration = Duration::from_millis(300);

/// The accounting of one sensor (or the sum of a device's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Readings taken.
    pub generated: u64,
    /// Distinct readings in Kafka.
    pub delivered: u64,
    /// Not delivered, outside the power-cut window.
    pub missing: u64,
    /// Not delivered, taken within the window before a SIGKILL.
    pub lost_to_kills: u64,
    /// Copies beyond the first.
    pub duplicated: u64,
    /// Of `duplicated`: copies from another stream message than the first (the hub stored
    /// the reading twice).
    pub stored_twice: u64,
    /// Records behind a later one of the same sensor.
    pub out_of_order: u64,
    /// The oldest a reading lost to a kill may have been at the kill (ms).
    pub oldest_lost_ms: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.generated += o.generated;
        self.delivered += o.delivered;
        self.missing += o.missing;
        self.lost_to_kills += o.lost_to_kills;
        self.duplicated += o.duplicated;
        self.stored_twice += o.stored_twice;
        self.out_of_order += o.out_of_order;
        self.oldest_lost_ms = self.oldest_lost_ms.max(o.oldest_lost_ms);
    }
}

/// The verifier's findings for one soak.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The schedule's seed.
    pub seed: u64,
    /// The uplinks' mode.
    pub mode: Option<Mode>,
    /// Wall time of the whole soak.
    pub elapsed: Duration,
    /// `(device, sensor)` → counts.
    pub sensors: BTreeMap<(String, String), Counts>,
    /// Device → counts over its sensors, plus its runs and agent counters.
    pub devices: BTreeMap<String, (Counts, String)>,
    /// Records that are no reading of a soak sensor.
    pub foreign: u64,
    /// Where the secret showed.
    pub secrets: Vec<String>,
    /// Programs that exited on their own (and were restarted, as systemd would).
    pub self_exits: Vec<String>,
    /// A few examples of missing readings, for the failure message.
    pub examples: Vec<String>,
}

impl Report {
    /// The sum over every device.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for (c, _) in self.devices.values() {
            t.add(c);
        }
        t
    }

    /// What failed: empty when the soak passed.
    pub fn failures(&self) -> Vec<String> {
        let t = self.total();
        let mut f = Vec::new();
        if t.missing > 0 {
            f.push(format!(
                "{} readings missing outside the power-cut window, e.g. {:?}",
                t.missing, self.examples
            ));
        }
        if self.mode == Some(Mode::ExactlyOnce) && t.duplicated > 0 {
            f.push(format!(
                "{} duplicated readings in exactly-once mode",
                t.duplicated
            ));
        }
        if t.generated == 0 || t.delivered == 0 {
            f.push("nothing was generated or delivered: the soak proved nothing".into());
        }
        if self.foreign > 0 {
            f.push(format!("{} records that are no soak reading", self.foreign));
        }
        if !self.secrets.is_empty() {
            f.push(format!(
                "the secret appears in: {}",
                self.secrets.join(", ")
            ));
        }
        f
    }
}

/// A reading as the verifier needs it.
struct Seen {
    /// Stream sequences of the copies' messages, as far as the records say.
    stream_seqs: Vec<u64>,
    value: i64,
    seq: u64,
    ts_ns: i64,
}

/// Reads the topic and accounts for every reading of every run of every agent.
pub fn verify(rig: &Rig) -> Result<Report> {
    // A 10-minute soak leaves ~400k records, which tansu serves at ~5k a second.
    let records =
        KafkaReader::new(rig.kafka.bootstrap()).read_all(TOPIC, Duration::from_secs(300))?;
    let mut report = Report {
        mode: Some(rig.mode),
        ..Report::default()
    };
    // (device, sensor) → reading id → (reading, copies); and the max seq seen in Kafka order.
    let mut seen: HashMap<(String, String), HashMap<String, (Seen, u64)>> = HashMap::new();
    let mut last_seq: HashMap<(String, String), u64> = HashMap::new();
    let mut out_of_order: HashMap<(String, String), u64> = HashMap::new();
    for record in &records {
        let Ok(r) = record.reading() else {
            report.foreign += 1;
            continue;
        };
        let (Some(value), Some(ts_ns)) =
            (r.value.as_i64(), tributary_wire::json::parse_rfc3339(&r.ts))
        else {
            report.foreign += 1;
            continue;
        };
        let key = (r.device.clone(), r.sensor.clone());
        let max = last_seq.entry(key.clone()).or_insert(0);
        if r.seq < *max {
            *out_of_order.entry(key.clone()).or_insert(0) += 1;
        }
        *max = (*max).max(r.seq);
        let stream_seq = stream_seq(record);
        let entry = seen.entry(key).or_default().entry(r.id.clone()).or_insert((
            Seen {
                stream_seqs: Vec::new(),
                value,
                seq: r.seq,
                ts_ns,
            },
            0,
        ));
        entry.1 += 1;
        entry.0.stream_seqs.extend(stream_seq);
    }
    let window = i64::try_from((FLUSH_INTERVAL + WINDOW_SLACK).as_nanos()).unwrap_or(i64::MAX);
    for device in &rig.devices {
        let mut total = Counts::default();
        for sensor in sensor_ids() {
            let key = (device.name.clone(), sensor.clone());
            let readings = seen.remove(&key).unwrap_or_default();
            let mut c = Counts {
                out_of_order: out_of_order.get(&key).copied().unwrap_or(0),
                ..Counts::default()
            };
            let mut by_run: Vec<Vec<&Seen>> = vec![Vec::new(); device.runs.len()];
            for (s, copies) in readings.values() {
                c.duplicated += copies - 1;
                let mut seqs = s.stream_seqs.clone();
                seqs.sort_unstable();
                seqs.dedup();
                c.stored_twice += (seqs.len() as u64).saturating_sub(1);
                // The last run started before it was taken.
                let run = device
                    .runs
                    .iter()
                    .rposition(|r| r.started_ns <= s.ts_ns)
                    .unwrap_or(0);
                by_run[run].push(s);
            }
            for (run, mut got) in device.runs.iter().zip(by_run) {
                got.sort_by_key(|s| (s.value, s.seq));
                got.dedup_by_key(|s| s.value);
                let delivered = got.len() as u64;
                let top = got
                    .last()
                    .map_or(0, |s| u64::try_from(s.value + 1).unwrap_or(0));
                let scraped = run.readings.get(&sensor).copied().unwrap_or(0);
                let generated = top.max(scraped);
                c.generated += generated;
                c.delivered += delivered;
                // Walk 0..generated: each value not delivered, with its delivered predecessor.
                let mut next = got.iter().peekable();
                let mut before_ns = run.started_ns;
                for v in 0..generated {
                    let v = i64::try_from(v).unwrap_or(i64::MAX);
                    if let Some(s) = next.peek().filter(|s| s.value == v) {
                        before_ns = s.ts_ns;
                        next.next();
                        continue;
                    }
                    match run.end {
                        Some(RunEnd::Killed { at_ns }) if at_ns - before_ns <= window => {
                            c.lost_to_kills += 1;
                            let age = u64::try_from((at_ns - before_ns) / 1_000_000).unwrap_or(0);
                            c.oldest_lost_ms = c.oldest_lost_ms.max(age);
                        }
                        _ => {
                            c.missing += 1;
                            if report.examples.len() < 5 {
                                report.examples.push(format!(
                                    "{}/{sensor} value {v} of the run started at {} ({:?})",
                                    device.name, run.started_ns, run.end
                                ));
                            }
                        }
                    }
                }
            }
            total.add(&c);
            report.sensors.insert(key, c);
        }
        let last = device.runs.last().map(|r| r.metrics.as_str()).unwrap_or("");
        let kills = device
            .runs
            .iter()
            .filter(|r| matches!(r.end, Some(RunEnd::Killed { .. })))
            .count();
        let counter = |name: &str| super::rig::sample(last, name).unwrap_or(0.0);
        let notes = format!(
            "{} runs ({kills} SIGKILLed); last run: read backs {}, read-back failures {}, already stored {}, spilled {}, dropped {}",
            device.runs.len(),
            counter("tributary_agent_read_backs_total"),
            counter("tributary_agent_read_back_failures_total"),
            counter("tributary_agent_already_stored_messages_total"),
            counter("tributary_agent_spilled_messages_total"),
            counter("tributary_agent_dropped_readings_total"),
        );
        report.devices.insert(device.name.clone(), (total, notes));
    }
    report.foreign += seen.values().map(|m| m.len() as u64).sum::<u64>();
    Ok(report)
}

/// The stream sequence of the message a record came from: header `tributary-origin`
/// (`<stream seq>:<index>`, exactly-once mode only).
fn stream_seq(record: &crate::Record) -> Option<u64> {
    let origin = record.header_str("tributary-origin")?;
    origin.split(':').next()?.parse().ok()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = self.mode.map(|m| m.to_string()).unwrap_or_default();
        writeln!(
            f,
            "== soak result: {mode}, seed {}, {:.0} s",
            self.seed,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "| device | sensor | generated | delivered | missing | lost to SIGKILL (window) | oldest lost | duplicated (stored twice by the hub) | out of order |"
        )?;
        writeln!(f, "|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
        let row = |f: &mut fmt::Formatter<'_>, d: &str, s: &str, c: &Counts| {
            writeln!(
                f,
                "| {d} | {s} | {} | {} | {} | {} | {} ms | {} ({}) | {} |",
                c.generated,
                c.delivered,
                c.missing,
                c.lost_to_kills,
                c.oldest_lost_ms,
                c.duplicated,
                c.stored_twice,
                c.out_of_order
            )
        };
        for ((d, s), c) in &self.sensors {
            row(f, d, s, c)?;
        }
        for (d, (c, _)) in &self.devices {
            row(f, d, "**all**", c)?;
        }
        row(f, "**all**", "", &self.total())?;
        for (d, (_, notes)) in &self.devices {
            writeln!(f, "{d}: {notes}")?;
        }
        writeln!(
            f,
            "power-cut window: flush_interval {FLUSH_INTERVAL:?} (+{WINDOW_SLACK:?} slack); foreign records {}; secret in logs: {}",
            self.foreign,
            if self.secrets.is_empty() {
                "nowhere".to_owned()
            } else {
                self.secrets.join(", ")
            }
        )?;
        for exit in &self.self_exits {
            writeln!(f, "restarted as systemd would: {exit}")?;
        }
        let failures = self.failures();
        if failures.is_empty() {
            writeln!(f, "PASS")
        } else {
            writeln!(f, "FAIL: {}", failures.join("; "))
        }
    }
}
