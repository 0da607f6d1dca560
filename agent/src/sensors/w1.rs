//! `w1` sensors: DS18B20 and friends through the Linux `w1_therm` driver.
//!
//! `<devices_dir>/<device>/w1_slave` holds two lines:
//!
//! ```text
//! 72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//! 72 01 4b 46 7f ff 0e 10 57 t=23125
//! ```
//!
//! The first must end in `YES` (the CRC matched); the second carries the
//! temperature in milli-°C. 85000 is the chip's power-on value, read when a
//! conversion did not happen (a power glitch), and is refused. Newer kernels
//! also offer a `temperature` file with just the milli-°C, used when
//! `w1_slave` is absent. Reading either makes the kernel run a conversion
//! (about 750 ms at 12 bits), so it runs on the blocking pool.

use super::error::SensorError;
use super::file::{read_number, read_text};
use super::parse::first_number;
use std::path::{Path, PathBuf};
use tributary_config::W1Sensor;
use tributary_wire::Value;

/// The DS18B20's power-on register value, in milli-°C.
const POWER_ON_MILLI: f64 = 85_000.0;

/// A configured `w1` sensor.
#[derive(Debug, Clone)]
pub(crate) struct W1Source {
    dir: PathBuf,
}

impl W1Source {
    pub(crate) fn new(cfg: &W1Sensor) -> Self {
        W1Source {
            dir: cfg.devices_dir.join(&cfg.device),
        }
    }

    /// Reads the sensor once, in °C.
    pub(crate) async fn read(&self) -> Result<Value, SensorError> {
        let dir = self.dir.clone();
        super::blocking(move || read_device(&dir)).await
    }
}

fn read_device(dir: &Path) -> Result<Value, SensorError> {
    let slave = dir.join("w1_slave");
    let (milli, path) = if slave.exists() {
        (parse_w1_slave(&slave, &read_text(&slave)?)?, slave)
    } else {
        let temp = dir.join("temperature");
        (read_number(&temp)?, temp)
    };
    if milli == POWER_ON_MILLI {
        return Err(SensorError::W1PowerOn { path });
    }
    Ok(Value::Float(milli / 1000.0))
}

/// The milli-°C of a `w1_slave` file's text.
pub(crate) fn parse_w1_slave(path: &Path, text: &str) -> Result<f64, SensorError> {
    let malformed = |reason| SensorError::W1Malformed {
        path: path.to_owned(),
        reason,
    };
    let mut lines = text.lines();
    let crc = lines.next().ok_or_else(|| malformed("empty file"))?.trim();
    if !crc.contains("crc=") {
        return Err(malformed("first line has no crc="));
    }
    if !crc.ends_with("YES") {
        return Err(SensorError::W1Crc {
            path: path.to_owned(),
            line: crc.to_owned(),
        });
    }
    let data = lines.next().ok_or_else(|| malformed("no second line"))?;
    let (_, t) = data
        .split_once("t=")
        .ok_or_else(|| malformed("second line has no t="))?;
    first_number(t).ok_or_else(|| malformed("t= is not followed by a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const GOOD: &str =
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
    const NEGATIVE: &str =
        "5e ff 4b 46 7f ff 02 10 b1 : crc=b1 YES\n5e ff 4b 46 7f ff 02 10 b1 t=-10125\n";
    const BAD_CRC: &str =
        "72 01 4b 46 7f ff 0e 10 57 : crc=12 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
    const POWER_ON: &str =
        "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n";

    fn sensor(dir: &Path, device: &str) -> W1Source {
        let cfg = crate::sensors::test_config(&format!(
            "[[sensors.w1]]\nid = \"t\"\ndevice = \"{device}\"\ndevices_dir = \"{}\"\n",
            dir.display()
        ));
        W1Source::new(&cfg.sensors.w1[0])
    }

    /// A temp dir laid out like /sys/bus/w1/devices.
    fn devices(files: &[(&str, &str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (dev, file, text) in files {
            fs::create_dir_all(dir.path().join(dev)).unwrap();
            fs::write(dir.path().join(dev).join(file), text).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn a_w1_slave_with_a_good_crc_gives_degrees() {
        let d = devices(&[
            ("28-00000a1b2c3d", "w1_slave", GOOD),
            ("28-00000a1b2c3e", "w1_slave", NEGATIVE),
        ]);
        let v = sensor(d.path(), "28-00000a1b2c3d").read().await.unwrap();
        assert_eq!(v, Value::Float(23.125));
        let v = sensor(d.path(), "28-00000a1b2c3e").read().await.unwrap();
        assert_eq!(v, Value::Float(-10.125));
    }

    #[tokio::test]
    async fn a_crc_failure_is_an_error_not_a_reading() {
        let d = devices(&[("28-1", "w1_slave", BAD_CRC)]);
        let err = sensor(d.path(), "28-1").read().await.unwrap_err();
        assert!(matches!(err, SensorError::W1Crc { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_85_degree_power_on_value_is_refused() {
        let d = devices(&[
            ("28-1", "w1_slave", POWER_ON),
            ("28-2", "temperature", "85000\n"),
        ]);
        for dev in ["28-1", "28-2"] {
            let err = sensor(d.path(), dev).read().await.unwrap_err();
            assert!(matches!(err, SensorError::W1PowerOn { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn the_temperature_file_is_used_without_w1_slave() {
        let d = devices(&[("28-1", "temperature", "21375\n")]);
        let v = sensor(d.path(), "28-1").read().await.unwrap();
        assert_eq!(v, Value::Float(21.375));
    }

    #[tokio::test]
    async fn malformed_and_missing_devices_are_errors() {
        let d = devices(&[
            ("28-1", "w1_slave", ""),
            ("28-2", "w1_slave", "00 : crc=00 YES\n"),
            ("28-3", "w1_slave", "00 : crc=00 YES\n00 t=\n"),
        ]);
        for dev in ["28-1", "28-2", "28-3"] {
            let err = sensor(d.path(), dev).read().await.unwrap_err();
            assert!(
                matches!(err, SensorError::W1Malformed { .. }),
                "{dev}: {err}"
            );
        }
        let err = sensor(d.path(), "28-unplugged").read().await.unwrap_err();
        assert!(matches!(err, SensorError::Read { .. }), "{err}");
    }
}
