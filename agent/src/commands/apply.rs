//! Applying one accepted value to one actuator: write a file, run a
//! program (no shell), or publish to the MQTT broker. Each returns `Err`
//! with the reason when the actuator failed; the caller reports it as
//! `failed`.

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::time::Duration;
use tributary_config::AgentConfig;
use tributary_config::actuators::{Actuator, CommandActuator, FileActuator, MqttActuator, render};
use tributary_wire::control::JsonValue;

/// Longest an MQTT actuator waits for the broker (connection and
/// acknowledgement).
pub const MQTT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a file write may take (a sysfs write to a stuck driver).
pub const FILE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets `value` (already accepted) on `actuator`.
pub async fn apply(
    cfg: &AgentConfig,
    actuator: Actuator<'_>,
    value: &JsonValue,
) -> Result<(), String> {
    match actuator {
        Actuator::File(f) => write_file(f, value).await,
        Actuator::Command(c) => run_program(c, value).await,
        Actuator::Mqtt(m) => publish(cfg, m, value).await,
    }
}

async fn write_file(f: &FileActuator, value: &JsonValue) -> Result<(), String> {
    let text = f
        .text(value)
        .ok_or_else(|| format!("{value} cannot be written as a number"))?;
    let path = f.path.clone();
    let write = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all().or_else(|e| {
            // sysfs and device files cannot be synced; the write is what counts.
            if e.raw_os_error() == Some(22) {
                Ok(())
            } else {
                Err(e)
            }
        })
    });
    match tokio::time::timeout(FILE_TIMEOUT, write).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("cannot write {}: {e}", f.path.display())),
        Ok(Err(e)) => Err(format!("the write of {} failed: {e}", f.path.display())),
        Err(_) => Err(format!(
            "writing {} took longer than {FILE_TIMEOUT:?}",
            f.path.display()
        )),
    }
}

async fn run_program(c: &CommandActuator, value: &JsonValue) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&c.program);
    cmd.args(c.args.iter().map(|a| render(a, value)))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_PID")
        .env_remove("WATCHDOG_USEC")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", c.program))?;
    let timeout = c.timeout.get();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!("{} ran longer than {timeout:?}; killed", c.program)),
        Ok(Err(e)) => Err(format!("waiting for {} failed: {e}", c.program)),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr: String = stderr.trim().chars().take(200).collect();
            Err(format!(
                "{} ended with {}{}",
                c.program,
                out.status,
                if stderr.is_empty() {
                    String::new()
                } else {
                    format!(": {stderr}")
                }
            ))
        }
    }
}

/// Publishes on a short-lived connection of its own (clean session): an
/// actuator is set rarely, and the outcome must say whether the broker took
/// it (QoS 1 and 2 wait for its acknowledgement).
async fn publish(cfg: &AgentConfig, m: &MqttActuator, value: &JsonValue) -> Result<(), String> {
    let b = &cfg.mqtt;
    let mut o = MqttOptions::new(
        format!("{}-actuators", cfg.mqtt_client_id()),
        b.host.clone(),
        b.port,
    );
    o.set_clean_session(true).set_keep_alive(b.keep_alive.get());
    if let Some(user) = &b.user {
        let password = match &b.password {
            Some(p) => p.resolve().map_err(|e| format!("the MQTT password: {e}"))?,
            None => String::new(),
        };
        o.set_credentials(user.clone(), password);
    }
    let (client, mut events) = AsyncClient::new(o, 4);
    let qos = match m.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let payload = render(&m.payload, value);
    client
        .try_publish(m.topic.clone(), qos, m.retain, payload.into_bytes())
        .map_err(|e| format!("cannot queue the MQTT publish: {e}"))?;
    let wait = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => return Ok(()),
                Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("MQTT broker {}:{}: {e}", b.host, b.port)),
            }
        }
    };
    let result = match tokio::time::timeout(MQTT_TIMEOUT, wait).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "the MQTT broker {}:{} did not acknowledge within {MQTT_TIMEOUT:?}",
            b.host, b.port
        )),
    };
    if result.is_ok() {
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while events.poll().await.is_ok() {}
        })
        .await;
    }
    result
}
