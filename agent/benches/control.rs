//! Control-plane benchmark: the round trip of a request from the center to
//! a device and back (center → hub → leaf → agent → leaf → hub → center),
//! against a bare NATS request/reply through the same servers in the same
//! run, and the agent's memory with the control plane in.
//!
//! Everything is real: a `nats-server` hub with JetStream, a leaf connected
//! to it, the `tributary-agent` binary of this build (bench profile) with
//! 50 simulated sensors at 1 Hz (the load of the agent's 8 MiB RSS goal). The baseline is a plain async-nats
//! responder connected to the same leaf that answers each request with the
//! bytes of one real `status` reply (same size on the wire). Requests are
//! sent one at a time from a client of the hub, agent and baseline
//! interleaved so that both see the same machine; each round sends
//! `--requests` of each kind (default 500), `--rounds` rounds (default 5),
//! and the medians of the rounds' p50 and p99 are printed. RSS is read
//! from `/proc` after 5 s of readings before the first request and after
//! the last, next to an agent with `[control] enabled = false` under the
//! same load, measured first.
//!
//! Run: `cargo bench -p tributary-agent --bench control [-- --requests N --rounds R]`.

use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{agent_config, start_program};
use tributary_tests::{NatsServer, ServerProcess};

#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

type Error = Box<dyn std::error::Error + Send + Sync>;

const DEVICE: &str = "bench";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Error> {
    let requests = arg("--requests", 500);
    let rounds = arg("--rounds", 5);
    let agent_bin = env!("CARGO_BIN_EXE_tributary-agent");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(Path::new(agent_bin), requests, rounds))
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn bench(agent_bin: &Path, requests: usize, rounds: usize) -> Result<(), Error> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    let js = async_nats::jetstream::new(hub.connect().await?);
    support::create_streams(&js).await?;
    let state = tempfile::tempdir()?;
    let sensors: String = (0..50)
        .map(|i| format!("[[sensors.simulated]]\nid = \"s{i}\"\ninterval = \"1s\"\n"))
        .collect();
    let log: &std::ffi::OsStr = "warn".as_ref();
    let settle = Duration::from_secs(5);
    // The same agent without the control plane, for its RSS.
    let without = {
        let state = tempfile::tempdir()?;
        let config = agent_config("bench-off", &leaf, state.path(), &sensors)
            + "\n[control]\nenabled = false\n";
        let agent: ServerProcess = start_program(
            "agent",
            agent_bin.to_path_buf(),
            &config,
            &[("TRIBUTARY_LOG", log)],
        )?;
        tokio::time::sleep(settle).await;
        let pid = agent.pid().ok_or("the agent has no pid")?;
        support::proc_status(pid, "VmRSS:").unwrap_or(0)
    };
    let config = agent_config(DEVICE, &leaf, state.path(), &sensors);
    let agent: ServerProcess = start_program(
        "agent",
        agent_bin.to_path_buf(),
        &config,
        &[("TRIBUTARY_LOG", log)],
    )?;
    let pid = agent.pid().ok_or("the agent has no pid")?;
    tokio::time::sleep(settle).await;
    let before = support::proc_status(pid, "VmRSS:").unwrap_or(0);

    let center = hub.connect().await?;
    let status = format!("tributary-ctl.device.{DEVICE}.status");
    let read = format!("tributary-ctl.device.{DEVICE}.read");
    // Wait for the agent's service to be reachable through the leaf.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        match center.request(status.clone(), "".into()).await {
            Ok(m) if !m.payload.is_empty() => break m.payload,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => return Err(format!("the agent does not answer: {other:?}").into()),
        }
    };

    // The baseline responder behind the same leaf.
    let responder = leaf.connect().await?;
    let mut echo = responder.subscribe("bench.echo").await?;
    responder.flush().await?;
    let reply_body = body.clone();
    let replier = responder.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            if let Some(reply) = m.reply {
                let _ = replier.publish(reply, reply_body.clone()).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!(
        "control-plane benchmark: request/reply center -> hub -> leaf -> device and back, {requests} requests of each kind per round, {rounds} rounds, status reply {} B",
        body.len()
    );
    let (mut agent_p50, mut agent_p99, mut read_p50, mut read_p99, mut bare_p50, mut bare_p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let (mut a, mut r, mut b) = (vec![], vec![], vec![]);
        for _ in 0..requests {
            let t = Instant::now();
            center.request(status.clone(), "".into()).await?;
            a.push(t.elapsed());
            let t = Instant::now();
            center.request("bench.echo", "".into()).await?;
            b.push(t.elapsed());
            let t = Instant::now();
            center.request(read.clone(), "s3".into()).await?;
            r.push(t.elapsed());
        }
        for v in [&mut a, &mut r, &mut b] {
            v.sort();
        }
        println!(
            "round {round}: status p50 {:.2} ms p99 {:.2} ms | read p50 {:.2} ms p99 {:.2} ms | bare request/reply p50 {:.2} ms p99 {:.2} ms",
            ms(quantile(&a, 0.5)),
            ms(quantile(&a, 0.99)),
            ms(quantile(&r, 0.5)),
            ms(quantile(&r, 0.99)),
            ms(quantile(&b, 0.5)),
            ms(quantile(&b, 0.99)),
        );
        agent_p50.push(ms(quantile(&a, 0.5)));
        agent_p99.push(ms(quantile(&a, 0.99)));
        read_p50.push(ms(quantile(&r, 0.5)));
        read_p99.push(ms(quantile(&r, 0.99)));
        bare_p50.push(ms(quantile(&b, 0.5)));
        bare_p99.push(ms(quantile(&b, 0.99)));
    }
    let (bp50, bp99) = (median(bare_p50), median(bare_p99));
    let (ap50, ap99) = (median(agent_p50), median(agent_p99));
    println!(
        "median of {rounds} rounds: agent status p50 {ap50:.2} ms p99 {ap99:.2} ms; agent read (simulated sensor) p50 {:.2} ms p99 {:.2} ms; bare request/reply p50 {bp50:.2} ms p99 {bp99:.2} ms; status / bare: p50 {:.2}x p99 {:.2}x",
        median(read_p50),
        median(read_p99),
        ap50 / bp50,
        ap99 / bp99,
    );
    let rss = support::proc_status(pid, "VmRSS:").unwrap_or(0);
    let hwm = support::proc_status(pid, "VmHWM:").unwrap_or(0);
    println!(
        "agent RSS, 50 sensors at 1 Hz: without the control plane {}; with it {} before the requests, {} after (peak {}); goal <= 8 MiB",
        support::mib(without),
        support::mib(before),
        support::mib(rss),
        support::mib(hwm)
    );
    drop(agent);
    Ok(())
}
