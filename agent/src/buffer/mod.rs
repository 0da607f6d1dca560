//! # Disk buffer: a segmented append-only log for store-and-forward.
//!
//! The agent appends every batch of readings (one encoded wire `Envelope`) as one opaque
//! *record*, and deletes it only after the hub's JetStream acknowledged it. This module is the
//! log that holds those records across network outages, process crashes and power cuts, on
//! hardware as small as a Pi Zero with an SD card. It was written for this job after sled 0.34
//! was measured for the same workload: sled's `flush()` issues only `sync_file_range` (not
//! durable across a power cut), used tens to hundreds of MB of RSS, wrote about twelve bytes
//! per payload byte and gave no disk space back after a full drain.
//!
//! ## Design constraints
//!
//! - records are opaque byte strings, at most one segment in size; they never span segments
//! - record ids are `u64`, increase by one per record and are never reused, not even after a
//!   crash (a crash may leave a gap)
//! - every byte on disk is checksummed (CRC-32, IEEE), all integers are little-endian, so the
//!   files can be read on any host
//! - only records made durable by [`Buffer::flush`] are ever handed to readers: nothing is sent
//!   that a power cut could take back
//! - disk space is given back in whole segments, as soon as every record in one is
//!   acknowledged
//! - the API is synchronous (`std::fs`); the agent calls it only from its owner thread
//!   (`crate::buffer_owner`), never from the async runtime
//! - the append and read paths do not allocate in steady state (fixed-size header arrays, a
//!   reused write buffer, a reused read window and [`ReadBatch`])
//!
//! ## On-disk layout
//!
//! ```text
//! <dir>/
//!   meta                        epoch + id/sequence reservations (two 48-byte slots)
//!   cursor                      ack cursor (two 48-byte slots)
//!   00000000000000000000.seg    segment whose first record id is 0
//!   00000000000000004096.seg    ...named by first record id, 20 digits, so names sort by id
//!   quarantine/                 damaged segments moved aside on open
//! ```
//!
//! ### Segment file
//!
//! ```text
//! header (32 bytes):
//!   magic           [u8; 8]  "TRIBSEG\0"
//!   version         u16      1
//!   flags           u16      bit 0: first segment created after an open (was reserved, 0)
//!   first_id        u64      id of the first record (equals the file name)
//!   created_ms      u64      creation time, ms since the Unix epoch
//!   crc32           u32      of the 28 bytes above
//! records, back to back, each:
//!   len             u32      payload length
//!   crc32           u32      of len, id, appended_at_ms and payload
//!   id              u64      record id (first_id, first_id + 1, ...)
//!   appended_at_ms  u64      append time, ms since the Unix epoch
//!   payload         [u8; len]
//! ```
//!
//! A 64-byte reading batch therefore costs 88 bytes on disk. A segment is sealed when the next
//! record would push it past `segment_bytes`.
//!
//! ### Slot files (`meta`, `cursor`)
//!
//! Small state that changes is overwritten in place, alternating between two 48-byte slots
//! (`magic[4] version:u16 reserved:u16 generation:u64 values:[u64;3] crc32:u32 pad:u32`).
//! A torn write damages only the slot being written; open picks the valid slot with the
//! highest generation. No rename, no new inode, one data block per update: easy on SD cards.
//!
//! ## Writing: group commit
//!
//! [`Buffer::append`] encodes the frame into an in-memory write buffer (handed to the file in
//! 64 KiB chunks) and returns the record id at once. [`Buffer::flush`] writes what is pending,
//! issues one `fdatasync` for everything appended since the previous flush (plus an `fsync` of
//! the directory when a segment was created, and one slot write of the cursor when it moved),
//! and only then makes those records readable. The agent appends only what the hub has not
//! acknowledged within one flush interval of being taken, and flushes right after (a *spill*,
//! see `crate::link`), so **a power cut loses at most the records appended since the last
//! successful flush** — readings younger than the flush interval: that is the documented
//! window. Sealing a segment syncs it, so only the newest segment can ever end
//! in a torn write.
//!
//! ## Reading and acknowledging
//!
//! [`Buffer::read_into`] / [`Buffer::read`] hand out committed records in id order, each once,
//! and remember them in an in-memory window (`cursor.rs`). [`Buffer::ack`] may be called in any
//! order (many messages are in flight); the *floor* — the lowest unacknowledged id — advances
//! over the contiguous acknowledged prefix, and every segment whose records all lie below the
//! floor is deleted at once. [`Buffer::rewind`] (after a reconnect) makes every handed-out,
//! unacknowledged record readable again, skipping those acknowledged meanwhile.
//!
//! The floor is persisted in the cursor file by `flush`, only when it moved. It may lag: after
//! a crash, records acknowledged after the last flush are delivered again. Delivery is
//! therefore *at least once*; the hub drops the duplicates by `Nats-Msg-Id`, which the agent
//! derives from the reading ids inside the record, not from the record id.
//!
//! ## Opening: recovery
//!
//! [`Buffer::open`] reads every segment once, oldest first, checking the header, every CRC and
//! the id sequence, and reports what it did in an [`OpenReport`] (also logged):
//!
//! - the **newest** segment may end in a torn write (a crash while appending): it is truncated
//!   at the first bad record; nothing there was ever flushed, so nothing delivered is lost.
//!   The recovered tail is then synced. An empty newest segment is removed. When valid records
//!   follow the bad one, it is damage, not a torn write, and handled like the next case.
//! - any **older** segment with a bad record was synced when sealed, so damage there is the
//!   medium's doing: a whole copy goes to `quarantine/` (kept for inspection), the live file
//!   is cut at the bad record so the valid records before it are kept, and the records lost
//!   are reported. A segment with a bad header (or no room for a copy) is moved whole.
//! - a **missing** segment shows as an id gap: the first segment created after each open is
//!   flagged in its header (a crash skips ids before it), and `drop_oldest` persists the
//!   cursor before it deletes, so any other gap above the cursor is reported with its ids.
//! - an unreadable **cursor** or **meta** file is moved to `quarantine/` and started afresh
//!   (everything kept is delivered again; a new epoch).
//! - segments entirely below the persisted cursor are deleted.
//! - appending continues in a new segment; the next id is the largest of: the newest
//!   segment's end, the cursor, and the meta file's id reservation.
//!
//! ## Ids and sequence numbers that never repeat
//!
//! The meta file holds the installation *epoch* (random, chosen when the directory is first
//! created) and two reservations: record ids and reading sequence numbers are handed out only
//! below a high-water mark that is already durable; reaching it moves it 4096 ahead with one
//! slot write + `fdatasync`. After a crash both counters restart at their mark, so a number is
//! never handed out twice (a crash may skip up to 4096). [`Buffer::close`] lowers the marks to
//! the next unused numbers. [`Buffer::allocate_seqs`] is the agent's source of per-device
//! reading sequence numbers.
//!
//! ## Size cap
//!
//! `max_bytes` bounds the sum of all segment files (at least two segments). When an append
//! would exceed it, [`WhenFull`] decides: `drop_oldest` (default) deletes the oldest segment
//! even if unacknowledged and counts its lost records in `dropped_oldest`; `drop_newest`
//! refuses the record ([`AppendOutcome::DroppedNewest`], counted in `dropped_newest`); `block`
//! returns [`AppendError::Full`]: the caller keeps the record, waits until an acknowledgement
//! frees a segment ([`Buffer::would_fit`] turns true), and appends again. The file system
//! filling up first (less than [`DISK_RESERVE`] free, asked with `statvfs` before each append)
//! counts as full too (`disk_full`); `drop_oldest` with no sealed segment left then drops the
//! new record (`dropped_newest`).
//!
//! ## Errors
//!
//! After an I/O error on append, flush or read the buffer refuses further work (`Poisoned`);
//! drop it and open it again, which re-validates the files (see [`error`]).

mod config;
mod cursor;
pub mod error;
mod frame;
#[doc(hidden)]
pub mod fuzz_api;
mod log;
mod meta;
mod open;
mod reader;
mod segment;
mod slots;

#[cfg(test)]
mod damage_tests;
#[cfg(test)]
mod disk_full_tests;
#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

pub use config::{
    BufferConfig, DEFAULT_MAX_BYTES, DEFAULT_SEGMENT_BYTES, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES,
    WhenFull,
};
pub use error::{
    AckError, AppendError, CloseError, ConfigError, FlushError, OpenError, ReadError, SeqError,
};
pub use frame::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
pub use log::{AppendOutcome, Buffer, BufferStats, DISK_RESERVE};
pub use meta::RESERVE_BLOCK;
pub use open::{Missing, OpenReport, QUARANTINE_DIR, Quarantined, TornTail};
pub use reader::{ReadBatch, Record, RecordRef};
