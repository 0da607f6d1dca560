//! [`Kafka`]: a real Kafka-protocol broker (`tansu` 0.6.0) on a free loopback port.
//!
//! ```no_run
//! # fn main() -> tributary_tests::Result<()> {
//! use tributary_tests::Kafka;
//! let mut kafka = Kafka::start()?; // sqlite storage in its temp dir, survives restarts
//! kafka.create_topic("readings", 3)?; // tansu never auto-creates topics
//! let bootstrap = kafka.bootstrap(); // "127.0.0.1:PORT"
//! kafka.kill()?;
//! kafka.restart()?; // same port, same data
//! # Ok(()) }
//! ```
//!
//! tansu quirks handled here (none of them may leak into product code):
//! - the `sqlite://kafka.db` path is relative to the broker's working directory, so the broker
//!   runs with its temp dir as working directory;
//! - the `--schema-registry file://…` path is relative to the working directory too;
//! - topics are never auto-created: call [`Kafka::create_topic`] first;
//! - consumer groups (`subscribe`) hang: read with [`crate::KafkaReader`], which `assign`s;
//! - transactions (`EndTxn`) are unsupported;
//! - with sqlite storage its `header` table has no index on the record it belongs to, so a
//!   fetch scans every header of the database for each record: a topic of tens of thousands
//!   of records with headers takes minutes per fetch and the broker answers nothing else
//!   meanwhile. [`Kafka::index_headers`] adds the index (the `sqlite3` CLI).
//!
//! Calls block; in `#[tokio::test]`s use `flavor = "multi_thread"`.

use crate::bins;
use crate::error::{HarnessError, Result};
use crate::ports::{free_port, is_listening};
use crate::process::{ProcessSpec, ServerProcess};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the broker keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaStorage {
    /// `sqlite://kafka.db` in the temp dir: survives kill and restart.
    Sqlite,
    /// `memory://tansu/`: fastest, lost on restart.
    Memory,
}

/// A `tansu broker` process. Killed when dropped.
#[derive(Debug)]
pub struct Kafka {
    process: ServerProcess,
    port: u16,
    storage: KafkaStorage,
}

impl Kafka {
    /// Starts tansu with sqlite storage in its temp dir and waits until it answers metadata
    /// requests.
    pub fn start() -> Result<Self> {
        Self::start_with(KafkaStorage::Sqlite)
    }

    /// Starts tansu with in-memory storage (records are lost on restart).
    pub fn start_memory() -> Result<Self> {
        Self::start_with(KafkaStorage::Memory)
    }

    /// Starts tansu with the given storage.
    pub fn start_with(storage: KafkaStorage) -> Result<Self> {
        Self::start_inner(storage, &[])
    }

    /// Starts tansu with the given storage and its broker-side schema validation on: the
    /// published reading schema is installed for each of `topics` in a schema registry
    /// directory ([`crate::schema::tansu_registry`]), so the broker refuses a record of those
    /// topics whose value breaks it (`INVALID_RECORD`). Other topics are not validated.
    ///
    /// Use [`KafkaStorage::Memory`]: with sqlite storage, tansu 0.6.0's storage task panics
    /// ("more or less than one row") on the next write of a producer after it refused one,
    /// and the broker answers nothing from then on. On either engine it refuses a whole batch
    /// without naming the records at fault, and an idempotent producer that bumps its epoch
    /// after the refusal is fenced on its next write.
    pub fn start_validating(storage: KafkaStorage, topics: &[&str]) -> Result<Self> {
        Self::start_inner(storage, topics)
    }

    fn start_inner(storage: KafkaStorage, validated: &[&str]) -> Result<Self> {
        let binary = bins::tansu()?;
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("tributary-kafka-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating temp dir", std::env::temp_dir(), e))?;
        let engine = match storage {
            KafkaStorage::Sqlite => "sqlite://kafka.db",
            KafkaStorage::Memory => "memory://tansu/",
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let mut spec = ProcessSpec::new("tansu", binary).arg("broker");
        if !validated.is_empty() {
            let registry = dir.path().join("schema-registry");
            std::fs::create_dir(&registry)
                .map_err(|e| HarnessError::io("creating schema registry", &registry, e))?;
            for topic in validated {
                crate::schema::tansu_registry(&registry, topic)?;
            }
            // Like the sqlite path, relative to the broker's working directory (its temp dir)
            // even when written as an absolute file:// URL.
            spec = spec
                .arg("--schema-registry")
                .arg("file://./schema-registry");
        }
        let spec = spec
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg(engine)
            .env(
                "RUST_LOG",
                std::env::var("TRIBUTARY_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            );
        let mut kafka = Kafka {
            process: ServerProcess::start(spec, dir)?,
            port,
            storage,
        };
        kafka.wait_ready()?;
        Ok(kafka)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let port = self.port;
        let bootstrap = self.bootstrap();
        self.process.wait_until(READY_TIMEOUT, || {
            if !is_listening(port) {
                return Err(format!("port {port} not accepting"));
            }
            let consumer = base_consumer(&bootstrap, false).map_err(|e| e.to_string())?;
            consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|_| true)
                .map_err(|e| format!("metadata request failed: {e}"))
        })
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The storage engine in use.
    pub fn storage(&self) -> KafkaStorage {
        self.storage
    }

    /// The broker's temp dir (working directory; holds `kafka.db` with sqlite storage).
    pub fn data_dir(&self) -> PathBuf {
        self.process.dir().to_path_buf()
    }

    /// A client config with `bootstrap.servers` set, for producers and consumers of tests.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        config
    }

    /// Writes one record (`key`, `payload`) to `topic` and waits for the broker's confirmation.
    pub async fn produce(&self, topic: &str, key: &str, payload: &[u8]) -> Result<()> {
        let producer: rdkafka::producer::FutureProducer = self
            .client_config()
            .create()
            .map_err(|e| HarnessError::kafka("creating a producer", e))?;
        producer
            .send(
                rdkafka::producer::FutureRecord::to(topic)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| HarnessError::kafka(format!("writing to {topic}"), e))?;
        Ok(())
    }

    /// Creates `topic` with `partitions` partitions (replication 1) through the CreateTopics
    /// admin API and waits until the broker's metadata lists it.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| HarnessError::kafka("creating admin client", e))?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures::executor::block_on(admin.create_topics([&new], &opts))
            .map_err(|e| HarnessError::kafka(format!("creating topic {topic}"), e))?;
        for result in results {
            if let Err((name, code)) = result {
                return Err(HarnessError::CreateTopic {
                    topic: name,
                    reason: format!("{code:?}"),
                });
            }
        }
        let consumer = base_consumer(&self.bootstrap(), false)?;
        let start = Instant::now();
        loop {
            let found = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(2))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map(|t| t.partitions().len())
                });
            if found == usize::try_from(partitions).ok() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(HarnessError::CreateTopic {
                    topic: topic.to_owned(),
                    reason: format!("created, but metadata shows {found:?} partitions after 10s"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// sqlite storage: adds the index tansu 0.6.0 lacks on its `header` table (see the module
    /// docs), with the `sqlite3` CLI, so that fetches of large topics stay fast. Call it once
    /// the broker is up (its tables exist); it is kept across restarts.
    pub fn index_headers(&self) -> Result<()> {
        let db = self.data_dir().join("kafka.db");
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(".timeout 10000")
            .arg("create index if not exists tributary_header_record on header (topition, offset_id);")
            .output()
            .map_err(|e| HarnessError::io("running sqlite3 (apt-get install sqlite3)", &db, e))?;
        if !out.status.success() {
            return Err(HarnessError::io(
                "indexing tansu's headers",
                &db,
                std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
            ));
        }
        Ok(())
    }

    /// Restarts the broker with the same port and storage (SIGKILLing it first if it runs)
    /// and waits until it answers metadata requests. With sqlite storage the records survive.
    pub fn restart(&mut self) -> Result<()> {
        self.process.respawn()?;
        self.wait_ready()
    }
}

crate::process::delegate_process_methods!(Kafka);

/// A consumer without a group (tansu's groups hang), for metadata and `assign`. With `eof`,
/// `poll` reports reaching the end of a partition (`KafkaError::PartitionEOF`).
pub(crate) fn base_consumer(bootstrap: &str, eof: bool) -> Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        // librdkafka refuses `assign` without a group id ("Unknown group");
        // no group is joined and nothing is committed.
        .set("group.id", "tributary-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // tansu 0.6.0 serves a fetch by querying each partition from the fetch offset to the
        // high watermark (a running byte sum over every remaining row) and then each record's
        // headers one query at a time, filling up to 5 MiB. On a soak's ~400k records that took
        // over 6 s per fetch: every fetch timed out and was retried from offset 0, and nothing
        // was ever read. 1 MiB fetches take about a second each there; the socket timeout
        // leaves room for a slow one on a loaded machine.
        .set("fetch.max.bytes", "1048576")
        .set("socket.timeout.ms", "15000")
        .set("log_level", "3")
        .create()
        .map_err(|e| HarnessError::kafka("creating consumer", e))
}
