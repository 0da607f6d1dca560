//! The shipped alert rules and dashboards against the real programs: a real Prometheus
//! (Debian's 2.42, 1 s scrape and evaluation intervals) scrapes a real agent and a real
//! uplink, themselves talking to a real leaf and hub `nats-server` and a real Kafka (tansu).
//!
//! * Every metric the dashboards and rules name is in the agent's or the uplink's `/metrics`
//!   output, and every dashboard query and rule expression is PromQL this Prometheus
//!   accepts; every dashboard query returns series.
//! * With the hub stopped, the agent's backlog alert fires (seen on `/api/v1/alerts`), and
//!   so does the link-not-live alert; both resolve once the hub is back and the backlog
//!   drained.
//!
//! The rules Prometheus loads here are the shipped files with only their `for:` durations
//! shortened to [`FOR`] ([`monitoring::rules_with_for`]): expressions and thresholds are the
//! shipped ones.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tributary_tests::monitoring::{
    self, AGENT_DASHBOARD, AGENT_RULES, UPLINK_DASHBOARD, UPLINK_RULES,
};
use tributary_tests::tributary::{
    agent_config, create_stream, scrape_body, start_agent, start_uplink, uplink_config,
};
use tributary_tests::{
    Kafka, NatsServer, Prometheus, PrometheusSetup, Result, ServerProcess, free_port,
};

/// The `for:` of every rule in the test's copy.
const FOR: &str = "2s";
const BACKLOG_ALERT: &str = "TributaryAgentBacklogGrowing";
const LINK_ALERT: &str = "TributaryAgentLinkNotLive";
const WAIT: Duration = Duration::from_secs(30);

/// Hub, leaf, Kafka, uplink and agent, all running, and the two metrics ports.
struct Pipeline {
    hub: NatsServer,
    leaf: NatsServer,
    _kafka: Kafka,
    uplink: ServerProcess,
    agent: ServerProcess,
    agent_port: u16,
    uplink_port: u16,
    _state: tempfile::TempDir,
}

async fn pipeline() -> Result<Pipeline> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    let kafka = Kafka::start_memory()?;
    create_stream(&hub).await?;
    let uplink_port = free_port();
    let uplink = start_uplink(&format!(
        "{}\n[http]\nlisten = \"127.0.0.1:{uplink_port}\"\n",
        uplink_config(&hub, &kafka, "readings", "monitoring")
    ))?;
    let state = tempfile::tempdir().expect("temp dir");
    let agent_port = free_port();
    let sensors = format!(
        r#"
[metrics]
listen = "127.0.0.1:{agent_port}"

[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "50ms"
"#
    );
    let agent = start_agent(&agent_config("pi-monitored", &leaf, state.path(), &sensors))?;
    Ok(Pipeline {
        hub,
        leaf,
        _kafka: kafka,
        uplink,
        agent,
        agent_port,
        uplink_port,
        _state: state,
    })
}

/// A Prometheus scraping `p`'s agent (job `tributary-agent`) and uplink (job
/// `tributary-uplink`) with the shipped rules, their `for:` shortened to [`FOR`].
fn prometheus(p: &Pipeline) -> Result<Prometheus> {
    let rules = |file: &str| -> Result<(String, String)> {
        Ok((
            file.to_owned(),
            monitoring::rules_with_for(&monitoring::read(file)?, FOR)?,
        ))
    };
    Prometheus::start(PrometheusSetup {
        targets: vec![
            ("tributary-agent".into(), p.agent_port),
            ("tributary-uplink".into(), p.uplink_port),
        ],
        rule_files: vec![rules(AGENT_RULES)?, rules(UPLINK_RULES)?],
        interval: Duration::from_secs(1),
    })
}

/// Polls `check` every 250 ms until it returns `Some`, failing with `what` and the
/// programs' logs after `timeout`.
async fn eventually<T>(
    p: &mut Pipeline,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&mut Pipeline) -> Result<Option<T>>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        assert!(
            p.agent.is_running() && p.uplink.is_running(),
            "a program died: agent:\n{}\nuplink:\n{}",
            p.agent.log_tail(20),
            p.uplink.log_tail(20)
        );
        match check(p) {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?} (last error: {last})\nagent:\n{}\nuplink:\n{}",
            p.agent.log_tail(20),
            p.uplink.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until Prometheus scraped both programs a few times (so that rates have data).
async fn scraped(p: &mut Pipeline, prometheus: &Prometheus) {
    eventually(p, WAIT, "both targets up", |_| {
        let health = prometheus.target_health()?;
        Ok((health.len() == 2 && health.iter().all(|(_, h)| h == "up")).then_some(()))
    })
    .await;
    eventually(p, WAIT, "five scrapes of each target", |_| {
        let counts = prometheus.query("count_over_time(up[1m])")?;
        let ok = counts.as_array().is_some_and(|series| {
            series.len() == 2
                && series.iter().all(|s| {
                    s["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|n| n >= 5.0)
                })
        });
        Ok(ok.then_some(()))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_and_rules_use_only_metrics_a_real_agent_and_uplink_serve_and_valid_promql()
{
    let mut p = pipeline().await.unwrap();
    let prometheus = prometheus(&p).unwrap();
    scraped(&mut p, &prometheus).await;

    let exposition = |port: u16| {
        let answer = scrape_body(port).unwrap();
        let (_head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
        monitoring::sample_names(body)
    };
    let (agent, uplink) = (exposition(p.agent_port), exposition(p.uplink_port));
    let mut used = BTreeSet::new();
    for file in [AGENT_RULES, UPLINK_RULES, AGENT_DASHBOARD, UPLINK_DASHBOARD] {
        let names = monitoring::tributary_metrics(&monitoring::read(file).unwrap());
        assert!(!names.is_empty(), "{file} names no Tributary metric");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| {
                let served = if n.starts_with("tributary_agent_") {
                    &agent
                } else {
                    &uplink
                };
                !served.contains(*n)
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the programs do not serve: {missing:?}\nagent serves {agent:?}\nuplink serves {uplink:?}"
        );
        used.extend(names);
    }
    // Every metric the programs serve is on a dashboard or in a rule (a histogram's `_sum`
    // and `_count` may be left out when its buckets are used).
    let unused: Vec<&String> = agent
        .iter()
        .chain(&uplink)
        .filter(|n| !used.contains(*n))
        .filter(|n| {
            let base = n.strip_suffix("_sum").or_else(|| n.strip_suffix("_count"));
            !base.is_some_and(|b| used.contains(&format!("{b}_bucket")))
        })
        .collect();
    assert!(unused.is_empty(), "served but on no dashboard: {unused:?}");

    for file in [AGENT_RULES, UPLINK_RULES] {
        for expr in monitoring::rule_exprs(&monitoring::read(file).unwrap()) {
            prometheus
                .query(&expr)
                .unwrap_or_else(|e| panic!("{file}: {expr}: {e}"));
        }
    }
    for file in [AGENT_DASHBOARD, UPLINK_DASHBOARD] {
        let dashboard: serde_json::Value =
            serde_json::from_str(&monitoring::read(file).unwrap()).unwrap();
        for expr in monitoring::dashboard_exprs(&dashboard) {
            let promql = monitoring::grafana_to_promql(&expr, "1m");
            let result = prometheus
                .query(&promql)
                .unwrap_or_else(|e| panic!("{file}: {promql}: {e}"));
            assert!(
                result.as_array().is_some_and(|r| !r.is_empty()),
                "{file}: {promql} returns no series from a running agent and uplink"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_and_link_alerts_fire_while_the_hub_is_away_and_resolve_when_it_is_back() {
    let mut p = pipeline().await.unwrap();
    let prometheus = prometheus(&p).unwrap();
    let groups = prometheus.rule_groups().unwrap();
    assert!(
        groups.contains(&("tributary-agent".into(), 9))
            && groups.contains(&("tributary-uplink".into(), 9)),
        "the shipped rule groups are loaded: {groups:?}"
    );
    scraped(&mut p, &prometheus).await;
    let connected: Vec<_> = prometheus
        .alerts()
        .unwrap()
        .into_iter()
        .filter(|a| a.name != "TributaryAgentClockUnsynchronized")
        .collect();
    assert!(
        connected.is_empty(),
        "no alert while everything is up: {connected:?}"
    );

    let started = Instant::now();
    p.hub.kill().unwrap();
    let alert = eventually(&mut p, WAIT, "the backlog alert fires", |_| {
        Ok(prometheus
            .alerts()?
            .into_iter()
            .find(|a| a.name == BACKLOG_ALERT && a.is_firing()))
    })
    .await;
    let fired_after = started.elapsed();
    let instance = format!("127.0.0.1:{}", p.agent_port);
    assert_eq!(alert.labels["job"], "tributary-agent");
    assert_eq!(alert.labels["instance"], instance);
    assert_eq!(alert.labels["severity"], "warning");
    assert!(
        alert.annotations["summary"].starts_with(&format!("Disk backlog of {instance} ")),
        "{alert:?}"
    );
    assert!(
        alert.annotations["description"].contains("Check the leaf's connection to the hub"),
        "{alert:?}"
    );
    // The link spills and retries without ever being live: the stall alert fires too.
    eventually(&mut p, WAIT, "the link-not-live alert fires", |_| {
        Ok(prometheus
            .alerts()?
            .into_iter()
            .find(|a| a.name == LINK_ALERT && a.is_firing()))
    })
    .await;

    let back = Instant::now();
    p.hub.restart().unwrap();
    p.leaf.wait_leaf_connected(WAIT).unwrap();
    eventually(
        &mut p,
        Duration::from_secs(60),
        "both alerts resolve",
        |_| {
            let alerts = prometheus.alerts()?;
            let active: Vec<&str> = alerts
                .iter()
                .map(|a| a.name.as_str())
                .filter(|n| [BACKLOG_ALERT, LINK_ALERT].contains(n))
                .collect();
            Ok(active.is_empty().then_some(()))
        },
    )
    .await;
    let resolved_after = back.elapsed();
    let drained = prometheus.query("tributary_agent_buffer_records").unwrap();
    eprintln!(
        "backlog alert fired {fired_after:?} after the hub stopped; both resolved {resolved_after:?} after it returned; buffer now {drained}"
    );
}
