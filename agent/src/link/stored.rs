//! What the hub already holds of this device's messages, and from where to
//! look for it: the [`StoredMessages`] a read back found, and the
//! [`ReadBackPoint`] kept in the state directory across restarts.
//!
//! # Why
//!
//! The hub drops a resent message by its `Nats-Msg-Id` only within the
//! stream's duplicate window (2 min by default). A message stored whose ack
//! was lost, then resent after a longer outage (or after the agent was down
//! longer), would be a second stream message, and even the exactly-once
//! uplink (which dedupes by stream sequence) would write it to Kafka twice.
//! So before resending, the link reads back which of its messages the
//! stream holds from the read-back point on, and skips those.
//!
//! # Why the agent, not the uplink
//!
//! The other shape would be the uplink keeping, per device, the sequence
//! ranges it delivered, in durable state. The agent was chosen because:
//!
//! * each device holds only its own state, so the cost grows with nothing
//!   at the centre (100,000 devices mean 100,000 small read backs spread
//!   over their own reconnects, not one table every uplink replica must
//!   persist atomically with its Kafka writes);
//! * the stream itself stays free of duplicates, so both uplink modes, and
//!   any other consumer of the stream, see each message once;
//! * it needs no new durable state at the centre, only a permission per
//!   device (`cross/hub/device-user.conf`) that holds a device to reading
//!   its own subjects.
//!
//! What it costs: one consumer creation and a headers-only read of the
//! device's own messages since the point, after each failure and at start.
//! What it does not cover: an agent whose read back the hub stops
//! answering part way, or refuses, resends everything (one that gets no
//! answer at all waits for the hub instead: see [`super::readback`]); and a
//! message still travelling when the read back runs (not yet stored, stored
//! right after) is not known to it — the duplicate window covers that
//! case, since such a resend follows within seconds.
//!
//! A message is held when the read back found its exact id: the seqs of one
//! cut are shared by all sensors, so an id's `first+count` is not a range of
//! that message's seqs (see [`StoredMessages`]).
//!
//! # The read-back point
//!
//! A stream sequence below every message of this device that the hub may
//! hold unacknowledged. The link takes it at a *clean moment* — nothing in
//! flight, nothing waiting, nothing unread on disk — as the highest stream
//! sequence acknowledged so far: every message published later is stored
//! after it. The file is written only after the buffer made the
//! acknowledgements up to that moment durable
//! ([`crate::buffer_owner::BufferHandle::persist`]): the ack cursor is
//! otherwise written by the next spill, and a record acknowledged before the
//! point but back from the buffer after a crash would be resent past it.
//! An older point is still correct (the read back just covers more), so the
//! file is written seldom and a stale copy after a power cut only makes the
//! next read back longer.
//!
//! On disk it is [`super::point_file`]: two slots overwritten in place
//! (version 2), or the text file of version 1 that older agents wrote.

use std::collections::HashSet;

/// The messages of this device the hub holds, by their id's
/// `(epoch, first seq, count)`; a resend carries the same id (messages are
/// cut once).
///
/// Exact ids, not seq ranges: a message's readings are one sensor's, and
/// the seqs of a cut are shared by every sensor, so a message `100+2` may
/// hold seqs 100 and 104 while 101 is another sensor's message. Treating
/// `100+2` as the range 100..102 took that other message for held, and it
/// was never sent (one reading lost in a 10-minute soak).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoredMessages {
    ids: HashSet<(u64, u64, u64)>,
}

/// The `(epoch, first seq, count)` of a message id
/// `device:epoch:first_seq+count`; `None` for any other id (command
/// outcomes have their own).
pub fn parse_msg_id(id: &str) -> Option<(u64, u64, u64)> {
    let (rest, range) = id.rsplit_once(':')?;
    let (_device, epoch) = rest.rsplit_once(':')?;
    let (first, count) = range.split_once('+')?;
    let (first, count): (u64, u64) = (first.parse().ok()?, count.parse().ok()?);
    (count > 0 && first.checked_add(count).is_some()).then_some(())?;
    Some((epoch.parse().ok()?, first, count))
}

impl StoredMessages {
    /// Records that the hub holds the message `msg_id`; false if the id is
    /// not a readings message id.
    pub fn insert_msg_id(&mut self, msg_id: &str) -> bool {
        parse_msg_id(msg_id).is_some_and(|id| {
            self.ids.insert(id);
            true
        })
    }

    /// Whether the hub holds the message `msg_id` (as the read back found).
    pub fn contains_msg_id(&self, msg_id: &str) -> bool {
        parse_msg_id(msg_id).is_some_and(|id| self.ids.contains(&id))
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Distinct messages held (as found by the read back).
    pub fn messages(&self) -> u64 {
        self.ids.len() as u64
    }
}

/// A stream sequence below every message of this device the hub may hold
/// unacknowledged, in the stream named. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBackPoint {
    /// The stream the device's readings are stored in (from its acks).
    pub stream: String,
    /// The highest stream sequence acknowledged at a clean moment.
    pub seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_readings_message_id_parses_and_others_do_not() {
        assert_eq!(parse_msg_id("pi-1:7:100+5"), Some((7, 100, 5)));
        assert_eq!(parse_msg_id("a:b:c:7:100+5"), Some((7, 100, 5)));
        for id in [
            "",
            "pi-1:7:100",
            "pi-1:x:1+1",
            "7:1+1",
            "pi:7:1+0",
            "pi:7:+1",
        ] {
            assert_eq!(parse_msg_id(id), None, "{id}");
        }
    }

    #[test]
    fn a_message_whose_id_spans_another_sensors_seq_does_not_make_that_one_held() {
        // One cut: seqs 100..106 over two sensors, a at 100, 102, 104 and b
        // at 101, 103, 105. The hub holds a's message only.
        let mut held = StoredMessages::default();
        assert!(held.insert_msg_id("d:1:100+3"));
        assert!(held.contains_msg_id("d:1:100+3"));
        assert!(
            !held.contains_msg_id("d:1:101+3"),
            "b's message is not held"
        );
        assert!(!held.contains_msg_id("d:1:101+1"));
        assert!(!held.contains_msg_id("d:1:100+2"), "another count");
        assert!(!held.contains_msg_id("d:2:100+3"), "another epoch");
        assert!(!held.insert_msg_id("outcome:d:c-1"));
        assert!(held.insert_msg_id("d:1:100+3"), "a resend's copy");
        assert_eq!(held.messages(), 1);
    }

    proptest! {
        #[test]
        fn a_message_is_held_exactly_when_its_id_was_found(
            found in proptest::collection::vec((0u64..3, 0u64..200, 1u64..6), 0..60),
            probes in proptest::collection::vec((0u64..3, 0u64..210, 1u64..8), 0..60),
        ) {
            let mut held = StoredMessages::default();
            let mut model = BTreeSet::new();
            for &(epoch, first, count) in &found {
                held.insert_msg_id(&format!("dev:{epoch}:{first}+{count}"));
                model.insert((epoch, first, count));
            }
            prop_assert_eq!(held.messages(), model.len() as u64);
            for (epoch, first, count) in probes.into_iter().chain(found) {
                prop_assert_eq!(
                    held.contains_msg_id(&format!("dev:{epoch}:{first}+{count}")),
                    model.contains(&(epoch, first, count))
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_id_text_parses_or_is_refused_and_an_inserted_one_is_held(id in ".{0,64}") {
            let mut held = StoredMessages::default();
            if held.insert_msg_id(&id) {
                prop_assert!(held.contains_msg_id(&id));
            }
        }
    }
}
