//! The shipped Prometheus alert rules and Grafana dashboards (`config/monitoring/`), checked
//! without servers: `promtool check rules`, the promtool unit tests
//! (`config/monitoring/tests/*.test.yml`, series in, expected alerts out) pass and cover
//! every alert, every alert tells the operator what to do, a changed threshold makes the unit
//! tests fail, and the dashboards are well-formed Grafana JSON.
//!
//! promtool comes with Debian's `prometheus` package (scripts/install-test-deps.sh installs
//! it); without it these tests fail, naming the install command.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use tributary_tests::bins;
use tributary_tests::monitoring::{
    self, AGENT_DASHBOARD, AGENT_RULES, UPLINK_DASHBOARD, UPLINK_RULES,
};

const UNIT_TESTS: [&str; 2] = [
    "tests/tributary-agent.test.yml",
    "tests/tributary-uplink.test.yml",
];

fn promtool(args: &[&str], dir: &Path) -> Output {
    let promtool = bins::promtool().unwrap_or_else(|e| panic!("{e}"));
    Command::new(&promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", promtool.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_shipped_alert_rules_pass_promtool_check_rules() {
    let out = promtool(
        &["check", "rules", AGENT_RULES, UPLINK_RULES],
        &monitoring::dir(),
    );
    assert!(out.status.success(), "{}", text(&out));
    for (file, group) in [
        (AGENT_RULES, "tributary-agent"),
        (UPLINK_RULES, "tributary-uplink"),
    ] {
        let rules = monitoring::read(file).unwrap();
        assert!(rules.contains(&format!("- name: {group}\n")), "{file}");
        let count = monitoring::alert_names(&rules).len();
        assert!(
            text(&out).contains(&format!("SUCCESS: {count} rules found")),
            "{file}: {}",
            text(&out)
        );
    }
}

#[test]
fn the_promtool_unit_tests_of_the_rules_pass() {
    let mut args = vec!["test", "rules"];
    args.extend(UNIT_TESTS);
    let out = promtool(&args, &monitoring::dir());
    assert!(out.status.success(), "{}", text(&out));
}

/// Each unit test file names, per evaluation, the alert it expects; `exp_alerts: []` is a
/// case where it must not fire. Every alert of the rules needs at least one case of each.
#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    for (rules_file, tests_file) in [(AGENT_RULES, UNIT_TESTS[0]), (UPLINK_RULES, UNIT_TESTS[1])] {
        let tests = monitoring::read(tests_file).unwrap();
        let lines: Vec<&str> = tests.lines().map(str::trim).collect();
        let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
        for pair in lines.windows(2) {
            if let Some(name) = pair[0].strip_prefix("alertname: ") {
                match pair[1] {
                    "exp_alerts: []" => silent.insert(name.to_owned()),
                    "exp_alerts:" => fires.insert(name.to_owned()),
                    other => panic!("{tests_file}: after alertname {name}: {other:?}"),
                };
            }
        }
        let alerts: BTreeSet<String> =
            monitoring::alert_names(&monitoring::read(rules_file).unwrap())
                .into_iter()
                .collect();
        assert!(alerts.len() >= 8, "{rules_file}: {alerts:?}");
        let untested_fire: Vec<_> = alerts.difference(&fires).collect();
        let untested_silent: Vec<_> = alerts.difference(&silent).collect();
        assert!(
            untested_fire.is_empty() && untested_silent.is_empty(),
            "{tests_file}: never expected to fire: {untested_fire:?}; never expected silent: {untested_silent:?}"
        );
        let unknown: Vec<_> = fires
            .union(&silent)
            .filter(|a| !alerts.contains(*a))
            .collect();
        assert!(
            unknown.is_empty(),
            "{tests_file} tests alerts not in {rules_file}: {unknown:?}"
        );
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_description_of_what_to_do() {
    for file in [AGENT_RULES, UPLINK_RULES] {
        let rules = monitoring::read(file).unwrap();
        let blocks: Vec<&str> = rules.split("- alert: ").skip(1).collect();
        assert_eq!(blocks.len(), monitoring::alert_names(&rules).len());
        for block in blocks {
            let name = block.lines().next().unwrap_or_default();
            assert!(
                ["severity: critical", "severity: warning", "severity: info"]
                    .iter()
                    .any(|s| block.contains(s)),
                "{file} {name}: no severity"
            );
            assert!(block.contains("summary: "), "{file} {name}: no summary");
            let description = block
                .split_once("description: >-\n")
                .map(|(_, d)| d)
                .unwrap_or_else(|| panic!("{file} {name}: no folded description"));
            assert!(
                ["Check", "check", "Restore", "restart", "Fix"]
                    .iter()
                    .any(|verb| description.contains(verb)),
                "{file} {name}: the description says what is wrong but not what to do"
            );
        }
    }
}

/// The unit tests could fail: with one threshold of the shipped rules changed, promtool's
/// unit tests of that file fail, naming the alert.
#[test]
fn a_changed_threshold_makes_the_promtool_unit_tests_fail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    let rules = monitoring::read(AGENT_RULES).unwrap();
    let changed = rules.replace(
        "tributary_agent_oldest_unsent_age_seconds > 600",
        "tributary_agent_oldest_unsent_age_seconds > 6000",
    );
    assert_ne!(
        changed, rules,
        "the threshold to change is in the shipped rules"
    );
    std::fs::write(dir.path().join(AGENT_RULES), changed).unwrap();
    std::fs::write(
        dir.path().join(UNIT_TESTS[0]),
        monitoring::read(UNIT_TESTS[0]).unwrap(),
    )
    .unwrap();
    let out = promtool(&["test", "rules", UNIT_TESTS[0]], dir.path());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("TributaryAgentOldestUnsentReadingOld"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_dashboards_are_grafana_json_with_a_prometheus_datasource_variable_and_unique_panel_ids() {
    for file in [AGENT_DASHBOARD, UPLINK_DASHBOARD] {
        let dashboard: serde_json::Value = serde_json::from_str(&monitoring::read(file).unwrap())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{file}: uid"
        );
        assert!(
            dashboard["schemaVersion"].as_u64().is_some(),
            "{file}: schemaVersion"
        );
        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("templating");
        assert!(
            variables.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: a datasource variable lets the user pick the Prometheus"
        );
        let panels = dashboard["panels"].as_array().expect("panels");
        let mut ids = BTreeSet::new();
        for panel in panels {
            let id = panel["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{file}: panel id {id} twice");
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file} panel {id}"
            );
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file} panel {id}: no description"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file} panel {id}: no query");
        }
        assert!(
            monitoring::dashboard_exprs(&dashboard).len() > 10,
            "{file}: queries"
        );
    }
}
