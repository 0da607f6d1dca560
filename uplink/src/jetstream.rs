//! The hub side: creating or verifying the stream, and the durable pull
//! consumer the uplink drains it with.

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::{self, Context};
use tracing::{info, warn};
use tributary_config::uplink::{StorageKind, UplinkConfig};

/// Why the stream or consumer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    /// `stream.create = false` and the stream does not exist.
    #[error(
        "stream {0} does not exist and `stream.create = false`: create it, or set `create = true`"
    )]
    NoStream(String),
    /// The existing stream's settings differ from the configuration.
    #[error(
        "stream {stream} exists with {field} = {actual}, but the configuration says {wanted}; \
         change one of them, or set `stream.create = false` to bind to it as it is"
    )]
    Mismatch {
        /// The stream.
        stream: String,
        /// The differing setting.
        field: &'static str,
        /// What the hub has.
        actual: String,
        /// What the configuration asks for.
        wanted: String,
    },
    /// The JetStream API failed (hub unreachable, JetStream disabled,
    /// permissions).
    #[error("JetStream {what} failed: {reason}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// Why (in the message, so not also a `source`).
        reason: async_nats::Error,
    },
}

fn api(what: &'static str) -> impl FnOnce(async_nats::Error) -> JetStreamError {
    move |reason| JetStreamError::Api { what, reason }
}

fn stream_config(config: &UplinkConfig) -> stream::Config {
    let s = &config.stream;
    stream::Config {
        name: s.name.clone(),
        subjects: s.subjects.clone(),
        storage: match s.storage {
            StorageKind::File => StorageType::File,
            StorageKind::Memory => StorageType::Memory,
        },
        num_replicas: s.replicas.get() as usize,
        duplicate_window: s.duplicate_window.get(),
        // 0 means no limit to JetStream for the age; -1 for the size.
        max_age: s.max_age.unwrap_or_default(),
        max_bytes: s
            .max_bytes
            .filter(|b| b.as_u64() > 0)
            .map_or(-1, |b| i64::try_from(b.as_u64()).unwrap_or(i64::MAX)),
        ..Default::default()
    }
}

/// Creates the stream, or checks that the existing one matches the
/// configuration (`stream.create = true`); or binds to an existing stream
/// without changing it (`create = false`).
pub async fn ensure_stream(
    js: &Context,
    config: &UplinkConfig,
) -> Result<stream::Stream, JetStreamError> {
    let name = &config.stream.name;
    let existing = match js.get_stream(name).await {
        Ok(s) => Some(s),
        Err(e)
            if matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            None
        }
        Err(e) => return Err(api("stream lookup")(e.into())),
    };
    if !config.stream.create {
        return existing.ok_or_else(|| JetStreamError::NoStream(name.clone()));
    }
    let wanted = stream_config(config);
    let Some(stream) = existing else {
        info!(stream = %name, subjects = ?wanted.subjects, "creating the stream");
        return js
            .create_stream(wanted)
            .await
            .map_err(|e| api("stream creation")(e.into()));
    };
    let actual = &stream.cached_info().config;
    let mismatch = |field: &'static str, actual: String, wanted: String| JetStreamError::Mismatch {
        stream: name.clone(),
        field,
        actual,
        wanted,
    };
    let (mut a, mut w) = (actual.subjects.clone(), wanted.subjects.clone());
    a.sort();
    w.sort();
    if a != w {
        return Err(mismatch("subjects", format!("{a:?}"), format!("{w:?}")));
    }
    if actual.storage != wanted.storage {
        return Err(mismatch(
            "storage",
            format!("{:?}", actual.storage),
            format!("{:?}", wanted.storage),
        ));
    }
    if actual.num_replicas.max(1) != wanted.num_replicas {
        return Err(mismatch(
            "replicas",
            actual.num_replicas.to_string(),
            wanted.num_replicas.to_string(),
        ));
    }
    if actual.duplicate_window != wanted.duplicate_window
        || actual.max_age != wanted.max_age
        || actual.max_bytes != wanted.max_bytes
    {
        warn!(
            stream = %name,
            duplicate_window = ?actual.duplicate_window,
            max_age = ?actual.max_age,
            max_bytes = actual.max_bytes,
            "the existing stream's limits differ from the configuration; keeping the stream's"
        );
    }
    Ok(stream)
}

/// The name of the durable consumer this uplink uses.
pub fn durable_name(config: &UplinkConfig) -> String {
    let eo = &config.exactly_once;
    if eo.enabled && eo.replica_count() > 1 {
        format!("{}-{}", config.consumer.durable, eo.replica)
    } else {
        config.consumer.durable.clone()
    }
}

fn consumer_config(config: &UplinkConfig, deliver: DeliverPolicy) -> pull::Config {
    let c = &config.consumer;
    pull::Config {
        durable_name: Some(durable_name(config)),
        ack_policy: AckPolicy::Explicit,
        ack_wait: c.ack_wait.get(),
        max_ack_pending: i64::try_from(c.max_ack_pending.get()).unwrap_or(i64::MAX),
        deliver_policy: deliver,
        ..Default::default()
    }
}

/// The durable pull consumer, created when missing. Several uplinks bound
/// to the same durable consumer share its messages.
pub async fn bind_consumer(
    stream: &stream::Stream,
    config: &UplinkConfig,
) -> Result<PullConsumer, JetStreamError> {
    let name = durable_name(config);
    stream
        .get_or_create_consumer(&name, consumer_config(config, DeliverPolicy::All))
        .await
        .map_err(|e| api("consumer creation")(e.into()))
}

/// Exactly-once mode: recreates the durable consumer so that it delivers,
/// in stream order, everything after its acknowledgement floor. Messages an
/// earlier run left unacknowledged thus come first and in order, never
/// after newer ones.
pub async fn rewind_consumer(
    stream: &stream::Stream,
    config: &UplinkConfig,
) -> Result<(PullConsumer, u64), JetStreamError> {
    let name = durable_name(config);
    let floor = match stream.get_consumer::<pull::Config>(&name).await {
        Ok(mut c) => {
            let info = c.info().await.map_err(|e| api("consumer info")(e.into()))?;
            let floor = info.ack_floor.stream_sequence;
            stream
                .delete_consumer(&name)
                .await
                .map_err(|e| api("consumer deletion")(e.into()))?;
            floor
        }
        Err(_) => 0,
    };
    let deliver = if floor == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: floor + 1,
        }
    };
    info!(consumer = %name, ack_floor = floor, "exactly-once: consumer restarts after its ack floor");
    let consumer = stream
        .create_consumer(consumer_config(config, deliver))
        .await
        .map_err(|e| api("consumer creation")(e.into()))?;
    Ok((consumer, floor))
}
/// The key-value bucket `bucket`, created when missing with `history`
/// values per key. Its stream is made as the KV clients make it:
/// async-nats's `create_key_value` first asks for the account info, whose
/// reply it cannot parse from a nats-server 2.9 (Debian 12's).
pub async fn key_value_bucket(
    js: &Context,
    bucket: &str,
    description: &str,
    history: i64,
) -> Result<async_nats::jetstream::kv::Store, async_nats::Error> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config).await?;
    Ok(js.get_key_value(bucket).await?)
}
