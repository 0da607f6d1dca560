//! The one error type of the harness: every variant says what went wrong and what to do.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while starting, driving or reading the real servers of a test.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// An external program the tests need is not installed.
    #[error(
        "{program} not found ({looked}); install it with `{install}` \
         or run scripts/install-test-deps.sh"
    )]
    MissingProgram {
        /// The program's name.
        program: &'static str,
        /// Where the harness looked.
        looked: String,
        /// The command that installs it.
        install: &'static str,
    },
    /// A workspace binary has not been built yet.
    #[error(
        "workspace binary {name} not found at {path}; run `cargo build --workspace --bins` \
         (with the same CARGO_TARGET_DIR) before the end-to-end tests"
    )]
    MissingWorkspaceBinary {
        /// The binary's name.
        name: &'static str,
        /// Where it was expected.
        path: PathBuf,
    },
    /// A server process could not be spawned at all.
    #[error("could not spawn {name} ({program}): {source}")]
    Spawn {
        /// The server's name, e.g. `nats-hub`.
        name: String,
        /// The program that was run.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A server process exited or did not become ready in time; `log_tail` shows its last output.
    #[error(
        "{name} did not become ready within {waited:?}: {reason}\n--- last lines of {log} ---\n{log_tail}"
    )]
    NotReady {
        /// The server's name.
        name: String,
        /// How long the harness waited.
        waited: Duration,
        /// What was still missing (port closed, process exited, leaf not connected…).
        reason: String,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
    /// Sending a signal to, or waiting for, a server process failed.
    #[error("{action} on {name} (pid {pid}) failed: {source}")]
    Signal {
        /// What was attempted (SIGTERM, SIGSTOP, wait…).
        action: &'static str,
        /// The server's name.
        name: String,
        /// Its process id.
        pid: u32,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A process did not exit within the deadline after SIGTERM (it has been SIGKILLed since).
    #[error("{name} (pid {pid}) did not exit within {waited:?} after SIGTERM; it was SIGKILLed")]
    DidNotExit {
        /// The server's name.
        name: String,
        /// Its process id.
        pid: u32,
        /// How long the harness waited.
        waited: Duration,
    },
    /// The operation needs a running process but it has been killed; call `restart()` first.
    #[error("{name} is not running; call restart() first")]
    NotRunning {
        /// The server's name.
        name: String,
    },
    /// A file in a server's temp dir could not be written or read.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the harness was doing.
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An async-nats client could not connect to a test server.
    #[error("connecting a NATS client to {url} failed: {source}")]
    NatsConnect {
        /// The server's client URL.
        url: String,
        /// The client error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Publishing to the MQTT broker failed.
    #[error("MQTT publish failed: {reason}")]
    Mqtt {
        /// What the client said.
        reason: String,
    },
    /// A test certificate could not be generated.
    #[error("generating test certificates failed: {0}")]
    Certificates(#[from] rcgen::Error),
    /// A Kafka client operation (metadata, create topic, consume) failed.
    #[cfg(feature = "kafka")]
    #[error("kafka {what} failed: {source}")]
    Kafka {
        /// The operation.
        what: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The broker refused to create a topic.
    #[error("kafka broker refused to create topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's error code and message.
        reason: String,
    },
    /// Fewer records than expected arrived before the deadline.
    #[error("read {got} of {want} records from topic {topic} within {waited:?}")]
    TooFewRecords {
        /// The topic.
        topic: String,
        /// How many records were wanted.
        want: usize,
        /// How many arrived.
        got: usize,
        /// How long the reader waited.
        waited: Duration,
    },
    /// A read to the end of a topic ran out of time before every partition reported its end.
    #[error(
        "read {got} records from topic {topic} within {waited:?}, but only {at_end} of its \
         {partitions} partitions reached their end"
    )]
    NotAtEnd {
        /// The topic.
        topic: String,
        /// How many records arrived.
        got: usize,
        /// Partitions read to their end.
        at_end: usize,
        /// Partitions the topic has.
        partitions: usize,
        /// How long the reader waited.
        waited: Duration,
    },
    /// A record's payload is not a JSON reading.
    #[error("record {partition}/{offset} is not a JSON reading: {source}")]
    BadRecord {
        /// The record's partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A record the uplink wrote breaks its published schema (`schema/` at the repository root).
    #[error("record {partition}/{offset} breaks {schema}: {errors}\n  the record: {record}")]
    SchemaViolation {
        /// The record's partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// The schema file it breaks.
        schema: &'static str,
        /// Every complaint of the validator.
        errors: String,
        /// The record's key, headers and payload (shortened).
        record: String,
    },
    /// A JetStream request of the test itself (create the stream, read it back) failed.
    #[error("jetstream {what} failed: {reason}")]
    JetStream {
        /// What was attempted.
        what: String,
        /// The client's error.
        reason: String,
    },
    /// A request to the test's Prometheus server failed or its answer was not as expected.
    #[error("prometheus {what}: {reason}")]
    Prometheus {
        /// The request (API path, query).
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// A shipped monitoring file (alert rules, dashboard) could not be used.
    #[error("monitoring file {path}: {reason}")]
    Monitoring {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A program's Prometheus endpoint could not be read or lacked a metric.
    #[error("metrics on 127.0.0.1:{port}: {reason}")]
    Metrics {
        /// The endpoint's port.
        port: u16,
        /// What went wrong.
        reason: String,
    },
}

/// Result type of the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

impl HarnessError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        HarnessError::Io {
            what,
            path: path.into(),
            source,
        }
    }

    #[cfg(feature = "kafka")]
    pub(crate) fn kafka(what: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        HarnessError::Kafka {
            what: what.into(),
            source,
        }
    }
}
