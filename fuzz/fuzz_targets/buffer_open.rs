//! Fuzz target: the disk buffer's segment reader and recovery on open,
//! against a model. The input writes a real buffer (records of the sizes it
//! names, in 4 KiB segments, some acknowledged), then damages its files
//! (flipped bytes, cut files, deleted files, overwritten cursor or meta),
//! then opens it again. Properties: open succeeds; every record handed out
//! afterwards is byte for byte a record that was appended under that id
//! (damage is never delivered); reading never fails; and a second open of
//! the repaired directory finds nothing more to repair and the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use tributary_agent::buffer::{AppendOutcome, Buffer, BufferConfig};

fn config(dir: &Path) -> BufferConfig {
    let mut c = BufferConfig::new(dir);
    c.segment_bytes = 4096;
    c.max_bytes = 64 * 4096;
    c
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn read_all(b: &mut Buffer) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let batch = b.read(64).expect("reading a repaired buffer never fails");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.into_iter().map(|r| (r.id, r.payload)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 48);
    if rest.len() < n {
        return;
    }
    let (sizes, damage) = rest.split_at(n);
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let tmp = tempfile::tempdir_in(base).expect("temp dir");
    let dir = tmp.path().join("buffer");

    // Write: record i is `size` bytes of i, acknowledged when its size is odd
    // and every earlier one was acknowledged (a prefix, as acks usually go).
    let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    {
        let (mut b, _) = Buffer::open(config(&dir)).expect("open fresh");
        for (i, &s) in sizes.iter().enumerate() {
            let payload = vec![i as u8; usize::from(s) * 8];
            match b.append(&payload).expect("append") {
                AppendOutcome::Stored(id) => {
                    model.insert(id, payload);
                }
                AppendOutcome::DroppedNewest => unreachable!("drop_oldest is the default"),
            }
            if i % 7 == 6 {
                b.flush().expect("flush");
            }
        }
        b.flush().expect("flush");
        let mut acking = true;
        for r in b.read(usize::MAX).expect("read") {
            acking &= r.payload.len() % 16 == 8;
            if acking {
                b.ack(r.id).expect("ack");
            }
        }
        b.flush().expect("flush");
        // Half the time a clean close, else a crash (drop).
        if sizes.first().is_some_and(|s| s % 2 == 0) {
            b.close().expect("close");
        }
    }

    // Damage: 4 bytes per operation.
    for op in damage.chunks_exact(4).take(8) {
        let fs_now = files(&dir);
        if fs_now.is_empty() {
            break;
        }
        let path = &fs_now[usize::from(op[1]) % fs_now.len()];
        let Ok(mut bytes) = fs::read(path) else {
            continue;
        };
        let at = usize::from(u16::from_le_bytes([op[2], op[3]]));
        match op[0] % 4 {
            0 if !bytes.is_empty() => {
                let i = at % bytes.len();
                bytes[i] ^= op[3] | 1;
                fs::write(path, &bytes).expect("flip");
            }
            1 => {
                bytes.truncate(at % (bytes.len() + 1));
                fs::write(path, &bytes).expect("cut");
            }
            2 => fs::remove_file(path).expect("delete"),
            _ => {
                bytes.extend_from_slice(&op[1..]);
                fs::write(path, &bytes).expect("grow");
            }
        }
    }

    let (mut b, report) = Buffer::open(config(&dir)).expect("open repairs, never fails");
    let got = read_all(&mut b);
    for (id, payload) in &got {
        assert_eq!(
            model.get(id),
            Some(payload),
            "record {id} handed out after recovery is not the one appended"
        );
    }
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in order: {ids:?}");
    assert!(report.records >= got.len() as u64 || report.cursor_reset);
    drop(b);

    let (mut b, again) = Buffer::open(config(&dir)).expect("second open");
    assert!(
        again.quarantined.is_empty() && again.torn_tail.is_none(),
        "a repaired buffer needs no second repair: {again:?}"
    );
    assert_eq!(
        read_all(&mut b),
        got,
        "a second open finds the same records"
    );
});
