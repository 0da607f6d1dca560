//! Forwarding benchmark: the agent draining a backlog to the hub through a leaf, against a bare
//! async-nats JetStream publisher sending the same messages in the same run, plus the agent's
//! memory at steady state and while draining, and the bytes it writes to disk per reading.
//!
//! Everything is real and runs one phase after the other on this machine: a `nats-server` hub
//! with JetStream on file storage, a leaf node connected to it, and the `tributary-agent` binary
//! of this build (bench profile) as its own process, so its RSS is its own.
//!
//! 1. **fill**: the agent's own cutting (`batcher::messages`) writes the backlog (`--readings`, default 1,000,000,
//!    from 50 sensors, `--per-message` readings per envelope, default 1: what 1 Hz sensors with
//!    the default 1 s flush interval produce during an outage) into a buffer directory;
//! 2. **baseline**: a bare async-nats JetStream publisher sends the same envelopes (read back
//!    from that buffer, decoded beforehand) with the same `Nats-Msg-Id`s through the leaf into
//!    a second stream, keeping the same number of acks pending (the agent's default
//!    `max_in_flight`, 64);
//! 3. **drain**: `tributary-agent run` on that buffer until the hub's stream holds the whole
//!    backlog; its peak RSS (`VmHWM`);
//! 4. **steady**: a fresh agent with 50 simulated sensors at 1 Hz for `--steady-secs` (default
//!    60): peak RSS, and disk bytes written per reading, both as the kernel counts them
//!    (`/proc/<pid>/io` `write_bytes`, whole pages) and as the buffer counts them (frames).
//!
//! Prints figures and the ratio to the goals; asserts nothing about speed.
//!
//! Run: `cargo bench -p tributary-agent --bench forward [-- --readings N --per-message K
//! --steady-secs S]`.

use async_nats::jetstream::{self, message::PublishMessage};
use futures::stream::{FuturesUnordered, StreamExt};
use std::ffi::OsStr;
use std::future::IntoFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary_agent::batcher::{self, BatchLimits};
use tributary_agent::buffer::{AppendOutcome, Buffer, BufferConfig, WhenFull};
use tributary_agent::sensors::{Observation, SensorMeta};
use tributary_tests::tributary::{scrape_metric, start_program};
use tributary_tests::{NatsServer, ServerProcess, free_port};
use tributary_wire::{Envelope, Value};

const SENSORS: usize = 50;
const IN_FLIGHT: usize = 64;
const DEVICE: &str = "bench";
const GOAL_RATIO: f64 = 0.8;
const GOAL_STEADY_RSS: u64 = 8 * 1024 * 1024;
const GOAL_DRAIN_RSS: u64 = 16 * 1024 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[path = "support/mod.rs"]
mod support;
use support::{mib, proc_io, proc_status};

struct Args {
    readings: usize,
    per_message: usize,
    steady_secs: u64,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: usize| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} wants a number"))
            })
            .unwrap_or(default)
    };
    Args {
        readings: get("--readings", 1_000_000),
        per_message: get("--per-message", 1).max(1),
        steady_secs: get("--steady-secs", 60) as u64,
    }
}

fn main() -> Result<(), Error> {
    let args = args();
    // The agent binary of this very build; the harness starts it from here.
    let agent_bin = env!("CARGO_BIN_EXE_tributary-agent");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(args, Path::new(agent_bin)))
}

async fn bench(args: Args, agent_bin: &Path) -> Result<(), Error> {
    let messages = args.readings.div_ceil(args.per_message);
    println!(
        "agent forwarding benchmark: {} readings from {SENSORS} sensors, {} per message ({messages} messages), {IN_FLIGHT} acks pending, hub JetStream on file storage, through a leaf",
        args.readings, args.per_message
    );
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    leaf.wait_leaf_connected(Duration::from_secs(10))?;
    let hub_js = jetstream::new(hub.connect().await?);
    support::create_streams(&hub_js).await?;

    // 1. fill
    let state = tempfile::tempdir()?;
    let started = Instant::now();
    let written = fill(&state.path().join("buffer"), &args)?;
    let fill_secs = started.elapsed().as_secs_f64();
    println!(
        "fill:     {:>9.0} readings/s through the batcher into the buffer ({:.1} s, {:.1} MB written, {:.1} B/reading)",
        args.readings as f64 / fill_secs,
        fill_secs,
        written as f64 / 1e6,
        written as f64 / args.readings as f64
    );

    // 2. baseline
    let msgs = backlog(&state.path().join("buffer"))?;
    assert_eq!(msgs.len(), messages, "backlog message count");
    let base_secs = bare_publisher(&leaf, msgs).await?;
    let base_rate = args.readings as f64 / base_secs;
    wait_for_messages(&hub_js, "BASELINE", messages, Duration::from_secs(5)).await?;
    println!(
        "baseline: {base_rate:>9.0} readings/s bare async-nats JetStream publisher ({base_secs:.1} s)"
    );

    // 3. drain
    let config = agent_toml(state.path(), &leaf, "", None);
    let started = Instant::now();
    let mut agent = start_agent(agent_bin, &config)?;
    let pid = agent.pid().ok_or("agent has no pid")?;
    let mut peak_rss = 0;
    wait_for_messages_while(
        &hub_js,
        "TRIBUTARY",
        messages,
        Duration::from_secs(1800),
        || {
            peak_rss = peak_rss.max(proc_status(pid, "VmRSS:").unwrap_or(0));
        },
    )
    .await?;
    let drain_secs = started.elapsed().as_secs_f64();
    let drain_hwm = proc_status(pid, "VmHWM:").unwrap_or(peak_rss);
    agent.terminate(Duration::from_secs(20))?;
    let drain_rate = args.readings as f64 / drain_secs;
    println!(
        "agent:    {drain_rate:>9.0} readings/s draining the backlog ({drain_secs:.1} s from process start) = {:.2} x baseline (goal >= {GOAL_RATIO})",
        drain_rate / base_rate
    );
    println!(
        "          peak RSS while draining {} (goal <= {})",
        mib(drain_hwm),
        mib(GOAL_DRAIN_RSS)
    );

    // 4. steady
    steady(agent_bin, &leaf, args.steady_secs).await?;
    Ok(())
}

/// The backlog's buffer: as large as the backlog needs, 1 MiB segments (the
/// agent's default), never dropping anything.
fn backlog_buffer(dir: &Path) -> BufferConfig {
    BufferConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 34,
        segment_bytes: 1 << 20,
        when_full: WhenFull::Block,
    }
}

/// Writes the backlog with the agent's own cutting ([`batcher::messages`])
/// straight into the buffer: one group commit per `per_message` rounds of one
/// reading per sensor. Returns the frame bytes written.
fn fill(dir: &Path, args: &Args) -> Result<u64, Error> {
    let mut buffer = Buffer::open(backlog_buffer(dir))?.0;
    let epoch = buffer.epoch();
    let limits = BatchLimits {
        max_readings: args.per_message,
        max_message_size: 64 * 1024,
    };
    let sensors: Vec<Arc<SensorMeta>> = (0..SENSORS)
        .map(|i| {
            Arc::new(SensorMeta {
                id: format!("s{i:02}"),
                unit: Some("°C".to_owned()),
                tags: vec![("room".to_owned(), "lab".to_owned())],
            })
        })
        .collect();
    let mut pending = Vec::with_capacity(SENSORS * args.per_message);
    let mut produced = 0usize;
    let mut t = 1_795_000_000_000_000_000i64;
    while produced < args.readings {
        for _ in 0..args.per_message {
            for sensor in &sensors {
                if produced == args.readings {
                    break;
                }
                pending.push(Observation {
                    sensor: sensor.clone(),
                    timestamp_ns: t,
                    clock: tributary_wire::Clock::Synced,
                    value: Value::Float(20.0 + (produced % 100) as f64 / 10.0),
                });
                produced += 1;
            }
            t += 1_000_000_000;
        }
        let seqs = buffer.allocate_seqs(pending.len() as u64)?;
        let sequenced = pending.drain(..).zip(seqs);
        for m in batcher::messages(DEVICE, epoch, &limits, "tributary", sequenced) {
            match buffer.append(&m.bytes)? {
                AppendOutcome::Stored(_) => {}
                AppendOutcome::DroppedNewest => return Err("fill: buffer full".into()),
            }
        }
        buffer.flush()?;
    }
    let bytes = buffer.stats().bytes_written;
    buffer.close()?;
    Ok(bytes)
}

/// One message of the backlog, ready to publish.
struct Message {
    subject: String,
    id: String,
    payload: bytes::Bytes,
}

/// Reads the backlog back from the buffer without acknowledging anything.
fn backlog(dir: &Path) -> Result<Vec<Message>, Error> {
    let (mut buffer, _) = Buffer::open(backlog_buffer(dir))?;
    let mut out = Vec::new();
    loop {
        let records = buffer.read(4096)?;
        if records.is_empty() {
            break;
        }
        for record in records {
            let env = Envelope::decode(&record.payload)?;
            out.push(Message {
                subject: env.subject("baseline"),
                id: env.msg_id(),
                payload: record.payload.into(),
            });
        }
    }
    buffer.close()?;
    Ok(out)
}

/// The baseline: publishes `msgs` through the leaf with `IN_FLIGHT` acks pending, the same
/// JetStream context settings as the agent. Returns the seconds until the last ack.
async fn bare_publisher(leaf: &NatsServer, msgs: Vec<Message>) -> Result<f64, Error> {
    let client = async_nats::connect(leaf.client_url()).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .max_ack_inflight(IN_FLIGHT * 2)
        .backpressure_on_inflight(true)
        .build(client);
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for m in msgs {
        if pending.len() >= IN_FLIGHT {
            pending.next().await.expect("pending ack")?;
        }
        let ack = js
            .send_publish(
                m.subject,
                PublishMessage::build().payload(m.payload).message_id(m.id),
            )
            .await?;
        pending.push(ack.into_future());
    }
    while let Some(ack) = pending.next().await {
        ack?;
    }
    Ok(started.elapsed().as_secs_f64())
}

async fn wait_for_messages(
    js: &jetstream::Context,
    stream: &str,
    want: usize,
    timeout: Duration,
) -> Result<(), Error> {
    wait_for_messages_while(js, stream, want, timeout, || {}).await
}

/// Polls the stream's message count every 50 ms until it reaches `want`, calling `tick` each
/// time.
async fn wait_for_messages_while(
    js: &jetstream::Context,
    stream: &str,
    want: usize,
    timeout: Duration,
    mut tick: impl FnMut(),
) -> Result<(), Error> {
    let mut stream = js.get_stream(stream).await?;
    let deadline = Instant::now() + timeout;
    loop {
        tick();
        let have = stream.info().await?.state.messages as usize;
        if have >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("stream holds {have} of {want} messages after {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// 50 sensors at 1 Hz for `secs`: peak RSS and bytes written per reading.
async fn steady(agent_bin: &Path, leaf: &NatsServer, secs: u64) -> Result<(), Error> {
    let state = tempfile::tempdir()?;
    let metrics_port = free_port();
    let sensors: String = (0..SENSORS)
        .map(|i| {
            format!(
                "[[sensors.simulated]]\nid = \"s{i:02}\"\ninterval = \"1s\"\nunit = \"°C\"\nperiod = \"{}s\"\n",
                30 + i
            )
        })
        .collect();
    let config = agent_toml(state.path(), leaf, &sensors, Some(metrics_port));
    let mut agent = start_agent(agent_bin, &config)?;
    let pid = agent.pid().ok_or("agent has no pid")?;
    let mut peak_rss = 0;
    // Warm-up: the first flushes and the connection.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (w0, m0) = (
        proc_io(pid, "write_bytes:").unwrap_or(0),
        scrape_metric(metrics_port, "tributary_agent_buffer_bytes_written_total")?,
    );
    let r0 = scrape_metric(metrics_port, "tributary_agent_acked_readings_total")?;
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(proc_status(pid, "VmRSS:").unwrap_or(0));
    }
    let (w1, m1) = (
        proc_io(pid, "write_bytes:").unwrap_or(0),
        scrape_metric(metrics_port, "tributary_agent_buffer_bytes_written_total")?,
    );
    let r1 = scrape_metric(metrics_port, "tributary_agent_acked_readings_total")?;
    let hwm = proc_status(pid, "VmHWM:").unwrap_or(peak_rss);
    let anon = proc_status(pid, "RssAnon:").unwrap_or(0);
    agent.terminate(Duration::from_secs(20))?;
    let readings = (r1 - r0).max(1.0);
    println!(
        "steady:   {SENSORS} sensors at 1 Hz for {secs} s: {} readings acked, peak RSS {} (goal <= {}), RSS at the end of the window {}, of which anonymous (heap, stacks) {}",
        readings,
        mib(hwm),
        mib(GOAL_STEADY_RSS),
        mib(peak_rss),
        mib(anon)
    );
    println!(
        "          disk: {:.0} B written per reading by the kernel's count (whole pages; only spills write), {:.1} B per reading of buffer frames",
        (w1 - w0) as f64 / readings,
        (m1 - m0) / readings
    );
    Ok(())
}

fn agent_toml(state: &Path, leaf: &NatsServer, sensors: &str, metrics: Option<u16>) -> String {
    let metrics = metrics
        .map(|p| format!("[metrics]\nlisten = \"127.0.0.1:{p}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[agent]
device = "{DEVICE}"
state_dir = "{state}"

[nats]
urls = ["{leaf}"]

[buffer]
max_size = "16 GiB"

[forward]
max_in_flight = {IN_FLIGHT}

{metrics}
{sensors}
"#,
        state = state.display(),
        leaf = leaf.client_url()
    )
}

fn start_agent(bin: &Path, config: &str) -> Result<ServerProcess, Error> {
    let log: &OsStr = "warn".as_ref();
    Ok(start_program(
        "agent",
        bin.to_path_buf(),
        config,
        &[("TRIBUTARY_LOG", log)],
    )?)
}
