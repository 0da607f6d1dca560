//! The sensors' payload parsers, reachable from the fuzz targets (`fuzz/`).
//! Not an API: thin wrappers over the crate-private functions the sensor
//! tasks call, so that the fuzzers exercise exactly the production code.

use super::error::SensorError;
use tributary_wire::Value;

/// The first number of a sysfs/hwmon/IIO file's text (`file` sensors).
pub fn first_number(text: &str) -> Option<f64> {
    super::parse::first_number(text)
}

/// A plain payload: a number, `true`/`false` or `ON`/`OFF`.
pub fn plain(text: &str) -> Option<Value> {
    super::parse::plain(text).ok()
}

/// The milli-°C of a 1-wire `w1_slave` file's text.
pub fn w1_slave(text: &str) -> Result<f64, SensorError> {
    super::w1::parse_w1_slave(std::path::Path::new("w1_slave"), text)
}

/// A command's standard output, as a `command` sensor parses it.
pub fn command_output(out: &[u8], pointer: Option<&str>) -> Result<Value, SensorError> {
    super::command::parse_output(out, pointer, "fuzz")
}

/// An MQTT payload, as a route with this size limit and pointer decodes it.
pub fn mqtt_payload(
    payload: &[u8],
    max: usize,
    pointer: Option<&str>,
) -> Result<Value, SensorError> {
    super::mqtt::decode(payload, max, pointer)
}

/// Whether MQTT topic `topic` matches filter `filter`.
pub fn mqtt_matches(filter: &str, topic: &str) -> bool {
    super::mqtt::matches(filter, topic)
}

/// The sensor id an MQTT route's id template gives a message on `topic`.
pub fn mqtt_resolve(template: &str, topic: &str) -> Result<String, String> {
    super::mqtt::resolve(template, topic).map(|c| c.into_owned())
}
