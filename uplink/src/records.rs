//! Turning one JetStream message into Kafka records, or into a dead letter.
//!
//! A message is an agent envelope when it decodes as one. On a `json` route
//! one that does not is a dead letter, unless its publisher declared it
//! foreign; see [`dead_letter`](crate::dead_letter) for that rule and for
//! what a dead-letter record keeps.

use crate::route::{RouteError, Router};
use async_nats::HeaderMap;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use tributary_config::uplink::{Encoding, KeyMode};
use tributary_wire::{DecodeError, Envelope, READING_ID_HEADER};

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
/// Dead-letter header: the length of a payload truncated because it was too
/// big.
pub const DLQ_SIZE_HEADER: &str = "tributary-dlq-size";

/// The records of one message, in buffers reused from message to
/// message: once they have grown to a message's size, converting one
/// allocates nothing per record.
#[derive(Debug, Default)]
pub struct Records {
    records: Vec<RecordSpan>,
    headers: Vec<HeaderSpan>,
    /// Payloads and header values, back to back.
    bytes: Vec<u8>,
    /// Readings the records carry (0 for a passed-through foreign message).
    readings: usize,
}

#[derive(Debug)]
struct RecordSpan {
    topic: Arc<str>,
    key: Option<Arc<[u8]>>,
    payload: Range<usize>,
    headers: Range<usize>,
}

#[derive(Debug)]
struct HeaderSpan {
    /// The uplink's own header names are borrowed.
    name: Cow<'static, str>,
    value: Range<usize>,
}

/// One record of [`Records`].
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic.
    pub topic: &'a Arc<str>,
    /// Key; `None` lets the producer pick a partition. Shared by the
    /// records of one message.
    pub key: Option<&'a Arc<[u8]>>,
    /// Payload.
    pub payload: &'a [u8],
    headers: &'a [HeaderSpan],
    bytes: &'a [u8],
}

impl<'a> Record<'a> {
    /// Headers, in order.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a [u8])> + 'a {
        let bytes = self.bytes;
        self.headers
            .iter()
            .map(move |h| (&*h.name, &bytes[h.value.clone()]))
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl Records {
    /// Forgets the records, keeping the buffers.
    pub fn clear(&mut self) {
        self.records.clear();
        self.headers.clear();
        self.bytes.clear();
        self.readings = 0;
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Readings the records carry.
    pub fn readings(&self) -> usize {
        self.readings
    }

    /// The records in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record<'_>> {
        self.records.iter().map(|r| Record {
            topic: &r.topic,
            key: r.key.as_ref(),
            payload: &self.bytes[r.payload.clone()],
            headers: &self.headers[r.headers.clone()],
            bytes: &self.bytes,
        })
    }

    /// Record `i`.
    pub fn get(&self, i: usize) -> Option<Record<'_>> {
        self.iter().nth(i)
    }

    /// Starts a record whose payload `write` appends to the buffer; its
    /// headers follow with [`header`](Self::header).
    pub(crate) fn push(
        &mut self,
        topic: &Arc<str>,
        key: Option<&Arc<[u8]>>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        let h = self.headers.len();
        self.records.push(RecordSpan {
            topic: topic.clone(),
            key: key.cloned(),
            payload: start..self.bytes.len(),
            headers: h..h,
        });
    }

    /// Replaces the last record's payload with what `write` appends.
    pub(crate) fn set_payload(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        if let Some(last) = self.records.last_mut() {
            last.payload = start..self.bytes.len();
        }
    }

    /// Adds a header, whose value `write` appends, to the last record.
    pub(crate) fn header(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        self.headers.push(HeaderSpan {
            name: name.into(),
            value: start..self.bytes.len(),
        });
        if let Some(last) = self.records.last_mut() {
            last.headers.end = self.headers.len();
        }
    }

    /// The NATS headers, ordered by name and value, then the subject.
    pub(crate) fn nats_headers(&mut self, headers: Option<&HeaderMap>, subject: &str) {
        let first = self.headers.len();
        if let Some(h) = headers {
            for (name, values) in h.iter() {
                for v in values {
                    self.header(name.to_string(), |b| {
                        b.extend_from_slice(v.as_str().as_bytes());
                    });
                }
            }
            let bytes = &self.bytes;
            self.headers[first..].sort_by(|a, b| {
                (&a.name, &bytes[a.value.clone()]).cmp(&(&b.name, &bytes[b.value.clone()]))
            });
        }
        self.header(SUBJECT_HEADER, |b| b.extend_from_slice(subject.as_bytes()));
    }
}

/// Why a message became a dead letter.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum DeadReason {
    /// On a `json` route, it does not decode as an agent envelope.
    #[error("undecodable envelope: {0}")]
    Undecodable(#[from] DecodeError),
    /// Its subject routes to an illegal topic name.
    #[error("unroutable: {0}")]
    Unroutable(#[from] RouteError),
    /// It says it is a command outcome (header `Tributary-Kind`) and is
    /// not one, or not from the device its subject names.
    #[error("undecodable command outcome: {0}")]
    BadOutcome(String),
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
            DeadReason::Undecodable(_) | DeadReason::BadOutcome(_) => "undecodable",
            DeadReason::Unroutable(_) => "unroutable",
            DeadReason::Oversized { .. } => "oversized",
            DeadReason::Rejected(_) => "rejected",
        }
    }
}

fn key_of(mode: KeyMode, device: &str, sensor: &str) -> Option<Arc<[u8]>> {
    match mode {
        KeyMode::Device => Some(Arc::from(device.as_bytes())),
        KeyMode::DeviceSensor => Some(Arc::from(format!("{device}/{sensor}").as_bytes())),
        KeyMode::None => None,
    }
}

/// Converts one message into `out` (cleared first): one JSON record per
/// reading, or the message passed through; an error says why it is a dead
/// letter instead. `max_record` is `kafka.max_record_bytes`.
pub fn convert(
    router: &Router,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    max_record: usize,
    out: &mut Records,
) -> Result<(), DeadReason> {
    out.clear();
    if is_outcome(headers) {
        return outcome(router, subject, payload, out);
    }
    let target = router.route(subject)?;
    let envelope: Option<Envelope> =
        crate::dead_letter::envelope_of(target.encoding, headers, payload)?;
    match (&envelope, target.encoding) {
        (Some(env), Encoding::Json) => {
            // Every reading of an envelope has its device and sensor.
            let key = key_of(target.key, &env.device, &env.sensor);
            for r in env.readings() {
                out.push(&target.topic, key.as_ref(), |b| r.write_json(b));
                out.header(READING_ID_HEADER, |b| r.write_id(b));
            }
            out.readings = env.samples.len();
        }
        (Some(env), Encoding::Passthrough) => {
            let key = key_of(target.key, &env.device, &env.sensor);
            out.push(&target.topic, key.as_ref(), |b| {
                b.extend_from_slice(payload)
            });
            out.nats_headers(headers, subject);
            out.readings = env.samples.len();
        }
        (None, _) => {
            let key = (target.key != KeyMode::None).then(|| Arc::from(subject.as_bytes()));
            out.push(&target.topic, key.as_ref(), |b| {
                b.extend_from_slice(payload)
            });
            out.nats_headers(headers, subject);
        }
    }
    let big = out
        .iter()
        .map(|r| r.payload.len())
        .find(|n| *n > max_record);
    if let Some(big) = big {
        out.clear();
        return Err(DeadReason::Oversized {
            bytes: big,
            limit: max_record,
        });
    }
    Ok(())
}

/// Whether the message is a device's command outcome
/// ([`tributary_wire::command::KIND_HEADER`]).
fn is_outcome(headers: Option<&HeaderMap>) -> bool {
    use tributary_wire::command::{KIND_HEADER, OUTCOME_KIND};
    headers
        .and_then(|h| h.get(KIND_HEADER))
        .is_some_and(|v| v.as_str() == OUTCOME_KIND)
}

/// A command outcome into one record on the outcome topic, keyed by
/// device, its JSON unchanged; it must decode, and its device must be the
/// one its subject (`<prefix>.<device>.$outcome`) names, the only one whose
/// permissions let it publish there.
fn outcome(
    router: &Router,
    subject: &str,
    payload: &[u8],
    out: &mut Records,
) -> Result<(), DeadReason> {
    use tributary_wire::command::{OUTCOME_TOKEN, Outcome};
    let doc: Outcome =
        serde_json::from_slice(payload).map_err(|e| DeadReason::BadOutcome(e.to_string()))?;
    let device = subject
        .strip_suffix(OUTCOME_TOKEN)
        .and_then(|s| s.strip_suffix('.'))
        .and_then(|s| s.rsplit('.').next());
    if device != Some(doc.device.as_str()) {
        return Err(DeadReason::BadOutcome(format!(
            "the outcome names device {:?} but came on {subject:?}",
            doc.device
        )));
    }
    let key: Arc<[u8]> = Arc::from(doc.device.as_bytes());
    out.push(router.outcome_topic(), Some(&key), |b| {
        b.extend_from_slice(payload)
    });
    out.header("tributary-command-id", |b| {
        b.extend_from_slice(doc.command_id.as_bytes())
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tributary_wire::{Clock, Sample, Value};

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
            clock: Clock::Synced,
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
        h.insert(tributary_wire::NATS_MSG_ID_HEADER, id);
        h
    }

    fn converted(
        router: &Router,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
        max_record: usize,
    ) -> Result<Records, DeadReason> {
        let mut out = Records::default();
        convert(router, subject, headers, payload, max_record, &mut out).map(|()| out)
    }

    #[test]
    fn an_envelope_becomes_one_json_record_per_reading_keyed_by_device() {
        let env = envelope();
        let bytes = env.encode().unwrap();
        let h = msg_id_headers(&env.msg_id());
        let recs = converted(
            &router(""),
            "tributary.pi-1.temp",
            Some(&h),
            &bytes,
            1 << 20,
        )
        .unwrap();
        assert_eq!((recs.len(), recs.readings()), (3, 3));
        let r = recs.get(2).unwrap();
        assert_eq!(r.key.map(|k| &**k), Some(&b"pi-1"[..]));
        assert_eq!(&**r.topic, "tributary.readings");
        assert_eq!(
            r.headers().collect::<Vec<_>>(),
            vec![(READING_ID_HEADER, &b"pi-1:7:3"[..])]
        );
        let json: serde_json::Value = serde_json::from_slice(recs.get(1).unwrap().payload).unwrap();
        assert_eq!(json["seq"], 2);
    }

    /// The clock field of each JSON record `payload` converts into.
    fn clocks_of(payload: &[u8]) -> Vec<Option<String>> {
        let env = Envelope::decode(payload).unwrap();
        let h = msg_id_headers(&env.msg_id());
        let subject = format!("tributary.{}.{}", env.device, env.sensor);
        let recs = converted(&router(""), &subject, Some(&h), payload, 1 << 20).unwrap();
        assert_eq!(recs.len(), env.samples.len());
        recs.iter()
            .map(|r| {
                let json: serde_json::Value = serde_json::from_slice(r.payload).unwrap();
                json.get("clock")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .collect()
    }

    #[test]
    fn envelopes_of_format_version_1_and_2_both_convert_and_carry_their_clock() {
        // The wire crate's golden bytes, as agents in the field sent them.
        let v1 = include_bytes!("../../wire/tests/fixtures/envelope-v1.bin");
        let v2 = include_bytes!("../../wire/tests/fixtures/envelope-v2.bin");
        assert_eq!((v1[0], v2[0]), (1, 2));
        assert_eq!(clocks_of(v1), vec![Some("unknown".to_owned()); 4]);
        assert_eq!(clocks_of(v2), vec![Some("unsynced".to_owned()); 4]);
        let synced = envelope().encode().unwrap();
        assert_eq!(clocks_of(&synced), vec![None; 3], "absent when synced");
    }

    #[test]
    fn converting_reuses_the_buffers_and_forgets_the_previous_message() {
        let env = envelope();
        let bytes = env.encode().unwrap();
        let router = router(
            "[[routes]]\nsubject = \"other.>\"\ntopic = \"o\"\nencoding = \"passthrough\"\n",
        );
        let mut out = Records::default();
        let mut payloads_of = |subject: &str, payload: &[u8]| -> Vec<Vec<u8>> {
            convert(&router, subject, None, payload, 1 << 20, &mut out).unwrap();
            out.iter().map(|r| r.payload.to_vec()).collect()
        };
        let first = payloads_of("tributary.pi-1.temp", &bytes);
        assert_eq!(
            payloads_of("other.thing", b"hello"),
            vec![b"hello".to_vec()]
        );
        let again = payloads_of("tributary.pi-1.temp", &bytes);
        assert_eq!(first.len(), 3);
        assert_eq!(first, again);
    }

    #[test]
    fn passthrough_keeps_the_bytes_and_the_nats_headers() {
        let env = envelope();
        let bytes = env.encode().unwrap();
        let h = msg_id_headers(&env.msg_id());
        let r = router("[kafka]\nencoding = \"passthrough\"\nkey = \"device_sensor\"\n");
        let recs = converted(&r, "tributary.pi-1.temp", Some(&h), &bytes, 1 << 20).unwrap();
        assert_eq!(recs.len(), 1);
        let rec = recs.get(0).unwrap();
        assert_eq!(rec.payload, bytes);
        assert_eq!(rec.key.map(|k| &**k), Some(&b"pi-1/temp"[..]));
        assert_eq!(
            rec.header(tributary_wire::NATS_MSG_ID_HEADER),
            Some(env.msg_id().as_bytes())
        );
        assert_eq!(
            rec.header(SUBJECT_HEADER),
            Some(&b"tributary.pi-1.temp"[..])
        );
    }

    #[test]
    fn on_a_passthrough_route_a_foreign_message_passes_through_keyed_by_subject_with_its_headers_in_order()
     {
        let mut h = HeaderMap::new();
        h.insert("X-B", "2");
        h.append("X-A", "9");
        h.append("X-A", "1");
        let r = router("[kafka]\nencoding = \"passthrough\"\n");
        let recs = converted(&r, "other.thing", Some(&h), b"hello", 1 << 20).unwrap();
        assert_eq!(recs.readings(), 0);
        let rec = recs.get(0).unwrap();
        assert_eq!(rec.payload, b"hello");
        assert_eq!(rec.key.map(|k| &**k), Some(&b"other.thing"[..]));
        assert_eq!(
            rec.headers().collect::<Vec<_>>(),
            vec![
                ("X-A", &b"1"[..]),
                ("X-A", &b"9"[..]),
                ("X-B", &b"2"[..]),
                (SUBJECT_HEADER, &b"other.thing"[..])
            ]
        );
    }

    #[test]
    fn garbage_that_claims_to_be_an_envelope_is_a_dead_letter() {
        let h = msg_id_headers("pi-1:7:1+3");
        let c = converted(
            &router(""),
            "tributary.pi-1.temp",
            Some(&h),
            b"\x01garbage",
            1 << 20,
        );
        assert!(matches!(c, Err(DeadReason::Undecodable(_))), "{c:?}");
    }

    #[test]
    fn an_oversized_record_is_a_dead_letter() {
        let r = router("[kafka]\nencoding = \"passthrough\"\n");
        let Err(reason) = converted(&r, "x.y", None, &[0u8; 100], 50) else {
            panic!("not a dead letter")
        };
        assert_eq!(reason.label(), "oversized");
    }

    #[test]
    fn a_command_outcome_goes_to_the_outcome_topic_keyed_by_its_device_and_unchanged() {
        let r = router("");
        let mut headers = HeaderMap::new();
        headers.insert(tributary_wire::command::KIND_HEADER, "command-outcome");
        let doc = br#"{"format":1,"command_id":"c1","device":"pi-1","actuator":"vent","value":3,"outcome":"applied","issued_at_ms":1,"received_at_ms":2,"finished_at_ms":3}"#;
        let mut out = Records::default();
        convert(
            &r,
            "tributary.pi-1.$outcome",
            Some(&headers),
            doc,
            1 << 20,
            &mut out,
        )
        .unwrap();
        let rec = out.iter().next().unwrap();
        assert_eq!(&**rec.topic, "tributary.outcomes");
        assert_eq!(rec.key.map(|k| k.to_vec()), Some(b"pi-1".to_vec()));
        assert_eq!(rec.payload, &doc[..]);
        let spoofed = convert(
            &r,
            "tributary.pi-2.$outcome",
            Some(&headers),
            doc,
            1 << 20,
            &mut out,
        );
        assert!(
            matches!(spoofed, Err(DeadReason::BadOutcome(_))),
            "{spoofed:?}"
        );
        let broken = convert(
            &r,
            "tributary.pi-1.$outcome",
            Some(&headers),
            b"{}",
            1 << 20,
            &mut out,
        );
        assert!(matches!(broken, Err(DeadReason::BadOutcome(_))));
    }
}
