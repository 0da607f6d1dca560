//! What the benchmarks that run real servers share: their knobs from the
//! environment, a wall clock in nanoseconds, command records that carry
//! their write time, and the summary of latency samples (p50 / p99 / max
//! per round, medians over rounds).

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
}
