//! The link's memory: messages cut but not yet on disk, in cut order.
//!
//! Each entry is waiting (not published), in flight (published, ack
//! pending) or acknowledged. Acknowledged entries leave as soon as they
//! reach the front; an entry acknowledged before the next spill therefore
//! never touches the disk. Published entries always precede waiting ones
//! (publishing goes in order and a failure makes every entry waiting
//! again), which is what lets a spill hand the in-flight prefix out at once.

use crate::batcher::Message;
use crate::buffer_owner::SpillRecord;
use std::collections::VecDeque;
use tokio::time::Instant;

/// Where a memory entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryState {
    Waiting,
    InFlight,
    Acked,
}

#[derive(Debug)]
struct Entry {
    token: u64,
    message: Message,
    state: EntryState,
}

/// Messages not yet durable, oldest first. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Memory {
    entries: VecDeque<Entry>,
    next_token: u64,
    /// Index of the first waiting entry.
    next_waiting: usize,
    bytes: usize,
}

impl Memory {
    /// Adds a freshly cut message (waiting).
    pub fn push(&mut self, message: Message) {
        self.bytes += message.bytes.len();
        self.entries.push_back(Entry {
            token: self.next_token,
            message,
            state: EntryState::Waiting,
        });
        self.next_token += 1;
    }

    /// Entries held (any state).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Encoded bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The next waiting entry, now marked in flight: its token and message.
    pub fn publish_next(&mut self) -> Option<(u64, &Message)> {
        let e = self.entries.get_mut(self.next_waiting)?;
        debug_assert_eq!(e.state, EntryState::Waiting);
        e.state = EntryState::InFlight;
        self.next_waiting += 1;
        Some((e.token, &e.message))
    }

    /// Whether a waiting entry exists.
    pub fn has_waiting(&self) -> bool {
        self.next_waiting < self.entries.len()
    }

    /// Marks the entry `token` acknowledged; false if it is not held (it
    /// was spilled meanwhile).
    pub fn ack(&mut self, token: u64) -> bool {
        let Some(i) = self.index(token) else {
            return false;
        };
        self.entries[i].state = EntryState::Acked;
        while self
            .entries
            .front()
            .is_some_and(|e| e.state == EntryState::Acked)
        {
            let e = self.entries.pop_front().expect("checked");
            self.bytes -= e.message.bytes.len();
            self.next_waiting = self.next_waiting.saturating_sub(1);
        }
        true
    }

    fn index(&self, token: u64) -> Option<usize> {
        let first = self.entries.front()?.token;
        let i = usize::try_from(token.checked_sub(first)?).ok()?;
        (i < self.entries.len()).then_some(i)
    }

    /// Every entry waits again (after a failure dropped the window).
    pub fn reset_to_waiting(&mut self) {
        self.entries.retain(|e| e.state != EntryState::Acked);
        for e in &mut self.entries {
            e.state = EntryState::Waiting;
        }
        self.next_waiting = 0;
        self.bytes = self.entries.iter().map(|e| e.message.bytes.len()).sum();
    }

    /// When the oldest unacknowledged entry was taken: the spill deadline
    /// counts from it. Entries are in cut order, which is the order their
    /// first readings arrived in, and the front is never acknowledged (an
    /// acknowledged front leaves at once), so the front is the oldest.
    pub fn oldest_taken_at(&self) -> Option<Instant> {
        let front = self.entries.front()?;
        debug_assert_ne!(front.state, EntryState::Acked);
        Some(front.message.taken_at)
    }

    /// The unacknowledged entries as spill records (in flight first, in
    /// order), with their tokens.
    pub fn spill_records(&self) -> Vec<(u64, SpillRecord)> {
        self.entries
            .iter()
            .filter(|e| e.state != EntryState::Acked)
            .map(|e| {
                (
                    e.token,
                    SpillRecord {
                        bytes: e.message.bytes.clone(),
                        readings: e.message.readings,
                        in_flight: e.state == EntryState::InFlight,
                    },
                )
            })
            .collect()
    }

    /// Removes the first `n` unacknowledged entries (they are on disk now),
    /// dropping acknowledged ones among them.
    pub fn remove_spilled(&mut self, n: usize) {
        let mut left = n;
        while left > 0 {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= e.message.bytes.len();
            if e.state != EntryState::Acked {
                left -= 1;
            }
        }
        while self
            .entries
            .front()
            .is_some_and(|e| e.state == EntryState::Acked)
        {
            let e = self.entries.pop_front().expect("checked");
            self.bytes -= e.message.bytes.len();
        }
        self.next_waiting = self
            .entries
            .iter()
            .position(|e| e.state == EntryState::Waiting)
            .unwrap_or(self.entries.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(text: &str) -> Message {
        Message {
            bytes: Bytes::copy_from_slice(text.as_bytes()),
            subject: "t.d.s".into(),
            msg_id: text.into(),
            readings: 1,
            taken_at: Instant::now(),
            first_timestamp_ns: 0,
        }
    }

    fn texts(records: &[(u64, SpillRecord)]) -> Vec<(String, bool)> {
        records
            .iter()
            .map(|(_, r)| (String::from_utf8_lossy(&r.bytes).into_owned(), r.in_flight))
            .collect()
    }

    #[test]
    fn acknowledged_entries_leave_and_never_reach_a_spill() {
        let mut m = Memory::default();
        for t in ["a", "b", "c"] {
            m.push(message(t));
        }
        let (ta, _) = m.publish_next().expect("a");
        let (tb, _) = m.publish_next().expect("b");
        assert!(m.ack(tb));
        assert_eq!(m.len(), 3, "b waits behind a");
        assert!(m.ack(ta));
        assert_eq!(m.len(), 1);
        assert_eq!(m.bytes(), 1);
        assert_eq!(texts(&m.spill_records()), vec![("c".into(), false)]);
        assert!(m.has_waiting());
    }

    #[test]
    fn a_spill_lists_the_in_flight_prefix_before_the_waiting_rest() {
        let mut m = Memory::default();
        for t in ["a", "b", "c"] {
            m.push(message(t));
        }
        m.publish_next();
        m.publish_next();
        assert_eq!(
            texts(&m.spill_records()),
            vec![("a".into(), true), ("b".into(), true), ("c".into(), false)]
        );
        m.reset_to_waiting();
        assert_eq!(
            texts(&m.spill_records()),
            vec![
                ("a".into(), false),
                ("b".into(), false),
                ("c".into(), false)
            ],
            "after a failure (or at shutdown) nothing is in flight"
        );
    }

    #[test]
    fn removing_spilled_entries_keeps_the_ones_cut_after_the_spill() {
        let mut m = Memory::default();
        for t in ["a", "b"] {
            m.push(message(t));
        }
        let (ta, _) = m.publish_next().expect("a");
        let spill = m.spill_records();
        m.push(message("c"));
        m.remove_spilled(spill.len());
        assert!(!m.ack(ta), "a is on disk now");
        assert_eq!(texts(&m.spill_records()), vec![("c".into(), false)]);
        let (_, next) = m.publish_next().expect("c");
        assert_eq!(&next.bytes[..], b"c");
    }

    #[test]
    fn a_failure_makes_every_unacknowledged_entry_wait_again_in_order() {
        let mut m = Memory::default();
        for t in ["a", "b", "c"] {
            m.push(message(t));
        }
        let (_, _) = m.publish_next().expect("a");
        let (tb, _) = m.publish_next().expect("b");
        m.ack(tb);
        m.reset_to_waiting();
        let order: Vec<String> = std::iter::from_fn(|| {
            m.publish_next()
                .map(|(_, msg)| String::from_utf8_lossy(&msg.bytes).into_owned())
        })
        .collect();
        assert_eq!(order, vec!["a", "c"]);
    }
}
