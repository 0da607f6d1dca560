//! The agent's connections and life cycle against real nats-server
//! processes: a leaf that requires mutual TLS and a password (read from a
//! file), and SIGHUP reloading the sensor list without losing buffered data.

use std::time::Duration;
use tributary_tests::tributary::{agent_config, create_stream, start_agent, stream_envelopes};
use tributary_tests::{ClientAuth, Credentials, NatsOptions, NatsServer, Result, TestCerts};

const ONE_SENSOR: &str = r#"
[[sensors.simulated]]
id = "first"
waveform = "counter"
interval = "50ms"
"#;

async fn sensors_in_stream(hub: &NatsServer) -> Result<Vec<String>> {
    let mut ids: Vec<String> = stream_envelopes(hub)
        .await?
        .into_iter()
        .map(|e| e.sensor)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

async fn wait_for_sensor(hub: &NatsServer, sensor: &str) -> Result<bool> {
    for _ in 0..100 {
        if sensors_in_stream(hub).await?.iter().any(|s| s == sensor) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_delivers_through_a_leaf_that_requires_mutual_tls_and_a_password_from_a_file()
-> Result<()> {
    let certs = TestCerts::generate()?;
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf_with(
        &hub,
        NatsOptions {
            tls: Some(certs.server_tls(true)),
            auth: Some(ClientAuth::UserPassword(Credentials::new(
                "pi",
                "s3cret-pass",
            ))),
            ..NatsOptions::default()
        },
    )?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let pass = state.path().join("nats.pass");
    std::fs::write(&pass, "s3cret-pass\n").expect("write password");
    let base = agent_config("pi-tls", &leaf, state.path(), ONE_SENSOR);
    let config = base.replacen(
        "[buffer]",
        &format!(
            "user = \"pi\"\npassword = {{ file = {pass:?} }}\n\n[nats.tls]\nca_file = {ca:?}\ncert_file = {cert:?}\nkey_file = {key:?}\n\n[buffer]",
            ca = certs.ca(),
            cert = certs.client_cert(),
            key = certs.client_key(),
        ),
        1,
    );
    assert!(
        config.contains("tls://"),
        "the leaf's client URL is TLS: {config}"
    );
    let mut agent = start_agent(&config)?;
    let arrived = wait_for_sensor(&hub, "first").await?;
    assert!(
        arrived,
        "nothing arrived through the TLS leaf:\n{}",
        agent.log_tail(40)
    );
    assert!(
        !agent.log().contains("s3cret-pass"),
        "the password never appears in the log"
    );
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "agent exit {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_sensors_and_an_invalid_config_keeps_the_old_ones() -> Result<()> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let config = agent_config("pi-reload", &leaf, state.path(), ONE_SENSOR);
    let mut agent = start_agent(&config)?;
    let path = agent.dir().join("agent.toml");
    assert!(
        wait_for_sensor(&hub, "first").await?,
        "{}",
        agent.log_tail(30)
    );

    // A broken file: the agent says why and keeps running its sensors.
    std::fs::write(&path, format!("{config}\nthis is not toml")).expect("write config");
    agent.signal(libc::SIGHUP, "SIGHUP")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        agent.is_running(),
        "an invalid reload must not stop the agent"
    );
    assert!(
        agent.log().contains("keeping the old one"),
        "{}",
        agent.log_tail(20)
    );

    // A valid new list: the second sensor starts, nothing buffered is lost.
    let second = format!(
        "{config}\n[[sensors.simulated]]\nid = \"second\"\nwaveform = \"counter\"\ninterval = \"50ms\"\n"
    );
    std::fs::write(&path, second).expect("write config");
    agent.signal(libc::SIGHUP, "SIGHUP")?;
    assert!(
        wait_for_sensor(&hub, "second").await?,
        "{}",
        agent.log_tail(30)
    );
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "agent exit {status}");

    // Every reading of the first sensor arrived once, across the reloads
    // (its counter restarts at 0 with each reload, so compare per run).
    let envs = stream_envelopes(&hub).await?;
    let mut seqs: Vec<u64> = envs
        .iter()
        .flat_map(|e| e.samples.iter().map(|s| s.seq))
        .collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "no sequence number twice");
    Ok(())
}
