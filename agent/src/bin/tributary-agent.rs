//! `tributary-agent`: command line over the agent library.
//!
//! * `tributary-agent run --config /etc/tributary/agent.toml`
//! * `tributary-agent check --config /etc/tributary/agent.toml`
//!
//! Both check the configuration the same way (`tributary_config::check_agent`:
//! every secret and file resolved), so `run` refuses nothing `check`
//! passed. Logs go to stderr in the shape their destination wants
//! (`tributary_config::logging`); a fatal error is logged once.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Tributary edge agent: reads sensors, buffers readings on disk and
/// forwards them to the hub's JetStream through the local NATS leafnode.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent until SIGTERM or SIGINT; SIGHUP reloads the sensors.
    Run {
        #[command(flatten)]
        config: ConfigFile,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check the configuration, its secrets and the files it names: print it
    /// resolved (secrets hidden), or print the error and exit non-zero.
    Check {
        #[command(flatten)]
        config: ConfigFile,
    },
}

/// The `--config` option of `run` and `check`.
#[derive(Debug, clap::Args)]
struct ConfigFile {
    /// Configuration file.
    #[arg(
        long,
        short,
        env = "TRIBUTARY_AGENT_CONFIG",
        default_value = "/etc/tributary/agent.toml"
    )]
    config: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config.config),
        Command::Run { config, log_format } => {
            tributary_config::logging::init(tributary_config::logging::Options {
                format: match log_format {
                    LogFormat::Text => tributary_config::logging::Format::Text,
                    LogFormat::Json => tributary_config::logging::Format::Json,
                },
                filter_vars: &["TRIBUTARY_LOG"],
                default_filter: "info",
            });
            match run(&config.config) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &Path) -> std::process::ExitCode {
    match tributary_config::check_agent(path) {
        Ok(cfg) => {
            match toml::to_string_pretty(&cfg) {
                Ok(text) => print!("{text}"),
                Err(e) => println!("# (cannot print the resolved configuration: {e})"),
            }
            eprintln!(
                "{}: OK, {} sensor(s), device {:?}",
                path.display(),
                cfg.sensors.len(),
                cfg.agent.device.get_ref()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{:#}", anyhow::Error::new(e));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> anyhow::Result<()> {
    let cfg = tributary_config::check_agent(path)?;
    // One runtime thread is plenty on a Pi Zero. The buffer has a thread of
    // its own; the blocking pool serves sensor reads, at most one per
    // sensor at a time (a stuck read holds its thread), plus a few spare.
    let blocking_threads = cfg.sensors.len() + 4;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .thread_stack_size(256 * 1024)
        .build()
        .context("cannot start the async runtime")?;
    let result = rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let signals = tokio::spawn(handle_signals(path.to_owned(), shutdown.clone(), reload_tx));
        let watchdog_stop = shutdown.clone();
        let stall_after = cfg.metrics.stall_after.get();
        let result = tributary_agent::run::run(
            cfg,
            Some(path.to_owned()),
            shutdown.clone(),
            reload_rx,
            move |handles| {
                tributary_agent::systemd::notify_ready();
                tokio::spawn(tributary_agent::systemd::watchdog(
                    handles.stats,
                    stall_after,
                    watchdog_stop,
                ));
            },
        )
        .await;
        shutdown.cancel();
        signals.abort();
        result.context("agent stopped with an error")
    });
    // A sensor read stuck in the kernel cannot be cancelled: do not wait
    // for its thread.
    rt.shutdown_timeout(RUNTIME_STOP);
    result
}

/// How long the runtime may wait for blocking threads at exit.
const RUNTIME_STOP: std::time::Duration = std::time::Duration::from_millis(200);

async fn handle_signals(
    path: PathBuf,
    shutdown: CancellationToken,
    reload: mpsc::Sender<tributary_config::AgentConfig>,
) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match tributary_config::load_agent(&path) {
                Ok(cfg) => {
                    tracing::info!(config = %path.display(), "SIGHUP: reloading sensors");
                    let _ = reload.send(cfg).await;
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: new configuration is invalid; keeping the old one"),
            },
        }
    }
    tracing::info!("stopping");
    tributary_agent::systemd::notify_stopping();
    shutdown.cancel();
}
