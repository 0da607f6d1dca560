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
//! `$SRV.PING|INFO|STATS` are answered by async-nats's service module, with
//! the device id in the service metadata, so `nats micro ls` lists the
//! fleet. A failed request gets a service error (code and text), never
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
pub mod status;

use crate::sensors::{self, ReadNow, SensorContext};
use crate::stats::AgentStats;
use async_nats::service::{self, ServiceExt};
use futures::StreamExt;
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
                let js = if section.fleet_domain.is_empty() {
                    async_nats::jetstream::new(client.clone())
                } else {
                    async_nats::jetstream::with_domain(client.clone(), &section.fleet_domain)
                };
                fleet::watch(
                    js,
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
    let service = client
        .service_builder()
        .description("Tributary edge agent")
        .metadata(HashMap::from([(
            DEVICE_METADATA.to_owned(),
            device.clone(),
        )]))
        .start(AGENT_SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(ControlError::Start)?;
    let endpoint = |name: &'static str| {
        let subject = section.request_subject(&device, name);
        let builder = service.endpoint_builder().name(name);
        async move { builder.add(subject).await.map_err(ControlError::Start) }
    };
    let mut status = endpoint("status").await?;
    let mut read = endpoint("read").await?;
    let mut config = endpoint("config").await?;
    tracing::info!(
        subjects = %section.request_subject(&device, "*"),
        "control service ready"
    );
    let mut reads: JoinSet<()> = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            Some(_) = reads.join_next(), if !reads.is_empty() => {}
            r = status.next() => {
                let Some(req) = r else { break Err(ControlError::Closed) };
                let doc = status::device_status(&running.borrow(), &stats);
                respond(&req, json(&doc)).await;
            }
            r = config.next() => {
                let Some(req) = r else { break Err(ControlError::Closed) };
                let reply = config_reply(&running.borrow());
                respond(&req, reply).await;
            }
            r = read.next() => {
                let Some(req) = r else { break Err(ControlError::Closed) };
                if reads.len() >= MAX_READS {
                    respond(&req, Err(error(503, "busy: other reads are running; try again"))).await;
                    continue;
                }
                let cfg = running.borrow().config.clone();
                let stats = stats.clone();
                reads.spawn(async move {
                    let reply = read_reply(&cfg, stats, &req.message.payload).await;
                    respond(&req, reply).await;
                });
            }
        }
    };
    reads.abort_all();
    if let Err(e) = service.stop().await {
        tracing::debug!(error = %e, "stopping the control service");
    }
    result
}

/// A service error reply.
fn error(code: usize, status: impl Into<String>) -> service::error::Error {
    service::error::Error {
        code,
        status: status.into(),
    }
}

fn json<T: serde::Serialize>(doc: &T) -> Result<bytes::Bytes, service::error::Error> {
    serde_json::to_vec(doc)
        .map(bytes::Bytes::from)
        .map_err(|e| error(500, format!("cannot encode the reply: {e}")))
}

async fn respond(req: &service::Request, reply: Result<bytes::Bytes, service::error::Error>) {
    if let Err(e) = req.respond(reply).await {
        tracing::debug!(error = %e, subject = %req.message.subject, "cannot send a control reply");
    }
}

fn config_reply(running: &Running) -> Result<bytes::Bytes, service::error::Error> {
    let toml = toml::to_string_pretty(&running.config)
        .map_err(|e| error(500, format!("cannot print the configuration: {e}")))?;
    json(&ConfigReply {
        format: CONTROL_FORMAT,
        device: running.config.agent.device.get_ref().clone(),
        origin: running.origin.clone(),
        toml,
    })
}

async fn read_reply(
    cfg: &AgentConfig,
    stats: Arc<AgentStats>,
    payload: &[u8],
) -> Result<bytes::Bytes, service::error::Error> {
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
