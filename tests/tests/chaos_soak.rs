//! The chaos soak (issue 11): three agents, each through its own leaf, one hub, two uplinks
//! and Kafka, under a seeded random schedule of SIGKILLs, SIGSTOPs and link cuts while data
//! flows; then every reading accounted for (tributary_tests::soak has the design).
//!
//! Short form here (one round of every fault, about a minute and a half per mode); the long
//! form is `SOAK_SECONDS=600 make soak`. `SOAK_SEED=<seed>` replays a schedule.

use std::sync::Mutex;
use tributary_tests::soak::{self, Mode, SoakPlan};

/// The two soaks load the whole machine: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn soak(mode: Mode) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let plan = SoakPlan::from_env(mode);
    let report = soak::run(&plan).unwrap_or_else(|e| {
        panic!(
            "the {mode} soak could not run (replay with SOAK_SEED={}): {e}",
            plan.seed
        )
    });
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "the {mode} soak failed (replay with SOAK_SEED={}): {}",
        plan.seed,
        failures.join("; ")
    );
}

#[test]
fn an_at_least_once_soak_under_faults_loses_no_reading_outside_the_power_cut_window() {
    soak(Mode::AtLeastOnce);
}

#[test]
fn an_exactly_once_soak_under_faults_loses_nothing_and_writes_every_reading_once() {
    soak(Mode::ExactlyOnce);
}
