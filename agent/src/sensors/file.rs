//! `file` sensors: the first number in a file such as a hwmon
//! `temp1_input`, a thermal zone's `temp` or an IIO `in_temp_input`, times
//! `scale` plus `offset`. The path may be a glob (hwmon numbers change from
//! boot to boot); it is resolved at every read and must match exactly one
//! path.

use super::error::SensorError;
use super::parse::{first_number, snippet};
use std::io::Read;
use std::path::{Path, PathBuf};
use tributary_config::FileSensor;
use tributary_wire::Value;

/// Most bytes read from a sysfs or /proc file.
const MAX_FILE: u64 = 16 * 1024;

/// Reads the start of a small text file (blocking).
pub(crate) fn read_text(path: &Path) -> Result<String, SensorError> {
    let read = || -> std::io::Result<String> {
        let mut buf = Vec::with_capacity(64);
        std::fs::File::open(path)?
            .take(MAX_FILE)
            .read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().map_err(|source| SensorError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The first number of a file (blocking).
pub(crate) fn read_number(path: &Path) -> Result<f64, SensorError> {
    let text = read_text(path)?;
    first_number(&text).ok_or_else(|| SensorError::NoNumber {
        origin: path.display().to_string(),
        snippet: snippet(&text),
    })
}

/// The one path `pattern` names (blocking).
pub(crate) fn resolve(pattern: &str) -> Result<PathBuf, SensorError> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(PathBuf::from(pattern));
    }
    let bad = |reason: String| SensorError::BadGlob {
        pattern: pattern.to_owned(),
        reason,
    };
    let paths = glob::glob(pattern).map_err(|e| bad(e.to_string()))?;
    let mut found = Vec::new();
    let mut count = 0;
    for p in paths {
        // Unreadable directories on the way are skipped, as `ls` would.
        let Ok(p) = p else { continue };
        count += 1;
        if found.len() < 4 {
            found.push(p);
        }
    }
    match count {
        0 => Err(SensorError::GlobNoMatch {
            pattern: pattern.to_owned(),
        }),
        1 => Ok(found.pop().expect("one match")),
        _ => Err(SensorError::GlobSeveral {
            pattern: pattern.to_owned(),
            count,
            matches: found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// A configured `file` sensor.
#[derive(Debug, Clone)]
pub(crate) struct FileSource {
    pattern: String,
    scale: f64,
    offset: f64,
}

impl FileSource {
    pub(crate) fn new(cfg: &FileSensor) -> Self {
        FileSource {
            pattern: cfg.path.clone(),
            scale: cfg.scale,
            offset: cfg.offset,
        }
    }

    /// Reads the sensor once.
    pub(crate) async fn read(&self) -> Result<Value, SensorError> {
        let this = self.clone();
        super::blocking(move || {
            let raw = read_number(&resolve(&this.pattern)?)?;
            Ok(Value::Float(raw * this.scale + this.offset))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn source(path: &str, scale: f64, offset: f64) -> FileSource {
        FileSource {
            pattern: path.to_owned(),
            scale,
            offset,
        }
    }

    /// A temp dir laid out like /sys/class/hwmon with two chips.
    fn sysfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (chip, name, temp) in [
            ("hwmon0", "acpitz", "27800\n"),
            ("hwmon1", "cpu_thermal", "48312\n"),
        ] {
            let d = dir.path().join("class/hwmon").join(chip);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("name"), format!("{name}\n")).unwrap();
            fs::write(d.join("temp1_input"), temp).unwrap();
        }
        let tz = dir.path().join("class/thermal/thermal_zone0");
        fs::create_dir_all(&tz).unwrap();
        fs::write(tz.join("temp"), "51540\n").unwrap();
        let iio = dir.path().join("bus/iio/devices/iio:device0");
        fs::create_dir_all(&iio).unwrap();
        fs::write(iio.join("in_temp_input"), "23125\n").unwrap();
        fs::write(iio.join("in_voltage0_raw"), "garbage\n").unwrap();
        dir
    }

    #[tokio::test]
    async fn a_thermal_zone_is_read_and_scaled_to_degrees() {
        let dir = sysfs();
        let p = dir.path().join("class/thermal/thermal_zone0/temp");
        let v = source(p.to_str().unwrap(), 0.001, 0.0)
            .read()
            .await
            .unwrap();
        assert_eq!(v, Value::Float(51.54));
    }

    #[tokio::test]
    async fn an_iio_temperature_is_read_with_scale_and_offset() {
        let dir = sysfs();
        let p = dir.path().join("bus/iio/devices/iio:device*/in_temp_input");
        let v = source(p.to_str().unwrap(), 0.001, -1.0)
            .read()
            .await
            .unwrap();
        let Value::Float(f) = v else { panic!("{v:?}") };
        assert!((f - 22.125).abs() < 1e-9, "{f}");
    }

    #[tokio::test]
    async fn a_hwmon_glob_matching_one_chip_is_read() {
        let dir = sysfs();
        let p = dir.path().join("class/hwmon/hwmon1/temp*_input");
        let v = source(p.to_str().unwrap(), 0.001, 0.0)
            .read()
            .await
            .unwrap();
        assert_eq!(v, Value::Float(48.312));
    }

    #[tokio::test]
    async fn a_glob_matching_several_paths_is_an_error_naming_them() {
        let dir = sysfs();
        let p = dir.path().join("class/hwmon/hwmon*/temp1_input");
        let err = source(p.to_str().unwrap(), 1.0, 0.0)
            .read()
            .await
            .unwrap_err();
        let SensorError::GlobSeveral { count, matches, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*count, 2);
        assert!(matches.contains("hwmon0/temp1_input") && matches.contains("hwmon1/temp1_input"));
    }

    #[tokio::test]
    async fn a_glob_matching_nothing_is_an_error() {
        let dir = sysfs();
        let p = dir.path().join("class/hwmon/hwmon*/temp9_input");
        let err = source(p.to_str().unwrap(), 1.0, 0.0)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, SensorError::GlobNoMatch { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_missing_file_and_a_file_without_a_number_are_errors() {
        let dir = sysfs();
        let missing = dir.path().join("class/hwmon/hwmon7/temp1_input");
        let err = source(missing.to_str().unwrap(), 1.0, 0.0)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, SensorError::Read { .. }), "{err}");
        let garbage = dir
            .path()
            .join("bus/iio/devices/iio:device0/in_voltage0_raw");
        let err = source(garbage.to_str().unwrap(), 1.0, 0.0)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, SensorError::NoNumber { .. }), "{err}");
    }

    #[tokio::test]
    async fn an_invalid_glob_is_an_error() {
        let err = source("/sys/[", 1.0, 0.0).read().await.unwrap_err();
        assert!(matches!(err, SensorError::BadGlob { .. }), "{err}");
    }
}
