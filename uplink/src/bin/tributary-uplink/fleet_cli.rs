//! `tributary-uplink fleet …`: the central command's options and what each
//! subcommand prints (the work is `tributary_uplink::fleet`).

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tributary_uplink::fleet::{Answer, Fleet, render};

/// Exit status when the device asked did not answer.
const NO_ANSWER: u8 = 3;

/// How the central command reaches the hub.
#[derive(Debug, clap::Args)]
pub struct FleetConn {
    /// The uplink's configuration: the hub's URLs and credentials come from
    /// its `[nats]`, the control prefix from its `[control]`.
    #[arg(long, short, env = "TRIBUTARY_UPLINK_CONFIG")]
    config: Option<PathBuf>,
    /// The hub's URL (instead of, or over, the configuration's).
    #[arg(long, short)]
    server: Option<String>,
    /// Prefix of the control subjects (default: the configuration's, else
    /// `tributary-ctl`).
    #[arg(long)]
    prefix: Option<String>,
    /// How long to wait for answers.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print JSON (one document) instead of tables.
    #[arg(long)]
    json: bool,
}

/// `fleet` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Every device that answers, with its link state and backlog.
    Ls,
    /// Every uplink that answers, with its counters.
    Uplinks,
    /// One device's status: link, buffer, clock, config origin, sensors.
    Status {
        /// The device id.
        device: String,
    },
    /// Read a sensor of a device now (an MQTT sensor: its last message).
    Read {
        /// The device id.
        device: String,
        /// The sensor id.
        sensor: String,
    },
    /// A device's resolved configuration (secrets hidden) and its origin.
    Config {
        /// The device id.
        device: String,
    },
    /// Validate a fleet document (`[mqtt]` and `[[sensors.*]]` only) and put
    /// it as a device's configuration into the fleet store.
    Push {
        /// The device id (its key in the bucket).
        device: String,
        /// The TOML file.
        file: PathBuf,
        /// The KV bucket (created when missing).
        #[arg(long, default_value = "tributary-config")]
        bucket: String,
        /// Wait this long for the device to report it applied or refused
        /// the new revision (`0s`: do not wait).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        wait: Duration,
    },
    /// Print config events (applied, refused, cleared) as they happen.
    Events,
}

/// Runs one `fleet` subcommand.
pub async fn run(conn: FleetConn, command: FleetCommand) -> anyhow::Result<ExitCode> {
    let (mut nats, mut prefix) = (tributary_config::NatsConnection::default(), None);
    if let Some(path) = &conn.config {
        let cfg = tributary_config::check_uplink(path, |_| Ok(()))?;
        nats = cfg.nats;
        prefix = Some(cfg.control.subject_prefix);
    }
    if let Some(url) = &conn.server {
        nats.urls = vec![url.clone()];
    }
    let prefix = conn
        .prefix
        .clone()
        .or(prefix)
        .unwrap_or_else(tributary_config::control::default_control_prefix);
    let urls = nats.urls.join(",");
    let client = tokio::time::timeout(
        conn.timeout.max(Duration::from_secs(5)),
        tributary_uplink::nats_connect::connect(&nats),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer from the hub at {urls}"))?
    .with_context(|| format!("cannot reach the hub at {urls}"))?;
    let fleet = Fleet::new(client.clone(), prefix.clone(), conn.timeout);
    let json = conn.json;
    let print_json =
        |v: &serde_json::Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    let code = match command {
        FleetCommand::Ls => {
            let found = fleet.discover().await?;
            let mut rows = Vec::new();
            for f in found {
                let a = fleet.status(&f.device).await?;
                rows.push((f, a));
            }
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(f, a)| render::answer_json(&f.device, a))
                    .collect();
                print_json(&serde_json::Value::Array(v));
            } else if rows.is_empty() {
                eprintln!("no device answered within {:?}", conn.timeout);
            } else {
                print!("{}", render::fleet_table(&rows));
            }
            ExitCode::SUCCESS
        }
        FleetCommand::Uplinks => {
            let rows = fleet.uplinks().await?;
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(s, a)| render::answer_json(s, a))
                    .collect();
                print_json(&serde_json::Value::Array(v));
            } else if rows.is_empty() {
                eprintln!("no uplink answered within {:?}", conn.timeout);
            } else {
                print!("{}", render::uplinks_table(&rows));
            }
            ExitCode::SUCCESS
        }
        FleetCommand::Status { device } => {
            let a = fleet.status(&device).await?;
            report(&device, &a, json, conn.timeout, render::device_status)
        }
        FleetCommand::Read { device, sensor } => {
            let a = fleet.read(&device, &sensor).await?;
            report(&device, &a, json, conn.timeout, render::reading)
        }
        FleetCommand::Config { device } => {
            let a = fleet.config(&device).await?;
            report(&device, &a, json, conn.timeout, |c| {
                format!(
                    "# {} from {}\n{}",
                    c.device,
                    render::origin(&c.origin),
                    c.toml
                )
            })
        }
        FleetCommand::Push {
            device,
            file,
            bucket,
            wait,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            tributary_config::validate_fleet(&device, &text, &file)?;
            let revision = fleet.push(&bucket, &device, &text).await?;
            println!("{device}: revision {revision} in {bucket}");
            if wait.is_zero() {
                return Ok(ExitCode::SUCCESS);
            }
            let seen = fleet
                .wait_status(&device, wait, |s| {
                    s.config.revision >= Some(revision)
                        || s.config
                            .refused
                            .as_ref()
                            .is_some_and(|r| r.revision >= revision)
                })
                .await?;
            match seen {
                Some(s) if s.config.revision >= Some(revision) => {
                    println!("{device}: applied revision {revision}");
                    ExitCode::SUCCESS
                }
                Some(s)
                    if s.config
                        .refused
                        .as_ref()
                        .is_some_and(|r| r.revision >= revision) =>
                {
                    let r = s.config.refused.expect("checked");
                    println!("{device}: refused revision {}: {}", r.revision, r.error);
                    ExitCode::FAILURE
                }
                _ => {
                    println!(
                        "{device}: did not report revision {revision} within {wait:?}; it applies it when it next reaches the hub"
                    );
                    ExitCode::from(NO_ANSWER)
                }
            }
        }
        FleetCommand::Events => {
            use futures::StreamExt;
            let mut sub = client
                .subscribe(format!("{prefix}.event.>"))
                .await
                .context("cannot subscribe to the events")?;
            let stop = tokio::signal::ctrl_c();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    m = sub.next() => {
                        let Some(m) = m else { break };
                        println!("{}", String::from_utf8_lossy(&m.payload));
                    }
                }
            }
            ExitCode::SUCCESS
        }
    };
    Ok(code)
}

/// Prints one device's answer; the exit status says whether it answered.
fn report<T: serde::Serialize>(
    device: &str,
    answer: &Answer<T>,
    json: bool,
    timeout: Duration,
    human: impl Fn(&T) -> String,
) -> ExitCode {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&render::answer_json(device, answer)).unwrap_or_default()
        );
    }
    match answer {
        Answer::Reply(r) => {
            if !json {
                print!("{}", human(r));
            }
            ExitCode::SUCCESS
        }
        Answer::Refused { code, text } => {
            if !json {
                println!("{device}: error {code}: {text}");
            }
            ExitCode::FAILURE
        }
        Answer::NoAnswer => {
            if !json {
                println!(
                    "{device}: no answer within {timeout:?} (offline, or not connected to the hub)"
                );
            }
            ExitCode::from(NO_ANSWER)
        }
    }
}
