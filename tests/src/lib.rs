//! Test harness for Tributary's end-to-end tests: real servers, never mocks.
//!
//! Every server runs as a real child process on free `127.0.0.1` ports in its own temp dir,
//! and is SIGKILLed and reaped when its guard is dropped (also when the test panics, after
//! printing the last lines of its log).
//!
//! | type                 | server                                   | notes                                  |
//! |----------------------|------------------------------------------|----------------------------------------|
//! | [`NatsServer`]       | `nats-server` hub (JetStream) or leaf     | 2.9.10 (Debian) and 2.15.x             |
//! | [`NatsCluster`]      | 3 (n) routed `nats-server`s, JetStream    | per-node kill/restart, stream leader   |
//! | [`Kafka`]            | `tansu broker` 0.6.0                      | sqlite (persistent) or memory storage  |
//! | [`KafkaReader`]      | reads topics back (assign, no groups)     | records with key, headers, payload, each validated against the published schemas ([`schema`]) |
//! | [`Mosquitto`]        | `mosquitto` MQTT broker                   | persistent QoS 1 sessions              |
//! | [`Prometheus`]       | `prometheus` (Debian, 2.42)               | scrapes the test's programs, rules     |
//! | [`ServerProcess`]    | any process, e.g. `bins::agent()`         | kill/terminate/pause/resume/restart    |
//! | [`TcpProxy`]           | a TCP proxy the test severs and restores  | cuts a leaf's link to its hub          |
//! | [`TinyFs`]           | a `tmpfs` of a few MiB (needs root)       | disk-full tests; unmounted on drop     |
//! | [`shipped_hub::ShippedCluster`] | `config/examples/hub-*.conf` as 3 nodes | the hub guide's files, started  |
//!
//! ```no_run
//! use std::time::Duration;
//! use tributary_tests::{Kafka, KafkaReader, NatsServer};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn a_reading_reaches_kafka() -> tributary_tests::Result<()> {
//!     let hub = NatsServer::hub()?;
//!     let leaf = NatsServer::leaf(&hub)?;
//!     let kafka = Kafka::start()?;
//!     kafka.create_topic("readings", 3)?;
//!     // … start tributary_tests::bins::agent()? / uplink()? with ServerProcess …
//!     let records = KafkaReader::new(kafka.bootstrap())
//!         .read_until_async("readings", 1, Duration::from_secs(30))
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! Environment variables:
//! - `TRIBUTARY_NATS_SERVER`: the `nats-server` binary (default: `PATH`, `/usr/sbin`);
//! - `TRIBUTARY_TANSU`: the `tansu` binary (default: `PATH`, `~/.cargo/bin/tansu`);
//! - `TRIBUTARY_MOSQUITTO`: the `mosquitto` binary (default: `/usr/sbin/mosquitto`);
//! - `TRIBUTARY_PROMETHEUS`, `TRIBUTARY_PROMTOOL`: Prometheus and promtool (default: `PATH`,
//!   `/usr/bin`);
//! - `TRIBUTARY_AGENT_BIN`, `TRIBUTARY_UPLINK_BIN`: Tributary binaries (default: the test's
//!   target dir; build them with `cargo build --workspace --bins`);
//! - `TRIBUTARY_TANSU_LOG`: `RUST_LOG` for tansu (default `warn`);
//! - `TRIBUTARY_HUB_SYNC_INTERVAL`: the hubs' JetStream `sync_interval` (e.g. `always`, needs
//!   nats-server >= 2.10; default: the server's own, 2 minutes), to measure its cost;
//! - `TRIBUTARY_KEEP_TEST_DIRS=1`: keep the servers' temp dirs and logs after the test.
//!
//! Feature `kafka` (default) brings [`Kafka`] and [`KafkaReader`] and with them librdkafka;
//! benchmarks that only need NATS (the agent's) turn it off.
//!
//! Install all external programs with `scripts/install-test-deps.sh`.
//!
//! All server calls block while they wait for readiness; in async tests use a multi-thread
//! runtime so that client tasks keep running, and the `_async` variants of the reader.

pub mod bench;
pub mod bins;
pub mod certs;
pub mod error;
pub mod jwt;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod monitoring;
pub mod mosquitto;
pub mod nats;
pub mod nats_cluster;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod proxy;
#[cfg(feature = "kafka")]
pub mod reader;
pub mod schedule;
#[cfg(feature = "kafka")]
pub mod schema;
pub mod shipped_hub;
#[cfg(feature = "kafka")]
pub mod soak;
pub mod tmpfs;
pub mod tributary;

pub use certs::{TestCerts, TlsFiles};
pub use error::{HarnessError, Result};
pub use jwt::JwtAuth;
#[cfg(feature = "kafka")]
pub use kafka::{Kafka, KafkaStorage};
pub use mosquitto::Mosquitto;
pub use nats::{ClientAuth, Credentials, NatsOptions, NatsServer};
pub use nats_cluster::NatsCluster;
pub use ports::free_port;
pub use process::{ProcessSpec, ServerProcess, pid_exists};
pub use prometheus::{Alert, Prometheus, PrometheusSetup};
pub use proxy::TcpProxy;
#[cfg(feature = "kafka")]
pub use reader::{KafkaReader, Record};
pub use schedule::Schedule;
pub use tmpfs::TinyFs;
pub use tributary_wire::json::JsonReading;
