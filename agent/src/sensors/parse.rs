//! Turning text into values: the first number of a sysfs file, a plain
//! number, `true`/`false`/`ON`/`OFF`, or a JSON document with a pointer.

use super::error::{PayloadError, SensorError};
use tributary_wire::{MAX_TEXT_LEN, Value};

/// The start of `text`, for error messages.
pub(crate) fn snippet(text: &str) -> String {
    text.chars().take(40).collect()
}

/// The first number in `text`, such as `21375` in `t=21375` or `42.8` in
/// `temp=42.8'C`.
pub(crate) fn first_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let is_num = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E');
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let starts = b.is_ascii_digit()
            || (matches!(b, b'-' | b'+' | b'.')
                && bytes.get(i + 1).is_some_and(|n| {
                    n.is_ascii_digit()
                        || (*n == b'.' && bytes.get(i + 2).is_some_and(u8::is_ascii_digit))
                }));
        if starts {
            let mut end = i + 1;
            while end < bytes.len() && is_num(bytes[end]) {
                end += 1;
            }
            // The longest prefix that parses: `12e` gives 12, `1-2` gives 1.
            while end > i {
                if let Ok(v) = text[i..end].parse::<f64>() {
                    return Some(v);
                }
                end -= 1;
            }
        }
        i += 1;
    }
    None
}

/// Checks the rules of the wire: finite floats, short text.
pub(crate) fn check(value: Value) -> Result<Value, SensorError> {
    match value {
        Value::Float(f) if !f.is_finite() => Err(SensorError::NotFinite(f)),
        Value::Text(ref t) if t.len() > MAX_TEXT_LEN => Err(SensorError::TextTooLong {
            len: t.len(),
            max: MAX_TEXT_LEN,
        }),
        v => Ok(v),
    }
}

/// A plain number: an integer gives [`Value::Int`], anything else that
/// parses as a float gives [`Value::Float`].
pub(crate) fn number(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(Value::Int(i));
    }
    // Rust accepts "inf" and "NaN"; they are caught by `check`.
    t.parse::<f64>().ok().map(Value::Float)
}

/// A plain payload: a number, `true`/`false` or `ON`/`OFF` (any case).
pub(crate) fn plain(text: &str) -> Result<Value, PayloadError> {
    let t = text.trim();
    if let Some(v) = number(t) {
        return Ok(v);
    }
    if t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("on") {
        return Ok(Value::Bool(true));
    }
    if t.eq_ignore_ascii_case("false") || t.eq_ignore_ascii_case("off") {
        return Ok(Value::Bool(false));
    }
    Err(PayloadError::NotAValue {
        snippet: snippet(t),
    })
}

/// The value at `pointer` in the JSON document `text`. Numbers give numbers;
/// booleans give booleans; strings give a number when they hold one,
/// `ON`/`OFF` give booleans, other strings give text.
pub(crate) fn json(text: &str, pointer: &str) -> Result<Value, PayloadError> {
    let doc: serde_json::Value = serde_json::from_str(text)?;
    let found = doc
        .pointer(pointer)
        .ok_or_else(|| PayloadError::PointerMissing {
            pointer: pointer.to_owned(),
        })?;
    let unsupported = |kind| PayloadError::Unsupported {
        pointer: pointer.to_owned(),
        kind,
    };
    match found {
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(Value::Int(i)),
            None => n
                .as_f64()
                .map(Value::Float)
                .ok_or_else(|| unsupported("a huge number")),
        },
        serde_json::Value::Bool(b) => Ok(Value::Bool(*b)),
        serde_json::Value::String(s) => Ok(plain(s).unwrap_or_else(|_| Value::Text(s.clone()))),
        serde_json::Value::Null => Err(unsupported("null")),
        serde_json::Value::Array(_) => Err(unsupported("an array")),
        serde_json::Value::Object(_) => Err(unsupported("an object")),
    }
}

/// A payload as configured: JSON at `pointer` when one is given, else plain.
pub(crate) fn payload(text: &str, pointer: Option<&str>) -> Result<Value, SensorError> {
    let v = match pointer {
        Some(p) => json(text, p)?,
        None => plain(text)?,
    };
    check(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_number_is_found_after_a_prefix() {
        assert_eq!(first_number("t=21375\n"), Some(21375.0));
        assert_eq!(first_number("temp=42.8'C\n"), Some(42.8));
        assert_eq!(first_number("  -12.5 mV"), Some(-12.5));
        assert_eq!(first_number("volt=1.2000V"), Some(1.2));
        assert_eq!(first_number("12e"), Some(12.0));
        assert_eq!(first_number(".5"), Some(0.5));
        assert_eq!(first_number("abc"), None);
        assert_eq!(first_number("-"), None);
        assert_eq!(first_number(""), None);
    }

    #[test]
    fn plain_payloads_give_numbers_and_booleans() {
        assert_eq!(plain("42").unwrap(), Value::Int(42));
        assert_eq!(plain(" 21.5\n").unwrap(), Value::Float(21.5));
        assert_eq!(plain("ON").unwrap(), Value::Bool(true));
        assert_eq!(plain("off").unwrap(), Value::Bool(false));
        assert_eq!(plain("true").unwrap(), Value::Bool(true));
        assert!(matches!(plain("warm"), Err(PayloadError::NotAValue { .. })));
        assert!(matches!(plain(""), Err(PayloadError::NotAValue { .. })));
    }

    #[test]
    fn non_finite_numbers_are_errors_not_readings() {
        for text in ["NaN", "inf", "-infinity"] {
            assert!(
                matches!(payload(text, None), Err(SensorError::NotFinite(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn json_pointers_pick_a_field() {
        let doc = r#"{"temperature": 21.5, "humidity": 40, "state": "ON", "mode": "heat",
                      "s": "19.5", "n": null, "o": {"a": 1}}"#;
        assert_eq!(json(doc, "/temperature").unwrap(), Value::Float(21.5));
        assert_eq!(json(doc, "/humidity").unwrap(), Value::Int(40));
        assert_eq!(json(doc, "/state").unwrap(), Value::Bool(true));
        assert_eq!(json(doc, "/mode").unwrap(), Value::Text("heat".into()));
        assert_eq!(json(doc, "/s").unwrap(), Value::Float(19.5));
        assert_eq!(json(doc, "/o/a").unwrap(), Value::Int(1));
        assert!(matches!(
            json(doc, "/missing"),
            Err(PayloadError::PointerMissing { .. })
        ));
        assert!(matches!(
            json(doc, "/n"),
            Err(PayloadError::Unsupported { kind: "null", .. })
        ));
        assert!(matches!(
            json(doc, "/o"),
            Err(PayloadError::Unsupported { .. })
        ));
        assert!(matches!(json("{oops", "/a"), Err(PayloadError::Json(_))));
    }

    #[test]
    fn long_text_is_refused() {
        let long = format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_TEXT_LEN + 1));
        assert!(matches!(
            payload(&long, Some("/a")),
            Err(SensorError::TextTooLong { .. })
        ));
    }
}
