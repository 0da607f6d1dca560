//! What the benchmarks that run real servers share: their knobs from the
//! environment, a wall clock in nanoseconds, command records that carry
//! their write time, the summary of latency samples (p50 / p99 / max
//! per round, medians over rounds), and the CPU time and memory the kernel
//! counts for a process or for threads of this one (`/proc`).

/// The number in environment variable `name`, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

/// The write time (ns) a command's id carries: `t<ns>`.
pub fn id_time(id: &str) -> Option<u64> {
    id.strip_prefix('t')?.parse().ok()
}

/// The write time (ns) in the id of a command record's JSON text.
pub fn record_time(text: &str) -> Option<u64> {
    id_time(text.split("\"id\":\"").nth(1)?.split('"').next()?)
}

#[cfg(feature = "kafka")]
/// Writes `payload` to `topic` with key `pi-1`, waiting for the broker.
pub async fn send(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    payload: &[u8],
) -> Result<(), rdkafka::error::KafkaError> {
    producer
        .send(
            rdkafka::producer::FutureRecord::to(topic)
                .key("pi-1")
                .payload(payload),
            std::time::Duration::from_secs(10),
        )
        .await
        .map(|_| ())
        .map_err(|(e, _)| e)
}

#[cfg(feature = "kafka")]
/// Writes `n` command records for `actuator` of device `pi-1` to `topic`
/// at `rate` per second, each with its write time as its id (`t<ns>`).
pub async fn write_commands(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    actuator: &str,
    n: u64,
    rate: u64,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut tick =
        tokio::time::interval(std::time::Duration::from_nanos(1_000_000_000 / rate.max(1)));
    for _ in 0..n {
        tick.tick().await;
        let payload = format!(
            r#"{{"actuator":"{actuator}","value":1,"id":"t{}"}}"#,
            now_ns()
        );
        send(producer, topic, payload.as_bytes()).await?;
    }
    Ok(())
}

/// `[p50, p99, max]` of `samples` (0 for each when there are none).
pub fn summary(mut samples: Vec<f64>) -> [f64; 3] {
    if samples.is_empty() {
        return [0.0; 3];
    }
    samples.sort_by(f64::total_cmp);
    let q = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    [q(0.5), q(0.99), samples[samples.len() - 1]]
}

/// The median over `rounds` of field `i` of their summaries.
pub fn median(rounds: &[[f64; 3]], i: usize) -> f64 {
    let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The median of `values` (the upper one of an even count; 0 when empty).
pub fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// CPU seconds (user + system) process `pid` has used so far, from
/// `/proc/<pid>/stat`; 0 when unreadable (the process is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) this process has used so far.
pub fn self_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/self/stat")
}

/// CPU seconds used so far by the threads of this process whose name
/// (`/proc/self/task/<tid>/comm`) `named` accepts: e.g. librdkafka's
/// `rdk:` threads, to leave out of what the rest of the process spent.
/// Threads that already ended are not counted.
pub fn self_threads_cpu_seconds(named: impl Fn(&str) -> bool) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| named(c.trim_end()))
        })
        .map(|t| stat_cpu_seconds(&t.path().join("stat").to_string_lossy()))
        .sum()
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`…) in bytes;
/// `pid` `None`: this process. 0 when unreadable.
pub fn status_bytes(pid: Option<u32>, field: &str) -> u64 {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |p| format!("/proc/{p}/status"),
    );
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// utime + stime of a `stat` file (a process's or a thread's), in seconds.
fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    parse_stat_cpu(&stat)
}

fn parse_stat_cpu(stat: &str) -> f64 {
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // In USER_HZ ticks: 100 per second on every Linux architecture.
    (ticks(11) + ticks(12)) / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_holds_the_median_the_99th_percentile_and_the_maximum() {
        let s = summary((1..=100).rev().map(f64::from).collect());
        assert_eq!(s, [51.0, 99.0, 100.0]);
        assert_eq!(summary(Vec::new()), [0.0; 3]);
        assert_eq!(median(&[[3.0; 3], [1.0; 3], [2.0; 3]], 1), 2.0);
    }

    #[test]
    fn a_command_record_gives_back_the_write_time_of_its_id() {
        let text = r#"{"actuator":"vent","value":1,"id":"t1764000000123456789"}"#;
        assert_eq!(record_time(text), Some(1_764_000_000_123_456_789));
        assert_eq!(id_time("t42"), Some(42));
        assert_eq!(id_time("commands:0:1"), None);
        assert_eq!(record_time(r#"{"value":1}"#), None);
    }

    #[test]
    fn cpu_time_is_read_from_the_stat_line_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(parse_stat_cpu(stat), 3.0);
        assert_eq!(parse_stat_cpu("garbage"), 0.0);
        assert!(status_bytes(None, "VmRSS") > 0);
        assert!(self_cpu_seconds() >= 0.0);
    }
}
