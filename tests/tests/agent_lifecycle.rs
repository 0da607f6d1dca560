//! The agent's connections and life cycle against real nats-server
//! processes: a leaf that requires mutual TLS and a password (read from a
//! file), a leaf in operator mode that requires TLS and a `.creds` file, a
//! leaf that requires an nkey (seed from the environment), SIGHUP
//! reloading the sensor list without losing buffered data, and the systemd
//! notify protocol (readiness, watchdog pings, stopping) on a real socket.

use std::time::Duration;
use tributary_tests::tributary::{
    agent_config, create_stream, start_agent, start_agent_with_env, stream_envelopes,
};
use tributary_tests::{
    ClientAuth, Credentials, JwtAuth, NatsOptions, NatsServer, Result, TestCerts, bins,
};

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
async fn the_agent_delivers_through_a_leaf_that_requires_tls_and_a_credentials_file() -> Result<()>
{
    let certs = TestCerts::generate()?;
    let auth = JwtAuth::generate();
    let seed = auth.user_seed().to_owned();
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf_with(
        &hub,
        NatsOptions {
            tls: Some(certs.server_tls(false)),
            auth: Some(ClientAuth::Jwt(Box::new(auth.clone()))),
            ..NatsOptions::default()
        },
    )?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let creds = state.path().join("pi.creds");
    std::fs::write(&creds, auth.creds()).expect("write creds");
    let base = agent_config("pi-creds", &leaf, state.path(), ONE_SENSOR);
    let config = base.replacen(
        "[buffer]",
        &format!(
            "credentials_file = {creds:?}\n\n[nats.tls]\nca_file = {ca:?}\n\n[buffer]",
            ca = certs.ca(),
        ),
        1,
    );
    let mut agent = start_agent(&config)?;
    let arrived = wait_for_sensor(&hub, "first").await?;
    assert!(
        arrived,
        "nothing arrived through the operator-mode TLS leaf:\n{}\n--- leaf\n{}",
        agent.log_tail(40),
        leaf.log_tail(20)
    );
    assert!(
        !agent.log().contains(&seed),
        "the seed never appears in the log"
    );
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "agent exit {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_delivers_through_a_leaf_that_requires_an_nkey_whose_seed_comes_from_the_environment()
-> Result<()> {
    let auth = ClientAuth::new_nkey();
    let ClientAuth::Nkey { seed } = &auth else {
        unreachable!("new_nkey makes an nkey")
    };
    let seed = seed.clone();
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf_with(
        &hub,
        NatsOptions {
            auth: Some(auth),
            ..NatsOptions::default()
        },
    )?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let base = agent_config("pi-nkey", &leaf, state.path(), ONE_SENSOR);
    let config = base.replacen(
        "[buffer]",
        "nkey_seed = { env = \"PI_NKEY_SEED\" }\n\n[buffer]",
        1,
    );

    // Without the seed the leaf refuses the agent: nothing arrives, and the
    // agent keeps retrying instead of exiting.
    let mut refused = start_agent(&base)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(refused.is_running(), "{}", refused.log_tail(20));
    assert!(
        stream_envelopes(&hub).await?.is_empty(),
        "an unauthenticated agent got readings through"
    );
    refused.kill()?;

    let mut agent = start_agent_with_env(&config, &[("PI_NKEY_SEED", seed.as_ref())])?;
    let path = agent.dir().join("agent.toml");
    let arrived = wait_for_sensor(&hub, "first").await?;
    assert!(
        arrived,
        "nothing arrived through the nkey leaf:\n{}",
        agent.log_tail(40)
    );
    assert!(
        !agent.log().contains(&seed),
        "the seed never appears in the log"
    );
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "agent exit {status}");

    // `check` resolves the config without printing the seed.
    let out = std::process::Command::new(bins::agent()?)
        .args(["check", "--config"])
        .arg(&path)
        .env("PI_NKEY_SEED", &seed)
        .output()
        .expect("run check");
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    assert!(
        !printed.contains(&seed),
        "check printed the seed: {printed}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_tells_systemd_when_it_is_ready_pings_the_watchdog_and_says_when_it_stops()
-> Result<()> {
    use std::os::unix::net::UnixDatagram;
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let socket_path = state.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("socket timeout");
    let config = agent_config("pi-systemd", &leaf, state.path(), ONE_SENSOR);
    // What systemd sets for `Type=notify` with `WatchdogSec=1`.
    let mut agent = start_agent_with_env(
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", "1000000".as_ref()),
        ],
    )?;
    let receive = || -> Option<String> {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    };
    let first = receive();
    assert_eq!(
        first.as_deref(),
        Some("READY=1"),
        "the first notification is readiness\n{}",
        agent.log_tail(30)
    );
    assert!(
        state.path().join("buffer").is_dir(),
        "ready only once the buffer is open"
    );
    // Pinged at half the watchdog interval while sensors and forwarding move.
    let started = std::time::Instant::now();
    for _ in 0..4 {
        assert_eq!(receive().as_deref(), Some("WATCHDOG=1"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "four pings took {:?}",
        started.elapsed()
    );
    agent.signal(libc::SIGTERM, "SIGTERM")?;
    let mut rest = Vec::new();
    while let Some(text) = receive() {
        let stopping = text == "STOPPING=1";
        rest.push(text);
        if stopping {
            break;
        }
    }
    assert_eq!(
        rest.last().map(String::as_str),
        Some("STOPPING=1"),
        "{rest:?}"
    );
    let status = agent.wait_for_exit(Duration::from_secs(20))?;
    assert!(status.success(), "agent exit {status}");
    Ok(())
}
