//! The link's [`Publisher`] in the agent: JetStream publishes through the
//! leaf, and the read back of what the hub's stream holds of this device
//! (see [`super::stored`]).
//!
//! The read back is a pull consumer named `rb-<device>` on the readings
//! stream, filtered on `<prefix>.<device>.>`, delivering from the read-back
//! point on, headers only (the `Nats-Msg-Id` is all the link needs), no
//! acks, in memory, removed after use (and by the hub after a minute of
//! inactivity, should the agent die meanwhile). It goes through the hub's
//! JetStream API of `control.fleet_domain`, the only one that crosses the
//! leafnode, with requests whose subjects name the consumer and the filter,
//! so the hub's per-device permissions (`cross/hub/device-user.conf`) can
//! hold a device to its own readings.

use super::publish::{AckFuture, PublishError, Publisher, ReadBackError, ReadBackFuture, Stored};
use super::stored::StoredMessages;
use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::{Client, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

/// Messages asked for per pull of a read back.
const PULL_BATCH: u64 = 1000;
/// The hub removes a read-back consumer left behind after this long.
const INACTIVE: Duration = Duration::from_secs(60);

/// Publishes to the hub's JetStream through the leaf; reads back.
#[derive(Debug, Clone)]
pub struct HubPublisher {
    js: jetstream::Context,
    read_back: Arc<ReadBackTarget>,
}

#[derive(Debug)]
struct ReadBackTarget {
    client: Client,
    /// `$JS.<domain>.API`.
    api: String,
    /// `<prefix>.<device>.>`.
    filter: String,
    /// `rb-<device>`.
    consumer: String,
    /// Each request's answer waits this long at most.
    timeout: Duration,
}

impl HubPublisher {
    /// Publishes through `js`; reads back with `client` through the
    /// JetStream API of `domain` (empty: no domain) the messages under
    /// `<prefix>.<device>.>`, each request waiting `timeout` at most.
    pub fn new(
        js: jetstream::Context,
        client: Client,
        domain: &str,
        prefix: &str,
        device: &str,
        timeout: Duration,
    ) -> Self {
        let api = if domain.is_empty() {
            "$JS.API".to_owned()
        } else {
            format!("$JS.{domain}.API")
        };
        HubPublisher {
            js,
            read_back: Arc::new(ReadBackTarget {
                client,
                api,
                filter: format!("{prefix}.{device}.>"),
                consumer: format!("rb-{device}"),
                timeout,
            }),
        }
    }
}

impl Publisher for HubPublisher {
    async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        bytes: Bytes,
    ) -> Result<AckFuture, PublishError> {
        let msg = PublishMessage::build().payload(bytes).message_id(msg_id);
        let ack = self
            .js
            .send_publish(subject.to_owned(), msg)
            .await
            .map_err(|e| PublishError::Send(Box::new(e)))?;
        Ok(Box::pin(async move {
            ack.into_future()
                .await
                .map(|a| Stored {
                    stream: a.stream,
                    seq: a.sequence,
                })
                .map_err(|e| PublishError::Ack(Box::new(e)))
        }))
    }

    fn read_back(&self, stream: &str, from: u64) -> ReadBackFuture {
        let target = self.read_back.clone();
        let stream = stream.to_owned();
        Box::pin(async move { target.run(&stream, from).await })
    }
}

impl ReadBackTarget {
    async fn run(&self, stream: &str, from: u64) -> Result<StoredMessages, ReadBackError> {
        // A consumer an earlier, interrupted read back left has another
        // start: remove it first (not there: refused, which is fine).
        // No answer to this first request: the hub is away (not a failure
        // of the read back itself; see `ReadBackError::Unreachable`).
        match self.delete(stream).await {
            Ok(()) | Err(ReadBackError::Refused { .. }) => {}
            Err(e @ (ReadBackError::Timeout { .. } | ReadBackError::Request { .. })) => {
                return Err(ReadBackError::Unreachable {
                    source: Box::new(e),
                });
            }
            Err(e) => return Err(e),
        }
        let pending = self.create(stream, from).await?;
        let found = self.pull(stream, pending).await;
        if let Err(e) = self.delete(stream).await {
            tracing::debug!(error = %e, "the read-back consumer stays until the hub removes it");
        }
        found
    }

    async fn create(&self, stream: &str, from: u64) -> Result<u64, ReadBackError> {
        let what = "the read-back consumer";
        let subject = format!(
            "{}.CONSUMER.CREATE.{stream}.{}.{}",
            self.api, self.consumer, self.filter
        );
        let body = serde_json::json!({
            "stream_name": stream,
            "config": {
                "name": self.consumer,
                "filter_subject": self.filter,
                "deliver_policy": "by_start_sequence",
                "opt_start_seq": from.max(1),
                "ack_policy": "none",
                "headers_only": true,
                "mem_storage": true,
                "num_replicas": 1,
                "replay_policy": "instant",
                "inactive_threshold": nanos(INACTIVE),
            }
        });
        let v = self.request(what, subject, body.to_string().into()).await?;
        Ok(v.get("num_pending").and_then(|n| n.as_u64()).unwrap_or(0))
    }

    async fn delete(&self, stream: &str) -> Result<(), ReadBackError> {
        let subject = format!("{}.CONSUMER.DELETE.{stream}.{}", self.api, self.consumer);
        self.request(
            "the removal of the read-back consumer",
            subject,
            Bytes::new(),
        )
        .await
        .map(drop)
    }

    /// Pulls until `pending` messages came or the hub has no more.
    async fn pull(&self, stream: &str, pending: u64) -> Result<StoredMessages, ReadBackError> {
        let what = "a pull of the read back";
        let mut found = StoredMessages::default();
        if pending == 0 {
            return Ok(found);
        }
        let inbox = self.client.new_inbox();
        let mut sub = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| request_error(what, e))?;
        let next = format!("{}.CONSUMER.MSG.NEXT.{stream}.{}", self.api, self.consumer);
        let mut got = 0u64;
        while got < pending {
            let batch = (pending - got).min(PULL_BATCH);
            let body = serde_json::json!({"batch": batch, "no_wait": true});
            self.client
                .publish_with_reply(next.clone(), inbox.clone(), body.to_string().into())
                .await
                .map_err(|e| request_error(what, e))?;
            let mut this_pull = 0u64;
            while this_pull < batch {
                let msg = match tokio::time::timeout(self.timeout, sub.next()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(request_error(what, "the inbox closed")),
                    Err(_) => return Err(ReadBackError::Timeout { what }),
                };
                match msg.status {
                    None | Some(StatusCode::OK) => {}
                    // No more messages now (or the pull ran out).
                    Some(_) => break,
                }
                this_pull += 1;
                if let Some(id) = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                {
                    found.insert_msg_id(id.as_str());
                }
            }
            if this_pull == 0 {
                break;
            }
            got += this_pull;
        }
        Ok(found)
    }

    /// A JetStream API request; its answer, unless it is an error.
    async fn request(
        &self,
        what: &'static str,
        subject: String,
        body: Bytes,
    ) -> Result<serde_json::Value, ReadBackError> {
        let request = async_nats::Request::new()
            .payload(body)
            .timeout(Some(self.timeout));
        let reply = self
            .client
            .send_request(subject, request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::TimedOut => ReadBackError::Timeout { what },
                _ => request_error(what, e),
            })?;
        let v: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|source| ReadBackError::Answer { what, source })?;
        match v.get("error") {
            Some(e) => Err(ReadBackError::Refused {
                what,
                code: e.get("err_code").and_then(|c| c.as_u64()).unwrap_or(0),
                description: e
                    .get("description")
                    .and_then(|d| d.as_str())
                    .unwrap_or("")
                    .to_owned(),
            }),
            None => Ok(v),
        }
    }
}

fn request_error(
    what: &'static str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ReadBackError {
    ReadBackError::Request {
        what,
        source: e.into(),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
