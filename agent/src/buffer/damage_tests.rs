//! Unit tests of recovery from damaged buffer files at open: each kind of damage (a flipped
//! byte, a cut segment, a deleted segment, an unreadable cursor or meta file) is quarantined
//! or reported, never deleted, and the rest of the buffer is kept; and the gaps a crash or
//! the `drop_oldest` policy leave are not mistaken for damage.

use std::fs;
use std::path::Path;

use super::segment::{list_segments, segment_path};
use super::*;

fn small(dir: &Path) -> BufferConfig {
    BufferConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 30,
        segment_bytes: 4096,
        when_full: WhenFull::DropOldest,
    }
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("reading-batch-{i:08}").into_bytes();
    p.resize(64, b'.');
    p
}

/// A closed buffer with records 0..130 in segments 0, 46 and 92 (46 records of 88 bytes
/// each), none acknowledged.
fn three_segments(dir: &Path) {
    let (mut b, _) = Buffer::open(small(dir)).unwrap();
    for i in 0..130 {
        assert_eq!(b.append(&payload(i)).unwrap(), AppendOutcome::Stored(i));
    }
    b.flush().unwrap();
    b.close().unwrap();
    assert_eq!(list_segments(dir).unwrap(), vec![0, 46, 92]);
}

fn drain(b: &mut Buffer) -> Vec<(u64, Vec<u8>)> {
    b.read(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|r| (r.id, r.payload))
        .collect()
}

fn expect(ids: impl Iterator<Item = u64>) -> Vec<(u64, Vec<u8>)> {
    ids.map(|i| (i, payload(i))).collect()
}

fn quarantine_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join(QUARANTINE_DIR))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_truncated_older_segment_keeps_its_whole_records_and_counts_the_rest_lost() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let path = segment_path(dir.path(), 46);
    let original = fs::read(&path).unwrap();
    // Cut in the middle of record 56 (the eleventh of the segment).
    fs::write(&path, &original[..32 + 10 * 88 + 30]).unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    let q = &report.quarantined[0];
    assert_eq!(q.reason, "record cut short");
    assert_eq!(
        (q.offset, q.kept_records, q.records_lost),
        (32 + 10 * 88, 10, Some(36))
    );
    assert_eq!(fs::read(&q.to).unwrap(), &original[..32 + 10 * 88 + 30]);
    assert_eq!(drain(&mut b), expect((0..56).chain(92..130)));
    assert_eq!(report.records_lost(), 36);
}

#[test]
fn a_flipped_byte_in_an_older_segment_header_moves_the_whole_file_aside() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let path = segment_path(dir.path(), 46);
    let mut bytes = fs::read(&path).unwrap();
    bytes[14] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    let q = &report.quarantined[0];
    assert_eq!((q.offset, q.kept_records, q.records_lost), (0, 0, Some(46)));
    assert!(!path.exists());
    assert_eq!(fs::read(&q.to).unwrap(), bytes, "moved, not deleted");
    assert_eq!(drain(&mut b), expect((0..46).chain(92..130)));
    assert!(
        report.missing.is_empty(),
        "the quarantine already accounts for the gap"
    );
}

#[test]
fn a_deleted_middle_segment_is_reported_missing_with_its_ids_and_the_rest_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    fs::remove_file(segment_path(dir.path(), 46)).unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.missing[0].ids, 46..92);
    assert_eq!(report.missing[0].before, segment_path(dir.path(), 92));
    assert_eq!(report.records_lost(), 46);
    assert_eq!(drain(&mut b), expect((0..46).chain(92..130)));
}

#[test]
fn a_deleted_oldest_segment_is_reported_missing_from_the_cursor_on() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    fs::remove_file(segment_path(dir.path(), 0)).unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.missing[0].ids, 0..46);
    assert_eq!(drain(&mut b), expect(46..130));
}

#[test]
fn the_id_gap_a_crash_leaves_before_the_next_segment_is_not_reported_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    for i in 0..10 {
        let _ = b.append(&payload(i)).unwrap();
    }
    b.flush().unwrap();
    drop(b); // crash: the next open skips to the id reservation
    let (mut b, _) = Buffer::open(small(dir.path())).unwrap();
    let id = match b.append(b"after the crash").unwrap() {
        AppendOutcome::Stored(id) => id,
        other => panic!("{other:?}"),
    };
    assert!(id >= RESERVE_BLOCK, "the crash skipped ids: {id}");
    b.flush().unwrap();
    drop(b);
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    assert!(report.quarantined.is_empty());
    assert_eq!(drain(&mut b).len(), 11);
}

#[test]
fn segments_dropped_by_drop_oldest_are_not_reported_missing_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = small(dir.path());
    cfg.max_bytes = 3 * 4096;
    let (mut b, _) = Buffer::open(cfg.clone()).unwrap();
    for i in 0..200 {
        let _ = b.append(&payload(i)).unwrap();
    }
    // No flush after the drops: the cursor was persisted by the drop itself.
    assert!(b.stats().dropped_oldest > 0);
    drop(b);
    let (_, report) = Buffer::open(cfg).unwrap();
    assert!(report.missing.is_empty(), "{:?}", report.missing);
}

#[test]
fn an_unreadable_cursor_file_is_quarantined_and_everything_kept_is_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let garbage = [0x5au8; 96];
    fs::write(dir.path().join("cursor"), garbage).unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert!(report.cursor_reset);
    assert_eq!(report.quarantined.len(), 1);
    assert_eq!(report.quarantined[0].from, dir.path().join("cursor"));
    assert_eq!(fs::read(&report.quarantined[0].to).unwrap(), garbage);
    assert!(report.missing.is_empty());
    assert_eq!(drain(&mut b), expect(0..130));
    b.close().unwrap();
    let (_, again) = Buffer::open(small(dir.path())).unwrap();
    assert!(
        !again.cursor_reset && again.quarantined.is_empty(),
        "a new cursor was written"
    );
}

#[test]
fn an_unreadable_meta_file_is_quarantined_and_a_new_epoch_is_chosen() {
    let dir = tempfile::tempdir().unwrap();
    three_segments(dir.path());
    let (b, _) = Buffer::open(small(dir.path())).unwrap();
    let epoch = b.epoch();
    drop(b);
    fs::write(dir.path().join("meta"), [0u8; 96]).unwrap();
    let (mut b, report) = Buffer::open(small(dir.path())).unwrap();
    assert!(report.meta_reset && !report.created);
    assert_ne!(b.epoch(), epoch);
    assert_eq!(quarantine_files(dir.path()), vec!["meta".to_string()]);
    assert_eq!(drain(&mut b), expect(0..130));
}

#[test]
fn a_second_quarantine_of_the_same_name_does_not_overwrite_the_first() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        fs::write(dir.path().join("cursor"), [0x11u8; 96]).unwrap();
        let (b, report) = Buffer::open(small(dir.path())).unwrap();
        assert!(report.cursor_reset);
        drop(b);
    }
    assert_eq!(quarantine_files(dir.path()), vec!["cursor", "cursor.1"]);
}
