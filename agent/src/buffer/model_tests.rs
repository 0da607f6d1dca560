//! Property test: random appends, flushes, reads, acks, rewinds and reopens (clean, or crash
//! with an injected torn write) compared with an in-memory model of what must, may and must
//! not be delivered.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

use proptest::prelude::*;

use super::frame::{Decoded, SEGMENT_HEADER_LEN, decode_frame};
use super::segment::{list_segments, segment_path};
use super::*;

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Flush,
    Read(usize),
    Ack(usize),
    Rewind,
    ReopenClean,
    /// Drop without flush, then cut the newest segment somewhere past its last flushed record
    /// (at this fraction of the remaining bytes), if given.
    ReopenCrash(Option<f64>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        40 => (0usize..1500).prop_map(Op::Append),
        10 => Just(Op::Flush),
        15 => (1usize..20).prop_map(Op::Read),
        20 => any::<usize>().prop_map(Op::Ack),
        3 => Just(Op::Rewind),
        2 => Just(Op::ReopenClean),
        4 => proptest::option::of(0.0f64..=1.0).prop_map(Op::ReopenCrash),
    ]
}

#[derive(Debug)]
struct MRec {
    payload: Vec<u8>,
    committed: bool,
    acked: bool,
}

#[derive(Debug, Default)]
struct Model {
    recs: BTreeMap<u64, MRec>,
    max_issued: Option<u64>,
    /// Handed out by the current buffer instance and not acked.
    handed: BTreeSet<u64>,
    /// Last id read since the last rewind/reopen.
    last_read: Option<u64>,
    persisted_floor: u64,
    counter: u64,
}

impl Model {
    /// Lowest unacked id; with nothing unacked, the next id to be issued.
    fn floor(&self) -> u64 {
        self.recs
            .iter()
            .find(|(_, r)| !r.acked)
            .map_or(self.max_issued.map_or(0, |x| x + 1), |(id, _)| *id)
    }

    fn flush(&mut self) {
        for r in self.recs.values_mut() {
            r.committed = true;
        }
        self.persisted_floor = self.floor();
    }
}

fn make_payload(counter: u64, len: usize) -> Vec<u8> {
    let seed = counter.to_le_bytes();
    (0..len).map(|i| seed[i % 8] ^ (i as u8)).collect()
}

/// End offset of the last record with id below `committed_end` in the newest segment.
fn committed_offset(path: &Path, committed_end: u64) -> u64 {
    let mut buf = Vec::new();
    File::open(path).unwrap().read_to_end(&mut buf).unwrap();
    let mut off = SEGMENT_HEADER_LEN;
    let mut last_committed_end = 0;
    while off < buf.len() {
        match decode_frame(&buf[off..], usize::MAX) {
            Decoded::Frame(f) => {
                off += f.encoded_len();
                if f.id < committed_end {
                    last_committed_end = off;
                }
            }
            _ => break,
        }
    }
    last_committed_end as u64
}

fn reopen_and_check(cfg: &BufferConfig, m: &mut Model) -> Result<Buffer, TestCaseError> {
    let (mut b, _report) = Buffer::open(cfg.clone()).unwrap();
    let delivered = b.read(usize::MAX).unwrap();
    let mut prev: Option<u64> = None;
    let ids: BTreeSet<u64> = delivered.iter().map(|r| r.id).collect();
    for r in &delivered {
        prop_assert!(
            prev.is_none_or(|p| r.id > p),
            "ids out of order after reopen"
        );
        prev = Some(r.id);
        let Some(mr) = m.recs.get(&r.id) else {
            return Err(TestCaseError::fail(format!(
                "unknown record {} delivered",
                r.id
            )));
        };
        prop_assert_eq!(&r.payload, &mr.payload, "payload of {} differs", r.id);
        prop_assert!(
            !mr.acked || r.id >= m.persisted_floor,
            "record {} acked below the persisted cursor came back",
            r.id
        );
    }
    let mut gap_seen = false;
    for (id, r) in &m.recs {
        if r.committed && !r.acked {
            prop_assert!(ids.contains(id), "flushed unacked record {} lost", id);
        }
        if !r.committed {
            if ids.contains(id) {
                prop_assert!(!gap_seen, "surviving unflushed records are not a prefix");
            } else {
                gap_seen = true;
            }
        }
    }
    m.recs.retain(|id, r| {
        if ids.contains(id) {
            r.committed = true;
            r.acked = false;
            true
        } else {
            false
        }
    });
    m.handed = ids;
    b.rewind();
    m.last_read = None;
    Ok(b)
}

fn run(ops: Vec<Op>, segment_bytes: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BufferConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: 1 << 40,
        segment_bytes,
        when_full: WhenFull::DropOldest,
    };
    let (mut b, _) = Buffer::open(cfg.clone()).unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Append(len) => {
                m.counter += 1;
                let payload = make_payload(m.counter, len);
                let AppendOutcome::Stored(id) = b.append(&payload).unwrap() else {
                    return Err(TestCaseError::fail("dropped without a cap"));
                };
                prop_assert!(m.max_issued.is_none_or(|x| id > x), "id {} repeated", id);
                m.max_issued = Some(id);
                m.recs.insert(
                    id,
                    MRec {
                        payload,
                        committed: false,
                        acked: false,
                    },
                );
            }
            Op::Flush => {
                b.flush().unwrap();
                m.flush();
            }
            Op::Read(max) => {
                let got = b.read(max).unwrap();
                let want: Vec<u64> = m
                    .recs
                    .range(m.last_read.map_or(0, |x| x + 1)..)
                    .filter(|(_, r)| r.committed && !r.acked)
                    .map(|(id, _)| *id)
                    .take(max)
                    .collect();
                let got_ids: Vec<u64> = got.iter().map(|r| r.id).collect();
                prop_assert_eq!(&got_ids, &want);
                for r in &got {
                    prop_assert_eq!(&r.payload, &m.recs[&r.id].payload);
                    m.handed.insert(r.id);
                }
                if let Some(last) = got_ids.last() {
                    m.last_read = Some(*last);
                }
            }
            Op::Ack(pick) => {
                if m.handed.is_empty() {
                    continue;
                }
                let id = *m.handed.iter().nth(pick % m.handed.len()).unwrap();
                prop_assert!(b.ack(id).unwrap(), "ack of handed-out {} refused", id);
                m.handed.remove(&id);
                m.recs.get_mut(&id).unwrap().acked = true;
                prop_assert!(!b.ack(id).unwrap());
            }
            Op::Rewind => {
                b.rewind();
                m.last_read = None;
            }
            Op::ReopenClean => {
                b.close().unwrap();
                m.flush();
                b = reopen_and_check(&cfg, &mut m)?;
            }
            Op::ReopenCrash(tear) => {
                drop(b);
                if let (Some(frac), Some(&newest)) =
                    (tear, list_segments(dir.path()).unwrap().last())
                {
                    let path = segment_path(dir.path(), newest);
                    let committed_end = m
                        .recs
                        .iter()
                        .filter(|(_, r)| r.committed)
                        .map(|(id, _)| id + 1)
                        .max()
                        .unwrap_or(0);
                    let lo = committed_offset(&path, committed_end);
                    let len = std::fs::metadata(&path).unwrap().len();
                    let cut = lo + ((len - lo) as f64 * frac) as u64;
                    let f = OpenOptions::new().write(true).open(&path).unwrap();
                    f.set_len(cut).unwrap();
                }
                b = reopen_and_check(&cfg, &mut m)?;
            }
        }
    }
    // Final check: after a crash everything flushed and unacked is still there.
    drop(b);
    reopen_and_check(&cfg, &mut m)?;
    Ok(())
}

proptest! {
    // 40 cases by default; PROPTEST_CASES=N for a longer soak.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(40),
        ..ProptestConfig::default()
    })]

    #[test]
    fn delivered_records_match_the_model_across_crashes_and_torn_writes(
        ops in proptest::collection::vec(op(), 1..160),
        big_segments in any::<bool>(),
    ) {
        run(ops, if big_segments { 131_072 } else { 4096 })?;
    }
}
