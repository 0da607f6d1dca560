//! The per-sensor deadband: send a reading only when it moved by more than
//! the deadband from the last one sent, and still send one every
//! `heartbeat` readings so a steady value keeps being reported.

use tributary_wire::Value;

/// Deadband state of one sensor.
#[derive(Debug, Clone)]
pub(crate) struct Deadband {
    deadband: Option<f64>,
    heartbeat: u32,
    last_sent: Option<Value>,
    since_sent: u32,
}

impl Deadband {
    /// `deadband` None sends every reading.
    pub(crate) fn new(deadband: Option<f64>, heartbeat: std::num::NonZeroU32) -> Self {
        Deadband {
            deadband,
            heartbeat: heartbeat.get(),
            last_sent: None,
            since_sent: 0,
        }
    }

    /// Whether `value` is to be sent; remembers it when it is.
    ///
    /// Numbers are sent when `|value - last_sent| > deadband`; other values
    /// (booleans, text) when they differ from the last one sent; anything at
    /// least every `heartbeat` readings.
    pub(crate) fn admit(&mut self, value: &Value) -> bool {
        let Some(band) = self.deadband else {
            return true;
        };
        let moved = match &self.last_sent {
            None => true,
            Some(last) => match (last.as_f64(), value.as_f64()) {
                (Some(a), Some(b)) => (b - a).abs() > band,
                _ => last != value,
            },
        };
        self.since_sent += 1;
        if moved || self.since_sent >= self.heartbeat {
            self.last_sent = Some(value.clone());
            self.since_sent = 0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn sent(d: &mut Deadband, values: &[Value]) -> Vec<bool> {
        values.iter().map(|v| d.admit(v)).collect()
    }

    #[test]
    fn without_a_deadband_every_reading_is_sent() {
        let mut d = Deadband::new(None, NonZeroU32::new(3).unwrap());
        let v = [const { Value::Float(1.0) }; 5];
        assert_eq!(sent(&mut d, &v), [true; 5]);
    }

    #[test]
    fn small_moves_are_suppressed_and_large_ones_sent() {
        let mut d = Deadband::new(Some(0.5), NonZeroU32::new(100).unwrap());
        let v = [20.0, 20.2, 20.5, 20.6, 20.7, 21.2, 19.0].map(Value::Float);
        // 20.5 is exactly 0.5 away: not more than the deadband.
        assert_eq!(
            sent(&mut d, &v),
            [true, false, false, true, false, true, true]
        );
    }

    #[test]
    fn a_heartbeat_is_sent_every_n_readings_of_a_steady_value() {
        let mut d = Deadband::new(Some(1.0), NonZeroU32::new(3).unwrap());
        let v = [const { Value::Int(5) }; 7];
        assert_eq!(
            sent(&mut d, &v),
            [true, false, false, true, false, false, true]
        );
    }

    #[test]
    fn non_numeric_values_are_sent_on_change() {
        let mut d = Deadband::new(Some(0.0), NonZeroU32::new(10).unwrap());
        let v = [
            Value::Bool(true),
            Value::Bool(true),
            Value::Bool(false),
            Value::Text("a".into()),
            Value::Text("a".into()),
            Value::Int(1),
        ];
        assert_eq!(sent(&mut d, &v), [true, false, true, true, false, true]);
    }
}
