//! The stream both uplink benchmarks drain (`drain`, and `replicas`,
//! which includes this file): `messages` messages of [`PER_MESSAGE`]
//! readings from [`DEVICES`] devices, published into the hub's stream
//! with their `Nats-Msg-Id`s, 4,096 acks pending.

use futures::StreamExt;
use std::future::IntoFuture;
use tributary_wire::{Clock, Envelope, NATS_MSG_ID_HEADER, Sample, Value};

/// Readings per message.
pub const PER_MESSAGE: u64 = 10;
/// Devices the messages come from, in turn.
pub const DEVICES: u64 = 100;

/// Message `i` of the stream.
pub fn envelope(i: u64) -> Envelope {
    let device = format!("pi-{:03}", i % DEVICES);
    let first = (i / DEVICES) * PER_MESSAGE + 1;
    Envelope {
        device,
        epoch: 1_764_000_000,
        sensor: "temp".into(),
        unit: Some("°C".into()),
        tags: vec![("room".into(), "lab".into())],
        clock: Clock::Synced,
        samples: (first..first + PER_MESSAGE)
            .map(|seq| Sample {
                seq,
                timestamp_ns: 1_795_827_723_000_000_000 + seq as i64 * 1_000_000,
                value: Value::Float(20.0 + (seq % 50) as f64 / 10.0),
            })
            .collect(),
    }
}

/// Publishes messages `0..messages` and waits for every ack.
pub async fn preload(js: &async_nats::jetstream::Context, messages: u64) {
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..messages {
        let env = envelope(i);
        let mut h = async_nats::HeaderMap::new();
        h.insert(NATS_MSG_ID_HEADER, env.msg_id().as_str());
        acks.push(
            js.publish_with_headers(env.subject("tributary"), h, env.encode().unwrap().into())
                .await
                .expect("publish")
                .into_future(),
        );
        while acks.len() >= 4096 {
            acks.next().await.unwrap().expect("hub ack");
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("hub ack");
    }
}
