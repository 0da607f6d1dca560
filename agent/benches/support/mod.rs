//! What the agent's benchmarks share: the kernel's view of a process
//! (`/proc/<pid>/status`, `/proc/<pid>/io`) and the hub's streams.

use async_nats::jetstream;
use std::time::Duration;

/// A `kB` field of `/proc/<pid>/status`, in bytes.
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A field of `/proc/<pid>/io` (`write_bytes:` counts what reached the
/// block layer, in whole pages).
pub fn proc_io(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The agent's stream (`tributary.>`) and the baseline's (`baseline.>`) on
/// the hub, file storage, 2-minute duplicate window, unbounded.
pub async fn create_streams(
    js: &jetstream::Context,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    for (name, subject) in [("TRIBUTARY", "tributary.>"), ("BASELINE", "baseline.>")] {
        js.get_or_create_stream(jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![subject.to_owned()],
            duplicate_window: Duration::from_secs(120),
            max_bytes: -1,
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}
