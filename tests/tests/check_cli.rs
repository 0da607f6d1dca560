//! `tributary-agent check` and `tributary-uplink check` as a user runs
//! them: a table of configurations that `run` would refuse, each of which
//! `check` must refuse too (exit 1) with one message naming the key, its
//! line and what to write instead, in the user's terms; valid ones pass
//! (exit 0) without printing a secret; and `run` refuses the same
//! configuration at once, with the same single message, before it opens
//! the buffer.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tributary_tests::bins;

/// An environment variable that no case sets.
const UNSET: &str = "TRIBUTARY_TEST_CLI_SURELY_UNSET";
/// What the message says of it (the caret display repeats the line itself).
const UNSET_MESSAGE: &str =
    "environment variable TRIBUTARY_TEST_CLI_SURELY_UNSET holding a secret is not set";

struct Case {
    name: &'static str,
    /// The configuration file.
    toml: String,
    /// Expected exit code of `check`.
    exit: i32,
    /// Each must appear in the output (stdout, then stderr) exactly once.
    once: &'static [&'static str],
    /// None may appear in stdout or stderr.
    never: &'static [&'static str],
}

fn run_program(program: &Path, args: &[&str], config: &str, dir: &Path) -> Output {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write config");
    Command::new(program)
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove(UNSET)
        .env_remove("TRIBUTARY_LOG")
        .current_dir(dir)
        .output()
        .expect("run the program")
}

/// Runs every case; returns the failures.
fn check_cases(program: &Path, cases: &[Case]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    for case in cases {
        let out = run_program(program, &["check"], &case.toml, dir.path());
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        if out.status.code() != Some(case.exit) {
            failures.push(format!(
                "{}: exit {:?}, not {}\n{stderr}",
                case.name,
                out.status.code(),
                case.exit
            ));
        }
        let both = format!("{stdout}{stderr}");
        for word in case.once {
            let n = both.matches(word).count();
            if n != 1 {
                failures.push(format!("{}: {word:?} {n} times in:\n{both}", case.name));
            }
        }
        for word in case.never {
            if stdout.contains(word) || stderr.contains(word) {
                failures.push(format!(
                    "{}: {word:?} printed:\n{stdout}\n{stderr}",
                    case.name
                ));
            }
        }
    }
    failures
}

/// Library words the messages must not fall back to.
const LIBRARY_WORDS: &[&str] = &["expected parsable string", "expected a nonzero usize"];

fn agent_cases(secret_file: &Path) -> Vec<Case> {
    let agent = |rest: &str| {
        format!("[agent]\ndevice = \"pi\"\nstate_dir = \"/nonexistent/state\"\n{rest}")
    };
    vec![
        Case {
            name: "a valid configuration with a password file",
            toml: agent(&format!(
                "[nats]\nuser = \"pi\"\npassword = {{ file = {:?} }}\n",
                secret_file
            )),
            exit: 0,
            once: &["OK, 0 sensor(s)"],
            never: &["hunter2"],
        },
        Case {
            name: "a password file that does not exist",
            toml: agent(
                "[nats]\nuser = \"pi\"\npassword = { file = \"/nonexistent/nats.pass\" }\n",
            ),
            exit: 1,
            once: &[
                "config.toml:6:12: key `nats.password`",
                "cannot read the secret file /nonexistent/nats.pass",
                "No such file or directory",
            ],
            never: &[],
        },
        Case {
            name: "a token from an unset variable",
            toml: agent(&format!("[nats]\ntoken = {{ env = \"{UNSET}\" }}\n")),
            exit: 1,
            once: &["config.toml:5:9: key `nats.token`", UNSET_MESSAGE],
            never: &[],
        },
        Case {
            name: "a malformed nkey seed",
            toml: agent("[nats]\nnkey_seed = \"SUNOTASEED\"\n"),
            exit: 1,
            once: &[
                "config.toml:5:13: key `nats.nkey_seed`",
                "nkey seed is not valid",
            ],
            never: &[],
        },
        Case {
            name: "a size too large for 64 bits",
            toml: agent("[buffer]\nmax_size = \"99999999 TiB\"\n"),
            exit: 1,
            once: &["config.toml:5:12: key `buffer.max_size`", "is too large"],
            never: &["16.0 EiB"],
        },
        Case {
            name: "a size cap that collides with the default segment size",
            toml: agent("[buffer]\nmax_size = \"1.5 MiB\"\n"),
            exit: 1,
            once: &[
                "config.toml:5:12: key `buffer.max_size`",
                "buffer.segment_size = \"1 MiB\", the default",
            ],
            never: &["key `buffer.segment_size`"],
        },
        Case {
            name: "a size that is not a size",
            toml: agent("[buffer]\nmax_size = \"a lot\"\n"),
            exit: 1,
            once: &["expected a size such as \"64 MiB\""],
            never: LIBRARY_WORDS,
        },
        Case {
            name: "a count of zero",
            toml: agent("[forward]\nmax_in_flight = 0\n"),
            exit: 1,
            once: &[
                "key `forward.max_in_flight`",
                "expected a whole number of at least 1",
            ],
            never: LIBRARY_WORDS,
        },
    ]
}

#[test]
fn agent_check_refuses_what_run_would_refuse_with_one_message_naming_key_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let secret = dir.path().join("nats.pass");
    std::fs::write(&secret, "hunter2\n").expect("write secret");
    let failures = check_cases(&bins::agent().expect("agent binary"), &agent_cases(&secret));
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn uplink_check_refuses_what_run_would_refuse_with_one_message_naming_key_and_line() {
    let cases = [
        Case {
            name: "a valid configuration",
            toml: "[kafka]\nbrokers = \"127.0.0.1:9\"\n".into(),
            exit: 0,
            once: &["brokers = \"127.0.0.1:9\""],
            never: &[],
        },
        Case {
            name: "a token from an unset variable",
            toml: format!("[nats]\ntoken = {{ env = \"{UNSET}\" }}\n"),
            exit: 1,
            once: &["config.toml:2:9: key `nats.token`", UNSET_MESSAGE],
            never: &[],
        },
        Case {
            name: "a property librdkafka does not know",
            toml: "[kafka.properties]\n\"no.such.property\" = \"1\"\n".into(),
            exit: 1,
            once: &[
                "config.toml:2:22: key `kafka.properties.no.such.property`",
                "librdkafka refuses it",
            ],
            never: &[],
        },
        Case {
            name: "a CA file that does not exist",
            toml: "[kafka.properties]\n\"ssl.ca.location\" = \"/nonexistent/ca.pem\"\n".into(),
            exit: 1,
            once: &[
                "key `kafka.properties.ssl.ca.location`",
                "No such file or directory",
            ],
            never: &[],
        },
        Case {
            name: "a count of zero",
            toml: "[consumer]\npull_batch = 0\n".into(),
            exit: 1,
            once: &[
                "key `consumer.pull_batch`",
                "expected a whole number of at least 1",
            ],
            never: LIBRARY_WORDS,
        },
        Case {
            name: "a size that is not a size",
            toml: "[kafka]\nmax_record_bytes = \"big\"\n".into(),
            exit: 1,
            once: &[
                "key `kafka.max_record_bytes`",
                "expected a size such as \"64 MiB\"",
            ],
            never: LIBRARY_WORDS,
        },
    ];
    let failures = check_cases(&bins::uplink().expect("uplink binary"), &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn agent_run_refuses_a_bad_secret_at_once_with_one_message_and_no_buffer_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    let config = format!(
        "[agent]\ndevice = \"pi\"\nstate_dir = {state:?}\n[nats]\nurls = [\"nats://127.0.0.1:9\"]\nuser = \"pi\"\npassword = {{ file = \"/nonexistent/nats.pass\" }}\n"
    );
    let started = Instant::now();
    let out = run_program(
        &bins::agent().expect("agent binary"),
        &["run"],
        &config,
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the OS error once:\n{stderr}"
    );
    assert_eq!(stderr.matches("key `nats.password`").count(), 1, "{stderr}");
    assert!(
        !state.exists(),
        "the buffer was not opened: {state:?} exists"
    );
}
