//! Tests of the uplink configuration: defaults, routes, exactly-once rules,
//! and errors that name the key.

use super::*;
use crate::{ConfigError, parse};
use std::path::Path;
use std::time::Duration;

fn load(text: &str) -> Result<UplinkConfig, ConfigError> {
    parse(text, Path::new("uplink.toml"))
}

fn key_of(text: &str) -> String {
    let err = load(text).unwrap_err();
    err.key().unwrap_or_default().to_owned()
}

#[test]
fn an_empty_config_gets_working_defaults() {
    let c = load("").unwrap();
    assert_eq!(c.stream.name, "TRIBUTARY");
    assert_eq!(c.kafka.topic, "tributary.readings");
    assert_eq!(c.kafka.dead_letter_topic, "tributary.dead-letter");
    assert_eq!(c.kafka.compression, Compression::Lz4);
    assert_eq!(c.kafka.linger, Duration::from_millis(5));
    assert_eq!(c.kafka.key, KeyMode::Device);
    assert_eq!(c.consumer.nak_delay.get(), Duration::from_secs(5));
    assert!(!c.exactly_once.enabled);
    assert_eq!(c.http.listen, None);
    assert!(c.routes.is_empty());
}

#[test]
fn routes_parse_with_captures_encodings_and_keys() {
    let c = load(
        "[[routes]]\nsubject = \"tributary.*.power\"\ntopic = \"power.{1}\"\nencoding = \"passthrough\"\nkey = \"device_sensor\"\n",
    )
    .unwrap();
    assert_eq!(c.routes[0].topic.get_ref(), "power.{1}");
    assert_eq!(c.routes[0].encoding, Encoding::Passthrough);
    assert_eq!(c.routes[0].key, KeyMode::DeviceSensor);
}

#[test]
fn a_template_that_uses_a_capture_the_pattern_lacks_is_refused_with_its_line() {
    let err = load("[[routes]]\nsubject = \"tributary.*.x\"\ntopic = \"t.{2}\"\n").unwrap_err();
    assert_eq!(err.key(), Some("routes[0].topic"));
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("1 wildcard"), "{err}");
}

#[test]
fn a_bad_subject_pattern_is_refused() {
    assert_eq!(
        key_of("[[routes]]\nsubject = \"a.>.b\"\ntopic = \"t\"\n"),
        "routes[0].subject"
    );
    assert_eq!(
        key_of("[[routes]]\nsubject = \"a..b\"\ntopic = \"t\"\n"),
        "routes[0].subject"
    );
    assert_eq!(
        key_of("[stream]\nsubjects = [\"a.>.b\"]\n"),
        "stream.subjects"
    );
}

#[test]
fn a_literal_topic_with_bad_characters_is_refused() {
    assert_eq!(
        key_of("[[routes]]\nsubject = \"a.*\"\ntopic = \"t/x\"\n"),
        "routes[0].topic"
    );
    assert_eq!(key_of("[kafka]\ntopic = \"a b\"\n"), "kafka.topic");
    assert_eq!(
        key_of("[kafka]\ndead_letter_topic = \"\"\n"),
        "kafka.dead_letter_topic"
    );
}

#[test]
fn exactly_once_refuses_keyless_routes_and_replicas_out_of_range() {
    assert_eq!(
        key_of("[kafka]\nkey = \"none\"\n[exactly_once]\nenabled = true\n"),
        "kafka.key"
    );
    assert_eq!(
        key_of(
            "[exactly_once]\nenabled = true\n[[routes]]\nsubject = \"a.>\"\ntopic = \"t\"\nkey = \"none\"\n"
        ),
        "routes[0].key"
    );
    assert_eq!(
        key_of("[exactly_once]\nenabled = true\nreplicas = 2\nreplica = 2\n"),
        "exactly_once.replica"
    );
    load("[kafka]\nkey = \"none\"\n").unwrap();
    load("[exactly_once]\nenabled = true\nreplicas = 2\nreplica = 1\n").unwrap();
}

#[test]
fn reserved_kafka_properties_are_refused_by_name() {
    assert_eq!(
        key_of("[kafka.properties]\nacks = \"1\"\n"),
        "kafka.properties.acks"
    );
    assert_eq!(
        key_of("[kafka.properties]\npartitioner = \"random\"\n"),
        "kafka.properties.partitioner"
    );
    assert_eq!(
        key_of("[kafka.properties]\n\"message.timeout.ms\" = \"30000\"\n"),
        "kafka.properties.message.timeout.ms",
        "the uplink times deliveries out itself"
    );
}

#[test]
fn unknown_keys_and_bad_enums_are_refused() {
    assert_eq!(
        key_of("[kafka]\ncompresion = \"lz4\"\n"),
        "kafka.compresion"
    );
    assert!(load("[kafka]\ncompression = \"brotli\"\n").is_err());
    assert!(load("[http]\nlisten = \"nowhere\"\n").is_err());
}

#[test]
fn patterns_and_templates_parse_into_parts() {
    assert_eq!(
        parse_pattern("a.*.>").unwrap(),
        vec![
            PatternToken::Literal("a".into()),
            PatternToken::One,
            PatternToken::Rest
        ]
    );
    assert_eq!(
        parse_template("x.{2}-{1}", 2).unwrap(),
        vec![
            TemplatePart::Literal("x.".into()),
            TemplatePart::Capture(1),
            TemplatePart::Literal("-".into()),
            TemplatePart::Capture(0),
        ]
    );
    assert!(parse_template("x.{a}", 1).is_err());
    assert!(parse_template("x.{1", 1).is_err());
}

#[test]
fn the_resolved_config_prints_as_toml_and_parses_back() {
    let c = load(
        "[[routes]]\nsubject = \"a.*\"\ntopic = \"t.{1}\"\n[http]\nlisten = \"127.0.0.1:9465\"\n",
    )
    .unwrap();
    let text = toml::to_string(&c).unwrap();
    let back = load(&text).unwrap();
    assert_eq!(back.routes[0].topic.get_ref(), "t.{1}");
    assert_eq!(back.http, c.http);
    assert_eq!(back.kafka, c.kafka);
}

#[test]
fn bad_sizes_and_counts_are_refused_in_the_users_terms_at_their_line() {
    for (text, key, line, says) in [
        (
            "[kafka]\nmax_record_bytes = \"huge\"\n",
            "kafka.max_record_bytes",
            2,
            "expected a size such as \"64 MiB\"",
        ),
        (
            "[stream]\nmax_bytes = \"99999999 EiB\"\n",
            "stream.max_bytes",
            2,
            "is too large",
        ),
        (
            "[consumer]\n\nmax_ack_pending = 0\n",
            "consumer.max_ack_pending",
            3,
            "expected a whole number of at least 1",
        ),
        (
            "[kafka]\npartitions = -3\n",
            "kafka.partitions",
            2,
            "expected a whole number of at least 1",
        ),
        (
            "[exactly_once]\nreplicas = \"two\"\n",
            "exactly_once.replicas",
            2,
            "expected a whole number of at least 1",
        ),
    ] {
        let err = load(text).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.key(), Some(key), "{msg}");
        assert_eq!(err.line(), Some(line), "{msg}");
        assert!(msg.contains(says), "{msg}");
    }
    let c = load("[stream]\nmax_bytes = \"1.5 GiB\"\n[exactly_once]\nreplicas = 2\n").unwrap();
    assert_eq!(c.stream.max_bytes.map(|b| b.as_u64()), Some(3 << 29));
    assert_eq!(c.exactly_once.replica_count(), 2);
}

#[test]
fn a_rule_without_a_span_points_at_the_line_the_user_wrote() {
    let err = load("[kafka]\n\ntopic = \"a b\"\n").unwrap_err();
    assert_eq!(err.key(), Some("kafka.topic"));
    assert_eq!(err.line(), Some(3), "{err}");
}

#[test]
fn the_stream_is_bounded_by_default_and_can_be_made_unbounded() {
    let c = load("").unwrap();
    assert_eq!(c.stream.max_age, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(c.stream.max_bytes, Some(bytesize::ByteSize::gib(10)));
    let c = load("[stream]\nmax_age = \"0s\"\nmax_bytes = \"0 B\"\n").unwrap();
    assert_eq!(c.stream.max_age, Some(Duration::ZERO));
    assert_eq!(c.stream.max_bytes.map(|b| b.as_u64()), Some(0));
}

#[test]
fn downlink_rules_parse_with_their_defaults_and_bad_ones_name_their_key() {
    let c = load("[[downlink]]\ntopic = \"commands\"\n").unwrap();
    let rule = &c.downlink[0];
    assert_eq!(rule.device, crate::downlink::FieldSource::Key);
    assert_eq!(
        rule.subject_template(&c.control.subject_prefix),
        "tributary-ctl.cmd.{device}.{actuator}"
    );
    assert_eq!(rule.expire_after.get(), Duration::from_secs(300));
    assert_eq!(c.commands.stream, "TRIBUTARY_COMMANDS");
    assert_eq!(
        key_of("[[downlink]]\ntopic = \"commands\"\nsubject = \"cmd.{device}.{actuator}\"\n"),
        "downlink[0].subject"
    );
    assert_eq!(
        key_of("[[downlink]]\ntopic = \"bad topic\"\n"),
        "downlink[0].topic"
    );
    assert!(load("[[downlink]]\ntopic = \"c\"\ndevice = \"body\"\n").is_err());
    assert!(
        load("[[downlink]]\ntopic = \"c\"\nsubject = \"tributary-ctl.cmd.{device}.relay\"\n")
            .is_ok()
    );
    assert_eq!(
        key_of("[commands]\nstream = \"TRIBUTARY\"\n"),
        "commands.stream"
    );
}

#[test]
fn a_readings_stream_that_would_capture_the_commands_is_refused() {
    assert_eq!(
        key_of("[stream]\nsubjects = [\"tributary-ctl.cmd.>\"]\n"),
        "stream.subjects"
    );
}
