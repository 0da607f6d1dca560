//! The link's *reconciling* state and what it keeps for it: before a
//! resend (after a failure, and at start), the link reads back which of its
//! messages the hub already holds and skips them (see [`super::stored`]
//! for why and for the read-back point).

use super::publish::{Publisher, ReadBackError, Stored};
use super::stored::{ReadBackPoint, StoredMessages};
use super::{Event, Link, LinkError, State, Step};
use crate::batcher::Message;
use crate::buffer_owner::BufferHandle;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_config::logging::ratelimit::{Decision, LOG_EVERY, Window};

/// A read back taking longer is given up (and tried again, up to
/// [`READ_BACK_TRIES`] times in a row).
pub(super) const READ_BACK_DEADLINE: Duration = Duration::from_secs(30);
/// A read back the hub stops answering part way (or refuses, or answers
/// with what does not parse) is tried again after the link's backoff, this
/// many times in a row, before the link gives up and resends everything: a
/// resend beyond the hub's duplicate window would store the messages twice,
/// and the buffer keeps them safe meanwhile. A refusal or an answer that does
/// not parse is not tried again (the hub will answer the same).
///
/// A read back whose first request gets no answer at all
/// ([`ReadBackError::Unreachable`]: the hub or the link to it is away) does
/// not count: it is tried again after the backoff for as long as the outage
/// lasts, since a resend could not be stored either, and giving up after a
/// few tries made every outage longer than those tries a duplicate.
pub(super) const READ_BACK_TRIES: u32 = 5;
/// The read-back point file is rewritten at most this often (an older
/// point is still correct; see [`super::stored`]).
const SAVE_EVERY: Duration = Duration::from_secs(30);

/// The link's read-back bookkeeping.
#[derive(Debug, Default)]
pub(super) struct ReadBack {
    /// The highest stream sequence acknowledged in this run.
    high: Option<ReadBackPoint>,
    /// The point of the last clean moment (or the one saved by the last run).
    point: Option<ReadBackPoint>,
    /// A read back is due before the next resend.
    due: bool,
    /// What the last read back found; forgotten at the next clean moment.
    pub found: StoredMessages,
    /// Where the point is saved; `None`: nowhere.
    dir: Option<PathBuf>,
    saved: Option<ReadBackPoint>,
    saved_at: Option<Instant>,
    saving: Option<JoinHandle<()>>,
    /// Failed saves in a row, logged at most once per [`LOG_EVERY`].
    save_log: Arc<Mutex<Window>>,
    /// Read backs that failed in a row (reset by one that succeeds).
    failures: u32,
    /// Read backs in a row whose first request got no answer (not counted
    /// in `failures`; reset by one that succeeds).
    unreachable: u32,
}

impl ReadBack {
    /// Loads the point the last run saved in `dir` (blocking work off the
    /// runtime thread); a read back is due at start when there is one.
    pub async fn open(dir: Option<PathBuf>) -> ReadBack {
        let loaded = match dir.clone() {
            Some(d) => tokio::task::spawn_blocking(move || ReadBackPoint::load(&d))
                .await
                .unwrap_or(Ok(None)),
            None => Ok(None),
        };
        let point = loaded.unwrap_or_else(|e| {
            tracing::warn!(
                error = %crate::error_chain(&e),
                "read-back point ignored; a resend after a long outage may duplicate"
            );
            None
        });
        ReadBack {
            due: point.is_some(),
            saved: point.clone(),
            point,
            dir,
            ..ReadBack::default()
        }
    }

    /// Whether the link should read back before resending.
    pub fn wanted(&self) -> bool {
        self.due && self.point.is_some()
    }

    /// A failure dropped messages in flight: read back before resending.
    pub fn failed(&mut self) {
        self.due = true;
    }

    /// An acknowledgement: the hub stored a message there.
    pub fn on_stored(&mut self, s: Stored) {
        match &mut self.high {
            Some(h) if h.stream == s.stream => h.seq = h.seq.max(s.seq),
            high => {
                *high = Some(ReadBackPoint {
                    stream: s.stream,
                    seq: s.seq,
                })
            }
        }
    }

    /// Nothing is in flight, waiting or unread: every later message is
    /// stored after the highest sequence acknowledged so far. A point saved
    /// now waits for `buffer` to make its acknowledgements durable first: a
    /// record acknowledged before the point must not come back from the
    /// buffer after a crash, since the next run's read back starts after it
    /// (it did, and 10-minute soaks resent such records into the stream a
    /// second time).
    pub fn clean(&mut self, buffer: &BufferHandle) {
        if self.high.is_none() || self.high == self.point {
            return;
        }
        self.point = self.high.clone();
        if !self.found.is_empty() {
            self.found = StoredMessages::default();
        }
        let quiet = self.saved_at.is_none_or(|at| at.elapsed() >= SAVE_EVERY);
        let idle = self.saving.as_ref().is_none_or(|h| h.is_finished());
        if quiet && idle {
            self.saving = self.save(Some(buffer.clone()));
        }
    }

    /// Saves the point now and waits for it (at shutdown, after the
    /// buffer's close made its cursor durable).
    pub async fn finish(&mut self) {
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
        // The save just awaited may have been skipped (its persist came
        // after the buffer's close): write the point whatever `saved` says.
        self.saved = None;
        if let Some(h) = self.save(None) {
            let _ = h.await;
        }
    }

    /// Writes the point in the background, after `persist_first` (when
    /// given) made every acknowledgement so far durable; skipped, keeping
    /// the older file, when that fails.
    fn save(&mut self, persist_first: Option<BufferHandle>) -> Option<JoinHandle<()>> {
        let dir = self.dir.clone()?;
        let point = self.point.clone()?;
        if self.saved.as_ref() == Some(&point) {
            return None;
        }
        self.saved = Some(point.clone());
        self.saved_at = Some(Instant::now());
        let log = self.save_log.clone();
        Some(tokio::spawn(async move {
            if let Some(buffer) = persist_first
                && buffer.persist().await.is_err()
            {
                return;
            }
            let saved = tokio::task::spawn_blocking(move || point.save(&dir)).await;
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            match saved {
                Ok(Err(e)) => {
                    if let Decision::Log { suppressed } =
                        log.decide(std::time::Instant::now(), LOG_EVERY)
                    {
                        tracing::warn!(
                            error = %crate::error_chain(&e),
                            suppressed,
                            "cannot save the read-back point"
                        );
                    }
                }
                Ok(Ok(())) => {
                    let failed = log.clear();
                    if failed > 0 {
                        tracing::info!(failed, "read-back point saved again");
                    }
                }
                Err(_) => {}
            }
        }))
    }
}

impl<P: Publisher> Link<P> {
    /// Reconciling: read back what the hub holds since the point, serving
    /// messages and spills meanwhile; then catch up, skipping what it holds.
    pub(super) async fn reconciling(
        &mut self,
        input: &mut mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
    ) -> Result<Step, LinkError> {
        let Some(point) = self.readback.point.clone() else {
            return Ok(Step::To(State::CatchingUp));
        };
        let from = point.seq.saturating_add(1);
        let started = std::time::Instant::now();
        let read = tokio::time::timeout(
            READ_BACK_DEADLINE,
            self.publisher.read_back(&point.stream, from),
        );
        tokio::pin!(read);
        let result = loop {
            tokio::select! {
                biased;
                r = &mut read => break r,
                event = self.next_event(input, shutdown, None) => match event {
                    Event::Shutdown | Event::Input(None) => return Ok(Step::Stop),
                    Event::Input(Some(m)) => self.memory.push(m),
                    Event::SpillDue => {
                        self.spill().await?;
                    }
                    Event::Ack(_) | Event::Tick | Event::Retry => {}
                },
            }
        };
        let stats = &self.stats;
        match result {
            Ok(Ok(found)) => {
                stats.read_backs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    stream = %point.stream,
                    from_seq = from,
                    held = found.messages(),
                    took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "read back what the hub holds; those messages are not sent again"
                );
                self.readback.found = found;
                self.readback.due = false;
                self.readback.failures = 0;
                self.readback.unreachable = 0;
            }
            Ok(Err(e @ ReadBackError::Unreachable { .. })) => {
                stats.read_back_failures.fetch_add(1, Ordering::Relaxed);
                self.readback.unreachable += 1;
                let delay = self.backoff.next_delay();
                // Once per outage at warn (it may last hours), then at debug.
                let why = crate::error_chain(&e);
                let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                if self.readback.unreachable == 1 {
                    tracing::warn!(
                        error = %why,
                        retry_in_ms,
                        "cannot read back what the hub holds; will try again until it answers, \
                         resending nothing meanwhile"
                    );
                } else {
                    tracing::debug!(
                        error = %why,
                        attempt = self.readback.unreachable,
                        retry_in_ms,
                        "the hub still does not answer the read back"
                    );
                }
                return Ok(Step::To(State::Spilling {
                    retry_at: Instant::now() + delay,
                }));
            }
            failed => {
                stats.read_back_failures.fetch_add(1, Ordering::Relaxed);
                self.readback.failures += 1;
                let (why, again) = match failed {
                    Ok(Err(e)) => {
                        let again = matches!(
                            e,
                            ReadBackError::Timeout { .. } | ReadBackError::Request { .. }
                        );
                        (crate::error_chain(&e), again)
                    }
                    _ => (format!("no answer within {READ_BACK_DEADLINE:?}"), true),
                };
                if again && self.readback.failures < READ_BACK_TRIES {
                    let delay = self.backoff.next_delay();
                    tracing::warn!(
                        error = %why,
                        attempt = self.readback.failures,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "cannot read back what the hub holds; will try again before resending"
                    );
                    return Ok(Step::To(State::Spilling {
                        retry_at: Instant::now() + delay,
                    }));
                }
                tracing::warn!(
                    error = %why,
                    attempts = self.readback.failures,
                    "cannot read back what the hub holds; resending all (duplicates possible)"
                );
                self.readback.failures = 0;
                self.readback.unreachable = 0;
                self.readback.due = false;
            }
        }
        Ok(Step::To(State::CatchingUp))
    }

    /// Whether the hub holds `msg_id` as the last read back found; counts it.
    pub(super) fn already_stored(&self, msg_id: &str) -> bool {
        let held = !self.readback.found.is_empty() && self.readback.found.contains_msg_id(msg_id);
        if held {
            self.stats
                .already_stored_messages
                .fetch_add(1, Ordering::Relaxed);
        }
        held
    }
}
