//! Per-device permissions on the hub, with the shipped template
//! (`cross/hub/device-user.conf`) rendered for two devices: each device's
//! leaf may publish only its own readings, answer only its own control
//! requests and read only its own fleet configuration key — while its own
//! readings, requests and configuration flow.

use std::path::Path;
use std::time::{Duration, Instant};
use tributary_tests::nats::{Credentials, NatsOptions};
use tributary_tests::tributary::{
    agent_config, create_stream, run_fleet, start_agent, stream_envelopes,
};
use tributary_tests::{NatsServer, Result};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_as_another_answer_its_requests_nor_read_its_key() -> Result<()> {
    let accounts = format!(
        "no_auth_user: central\naccounts {{\n  FLEET {{\n    jetstream: enabled\n    users: [\n      {{ user: central, password: central }}\n{}\n{}\n    ]\n  }}\n}}\n",
        device_user("pi-a", "pw-pi-a"),
        device_user("pi-b", "pw-pi-b"),
    );
    let hub = NatsServer::hub_with(NatsOptions {
        extra_config: accounts,
        ..Default::default()
    })?;
    let leaf_a = leaf_as(&hub, "pi-a")?;
    let leaf_b = leaf_as(&hub, "pi-b")?;
    create_stream(&hub).await?;
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
