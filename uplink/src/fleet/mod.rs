//! The central command's library (`tributary-uplink fleet …`): find the
//! devices and uplinks that answer, ask one for its status, a sensor
//! reading or its configuration, and put a device's configuration into the
//! fleet store.
//!
//! Everything goes through the hub over the control subjects of
//! [`tributary_wire::control`]. A device that does not answer within the
//! timeout is an [`Answer::NoAnswer`], not an error: offline devices are
//! normal in a fleet. Errors ([`FleetError`]) are the tool's own: the hub
//! unreachable, a reply that does not decode, the fleet store refusing a
//! write.

pub mod render;

use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{Client, RequestErrorKind};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::time::{Duration, Instant};
use tributary_wire::control::{
    AGENT_SERVICE, ConfigReply, DEVICE_METADATA, DeviceStatus, ReadReply, STATUS_SUBJECT_METADATA,
    UPLINK_SERVICE, UplinkStatus,
};

/// History the fleet bucket keeps per key when the command creates it.
pub const BUCKET_HISTORY: i64 = 10;

/// What a device (or uplink) said.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<T> {
    /// Its reply.
    Reply(T),
    /// It answered with a service error.
    Refused {
        /// The service error code (400, 404, 500, 503).
        code: u16,
        /// What it said.
        text: String,
    },
    /// Nobody answered within the timeout (offline, or not connected).
    NoAnswer,
}

/// A failure of the command itself.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A request could not be sent (the connection to the hub is gone).
    #[error("cannot send a request on {subject}")]
    Send {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// A reply is not the document it should be (a different version of
    /// Tributary, or something else answering on the subject).
    #[error("the reply on {subject} is not a Tributary control document")]
    Decode {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The fleet bucket could not be opened or created.
    #[error("cannot open or create the fleet bucket {bucket}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// The fleet store refused the value.
    #[error("the fleet store refused the value for {key}")]
    Put {
        /// The key.
        key: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
}

/// A device found by `$SRV.PING`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its device id (service metadata).
    pub device: String,
    /// Its service instance id.
    pub id: String,
    /// The agent's version.
    pub version: String,
}

/// The central command: a hub connection and the control subjects.
#[derive(Debug, Clone)]
pub struct Fleet {
    client: Client,
    prefix: String,
    timeout: Duration,
}

impl Fleet {
    /// Talks through `client` on control subjects under `prefix`, waiting
    /// up to `timeout` for answers.
    pub fn new(client: Client, prefix: impl Into<String>, timeout: Duration) -> Fleet {
        Fleet {
            client,
            prefix: prefix.into(),
            timeout,
        }
    }

    fn device_subject(&self, device: &str, endpoint: &str) -> String {
        format!("{}.device.{device}.{endpoint}", self.prefix)
    }

    /// Every agent that answers `$SRV.PING.tributary-agent` within the
    /// timeout, by device id.
    pub async fn discover(&self) -> Result<Vec<Found>, FleetError> {
        let replies = self.gather(&format!("$SRV.PING.{AGENT_SERVICE}")).await?;
        let mut found: Vec<Found> = replies
            .into_iter()
            .filter_map(|m| serde_json::from_slice::<async_nats::service::PingResponse>(&m).ok())
            .filter_map(|p| {
                Some(Found {
                    device: p.metadata.get(DEVICE_METADATA)?.clone(),
                    id: p.id,
                    version: p.version,
                })
            })
            .collect();
        found.sort_by(|a, b| a.device.cmp(&b.device));
        Ok(found)
    }

    /// Every uplink that answers `$SRV.INFO.tributary-uplink`, with its
    /// status.
    pub async fn uplinks(&self) -> Result<Vec<(String, Answer<UplinkStatus>)>, FleetError> {
        let infos = self.gather(&format!("$SRV.INFO.{UPLINK_SERVICE}")).await?;
        let subjects: Vec<String> = infos
            .into_iter()
            .filter_map(|m| serde_json::from_slice::<async_nats::service::Info>(&m).ok())
            .filter_map(|i| i.metadata.get(STATUS_SUBJECT_METADATA).cloned())
            .collect();
        let mut out = Vec::new();
        for s in subjects {
            let a = self.request(&s, Vec::new()).await?;
            out.push((s, a));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// One device's status.
    pub async fn status(&self, device: &str) -> Result<Answer<DeviceStatus>, FleetError> {
        self.request(&self.device_subject(device, "status"), Vec::new())
            .await
    }

    /// A sensor of `device` read now.
    pub async fn read(&self, device: &str, sensor: &str) -> Result<Answer<ReadReply>, FleetError> {
        self.request(
            &self.device_subject(device, "read"),
            sensor.as_bytes().to_vec(),
        )
        .await
    }

    /// `device`'s resolved configuration and its origin.
    pub async fn config(&self, device: &str) -> Result<Answer<ConfigReply>, FleetError> {
        self.request(&self.device_subject(device, "config"), Vec::new())
            .await
    }

    /// Puts `text` as `device`'s fleet configuration into `bucket`
    /// (created when missing); the new revision. Validate `text` first
    /// ([`tributary_config::validate_fleet`]).
    pub async fn push(&self, bucket: &str, device: &str, text: &str) -> Result<u64, FleetError> {
        let js = async_nats::jetstream::new(self.client.clone());
        let store = crate::jetstream::key_value_bucket(
            &js,
            bucket,
            "Tributary fleet configuration, one key per device",
            BUCKET_HISTORY,
        )
        .await
        .map_err(|e| FleetError::Bucket {
            bucket: bucket.to_owned(),
            source: e,
        })?;
        store
            .put(device, text.to_owned().into())
            .await
            .map_err(|e| FleetError::Put {
                key: device.to_owned(),
                source: e.into(),
            })
    }

    /// Asks `device` for its status until `done` says yes, or `wait`
    /// passes; the last status seen (if any).
    pub async fn wait_status(
        &self,
        device: &str,
        wait: Duration,
        done: impl Fn(&DeviceStatus) -> bool,
    ) -> Result<Option<DeviceStatus>, FleetError> {
        let deadline = Instant::now() + wait;
        let mut last = None;
        loop {
            if let Answer::Reply(s) = self.status(device).await? {
                if done(&s) {
                    return Ok(Some(s));
                }
                last = Some(s);
            }
            if Instant::now() >= deadline {
                return Ok(last);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One request, one reply document.
    async fn request<T: DeserializeOwned>(
        &self,
        subject: &str,
        payload: Vec<u8>,
    ) -> Result<Answer<T>, FleetError> {
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(self.timeout));
        let msg = match self.client.send_request(subject.to_owned(), request).await {
            Ok(m) => m,
            Err(e)
                if matches!(
                    e.kind(),
                    RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
                ) =>
            {
                return Ok(Answer::NoAnswer);
            }
            Err(e) => {
                return Err(FleetError::Send {
                    subject: subject.to_owned(),
                    source: e.into(),
                });
            }
        };
        if let Some(code) = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(NATS_SERVICE_ERROR_CODE))
        {
            let text = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(NATS_SERVICE_ERROR))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            return Ok(Answer::Refused {
                code: code.as_str().parse().unwrap_or(500),
                text,
            });
        }
        serde_json::from_slice(&msg.payload)
            .map(Answer::Reply)
            .map_err(|source| FleetError::Decode {
                subject: subject.to_owned(),
                source,
            })
    }

    /// Every reply to one request on `subject` that arrives within the
    /// timeout (scatter-gather, as `nats micro ls` does it).
    async fn gather(&self, subject: &str) -> Result<Vec<bytes::Bytes>, FleetError> {
        let send = |source: async_nats::Error| FleetError::Send {
            subject: subject.to_owned(),
            source,
        };
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| send(e.into()))?;
        self.client
            .publish_with_reply(subject.to_owned(), inbox, bytes::Bytes::new())
            .await
            .map_err(|e| send(e.into()))?;
        self.client.flush().await.map_err(|e| send(e.into()))?;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, replies.next()).await {
            out.push(m.payload);
        }
        Ok(out)
    }
}
