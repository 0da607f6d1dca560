//! Unit tests of the buffer as a whole, one concern per test, against real files.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::segment::{list_segments, segment_path};
use super::*;

fn config(dir: &Path, segment_bytes: u64, max_bytes: u64, when_full: WhenFull) -> BufferConfig {
    BufferConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes,
        when_full,
    }
}

fn small(dir: &Path) -> BufferConfig {
    config(dir, 4096, 1 << 30, WhenFull::DropOldest)
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("reading-batch-{i:08}").into_bytes();
    p.resize(64, b'.');
    p
}

fn stored(o: AppendOutcome) -> u64 {
    match o {
        AppendOutcome::Stored(id) => id,
        AppendOutcome::DroppedNewest => panic!("record was dropped"),
    }
}

fn append_n(b: &mut Buffer, range: std::ops::Range<u64>) -> Vec<u64> {
    range
        .map(|i| stored(b.append(&payload(i)).unwrap()))
        .collect()
}

fn read_ids(b: &mut Buffer, max: usize) -> Vec<u64> {
    b.read(max).unwrap().into_iter().map(|r| r.id).collect()
}

fn drain_ids(b: &mut Buffer) -> Vec<u64> {
    read_ids(b, usize::MAX)
}

#[test]
fn records_become_readable_only_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert!(report.created);
    let ids = append_n(&mut b, 0..3);
    assert_eq!(ids, vec![0, 1, 2]);
    assert!(drain_ids(&mut b).is_empty());
    b.flush().unwrap();
    let recs = b.read(10).unwrap();
    assert_eq!(recs.len(), 3);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.id, i as u64);
        assert_eq!(r.payload, payload(i as u64));
    }
    assert!(
        drain_ids(&mut b).is_empty(),
        "each record is handed out once"
    );
}

#[test]
fn read_returns_at_most_max_records_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..250);
    b.flush().unwrap();
    let mut batch = ReadBatch::new();
    let mut seen = Vec::new();
    loop {
        b.read_into(&mut batch, 7).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 7);
        for r in batch.iter() {
            assert_eq!(r.payload, payload(r.id));
            seen.push(r.id);
        }
    }
    assert_eq!(seen, (0..250).collect::<Vec<_>>());
}

#[test]
fn acked_records_do_not_come_back_after_reopen_but_unacked_ones_do() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..10);
    b.flush().unwrap();
    assert_eq!(drain_ids(&mut b).len(), 10);
    for id in 0..4 {
        assert!(b.ack(id).unwrap());
    }
    b.close().unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(report.records, 6);
    assert_eq!(drain_ids(&mut b), (4..10).collect::<Vec<_>>());
}

#[test]
fn acks_out_of_order_advance_the_cursor_only_over_the_contiguous_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..6);
    b.flush().unwrap();
    drain_ids(&mut b);
    for id in [1, 2, 4] {
        assert!(b.ack(id).unwrap());
    }
    assert!(!b.ack(2).unwrap(), "a second ack is ignored");
    assert!(!b.ack(77).unwrap(), "an unknown id is ignored");
    assert_eq!(b.stats().unacked_records, 3);
    b.flush().unwrap();
    drop(b); // crash after the cursor was persisted
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    // The cursor could only move to 0 (record 0 is unacked): 1, 2 and 4 come back too.
    assert_eq!(drain_ids(&mut b), (0..6).collect::<Vec<_>>());
    for id in [0, 1, 2, 4] {
        assert!(b.ack(id).unwrap());
    }
    b.flush().unwrap();
    drop(b);
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(drain_ids(&mut b), vec![3, 4, 5]);
}

#[test]
fn a_fully_acked_segment_is_deleted_and_returns_disk_space() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    // 88-byte frames, 4096-byte segments: 46 records per segment.
    append_n(&mut b, 0..200);
    b.flush().unwrap();
    let before = b.stats();
    assert_eq!(before.segments, 5);
    assert_eq!(list_segments(dir.path()).unwrap().len(), 5);
    let ids = drain_ids(&mut b);
    for id in ids.iter().rev() {
        b.ack(*id).unwrap();
    }
    let after = b.stats();
    assert_eq!(after.unacked_records, 0);
    assert_eq!(after.segments, 1, "only the active segment stays");
    assert_eq!(list_segments(dir.path()).unwrap().len(), 1);
    let on_disk: u64 = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.file_name()
                .to_str()?
                .ends_with(".seg")
                .then(|| e.metadata().unwrap().len())
        })
        .sum();
    assert_eq!(on_disk, after.bytes_on_disk);
    assert!(after.bytes_on_disk < 4096);
    assert_eq!(after.oldest_unacked_appended_at_ms, None);
}

#[test]
fn segments_are_named_by_first_record_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..100);
    b.flush().unwrap();
    assert_eq!(list_segments(dir.path()).unwrap(), vec![0, 46, 92]);
    assert!(segment_path(dir.path(), 46).exists());
}

fn corrupt_byte(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x40;
    f.write_all_at(&byte, offset).unwrap();
}

#[test]
fn a_torn_tail_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..10);
    b.flush().unwrap();
    drop(b);
    // A crash in the middle of writing record 10: half a frame at the end.
    let path = segment_path(dir.path(), 0);
    let len = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all_at(&[0x2a; 30], len).unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    let torn = report.torn_tail.expect("torn tail reported");
    assert_eq!(torn.valid_len, len);
    assert_eq!(torn.truncated_bytes, 30);
    assert_eq!(fs::metadata(&path).unwrap().len(), len);
    assert_eq!(drain_ids(&mut b), (0..10).collect::<Vec<_>>());
    let id = stored(b.append(b"after").unwrap());
    assert!(id >= 10);
}

#[test]
fn a_segment_with_a_corrupt_record_in_the_middle_is_quarantined_and_keeps_the_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..130);
    b.flush().unwrap();
    b.close().unwrap();
    assert_eq!(list_segments(dir.path()).unwrap(), vec![0, 46, 92]);
    let original = fs::read(segment_path(dir.path(), 46)).unwrap();
    // Damage record 50 (the fifth record of the second segment) in its payload.
    corrupt_byte(&segment_path(dir.path(), 46), 32 + 4 * 88 + 40);
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(report.quarantined.len(), 1);
    let q = &report.quarantined[0];
    assert_eq!(q.offset, 32 + 4 * 88);
    assert_eq!(q.kept_records, 4);
    assert_eq!(q.records_lost, Some(42));
    assert!(q.to.starts_with(dir.path().join(QUARANTINE_DIR)));
    let mut damaged = original.clone();
    damaged[32 + 4 * 88 + 40] ^= 0x40;
    assert_eq!(
        fs::read(&q.to).unwrap(),
        damaged,
        "the whole damaged file is kept aside"
    );
    assert_eq!(
        fs::metadata(segment_path(dir.path(), 46)).unwrap().len(),
        32 + 4 * 88,
        "the live file keeps the valid records"
    );
    let ids = drain_ids(&mut b);
    let want: Vec<u64> = (0..50).chain(92..130).collect();
    assert_eq!(ids, want);
    assert_eq!(report.records, 88);
    assert_eq!(report.records_lost(), 42);
}

#[test]
fn the_newest_segment_with_a_bad_record_before_valid_ones_is_quarantined_not_silently_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..20);
    b.flush().unwrap();
    drop(b);
    corrupt_byte(&segment_path(dir.path(), 0), 32 + 15 * 88 + 10);
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert!(
        report.torn_tail.is_none(),
        "valid records follow: damage, not a torn write"
    );
    let q = &report.quarantined[0];
    assert_eq!((q.offset, q.kept_records), (32 + 15 * 88, 15));
    assert_eq!(
        q.records_lost,
        Some(4),
        "records 16..20 still check out in the copy"
    );
    assert!(q.to.exists());
    assert_eq!(drain_ids(&mut b), (0..15).collect::<Vec<_>>());
}

#[test]
fn rewind_redelivers_unacked_records_but_not_acked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..120);
    b.flush().unwrap();
    assert_eq!(read_ids(&mut b, 100).len(), 100);
    for id in [0, 1, 5, 60, 99] {
        b.ack(id).unwrap();
    }
    b.rewind();
    let again = read_ids(&mut b, 50);
    let want: Vec<u64> = (2..60).filter(|i| *i != 5).take(50).collect();
    assert_eq!(again, want);
    // Acked while the resend is under way: skipped when reached.
    b.ack(57).unwrap();
    let rest = drain_ids(&mut b);
    let want: Vec<u64> = (want[49] + 1..120)
        .filter(|i| ![57, 60, 99].contains(i))
        .collect();
    assert_eq!(rest, want);
}

#[test]
fn acking_the_record_a_rewind_points_at_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..5);
    b.flush().unwrap();
    drain_ids(&mut b);
    b.rewind();
    b.ack(0).unwrap();
    b.ack(1).unwrap();
    assert_eq!(drain_ids(&mut b), vec![2, 3, 4]);
}

#[test]
fn drop_oldest_deletes_the_oldest_segment_and_counts_exactly_its_unacked_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 4096, 3 * 4096, WhenFull::DropOldest);
    let (mut b, _) = Buffer::open(cfg).unwrap();
    // Three full segments of 46 records reach the cap exactly (3 * (32 + 46 * 88) = 12240).
    append_n(&mut b, 0..138);
    b.flush().unwrap();
    assert_eq!(b.stats().dropped_oldest, 0);
    // Hand out and ack 10 records of the oldest segment, hand out 10 more unacked.
    assert_eq!(read_ids(&mut b, 20).len(), 20);
    for id in 0..10 {
        b.ack(id).unwrap();
    }
    // The next record needs a fourth segment: segment 0 goes, with its 36 unacked records.
    let id = stored(b.append(&payload(138)).unwrap());
    assert_eq!(id, 138);
    let s = b.stats();
    assert_eq!(s.dropped_oldest, 36);
    assert_eq!(s.unacked_records, 138 - 46 + 1);
    assert!(s.bytes_on_disk <= 3 * 4096);
    assert_eq!(list_segments(dir.path()).unwrap(), vec![46, 92, 138]);
    b.flush().unwrap();
    assert!(!b.ack(15).unwrap(), "acks for dropped records are ignored");
    assert_eq!(drain_ids(&mut b), (46..139).collect::<Vec<_>>());
}

#[test]
fn drop_newest_refuses_exactly_the_records_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 4096, 2 * 4096, WhenFull::DropNewest);
    let (mut b, _) = Buffer::open(cfg).unwrap();
    append_n(&mut b, 0..92);
    let mut refused = 0;
    for i in 92..100 {
        assert_eq!(b.append(&payload(i)).unwrap(), AppendOutcome::DroppedNewest);
        refused += 1;
    }
    b.flush().unwrap();
    let s = b.stats();
    assert_eq!(s.dropped_newest, refused);
    assert_eq!(s.dropped_oldest, 0);
    assert_eq!(s.unacked_records, 92);
    assert_eq!(drain_ids(&mut b), (0..92).collect::<Vec<_>>());
    // Even an empty record is refused: it would need a third segment.
    assert!(matches!(
        b.append(b"").unwrap(),
        AppendOutcome::DroppedNewest
    ));
}

#[test]
fn block_returns_full_until_acks_free_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 4096, 2 * 4096, WhenFull::Block);
    let (mut b, _) = Buffer::open(cfg).unwrap();
    append_n(&mut b, 0..92);
    b.flush().unwrap();
    assert!(!b.would_fit(64));
    assert!(matches!(
        b.append(&payload(92)),
        Err(AppendError::Full { max_bytes, .. }) if max_bytes == 8192
    ));
    let ids = read_ids(&mut b, 46);
    for id in &ids[..45] {
        b.ack(*id).unwrap();
    }
    assert!(
        !b.would_fit(64),
        "one record of the segment is still unacked"
    );
    b.ack(ids[45]).unwrap();
    assert!(b.would_fit(64));
    assert_eq!(stored(b.append(&payload(92)).unwrap()), 92);
    let s = b.stats();
    assert_eq!((s.dropped_newest, s.dropped_oldest), (0, 0));
}

#[test]
fn a_record_larger_than_a_segment_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    let max = b.max_record_len();
    assert_eq!(max, 4096 - 32 - 24);
    assert!(matches!(
        b.append(&vec![0; max + 1]),
        Err(AppendError::TooLarge { len, .. }) if len == max + 1
    ));
    assert_eq!(stored(b.append(&vec![1; max]).unwrap()), 0);
    b.flush().unwrap();
    assert_eq!(b.read(1).unwrap()[0].payload.len(), max);
}

#[test]
fn record_ids_never_repeat_after_a_crash_that_lost_unflushed_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..10);
    b.flush().unwrap();
    let lost = append_n(&mut b, 10..15);
    drop(b); // crash: the five unflushed records never reached the file
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert!(report.next_id > *lost.last().unwrap());
    let id = stored(b.append(b"x").unwrap());
    assert!(id > 14, "id {id} was handed out before the crash");
    assert_eq!(drain_ids(&mut b), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_clean_close_leaves_no_gap_in_record_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..10);
    b.close().unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(report.next_id, 10);
    assert_eq!(stored(b.append(b"x").unwrap()), 10);
}

#[test]
fn sequence_numbers_never_repeat_across_reopen_even_without_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut last_end = 0;
    for round in 0..5 {
        let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
        let r = b.allocate_seqs(3000).unwrap();
        assert!(
            r.start >= last_end,
            "round {round}: {r:?} repeats numbers below {last_end}"
        );
        assert_eq!(r.end - r.start, 3000);
        last_end = r.end;
        if round % 2 == 0 {
            drop(b); // crash
        } else {
            b.close().unwrap();
        }
    }
}

#[test]
fn the_epoch_persists_across_reopen_and_differs_between_directories() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let (b1, r1) = Buffer::open(small(d1.path())).unwrap();
    let e1 = b1.epoch();
    assert!(r1.created);
    drop(b1);
    let (b1, r1) = Buffer::open(small(d1.path())).unwrap();
    assert!(!r1.created);
    assert_eq!(b1.epoch(), e1);
    let (b2, _) = Buffer::open(small(d2.path())).unwrap();
    assert_ne!(b2.epoch(), e1);
}

#[test]
fn stats_report_the_oldest_unacked_append_time_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(b.stats().oldest_unacked_appended_at_ms, None);
    for (i, ts) in [1000u64, 2000, 3000].into_iter().enumerate() {
        stored(b.append_at(&payload(i as u64), ts).unwrap());
    }
    assert_eq!(b.stats().oldest_unacked_appended_at_ms, Some(1000));
    b.flush().unwrap();
    assert_eq!(b.stats().oldest_unacked_appended_at_ms, Some(1000));
    read_ids(&mut b, 2);
    b.ack(0).unwrap();
    assert_eq!(b.stats().oldest_unacked_appended_at_ms, Some(2000));
    b.ack(1).unwrap();
    assert_eq!(b.stats().oldest_unacked_appended_at_ms, Some(3000));
    let s = b.stats();
    assert_eq!(s.records_appended, 3);
    assert_eq!(s.payload_bytes_appended, 3 * 64);
    assert!(s.bytes_written >= 32 + 3 * 88);
    assert_eq!(s.unacked_records, 1);
}

#[test]
fn an_unreadable_cursor_file_redelivers_everything_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..5);
    b.flush().unwrap();
    drain_ids(&mut b);
    b.ack(0).unwrap();
    b.close().unwrap();
    fs::write(dir.path().join("cursor"), [0u8; 96]).unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert!(report.cursor_reset);
    assert_eq!(drain_ids(&mut b), (0..5).collect::<Vec<_>>());
}

#[test]
fn acking_everything_recovered_after_a_crash_leaves_nothing_to_read() {
    // Found by the model test: the read position must move past a deleted last segment to
    // the next id to be appended, which a crash moved ahead by the id reservation.
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    append_n(&mut b, 0..1);
    b.flush().unwrap();
    drop(b);
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(drain_ids(&mut b), vec![0]);
    b.rewind();
    assert!(b.ack(0).unwrap());
    assert!(drain_ids(&mut b).is_empty());
    assert_eq!(b.stats().segments, 0);
    let id = stored(b.append(b"next").unwrap());
    b.flush().unwrap();
    assert_eq!(drain_ids(&mut b), vec![id]);
}

#[test]
fn a_wall_clock_jumping_back_by_hours_never_reorders_rejects_or_corrupts_buffered_records() {
    // A Pi without a real-time clock: appended at a wrong time, then NTP
    // steps the clock back by hours (twice), across several segments,
    // with some readings acked and the buffer closed and reopened between.
    const HOUR: u64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let start = 1_900_000_000_000u64;
    let stamp = |i: u64| start - (i / 50) * 5 * HOUR + i;
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    let mut ids = Vec::new();
    for i in 0..150 {
        ids.push(stored(b.append_at(&payload(i), stamp(i)).unwrap()));
    }
    // A clock that fell back to the Unix epoch itself.
    ids.push(stored(b.append_at(&payload(150), 1).unwrap()));
    b.flush().unwrap();
    assert_eq!(
        ids,
        (0..151).collect::<Vec<_>>(),
        "ids follow appends, not time"
    );
    assert!(b.stats().segments > 2, "the jumps span segments");
    assert_eq!(b.stats().oldest_unacked_appended_at_ms, Some(stamp(0)));
    let first = b.read(10).unwrap();
    for r in &first {
        assert!(b.ack(r.id).unwrap());
    }
    // The oldest unacked record is the first not acked, by id, even though
    // later records carry earlier times.
    assert_eq!(b.stats().oldest_unacked_appended_at_ms, Some(stamp(10)));
    b.close().unwrap();

    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(report.records, 141);
    assert!(report.torn_tail.is_none() && report.quarantined.is_empty());
    // Appending after the reopen, at a time earlier than everything.
    ids.push(stored(b.append_at(&payload(151), 0).unwrap()));
    b.flush().unwrap();
    let records = b.read(usize::MAX).unwrap();
    let got: Vec<(u64, Vec<u8>)> = records.into_iter().map(|r| (r.id, r.payload)).collect();
    let expected: Vec<(u64, Vec<u8>)> = (10..152).map(|i| (i, payload(i))).collect();
    assert_eq!(got, expected, "same records, same order, same bytes");
    let s = b.stats();
    assert_eq!(s.unacked_records, 142);
    assert_eq!(s.oldest_unacked_appended_at_ms, Some(stamp(10)));
    for id in 10..152 {
        assert!(b.ack(id).unwrap());
    }
    let s = b.stats();
    assert_eq!(s.unacked_records, 0);
    assert_eq!(s.oldest_unacked_appended_at_ms, None);
}
