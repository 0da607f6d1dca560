//! Which JetStream messages have every Kafka write confirmed: the ledger
//! between the drain loop and the producer's delivery reports.
//!
//! Each message being written holds a [`Ticket`], a slot in the ledger.
//! Every record written for it carries the ticket as its delivery opaque
//! (a plain integer: nothing is allocated per record), and librdkafka's
//! delivery report, on the producer's polling thread, settles it
//! ([`Ledger::settle`]): counted as confirmed, or its first error kept.
//! Once the drain loop has sent all of a message's records it seals the
//! ticket with their number and the message ([`Ledger::seal`]); the
//! message is done when as many reports as writes came back, whichever
//! came first. Done messages queue up for the drain loop, which is woken
//! once per batch ([`Ledger::notified`], [`Ledger::take_done`]).
//!
//! This replaces one future (a boxed oneshot channel) per record, which
//! cost the uplink more CPU than everything else it does per record
//! except librdkafka itself (see the drain benchmark).

use rdkafka::error::KafkaError;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;
use tokio::sync::Notify;

/// A message's slot in the [`Ledger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u32);

impl Ticket {
    /// The delivery opaque of the message's records.
    pub fn opaque(self) -> usize {
        self.0 as usize
    }
}

/// How a message's writes ended.
#[derive(Debug)]
pub struct Outcome {
    /// Writes Kafka confirmed.
    pub confirmed: u32,
    /// The first write that failed, if any did.
    pub error: Option<KafkaError>,
    /// When the ticket was opened.
    pub opened: Instant,
}

/// In-flight messages of type `T` and their writes' outcomes.
#[derive(Debug)]
pub struct Ledger<T> {
    inner: Mutex<Inner<T>>,
    ready: Notify,
}

#[derive(Debug)]
struct Inner<T> {
    slots: Vec<Slot<T>>,
    /// Slots free for reuse.
    free: Vec<u32>,
    /// Sealed slots whose writes all came back, oldest first.
    done: Vec<u32>,
    /// Messages sealed and not yet taken.
    in_flight: usize,
}

#[derive(Debug)]
struct Slot<T> {
    /// The message, from sealing until taken; `None` when the ticket was
    /// abandoned.
    item: Option<T>,
    /// Writes sealed minus reports settled: negative while reports come
    /// in before the seal, zero when everything came back.
    balance: i64,
    sealed: bool,
    confirmed: u32,
    error: Option<KafkaError>,
    opened: Instant,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Ledger {
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                free: Vec::new(),
                done: Vec::new(),
                in_flight: 0,
            }),
            ready: Notify::new(),
        }
    }
}

impl<T> Ledger<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Nothing panics while holding the lock; a poisoned one is as good.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a ticket for a message whose records are about to be written.
    pub fn open(&self) -> Ticket {
        let mut inner = self.lock();
        let slot = Slot {
            item: None,
            balance: 0,
            sealed: false,
            confirmed: 0,
            error: None,
            opened: Instant::now(),
        };
        match inner.free.pop() {
            Some(i) => {
                inner.slots[i as usize] = slot;
                Ticket(i)
            }
            None => {
                let i = u32::try_from(inner.slots.len())
                    .expect("fewer than 2^32 messages in flight (bounded by max_ack_pending)");
                inner.slots.push(slot);
                Ticket(i)
            }
        }
    }

    /// Records one write's delivery report. Called by the producer's
    /// delivery callback with the record's opaque; an opaque that is no
    /// ticket is ignored.
    pub fn settle(&self, opaque: usize, result: Result<(), &KafkaError>) {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.get_mut(opaque) else {
            return;
        };
        slot.balance -= 1;
        match result {
            Ok(()) => slot.confirmed += 1,
            Err(e) => {
                slot.error.get_or_insert_with(|| e.clone());
            }
        }
        if slot.sealed && slot.balance == 0 {
            self.finish(&mut inner, opaque);
        }
    }

    /// Seals `ticket` after `writes` records were handed to the producer
    /// for `item`. With no writes, the message is done at once.
    pub fn seal(&self, ticket: Ticket, writes: u32, item: T) {
        self.close(ticket, writes, Some(item));
    }

    /// Gives up on `ticket` after `writes` records were handed to the
    /// producer: nobody waits for them, and the slot is reused once their
    /// reports came back.
    pub fn abandon(&self, ticket: Ticket, writes: u32) {
        self.close(ticket, writes, None);
    }

    /// Seals `ticket` with `writes` expected reports, for `item` (counted
    /// in flight until taken) or for nobody.
    fn close(&self, ticket: Ticket, writes: u32, item: Option<T>) {
        let mut inner = self.lock();
        if item.is_some() {
            inner.in_flight += 1;
        }
        let i = ticket.opaque();
        let slot = &mut inner.slots[i];
        slot.balance += i64::from(writes);
        slot.sealed = true;
        slot.item = item;
        if slot.balance == 0 {
            self.finish(&mut inner, i);
        }
    }

    /// A sealed slot's writes all came back.
    fn finish(&self, inner: &mut Inner<T>, i: usize) {
        let index = u32::try_from(i).expect("slot indexes fit in u32");
        if inner.slots[i].item.is_some() {
            inner.done.push(index);
            self.ready.notify_one();
        } else {
            inner.free.push(index);
        }
    }

    /// Resolves when messages may be done (at once if some finished since
    /// the last [`take_done`](Self::take_done)).
    pub async fn notified(&self) {
        self.ready.notified().await;
    }

    /// Moves the done messages, oldest first, with their outcomes into
    /// `out`, and frees their slots.
    pub fn take_done(&self, out: &mut Vec<(T, Outcome)>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.in_flight -= inner.done.len();
        for i in inner.done.drain(..) {
            let slot = &mut inner.slots[i as usize];
            let item = slot.item.take().expect("a done slot holds its message");
            out.push((
                item,
                Outcome {
                    confirmed: slot.confirmed,
                    error: slot.error.take(),
                    opened: slot.opened,
                },
            ));
            inner.free.push(i);
        }
    }

    /// Takes one sealed message whose ticket was opened before `before`
    /// and whose writes have not all come back, with its outcome so far.
    /// Its slot is reused once the missing reports came back.
    pub fn take_stalled(&self, before: Instant) -> Option<(T, Outcome)> {
        let mut inner = self.lock();
        let slot = inner
            .slots
            .iter_mut()
            .find(|s| s.sealed && s.balance > 0 && s.item.is_some() && s.opened < before)?;
        let item = slot.item.take().expect("checked above");
        let outcome = Outcome {
            confirmed: slot.confirmed,
            error: slot.error.clone(),
            opened: slot.opened,
        };
        inner.in_flight -= 1;
        Some((item, outcome))
    }

    /// Messages sealed and not yet taken.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;
    use std::time::Duration;

    fn timed_out() -> KafkaError {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
    }

    fn done(ledger: &Ledger<&'static str>) -> Vec<(&'static str, u32, bool)> {
        let mut out = Vec::new();
        ledger.take_done(&mut out);
        out.into_iter()
            .map(|(m, o)| (m, o.confirmed, o.error.is_some()))
            .collect()
    }

    #[test]
    fn a_message_is_done_when_every_write_came_back_after_the_seal() {
        let ledger = Ledger::default();
        let t = ledger.open();
        ledger.seal(t, 3, "m");
        ledger.settle(t.opaque(), Ok(()));
        ledger.settle(t.opaque(), Ok(()));
        assert!(done(&ledger).is_empty());
        assert_eq!(ledger.in_flight(), 1);
        ledger.settle(t.opaque(), Ok(()));
        assert_eq!(done(&ledger), vec![("m", 3, false)]);
        assert_eq!(ledger.in_flight(), 0);
    }

    #[test]
    fn reports_that_come_before_the_seal_count_and_the_seal_finishes_it() {
        let ledger = Ledger::default();
        let t = ledger.open();
        ledger.settle(t.opaque(), Ok(()));
        ledger.settle(t.opaque(), Ok(()));
        assert!(done(&ledger).is_empty(), "not done before it is sealed");
        ledger.seal(t, 2, "m");
        assert_eq!(done(&ledger), vec![("m", 2, false)]);
    }

    #[test]
    fn a_message_without_writes_is_done_at_the_seal() {
        let ledger = Ledger::default();
        let t = ledger.open();
        ledger.seal(t, 0, "m");
        assert_eq!(done(&ledger), vec![("m", 0, false)]);
    }

    #[test]
    fn the_first_error_is_kept_and_the_rest_still_counted() {
        let ledger = Ledger::default();
        let t = ledger.open();
        ledger.seal(t, 3, "m");
        ledger.settle(t.opaque(), Err(&timed_out()));
        ledger.settle(
            t.opaque(),
            Err(&KafkaError::MessageProduction(
                RDKafkaErrorCode::InvalidRecord,
            )),
        );
        ledger.settle(t.opaque(), Ok(()));
        let mut out = Vec::new();
        ledger.take_done(&mut out);
        let (_, outcome) = out.pop().unwrap();
        assert_eq!(outcome.confirmed, 1);
        assert_eq!(
            outcome.error.and_then(|e| e.rdkafka_error_code()),
            Some(RDKafkaErrorCode::MessageTimedOut)
        );
    }

    #[test]
    fn messages_come_out_in_the_order_they_finished_and_slots_are_reused() {
        let ledger = Ledger::default();
        let a = ledger.open();
        let b = ledger.open();
        ledger.seal(a, 1, "a");
        ledger.seal(b, 1, "b");
        ledger.settle(b.opaque(), Ok(()));
        ledger.settle(a.opaque(), Ok(()));
        assert_eq!(done(&ledger), vec![("b", 1, false), ("a", 1, false)]);
        let c = ledger.open();
        assert!(c == a || c == b, "a freed slot is reused");
    }

    #[test]
    fn an_abandoned_ticket_is_never_done_and_its_slot_waits_for_its_reports() {
        let ledger = Ledger::default();
        let t = ledger.open();
        ledger.abandon(t, 2);
        ledger.settle(t.opaque(), Ok(()));
        let other = ledger.open();
        assert_ne!(other, t, "the slot still expects a report");
        ledger.settle(t.opaque(), Ok(()));
        assert!(done(&ledger).is_empty());
        assert_eq!(ledger.in_flight(), 0);
        assert_eq!(ledger.open(), t, "free after its last report");
    }

    #[test]
    fn a_stalled_message_is_taken_once_and_its_late_reports_do_no_harm() {
        let ledger = Ledger::default();
        let t = ledger.open();
        ledger.seal(t, 2, "slow");
        ledger.settle(t.opaque(), Ok(()));
        let later = Instant::now() + Duration::from_secs(1);
        assert!(ledger.take_stalled(t_opened_before()).is_none());
        let (m, outcome) = ledger.take_stalled(later).expect("stalled");
        assert_eq!((m, outcome.confirmed), ("slow", 1));
        assert_eq!(ledger.in_flight(), 0);
        assert!(ledger.take_stalled(later).is_none(), "taken once");
        ledger.settle(t.opaque(), Ok(()));
        assert!(
            done(&ledger).is_empty(),
            "a taken message is not done again"
        );
        assert_eq!(ledger.open(), t, "its slot is free after the last report");
    }

    fn t_opened_before() -> Instant {
        Instant::now() - Duration::from_secs(3600)
    }

    #[test]
    fn an_unknown_opaque_is_ignored() {
        let ledger: Ledger<&str> = Ledger::default();
        ledger.settle(7, Ok(()));
        assert_eq!(ledger.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_waiter_is_woken_when_a_message_is_done() {
        let ledger = std::sync::Arc::new(Ledger::default());
        let t = ledger.open();
        ledger.seal(t, 1, "m");
        let l = ledger.clone();
        let reporter = std::thread::spawn(move || l.settle(t.opaque(), Ok(())));
        tokio::time::timeout(Duration::from_secs(10), ledger.notified())
            .await
            .expect("woken");
        reporter.join().unwrap();
        assert_eq!(done(&ledger), vec![("m", 1, false)]);
    }

    /// One step of the property test: message `m` is sealed, or one of its
    /// writes is reported (confirmed or not).
    #[derive(Debug, Clone, Copy)]
    enum Event {
        Seal(usize),
        Report(usize, bool),
    }

    use proptest::strategy::{Just, Strategy};

    proptest::proptest! {
        /// Against a model: whatever the order of seals and reports, every
        /// message is done exactly once, only after its seal and all its
        /// reports, with the confirmed count and error the reports say.
        #[test]
        fn every_message_is_done_once_after_its_seal_and_reports_in_any_order(
            (reports, events) in proptest::collection::vec(
                proptest::collection::vec(proptest::bool::weighted(0.8), 0..4),
                1..8,
            )
            .prop_flat_map(|reports| {
                let mut events = Vec::new();
                for (m, rs) in reports.iter().enumerate() {
                    events.push(Event::Seal(m));
                    events.extend(rs.iter().map(|ok| Event::Report(m, *ok)));
                }
                (Just(reports), Just(events).prop_shuffle())
            })
        ) {
            let ledger: Ledger<usize> = Ledger::default();
            let tickets: Vec<Ticket> = reports.iter().map(|_| ledger.open()).collect();
            let mut applied = vec![0usize; reports.len()];
            let mut done_at: Vec<Option<(u32, bool)>> = vec![None; reports.len()];
            let mut out = Vec::new();
            for event in events {
                match event {
                    Event::Seal(m) => {
                        let writes = u32::try_from(reports[m].len()).unwrap();
                        ledger.seal(tickets[m], writes, m);
                        applied[m] += 1;
                    }
                    Event::Report(m, ok) => {
                        let err = timed_out();
                        ledger.settle(tickets[m].opaque(), if ok { Ok(()) } else { Err(&err) });
                        applied[m] += 1;
                    }
                }
                ledger.take_done(&mut out);
                for (m, outcome) in out.drain(..) {
                    proptest::prop_assert!(done_at[m].is_none(), "message {} done twice", m);
                    proptest::prop_assert_eq!(applied[m], reports[m].len() + 1, "done early");
                    done_at[m] = Some((outcome.confirmed, outcome.error.is_some()));
                }
            }
            for (m, rs) in reports.iter().enumerate() {
                let confirmed = u32::try_from(rs.iter().filter(|ok| **ok).count()).unwrap();
                proptest::prop_assert_eq!(done_at[m], Some((confirmed, rs.contains(&false))));
            }
            proptest::prop_assert_eq!(ledger.in_flight(), 0);
        }
    }
}
