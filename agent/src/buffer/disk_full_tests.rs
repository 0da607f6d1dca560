//! Unit tests of a buffer on a file system that fills up before the buffer's own cap: a real
//! `tmpfs` of 2 MiB (tests skip with a message where mounting is not permitted). A full disk
//! is handled like the cap: the when-full policy acts, counters say so, nothing fails, and
//! the space is used again once it is back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tributary_tests::TinyFs;

use super::*;
use crate::buffer_owner::{self, SpillRecord, Spilled};
use crate::stats::AgentStats;

fn on(fs: &TinyFs, when_full: WhenFull) -> BufferConfig {
    BufferConfig {
        dir: fs.path().join("buffer"),
        // Far beyond the file system: only the disk can be full here.
        max_bytes: 64 << 20,
        segment_bytes: 64 << 10,
        when_full,
    }
}

fn record(i: u64) -> Vec<u8> {
    let mut p = format!("record-{i:08}").into_bytes();
    p.resize(1000, b'.');
    p
}

#[test]
fn a_full_disk_under_drop_oldest_drops_old_segments_counts_them_and_keeps_the_newest() {
    let Some(fs) = TinyFs::mount("2m").unwrap() else {
        return;
    };
    let (mut b, _) = Buffer::open(on(&fs, WhenFull::DropOldest)).unwrap();
    for i in 0..4000u64 {
        let outcome = b.append(&record(i)).expect("a full disk is not an error");
        assert!(
            matches!(outcome, AppendOutcome::Stored(_)),
            "record {i}: {outcome:?}"
        );
        if i % 50 == 49 {
            b.flush().expect("flush on a full disk");
        }
    }
    b.flush().unwrap();
    let s = b.stats();
    assert!(s.disk_full > 0, "{s:?}");
    assert!(s.dropped_oldest > 2000, "{s:?}");
    assert!(s.bytes_on_disk < 2 << 20);
    assert_eq!(
        s.dropped_oldest + s.unacked_records,
        4000,
        "every record is kept or counted"
    );
    let records = b.read(usize::MAX).unwrap();
    assert_eq!(
        records.last().unwrap().payload,
        record(3999),
        "the newest is kept"
    );
}

#[test]
fn a_full_disk_under_block_refuses_until_space_returns_from_acks_or_elsewhere() {
    let Some(fs) = TinyFs::mount("2m").unwrap() else {
        return;
    };
    let (mut b, _) = Buffer::open(on(&fs, WhenFull::Block)).unwrap();
    let mut stored = 0u64;
    let full = loop {
        match b.append(&record(stored)) {
            Ok(AppendOutcome::Stored(_)) => stored += 1,
            Err(AppendError::Full { .. }) => break true,
            other => panic!("unexpected {other:?}"),
        }
        if stored % 50 == 0 {
            b.flush().unwrap();
        }
        if stored > 5000 {
            break false;
        }
    };
    assert!(full && stored > 1000, "blocked after {stored}");
    b.flush().unwrap();
    assert!(!b.would_fit(1000));
    // Acknowledging the oldest segment gives its space back.
    let first = b.read(100).unwrap();
    for r in &first {
        b.ack(r.id).unwrap();
    }
    assert!(b.would_fit(1000), "acks freed a segment");
    // Space taken and freed by something else counts too.
    let (hog, _) = fs.fill("hog").unwrap();
    assert!(matches!(
        b.append(&record(0)),
        Err(AppendError::Full { .. })
    ));
    std::fs::remove_file(hog).unwrap();
    assert!(b.would_fit(1000), "the space is back");
    assert!(matches!(b.append(&record(1)), Ok(AppendOutcome::Stored(_))));
    assert_eq!(
        b.stats().dropped_newest + b.stats().dropped_oldest,
        0,
        "block drops nothing"
    );
}

#[test]
fn a_full_disk_under_drop_newest_refuses_and_counts_new_records() {
    let Some(fs) = TinyFs::mount("2m").unwrap() else {
        return;
    };
    let (mut b, _) = Buffer::open(on(&fs, WhenFull::DropNewest)).unwrap();
    for i in 0..3000u64 {
        let _ = b.append(&record(i)).expect("a full disk is not an error");
        if i % 50 == 49 {
            b.flush().unwrap();
        }
    }
    b.flush().unwrap();
    let s = b.stats();
    assert!(s.dropped_newest > 500 && s.dropped_oldest == 0, "{s:?}");
    assert_eq!(s.dropped_newest + s.unacked_records, 3000);
    let records = b.read(1).unwrap();
    assert_eq!(records[0].payload, record(0), "the oldest is kept");
}

#[tokio::test]
async fn a_write_failing_with_enospc_reopens_the_buffer_instead_of_ending_its_thread() {
    let Some(fs) = TinyFs::mount("2m").unwrap() else {
        return;
    };
    let (mut b, _) = Buffer::open(on(&fs, WhenFull::DropOldest)).unwrap();
    // Appended, not yet written (they wait in the write buffer) ...
    for i in 0..10 {
        let _ = b.append(&record(i)).unwrap();
    }
    // ... when another program takes every free byte.
    let (hog, _) = fs.fill("hog").unwrap();
    let stats = Arc::new(AgentStats::default());
    let (handle, mut thread) = buffer_owner::spawn(b, stats.clone()).unwrap();
    let spill = |i: u64| {
        vec![SpillRecord {
            bytes: Bytes::from(record(i)),
            readings: 1,
            in_flight: false,
        }]
    };
    let outcome = handle.spill(spill(10)).await.expect("the thread survives");
    assert!(outcome.blocked && outcome.done.is_empty(), "{outcome:?}");
    // The gauges are published after the reply: poll them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stats.buffer_disk_full.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "disk_full never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(handle.read(10).await.is_ok(), "the buffer still serves");
    // Space is back: the retried spill is stored.
    std::fs::remove_file(hog).unwrap();
    let outcome = handle.spill(spill(11)).await.expect("spill");
    assert!(
        matches!(outcome.done[..], [Spilled::Stored(_)]),
        "{outcome:?}"
    );
    let read = handle.read(10).await.unwrap();
    assert_eq!(read.last().unwrap().bytes, Bytes::from(record(11)));
    handle.close().await.unwrap();
    thread.finished().await.expect("a clean end");
}
