//! Fuzz target: every sensor payload parser (the first byte chooses): the
//! first number of a sysfs/hwmon/IIO file, 1-wire `w1_slave` text, a
//! command's output (plain or JSON with a pointer), an MQTT payload (plain
//! or JSON with a pointer, size-limited), MQTT topic filters against a model
//! matcher, and MQTT id templates. Properties beyond "does not panic":
//! a number found re-parses from its own rendering; a plain value round-trips
//! through its rendering; a 1-wire reading needs a `crc=... YES` line; an
//! accepted reading is finite and short; the topic matcher agrees with a
//! straightforward recursive model of MQTT's rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_agent::sensors::fuzz_api as p;
use tributary_wire::{MAX_TEXT_LEN, Value};

/// Splits `s` at the first NUL: (first, rest).
fn two(s: &str) -> (&str, &str) {
    s.split_once('\0').unwrap_or((s, ""))
}

/// MQTT topic matching, written from the specification's rules.
fn model_matches(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", _)), _) => true,
        (Some((&"+", f)), Some((_, t))) => model_matches(f, t),
        (Some((a, f)), Some((b, t))) => a == b && model_matches(f, t),
        (None, None) => true,
        _ => false,
    }
}

fn accepted(v: &Value) {
    match v {
        Value::Float(f) => assert!(f.is_finite(), "non-finite reading {f}"),
        Value::Text(t) => assert!(t.len() <= MAX_TEXT_LEN),
        _ => {}
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || x == y,
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = std::str::from_utf8(rest).ok();
    match (which % 6, text) {
        (0, Some(t)) => {
            if let Some(v) = p::first_number(t) {
                assert!(
                    t.bytes().any(|b| b.is_ascii_digit()),
                    "a number without digits in {t:?}"
                );
                if v.is_finite() {
                    assert_eq!(p::first_number(&format!("x={v:?}")), Some(v));
                }
            }
            if let Some(v) = p::plain(t) {
                let shown = match &v {
                    Value::Float(f) => format!("{f:?}"),
                    Value::Int(i) => i.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => panic!("plain gave {other:?}"),
                };
                let back = p::plain(&shown).expect("a plain value's rendering parses");
                assert!(same(&back, &v), "{v:?} -> {shown:?} -> {back:?}");
            }
        }
        (1, Some(t)) => {
            if let Ok(milli) = p::w1_slave(t) {
                let first = t.lines().next().unwrap_or_default().trim();
                assert!(first.contains("crc=") && first.ends_with("YES"), "{t:?}");
                assert!(!milli.is_nan());
            }
        }
        (2, _) => {
            if let Ok(v) = p::command_output(rest, None) {
                accepted(&v);
            }
        }
        (3, Some(t)) => {
            let (pointer, doc) = two(t);
            if let Ok(v) = p::command_output(doc.as_bytes(), Some(pointer)) {
                accepted(&v);
            }
            if let Ok(v) = p::mqtt_payload(doc.as_bytes(), 4096, Some(pointer)) {
                accepted(&v);
                assert!(doc.len() <= 4096);
            }
        }
        (4, _) => {
            let max = usize::from(rest.first().copied().unwrap_or(0)) * 4;
            match p::mqtt_payload(rest, max, None) {
                Ok(v) => {
                    accepted(&v);
                    assert!(rest.len() <= max);
                }
                Err(_) => {}
            }
        }
        (_, Some(t)) => {
            let (filter, topic) = two(t);
            let got = p::mqtt_matches(filter, topic);
            let want = !(topic.starts_with('$')
                && (filter.starts_with('+') || filter.starts_with('#')))
                && model_matches(
                    &filter.split('/').collect::<Vec<_>>(),
                    &topic.split('/').collect::<Vec<_>>(),
                );
            assert_eq!(got, want, "filter {filter:?} topic {topic:?}");
            if let Ok(id) = p::mqtt_resolve(filter, topic)
                && !filter.contains('{')
            {
                assert_eq!(id, filter);
            }
        }
        _ => {}
    }
});
