//! Sensor definitions: one `[[sensors.<kind>]]` array per kind of sensor.
//!
//! ```toml
//! [[sensors.file]]
//! id = "board_temp"
//! path = "/sys/class/hwmon/hwmon*/temp1_input"
//! scale = 0.001
//! unit = "°C"
//! interval = "10s"
//! ```
//!
//! Every polled kind shares the fields `id`, `interval`, `unit`, `tags`,
//! `deadband` and `heartbeat`; MQTT sensors are driven by messages and have
//! no `interval`.

use crate::types::NonZeroDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use toml::Spanned;

fn default_interval() -> NonZeroDuration {
    NonZeroDuration::from_secs(10)
}

fn default_heartbeat() -> NonZeroU32 {
    NonZeroU32::new(10).expect("non-zero")
}

fn one() -> f64 {
    1.0
}

/// Declares a polled sensor kind with the common fields first.
macro_rules! polled_sensor {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Sensor id: a NATS subject token (no `.`, `*`, `>`, spaces),
            /// unique on this device. Becomes the last subject token.
            pub id: Spanned<String>,
            /// How often the sensor is read. Default `"10s"`.
            #[serde(default = "default_interval")]
            pub interval: NonZeroDuration,
            /// Unit of the values, such as `"°C"` or `"%"`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub unit: Option<String>,
            /// Free-form string tags carried with every reading.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub tags: BTreeMap<String, String>,
            /// Send a reading only when it moved by more than this much from
            /// the last one sent. Absent: send every reading.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub deadband: Option<f64>,
            /// With a deadband, still send at least every `heartbeat`
            /// readings. Default 10.
            #[serde(default = "default_heartbeat", deserialize_with = "crate::size::count")]
            pub heartbeat: NonZeroU32,
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl SensorCommon for $name {
            fn id(&self) -> &Spanned<String> { &self.id }
            fn deadband(&self) -> Option<f64> { self.deadband }
            fn tags(&self) -> &BTreeMap<String, String> { &self.tags }
            fn unit(&self) -> Option<&str> { self.unit.as_deref() }
        }
    };
}

/// What every sensor definition offers, whatever its kind.
pub trait SensorCommon {
    /// The sensor id with its place in the file.
    fn id(&self) -> &Spanned<String>;
    /// The deadband, if any.
    fn deadband(&self) -> Option<f64>;
    /// The tags.
    fn tags(&self) -> &BTreeMap<String, String>;
    /// The unit.
    fn unit(&self) -> Option<&str>;
}

/// The waveform of a simulated sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Waveform {
    /// `offset + amplitude * sin(2π t / period)`.
    #[default]
    Sine,
    /// A sawtooth from `offset - amplitude` to `offset + amplitude` per period.
    Sawtooth,
    /// A random walk around `offset`, steps of at most `amplitude / 10`,
    /// staying within `offset ± amplitude`.
    RandomWalk,
    /// An integer counter that grows by one per reading.
    Counter,
}

polled_sensor! {
    /// A simulated sensor, for demos and tests.
    pub struct SimulatedSensor {
        /// Waveform: `sine` (default), `sawtooth`, `random_walk`, `counter`.
        #[serde(default)]
        pub waveform: Waveform,
        /// Period of the waveform. Default `"60s"`.
        #[serde(default = "default_period")]
        pub period: NonZeroDuration,
        /// Amplitude of the waveform. Default 1.
        #[serde(default = "one")]
        pub amplitude: f64,
        /// Centre of the waveform. Default 0.
        #[serde(default)]
        pub offset: f64,
    }
}

fn default_period() -> NonZeroDuration {
    NonZeroDuration::from_secs(60)
}

/// Which built-in metric a `system` sensor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemMetric {
    /// CPU temperature in °C from the thermal zone (skipped where absent).
    CpuTemperature,
    /// 1-minute load average.
    Load1,
    /// 5-minute load average.
    Load5,
    /// 15-minute load average.
    Load15,
    /// Memory available, bytes (`MemAvailable` of /proc/meminfo).
    MemoryAvailable,
    /// Free disk space of the buffer's filesystem, bytes.
    DiskFree,
    /// Seconds since boot.
    Uptime,
    /// Records waiting in the agent's buffer.
    BufferDepth,
    /// Bytes used by the agent's buffer on disk.
    BufferBytes,
    /// Age in seconds of the oldest reading not yet acknowledged by the hub.
    OldestUnsentAge,
    /// Readings dropped by the buffer's when-full policy since start.
    Dropped,
}

polled_sensor! {
    /// A built-in system metric.
    pub struct SystemSensor {
        /// The metric, such as `cpu_temperature`, `load1`, `memory_available`.
        pub metric: SystemMetric,
        /// The thermal zone file for `cpu_temperature`. Default
        /// `/sys/class/thermal/thermal_zone0/temp`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub thermal_zone: Option<PathBuf>,
    }
}

polled_sensor! {
    /// A number read from a file: sysfs, hwmon, thermal zones, IIO devices.
    pub struct FileSensor {
        /// The file. May be a glob (`/sys/class/hwmon/hwmon*/temp1_input`),
        /// which must match exactly one path.
        pub path: String,
        /// Multiplier applied to the raw number. Default 1.
        #[serde(default = "one")]
        pub scale: f64,
        /// Added after scaling. Default 0.
        #[serde(default)]
        pub offset: f64,
    }
}

polled_sensor! {
    /// A 1-wire temperature sensor such as the DS18B20.
    pub struct W1Sensor {
        /// The 1-wire device id, such as `28-00000a1b2c3d`.
        pub device: String,
        /// Where 1-wire devices appear. Default `/sys/bus/w1/devices`.
        #[serde(default = "default_w1_dir")]
        pub devices_dir: PathBuf,
    }
}

fn default_w1_dir() -> PathBuf {
    PathBuf::from("/sys/bus/w1/devices")
}

polled_sensor! {
    /// A program whose output is a number or JSON.
    pub struct CommandSensor {
        /// Program and arguments, such as `["vcgencmd", "measure_volts"]`.
        /// Not run through a shell.
        pub command: Vec<String>,
        /// Longest the program may run. Default `"5s"`.
        #[serde(default = "default_command_timeout")]
        pub timeout: NonZeroDuration,
        /// JSON pointer (RFC 6901) to the value when the output is JSON, such
        /// as `"/temperature"`. Absent: the output is a plain number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pointer: Option<String>,
    }
}

fn default_command_timeout() -> NonZeroDuration {
    NonZeroDuration::from_secs(5)
}

/// A sensor fed by MQTT messages (Mosquitto, Zigbee2MQTT, Tasmota…).
///
/// One topic can feed several sensors: give one `[[sensors.mqtt]]` per
/// field, each with its own `pointer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSensor {
    /// Sensor id, or a template using topic segments: `{1}` is the second
    /// segment of the topic the message came on (`zigbee2mqtt/{1}` …), so
    /// `"{1}_temperature"` on topic `zigbee2mqtt/kitchen` gives
    /// `kitchen_temperature`. The result must be a NATS subject token.
    pub id: Spanned<String>,
    /// Topic filter to subscribe to; `+` and `#` wildcards allowed.
    pub topic: String,
    /// JSON pointer (RFC 6901) to the value when the payload is JSON, such as
    /// `"/temperature"`. Absent: the payload is a plain number, `true`/`false`
    /// or `ON`/`OFF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// Unit of the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Free-form string tags carried with every reading.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Send a reading only when it moved by more than this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// With a deadband, still send at least every `heartbeat` readings.
    #[serde(default = "default_heartbeat", deserialize_with = "crate::size::count")]
    pub heartbeat: NonZeroU32,
}

impl SensorCommon for MqttSensor {
    fn id(&self) -> &Spanned<String> {
        &self.id
    }
    fn deadband(&self) -> Option<f64> {
        self.deadband
    }
    fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }
    fn unit(&self) -> Option<&str> {
        self.unit.as_deref()
    }
}

/// All sensors of the device, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensors {
    /// Simulated sensors (`[[sensors.simulated]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub simulated: Vec<SimulatedSensor>,
    /// Built-in system metrics (`[[sensors.system]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<SystemSensor>,
    /// Numbers read from files (`[[sensors.file]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file: Vec<FileSensor>,
    /// 1-wire sensors (`[[sensors.w1]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub w1: Vec<W1Sensor>,
    /// Program outputs (`[[sensors.command]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<CommandSensor>,
    /// MQTT topics (`[[sensors.mqtt]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mqtt: Vec<MqttSensor>,
}

impl Sensors {
    /// Every sensor with its kind's table name, for validation and listing.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, usize, &dyn SensorCommon)> {
        fn each<'a, T: SensorCommon>(
            kind: &'static str,
            v: &'a [T],
        ) -> impl Iterator<Item = (&'static str, usize, &'a dyn SensorCommon)> {
            v.iter()
                .enumerate()
                .map(move |(i, s)| (kind, i, s as &dyn SensorCommon))
        }
        each("simulated", &self.simulated)
            .chain(each("system", &self.system))
            .chain(each("file", &self.file))
            .chain(each("w1", &self.w1))
            .chain(each("command", &self.command))
            .chain(each("mqtt", &self.mqtt))
    }

    /// How many sensors are defined.
    pub fn len(&self) -> usize {
        self.all().count()
    }

    /// Whether no sensor is defined.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
