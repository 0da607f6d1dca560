//! `simulated` sensors for demos and tests: a sine, a sawtooth, a bounded
//! random walk, or an integer counter. The waveforms follow the time since
//! the sensor started (tokio's clock, so paused-time tests are exact).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::f64::consts::TAU;
use tokio::time::Instant;
use tributary_config::{SimulatedSensor, Waveform};
use tributary_wire::Value;

/// A configured `simulated` sensor.
#[derive(Debug)]
pub(crate) struct SimulatedSource {
    waveform: Waveform,
    period: f64,
    amplitude: f64,
    offset: f64,
    start: Instant,
    walk: f64,
    counter: i64,
    rng: StdRng,
}

impl SimulatedSource {
    pub(crate) fn new(cfg: &SimulatedSensor) -> Self {
        SimulatedSource {
            waveform: cfg.waveform,
            period: cfg.period.get().as_secs_f64(),
            amplitude: cfg.amplitude,
            offset: cfg.offset,
            start: Instant::now(),
            walk: cfg.offset,
            counter: 0,
            rng: StdRng::from_os_rng(),
        }
    }

    /// The next value.
    pub(crate) fn read(&mut self) -> Value {
        let t = self.start.elapsed().as_secs_f64();
        let (a, o) = (self.amplitude, self.offset);
        match self.waveform {
            Waveform::Sine => Value::Float(o + a * (TAU * t / self.period).sin()),
            Waveform::Sawtooth => {
                let phase = (t / self.period).fract();
                Value::Float(o - a + 2.0 * a * phase)
            }
            Waveform::RandomWalk => {
                let step = a.abs() / 10.0;
                if step > 0.0 {
                    self.walk += self.rng.random_range(-step..=step);
                }
                self.walk = self.walk.clamp(o - a.abs(), o + a.abs());
                Value::Float(self.walk)
            }
            Waveform::Counter => {
                let v = self.counter;
                self.counter = self.counter.wrapping_add(1);
                Value::Int(v)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sensor(waveform: &str, period: &str, amplitude: f64, offset: f64) -> SimulatedSource {
        let cfg = crate::sensors::test_config(&format!(
            "[[sensors.simulated]]\nid = \"s\"\nwaveform = \"{waveform}\"\nperiod = \"{period}\"\n\
             amplitude = {amplitude:?}\noffset = {offset:?}\n"
        ));
        SimulatedSource::new(&cfg.sensors.simulated[0])
    }

    fn float(v: Value) -> f64 {
        v.as_f64().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sine_follows_the_clock() {
        let mut s = sensor("sine", "40s", 2.0, 10.0);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(float(s.read()));
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        let want = [10.0, 12.0, 10.0, 8.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sawtooth_rises_and_wraps_each_period() {
        let mut s = sensor("sawtooth", "10s", 1.0, 0.0);
        let mut got = Vec::new();
        for _ in 0..6 {
            got.push(float(s.read()));
            tokio::time::advance(Duration::from_millis(2500)).await;
        }
        let want = [-1.0, -0.5, 0.0, 0.5, -1.0, -0.5];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
    }

    #[test]
    fn a_random_walk_stays_within_its_amplitude_in_small_steps() {
        let mut s = sensor("random_walk", "60s", 5.0, 20.0);
        let mut last = float(s.read());
        let mut moved = false;
        for _ in 0..10_000 {
            let v = float(s.read());
            assert!((15.0..=25.0).contains(&v), "{v}");
            assert!((v - last).abs() <= 0.5 + 1e-12, "{last} -> {v}");
            moved |= v != last;
            last = v;
        }
        assert!(moved);
    }

    #[test]
    fn a_counter_counts_readings_as_integers() {
        let mut s = sensor("counter", "60s", 1.0, 0.0);
        let got: Vec<Value> = (0..3).map(|_| s.read()).collect();
        assert_eq!(got, [Value::Int(0), Value::Int(1), Value::Int(2)]);
    }
}
