//! Proof without a Pi: the ARM agents built by `cross/build.sh` run under QEMU user-mode
//! emulation with the CPU of the Pi they are for, and their readings reach Kafka through a
//! real leaf and hub `nats-server`, the uplink and the Kafka broker.
//!
//! | binary                                  | emulator              | CPU          | Pi            |
//! |-----------------------------------------|-----------------------|--------------|---------------|
//! | `aarch64-unknown-linux-musl`            | `qemu-aarch64-static` | `cortex-a53` | 3, Zero 2     |
//! | `armv7-unknown-linux-musleabihf`        | `qemu-arm-static`     | `cortex-a7`  | 2             |
//! | `arm-unknown-linux-musleabihf` (ARMv6)  | `qemu-arm-static`     | `arm1176`    | Zero, 1       |
//!
//! `arm1176` has no ARMv7 instructions: an ARMv6 build that used one dies with SIGILL here.
//!
//! The readings are carried by the aarch64 uplink (`aarch64-unknown-linux-gnu`, glibc 2.28)
//! under `qemu-aarch64-static -cpu cortex-a53`, with the arm64 glibc of Debian's
//! `libc6-arm64-cross` (`/usr/aarch64-linux-gnu`, installed by `cross/setup.sh`).
//!
//! These tests are `#[ignore]`d because they need `cross/build.sh`'s output (in
//! `$TRIBUTARY_DIST`, default `target/cross`), `qemu-user-static` and `libc6-arm64-cross`;
//! `make test-pi`
//! (part of `make test`, so CI) builds them and runs these tests with `-- --ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tributary_tests::{
    HarnessError, JsonReading, Kafka, KafkaReader, NatsServer, ProcessSpec, Result, ServerProcess,
};

/// One emulated Pi.
struct Emulated {
    triple: &'static str,
    qemu: &'static str,
    cpu: &'static str,
    /// Device id it reports as.
    device: &'static str,
}

const PIS: [Emulated; 3] = [
    Emulated {
        triple: "aarch64-unknown-linux-musl",
        qemu: "qemu-aarch64-static",
        cpu: "cortex-a53",
        device: "qemu-aarch64",
    },
    Emulated {
        triple: "armv7-unknown-linux-musleabihf",
        qemu: "qemu-arm-static",
        cpu: "cortex-a7",
        device: "qemu-armv7",
    },
    Emulated {
        triple: "arm-unknown-linux-musleabihf",
        qemu: "qemu-arm-static",
        cpu: "arm1176",
        device: "qemu-armv6",
    },
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dist() -> PathBuf {
    std::env::var_os("TRIBUTARY_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/cross"))
}

impl Emulated {
    fn binary(&self) -> PathBuf {
        let bin = dist().join(self.triple).join("tributary-agent");
        assert!(
            bin.is_file(),
            "{} missing: run cross/build.sh first",
            bin.display()
        );
        bin
    }

    /// `qemu-… -cpu <cpu> <agent> <args>`, run to completion.
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.qemu)
            .arg("-cpu")
            .arg(self.cpu)
            .arg(self.binary())
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("{} runs (apt-get install qemu-user-static): {e}", self.qemu)
            })
    }

    /// The agent as a long-running process under the emulator.
    fn start(&self, config: &str) -> Result<ServerProcess> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config).expect("write config");
        let spec = ProcessSpec::new(format!("agent-{}", self.device), self.qemu)
            .arg("-cpu")
            .arg(self.cpu)
            .arg(self.binary())
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("TRIBUTARY_LOG", "info,tributary_agent=debug");
        ServerProcess::start(spec, dir)
    }
}

#[test]
#[ignore = "needs cross/build.sh's ARM binaries and qemu-user-static"]
fn every_arm_agent_starts_under_its_pi_cpu_and_accepts_the_shipped_config() {
    let conffile = repo().join("cross/deb/agent/agent.toml");
    for pi in &PIS {
        let out = pi.run(&["--version"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("tributary-agent "),
            "{} under {} -cpu {}: {}\n{stdout}{}",
            pi.triple,
            pi.qemu,
            pi.cpu,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let out = pi.run(&["check", "--config", conffile.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}: check of the shipped agent.toml failed: {}\n{}",
            pi.triple,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        // A mistake is reported with its place, by the emulated binary too.
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[agent]\ndevice = \"pi\"\n[buffer]\nflush_interval = 5\n",
        )
        .unwrap();
        let out = pi.run(&["check", "--config", bad.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("flush_interval") && stderr.contains(":4"),
            "{}: bad config not reported with its line: {stderr}",
            pi.triple
        );
    }
}

/// The aarch64 uplink (glibc) under qemu-user with an arm64 glibc.
struct EmulatedUplink;

impl EmulatedUplink {
    const QEMU: &'static str = "qemu-aarch64-static";
    const CPU: &'static str = "cortex-a53";
    /// Where Debian's `libc6-arm64-cross` puts the arm64 glibc.
    const SYSROOT: &'static str = "/usr/aarch64-linux-gnu";

    fn binary() -> PathBuf {
        let bin = dist()
            .join("aarch64-unknown-linux-gnu")
            .join("tributary-uplink");
        assert!(
            bin.is_file(),
            "{} missing: run cross/build.sh first",
            bin.display()
        );
        assert!(
            Path::new(Self::SYSROOT).join("lib").is_dir(),
            "{} missing: apt-get install libc6-arm64-cross (cross/setup.sh does)",
            Self::SYSROOT
        );
        bin
    }

    fn spec(name: &str) -> ProcessSpec {
        ProcessSpec::new(name, Self::QEMU)
            .arg("-cpu")
            .arg(Self::CPU)
            .arg("-L")
            .arg(Self::SYSROOT)
            .arg(Self::binary())
    }

    fn run(args: &[&str]) -> std::process::Output {
        Command::new(Self::QEMU)
            .args(["-cpu", Self::CPU, "-L", Self::SYSROOT])
            .arg(Self::binary())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{} runs: {e}", Self::QEMU))
    }
}

#[test]
#[ignore = "needs cross/build.sh's aarch64 uplink, qemu-user-static and libc6-arm64-cross"]
fn the_aarch64_uplink_starts_under_qemu_and_accepts_the_shipped_config() {
    let out = EmulatedUplink::run(&["--version"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("tributary-uplink "),
        "{}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let conffile = repo().join("cross/deb/uplink/uplink.toml");
    let out = EmulatedUplink::run(&["check", "--config", conffile.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "check of the shipped uplink.toml failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

const TOPIC: &str = "pi.readings";

/// Sensors of every emulated Pi: a counter (to check completeness) and a
/// real system metric (to exercise /proc under qemu).
const PI_SENSORS: &str = r#"
[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "100ms"

[[sensors.system]]
id = "load1"
metric = "load1"
interval = "500ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cross/build.sh's ARM binaries, qemu-user-static, libc6-arm64-cross, nats-server and tansu"]
async fn readings_of_every_emulated_pi_reach_kafka_through_leaf_hub_and_uplink() -> Result<()> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    let kafka = Kafka::start_memory()?;
    let states: Vec<tempfile::TempDir> = PIS.iter().map(|_| tempfile::tempdir().unwrap()).collect();

    let uplink_dir = tempfile::tempdir().expect("temp dir");
    let uplink_conf = uplink_dir.path().join("uplink.toml");
    std::fs::write(
        &uplink_conf,
        tributary_tests::tributary::uplink_config(&hub, &kafka, TOPIC, "pi-emulation"),
    )
    .expect("write config");
    let mut uplink = ServerProcess::start(
        EmulatedUplink::spec("uplink-aarch64")
            .arg("run")
            .arg("--config")
            .arg(&uplink_conf)
            .env("TRIBUTARY_LOG", "info"),
        uplink_dir,
    )?;

    let mut agents = Vec::new();
    for (pi, state) in PIS.iter().zip(&states) {
        agents.push(pi.start(&tributary_tests::tributary::agent_config(
            pi.device,
            &leaf,
            state.path(),
            PI_SENSORS,
        ))?);
    }

    // Every emulated device delivers at least 10 counter readings, in order from 0.
    let reader = KafkaReader::new(kafka.bootstrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut missing: Vec<&str> = PIS.iter().map(|p| p.device).collect();
    let mut readings: Vec<JsonReading> = Vec::new();
    let mut seen: std::collections::BTreeMap<String, JsonReading> = Default::default();
    while !missing.is_empty() {
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = agents
                .iter()
                .map(|a| format!("--- {}\n{}", a.name(), a.log_tail(30)))
                .collect();
            panic!(
                "no readings in Kafka from {missing:?} after 120 s ({} readings seen)\n{}\n--- uplink\n{}",
                readings.len(),
                logs.join("\n"),
                uplink.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Readings keep arriving (read_all wants a quiet topic): ask for
        // twice as many records as the last pass saw, until the deadline. A
        // partition may be read to its end before the next one starts, so
        // growing by a fixed step can trail a fast device's partition.
        let want = (readings.len() * 2).max(30);
        let records = match reader
            .read_until_async(TOPIC, want, Duration::from_secs(10))
            .await
        {
            Ok(records) => records,
            Err(HarnessError::TooFewRecords { .. }) => continue,
            Err(e) => return Err(e),
        };
        // Each pass reads from the start of every partition, but only as
        // far as `want`: a device's partition read in an earlier pass may
        // not be reached in this one. Keep everything seen.
        for r in KafkaReader::readings(&records)? {
            seen.insert(r.id.clone(), r);
        }
        readings = seen.values().cloned().collect();
        missing.retain(|device| {
            readings
                .iter()
                .filter(|r| r.device == *device && r.sensor == "count")
                .count()
                < 10
        });
    }

    for pi in &PIS {
        let mine: Vec<&JsonReading> = readings.iter().filter(|r| r.device == pi.device).collect();
        let mut counts: Vec<i64> = mine
            .iter()
            .filter(|r| r.sensor == "count")
            .filter_map(|r| r.value.as_i64())
            .collect();
        counts.sort_unstable();
        counts.dedup();
        let first: Vec<i64> = (0..10).collect();
        assert!(
            counts.len() >= 10 && counts[..10] == first[..],
            "{}: counter readings 0..10; got {counts:?} from {:?}",
            pi.device,
            mine.iter()
                .filter(|r| r.sensor == "count")
                .map(|r| (r.seq, &r.value))
                .collect::<Vec<_>>()
        );
        assert!(
            mine.iter()
                .any(|r| r.sensor == "load1" && r.value.is_number()),
            "{}: a system metric read under emulation arrives too",
            pi.device
        );
    }

    for mut agent in agents {
        let status = agent.terminate(Duration::from_secs(30))?;
        assert!(
            status.success(),
            "{} exit: {status}\n{}",
            agent.name(),
            agent.log_tail(30)
        );
    }
    uplink.terminate(Duration::from_secs(20))?;
    Ok(())
}
