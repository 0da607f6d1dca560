//! The downlink's Kafka positions in a JetStream key-value bucket: one key
//! per partition, `<topic>.<partition>`, holding the next offset to read as
//! decimal text.

use super::DownlinkError;
use crate::jetstream::key_value_bucket;
use async_nats::jetstream::Context;
use async_nats::jetstream::kv::Store;
use std::collections::BTreeMap;
use tracing::warn;
use tributary_config::logging::{Decision, Window, ratelimit::LOG_EVERY};

/// The positions: what the bucket holds, and what moved since.
#[derive(Debug)]
pub struct Positions {
    bucket: String,
    store: Store,
    dirty: BTreeMap<String, i64>,
}

/// The key of a partition.
pub fn key(topic: &str, partition: i32) -> String {
    format!("{topic}.{partition}")
}

impl Positions {
    /// Opens `bucket`, creating it when missing.
    pub async fn open(js: &Context, bucket: &str) -> Result<Positions, DownlinkError> {
        let store = key_value_bucket(
            js,
            bucket,
            "Tributary downlink: the next Kafka offset of each command partition",
            1,
        )
        .await
        .map_err(|source| DownlinkError::Positions {
            bucket: bucket.to_owned(),
            source,
        })?;
        Ok(Positions {
            bucket: bucket.to_owned(),
            store,
            dirty: BTreeMap::new(),
        })
    }

    /// The next offset of `topic`/`partition`, `None` when never read.
    pub async fn get(&self, topic: &str, partition: i32) -> Result<Option<i64>, DownlinkError> {
        let k = key(topic, partition);
        let fail = |source: async_nats::Error| DownlinkError::Positions {
            bucket: self.bucket.clone(),
            source,
        };
        let Some(value) = self.store.get(&k).await.map_err(|e| fail(e.into()))? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&value).map_err(|e| fail(e.into()))?;
        text.trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|e| fail(format!("key {k}: {text:?} is not an offset: {e}").into()))
    }

    /// Records that `topic`/`partition` is read up to `next` (written at
    /// the next [`Positions::flush`]).
    pub fn advance(&mut self, topic: &str, partition: i32, next: i64) {
        self.dirty.insert(key(topic, partition), next);
    }

    /// Writes what moved; a failed write is kept for the next flush.
    pub async fn flush(&mut self, failures: &mut Window) {
        let dirty = std::mem::take(&mut self.dirty);
        for (k, next) in dirty {
            if let Err(e) = self.store.put(&k, next.to_string().into()).await {
                if let Decision::Log { suppressed } =
                    failures.decide(std::time::Instant::now(), LOG_EVERY)
                {
                    warn!(error = %e, key = %k, suppressed, "cannot store a downlink position; will retry");
                }
                self.dirty.entry(k).or_insert(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_partitions_key_is_its_topic_and_number() {
        assert_eq!(super::key("tributary.commands", 2), "tributary.commands.2");
    }
}
