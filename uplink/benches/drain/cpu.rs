//! CPU time per process, from `/proc`, so that each measurement says who
//! spent the machine's cores: the benchmark process (a baseline or the
//! uplink, which runs in it), nats-server and tansu
//! ([`tributary_tests::bench::cpu_seconds`]).

use tributary_tests::bench::{cpu_seconds, self_cpu_seconds};
use tributary_tests::{Kafka, NatsServer};

/// CPU seconds used so far by this process, the hub and the broker.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    bench: f64,
    nats: f64,
    kafka: f64,
}

/// CPU microseconds per reading spent by each process over a measurement.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuPerReading {
    /// The benchmark process: the baseline client or the uplink.
    pub bench: f64,
    /// nats-server.
    pub nats: f64,
    /// tansu.
    pub kafka: f64,
}

impl CpuPerReading {
    /// All three.
    pub fn total(&self) -> f64 {
        self.bench + self.nats + self.kafka
    }
}

impl std::fmt::Display for CpuPerReading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU µs/reading: client {:.2} + nats-server {:.2} + tansu {:.2} = {:.2}",
            self.bench,
            self.nats,
            self.kafka,
            self.total()
        )
    }
}

impl Cpu {
    /// Now.
    pub fn now(hub: &NatsServer, kafka: &Kafka) -> Self {
        let of = |pid: Option<u32>| pid.map_or(0.0, cpu_seconds);
        Cpu {
            bench: self_cpu_seconds(),
            nats: of(hub.pid()),
            kafka: of(kafka.pid()),
        }
    }

    /// The CPU used since `self`, per reading.
    pub fn since(self, hub: &NatsServer, kafka: &Kafka, readings: u64) -> CpuPerReading {
        let now = Cpu::now(hub, kafka);
        let per = |a: f64, b: f64| (b - a) * 1e6 / readings as f64;
        CpuPerReading {
            bench: per(self.bench, now.bench),
            nats: per(self.nats, now.nats),
            kafka: per(self.kafka, now.kafka),
        }
    }
}
