//! The control plane end to end, against real hub and leaf nats-servers and
//! real agents: discovery of several devices by the central command
//! (`tributary-uplink fleet`) and by a plain `$SRV.PING`, the `status`,
//! `read` and `config` replies with their fields, a device offline
//! reported as such, and configuration from the fleet store (JetStream
//! KV): a valid value applied live and kept across a restart with the hub
//! down, an invalid one refused with its error visible centrally.

use futures::StreamExt;
use serde_json::Value as Json;
use std::path::Path;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{agent_config, create_stream, run_fleet, start_agent};
use tributary_tests::{NatsServer, Result, ServerProcess};
use tributary_wire::control::{ConfigEvent, DeviceStatus};

const SIMULATED: &str = r#"
[[sensors.simulated]]
id = "temp"
unit = "°C"
waveform = "sine"
interval = "100ms"
"#;

/// Polls `cond` every 100 ms until it holds or `within` passes.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `fleet <args> --json` at `url`: exit code and the JSON printed.
fn fleet_json(url: &str, args: &[&str]) -> (i32, Json) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    // `--json` belongs to `fleet`, before the subcommand.
    let out = run_fleet(url, &all).expect("the fleet command runs");
    let code = out.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or(Json::Null);
    (code, json)
}

fn fleet_text(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = run_fleet(url, args).expect("the fleet command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_of(url: &str, device: &str) -> Option<DeviceStatus> {
    let (code, json) = fleet_json(url, &["status", device]);
    (code == 0).then(|| serde_json::from_value(json["reply"].clone()).expect("a status document"))
}

fn agent(device: &str, leaf: &NatsServer, state: &Path, sensors: &str) -> ServerProcess {
    start_agent(&agent_config(device, leaf, state, sensors)).expect("the agent starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_command_and_a_plain_ping_find_every_device_and_ask_each_one() -> Result<()> {
    let hub = NatsServer::hub()?;
    let leaf_a = NatsServer::leaf(&hub)?;
    let leaf_b = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let states: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _a = agent("pi-a", &leaf_a, states[0].path(), SIMULATED);
    let _b = agent("pi-b", &leaf_a, states[1].path(), SIMULATED);
    let mut c = agent("pi-c", &leaf_b, states[2].path(), SIMULATED);
    let url = hub.client_url();

    let mut listed = Json::Null;
    wait_until(
        Duration::from_secs(20),
        "three devices listed, live",
        || {
            listed = fleet_json(&url, &["ls"]).1;
            listed.as_array().is_some_and(|rows| {
                rows.len() == 3 && rows.iter().all(|r| r["reply"]["link"] == "live")
            })
        },
    );
    let names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].clone())
        .collect();
    assert_eq!(names, ["pi-a", "pi-b", "pi-c"]);

    // A plain $SRV.PING through the hub, as `nats micro ls` sends it.
    let client = hub.connect().await?;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await.unwrap();
    client
        .publish_with_reply("$SRV.PING.tributary-agent", inbox, "".into())
        .await
        .unwrap();
    let mut devices = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), replies.next()).await {
        let pong: Json = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(pong["name"], "tributary-agent");
        devices.push(pong["metadata"]["device"].as_str().unwrap().to_owned());
    }
    devices.sort();
    assert_eq!(devices, ["pi-a", "pi-b", "pi-c"]);

    // status: every field the issue lists.
    let s = status_of(&url, "pi-a").expect("pi-a answers");
    assert_eq!((s.device.as_str(), s.link.as_str()), ("pi-a", "live"));
    assert!(s.epoch > 0 && s.uptime_s > 0.0 && !s.version.is_empty());
    assert!(["synced", "unsynced", "unknown"].contains(&s.clock.as_str()));
    assert_eq!(s.buffer.dropped_readings, 0);
    assert_eq!(s.config.source, "file");
    let temp = s
        .sensors
        .iter()
        .find(|x| x.id == "temp")
        .expect("sensor temp");
    assert!(temp.readings > 0 && temp.errors == 0);
    assert!(
        temp.last.as_ref().is_some_and(|l| l.age_s < 5.0),
        "{temp:?}"
    );
    let (_, human, _) = fleet_text(&url, &["status", "pi-a"]);
    assert!(
        human.contains("link   live") && human.contains("temp"),
        "{human}"
    );

    // read: a polled sensor read now; an unknown one is a 404, not silence.
    let (code, read) = fleet_json(&url, &["read", "pi-b", "temp"]);
    assert_eq!(code, 0, "{read}");
    assert_eq!(read["reply"]["how"], "now");
    assert!(read["reply"]["reading"]["value"].is_f64(), "{read}");
    let (code, read) = fleet_json(&url, &["read", "pi-b", "nope"]);
    assert_eq!(code, 1);
    assert_eq!(read["error"]["code"], 404, "{read}");

    // config: resolved TOML and where it came from.
    let (code, cfg) = fleet_json(&url, &["config", "pi-c"]);
    assert_eq!(code, 0);
    assert_eq!(cfg["reply"]["origin"]["source"], "file");
    assert!(
        cfg["reply"]["origin"]["file"]
            .as_str()
            .unwrap()
            .ends_with("agent.toml")
    );
    let toml = cfg["reply"]["toml"].as_str().unwrap();
    assert!(
        toml.contains("device = \"pi-c\"") && toml.contains("[[sensors.simulated]]"),
        "{toml}"
    );

    // A device gone is reported as not answering (exit 3), not as an error.
    c.terminate(Duration::from_secs(10))?;
    let (code, out, err) = fleet_text(&url, &["status", "pi-c"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("pi-c: no answer"), "{out}");
    wait_until(Duration::from_secs(10), "two devices listed", || {
        fleet_json(&url, &["ls"])
            .1
            .as_array()
            .is_some_and(|r| r.len() == 2)
    });
    Ok(())
}

const LOCAL: &str = r#"
[[sensors.simulated]]
id = "local"
interval = "100ms"
"#;

const FLEET: &str = r#"
[[sensors.simulated]]
id = "from_fleet"
waveform = "counter"
interval = "100ms"
"#;

/// Ids of the sensors in `status` that took readings within the last 2 s.
fn fresh_sensors(s: &DeviceStatus) -> Vec<String> {
    s.sensors
        .iter()
        .filter(|x| x.last.as_ref().is_some_and(|l| l.age_s < 2.0))
        .map(|x| x.id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_config_is_applied_live_refused_when_invalid_and_kept_across_a_restart_without_the_hub()
-> Result<()> {
    let mut hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().unwrap();
    let config = agent_config("pi-kv", &leaf, state.path(), LOCAL);
    let mut agent = start_agent(&config)?;
    let url = hub.client_url();
    wait_until(
        Duration::from_secs(20),
        "the local sensor reporting",
        || status_of(&url, "pi-kv").is_some_and(|s| fresh_sensors(&s) == ["local"]),
    );
    let client = hub.connect().await?;
    let mut events = client
        .subscribe("tributary-ctl.event.pi-kv.config")
        .await
        .unwrap();

    // A valid document, pushed by the central command: applied live.
    let doc = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(doc.path(), FLEET).unwrap();
    let path = doc.path().to_str().unwrap();
    let (code, out, err) = fleet_text(&url, &["push", "pi-kv", path]);
    assert_eq!(code, 0, "{out}{err}\n{}", agent.log_tail(20));
    assert!(
        out.contains("pi-kv: revision 1 in tributary-config"),
        "{out}"
    );
    assert!(out.contains("pi-kv: applied revision 1"), "{out}");
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    let event: ConfigEvent = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!((event.outcome.as_str(), event.revision), ("applied", 1));
    wait_until(
        Duration::from_secs(10),
        "only the fleet sensor reporting",
        || status_of(&url, "pi-kv").is_some_and(|s| fresh_sensors(&s) == ["from_fleet"]),
    );
    let s = status_of(&url, "pi-kv").unwrap();
    assert_eq!(
        (s.config.source.as_str(), s.config.revision),
        ("fleet", Some(1))
    );

    // The central command refuses an invalid file before it puts anything.
    std::fs::write(
        doc.path(),
        "[[sensors.simulated]]\nid = \"x\"\ninterval = \"often\"\n",
    )
    .unwrap();
    let (code, out, err) = fleet_text(&url, &["push", "pi-kv", path]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(":3:") && err.contains("interval"), "{err}");

    // One put by someone else, bypassing that check: the agent refuses it,
    // keeps running revision 1, and says why in status and as an event.
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value("tributary-config").await.unwrap();
    let bad = "[[sensors.simulated]]\nid = \"y\"\n\n[buffer]\nmax_size = \"1 GiB\"\n";
    let revision = kv.put("pi-kv", bad.into()).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap();
    let event: ConfigEvent = serde_json::from_slice(&event.payload).unwrap();
    assert_eq!(
        (event.outcome.as_str(), event.revision),
        ("refused", revision)
    );
    let refusal = event.refusal.unwrap();
    assert_eq!(
        (refusal.key.as_deref(), refusal.line),
        (Some("buffer"), Some(4))
    );
    let s = status_of(&url, "pi-kv").unwrap();
    assert_eq!(
        s.config.revision,
        Some(1),
        "the valid revision stays in force"
    );
    assert_eq!(
        s.config.refused.as_ref().map(|r| r.revision),
        Some(revision)
    );
    assert_eq!(fresh_sensors(&s), ["from_fleet"]);

    // Restarted while the hub is down, it runs the kept revision: asked
    // through its own leaf (the leaf answers for the devices behind it).
    hub.kill()?;
    agent.terminate(Duration::from_secs(10))?;
    let mut agent = start_agent(&config)?;
    let leaf_url = leaf.client_url();
    wait_until(
        Duration::from_secs(20),
        "the fleet sensor reporting after the restart",
        || {
            status_of(&leaf_url, "pi-kv").is_some_and(|s| {
                s.config.revision == Some(1) && fresh_sensors(&s) == ["from_fleet"]
            })
        },
    );
    assert!(agent.is_running(), "{}", agent.log_tail(20));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_central_command_lists_the_uplinks_with_their_counters() -> Result<()> {
    use tributary_tests::Kafka;
    use tributary_tests::tributary::{start_uplink, uplink_config};
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    let kafka = Kafka::start()?;
    let _uplink = start_uplink(&uplink_config(&hub, &kafka, "readings", "drain"))?;
    let state = tempfile::tempdir().unwrap();
    let _agent = agent("pi-u", &leaf, state.path(), SIMULATED);
    let url = hub.client_url();
    let mut rows = Json::Null;
    wait_until(
        Duration::from_secs(30),
        "the uplink listed with readings acked",
        || {
            rows = fleet_json(&url, &["uplinks"]).1;
            rows.as_array().is_some_and(|r| {
                r.len() == 1 && r[0]["reply"]["acked"].as_u64().is_some_and(|n| n > 0)
            })
        },
    );
    let u = &rows[0]["reply"];
    assert_eq!(u["mode"], "at_least_once");
    assert_eq!(
        (u["stream"].as_str(), u["consumer"].as_str()),
        (Some("TRIBUTARY"), Some("drain"))
    );
    assert_eq!(
        (
            u["kafka_reachable"].as_bool(),
            u["nats_connected"].as_bool()
        ),
        (Some(true), Some(true))
    );
    assert!(u["produced"].as_u64().unwrap() >= u["acked"].as_u64().unwrap());
    assert!(
        rows[0]["name"]
            .as_str()
            .unwrap()
            .starts_with("tributary-ctl.uplink.drain.")
    );
    let (_, table, _) = fleet_text(&url, &["uplinks"]);
    assert!(
        table.starts_with("CONSUMER") && table.contains("drain"),
        "{table}"
    );
    Ok(())
}
