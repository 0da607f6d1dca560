//! The buffer's one owner: a dedicated thread that holds the [`Buffer`] and
//! serves bounded requests from the async side.
//!
//! The disk buffer is synchronous (`std::fs`, `fdatasync`). An SD card takes
//! 10–100 ms for one sync, so no buffer call may ever run on the runtime
//! thread, nor on tokio's blocking pool, which the sensors' blocking reads
//! share (two hung sysfs reads there once starved every commit). Instead one
//! OS thread owns the buffer for the agent's whole life; the batcher and the
//! link are its clients through a [`BufferHandle`]:
//!
//! * requests travel over one bounded channel, so they are served in the
//!   order they were sent (an ack sent before a rewind is applied before
//!   it); a full channel makes the sender wait, never the thread;
//! * a request that needs an answer carries a oneshot reply; acks and
//!   rewinds need none;
//! * after each burst of requests the thread publishes the buffer's gauges
//!   into [`AgentStats`], so nobody has to ask for them;
//! * a full file system is not an error: the buffer checks the free space
//!   before each append and applies its when-full policy as at its size cap;
//!   should a write still fail with `ENOSPC`/`EDQUOT` (another program took
//!   the space meanwhile), the thread drops the poisoned buffer, opens it
//!   again (which re-validates the files and keeps every record that was
//!   written whole) and answers that spill as *blocked*: the link keeps the
//!   messages in memory and spills them again shortly, when the policy
//!   decides with the space there is. Counters carry over the reopen;
//! * any other buffer error ends the thread with that error
//!   ([`BufferThreadError`]): the buffer is poisoned after an I/O error
//!   anyway, and the agent's supervisor ends the process so that systemd
//!   restarts it and the next open recovers the files. Every later request
//!   fails with [`BufferGone`].
//!
//! [`BufferHandle::close`] flushes, persists the cursor, lowers the id
//! reservations and ends the thread cleanly.

use crate::buffer::{
    AckError, AppendError, AppendOutcome, Buffer, BufferStats, CloseError, FlushError, OpenError,
    OpenReport, ReadBatch, ReadError, SeqError,
};
use crate::stats::AgentStats;
use bytes::Bytes;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the buffer thread; senders wait when it is full.
const REQUESTS: usize = 256;

/// Why the buffer thread ended with an error. The buffer cannot be trusted
/// after any of these; restarting the agent reopens and recovers it.
#[derive(Debug, thiserror::Error)]
pub enum BufferThreadError {
    /// Sequence numbers could not be reserved (the meta file could not be
    /// written).
    #[error("cannot reserve sequence numbers")]
    Seq(#[from] SeqError),
    /// Appending a record failed.
    #[error("cannot append to the buffer")]
    Append(#[from] AppendError),
    /// The group commit's write or fsync failed.
    #[error("cannot flush the buffer")]
    Flush(#[from] FlushError),
    /// Reading committed records failed.
    #[error("cannot read the buffer")]
    Read(#[from] ReadError),
    /// Deleting an acknowledged segment failed.
    #[error("cannot delete an acknowledged segment")]
    Ack(#[from] AckError),
    /// The final flush or the id reservation release failed; the next open
    /// recovers as after a crash.
    #[error("cannot close the buffer")]
    Close(#[from] CloseError),
    /// Spilled records were not where the link expected them (a bug); the
    /// buffer was rewound so that nothing is lost.
    #[error("spilled records got ids {got:?}, expected {expected:?}")]
    SpillOrder {
        /// Ids the buffer handed out.
        got: Vec<u64>,
        /// Ids that were appended.
        expected: Vec<u64>,
    },
    /// The buffer could not be opened again after its file system was full.
    #[error("cannot reopen the buffer after its disk was full")]
    Reopen(#[from] OpenError),
    /// The buffer thread could not be started.
    #[error("cannot start the buffer thread")]
    Spawn(#[source] std::io::Error),
}

impl BufferThreadError {
    /// Whether this is a write that failed because the file system is full
    /// (`ENOSPC`) or the quota is used up (`EDQUOT`): the buffer is full,
    /// not broken.
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            Self::Append(AppendError::Io { source, .. })
            | Self::Flush(FlushError::Io { source, .. }) => source,
            _ => return false,
        };
        source.kind() == std::io::ErrorKind::StorageFull
            || source.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
    }
}

/// Publishes what an open found into the agent's counters (quarantined
/// files, records lost to damaged or missing files).
pub fn count_open_report(report: &OpenReport, stats: &AgentStats) {
    stats
        .buffer_quarantined_files
        .fetch_add(report.quarantined.len() as u64, Ordering::Relaxed);
    stats
        .buffer_lost_records
        .fetch_add(report.records_lost(), Ordering::Relaxed);
}

/// The buffer thread has stopped (its own error says why); nothing more can
/// be read from or written to the buffer in this run.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the buffer thread has stopped")]
pub struct BufferGone;

/// One envelope to make durable, in the order the link holds them.
#[derive(Debug, Clone)]
pub struct SpillRecord {
    /// The encoded envelope.
    pub bytes: Bytes,
    /// Readings in it (for the drop counters).
    pub readings: usize,
    /// Published and awaiting its ack: such records form a prefix of a
    /// spill and are handed out at once (not read again unless rewound).
    pub in_flight: bool,
}

/// What became of each record of a spill, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spilled {
    /// Stored under this record id (and handed out, if it was in flight).
    Stored(u64),
    /// Refused by the `drop_newest` policy.
    DroppedNewest,
}

/// The answer to a spill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpillOutcome {
    /// One entry per record appended, in order; records after these were
    /// not appended because the buffer is full under the `block` policy.
    pub done: Vec<Spilled>,
    /// The `block` policy stopped the spill: try the rest again once
    /// acknowledgements freed space.
    pub blocked: bool,
}

/// A committed record read back for (re)sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    /// Record id, to acknowledge.
    pub id: u64,
    /// The encoded envelope.
    pub bytes: Bytes,
}

enum Request {
    AllocateSeqs(u64, oneshot::Sender<Range<u64>>),
    Spill(Vec<SpillRecord>, oneshot::Sender<SpillOutcome>),
    Read(usize, oneshot::Sender<Vec<DiskRecord>>),
    Ack(Vec<u64>),
    Persist(oneshot::Sender<()>),
    Rewind,
    Close(oneshot::Sender<()>),
}

/// The async side's way to the buffer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BufferHandle {
    tx: mpsc::Sender<Request>,
    epoch: u64,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Request::AllocateSeqs(..) => "AllocateSeqs",
            Request::Spill(..) => "Spill",
            Request::Read(..) => "Read",
            Request::Ack(..) => "Ack",
            Request::Persist(..) => "Persist",
            Request::Rewind => "Rewind",
            Request::Close(..) => "Close",
        };
        f.write_str(name)
    }
}

/// The buffer thread's end: `Ok` after [`BufferHandle::close`] (or when
/// every handle was dropped), the error that stopped it otherwise.
#[derive(Debug)]
pub struct BufferThread {
    done: Option<oneshot::Receiver<Result<(), BufferThreadError>>>,
}

impl BufferThread {
    /// Waits for the thread to end and returns how it ended; cancel-safe.
    /// Once that was returned, later calls return `Ok` at once.
    pub async fn finished(&mut self) -> Result<(), BufferThreadError> {
        let Some(done) = self.done.as_mut() else {
            return Ok(());
        };
        let result = done.await.unwrap_or(Ok(()));
        self.done = None;
        result
    }
}

/// Moves `buffer` onto its own thread. Gauges go to `stats`.
pub fn spawn(
    buffer: Buffer,
    stats: Arc<AgentStats>,
) -> Result<(BufferHandle, BufferThread), BufferThreadError> {
    let epoch = buffer.epoch();
    let (tx, rx) = mpsc::channel(REQUESTS);
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("buffer".into())
        .spawn(move || {
            let result = serve(buffer, rx, &stats);
            if let Err(e) = &result {
                tracing::error!(error = %crate::error_chain(e), "buffer thread stopped");
            }
            let _ = done_tx.send(result);
        })
        .map_err(BufferThreadError::Spawn)?;
    Ok((
        BufferHandle { tx, epoch },
        BufferThread { done: Some(done) },
    ))
}

impl BufferHandle {
    /// The installation epoch of the buffer.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, BufferGone> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| BufferGone)?;
        answer.await.map_err(|_| BufferGone)
    }

    /// `n` reading sequence numbers never handed out before under this
    /// epoch (see [`Buffer::allocate_seqs`]).
    pub async fn allocate_seqs(&self, n: u64) -> Result<Range<u64>, BufferGone> {
        self.ask(|r| Request::AllocateSeqs(n, r)).await
    }

    /// Appends `records` in order and makes them durable with one group
    /// commit. Records marked in flight (a prefix) are handed out at once;
    /// the caller must have read every earlier committed record first.
    pub async fn spill(&self, records: Vec<SpillRecord>) -> Result<SpillOutcome, BufferGone> {
        self.ask(|r| Request::Spill(records, r)).await
    }

    /// Up to `max` committed records not handed out yet, oldest first.
    pub async fn read(&self, max: usize) -> Result<Vec<DiskRecord>, BufferGone> {
        self.ask(|r| Request::Read(max, r)).await
    }

    /// Acknowledges records the hub stored.
    pub async fn ack(&self, ids: Vec<u64>) -> Result<(), BufferGone> {
        if ids.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Request::Ack(ids))
            .await
            .map_err(|_| BufferGone)
    }

    /// Makes every acknowledgement sent so far durable (the ack cursor is
    /// otherwise persisted only by the next spill's group commit; while the
    /// link is up there may be none for a long time). Anything that relies
    /// on acknowledged records staying gone after a crash, such as the
    /// read-back point, waits for this first.
    pub async fn persist(&self) -> Result<(), BufferGone> {
        self.ask(Request::Persist).await
    }

    /// Makes every handed-out, unacknowledged record readable again.
    pub async fn rewind(&self) -> Result<(), BufferGone> {
        self.tx.send(Request::Rewind).await.map_err(|_| BufferGone)
    }

    /// Flushes, persists the cursor and ends the thread.
    pub async fn close(&self) -> Result<(), BufferGone> {
        self.ask(Request::Close).await
    }
}

fn serve(
    mut buffer: Buffer,
    mut rx: mpsc::Receiver<Request>,
    stats: &AgentStats,
) -> Result<(), BufferThreadError> {
    let mut batch = ReadBatch::new();
    // Counters of the buffers this thread dropped after a full disk.
    let mut carried = BufferStats::default();
    publish_stats(&mut buffer, &carried, stats);
    while let Some(mut request) = rx.blocking_recv() {
        loop {
            match request {
                Request::AllocateSeqs(n, reply) => {
                    let _ = reply.send(buffer.allocate_seqs(n)?);
                }
                Request::Spill(records, reply) => {
                    let outcome = match spill(&mut buffer, &mut batch, &records, stats) {
                        Ok(outcome) => outcome,
                        Err(e) if e.is_disk_full() => {
                            buffer = reopen_after_full(buffer, &e, &mut carried, stats)?;
                            SpillOutcome {
                                done: Vec::new(),
                                blocked: true,
                            }
                        }
                        Err(e) => return Err(e),
                    };
                    let _ = reply.send(outcome);
                }
                Request::Read(max, reply) => {
                    buffer.read_into(&mut batch, max)?;
                    let records = batch
                        .iter()
                        .map(|r| DiskRecord {
                            id: r.id,
                            bytes: Bytes::copy_from_slice(r.payload),
                        })
                        .collect();
                    let _ = reply.send(records);
                }
                Request::Ack(ids) => {
                    for id in ids {
                        buffer.ack(id)?;
                    }
                }
                Request::Persist(reply) => {
                    buffer.flush()?;
                    let _ = reply.send(());
                }
                Request::Rewind => buffer.rewind(),
                Request::Close(reply) => {
                    publish_stats(&mut buffer, &carried, stats);
                    let unacked = buffer.stats().unacked_records;
                    buffer.close()?;
                    tracing::info!(unacknowledged = unacked, "buffer closed");
                    let _ = reply.send(());
                    return Ok(());
                }
            }
            match rx.try_recv() {
                Ok(next) => request = next,
                Err(_) => break,
            }
        }
        publish_stats(&mut buffer, &carried, stats);
    }
    // Every handle is gone without a close (the agent is failing): leave the
    // files as a crash would; the next open recovers them.
    Ok(())
}

fn spill(
    buffer: &mut Buffer,
    batch: &mut ReadBatch,
    records: &[SpillRecord],
    stats: &AgentStats,
) -> Result<SpillOutcome, BufferThreadError> {
    let mut out = SpillOutcome::default();
    let mut in_flight_ids = Vec::new();
    for record in records {
        match buffer.append(&record.bytes) {
            Ok(AppendOutcome::Stored(id)) => {
                out.done.push(Spilled::Stored(id));
                if record.in_flight {
                    in_flight_ids.push(id);
                }
            }
            Ok(AppendOutcome::DroppedNewest) => {
                out.done.push(Spilled::DroppedNewest);
                stats
                    .dropped_readings
                    .fetch_add(record.readings as u64, Ordering::Relaxed);
            }
            Err(AppendError::Full { .. }) => {
                out.blocked = true;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    buffer.flush()?;
    if !in_flight_ids.is_empty() {
        // The in-flight records are the oldest unread ones: hand them out so
        // they are read again only after a rewind.
        buffer.read_into(batch, in_flight_ids.len())?;
        let got: Vec<u64> = batch.iter().map(|r| r.id).collect();
        if got != in_flight_ids {
            buffer.rewind();
            return Err(BufferThreadError::SpillOrder {
                got,
                expected: in_flight_ids,
            });
        }
    }
    Ok(out)
}

/// Drops a buffer whose write failed on a full disk and opens it again
/// (the files are re-validated; every record written whole is kept), adding
/// its counters to `carried`.
fn reopen_after_full(
    mut buffer: Buffer,
    error: &BufferThreadError,
    carried: &mut BufferStats,
    stats: &AgentStats,
) -> Result<Buffer, BufferThreadError> {
    let old = buffer.stats();
    carried.dropped_oldest += old.dropped_oldest;
    carried.dropped_newest += old.dropped_newest;
    carried.disk_full += old.disk_full + 1;
    carried.records_appended += old.records_appended;
    carried.payload_bytes_appended += old.payload_bytes_appended;
    carried.bytes_written += old.bytes_written;
    carried.syncs += old.syncs;
    let config = buffer.config().clone();
    drop(buffer);
    tracing::warn!(
        dir = %config.dir.display(),
        error = %crate::error_chain(error),
        "buffer: disk full while writing; reopening the buffer, the spill is retried"
    );
    let (buffer, report) = Buffer::open(config)?;
    count_open_report(&report, stats);
    Ok(buffer)
}

fn publish_stats(buffer: &mut Buffer, carried: &BufferStats, stats: &AgentStats) {
    let mut s = buffer.stats();
    s.dropped_oldest += carried.dropped_oldest;
    s.dropped_newest += carried.dropped_newest;
    s.disk_full += carried.disk_full;
    s.bytes_written += carried.bytes_written;
    s.syncs += carried.syncs;
    stats
        .buffer_records
        .store(s.unacked_records, Ordering::Relaxed);
    stats.buffer_bytes.store(s.bytes_on_disk, Ordering::Relaxed);
    stats.oldest_unacked_unix_ms.store(
        s.oldest_unacked_appended_at_ms.unwrap_or(0),
        Ordering::Relaxed,
    );
    stats
        .bytes_written
        .store(s.bytes_written, Ordering::Relaxed);
    stats
        .dropped_records
        .store(s.dropped_oldest + s.dropped_newest, Ordering::Relaxed);
    stats.buffer_syncs.store(s.syncs, Ordering::Relaxed);
    stats.buffer_disk_full.store(s.disk_full, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufferConfig;

    fn open(dir: &std::path::Path) -> (BufferHandle, BufferThread, Arc<AgentStats>) {
        let (buffer, _) = Buffer::open(BufferConfig::new(dir)).expect("open");
        let stats = Arc::new(AgentStats::default());
        let (handle, thread) = spawn(buffer, stats.clone()).expect("spawn");
        (handle, thread, stats)
    }

    fn record(text: &str, in_flight: bool) -> SpillRecord {
        SpillRecord {
            bytes: Bytes::copy_from_slice(text.as_bytes()),
            readings: 1,
            in_flight,
        }
    }

    #[tokio::test]
    async fn spilled_in_flight_records_are_handed_out_and_only_the_rest_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (handle, mut thread, stats) = open(dir.path());
        let outcome = handle
            .spill(vec![
                record("a", true),
                record("b", true),
                record("c", false),
            ])
            .await
            .expect("spill");
        assert_eq!(
            outcome.done,
            vec![Spilled::Stored(0), Spilled::Stored(1), Spilled::Stored(2)]
        );
        let read = handle.read(10).await.expect("read");
        assert_eq!(read.iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(&read[0].bytes[..], b"c");
        handle.rewind().await.expect("rewind");
        let again = handle.read(10).await.expect("read");
        assert_eq!(
            again.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        handle.ack(vec![0, 1, 2]).await.expect("ack");
        handle.close().await.expect("close");
        thread.finished().await.expect("clean end");
        assert_eq!(stats.buffer_records.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn acknowledgements_made_durable_by_persist_stay_gone_after_a_crash_and_later_ones_do_not()
     {
        let dir = tempfile::tempdir().expect("tempdir");
        let (handle, mut thread, _) = open(dir.path());
        let texts = ["a", "b", "c", "d"];
        handle
            .spill(texts.iter().map(|t| record(t, false)).collect())
            .await
            .expect("spill");
        assert_eq!(handle.read(10).await.expect("read").len(), 4);
        handle.ack(vec![0, 1]).await.expect("ack");
        handle.persist().await.expect("persist");
        handle.ack(vec![2]).await.expect("ack");
        // A crash: the handle goes without a close.
        drop(handle);
        thread.finished().await.expect("thread end");
        let (handle, _thread, _) = open(dir.path());
        let left = handle.read(10).await.expect("read");
        assert_eq!(
            left.iter().map(|r| &r.bytes[..]).collect::<Vec<_>>(),
            vec![&b"c"[..], &b"d"[..]],
            "a and b stay acknowledged; c's ack was never made durable"
        );
    }

    #[tokio::test]
    async fn a_spill_with_earlier_unread_records_ends_the_thread_instead_of_losing_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (handle, mut thread, _) = open(dir.path());
        handle
            .spill(vec![record("old", false)])
            .await
            .expect("spill");
        let result = handle.spill(vec![record("new", true)]).await;
        assert!(result.is_err(), "the thread stops");
        match thread.finished().await {
            Err(BufferThreadError::SpillOrder { got, expected }) => {
                assert_eq!((got, expected), (vec![0], vec![1]));
            }
            other => panic!("expected a SpillOrder error, got {other:?}"),
        }
        assert!(handle.read(1).await.is_err(), "later requests fail");
        let (mut reopened, _) = Buffer::open(BufferConfig::new(dir.path())).expect("reopen");
        let ids: Vec<u64> = reopened
            .read(10)
            .expect("read")
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![0, 1], "both records survive");
    }

    #[tokio::test]
    async fn sequence_numbers_keep_counting_across_requests_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (handle, mut thread, _) = open(dir.path());
        assert_eq!(handle.allocate_seqs(3).await.expect("seqs"), 0..3);
        assert_eq!(handle.allocate_seqs(2).await.expect("seqs"), 3..5);
        handle.close().await.expect("close");
        thread.finished().await.expect("clean end");
        let (handle, _thread, _) = open(dir.path());
        assert_eq!(handle.allocate_seqs(1).await.expect("seqs"), 5..6);
    }
}
