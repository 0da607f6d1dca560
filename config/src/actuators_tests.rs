//! Unit tests of actuator definitions: acceptance, rendering, validation.

use super::*;
use crate::AgentConfig;

fn number(min: Option<f64>, max: Option<f64>) -> Accepts {
    Accepts {
        kind: AcceptsKind::Number,
        min,
        max,
        values: Vec::new(),
    }
}

#[test]
fn a_number_actuator_accepts_numbers_within_its_bounds_only() {
    let a = number(Some(0.0), Some(100.0));
    assert!(a.check(&JsonValue::Int(0)).is_ok());
    assert!(a.check(&JsonValue::Float(99.5)).is_ok());
    assert!(a.check(&JsonValue::Int(100)).is_ok());
    let e = a.check(&JsonValue::Int(101)).unwrap_err();
    assert!(e.contains("above the maximum 100"), "{e}");
    let e = a.check(&JsonValue::Float(-0.5)).unwrap_err();
    assert!(e.contains("below the minimum 0"), "{e}");
    assert!(a.check(&JsonValue::Text("5".into())).is_err());
    assert!(a.check(&JsonValue::Bool(true)).is_err());
    assert!(a.check(&JsonValue::Float(f64::NAN)).is_err());
}

#[test]
fn an_enum_actuator_accepts_only_its_strings() {
    let a = Accepts {
        kind: AcceptsKind::Enum,
        min: None,
        max: None,
        values: vec!["ON".into(), "OFF".into()],
    };
    assert!(a.check(&JsonValue::Text("ON".into())).is_ok());
    let e = a.check(&JsonValue::Text("on".into())).unwrap_err();
    assert!(e.contains("\"ON\", \"OFF\""), "{e}");
    assert!(a.check(&JsonValue::Int(1)).is_err());
}

#[test]
fn a_bool_actuator_accepts_only_true_and_false() {
    let a = Accepts {
        kind: AcceptsKind::Bool,
        min: None,
        max: None,
        values: Vec::new(),
    };
    assert!(a.check(&JsonValue::Bool(false)).is_ok());
    assert!(a.check(&JsonValue::Int(1)).is_err());
    assert!(a.check(&JsonValue::Text("true".into())).is_err());
}

#[test]
fn a_json_template_quotes_strings_and_a_plain_payload_does_not() {
    let on = JsonValue::Text("ON \"now\"".into());
    assert_eq!(
        render(r#"{"state": {value}}"#, &on),
        r#"{"state": "ON \"now\""}"#
    );
    assert_eq!(render("{value}", &on), "ON \"now\"");
    assert_eq!(
        render(r#"{"level": {value}}"#, &JsonValue::Int(3)),
        r#"{"level": 3}"#
    );
    assert_eq!(
        render("--set={value}", &JsonValue::Bool(true)),
        "--set=true"
    );
}

#[test]
fn a_file_actuator_scales_and_formats_its_number() {
    let cfg = parse(
        r#"
[[actuators.file]]
id = "fan"
path = "/tmp/pwm"
scale = 2.55
offset = 1
accepts = { kind = "number", min = 0, max = 100 }
"#,
    )
    .unwrap();
    let f = &cfg.actuators.file[0];
    assert_eq!(f.text(&JsonValue::Int(100)).unwrap(), "256\n");
    let mut d = f.clone();
    d.format = NumberFormat::Decimal;
    d.scale = 0.5;
    assert_eq!(d.text(&JsonValue::Int(3)).unwrap(), "2.5\n");
    assert_eq!(f.text(&JsonValue::Bool(true)).unwrap(), "4\n");
}

fn parse(actuators: &str) -> Result<AgentConfig, crate::ConfigError> {
    let text = format!("[agent]\ndevice = \"pi-1\"\n{actuators}");
    crate::parse(&text, std::path::Path::new("agent.toml"))
}

fn error_of(actuators: &str) -> (String, Option<usize>, String) {
    let e = parse(actuators).unwrap_err();
    (
        e.key().unwrap_or_default().to_owned(),
        e.line(),
        e.to_string(),
    )
}

#[test]
fn all_three_kinds_parse_with_their_defaults() {
    let cfg = parse(
        r#"
[[actuators.mqtt]]
id = "vent"
topic = "z2m/vent/set"
accepts = { kind = "enum", values = ["ON", "OFF"] }

[[actuators.command]]
id = "relay"
program = "/usr/local/bin/relay"
args = ["--set", "{value}"]
accepts = { kind = "bool" }
"#,
    )
    .unwrap();
    let m = &cfg.actuators.mqtt[0];
    assert_eq!((m.payload.as_str(), m.qos, m.retain), ("{value}", 1, false));
    let c = &cfg.actuators.command[0];
    assert_eq!(c.timeout.get(), std::time::Duration::from_secs(10));
    assert!(cfg.actuators.get("relay").is_some());
    assert!(cfg.actuators.get("nope").is_none());
}

#[test]
fn a_duplicate_actuator_id_is_named_with_its_line() {
    let (key, line, text) = error_of(
        r#"
[[actuators.file]]
id = "a"
path = "/tmp/x"
accepts = { kind = "number" }

[[actuators.command]]
id = "a"
program = "true"
accepts = { kind = "bool" }
"#,
    );
    assert_eq!(key, "actuators.command[0].id");
    assert_eq!(line, Some(10), "{text}");
    assert!(text.contains("already used by actuators.file[0]"), "{text}");
}

#[test]
fn an_actuator_id_must_be_a_subject_token() {
    let (key, _, _) = error_of(
        r#"
[[actuators.command]]
id = "a.b"
program = "true"
accepts = { kind = "bool" }
"#,
    );
    assert_eq!(key, "actuators.command[0].id");
}

#[test]
fn inconsistent_acceptance_declarations_are_refused() {
    for (accepts, field) in [
        (r#"{ kind = "number", min = 5, max = 1 }"#, "max"),
        (r#"{ kind = "enum" }"#, "values"),
        (r#"{ kind = "bool", min = 0 }"#, "min"),
        (r#"{ kind = "number", values = ["a"] }"#, "values"),
    ] {
        let (key, _, text) = error_of(&format!(
            "[[actuators.mqtt]]\nid = \"v\"\ntopic = \"t\"\naccepts = {accepts}\n"
        ));
        assert_eq!(key, format!("actuators.mqtt[0].accepts.{field}"), "{text}");
    }
}

#[test]
fn an_unknown_field_or_kind_is_refused() {
    assert!(parse("[[actuators.file]]\nid = \"f\"\npath = \"/x\"\naccepts = { kind = \"number\" }\nshell = true\n").is_err());
    assert!(
        parse("[[actuators.file]]\nid = \"f\"\npath = \"/x\"\naccepts = { kind = \"percent\" }\n")
            .is_err()
    );
    assert!(parse("[[actuators.relay]]\nid = \"f\"\n").is_err());
}

#[test]
fn mqtt_and_file_actuators_check_their_own_fields() {
    let (key, _, _) = error_of(
        "[[actuators.mqtt]]\nid = \"v\"\ntopic = \"a/+\"\naccepts = { kind = \"bool\" }\n",
    );
    assert_eq!(key, "actuators.mqtt[0].topic");
    let (key, _, _) = error_of(
        "[[actuators.mqtt]]\nid = \"v\"\ntopic = \"a\"\npayload = \"on\"\naccepts = { kind = \"bool\" }\n",
    );
    assert_eq!(key, "actuators.mqtt[0].payload");
    let (key, _, _) = error_of(
        "[[actuators.file]]\nid = \"f\"\npath = \"/x\"\naccepts = { kind = \"enum\", values = [\"a\"] }\n",
    );
    assert_eq!(key, "actuators.file[0].accepts");
}
