//! Unit tests of `tail`: line formats, ages, filters, and an unreachable
//! broker (a closed local port: no broker needed).

use super::*;
use std::collections::BTreeMap;

fn reading() -> JsonReading {
    JsonReading {
        id: "demo-pi:1:42".into(),
        device: "demo-pi".into(),
        sensor: "greenhouse_temp".into(),
        epoch: 1,
        seq: 42,
        ts: "2026-11-28T01:02:03.123456789Z".into(),
        clock: Clock::Synced,
        value: serde_json::json!(21.5),
        unit: Some("°C".into()),
        tags: BTreeMap::from([("room".into(), "greenhouse".into())]),
    }
}

#[test]
fn a_reading_prints_as_one_line_with_millisecond_time_unit_and_tags() {
    let r = reading();
    assert_eq!(
        format_reading(&r),
        "2026-11-28T01:02:03.123Z demo-pi/greenhouse_temp seq=42 21.5 °C {room=greenhouse}"
    );
    let r = JsonReading {
        ts: "2026-11-28T01:02:03.5Z".into(),
        value: serde_json::json!("ON"),
        unit: None,
        tags: BTreeMap::new(),
        ..r
    };
    assert_eq!(
        format_reading(&r),
        "2026-11-28T01:02:03.500Z demo-pi/greenhouse_temp seq=42 \"ON\""
    );
}

#[test]
fn a_reading_taken_before_its_clock_was_synchronized_says_so_on_its_line() {
    for (clock, suffix) in [
        (Clock::Unsynced, " clock=unsynced"),
        (Clock::Unknown, " clock=unknown"),
    ] {
        let line = format_reading(&JsonReading { clock, ..reading() });
        assert!(line.ends_with(suffix), "{line}");
    }
}

/// A record that reached Kafka after `tail` started.
fn arriving(partition: i32, offset: i64) -> Place {
    Place {
        partition,
        offset,
        stored: false,
    }
}

/// A record that was already in Kafka when `tail` started.
fn already_stored(partition: i32, offset: i64) -> Place {
    Place {
        stored: true,
        ..arriving(partition, offset)
    }
}

/// The line printed for [`reading`] found at `place` at `now`, as text.
fn reading_line(
    opts: &TailOptions,
    place: Place,
    now: SystemTime,
    report: &mut TailReport,
) -> Option<String> {
    line_for(opts, &stored(&reading()), place, now, report).map(|l| String::from_utf8(l).unwrap())
}

/// `r` as the uplink stores it.
fn stored(r: &JsonReading) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

#[test]
fn the_age_on_arrival_is_now_minus_the_reading_timestamp() {
    let ts = parse_rfc3339(&reading().ts).unwrap();
    let now = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ts).unwrap() + 12_300_000);
    assert_eq!(age_ns(&reading(), now), Some(12_300_000));
    let before = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ts).unwrap() - 1_000_000);
    assert_eq!(age_ns(&reading(), before), Some(-1_000_000));
    let bad = JsonReading {
        ts: "yesterday".into(),
        ..reading()
    };
    assert_eq!(age_ns(&bad, now), None);
}

#[test]
fn with_age_the_human_line_ends_with_the_age_and_every_age_is_summarized() {
    let opts = TailOptions {
        age: true,
        ..TailOptions::default()
    };
    let ts = parse_rfc3339(&reading().ts).unwrap();
    let arrived = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ts).unwrap() + 12_300_000);
    let mut report = TailReport::default();
    let line = reading_line(&opts, arriving(0, 7), arrived, &mut report).unwrap();
    assert!(line.ends_with("{room=greenhouse} age=12.3ms"), "{line}");
    assert_eq!(report.latency.count(), 1);
    assert_eq!(
        report.latency.summary(),
        "age on arrival of 1 readings: p50 12.3ms p90 12.3ms p99 12.3ms max 12.3ms"
    );
}

#[test]
fn a_record_already_in_kafka_when_tail_started_says_stored_and_stays_out_of_the_summary() {
    let ts = parse_rfc3339(&reading().ts).unwrap();
    let later = UNIX_EPOCH + Duration::from_nanos(u64::try_from(ts).unwrap() + 1_080_000_000);
    for format in [TailFormat::Human, TailFormat::Json] {
        let opts = TailOptions {
            age: true,
            format,
            ..TailOptions::default()
        };
        let mut report = TailReport::default();
        let line = reading_line(&opts, already_stored(0, 3), later, &mut report).unwrap();
        match format {
            TailFormat::Human => assert!(line.ends_with("{room=greenhouse} stored"), "{line}"),
            TailFormat::Json => assert_eq!(line.as_bytes(), stored(&reading())),
        }
        assert_eq!((report.stored, report.latency.count()), (1, 0));
        // The next one arrives while tail runs: it has an age and is counted.
        let line = reading_line(&opts, arriving(0, 4), later, &mut report).unwrap();
        if format == TailFormat::Human {
            assert!(line.ends_with(" age=1080.0ms"), "{line}");
        }
        assert_eq!((report.stored, report.latency.count()), (1, 1));
    }
    // Without --age the human line has neither.
    let mut report = TailReport::default();
    let line = reading_line(
        &TailOptions::default(),
        already_stored(0, 3),
        later,
        &mut report,
    );
    let line = line.unwrap();
    assert!(line.ends_with("{room=greenhouse}"), "{line}");
}

#[test]
fn the_json_format_prints_each_record_exactly_as_stored_and_leaves_out_what_is_not_a_reading() {
    let opts = TailOptions {
        format: TailFormat::Json,
        age: true,
        ..TailOptions::default()
    };
    let mut report = TailReport::default();
    let now = SystemTime::now();
    // Field order and spacing as stored, not as this build would write them.
    let odd = br#"{"device":"demo-pi", "id":"demo-pi:1:42","sensor":"s","epoch":1,"seq":42,"ts":"2026-11-28T01:02:03Z","value":1,"clock":"unsynced"}"#;
    for payload in [&stored(&reading())[..], &odd[..]] {
        let line = line_for(&opts, payload, arriving(0, 1), now, &mut report).unwrap();
        assert_eq!(line, payload);
    }
    assert_eq!(
        line_for(&opts, b"\x01binary", arriving(0, 2), now, &mut report),
        None
    );
    assert_eq!(report.not_readings, 1);
    assert_eq!(report.latency.count(), 2, "ages are measured in JSON too");
}

#[test]
fn filters_leave_out_other_devices_and_sensors_in_both_formats() {
    for format in [TailFormat::Human, TailFormat::Json] {
        let opts = TailOptions {
            format,
            device: Some("other".into()),
            ..TailOptions::default()
        };
        let mut report = TailReport::default();
        let now = SystemTime::now();
        assert_eq!(
            line_for(&opts, &stored(&reading()), arriving(0, 1), now, &mut report),
            None
        );
        assert_eq!(
            line_for(&opts, b"junk", arriving(0, 2), now, &mut report),
            None
        );
        assert_eq!(report.latency.count(), 0);
    }
}

#[test]
fn a_record_that_is_not_a_reading_prints_its_place_in_the_human_format() {
    let mut report = TailReport::default();
    let line = line_for(
        &TailOptions::default(),
        b"junk",
        arriving(3, 99),
        SystemTime::now(),
        &mut report,
    )
    .unwrap();
    assert_eq!(line, b"tributary.readings/3@99 4 bytes (not a reading)");
}

#[test]
fn an_unreachable_broker_fails_once_with_a_clear_error_within_the_connect_timeout() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = TailOptions {
        brokers: format!("127.0.0.1:{port}"),
        connect_timeout: Duration::from_secs(1),
        ..TailOptions::default()
    };
    let started = Instant::now();
    let mut out = Vec::new();
    let mut report = TailReport::default();
    let err = tail(&opts, &AtomicBool::new(false), &mut out, &mut report).unwrap_err();
    assert!(matches!(err, TailError::Unreachable(_)), "{err:?}");
    assert_eq!(err.to_string(), "no Kafka broker answered within 1s");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(out.is_empty());
}
