//! Turning one JetStream message into Kafka records, or into a dead letter.
//!
//! A message is an agent envelope when it decodes as one. One that does not
//! decode but claims to be one (its `Nats-Msg-Id` has the agent's
//! `device:epoch:first+count` form) is a dead letter; any other message is
//! foreign and passed through as bytes with its NATS headers.

use crate::route::{RouteError, Router};
use async_nats::HeaderMap;
use std::borrow::Cow;
use std::sync::Arc;
use tributary_config::uplink::{Encoding, KeyMode};
use tributary_wire::{DecodeError, Envelope, NATS_MSG_ID_HEADER, READING_ID_HEADER};

/// Header of every record in exactly-once mode: `<stream seq>:<index>`.
pub const ORIGIN_HEADER: &str = "tributary-origin";
/// Header of passed-through records and dead letters: the NATS subject.
pub const SUBJECT_HEADER: &str = "tributary-subject";
/// Dead-letter header: why the message could not be delivered.
pub const DLQ_REASON_HEADER: &str = "tributary-dlq-reason";
/// Dead-letter header: the message's NATS subject.
pub const DLQ_SUBJECT_HEADER: &str = "tributary-dlq-subject";
/// Dead-letter header: the message's JetStream stream sequence.
pub const DLQ_STREAM_SEQ_HEADER: &str = "tributary-dlq-stream-seq";
/// Dead-letter header: the size of a payload left out because it was too big.
pub const DLQ_SIZE_HEADER: &str = "tributary-dlq-size";

/// One record to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Key; `None` lets the producer pick a partition. Shared by the
    /// records of one message.
    pub key: Option<Arc<[u8]>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers, in order. The uplink's own header names are borrowed.
    pub headers: Vec<(Cow<'static, str>, Vec<u8>)>,
}

/// Why a message became a dead letter.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum DeadReason {
    /// It claims to be an agent envelope but does not decode.
    #[error("undecodable envelope: {0}")]
    Undecodable(#[from] DecodeError),
    /// Its subject routes to an illegal topic name.
    #[error("unroutable: {0}")]
    Unroutable(#[from] RouteError),
    /// A record would exceed `kafka.max_record_bytes`.
    #[error("oversized: a record of {bytes} bytes exceeds the limit of {limit} bytes")]
    Oversized {
        /// Record size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Kafka refused a record for good (such as an unknown topic).
    #[error("rejected by Kafka: {0}")]
    Rejected(String),
}

impl DeadReason {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DeadReason::Undecodable(_) => "undecodable",
            DeadReason::Unroutable(_) => "unroutable",
            DeadReason::Oversized { .. } => "oversized",
            DeadReason::Rejected(_) => "rejected",
        }
    }
}

/// What a message becomes.
#[derive(Debug)]
pub enum Converted {
    /// Records to write (one per reading, or one passed-through message),
    /// and how many readings they carry.
    Records(Vec<OutRecord>, usize),
    /// A dead letter.
    Dead(DeadReason),
}

/// Whether a `Nats-Msg-Id` has the agent's `device:epoch:first+count` form.
fn agent_msg_id(headers: Option<&HeaderMap>) -> bool {
    let Some(id) = headers.and_then(|h| h.get(NATS_MSG_ID_HEADER)) else {
        return false;
    };
    let Some((rest, count)) = id.as_str().rsplit_once('+') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut parts = rest.rsplitn(3, ':');
    let (Some(first), Some(epoch), Some(device)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    digits(count) && digits(first) && digits(epoch) && !device.is_empty()
}

fn key_of(mode: KeyMode, device: &str, sensor: &str) -> Option<Arc<[u8]>> {
    match mode {
        KeyMode::Device => Some(Arc::from(device.as_bytes())),
        KeyMode::DeviceSensor => Some(Arc::from(format!("{device}/{sensor}").as_bytes())),
        KeyMode::None => None,
    }
}

fn nats_headers(headers: Option<&HeaderMap>, subject: &str) -> Vec<(Cow<'static, str>, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(h) = headers {
        for (name, values) in h.iter() {
            for v in values {
                out.push((Cow::Owned(name.to_string()), v.as_str().as_bytes().to_vec()));
            }
        }
        out.sort();
    }
    out.push((SUBJECT_HEADER.into(), subject.as_bytes().to_vec()));
    out
}

/// Converts one message. `max_record` is `kafka.max_record_bytes`.
pub fn convert(
    router: &Router,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    max_record: usize,
) -> Converted {
    let target = match router.route(subject) {
        Ok(t) => t,
        Err(e) => return Converted::Dead(e.into()),
    };
    let envelope = match Envelope::decode(payload) {
        Ok(env) => Some(env),
        Err(e) if agent_msg_id(headers) => return Converted::Dead(e.into()),
        Err(_) => None,
    };
    let records = match (&envelope, target.encoding) {
        (Some(env), Encoding::Json) => {
            // Every reading of an envelope has its device and sensor.
            let key = key_of(target.key, &env.device, &env.sensor);
            env.readings()
                .map(|r| OutRecord {
                    topic: target.topic.clone(),
                    key: key.clone(),
                    payload: r.to_json(),
                    headers: vec![(
                        READING_ID_HEADER.into(),
                        format!("{}:{}:{}", r.device, r.epoch, r.sample.seq).into_bytes(),
                    )],
                })
                .collect()
        }
        (Some(env), Encoding::Passthrough) => vec![OutRecord {
            topic: target.topic.clone(),
            key: key_of(target.key, &env.device, &env.sensor),
            payload: payload.to_vec(),
            headers: nats_headers(headers, subject),
        }],
        (None, _) => vec![OutRecord {
            topic: target.topic.clone(),
            key: (target.key != KeyMode::None).then(|| Arc::from(subject.as_bytes())),
            payload: payload.to_vec(),
            headers: nats_headers(headers, subject),
        }],
    };
    if let Some(big) = records
        .iter()
        .map(|r| r.payload.len())
        .find(|n| *n > max_record)
    {
        return Converted::Dead(DeadReason::Oversized {
            bytes: big,
            limit: max_record,
        });
    }
    let readings = envelope.map_or(0, |e| e.samples.len());
    Converted::Records(records, readings)
}

/// The dead-letter record of a message: its payload (left out when larger
/// than `max_record`), its NATS headers, and the reason, subject and stream
/// sequence. Keyed by subject.
pub fn dead_letter(
    topic: Arc<str>,
    subject: &str,
    stream_seq: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    reason: &DeadReason,
    max_record: usize,
) -> OutRecord {
    let mut h = nats_headers(headers, subject);
    h.push((DLQ_REASON_HEADER.into(), reason.to_string().into_bytes()));
    h.push((DLQ_SUBJECT_HEADER.into(), subject.as_bytes().to_vec()));
    h.push((
        DLQ_STREAM_SEQ_HEADER.into(),
        stream_seq.to_string().into_bytes(),
    ));
    let payload = if payload.len() > max_record {
        h.push((
            DLQ_SIZE_HEADER.into(),
            payload.len().to_string().into_bytes(),
        ));
        Vec::new()
    } else {
        payload.to_vec()
    };
    OutRecord {
        topic,
        key: Some(Arc::from(subject.as_bytes())),
        payload,
        headers: h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tributary_wire::{Sample, Value};

    fn router(toml: &str) -> Router {
        Router::new(&tributary_config::parse(toml, Path::new("t.toml")).unwrap())
    }

    fn envelope() -> Envelope {
        Envelope {
            device: "pi-1".into(),
            epoch: 7,
            sensor: "temp".into(),
            unit: Some("°C".into()),
            tags: vec![],
            samples: (1..=3)
                .map(|seq| Sample {
                    seq,
                    timestamp_ns: 1_000,
                    value: Value::Float(20.0),
                })
                .collect(),
        }
    }

    fn msg_id_headers(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(NATS_MSG_ID_HEADER, id);
        h
    }

    #[test]
    fn an_envelope_becomes_one_json_record_per_reading_keyed_by_device() {
        let env = envelope();
        let bytes = env.encode().unwrap();
        let h = msg_id_headers(&env.msg_id());
        let Converted::Records(recs, n) = convert(
            &router(""),
            "tributary.pi-1.temp",
            Some(&h),
            &bytes,
            1 << 20,
        ) else {
            panic!("not records")
        };
        assert_eq!((recs.len(), n), (3, 3));
        assert_eq!(recs[0].key.as_deref(), Some(&b"pi-1"[..]));
        assert_eq!(&*recs[0].topic, "tributary.readings");
        assert_eq!(recs[2].headers[0].0, READING_ID_HEADER);
        assert_eq!(recs[2].headers[0].1, b"pi-1:7:3");
        let json: serde_json::Value = serde_json::from_slice(&recs[1].payload).unwrap();
        assert_eq!(json["seq"], 2);
    }

    #[test]
    fn passthrough_keeps_the_bytes_and_the_nats_headers() {
        let env = envelope();
        let bytes = env.encode().unwrap();
        let h = msg_id_headers(&env.msg_id());
        let r = router("[kafka]\nencoding = \"passthrough\"\nkey = \"device_sensor\"\n");
        let Converted::Records(recs, _) =
            convert(&r, "tributary.pi-1.temp", Some(&h), &bytes, 1 << 20)
        else {
            panic!("not records")
        };
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].payload, bytes);
        assert_eq!(recs[0].key.as_deref(), Some(&b"pi-1/temp"[..]));
        assert!(
            recs[0]
                .headers
                .contains(&(NATS_MSG_ID_HEADER.into(), env.msg_id().into_bytes()))
        );
    }

    #[test]
    fn a_foreign_message_passes_through_keyed_by_subject_with_its_headers() {
        let mut h = HeaderMap::new();
        h.insert("Content-Type", "text/plain");
        let Converted::Records(recs, n) =
            convert(&router(""), "other.thing", Some(&h), b"hello", 1 << 20)
        else {
            panic!("not records")
        };
        assert_eq!(n, 0);
        assert_eq!(recs[0].payload, b"hello");
        assert_eq!(recs[0].key.as_deref(), Some(&b"other.thing"[..]));
        assert!(
            recs[0]
                .headers
                .contains(&("Content-Type".into(), b"text/plain".to_vec()))
        );
    }

    #[test]
    fn garbage_that_claims_to_be_an_envelope_is_a_dead_letter() {
        let h = msg_id_headers("pi-1:7:1+3");
        let c = convert(
            &router(""),
            "tributary.pi-1.temp",
            Some(&h),
            b"\x01garbage",
            1 << 20,
        );
        assert!(
            matches!(c, Converted::Dead(DeadReason::Undecodable(_))),
            "{c:?}"
        );
        assert!(agent_msg_id(Some(&msg_id_headers("a:b:1:2+3"))));
        assert!(!agent_msg_id(Some(&msg_id_headers("order-42"))));
    }

    #[test]
    fn an_oversized_record_is_a_dead_letter_that_leaves_the_payload_out() {
        let c = convert(&router(""), "x.y", None, &[0u8; 100], 50);
        let Converted::Dead(reason) = c else { panic!() };
        assert_eq!(reason.label(), "oversized");
        let d = dead_letter(Arc::from("dlq"), "x.y", 42, None, &[0u8; 100], &reason, 50);
        assert!(d.payload.is_empty());
        let get = |n: &str| {
            d.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get(DLQ_STREAM_SEQ_HEADER), Some(b"42".to_vec()));
        assert_eq!(get(DLQ_SUBJECT_HEADER), Some(b"x.y".to_vec()));
        assert_eq!(get(DLQ_SIZE_HEADER), Some(b"100".to_vec()));
        assert!(
            String::from_utf8(get(DLQ_REASON_HEADER).unwrap())
                .unwrap()
                .starts_with("oversized")
        );
    }
}
