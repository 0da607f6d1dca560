//! The shipped monitoring files (`config/monitoring/`: Prometheus alert rules, Grafana
//! dashboards, promtool unit tests) as the tests read them: where they are, which metrics
//! and PromQL expressions they use, and the end-to-end test's copy of the rules.
//!
//! # The end-to-end test's copy of the rules
//!
//! The shipped `for:` durations (minutes) would make an end-to-end test last a quarter of an
//! hour, so [`rules_with_for`] rewrites every line `for: <duration>` of a rules file to one
//! short duration and changes nothing else: expressions, thresholds, range windows, labels
//! and annotations stay exactly as shipped.

use crate::error::{HarnessError, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The agent's alert rules, shipped in the `tributary-agent` package.
pub const AGENT_RULES: &str = "tributary-agent.rules.yml";
/// The uplink's alert rules, shipped in the `tributary-uplink` package.
pub const UPLINK_RULES: &str = "tributary-uplink.rules.yml";
/// The agents' Grafana dashboard, shipped in the `tributary-agent` package.
pub const AGENT_DASHBOARD: &str = "tributary-agents.dashboard.json";
/// The uplink's Grafana dashboard, shipped in the `tributary-uplink` package.
pub const UPLINK_DASHBOARD: &str = "tributary-uplink.dashboard.json";

/// `config/monitoring/` of this workspace.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/monitoring")
}

/// The text of `config/monitoring/<name>`.
pub fn read(name: &str) -> Result<String> {
    let path = dir().join(name);
    std::fs::read_to_string(&path).map_err(|e| HarnessError::io("reading", &path, e))
}

/// `rules` with every `for:` duration replaced by `duration` (such as `"2s"`), nothing else
/// changed; an error when the text has no `for:` line at all.
pub fn rules_with_for(rules: &str, duration: &str) -> Result<String> {
    let mut replaced = 0;
    let mut out = String::with_capacity(rules.len());
    for line in rules.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with("for: ") && line.split_whitespace().count() == 2 {
            out.push_str(&line[..indent]);
            out.push_str("for: ");
            out.push_str(duration);
            replaced += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if replaced == 0 {
        return Err(HarnessError::Monitoring {
            path: PathBuf::from("(rules text)"),
            reason: "no `for:` line to replace".into(),
        });
    }
    Ok(out)
}

/// The alert names (`- alert: NAME`) of a rules file, in file order.
pub fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// The PromQL expressions (`expr: …`) of a rules file, in file order.
pub fn rule_exprs(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr: "))
        .map(|e| e.trim().to_owned())
        .collect()
}

/// Every PromQL expression a Grafana dashboard queries: each panel target's `expr` and each
/// query variable's `definition`, in the order they appear.
pub fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// A dashboard expression made evaluable by Prometheus itself: Grafana's variables
/// replaced by what Grafana would send (`$__rate_interval` a window, `$instance` every
/// instance) and `label_values(METRIC, label)` by `METRIC`.
pub fn grafana_to_promql(expr: &str, rate_interval: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", rate_interval)
        .replace("$instance", ".+");
    match expr
        .strip_prefix("label_values(")
        .and_then(|rest| rest.split(',').next())
    {
        Some(metric) => metric.trim().to_owned(),
        None => expr,
    }
}

/// The Tributary metric names (`tributary_agent_…`, `tributary_uplink_…`) a text mentions.
/// PromQL has no other way to name Tributary's metrics, so this finds every one a rules file
/// or dashboard uses (and the ones their annotations and descriptions mention).
pub fn tributary_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(pos) = text[i..].find("tributary_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && is_name(bytes[end]) {
            end += 1;
        }
        let preceded = start > 0 && is_name(bytes[start - 1]);
        let name = &text[start..end];
        if !preceded
            && (name.starts_with("tributary_agent_") || name.starts_with("tributary_uplink_"))
        {
            out.insert(name.to_owned());
        }
        i = end.max(start + 1);
    }
    out
}

/// The sample names of a Prometheus text exposition (`name{…} value` and `name value`
/// lines; `# HELP`/`# TYPE` lines are not samples).
pub fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_for_substitution_changes_only_for_lines() {
        let rules = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x[10m] > 5\n        for: 15m\n        annotations:\n          summary: \"for: ever\"\n";
        let copy = rules_with_for(rules, "2s").unwrap();
        assert_eq!(copy, rules.replace("for: 15m", "for: 2s"));
        assert!(rules_with_for("groups: []\n", "2s").is_err());
    }

    #[test]
    fn metric_names_are_found_in_promql_and_prose_but_not_inside_other_names() {
        let found = tributary_metrics(
            "rate(tributary_agent_acked_messages_total[5m]) / my_tributary_agent_x + tributary_uplink_in_flight{a=\"b\"}; see tributary_agent_link_state.",
        );
        let want: BTreeSet<String> = [
            "tributary_agent_acked_messages_total",
            "tributary_agent_link_state",
            "tributary_uplink_in_flight",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(found, want);
    }

    #[test]
    fn sample_names_skip_comments_and_keep_labelled_and_plain_samples() {
        let names = sample_names("# HELP a x\n# TYPE a counter\na 1\nb_bucket{le=\"1\"} 2\n\n");
        assert_eq!(names, ["a", "b_bucket"].map(str::to_owned).into());
    }

    #[test]
    fn grafana_variables_become_plain_promql() {
        assert_eq!(
            grafana_to_promql("rate(x{instance=~\"$instance\"}[$__rate_interval])", "1m"),
            "rate(x{instance=~\".+\"}[1m])"
        );
        assert_eq!(
            grafana_to_promql("label_values(x_total, instance)", "1m"),
            "x_total"
        );
    }
}
