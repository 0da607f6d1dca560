//! `tributary-uplink`: the command line over the `tributary_uplink`
//! library: `run`, `check`, `tail`, `fleet` (the central command) and
//! `creds` (the hub's operator-mode credentials, `tributary_creds`).
//!
//! The central command is a subcommand here, not a third binary: it runs
//! where the uplink's package is installed, next to the hub, and can use
//! the uplink's configuration (`--config`) for the hub's address and
//! credentials; a third package would carry the same NATS client again.
//!
//! `run` checks its configuration as `check` does before it connects to
//! anything. Logs go to stderr in the shape their destination wants
//! (`tributary_config::logging`); an error that ends the program is printed once.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use tributary_uplink::tail::{TailFormat, TailOptions, TailReport, tail};

/// Drains the hub's JetStream stream of sensor readings into Kafka.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the uplink until SIGTERM or Ctrl-C (in-flight work is drained).
    Run(ConfigFile),
    /// Check a configuration file, its secrets, the files it names and the
    /// Kafka properties, and print it fully resolved, as TOML.
    Check(ConfigFile),
    /// Print readings from a Kafka topic, one line each.
    Tail {
        /// Bootstrap servers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// The topic.
        #[arg(long, default_value = "tributary.readings")]
        topic: String,
        /// Only readings of this device.
        #[arg(long)]
        device: Option<String>,
        /// Only readings of this sensor.
        #[arg(long)]
        sensor: Option<String>,
        /// Start at the beginning (default: the last --limit, or 10, records
        /// of each partition).
        #[arg(long)]
        from_beginning: bool,
        /// Keep printing new readings as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// Stop after this many lines.
        #[arg(long, short = 'n')]
        limit: Option<usize>,
        /// Extra librdkafka property, `key=value` (repeatable), e.g. for SASL.
        #[arg(long = "property", short = 'X', value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// `human`: one line per reading; `json`: each record exactly as
        /// stored in Kafka, one per line (for jq).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Append each reading's age on arrival (this machine's time minus
        /// the reading's `ts`) to its human line, and print the latency
        /// summary (count, p50, p90, p99, max) to stderr when stopping (with
        /// --format json: the summary only, the records stay as stored).
        /// Readings already in Kafka when tail started did not arrive while
        /// it watched: their lines say `stored` and the summary leaves them
        /// out.
        #[arg(long)]
        age: bool,
        /// Print the latency summary to stderr when stopping (implied by
        /// --age).
        #[arg(long)]
        summary: bool,
        /// Give up when no broker answers within this long (e.g. `10s`).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        connect_timeout: std::time::Duration,
    },
    /// The central command: list the fleet, ask a device for its status, a
    /// reading or its configuration, push a configuration. Exit status 3
    /// when the device asked did not answer.
    Fleet {
        #[command(flatten)]
        conn: fleet_cli::FleetConn,
        #[command(subcommand)]
        command: fleet_cli::FleetCommand,
    },
    /// Operator-mode (JWT) credentials of the hub, without nsc: make the
    /// operator and the fleet's account, issue a device's .creds.
    Creds {
        #[command(subcommand)]
        command: creds_cli::CredsCommand,
    },
}

#[path = "tributary-uplink/creds_cli.rs"]
mod creds_cli;

#[path = "tributary-uplink/fleet_cli.rs"]
mod fleet_cli;

/// `tail --format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    /// One line per reading, for people.
    Human,
    /// Each record as stored in Kafka, one per line.
    Json,
}

/// The `--config` option of `run` and `check`.
#[derive(Debug, clap::Args)]
struct ConfigFile {
    /// The configuration file.
    #[arg(long, short, env = "TRIBUTARY_UPLINK_CONFIG")]
    config: PathBuf,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tributary_config::logging::init(tributary_config::logging::Options {
        format: tributary_config::logging::Format::Text,
        filter_vars: &["TRIBUTARY_LOG", "RUST_LOG"],
        default_filter: "info",
    });
    let result = match cli.command {
        Command::Check(ConfigFile { config }) => check(&config),
        Command::Run(ConfigFile { config }) => match run(&config) {
            // Logged like every other line of the service (journald:
            // priority 3), once.
            Err(e) => {
                tracing::error!("{e:#}");
                return ExitCode::FAILURE;
            }
            ok => ok,
        },
        Command::Creds { command } => creds_cli::run(command),
        Command::Fleet { conn, command } => {
            return match runtime().and_then(|rt| rt.block_on(fleet_cli::run(conn, command))) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Tail {
            brokers,
            topic,
            device,
            sensor,
            from_beginning,
            follow,
            limit,
            properties,
            format,
            age,
            summary,
            connect_timeout,
        } => run_tail(
            TailOptions {
                brokers,
                topic,
                device,
                sensor,
                from_beginning,
                follow,
                limit,
                properties,
                format: match format {
                    Format::Human => TailFormat::Human,
                    Format::Json => TailFormat::Json,
                },
                age,
                connect_timeout,
            },
            age || summary,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration at `path`, checked as `check` does: parsed and
/// validated, every secret and file of `[nats]` resolved, and every Kafka
/// property accepted by librdkafka.
fn checked_config(path: &std::path::Path) -> anyhow::Result<tributary_config::UplinkConfig> {
    Ok(tributary_config::check_uplink(path, |c| {
        tributary_uplink::kafka::check_config(&c.kafka, c.exactly_once.enabled)
    })?)
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = checked_config(path)?;
    print!(
        "{}",
        toml::to_string(&config)
            .map_err(|e| anyhow::anyhow!("printing the resolved configuration: {e}"))?
    );
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))
}

/// Cancels `token` on SIGTERM or SIGINT, saying so at info (`run`) or, for
/// `tail`, whose output is the readings, at debug (`quiet`).
fn cancel_on_signals(token: CancellationToken, quiet: bool) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| anyhow::anyhow!("installing the SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| anyhow::anyhow!("installing the SIGINT handler: {e}"))?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if quiet {
            debug!("{name}: stopping");
        } else {
            info!("{name}: draining and stopping");
        }
        token.cancel();
    });
    Ok(())
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = checked_config(path)?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone(), false)?;
        tributary_uplink::run(config, shutdown).await?;
        Ok(())
    });
    // `run` has drained what it could within its bound; what may still be
    // on a blocking thread is librdkafka tearing down a client whose
    // requests to a frozen broker have not timed out yet (a probe, an old
    // producer). Dropping the runtime would wait for it, so leave it.
    rt.shutdown_timeout(LEFTOVER_BLOCKING_WORK);
    result
}

/// How long the process waits at exit for blocking work `run` left behind.
const LEFTOVER_BLOCKING_WORK: std::time::Duration = std::time::Duration::from_millis(500);

fn run_tail(opts: TailOptions, summary: bool) -> anyhow::Result<()> {
    let rt = runtime()?;
    let stop = Arc::new(AtomicBool::new(false));
    let token = CancellationToken::new();
    rt.block_on(async { cancel_on_signals(token.clone(), true) })?;
    let flag = stop.clone();
    rt.spawn(async move {
        token.cancelled().await;
        flag.store(true, Ordering::Relaxed);
    });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut report = TailReport::default();
    let result = tail(&opts, &stop, &mut out, &mut report);
    if summary && (result.is_ok() || report.latency.count() > 0) {
        eprintln!("{}", report.latency.summary());
        if report.stored > 0 {
            eprintln!(
                "{} readings already in Kafka when tail started are not in it",
                report.stored
            );
        }
    }
    if opts.format == TailFormat::Json && report.not_readings > 0 {
        eprintln!(
            "{} records were not readings and were left out",
            report.not_readings
        );
    }
    match result {
        Ok(()) => Ok(()),
        Err(tributary_uplink::tail::TailError::Io(e))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "tail of {} at {}: {e}",
            opts.topic,
            opts.brokers
        )),
    }
}
