//! The downlink's device side end to end, against a real hub and leaf
//! nats-server, mosquitto and the agent binary: commands published straight
//! into the hub's TRIBUTARY_COMMANDS stream (as the uplink publishes them)
//! set a file actuator (scaled) and an MQTT actuator, and each outcome
//! reaches the readings stream at `tributary.<device>.$outcome`; a value out
//! of range, an unknown actuator and an expired command are reported and
//! not applied; a command published while the agent is away is applied on
//! its return; an agent SIGKILLed during a stream of commands applies none
//! twice and reports every one.

use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{
    STREAM, agent_config, command, counting_actuator, create_command_stream, create_stream, now_ms,
    publish_command, start_agent,
};
use tributary_tests::{Mosquitto, NatsServer, Result, Schedule, ServerProcess};
use tributary_wire::command::{
    Command, KIND_HEADER, OUTCOME_KIND, Outcome, Verdict, outcome_subject,
};
use tributary_wire::control::JsonValue;

/// Publishes `cmd` into the command stream with the hub's acknowledgement.
async fn publish(js: &async_nats::jetstream::Context, cmd: &Command) {
    publish_command(js, cmd)
        .await
        .expect("the hub stores the command");
}

/// Every outcome of `device` on the readings stream, by command id (a
/// second outcome for one id fails the test), with its headers checked.
async fn outcomes(hub: &NatsServer, device: &str) -> BTreeMap<String, Outcome> {
    let js = async_nats::jetstream::new(hub.connect().await.unwrap());
    let stream = js.get_stream(STREAM).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: outcome_subject("tributary", device),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = BTreeMap::new();
    while let Ok(Some(Ok(m))) =
        tokio::time::timeout(Duration::from_millis(500), messages.next()).await
    {
        let kind = m
            .headers
            .as_ref()
            .and_then(|h| h.get(KIND_HEADER))
            .map(|v| v.to_string());
        assert_eq!(kind.as_deref(), Some(OUTCOME_KIND));
        let o: Outcome = serde_json::from_slice(&m.payload).expect("an outcome document");
        if let Some(first) = out.insert(o.command_id.clone(), o) {
            panic!("two outcomes for command {}", first.command_id);
        }
    }
    out
}

/// Polls the outcomes until `ids` all have one or `within` passes.
async fn outcomes_of(
    hub: &NatsServer,
    device: &str,
    ids: &[&str],
    within: Duration,
) -> BTreeMap<String, Outcome> {
    let deadline = Instant::now() + within;
    loop {
        let got = outcomes(hub, device).await;
        if ids.iter().all(|id| got.contains_key(*id)) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the outcomes of {ids:?}; have {:?}",
            got.keys().collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct Setup {
    hub: NatsServer,
    leaf: NatsServer,
    js: async_nats::jetstream::Context,
}

async fn setup() -> Result<Setup> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    create_command_stream(&hub).await?;
    let js = async_nats::jetstream::new(hub.connect().await?);
    Ok(Setup { hub, leaf, js })
}

fn agent(device: &str, leaf: &NatsServer, state: &Path, actuators: &str) -> ServerProcess {
    start_agent(&agent_config(device, leaf, state, actuators)).expect("the agent starts")
}

fn file_actuator(path: &Path) -> String {
    format!(
        r#"
[[actuators.file]]
id = "fan"
path = "{}"
scale = 2.5
offset = 1
accepts = {{ kind = "number", min = 0, max = 100 }}
"#,
        path.display()
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sets_a_file_and_an_mqtt_topic_and_each_outcome_reaches_the_readings_stream()
-> Result<()> {
    let s = setup().await?;
    let broker = Mosquitto::start()?;
    let mut vent = broker.watch("z2m/vent/set").await?;
    let state = tempfile::tempdir().unwrap();
    let pwm = state.path().join("pwm1");
    std::fs::write(&pwm, "0\n").unwrap();
    let actuators = format!(
        r#"
[mqtt]
port = {port}

{file}
[[actuators.mqtt]]
id = "vent"
topic = "z2m/vent/set"
payload = '{{"state": {{value}}}}'
accepts = {{ kind = "enum", values = ["ON", "OFF"] }}
"#,
        port = broker.port(),
        file = file_actuator(&pwm)
    );
    let _agent = agent("pi-1", &s.leaf, state.path(), &actuators);
    publish(&s.js, &command("pi-1", "c1", "fan", JsonValue::Int(40), 1)).await;
    publish(
        &s.js,
        &command("pi-1", "c2", "vent", JsonValue::Text("ON".into()), 2),
    )
    .await;

    let got = outcomes_of(&s.hub, "pi-1", &["c1", "c2"], Duration::from_secs(30)).await;
    for id in ["c1", "c2"] {
        let o = &got[id];
        assert_eq!(o.outcome, Verdict::Applied, "{o:?}");
        assert_eq!((o.device.as_str(), o.reason.as_deref()), ("pi-1", None));
        assert!(o.received_at_ms <= o.finished_at_ms && o.issued_at_ms <= o.finished_at_ms + 1000);
    }
    assert_eq!(read(&pwm), "101\n", "40 * 2.5 + 1");
    let payload = vent
        .next_payload(Duration::from_secs(10))
        .await
        .expect("the vent topic got a message");
    assert_eq!(payload, r#"{"state": "ON"}"#);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_out_of_range_an_unknown_actuator_and_an_expired_command_are_reported_and_not_applied()
-> Result<()> {
    let s = setup().await?;
    let state = tempfile::tempdir().unwrap();
    let pwm = state.path().join("pwm1");
    std::fs::write(&pwm, "7\n").unwrap();
    let _agent = agent("pi-1", &s.leaf, state.path(), &file_actuator(&pwm));
    publish(
        &s.js,
        &command("pi-1", "high", "fan", JsonValue::Int(101), 1),
    )
    .await;
    publish(
        &s.js,
        &command("pi-1", "word", "fan", JsonValue::Text("max".into()), 2),
    )
    .await;
    publish(
        &s.js,
        &command("pi-1", "nope", "heater", JsonValue::Int(1), 3),
    )
    .await;
    let mut old = command("pi-1", "old", "fan", JsonValue::Int(10), 4);
    old.expires_at_ms = now_ms() - 1_000;
    publish(&s.js, &old).await;
    // A valid command last: commands apply in order, so its outcome means
    // the others were decided.
    publish(&s.js, &command("pi-1", "ok", "fan", JsonValue::Int(2), 5)).await;

    let ids = ["high", "word", "nope", "old", "ok"];
    let got = outcomes_of(&s.hub, "pi-1", &ids, Duration::from_secs(30)).await;
    let verdicts: Vec<Verdict> = ids.iter().map(|id| got[*id].outcome).collect();
    assert_eq!(
        verdicts,
        [
            Verdict::Refused,
            Verdict::Refused,
            Verdict::Refused,
            Verdict::Expired,
            Verdict::Applied
        ]
    );
    let reason = |id: &str| got[id].reason.clone().unwrap_or_default();
    assert!(
        reason("high").contains("above the maximum 100"),
        "{}",
        reason("high")
    );
    assert!(
        reason("word").contains("not a number"),
        "{}",
        reason("word")
    );
    assert!(
        reason("nope").contains("no actuator \"heater\""),
        "{}",
        reason("nope")
    );
    assert!(
        reason("old").contains("after its expiry"),
        "{}",
        reason("old")
    );
    assert_eq!(
        read(&pwm),
        "6\n",
        "only the last command was applied: 2 * 2.5 + 1"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_published_while_the_agent_is_away_is_applied_when_it_returns() -> Result<()> {
    let s = setup().await?;
    let state = tempfile::tempdir().unwrap();
    let pwm = state.path().join("pwm1");
    std::fs::write(&pwm, "0\n").unwrap();
    let mut agent = agent("pi-1", &s.leaf, state.path(), &file_actuator(&pwm));
    publish(
        &s.js,
        &command("pi-1", "first", "fan", JsonValue::Int(1), 1),
    )
    .await;
    outcomes_of(&s.hub, "pi-1", &["first"], Duration::from_secs(30)).await;
    agent.terminate(Duration::from_secs(10))?;

    publish(
        &s.js,
        &command("pi-1", "while-away", "fan", JsonValue::Int(20), 2),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        read(&pwm),
        "4\n",
        "nothing applies it while the agent is away (1 * 2.5 + 1, rounded)"
    );
    agent.respawn()?;
    let got = outcomes_of(&s.hub, "pi-1", &["while-away"], Duration::from_secs(30)).await;
    assert_eq!(got["while-away"].outcome, Verdict::Applied);
    assert_eq!(read(&pwm), "51\n");
    assert_eq!(got.len(), 2, "{got:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_during_a_stream_of_commands_applies_none_twice_and_reports_each()
-> Result<()> {
    let mut rng = Schedule::from_env();
    let s = setup().await?;
    let state = tempfile::tempdir().unwrap();
    let counter = state.path().join("counter");
    let actuators = counting_actuator(&counter);
    let mut agent = agent("pi-1", &s.leaf, state.path(), &actuators);
    const N: i64 = 40;
    let ids: Vec<String> = (0..N).map(|i| format!("n{i}")).collect();
    for i in 0..N {
        publish(
            &s.js,
            &command("pi-1", &ids[i as usize], "count", JsonValue::Int(i), i),
        )
        .await;
    }
    for _ in 0..2 {
        let lines = read(&counter).lines().count();
        let target = lines + rng.below(9) as usize + 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while read(&counter).lines().count() < target.min(N as usize) {
            assert!(Instant::now() < deadline, "the commands stopped applying");
            tokio::time::sleep(Duration::from_millis(rng.below(19) + 1)).await;
        }
        agent.kill()?;
        agent.respawn()?;
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let got = outcomes_of(&s.hub, "pi-1", &id_refs, Duration::from_secs(90)).await;
    let applied: Vec<i64> = read(&counter).lines().map(|l| l.parse().unwrap()).collect();
    let mut sorted = applied.clone();
    sorted.dedup();
    assert_eq!(sorted, applied, "applied in order, none twice");
    for (i, id) in ids.iter().enumerate() {
        let o = &got[id];
        let present = applied.contains(&(i as i64));
        match o.outcome {
            Verdict::Applied => assert!(present, "{id} reported applied but not in the counter"),
            Verdict::Failed => assert!(
                o.reason
                    .as_deref()
                    .unwrap_or_default()
                    .contains("interrupted"),
                "{o:?}"
            ),
            other => panic!("{id}: {other:?}"),
        }
        if !present {
            assert_eq!(
                o.outcome,
                Verdict::Failed,
                "{id} neither applied nor reported interrupted"
            );
        }
    }
    Ok(())
}
