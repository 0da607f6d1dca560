//! Table-driven tests of `check`: every configuration that `run` would
//! refuse fails `check`, naming the key the user wrote, its line, and what
//! to write instead, in the user's terms; and a configuration whose every
//! secret and file resolves passes.

use super::*;
use std::path::Path;

/// An environment variable no test sets.
const UNSET: &str = "TRIBUTARY_TEST_CHECK_SURELY_UNSET";

/// One case: the agent config's text after `[agent]`, the key the error
/// must name, the line it must point at (`None`: any), and words the
/// message must contain.
struct Case {
    name: &'static str,
    toml: String,
    key: &'static str,
    line: Option<usize>,
    says: &'static [&'static str],
}

fn agent_toml(rest: &str) -> String {
    format!("[agent]\ndevice = \"pi\"\n{rest}")
}

fn check_text(dir: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    check_agent(&path)
}

const PEM_CERT: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n";

#[test]
fn check_refuses_every_configuration_that_run_would_refuse_naming_the_key_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let garbage = d.join("garbage.txt");
    std::fs::write(&garbage, "not a creds file nor PEM\n").unwrap();
    let cert = d.join("client.pem");
    std::fs::write(&cert, PEM_CERT).unwrap();
    let g = garbage.display();
    let cases = [
        Case {
            name: "a password file that does not exist",
            toml: "[nats]\nuser = \"pi\"\npassword = { file = \"/nonexistent/nats.pass\" }\n"
                .into(),
            key: "nats.password",
            line: Some(5),
            says: &["/nonexistent/nats.pass", "No such file or directory"],
        },
        Case {
            name: "a token from an unset environment variable",
            toml: format!("[nats]\ntoken = {{ env = \"{UNSET}\" }}\n"),
            key: "nats.token",
            line: Some(4),
            says: &[UNSET, "is not set"],
        },
        Case {
            name: "a malformed nkey seed",
            toml: "[nats]\nnkey_seed = \"SUNOTAREALSEED\"\n".into(),
            key: "nats.nkey_seed",
            line: Some(4),
            says: &["nkey seed is not valid", "starting with \"SU\""],
        },
        Case {
            name: "an nkey seed from an unset variable",
            toml: format!("[nats]\nnkey_seed = {{ env = \"{UNSET}\" }}\n"),
            key: "nats.nkey_seed",
            line: Some(4),
            says: &[UNSET],
        },
        Case {
            name: "a credentials file that does not exist",
            toml: "[nats]\ncredentials_file = \"/nonexistent/pi.creds\"\n".into(),
            key: "nats.credentials_file",
            line: Some(4),
            says: &[
                "cannot read the credentials file /nonexistent/pi.creds",
                "No such file",
            ],
        },
        Case {
            name: "a credentials file without a JWT and seed",
            toml: format!("[nats]\ncredentials_file = \"{g}\"\n"),
            key: "nats.credentials_file",
            line: Some(4),
            says: &["holds no JWT and seed", "nsc generate creds"],
        },
        Case {
            name: "a CA file that does not exist",
            toml: "[nats.tls]\nca_file = \"/nonexistent/ca.pem\"\n".into(),
            key: "nats.tls.ca_file",
            line: Some(4),
            says: &["cannot read the TLS file /nonexistent/ca.pem"],
        },
        Case {
            name: "a CA file that is not PEM",
            toml: format!("[nats.tls]\nca_file = \"{g}\"\n"),
            key: "nats.tls.ca_file",
            line: Some(4),
            says: &["holds no PEM certificate"],
        },
        Case {
            name: "a client key that is not a key",
            toml: format!(
                "[nats.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                cert.display(),
                cert.display()
            ),
            key: "nats.tls.key_file",
            line: Some(5),
            says: &["holds no PEM private key"],
        },
        Case {
            name: "an MQTT password from an unset variable",
            toml: format!("[mqtt]\nuser = \"u\"\npassword = {{ env = \"{UNSET}\" }}\n"),
            key: "mqtt.password",
            line: Some(5),
            says: &[UNSET],
        },
        Case {
            name: "a size too large for 64 bits",
            toml: "[buffer]\nmax_size = \"99999999 TiB\"\n".into(),
            key: "buffer.max_size",
            line: Some(4),
            says: &["\"99999999 TiB\" is too large"],
        },
        Case {
            name: "a size cap below twice the default segment size",
            toml: "[buffer]\nmax_size = \"1.5 MiB\"\n".into(),
            key: "buffer.max_size",
            line: Some(4),
            says: &[
                "buffer.segment_size = \"1 MiB\", the default",
                "at least \"2 MiB\"",
            ],
        },
        Case {
            name: "a size that is not a size",
            toml: "[buffer]\nmax_size = \"sixty\"\n".into(),
            key: "buffer.max_size",
            line: Some(4),
            says: &["expected a size such as \"64 MiB\""],
        },
        Case {
            name: "a count of zero",
            toml: "[forward]\nmax_readings = 0\n".into(),
            key: "forward.max_readings",
            line: Some(4),
            says: &["expected a whole number of at least 1"],
        },
        Case {
            name: "a count that is a string",
            toml: "[forward]\nmax_in_flight = \"many\"\n".into(),
            key: "forward.max_in_flight",
            line: Some(4),
            says: &["expected a whole number of at least 1"],
        },
        Case {
            name: "a port out of range",
            toml: "[mqtt]\nport = 70000\n".into(),
            key: "mqtt.port",
            line: Some(4),
            says: &["expected a port number from 1 to 65535"],
        },
        Case {
            name: "a duration without a unit",
            toml: "[buffer]\nflush_interval = 5\n".into(),
            key: "buffer.flush_interval",
            line: Some(4),
            says: &["expected a duration such as \"10s\""],
        },
        Case {
            name: "a segment larger than the buffer accepts",
            toml: "[buffer]\nmax_size = \"16 GiB\"\nsegment_size = \"4 GiB\"\n".into(),
            key: "buffer.segment_size",
            line: Some(5),
            says: &["between 4 KiB and 2 GiB"],
        },
        Case {
            name: "a message size that no longer fits twice in the default segment",
            toml: "[forward]\nmax_message_size = \"1 MiB\"\n".into(),
            key: "forward.max_message_size",
            line: Some(4),
            says: &["buffer.segment_size = \"1 MiB\", the default"],
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let text = agent_toml(&case.toml);
        let err = match check_text(d, &text) {
            Ok(_) => {
                failures.push(format!("{}: check passed", case.name));
                continue;
            }
            Err(e) => e,
        };
        let msg = err.to_string();
        if err.key() != Some(case.key) {
            failures.push(format!(
                "{}: key {:?}, not {}: {msg}",
                case.name,
                err.key(),
                case.key
            ));
        }
        if case.line.is_some() && err.line() != case.line {
            failures.push(format!(
                "{}: line {:?}, not {:?}: {msg}",
                case.name,
                err.line(),
                case.line
            ));
        }
        for word in case.says {
            if !msg.contains(word) {
                failures.push(format!("{}: no {word:?} in: {msg}", case.name));
            }
        }
        for library_words in [
            "expected parsable string",
            "expected a nonzero",
            "os error 2): No such",
        ] {
            if msg.contains(library_words) {
                failures.push(format!("{}: {library_words:?} in: {msg}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_passes_when_every_secret_and_file_resolves_and_never_prints_a_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let pass = d.join("nats.pass");
    std::fs::write(&pass, "hunter2\n").unwrap();
    let (ca, cert, key) = (d.join("ca.pem"), d.join("client.pem"), d.join("client.key"));
    std::fs::write(&ca, PEM_CERT).unwrap();
    std::fs::write(&cert, PEM_CERT).unwrap();
    std::fs::write(&key, PEM_KEY).unwrap();
    let text = agent_toml(&format!(
        "[nats]\nuser = \"pi\"\npassword = {{ file = {pass:?} }}\n[nats.tls]\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n"
    ));
    let config = check_text(d, &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(!toml::to_string(&config).unwrap().contains("hunter2"));

    let seed = nkeys::KeyPair::new_user().seed().expect("a seed");
    let text = agent_toml(&format!("[nats]\nnkey_seed = {seed:?}\n"));
    check_text(d, &text).unwrap_or_else(|e| panic!("{e}"));

    let creds = d.join("pi.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QifQ.e30.sig\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
    let text = agent_toml(&format!("[nats]\ncredentials_file = {creds:?}\n"));
    check_text(d, &text).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_bad_seed_is_not_printed_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = check_text(
        dir.path(),
        &agent_toml("[nats]\nnkey_seed = \"SUXSECRETXSEEDXTHATXISXBROKEN\"\n"),
    )
    .unwrap_err();
    let shown = err.to_string();
    assert_eq!(err.key(), Some("nats.nkey_seed"));
    // The caret display shows the line, which holds the seed: only the
    // message after the key must not repeat it.
    let message = shown.lines().next().unwrap_or_default();
    assert!(!message.contains("SECRETXSEED"), "{message}");
}

#[test]
fn the_uplink_check_runs_the_uplinks_own_rules_and_points_at_their_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("uplink.toml");
    std::fs::write(
        &path,
        "[kafka]\nbrokers = \"k:9092\"\n\n[kafka.properties]\n\"sasl.mechanism\" = \"NOPE\"\n",
    )
    .unwrap();
    let err = check_uplink(&path, |c| {
        assert_eq!(c.kafka.brokers, "k:9092");
        Err(ValidationError::new(
            "kafka.properties.sasl.mechanism",
            None,
            "librdkafka refuses it",
        ))
    })
    .unwrap_err();
    assert_eq!(err.key(), Some("kafka.properties.sasl.mechanism"));
    assert_eq!(err.line(), Some(5), "{err}");
    std::fs::write(&path, format!("[nats]\ntoken = {{ env = \"{UNSET}\" }}\n")).unwrap();
    let err = check_uplink(&path, |_| Ok(())).unwrap_err();
    assert_eq!(err.key(), Some("nats.token"), "{err}");
}
