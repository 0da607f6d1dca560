//! The downlink's device side: take this device's commands from the hub,
//! apply each at most once, report each outcome.
//!
//! ```text
//! hub stream TRIBUTARY_COMMANDS ─(durable consumer cmd-<device>, pull, 1 unacked)─► agent
//!   decide: expired? known actuator? value accepted? ─► apply (file / program / MQTT)
//!   ─► memory (id finished + outcome unsent, fsynced) ─► outcome to <prefix>.<device>.$outcome
//!   (JetStream ack, Nats-Msg-Id = outcome:<device>:<id>) ─► memory (sent) ─► ack the command
//! ```
//!
//! The consumer is made and read with plain JetStream API requests through
//! the leafnode (`$JS.<domain>.API.CONSUMER.CREATE…` and `…MSG.NEXT…`), as
//! [`crate::control::fleet`] reads the fleet store: the agent carries no
//! consumer machinery. Its `max_ack_pending` is 1, so commands apply in the
//! order the uplink published them, one at a time.
//!
//! At most once: a command is recorded as started in [`memory`] before its
//! actuator is set, and as finished (with its outcome) before its outcome
//! is sent and before it is acknowledged; a redelivered command already
//! finished is only acknowledged (its outcome was sent, or is sent again
//! from the memory). A command found started after a crash is not applied
//! again but reported `failed` (interrupted). Outcomes not yet
//! acknowledged by the hub are kept and resent until they are; the hub's
//! duplicate window drops the doubles.
//!
//! An agent without `[[actuators.*]]` does not read commands.

pub mod apply;
pub mod memory;

use crate::stats::AgentStats;
use async_nats::{HeaderMap, StatusCode};
use futures::StreamExt;
use memory::Memory;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_config::AgentConfig;
use tributary_wire::Clock;
use tributary_wire::command::{
    COMMAND_FORMAT, COMMAND_STREAM, Command, KIND_HEADER, OUTCOME_KIND, Outcome, Verdict,
    consumer_name, device_filter, outcome_subject,
};

/// How long the hub waits for the acknowledgement of a command before it
/// delivers it again (after a crash, the wait before the command in flight
/// comes back).
pub const ACK_WAIT: Duration = Duration::from_secs(10);

/// How long one pull waits on the hub for a command.
pub const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// Longest wait before trying the hub again.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the hub's JetStream API answers.
fn api_prefix(domain: &str) -> String {
    if domain.is_empty() {
        "$JS.API".to_owned()
    } else {
        format!("$JS.{domain}.API")
    }
}

/// Starts the command task when `cfg` declares actuators; it ends on `stop`.
pub fn spawn(
    client: async_nats::Client,
    cfg: AgentConfig,
    stats: Arc<AgentStats>,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    if cfg.actuators.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let dir = cfg.agent.state_dir.clone();
        let memory = match tokio::task::spawn_blocking(move || Memory::open(&dir)).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::error!(error = %crate::error_chain(&e), "not taking commands");
                stop.cancelled().await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "not taking commands");
                stop.cancelled().await;
                return;
            }
        };
        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(cfg.forward.ack_timeout.get())
            .build(client.clone());
        let mut task = Commands {
            client,
            js,
            cfg,
            stats,
            memory: Some(memory),
            inbox: None,
            stop,
        };
        task.run().await;
    }))
}

/// The running command task.
struct Commands {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    cfg: AgentConfig,
    stats: Arc<AgentStats>,
    /// Taken out while a blocking thread writes it.
    memory: Option<Memory>,
    /// Where pulled commands arrive.
    inbox: Option<(String, async_nats::Subscriber)>,
    stop: CancellationToken,
}

/// What a pull brought.
enum Pulled {
    /// A command and the subject to acknowledge it on.
    Command(Box<Command>, String),
    /// A message that is no command: terminated (never delivered again).
    Garbage(String, String),
    /// Nothing within [`PULL_EXPIRES`].
    Nothing,
    /// The consumer is gone or the hub unreachable: make it again.
    Lost(String),
}

impl Commands {
    fn device(&self) -> &str {
        self.cfg.agent.device.get_ref()
    }

    async fn run(&mut self) {
        let mut backoff = Duration::from_millis(200);
        let mut failing: Option<String> = None;
        'outer: while !self.stop.is_cancelled() {
            if let Err(why) = self.resend_unsent().await.and(self.create_consumer().await) {
                if failing.is_none() {
                    tracing::info!(error = %why, "cannot reach this device's command consumer; trying again");
                }
                failing = Some(why);
                if self.pause(backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            if failing.take().is_some() {
                tracing::info!("taking commands again");
            }
            backoff = Duration::from_millis(200);
            let stop = self.stop.clone();
            loop {
                let pulled = tokio::select! {
                    _ = stop.cancelled() => break 'outer,
                    p = self.pull() => p,
                };
                match pulled {
                    Pulled::Nothing => {}
                    Pulled::Lost(why) => {
                        tracing::debug!(error = %why, "command pull failed");
                        failing = Some(why);
                        continue 'outer;
                    }
                    Pulled::Garbage(ack, why) => {
                        tracing::warn!(error = %why, "a message on the command stream is no command; dropped");
                        let _ = self.client.publish(ack, "+TERM".into()).await;
                    }
                    Pulled::Command(cmd, ack) => {
                        if !self.handle(*cmd, ack).await {
                            continue 'outer;
                        }
                    }
                }
            }
        }
    }

    /// Waits `d` or until stop; true when stopping.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => true,
            _ = tokio::time::sleep(d) => false,
        }
    }

    async fn create_consumer(&self) -> Result<(), String> {
        let device = self.device();
        let name = consumer_name(device);
        let filter = device_filter(&self.cfg.control.subject_prefix, device);
        let subject = format!(
            "{}.CONSUMER.CREATE.{COMMAND_STREAM}.{name}.{filter}",
            api_prefix(&self.cfg.control.fleet_domain)
        );
        let body = serde_json::json!({
            "stream_name": COMMAND_STREAM,
            "config": {
                "durable_name": name,
                "name": name,
                "filter_subject": filter,
                "deliver_policy": "all",
                "ack_policy": "explicit",
                "ack_wait": u64::try_from(ACK_WAIT.as_nanos()).unwrap_or(u64::MAX),
                "max_ack_pending": 1,
                "replay_policy": "instant",
            }
        });
        let reply = self
            .request(
                subject,
                serde_json::to_vec(&body).expect("json encodes"),
                Duration::from_secs(5),
            )
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| {
            format!("the hub's answer to the consumer creation does not parse: {e}")
        })?;
        match v.get("error") {
            Some(e) => Err(format!("the hub refused the consumer {name}: {e}")),
            None => Ok(()),
        }
    }

    async fn request(
        &self,
        subject: String,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<async_nats::Message, String> {
        let request = async_nats::Request::new()
            .payload(body.into())
            .timeout(Some(timeout));
        self.client
            .send_request(subject, request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => {
                    "no JetStream on the hub (or the hub is away)".to_owned()
                }
                _ => e.to_string(),
            })
    }

    /// Asks the hub for the next command. The answer comes on an inbox
    /// subscription of the task's own: a pulled message carries its stream
    /// subject, not the inbox, so the client's request muxer cannot route it.
    async fn pull(&mut self) -> Pulled {
        let subject = format!(
            "{}.CONSUMER.MSG.NEXT.{COMMAND_STREAM}.{}",
            api_prefix(&self.cfg.control.fleet_domain),
            consumer_name(self.device())
        );
        let body = serde_json::json!({
            "batch": 1,
            "expires": u64::try_from(PULL_EXPIRES.as_nanos()).unwrap_or(u64::MAX),
        });
        if self.inbox.is_none() {
            let inbox = self.client.new_inbox();
            match self.client.subscribe(inbox.clone()).await {
                Ok(sub) => self.inbox = Some((inbox, sub)),
                Err(e) => return Pulled::Lost(e.to_string()),
            }
        }
        let Some((inbox, sub)) = self.inbox.as_mut() else {
            return Pulled::Lost("no inbox".into());
        };
        if let Err(e) = self
            .client
            .publish_with_reply(
                subject,
                inbox.clone(),
                serde_json::to_vec(&body).expect("json encodes").into(),
            )
            .await
        {
            return Pulled::Lost(e.to_string());
        }
        let msg =
            match tokio::time::timeout(PULL_EXPIRES + Duration::from_secs(2), sub.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.inbox = None;
                    return Pulled::Lost("the inbox subscription closed".into());
                }
                Err(_) => return Pulled::Lost("the hub did not answer the pull".into()),
            };
        match msg.status {
            None | Some(StatusCode::OK) => {}
            Some(StatusCode::NOT_FOUND | StatusCode::TIMEOUT) => return Pulled::Nothing,
            Some(s) => {
                return Pulled::Lost(format!(
                    "the hub answered the pull with {s}{}",
                    msg.description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ));
            }
        }
        let Some(ack) = msg.reply.as_ref().map(|r| r.to_string()) else {
            return Pulled::Lost("a pulled message without an acknowledgement subject".into());
        };
        match serde_json::from_slice::<Command>(&msg.payload) {
            Ok(c) => Pulled::Command(Box::new(c), ack),
            Err(e) => Pulled::Garbage(ack, format!("{}: {e}", msg.subject)),
        }
    }

    /// Applies (unless finished already), records, reports and acknowledges
    /// one command. False when the hub went away before the ack.
    async fn handle(&mut self, cmd: Command, ack: String) -> bool {
        let finished = self.memory.as_ref().is_some_and(|m| m.finished(&cmd.id));
        if finished {
            tracing::debug!(command = %cmd.id, "command delivered again; already finished");
        } else {
            let interrupted = self.memory.as_ref().is_some_and(|m| m.interrupted(&cmd.id));
            let outcome = self.decide_and_apply(&cmd, interrupted).await;
            tracing::info!(command = %cmd.id, actuator = %cmd.actuator, value = %cmd.value,
                outcome = outcome.outcome.as_str(), reason = outcome.reason.as_deref().unwrap_or(""),
                "command finished");
            if let Err(e) = self.with_memory(move |m| m.finish(outcome)).await {
                tracing::error!(error = %e, "cannot record a finished command; not acknowledging it");
                return false;
            }
        }
        if let Err(why) = self.resend_unsent().await {
            tracing::debug!(error = %why, "outcome not acknowledged by the hub yet");
            return false;
        }
        match self.client.publish(ack, "+ACK".into()).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "cannot acknowledge a command");
                false
            }
        }
    }

    /// Runs `f` on the memory on a blocking thread (it fsyncs).
    async fn with_memory(
        &mut self,
        f: impl FnOnce(&mut Memory) -> Result<(), memory::MemoryError> + Send + 'static,
    ) -> Result<(), String> {
        let Some(mut m) = self.memory.take() else {
            return Err("the command memory was lost".into());
        };
        match tokio::task::spawn_blocking(move || {
            let r = f(&mut m);
            (m, r)
        })
        .await
        {
            Ok((m, r)) => {
                self.memory = Some(m);
                r.map_err(|e| crate::error_chain(&e))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Publishes every unsent outcome with JetStream acknowledgement,
    /// oldest first, and forgets each the hub acknowledged.
    async fn resend_unsent(&mut self) -> Result<(), String> {
        let unsent: Vec<Outcome> = self
            .memory
            .as_ref()
            .map(|m| m.unsent().to_vec())
            .unwrap_or_default();
        let subject = outcome_subject(&self.cfg.forward.subject_prefix, self.device());
        for o in unsent {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", o.msg_id().as_str());
            headers.insert(KIND_HEADER, OUTCOME_KIND);
            let body = serde_json::to_vec(&o).expect("outcomes encode");
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, body.into())
                .await
                .map_err(|e| e.to_string())?;
            tokio::select! {
                _ = self.stop.cancelled() => return Err("stopping".into()),
                r = ack => { r.map_err(|e| e.to_string())?; }
            }
            let id = o.command_id.clone();
            self.with_memory(move |m| m.sent(&id)).await?;
        }
        Ok(())
    }

    async fn decide_and_apply(&mut self, cmd: &Command, interrupted: bool) -> Outcome {
        let received_at_ms = crate::sensors::now_unix_ms();
        let clock = self.stats.clock();
        let (verdict, reason) = if interrupted {
            (
                Verdict::Failed,
                Some("interrupted: the agent stopped while setting the actuator, which may or may not have taken the value; not applied again".to_owned()),
            )
        } else {
            self.verdict(cmd, received_at_ms).await
        };
        Outcome {
            format: COMMAND_FORMAT,
            command_id: cmd.id.clone(),
            device: self.device().to_owned(),
            actuator: cmd.actuator.clone(),
            value: cmd.value.clone(),
            outcome: verdict,
            reason,
            issued_at_ms: cmd.issued_at_ms,
            received_at_ms,
            finished_at_ms: crate::sensors::now_unix_ms(),
            clock: (clock != Clock::Synced).then(|| "unsynced".to_owned()),
        }
    }

    async fn verdict(&mut self, cmd: &Command, now_ms: u64) -> (Verdict, Option<String>) {
        if cmd.device != self.device() {
            return (
                Verdict::Refused,
                Some(format!("the command is for device {:?}", cmd.device)),
            );
        }
        if now_ms > cmd.expires_at_ms {
            return (
                Verdict::Expired,
                Some(format!(
                    "received {} ms after its expiry",
                    now_ms - cmd.expires_at_ms
                )),
            );
        }
        let Some(actuator) = self.cfg.actuators.get(&cmd.actuator) else {
            return (
                Verdict::Refused,
                Some(format!("no actuator {:?} on this device", cmd.actuator)),
            );
        };
        if let Err(why) = actuator.accepts().check(&cmd.value) {
            return (Verdict::Refused, Some(why));
        }
        let id = cmd.id.clone();
        if let Err(e) = self.with_memory(move |m| m.start(&id)).await {
            return (
                Verdict::Failed,
                Some(format!(
                    "not applied: cannot record it in the state directory: {e}"
                )),
            );
        }
        // Looked up again: recording borrowed the task mutably.
        let Some(actuator) = self.cfg.actuators.get(&cmd.actuator) else {
            return (Verdict::Refused, Some("no such actuator".to_owned()));
        };
        match apply::apply(&self.cfg, actuator, &cmd.value).await {
            Ok(()) => (Verdict::Applied, None),
            Err(why) => (Verdict::Failed, Some(why)),
        }
    }
}
