//! The control plane: the agent as the NATS service `tributary-agent`, and
//! its sensor configuration from the fleet store (JetStream KV).
//!
//! Requests from the center travel hub → leaf → agent and back, on
//! subjects outside the readings stream (the contract, with the reply
//! documents, is [`tributary_wire::control`]):
//!
//! * `status`: version, uptime, epoch, link state, buffer depth, bytes and
//!   oldest unsent age, drops, clock, where the configuration came from
//!   (and the last refused fleet value), and per sensor its counters, last
//!   value and last error ([`status`]);
//! * `read` (payload: a sensor id): a polled sensor read now by a source
//!   of its own, an MQTT sensor's last message ([`crate::sensors::read_now`]);
//! * `config`: the resolved configuration as TOML, secrets hidden, and its
//!   origin.
//!
//! `$SRV.PING|INFO|STATS` are answered too ([`micro`]), with the device id
//! in the service metadata, so `nats micro ls` lists the fleet. A failed request gets a service error (code and text), never
//! silence. Reads run at most [`MAX_READS`] at a time; one more is answered
//! 503 at once.
//!
//! [`fleet`] watches this device's key in the fleet bucket and hands every
//! new value to the supervisor ([`crate::run`]), which validates it as
//! `check` validates a file, applies it like SIGHUP, keeps it in the state
//! directory ([`fleet_file`]) and reports the outcome as an event and in
//! `status`.
//!
//! The service and the watcher are one task ([`spawn`]); it ends only on
//! `stop`, or with a [`ControlError`] that ends the run.

pub mod fleet;
pub mod fleet_file;
pub mod micro;
pub mod status;

use crate::sensors::{self, ReadNow, SensorContext};
use crate::stats::AgentStats;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tributary_config::AgentConfig;
use tributary_wire::control::{
    AGENT_SERVICE, CONTROL_FORMAT, ConfigOrigin, ConfigReply, DEVICE_METADATA, JsonValue, ReadReply,
};

/// Most `read` requests served at once (each may hold a blocking thread for
/// up to [`sensors::READ_NOW_TIMEOUT`]).
pub const MAX_READS: usize = 2;

/// What runs now: the effective configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Running {
    /// The local file with the fleet part laid over it, if any.
    pub config: AgentConfig,
    /// Where it came from.
    pub origin: ConfigOrigin,
}

/// Why the control plane stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The NATS service could not be set up (its subscriptions failed).
    #[error("cannot start the NATS service {AGENT_SERVICE}")]
    Start(#[source] async_nats::Error),
    /// The NATS client closed under the service.
    #[error("the NATS connection closed under the control service")]
    Closed,
}

/// Starts the control service and, when configured, the fleet watcher that
/// sends new fleet values to `fleet_tx`; both stop on `stop`.
pub fn spawn(
    client: async_nats::Client,
    running: watch::Receiver<Arc<Running>>,
    stats: Arc<AgentStats>,
    fleet_tx: mpsc::Sender<fleet::FleetValue>,
    stop: CancellationToken,
) -> JoinHandle<Result<(), ControlError>> {
    tokio::spawn(async move {
        let (section, device) = {
            let r = running.borrow();
            (
                r.config.control.clone(),
                r.config.agent.device.get_ref().clone(),
            )
        };
        let watcher = async {
            if section.watches_fleet(&device) {
                fleet::watch(
                    client.clone(),
                    section.fleet_domain.clone(),
                    section.fleet_bucket.clone(),
                    device.clone(),
                    fleet_tx,
                    stop.clone(),
                )
                .await;
            }
            Ok(())
        };
        let service = serve(client.clone(), running, stats, stop.clone());
        tokio::try_join!(service, watcher).map(|_| ())
    })
}

/// Answers control requests until `stop`.
async fn serve(
    client: async_nats::Client,
    running: watch::Receiver<Arc<Running>>,
    stats: Arc<AgentStats>,
    stop: CancellationToken,
) -> Result<(), ControlError> {
    let (section, device) = {
        let r = running.borrow();
        (
            r.config.control.clone(),
            r.config.agent.device.get_ref().clone(),
        )
    };
    let identity = micro::Identity {
        name: AGENT_SERVICE,
        version: env!("CARGO_PKG_VERSION"),
        description: "Tributary edge agent",
        metadata: HashMap::from([(DEVICE_METADATA.to_owned(), device.clone())]),
    };
    let endpoints = ENDPOINTS
        .iter()
        .map(|&name| (name, section.request_subject(&device, name)))
        .collect();
    let mut service = micro::Service::start(client, identity, endpoints)
        .await
        .map_err(|e| ControlError::Start(e.into()))?;
    tracing::info!(
        subjects = %section.request_subject(&device, "*"),
        "control service ready"
    );
    let mut reads: JoinSet<(micro::Request, Answer)> = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            Some(done) = reads.join_next(), if !reads.is_empty() => {
                if let Ok((req, answer)) = done {
                    service.respond(&req, answer).await;
                }
            }
            r = service.next() => {
                let Some(req) = r else { break Err(ControlError::Closed) };
                match ENDPOINTS[req.endpoint] {
                    "status" => {
                        let doc = status::device_status(&running.borrow(), &stats);
                        service.respond(&req, json(&doc)).await;
                    }
                    "config" => {
                        let reply = config_reply(&running.borrow());
                        service.respond(&req, reply).await;
                    }
                    _ if reads.len() >= MAX_READS => {
                        service.respond(&req, Err(error(503, "busy: other reads are running; try again"))).await;
                    }
                    _ => {
                        let cfg = running.borrow().config.clone();
                        let stats = stats.clone();
                        reads.spawn(async move {
                            let answer = read_reply(&cfg, stats, &req.message.payload).await;
                            (req, answer)
                        });
                    }
                }
            }
        }
    };
    reads.abort_all();
    service.stop();
    result
}

/// The endpoints, in the order [`micro::Service`] numbers them.
const ENDPOINTS: [&str; 3] = ["status", "read", "config"];

/// An endpoint's answer.
type Answer = Result<Vec<u8>, micro::ServiceError>;

/// A service error reply.
fn error(code: u16, text: impl Into<String>) -> micro::ServiceError {
    micro::ServiceError {
        code,
        text: text.into(),
    }
}

fn json<T: serde::Serialize>(doc: &T) -> Answer {
    serde_json::to_vec(doc).map_err(|e| error(500, format!("cannot encode the reply: {e}")))
}

fn config_reply(running: &Running) -> Answer {
    let toml = toml::to_string_pretty(&running.config)
        .map_err(|e| error(500, format!("cannot print the configuration: {e}")))?;
    json(&ConfigReply {
        format: CONTROL_FORMAT,
        device: running.config.agent.device.get_ref().clone(),
        origin: running.origin.clone(),
        toml,
    })
}

async fn read_reply(cfg: &AgentConfig, stats: Arc<AgentStats>, payload: &[u8]) -> Answer {
    let id = std::str::from_utf8(payload)
        .map(str::trim)
        .map_err(|_| error(400, "the request must be a sensor id in UTF-8"))?;
    if id.is_empty() {
        return Err(error(400, "the request must name a sensor id"));
    }
    let ctx = SensorContext {
        stats,
        buffer_dir: cfg.buffer_dir(),
        device: cfg.agent.device.get_ref().clone(),
    };
    let (value, ts, how) = match sensors::read_now(cfg, &ctx, id).await {
        ReadNow::Read(v, ts) => (v, ts, "now"),
        ReadNow::Last(v, ts) => (v, ts, "last_received"),
        ReadNow::Failed(e) => return Err(error(500, format!("reading {id} failed: {e}"))),
        ReadNow::Unknown => {
            return Err(error(
                404,
                format!(
                    "no sensor {id:?} on this device (or an MQTT sensor that has received nothing yet)"
                ),
            ));
        }
    };
    json(&ReadReply {
        format: CONTROL_FORMAT,
        device: ctx.device,
        sensor: id.to_owned(),
        reading: status::timed(JsonValue::from(&value), ts),
        how: how.to_owned(),
    })
}
