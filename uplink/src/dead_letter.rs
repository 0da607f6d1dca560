//! Which messages become dead letters, and what a dead-letter record keeps.
//!
//! # What passes and what does not
//!
//! A topic routed with the `json` encoding carries JSON reading records
//! and nothing else that the uplink decided on its own: a message on a
//! `json` route must decode as an agent envelope (in a format version this
//! build reads), or it is a dead letter with reason `undecodable`, whatever
//! its headers claim. Messages are passed through as bytes, with their
//! NATS headers as Kafka headers, in two cases only ([`envelope_of`]):
//!
//! * the route asks for it (`encoding = "passthrough"`): any bytes pass,
//!   envelopes or not;
//! * the publisher says the message is not an agent envelope, with the
//!   NATS header [`PASSTHROUGH_HEADER`] (`Tributary-Passthrough`, any value,
//!   name matched without regard to case). The uplink then does not try to
//!   decode it and passes it through on any route, a `json` one included;
//!   publishers that do this into a JSON topic take that on themselves
//!   (the header travels on, so consumers can skip such records). The agent
//!   never sets it.
//!
//! # A refusal outlives the producer
//!
//! A record Kafka refuses for good (`rejected`: an unknown topic, a
//! broker's schema validation, ...) is dead-lettered. An idempotent producer
//! whose write was refused bumps its epoch to close the gap in its sequence
//! numbers; a broker that mishandles that (tansu 0.6.0 fences the producer)
//! makes the dead-letter write fail, the producer is replaced and the
//! message redelivered. [`Refused`] remembers such a message's reason
//! across sessions, so that its redelivery goes straight to the dead-letter
//! topic rather than to the broker that refused it, again and again. The
//! counter `tributary_uplink_dead_lettered_total` counts dead letters Kafka
//! confirmed, once per message.
//!
//! # What a dead letter keeps
//!
//! [`record`] writes the message's original bytes as the value, its NATS
//! headers, and `tributary-dlq-reason`, `-subject` and `-stream-seq`. The
//! whole record (key, value, headers and Kafka's framing of them, counted
//! generously: [`RECORD_FRAMING`] bytes plus [`HEADER_FRAMING`] per header)
//! stays within `kafka.max_record_bytes`, which must not exceed the
//! broker's `message.max.bytes`. When the bytes do not fit, the value keeps
//! their first bytes, as many as fit, and two headers say so:
//! `tributary-dlq-truncated: true` and `tributary-dlq-size: <original
//! length>`.

use crate::records::{
    DLQ_REASON_HEADER, DLQ_SIZE_HEADER, DLQ_STREAM_SEQ_HEADER, DLQ_SUBJECT_HEADER, DeadReason,
    Records,
};
use async_nats::HeaderMap;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tributary_config::uplink::Encoding;
use tributary_wire::{DecodeError, Envelope};

/// NATS header by which a publisher says its message is not an agent
/// envelope: it is passed through as bytes, on any route.
pub const PASSTHROUGH_HEADER: &str = "Tributary-Passthrough";
/// Dead-letter header: `true` when the value is the payload's first bytes
/// only (`tributary-dlq-size` then has the payload's length).
pub const DLQ_TRUNCATED_HEADER: &str = "tributary-dlq-truncated";

/// Kafka's framing of one record, counted generously: a v2 record batch's
/// header (61 bytes) and the record's own length, attributes, timestamp
/// and offset deltas, key and value lengths and header count (varints, at
/// most 36 bytes), rounded up. A dead letter is written alone in the worst
/// case, so the batch header counts.
pub const RECORD_FRAMING: usize = 128;
/// Kafka's framing of one header: its name's and value's lengths (varints,
/// counted generously).
pub const HEADER_FRAMING: usize = 10;
/// Room kept for the two headers a truncated dead letter adds.
const TRUNCATION_HEADERS: usize = DLQ_TRUNCATED_HEADER.len()
    + "true".len()
    + DLQ_SIZE_HEADER.len()
    + "18446744073709551615".len()
    + 2 * HEADER_FRAMING;

/// Whether the publisher declared the message not an agent envelope.
pub fn declared_foreign(headers: Option<&HeaderMap>) -> bool {
    headers.is_some_and(|h| {
        h.iter().any(|(name, _)| {
            let name: &str = name.as_ref();
            name.eq_ignore_ascii_case(PASSTHROUGH_HEADER)
        })
    })
}

/// The envelope a message on a route with `encoding` carries; `None` for
/// a message to pass through as bytes; an error when it is a dead letter:
/// on a `json` route, anything that does not decode and was not declared
/// foreign.
pub fn envelope_of(
    encoding: Encoding,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Option<Envelope>, DecodeError> {
    if declared_foreign(headers) {
        return Ok(None);
    }
    match Envelope::decode(payload) {
        Ok(env) => Ok(Some(env)),
        Err(_) if encoding == Encoding::Passthrough => Ok(None),
        Err(e) => Err(e),
    }
}

/// The dead-letter record of a message, into `out` (cleared first): its
/// payload (its first bytes only when the whole would not fit in
/// `max_record`, see the module docs), its NATS headers, and the reason,
/// subject and stream sequence. Keyed by subject.
#[allow(clippy::too_many_arguments)]
pub fn record(
    topic: &Arc<str>,
    subject: &str,
    stream_seq: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    reason: &DeadReason,
    max_record: usize,
    out: &mut Records,
) {
    out.clear();
    let key: Arc<[u8]> = Arc::from(subject.as_bytes());
    // The value comes last, once the headers tell how much room is left.
    out.push(topic, Some(&key), |_| {});
    out.nats_headers(headers, subject);
    out.header(DLQ_REASON_HEADER, |b| {
        b.extend_from_slice(reason.to_string().as_bytes());
    });
    out.header(DLQ_SUBJECT_HEADER, |b| {
        b.extend_from_slice(subject.as_bytes())
    });
    out.header(DLQ_STREAM_SEQ_HEADER, |b| {
        b.extend_from_slice(itoa::Buffer::new().format(stream_seq).as_bytes());
    });
    let kept = payload.len().min(room(out, max_record));
    if kept < payload.len() {
        out.header(DLQ_TRUNCATED_HEADER, |b| b.extend_from_slice(b"true"));
        out.header(DLQ_SIZE_HEADER, |b| {
            b.extend_from_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
        });
    }
    out.set_payload(|b| b.extend_from_slice(&payload[..kept]));
}

/// How many payload bytes fit next to the key and headers of `out`'s only
/// record, keeping room for the truncation headers.
fn room(out: &Records, max_record: usize) -> usize {
    let Some(r) = out.get(0) else {
        return 0;
    };
    let headers: usize = r
        .headers()
        .map(|(name, value)| name.len() + value.len() + HEADER_FRAMING)
        .sum();
    let key = r.key.map_or(0, |k| k.len());
    max_record.saturating_sub(RECORD_FRAMING + key + headers + TRUNCATION_HEADERS)
}

/// The most refused messages [`Refused`] remembers (the oldest go first).
const MAX_REFUSED: usize = 4096;

/// Messages whose records Kafka refused for good, by stream sequence, with
/// the reason, until their dead letters are confirmed. Bounded.
#[derive(Debug, Default)]
pub struct Refused {
    reasons: HashMap<u64, String>,
    order: VecDeque<u64>,
}

impl Refused {
    /// Remembers that Kafka refused the message `seq` for `reason`.
    pub fn remember(&mut self, seq: u64, reason: &str) {
        if self.reasons.insert(seq, reason.to_owned()).is_none() {
            self.order.push_back(seq);
        }
        while self.order.len() > MAX_REFUSED {
            if let Some(old) = self.order.pop_front() {
                self.reasons.remove(&old);
            }
        }
    }

    /// The reason Kafka refused the message `seq`, if it did; forgotten.
    pub fn take(&mut self, seq: u64) -> Option<DeadReason> {
        let reason = self.reasons.remove(&seq)?;
        self.order.retain(|s| *s != seq);
        Some(DeadReason::Rejected(reason))
    }

    /// Forgets the message `seq` (its dead letter is written).
    pub fn forget(&mut self, seq: u64) {
        if self.reasons.remove(&seq).is_some() {
            self.order.retain(|s| *s != seq);
        }
    }

    /// How many refused messages are remembered.
    pub fn len(&self) -> usize {
        self.reasons.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::convert;
    use crate::route::Router;
    use std::path::Path;

    fn router(toml: &str) -> Router {
        Router::new(&tributary_config::parse(toml, Path::new("t.toml")).unwrap())
    }

    fn dead(payload: &[u8], reason: &DeadReason, max_record: usize) -> Records {
        let mut out = Records::default();
        record(
            &Arc::from("dlq"),
            "x.y",
            42,
            None,
            payload,
            reason,
            max_record,
            &mut out,
        );
        out
    }

    /// The whole record's size as [`room`] counts it.
    fn framed_len(out: &Records) -> usize {
        let r = out.get(0).unwrap();
        RECORD_FRAMING
            + r.key.map_or(0, |k| k.len())
            + r.payload.len()
            + r.headers()
                .map(|(n, v)| n.len() + v.len() + HEADER_FRAMING)
                .sum::<usize>()
    }

    fn undecodable(toml: &str, headers: Option<&HeaderMap>, payload: &[u8]) -> bool {
        let mut out = Records::default();
        let c = convert(&router(toml), "x.y", headers, payload, 1 << 20, &mut out);
        matches!(c, Err(DeadReason::Undecodable(_)))
    }

    #[test]
    fn on_a_json_route_anything_that_does_not_decode_is_undecodable() {
        for garbage in [&b""[..], b"\x01\x05probe", b"\x02\x05probe", b"hello"] {
            assert!(undecodable("", None, garbage), "{garbage:?}");
        }
        for version in [0u8, 3, 255] {
            let mut bytes = vec![version];
            bytes.extend_from_slice(b"\x04pi-1\x07\x04temp");
            assert!(undecodable("", None, &bytes), "version {version}");
        }
        // Whatever the message id claims.
        let mut h = HeaderMap::new();
        h.insert(tributary_wire::NATS_MSG_ID_HEADER, "order-42");
        assert!(undecodable("", Some(&h), b"hello"));
    }

    #[test]
    fn a_passthrough_route_or_a_passthrough_header_passes_any_bytes_through() {
        let passthrough = "[kafka]\nencoding = \"passthrough\"\n";
        assert!(!undecodable(passthrough, None, b"hello"));
        let mut h = HeaderMap::new();
        h.insert("tributary-passthrough", "1");
        assert!(!undecodable("", Some(&h), b"hello"));
        let mut out = Records::default();
        convert(&router(""), "x.y", Some(&h), b"hello", 1 << 20, &mut out).unwrap();
        let r = out.get(0).unwrap();
        assert_eq!((r.payload, out.readings()), (&b"hello"[..], 0));
        assert_eq!(r.header("tributary-passthrough"), Some(&b"1"[..]));
    }

    #[test]
    fn a_dead_letter_that_fits_keeps_its_payload_and_no_truncation_headers() {
        let out = dead(b"abc", &DeadReason::Rejected("no".into()), 1 << 10);
        let d = out.get(0).unwrap();
        assert_eq!(d.payload, b"abc");
        assert_eq!(d.key.map(|k| &**k), Some(&b"x.y"[..]));
        assert_eq!(&**d.topic, "dlq");
        assert_eq!(d.header(DLQ_STREAM_SEQ_HEADER), Some(&b"42"[..]));
        assert_eq!(d.header(DLQ_SUBJECT_HEADER), Some(&b"x.y"[..]));
        assert_eq!(d.header(DLQ_SIZE_HEADER), None);
        assert_eq!(d.header(DLQ_TRUNCATED_HEADER), None);
    }

    #[test]
    fn an_oversized_dead_letter_keeps_the_first_bytes_that_fit_and_says_so() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let reason = DeadReason::Oversized {
            bytes: payload.len(),
            limit: 4096,
        };
        let out = dead(&payload, &reason, 4096);
        let d = out.get(0).unwrap();
        assert!(payload.starts_with(d.payload));
        assert!(d.payload.len() > 3000, "{}", d.payload.len());
        assert!(framed_len(&out) <= 4096, "{}", framed_len(&out));
        assert_eq!(d.header(DLQ_TRUNCATED_HEADER), Some(&b"true"[..]));
        assert_eq!(d.header(DLQ_SIZE_HEADER), Some(&b"10000"[..]));
        assert!(
            std::str::from_utf8(d.header(DLQ_REASON_HEADER).unwrap())
                .unwrap()
                .starts_with("oversized")
        );
    }

    #[test]
    fn a_payload_that_fits_only_without_room_for_the_truncation_headers_is_truncated() {
        let reason = DeadReason::Rejected("no".into());
        let empty = framed_len(&dead(b"", &reason, 4096));
        // Exactly as big as the limit allows without the truncation headers.
        let payload = vec![7u8; 4096 - empty];
        let out = dead(&payload, &reason, 4096);
        let d = out.get(0).unwrap();
        assert_eq!(d.header(DLQ_TRUNCATED_HEADER), Some(&b"true"[..]));
        assert!(framed_len(&out) <= 4096, "{}", framed_len(&out));
        assert!(d.payload.len() < payload.len());
    }

    #[test]
    fn a_limit_smaller_than_the_headers_keeps_no_bytes_but_still_says_how_many_there_were() {
        let out = dead(b"abcdef", &DeadReason::Rejected("no".into()), 10);
        let d = out.get(0).unwrap();
        assert!(d.payload.is_empty());
        assert_eq!(d.header(DLQ_SIZE_HEADER), Some(&b"6"[..]));
    }

    #[test]
    fn a_refusal_is_remembered_until_taken_or_forgotten_and_the_memory_is_bounded() {
        let mut refused = Refused::default();
        refused.remember(7, "Broker: Invalid record");
        refused.remember(7, "Broker: Invalid record");
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused.take(7),
            Some(DeadReason::Rejected("Broker: Invalid record".into()))
        );
        assert_eq!(refused.take(7), None);
        refused.remember(8, "no");
        refused.forget(8);
        assert!(refused.is_empty());
        for seq in 0..(MAX_REFUSED as u64 + 10) {
            refused.remember(seq, "no");
        }
        assert_eq!(refused.len(), MAX_REFUSED);
        assert_eq!(refused.take(0), None, "the oldest went first");
        assert!(refused.take(MAX_REFUSED as u64 + 9).is_some());
    }
}
