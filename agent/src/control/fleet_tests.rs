//! Unit tests of [`FleetState`]: what the supervisor does with each value
//! the fleet store offers, without a server.

use super::*;

fn file_config(state_dir: &Path) -> AgentConfig {
    let text = format!(
        "[agent]\ndevice = \"pi-1\"\nstate_dir = {:?}\n[[sensors.simulated]]\nid = \"local\"\n",
        state_dir.display().to_string()
    );
    tributary_config::parse(&text, Path::new("agent.toml")).unwrap()
}

fn put(revision: u64, text: &str) -> FleetValue {
    FleetValue {
        revision,
        text: Some(text.to_owned()),
    }
}

fn ids(cfg: &AgentConfig) -> Vec<String> {
    cfg.sensors
        .all()
        .map(|(_, _, s)| s.id().get_ref().clone())
        .collect()
}

const GOOD: &str = "[[sensors.simulated]]\nid = \"fleet\"\ninterval = \"2s\"\n";

#[test]
fn a_valid_value_is_applied_kept_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut fleet, running) = FleetState::open(file_config(dir.path()), None);
    assert_eq!(ids(&running), ["local"]);
    assert_eq!(fleet.origin().source, "file");
    let Decision::Apply(cfg, event) = fleet.offer(put(3, GOOD)) else {
        panic!("not applied")
    };
    assert_eq!(ids(&cfg), ["fleet"]);
    assert_eq!((event.outcome.as_str(), event.revision), ("applied", 3));
    let origin = fleet.origin();
    assert_eq!(
        (origin.source.as_str(), origin.revision),
        ("fleet", Some(3))
    );
    let kept = fleet_file::load(fleet.copy_path()).unwrap().unwrap();
    assert_eq!((kept.revision, kept.toml.as_str()), (3, GOOD));
    assert!(matches!(fleet.offer(put(3, GOOD)), Decision::Nothing));
}

#[test]
fn an_invalid_value_is_refused_with_its_line_and_the_running_config_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (mut fleet, _) = FleetState::open(file_config(dir.path()), None);
    assert!(matches!(fleet.offer(put(3, GOOD)), Decision::Apply(..)));
    let bad = "[[sensors.simulated]]\nid = \"x\"\ninterval = \"often\"\n";
    let Decision::Refused(event) = fleet.offer(put(4, bad)) else {
        panic!("not refused")
    };
    let r = event.refusal.unwrap();
    assert_eq!((r.revision, r.line, r.column), (4, Some(3), Some(12)));
    assert_eq!(r.key.as_deref(), Some("sensors.simulated[0].interval"));
    assert!(
        r.error.contains("kv://tributary-config/pi-1@4"),
        "{}",
        r.error
    );
    let origin = fleet.origin();
    assert_eq!(origin.revision, Some(3), "the applied value stays in force");
    assert_eq!(origin.refused.unwrap().revision, 4);
    assert!(
        matches!(fleet.offer(put(4, bad)), Decision::Nothing),
        "refused once"
    );
    assert_eq!(
        fleet_file::load(fleet.copy_path())
            .unwrap()
            .unwrap()
            .revision,
        3
    );
}

#[test]
fn a_kept_value_is_run_at_start_and_a_deleted_key_brings_the_file_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut fleet, _) = FleetState::open(file_config(dir.path()), None);
    assert!(matches!(fleet.offer(put(5, GOOD)), Decision::Apply(..)));
    drop(fleet);
    let (mut fleet, running) = FleetState::open(file_config(dir.path()), None);
    assert_eq!(
        ids(&running),
        ["fleet"],
        "the kept copy is run without the hub"
    );
    assert_eq!(fleet.origin().revision, Some(5));
    let Decision::Apply(cfg, event) = fleet.offer(FleetValue {
        revision: 6,
        text: None,
    }) else {
        panic!("not cleared")
    };
    assert_eq!(ids(&cfg), ["local"]);
    assert_eq!(event.outcome, "cleared");
    assert!(fleet_file::load(fleet.copy_path()).unwrap().is_none());
}

#[test]
fn a_value_over_a_local_only_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut fleet, _) = FleetState::open(file_config(dir.path()), None);
    let Decision::Refused(event) = fleet.offer(put(1, "[buffer]\nmax_size = \"1 GiB\"\n")) else {
        panic!("not refused")
    };
    assert_eq!(event.refusal.unwrap().key.as_deref(), Some("buffer"));
}

#[test]
fn a_reloaded_file_keeps_the_fleet_part_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let (mut fleet, _) = FleetState::open(file_config(dir.path()), None);
    assert!(matches!(fleet.offer(put(2, GOOD)), Decision::Apply(..)));
    let cfg = fleet.rebase(file_config(dir.path()));
    assert_eq!(ids(&cfg), ["fleet"]);
}

#[test]
fn with_the_fleet_store_off_values_are_ignored_and_no_copy_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = file_config(dir.path());
    cfg.control.fleet_config = false;
    let (mut fleet, running) = FleetState::open(cfg, None);
    assert_eq!(ids(&running), ["local"]);
    assert!(matches!(fleet.offer(put(1, GOOD)), Decision::Nothing));
    assert!(fleet.origin().fleet.is_none());
}
