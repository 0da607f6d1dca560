//! How the central command shows what devices and uplinks answered: tables
//! and short reports for people, JSON for scripts.

use super::{Answer, Found};
use serde::Serialize;
use std::fmt::Write;
use tributary_wire::control::{ConfigOrigin, DeviceStatus, ReadReply, UplinkStatus};

/// A duration in seconds, short (`0s`, `42s`, `3m12s`, `5h2m`, `3d4h`).
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// `file`, `fleet@7`, with `refused@8` when the last offer was refused.
pub fn origin(o: &ConfigOrigin) -> String {
    let mut out = match o.revision {
        Some(r) if o.source == "fleet" => format!("fleet@{r}"),
        _ => o.source.clone(),
    };
    if let Some(r) = &o.refused {
        let _ = write!(out, " (refused@{})", r.revision);
    }
    out
}

/// One row per device found: what its status said, or that it did not
/// answer.
pub fn fleet_table(rows: &[(Found, Answer<DeviceStatus>)]) -> String {
    let mut lines = vec![[
        "DEVICE".to_owned(),
        "LINK".to_owned(),
        "BACKLOG".to_owned(),
        "OLDEST".to_owned(),
        "DROPPED".to_owned(),
        "CLOCK".to_owned(),
        "CONFIG".to_owned(),
        "VERSION".to_owned(),
        "UPTIME".to_owned(),
    ]];
    for (found, answer) in rows {
        let row = match answer {
            Answer::Reply(s) => [
                s.device.clone(),
                s.link.clone(),
                s.buffer.records.to_string(),
                age(s.buffer.oldest_unsent_age_s),
                s.buffer.dropped_readings.to_string(),
                s.clock.clone(),
                origin(&s.config),
                s.version.clone(),
                age(s.uptime_s),
            ],
            Answer::Refused { code, text } => {
                let mut r = blank(&found.device, &found.version);
                r[1] = format!("error {code}: {text}");
                r
            }
            Answer::NoAnswer => {
                let mut r = blank(&found.device, &found.version);
                r[1] = "no answer".to_owned();
                r
            }
        };
        lines.push(row);
    }
    columns(&lines)
}

fn blank(device: &str, version: &str) -> [String; 9] {
    let dash = || "-".to_owned();
    [
        device.to_owned(),
        dash(),
        dash(),
        dash(),
        dash(),
        dash(),
        dash(),
        version.to_owned(),
        dash(),
    ]
}

/// Left-aligned columns, two spaces apart; the last column unpadded.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One device's status for people.
pub fn device_status(s: &DeviceStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "device {}  version {}  up {}  epoch {}",
        s.device,
        s.version,
        age(s.uptime_s),
        s.epoch
    );
    let _ = writeln!(out, "link   {}  clock {}", s.link, s.clock);
    let b = &s.buffer;
    let _ = writeln!(
        out,
        "buffer {} message(s), {} B, oldest unsent {}; dropped {} reading(s), {} message(s)",
        b.records,
        b.bytes,
        age(b.oldest_unsent_age_s),
        b.dropped_readings,
        b.dropped_records
    );
    let _ = writeln!(
        out,
        "hub    acked {} message(s), {} reading(s); {} publish failure(s)",
        s.acked_messages, s.acked_readings, s.publish_failures
    );
    let _ = writeln!(out, "config {}", origin(&s.config));
    if let Some(r) = &s.config.refused {
        let _ = writeln!(out, "  refused revision {}: {}", r.revision, r.error);
    }
    let mut rows = vec![[
        "SENSOR".to_owned(),
        "LAST".to_owned(),
        "AGE".to_owned(),
        "READINGS".to_owned(),
        "ERRORS".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    for x in &s.sensors {
        rows.push([
            x.id.clone(),
            x.last.as_ref().map_or("-".into(), |l| l.value.to_string()),
            x.last.as_ref().map_or("-".into(), |l| age(l.age_s)),
            x.readings.to_string(),
            x.errors.to_string(),
            x.last_error.as_ref().map_or("-".into(), |e| {
                format!("{} ({} ago)", e.value, age(e.age_s))
            }),
        ]);
    }
    out.push_str(&columns(&rows));
    out
}

/// A reading for people.
pub fn reading(r: &ReadReply) -> String {
    let how = if r.how == "now" {
        "read now".to_owned()
    } else {
        format!("last received {} ago", age(r.reading.age_s))
    };
    format!(
        "{}/{} = {}  at {} ({how})\n",
        r.device, r.sensor, r.reading.value, r.reading.ts
    )
}

/// The uplinks for people.
pub fn uplinks_table(rows: &[(String, Answer<UplinkStatus>)]) -> String {
    let mut lines = vec![[
        "CONSUMER".to_owned(),
        "MODE".to_owned(),
        "PENDING".to_owned(),
        "IN FLIGHT".to_owned(),
        "PRODUCED".to_owned(),
        "ACKED".to_owned(),
        "DLQ".to_owned(),
        "KAFKA".to_owned(),
        "NATS".to_owned(),
        "PARTITIONS".to_owned(),
    ]];
    let up = |b: bool| if b { "up" } else { "DOWN" }.to_owned();
    for (subject, a) in rows {
        lines.push(match a {
            Answer::Reply(u) => [
                u.consumer.clone(),
                u.mode.clone(),
                u.consumer_pending.map_or("-".into(), |p| p.to_string()),
                u.in_flight.to_string(),
                u.produced.to_string(),
                u.acked.to_string(),
                u.dead_lettered.to_string(),
                up(u.kafka_reachable),
                up(u.nats_connected),
                if u.owned_partitions.is_empty() {
                    "all".to_owned()
                } else {
                    format!("{:?}", u.owned_partitions)
                },
            ],
            other => {
                let what = match other {
                    Answer::Refused { code, text } => format!("error {code}: {text}"),
                    _ => "no answer".to_owned(),
                };
                let mut r: [String; 10] = std::array::from_fn(|_| "-".to_owned());
                r[0] = subject.clone();
                r[1] = what;
                r
            }
        });
    }
    columns(&lines)
}

/// `answer` as one JSON object for scripts: `{"answered":true,…reply}`,
/// or `{"answered":false,"error":…}`.
pub fn answer_json<T: Serialize>(name: &str, answer: &Answer<T>) -> serde_json::Value {
    match answer {
        Answer::Reply(r) => serde_json::json!({ "name": name, "answered": true, "reply": r }),
        Answer::Refused { code, text } => {
            serde_json::json!({ "name": name, "answered": true, "error": { "code": code, "text": text } })
        }
        Answer::NoAnswer => serde_json::json!({ "name": name, "answered": false }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_short_and_never_negative() {
        assert_eq!(age(-1.0), "0s");
        assert_eq!(age(42.9), "42s");
        assert_eq!(age(192.0), "3m12s");
        assert_eq!(age(5.0 * 3600.0 + 120.0), "5h2m");
        assert_eq!(age(3.0 * 86400.0 + 4.0 * 3600.0), "3d4h");
    }

    #[test]
    fn a_device_that_does_not_answer_is_a_row_that_says_so() {
        let found = Found {
            device: "pi-2".into(),
            id: "x".into(),
            version: "0.1.0".into(),
        };
        let table = fleet_table(&[(found, Answer::NoAnswer)]);
        let lines: Vec<_> = table.lines().collect();
        assert!(lines[0].starts_with("DEVICE"));
        assert!(
            lines[1].starts_with("pi-2  ") && lines[1].contains("no answer"),
            "{table}"
        );
    }
}
