//! Disk buffer benchmark: our segmented log against sled 0.34 on the agent's workload.
//!
//! 1,000,000 records of 64 bytes, a flush (group commit) every 100 appends, then a full drain
//! (read 100, ack them, flush). Each contender runs in its own child process so that peak RSS
//! (`VmHWM`), CPU time and bytes written (`/proc/self/io`) are its own. Prints figures; asserts
//! nothing about speed.
//!
//! Run: `cargo bench -p tributary-agent --bench buffer` (optionally `-- --records N`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tributary_agent::buffer::{AppendOutcome, Buffer, BufferConfig, ReadBatch, WhenFull};

const PAYLOAD: usize = 64;
const BATCH: usize = 100;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let records = arg_value(&args, "--records").unwrap_or(1_000_000);
    if let Some(which) = args
        .iter()
        .position(|a| a == "--child")
        .map(|i| args[i + 1].clone())
    {
        let dir = args[args.iter().position(|a| a == "--dir").unwrap() + 1].clone();
        child(&which, Path::new(&dir), records);
        return;
    }
    println!(
        "buffer benchmark: {records} records x {PAYLOAD} B, flush every {BATCH} appends, drain = read {BATCH} + ack + flush"
    );
    println!(
        "{:<10} {:>12} {:>12} {:>10} {:>16} {:>16} {:>12} {:>12} {:>12}",
        "contender",
        "append/s",
        "drain/s",
        "peak RSS",
        "disk B/payload B",
        "(append phase)",
        "CPU us/rec",
        "peak disk",
        "left after"
    );
    for which in ["tributary", "sled"] {
        let tmp = tempfile::tempdir_in(bench_tmp()).expect("temp dir");
        let out = Command::new(std::env::current_exe().expect("own path"))
            .args(["--child", which, "--dir"])
            .arg(tmp.path())
            .args(["--records", &records.to_string()])
            .output()
            .expect("run child");
        if !out.status.success() {
            eprintln!("{which} failed: {}", String::from_utf8_lossy(&out.stderr));
            continue;
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let payload_bytes = (records * PAYLOAD as u64) as f64;
        println!(
            "{:<10} {:>12.0} {:>12.0} {:>8.1}MB {:>16.2} {:>16.2} {:>12.2} {:>10.1}MB {:>10.2}MB",
            which,
            get("append_per_s"),
            get("drain_per_s"),
            get("vmhwm_kb") / 1024.0,
            get("write_bytes") / payload_bytes,
            get("append_write_bytes") / payload_bytes,
            get("cpu_us") / records as f64,
            get("peak_disk") / 1e6,
            get("left_disk") / 1e6,
        );
        println!("           raw: {}", line.trim());
    }
}

fn bench_tmp() -> std::path::PathBuf {
    std::env::var_os("BENCH_TMPDIR").map_or_else(std::env::temp_dir, Into::into)
}

fn arg_value(args: &[String], name: &str) -> Option<u64> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn child(which: &str, dir: &Path, records: u64) {
    let payload = [0x5au8; PAYLOAD];
    let io0 = proc_io();
    let cpu0 = cpu_us();
    let (append_s, drain_s, peak_disk, append_write_bytes) = match which {
        "tributary" => run_ours(dir, records, &payload),
        "sled" => run_sled(dir, records, &payload),
        other => panic!("unknown contender {other}"),
    };
    let cpu = cpu_us() - cpu0;
    let io1 = proc_io();
    println!(
        "append_per_s={:.0} drain_per_s={:.0} vmhwm_kb={} write_bytes={} append_write_bytes={} cancelled_write_bytes={} wchar={} cpu_us={} peak_disk={} left_disk={}",
        records as f64 / append_s,
        records as f64 / drain_s,
        vm_hwm_kb(),
        io1.0 - io0.0,
        append_write_bytes - io0.0,
        io1.1 - io0.1,
        io1.2 - io0.2,
        cpu,
        peak_disk,
        disk_usage(dir),
    );
}

fn run_ours(dir: &Path, records: u64, payload: &[u8]) -> (f64, f64, u64, u64) {
    let cfg = BufferConfig {
        dir: dir.join("buf"),
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        when_full: WhenFull::Block,
    };
    let (mut b, _) = Buffer::open(cfg).expect("open");
    let t = Instant::now();
    for i in 0..records {
        match b.append(payload).expect("append") {
            AppendOutcome::Stored(_) => {}
            AppendOutcome::DroppedNewest => panic!("dropped"),
        }
        if (i + 1) % BATCH as u64 == 0 {
            b.flush().expect("flush");
        }
    }
    b.flush().expect("flush");
    let append_s = t.elapsed().as_secs_f64();
    let append_write_bytes = proc_io().0;
    let peak_disk = disk_usage(dir);
    let t = Instant::now();
    let mut batch = ReadBatch::new();
    let mut ids = Vec::with_capacity(BATCH);
    let mut drained = 0u64;
    loop {
        b.read_into(&mut batch, BATCH).expect("read");
        if batch.is_empty() {
            break;
        }
        ids.clear();
        ids.extend(batch.iter().map(|r| r.id));
        for id in &ids {
            b.ack(*id).expect("ack");
        }
        drained += ids.len() as u64;
        b.flush().expect("flush");
    }
    let drain_s = t.elapsed().as_secs_f64();
    assert_eq!(drained, records);
    b.close().expect("close");
    (append_s, drain_s, peak_disk, append_write_bytes)
}

fn run_sled(dir: &Path, records: u64, payload: &[u8]) -> (f64, f64, u64, u64) {
    let db = sled::Config::new()
        .path(dir.join("sled"))
        .cache_capacity(1 << 20)
        .open()
        .expect("open sled");
    let t = Instant::now();
    for i in 0..records {
        db.insert(i.to_be_bytes(), payload).expect("insert");
        if (i + 1) % BATCH as u64 == 0 {
            db.flush().expect("flush");
        }
    }
    db.flush().expect("flush");
    let append_s = t.elapsed().as_secs_f64();
    let append_write_bytes = proc_io().0;
    let peak_disk = disk_usage(dir);
    let t = Instant::now();
    let mut drained = 0u64;
    let mut keys = Vec::with_capacity(BATCH);
    loop {
        keys.clear();
        for kv in db.iter().take(BATCH) {
            let (k, v) = kv.expect("iter");
            assert_eq!(v.len(), PAYLOAD);
            keys.push(k);
        }
        if keys.is_empty() {
            break;
        }
        for k in &keys {
            db.remove(k).expect("remove");
        }
        drained += keys.len() as u64;
        db.flush().expect("flush");
    }
    let drain_s = t.elapsed().as_secs_f64();
    assert_eq!(drained, records);
    drop(db);
    (append_s, drain_s, peak_disk, append_write_bytes)
}

/// (write_bytes, cancelled_write_bytes, wchar) of this process.
fn proc_io() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        get("write_bytes:"),
        get("cancelled_write_bytes:"),
        get("wchar:"),
    )
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// User + system CPU time of this process in microseconds.
fn cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks * 10_000 // USER_HZ = 100
}

/// Allocated bytes of all files under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            total += disk_usage(&e.path());
        } else {
            total += m.blocks() * 512;
        }
    }
    total
}
