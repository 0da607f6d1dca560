//! Per-device permissions on the hub, with the shipped template
//! (`cross/hub/device-user.conf`) rendered for two devices: each device's
//! leaf may publish only its own readings, answer only its own control
//! requests, read only its own fleet configuration key, consume only its
//! own commands and read back only its own readings — while its own
//! readings, requests, configuration and commands flow.

use std::path::Path;
use std::time::{Duration, Instant};
use tributary_tests::nats::{Credentials, NatsOptions, jetstream_api};
use tributary_tests::tributary::{
    agent_config, command, create_command_stream, create_stream, publish_command, run_fleet,
    start_agent, stream_envelopes,
};
use tributary_tests::{NatsServer, Result};
use tributary_wire::command::{COMMAND_STREAM, command_subject, consumer_name, device_filter};
use tributary_wire::control::JsonValue;

const SENSOR: &str = r#"
[[sensors.simulated]]
id = "temp"
interval = "100ms"
"#;

/// The shipped per-device user entry for `device`.
fn device_user(device: &str, password: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cross/hub/device-user.conf");
    std::fs::read_to_string(&path)
        .expect("the shipped template")
        .replace("@DEVICE@", device)
        .replace("@PASSWORD@", password)
}

fn leaf_as(hub: &NatsServer, device: &str) -> Result<NatsServer> {
    NatsServer::leaf_with(
        hub,
        NatsOptions {
            leaf_credentials: Some(Credentials::new(
                format!("leaf-{device}"),
                format!("pw-{device}"),
            )),
            ..Default::default()
        },
    )
}

/// The last value of `key` in the fleet bucket, read as the agent reads
/// it (a JetStream direct get), from a client behind a leaf.
async fn read_key(client: &async_nats::Client, key: &str) -> std::result::Result<(), String> {
    let subject = format!("$JS.hub.API.DIRECT.GET.KV_tributary-config.$KV.tributary-config.{key}");
    let request = async_nats::Request::new().timeout(Some(Duration::from_secs(3)));
    let msg = client
        .send_request(subject, request)
        .await
        .map_err(|e| e.to_string())?;
    match msg.status {
        None | Some(async_nats::StatusCode::OK) if !msg.payload.is_empty() => Ok(()),
        other => Err(format!("no value: {other:?}")),
    }
}

/// A hub with [`fleet_accounts`] and its readings stream, and the leaves
/// of `pi-a` and `pi-b` connected with their credentials.
async fn two_devices() -> Result<(NatsServer, NatsServer, NatsServer)> {
    let hub = NatsServer::hub_with(NatsOptions {
        extra_config: fleet_accounts(),
        ..Default::default()
    })?;
    let leaf_a = leaf_as(&hub, "pi-a")?;
    let leaf_b = leaf_as(&hub, "pi-b")?;
    create_stream(&hub).await?;
    Ok((hub, leaf_a, leaf_b))
}

/// The hub's accounts with a central user (no password needed) and the
/// shipped entries of devices `pi-a` and `pi-b`.
fn fleet_accounts() -> String {
    format!(
        "no_auth_user: central\naccounts {{\n  FLEET {{\n    jetstream: enabled\n    users: [\n      {{ user: central, password: central }}\n{}\n{}\n    ]\n  }}\n}}\n",
        device_user("pi-a", "pw-pi-a"),
        device_user("pi-b", "pw-pi-b"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another_answer_its_requests_nor_read_its_key() -> Result<()> {
    let (hub, leaf_a, leaf_b) = two_devices().await?;
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut agent_a = start_agent(&agent_config("pi-a", &leaf_a, state_a.path(), SENSOR))?;
    let mut agent_b = start_agent(&agent_config("pi-b", &leaf_b, state_b.path(), SENSOR))?;
    let url = hub.client_url();

    // Both devices' own traffic flows: readings, requests, their own keys.
    let doc = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        doc.path(),
        "[[sensors.simulated]]\nid = \"configured\"\ninterval = \"100ms\"\n",
    )
    .unwrap();
    for device in ["pi-a", "pi-b"] {
        let out = run_fleet(&url, &["push", device, doc.path().to_str().unwrap()])?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("{device}: applied revision")),
            "{text}{}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent_a.log_tail(20),
            agent_b.log_tail(20)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let envs = stream_envelopes(&hub).await.unwrap_or_default();
        if ["pi-a", "pi-b"].iter().all(|d| {
            envs.iter()
                .any(|e| e.device == *d && e.sensor == "configured")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readings of both devices never reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A client behind A's leaf cannot publish as B: no ack, nothing stored.
    let on_a = leaf_a.connect().await?;
    let js_a = async_nats::jetstream::new(on_a.clone());
    let spoof = async {
        js_a.publish("tributary.pi-b.spoofed", "forged".into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    };
    let spoofed = tokio::time::timeout(Duration::from_secs(5), spoof).await;
    assert!(
        !matches!(spoofed, Ok(Ok(_))),
        "a spoofed reading was acknowledged: {spoofed:?}"
    );
    let own = js_a
        .publish("tributary.pi-a.probe", "own".into())
        .await
        .unwrap()
        .await;
    assert!(own.is_ok(), "the device's own subject is refused: {own:?}");
    let central = hub.connect().await?;
    let js = async_nats::jetstream::new(central.clone());
    let mut stream = js.get_stream("TRIBUTARY").await.unwrap();
    let info = stream.info().await.unwrap();
    assert!(info.state.messages > 0);
    let last_spoof = stream
        .get_last_raw_message_by_subject("tributary.pi-b.spoofed")
        .await;
    assert!(last_spoof.is_err(), "the spoofed message is in the stream");

    // A cannot read B's key, while it can read its own.
    read_key(&on_a, "pi-a").await.expect("its own key");
    let other = read_key(&on_a, "pi-b").await;
    assert!(other.is_err(), "device A read B's key");

    // A cannot answer B's requests: with B gone, a responder behind A's leaf
    // on B's status subject is never reached.
    agent_b.terminate(Duration::from_secs(10))?;
    let mut forged = on_a
        .subscribe("tributary-ctl.device.pi-b.status")
        .await
        .unwrap();
    let responder = on_a.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(m) = forged.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, "{\"forged\":true}".into()).await;
            }
        }
    });
    on_a.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = run_fleet(&url, &["status", "pi-b"])?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run_fleet(&url, &["status", "pi-a"])?;
    assert_eq!(out.status.code(), Some(0), "A still answers its own");
    assert!(agent_a.is_running());
    Ok(())
}

/// A file actuator `led` writing to `path`.
fn led(path: &Path) -> String {
    format!(
        "[[actuators.file]]\nid = \"led\"\npath = \"{}\"\naccepts = {{ kind = \"number\", min = 0, max = 255 }}\n",
        path.display()
    )
}

/// Waits until `path` holds `value`.
async fn wait_for_file(path: &Path, value: &str, agent: &tributary_tests::ServerProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(path).unwrap_or_default().trim() != value {
        assert!(
            Instant::now() < deadline,
            "{} never became {value}\n{}",
            path.display(),
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_consumes_its_own_commands_and_cannot_read_another_devices() -> Result<()> {
    let (hub, leaf_a, leaf_b) = two_devices().await?;
    create_command_stream(&hub).await?;
    let (state_a, state_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (led_a, led_b) = (state_a.path().join("led"), state_b.path().join("led"));
    // Like sysfs attributes, the files exist before anything sets them.
    for led in [&led_a, &led_b] {
        std::fs::write(led, "0\n").unwrap();
    }
    let mut agent_a = start_agent(&agent_config("pi-a", &leaf_a, state_a.path(), &led(&led_a)))?;
    let mut agent_b = start_agent(&agent_config("pi-b", &leaf_b, state_b.path(), &led(&led_b)))?;
    let js = async_nats::jetstream::new(hub.connect().await?);

    // Each device's own commands flow through its permissions.
    publish_command(&js, &command("pi-a", "a1", "led", JsonValue::Int(10), 1)).await?;
    publish_command(&js, &command("pi-b", "b1", "led", JsonValue::Int(20), 2)).await?;
    wait_for_file(&led_a, "10", &agent_a).await;
    wait_for_file(&led_b, "20", &agent_b).await;

    // Behind B's leaf, every way into A's commands is closed.
    let on_b = leaf_b.connect().await?;
    let api_prefix = "$JS.hub.API";
    let a_filter = device_filter("tributary-ctl", "pi-a");
    let config = |name: &str, filter: &str| {
        format!(
            r#"{{"stream_name":"{COMMAND_STREAM}","config":{{"durable_name":"{name}","name":"{name}","filter_subject":"{filter}","ack_policy":"explicit"}}}}"#
        )
    };
    let (own_name, a_name) = (consumer_name("pi-b"), consumer_name("pi-a"));
    let b_filter = device_filter("tributary-ctl", "pi-b");
    let refused = [
        (
            "B made a consumer of A's commands (its own name, A's filter)",
            format!("{api_prefix}.CONSUMER.CREATE.{COMMAND_STREAM}.{own_name}.{a_filter}"),
            config(&own_name, &a_filter),
        ),
        (
            "the server took a filter unlike its subject's (A's in the request only)",
            format!("{api_prefix}.CONSUMER.CREATE.{COMMAND_STREAM}.{own_name}.{b_filter}"),
            config(&own_name, &a_filter),
        ),
        (
            "B created A's consumer",
            format!("{api_prefix}.CONSUMER.CREATE.{COMMAND_STREAM}.{a_name}.{a_filter}"),
            config(&a_name, &a_filter),
        ),
        (
            "B pulled from A's consumer",
            format!("{api_prefix}.CONSUMER.MSG.NEXT.{COMMAND_STREAM}.{a_name}"),
            r#"{"batch":1,"expires":1000000000}"#.to_owned(),
        ),
        (
            "B made an unfiltered (old style) ephemeral consumer",
            format!("{api_prefix}.CONSUMER.CREATE.{COMMAND_STREAM}"),
            format!(r#"{{"stream_name":"{COMMAND_STREAM}","config":{{"ack_policy":"none"}}}}"#),
        ),
        (
            "B read the command stream directly",
            format!("{api_prefix}.DIRECT.GET.{COMMAND_STREAM}"),
            r#"{"seq":1}"#.to_owned(),
        ),
        (
            "B read the command stream",
            format!("{api_prefix}.STREAM.MSG.GET.{COMMAND_STREAM}"),
            r#"{"seq":1}"#.to_owned(),
        ),
    ];
    for (what, subject, body) in refused {
        let r = jetstream_api(&on_b, subject, &body).await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // A plain subscription to A's command subjects sees nothing of them.
    let mut sniff = on_b.subscribe("tributary-ctl.cmd.pi-a.>").await.unwrap();
    on_b.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_command(&js, &command("pi-a", "a2", "led", JsonValue::Int(30), 3)).await?;
    wait_for_file(&led_a, "30", &agent_a).await;
    use futures::StreamExt;
    let seen = tokio::time::timeout(Duration::from_secs(1), sniff.next()).await;
    assert!(seen.is_err(), "B saw A's command: {seen:?}");
    // Nor can B publish a command into A's subjects.
    let forged = command("pi-a", "forged", "led", JsonValue::Int(99), 4);
    let js_b = async_nats::jetstream::new(on_b.clone());
    let sent = tokio::time::timeout(Duration::from_secs(3), async {
        js_b.publish(
            command_subject("tributary-ctl", "pi-a", "led"),
            serde_json::to_vec(&forged).unwrap().into(),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
    })
    .await;
    assert!(!matches!(sent, Ok(Ok(_))), "B's forged command was stored");

    // A's commands still flow, and nothing forged reached its LED.
    publish_command(&js, &command("pi-a", "a3", "led", JsonValue::Int(40), 5)).await?;
    wait_for_file(&led_a, "40", &agent_a).await;
    assert!(agent_a.is_running() && agent_b.is_running());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reads_back_only_its_own_readings() -> Result<()> {
    use tributary_agent::link::{HubPublisher, Publisher};
    let (_hub, leaf_a, leaf_b) = two_devices().await?;
    let (on_a, on_b) = (leaf_a.connect().await?, leaf_b.connect().await?);
    for (client, device) in [(&on_a, "pi-a"), (&on_b, "pi-b")] {
        let js = async_nats::jetstream::new(client.clone());
        for seq in 1..=3u64 {
            let msg = async_nats::jetstream::message::PublishMessage::build()
                .payload("reading".into())
                .message_id(format!("{device}:1:{seq}+1"));
            // Right after the stream's creation a leaf may still answer
            // "stream not found": try again until a deadline.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let ack = js
                    .send_publish(format!("tributary.{device}.temp"), msg.clone())
                    .await
                    .unwrap()
                    .await;
                match ack {
                    Ok(_) => break,
                    Err(e)
                        if e.kind()
                            == async_nats::jetstream::context::PublishErrorKind::StreamNotFound
                            && std::time::Instant::now() < deadline =>
                    {
                        eprintln!("publish through the leaf not stored yet: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("publish through the leaf: {e}"),
                }
            }
        }
    }
    let reader = |client: &async_nats::Client, device: &str| {
        HubPublisher::new(
            async_nats::jetstream::new(client.clone()),
            client.clone(),
            "hub",
            "tributary",
            device,
            Duration::from_secs(2),
        )
    };
    // B reads back its own three messages, from the start and from the middle.
    let own = reader(&on_b, "pi-b");
    let found = own
        .read_back("TRIBUTARY", 1)
        .await
        .expect("its own read back");
    assert_eq!(found.messages(), 3, "B's three, none of A's");
    assert!(found.contains_msg_id("pi-b:1:1+1") && found.contains_msg_id("pi-b:1:3+1"));
    let later = own
        .read_back("TRIBUTARY", 5)
        .await
        .expect("read back again");
    assert!(!later.contains_msg_id("pi-b:1:1+1") && later.contains_msg_id("pi-b:1:3+1"));
    // Pretending to be A behind B's leaf gets nothing.
    let as_a = reader(&on_b, "pi-a").read_back("TRIBUTARY", 1).await;
    assert!(as_a.is_err(), "B read back A's readings: {as_a:?}");
    let api_prefix = "$JS.hub.API";
    let config = |name: &str, filter: &str| {
        format!(
            r#"{{"stream_name":"TRIBUTARY","config":{{"name":"{name}","filter_subject":"{filter}","ack_policy":"none","headers_only":true}}}}"#
        )
    };
    let refused = [
        (
            "B made its read-back consumer on A's readings",
            format!("{api_prefix}.CONSUMER.CREATE.TRIBUTARY.rb-pi-b.tributary.pi-a.>"),
            config("rb-pi-b", "tributary.pi-a.>"),
        ),
        (
            "the server took a filter unlike its subject's",
            format!("{api_prefix}.CONSUMER.CREATE.TRIBUTARY.rb-pi-b.tributary.pi-b.>"),
            config("rb-pi-b", "tributary.pi-a.>"),
        ),
        (
            "B removed A's read-back consumer",
            format!("{api_prefix}.CONSUMER.DELETE.TRIBUTARY.rb-pi-a"),
            String::new(),
        ),
        (
            "B read the readings stream directly",
            format!("{api_prefix}.DIRECT.GET.TRIBUTARY"),
            r#"{"seq":1}"#.to_owned(),
        ),
    ];
    for (what, subject, body) in refused {
        let r = jetstream_api(&on_b, subject, &body).await;
        assert!(r.is_err(), "{what}: {r:?}");
    }
    // A's own read back still works afterwards.
    let a_found = reader(&on_a, "pi-a")
        .read_back("TRIBUTARY", 1)
        .await
        .expect("A's read back");
    assert_eq!(a_found.messages(), 3);
    Ok(())
}
