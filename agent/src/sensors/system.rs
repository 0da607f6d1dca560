//! `system` sensors: built-in metrics of the Pi (CPU temperature, load,
//! memory, free disk space of the buffer's filesystem, uptime) and of the
//! agent itself (buffer depth and bytes, oldest unsent reading's age, drops),
//! the latter from the shared [`AgentStats`].

use super::error::SensorError;
use super::file::{read_number, read_text};
use crate::stats::AgentStats;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tributary_config::{SystemMetric, SystemSensor};
use tributary_wire::Value;

/// Default thermal zone of the CPU.
const THERMAL_ZONE: &str = "/sys/class/thermal/thermal_zone0/temp";

/// A configured `system` sensor.
#[derive(Debug, Clone)]
pub(crate) struct SystemSource {
    metric: SystemMetric,
    thermal_zone: PathBuf,
    proc_dir: PathBuf,
    buffer_dir: PathBuf,
    stats: Arc<AgentStats>,
}

impl SystemSource {
    pub(crate) fn new(cfg: &SystemSensor, buffer_dir: PathBuf, stats: Arc<AgentStats>) -> Self {
        SystemSource {
            metric: cfg.metric,
            thermal_zone: cfg
                .thermal_zone
                .clone()
                .unwrap_or_else(|| PathBuf::from(THERMAL_ZONE)),
            proc_dir: PathBuf::from("/proc"),
            buffer_dir,
            stats,
        }
    }

    /// Reads the metric once.
    pub(crate) async fn read(&self) -> Result<Value, SensorError> {
        let s = &self.stats;
        let int = |v: u64| Value::Int(i64::try_from(v).unwrap_or(i64::MAX));
        match self.metric {
            SystemMetric::BufferDepth => Ok(int(s.buffer_records.load(Ordering::Relaxed))),
            SystemMetric::BufferBytes => Ok(int(s.buffer_bytes.load(Ordering::Relaxed))),
            SystemMetric::Dropped => Ok(int(s.dropped_readings.load(Ordering::Relaxed))),
            SystemMetric::OldestUnsentAge => {
                let oldest = s.oldest_unacked_unix_ms.load(Ordering::Relaxed);
                let age_ms = if oldest == 0 {
                    0
                } else {
                    super::now_unix_ms().saturating_sub(oldest)
                };
                Ok(Value::Float(age_ms as f64 / 1000.0))
            }
            _ => {
                let this = self.clone();
                super::blocking(move || this.read_os()).await
            }
        }
    }

    /// The metrics that come from the kernel (blocking).
    fn read_os(&self) -> Result<Value, SensorError> {
        match self.metric {
            SystemMetric::CpuTemperature => {
                Ok(Value::Float(read_number(&self.thermal_zone)? / 1000.0))
            }
            SystemMetric::Load1 => self.loadavg(0, "load1"),
            SystemMetric::Load5 => self.loadavg(1, "load5"),
            SystemMetric::Load15 => self.loadavg(2, "load15"),
            SystemMetric::MemoryAvailable => {
                let path = self.proc_dir.join("meminfo");
                let text = read_text(&path)?;
                let kib = text
                    .lines()
                    .find_map(|l| l.strip_prefix("MemAvailable:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or(SensorError::MissingField {
                        path,
                        field: "MemAvailable",
                    })?;
                Ok(Value::Int(kib.saturating_mul(1024)))
            }
            SystemMetric::Uptime => {
                let path = self.proc_dir.join("uptime");
                let secs = first_field(&path, 0, "uptime")?;
                Ok(Value::Float(secs))
            }
            SystemMetric::DiskFree => disk_free(&self.buffer_dir),
            SystemMetric::BufferDepth
            | SystemMetric::BufferBytes
            | SystemMetric::OldestUnsentAge
            | SystemMetric::Dropped => unreachable!("answered from AgentStats"),
        }
    }

    fn loadavg(&self, field: usize, name: &'static str) -> Result<Value, SensorError> {
        first_field(&self.proc_dir.join("loadavg"), field, name).map(Value::Float)
    }
}

/// Field `n` (whitespace separated) of a /proc file, as a float.
fn first_field(path: &Path, n: usize, name: &'static str) -> Result<f64, SensorError> {
    read_text(path)?
        .split_whitespace()
        .nth(n)
        .and_then(|f| f.parse::<f64>().ok())
        .ok_or_else(|| SensorError::MissingField {
            path: path.to_owned(),
            field: name,
        })
}

/// Bytes available to the agent on the filesystem of `dir` (or of its
/// nearest existing parent, before the buffer directory is created).
fn disk_free(dir: &Path) -> Result<Value, SensorError> {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(dir);
    let st = rustix::fs::statvfs(existing).map_err(|e| SensorError::Statvfs {
        path: existing.to_owned(),
        source: e.into(),
    })?;
    let bytes = st.f_bavail.saturating_mul(st.f_frsize);
    Ok(Value::Int(i64::try_from(bytes).unwrap_or(i64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn source(
        metric: &str,
        proc_dir: &Path,
        zone: Option<&Path>,
        stats: Arc<AgentStats>,
    ) -> SystemSource {
        let zone = zone
            .map(|z| format!("thermal_zone = {:?}\n", z.display().to_string()))
            .unwrap_or_default();
        let cfg = crate::sensors::test_config(&format!(
            "[[sensors.system]]\nid = \"m\"\nmetric = \"{metric}\"\n{zone}"
        ));
        let mut s = SystemSource::new(&cfg.sensors.system[0], std::env::temp_dir(), stats);
        s.proc_dir = proc_dir.to_owned();
        s
    }

    async fn read(metric: &str, proc_dir: &Path) -> Result<Value, SensorError> {
        source(metric, proc_dir, None, Arc::default()).read().await
    }

    #[tokio::test]
    async fn the_real_proc_gives_load_memory_and_uptime() {
        let proc = Path::new("/proc");
        for m in ["load1", "load5", "load15", "uptime"] {
            let Value::Float(f) = read(m, proc).await.unwrap() else {
                panic!("{m}")
            };
            assert!(f >= 0.0 && f.is_finite(), "{m} = {f}");
        }
        let Value::Int(mem) = read("memory_available", proc).await.unwrap() else {
            panic!()
        };
        assert!(mem > 1024 * 1024, "{mem}");
        let Value::Int(free) = read("disk_free", proc).await.unwrap() else {
            panic!()
        };
        assert!(free > 0, "{free}");
    }

    #[tokio::test]
    async fn a_fake_proc_gives_exact_figures() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("loadavg"), "0.52 0.58 0.59 1/389 12345\n").unwrap();
        fs::write(
            dir.path().join("meminfo"),
            "MemTotal:         948304 kB\nMemFree:          411212 kB\nMemAvailable:     712396 kB\n",
        )
        .unwrap();
        fs::write(dir.path().join("uptime"), "350735.47 234388.90\n").unwrap();
        assert_eq!(read("load1", dir.path()).await.unwrap(), Value::Float(0.52));
        assert_eq!(
            read("load15", dir.path()).await.unwrap(),
            Value::Float(0.59)
        );
        assert_eq!(
            read("memory_available", dir.path()).await.unwrap(),
            Value::Int(712_396 * 1024)
        );
        assert_eq!(
            read("uptime", dir.path()).await.unwrap(),
            Value::Float(350_735.47)
        );
    }

    #[tokio::test]
    async fn a_malformed_or_missing_proc_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("meminfo"), "MemTotal: 948304 kB\n").unwrap();
        fs::write(dir.path().join("loadavg"), "\n").unwrap();
        let err = read("memory_available", dir.path()).await.unwrap_err();
        assert!(
            matches!(
                err,
                SensorError::MissingField {
                    field: "MemAvailable",
                    ..
                }
            ),
            "{err}"
        );
        let err = read("load5", dir.path()).await.unwrap_err();
        assert!(matches!(err, SensorError::MissingField { .. }), "{err}");
        let err = read("uptime", dir.path()).await.unwrap_err();
        assert!(matches!(err, SensorError::Read { .. }), "{err}");
    }

    #[tokio::test]
    async fn cpu_temperature_comes_from_the_thermal_zone_in_degrees() {
        let dir = tempfile::tempdir().unwrap();
        let zone = dir.path().join("thermal_zone0/temp");
        fs::create_dir_all(zone.parent().unwrap()).unwrap();
        fs::write(&zone, "47236\n").unwrap();
        let s = source("cpu_temperature", dir.path(), Some(&zone), Arc::default());
        assert_eq!(s.read().await.unwrap(), Value::Float(47.236));
        let absent = dir.path().join("thermal_zone9/temp");
        let s = source("cpu_temperature", dir.path(), Some(&absent), Arc::default());
        assert!(matches!(s.read().await, Err(SensorError::Read { .. })));
    }

    #[tokio::test]
    async fn the_agents_own_health_comes_from_the_shared_stats() {
        let stats = Arc::new(AgentStats::default());
        stats.buffer_records.store(7, Ordering::Relaxed);
        stats.buffer_bytes.store(4096, Ordering::Relaxed);
        stats.dropped_readings.store(3, Ordering::Relaxed);
        let proc = Path::new("/proc");
        let get = |m: &str| source(m, proc, None, stats.clone());
        assert_eq!(get("buffer_depth").read().await.unwrap(), Value::Int(7));
        assert_eq!(get("buffer_bytes").read().await.unwrap(), Value::Int(4096));
        assert_eq!(get("dropped").read().await.unwrap(), Value::Int(3));
        assert_eq!(
            get("oldest_unsent_age").read().await.unwrap(),
            Value::Float(0.0)
        );
        stats
            .oldest_unacked_unix_ms
            .store(crate::sensors::now_unix_ms() - 90_000, Ordering::Relaxed);
        let Value::Float(age) = get("oldest_unsent_age").read().await.unwrap() else {
            panic!()
        };
        assert!((90.0..95.0).contains(&age), "{age}");
    }

    #[tokio::test]
    async fn disk_free_of_a_buffer_dir_not_yet_created_uses_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let Value::Int(free) = disk_free(&dir.path().join("not/yet")).unwrap() else {
            panic!()
        };
        assert!(free > 0);
    }
}
