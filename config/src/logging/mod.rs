//! Logging of `tributary-agent` and `tributary-uplink`: lines that fit
//! where they go, and repeated errors rate-limited.
//!
//! [`init`] picks the [`Destination`] of standard error once, at start:
//!
//! | destination | when | text lines |
//! |-------------|------|------------|
//! | [`Destination::Terminal`] | stderr is a terminal | timestamp, level, target; colour unless `NO_COLOR` is set |
//! | [`Destination::Journal`] | `JOURNAL_STREAM` names stderr's device and inode (systemd) | a `<N>` priority prefix per line (journald maps it to `PRIORITY`), no timestamp (journald adds one), no colour |
//! | [`Destination::Plain`] | anything else: a file, a pipe | timestamp, no colour |
//!
//! Except on a terminal, a message's control characters (an ESC in a
//! sensor's output, say) are written escaped (`\x1b`), so journald never
//! stores a line as binary and files stay text. The JSON format is the same
//! everywhere (`tracing-subscriber`'s, which escapes them anyway).
//!
//! Why a `<N>` prefix (sd-daemon(3), journald's `SyslogLevelPrefix=`, on
//! by default) and not native journald fields (`tracing-journald`): the
//! prefix gives `journalctl -p warning` the levels with no dependency and a
//! few hundred bytes of code, where a journald client adds its own socket
//! writer (and memfd fallback) to an agent that must stay under 4 MB. What
//! the fields would add, `journalctl SENSOR=…` queries, `grep` on the
//! `key=value` text does too.
//!
//! [`ratelimit`] keeps a component's repeated errors to one line a minute
//! with the count of those not logged; [`nats::log_event`] (feature `client`)
//! logs the NATS client's connection events through it.

#[cfg(feature = "client")]
pub mod nats;
pub mod ratelimit;
mod sanitize;

use std::ffi::OsStr;
use std::io::IsTerminal;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

pub use ratelimit::{Decision, RateLimited, Window};

/// Where standard error goes, as far as the log's look is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// A terminal: colour unless `colour` is false (`NO_COLOR`).
    Terminal {
        /// Whether ANSI colour is used.
        colour: bool,
    },
    /// systemd's journal, through the stream it connected to stderr.
    Journal,
    /// A file or pipe: plain lines with timestamps.
    Plain,
}

impl Destination {
    /// The destination of this process's stderr.
    pub fn of_stderr() -> Destination {
        Destination::from_facts(
            std::env::var_os("JOURNAL_STREAM").as_deref(),
            stderr_device_inode(),
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        )
    }

    /// The destination given `JOURNAL_STREAM`, stderr's (device, inode),
    /// whether stderr is a terminal, and `NO_COLOR`. `JOURNAL_STREAM` counts
    /// only when it names stderr itself (systemd's documented check: a
    /// program started from a service, its stderr redirected, inherits the
    /// variable but not the stream).
    pub fn from_facts(
        journal_stream: Option<&OsStr>,
        stderr: Option<(u64, u64)>,
        is_terminal: bool,
        no_color: Option<&OsStr>,
    ) -> Destination {
        let journal = journal_stream
            .and_then(OsStr::to_str)
            .and_then(|s| s.split_once(':'))
            .and_then(|(dev, ino)| Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?)));
        if journal.is_some() && journal == stderr {
            Destination::Journal
        } else if is_terminal {
            // https://no-color.org: set and not empty.
            let colour = no_color.is_none_or(OsStr::is_empty);
            Destination::Terminal { colour }
        } else {
            Destination::Plain
        }
    }
}

/// The device and inode of stderr, as systemd writes them into
/// `JOURNAL_STREAM`.
fn stderr_device_inode() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// The log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines, shaped by the [`Destination`].
    Text,
    /// One JSON object per line (`tracing-subscriber`'s JSON format).
    Json,
}

/// How a program logs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Text (`tracing-subscriber`'s compact lines) or JSON.
    pub format: Format,
    /// Environment variables holding a filter (`info,tributary_agent=debug`),
    /// the first one set wins.
    pub filter_vars: &'a [&'a str],
    /// The filter when none of them is set.
    pub default_filter: &'a str,
}

/// Silences the NATS client's own info lines (`event: connected`…): the
/// programs log its events themselves, rate-limited
/// ([`nats::log_event`]). Appended to every default filter.
pub const QUIET_LIBRARIES: &str = "async_nats=warn";

/// Installs the global subscriber writing to stderr as `options` say;
/// returns the destination it chose.
///
/// A filter is a comma-separated list of `level` and `target=level`
/// directives (`info,tributary_agent=debug`), the most specific target
/// winning; a variable whose value is not one is reported as a warning and
/// the default filter used. (`tracing-subscriber`'s `Targets`, not its
/// `EnvFilter`: no span or field directives, and no regex DFA builder in a
/// binary that must stay under 4 MB.)
pub fn init(options: Options<'_>) -> Destination {
    let mut rejected = None;
    let from_env = options.filter_vars.iter().find_map(|var| {
        let value = std::env::var(var).ok()?;
        match value.parse::<Targets>() {
            Ok(filter) => Some(filter),
            Err(e) => {
                rejected.get_or_insert((*var, value, e));
                None
            }
        }
    });
    let filter = from_env.unwrap_or_else(|| default_filter(options.default_filter));
    let destination = Destination::of_stderr();
    let layer = layer(options, destination);
    // Another subscriber already set (a test): keep it.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
    if let Some((var, value, e)) = rejected {
        tracing::warn!(
            variable = var,
            value = %value,
            error = %e,
            default = options.default_filter,
            "log filter not understood, using the default"
        );
    }
    destination
}

/// `default` with [`QUIET_LIBRARIES`] appended; a default that does not
/// parse (a programming error) logs at `info`.
fn default_filter(default: &str) -> Targets {
    format!("{default},{QUIET_LIBRARIES}")
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO))
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The formatting layer for `destination`. Three layer types in all (the
/// agent's size budget counts each one): JSON, the terminal's, and the
/// sanitized one of files and the journal.
fn layer(options: Options<'_>, destination: Destination) -> BoxedLayer {
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match (options.format, destination) {
        (Format::Json, _) => base.json().boxed(),
        (Format::Text, Destination::Terminal { colour }) => {
            base.with_ansi(colour).compact().boxed()
        }
        (Format::Text, Destination::Journal | Destination::Plain) => {
            let inner = tracing_subscriber::fmt::format().compact().without_time();
            let format = if destination == Destination::Journal {
                sanitize::Sanitized::journal(inner)
            } else {
                sanitize::Sanitized::plain(inner)
            };
            base.with_ansi(false).event_format(format).boxed()
        }
    }
}

/// An error and its sources, `: `-separated, for a log field.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn journald_is_recognised_only_when_journal_stream_names_stderr_itself() {
        let d = Destination::from_facts(os("64768:123"), Some((64768, 123)), false, None);
        assert_eq!(d, Destination::Journal);
        // Inherited by a program whose stderr goes elsewhere.
        let d = Destination::from_facts(os("64768:123"), Some((64768, 999)), false, None);
        assert_eq!(d, Destination::Plain);
        let d = Destination::from_facts(os("garbage"), Some((64768, 123)), false, None);
        assert_eq!(d, Destination::Plain);
        let d = Destination::from_facts(None, Some((64768, 123)), true, None);
        assert_eq!(d, Destination::Terminal { colour: true });
    }

    #[test]
    fn colour_needs_a_terminal_and_no_non_empty_no_color() {
        assert_eq!(
            Destination::from_facts(None, None, true, os("1")),
            Destination::Terminal { colour: false }
        );
        assert_eq!(
            Destination::from_facts(None, None, true, os("")),
            Destination::Terminal { colour: true }
        );
        assert_eq!(
            Destination::from_facts(None, None, false, None),
            Destination::Plain
        );
    }

    #[test]
    fn the_default_filter_keeps_the_nats_client_to_warnings() {
        let f = default_filter("info");
        assert!(f.would_enable("tributary_agent::run", &tracing::Level::INFO));
        assert!(!f.would_enable("tributary_agent::run", &tracing::Level::DEBUG));
        assert!(f.would_enable("async_nats::connector", &tracing::Level::WARN));
        assert!(!f.would_enable("async_nats::connector", &tracing::Level::INFO));
    }

    #[test]
    fn a_filter_names_a_level_and_targets_whose_most_specific_directive_wins() {
        let f: Targets = "warn,tributary_agent=debug,tributary_agent::forwarder=error"
            .parse()
            .unwrap();
        assert!(f.would_enable("tributary_agent::run", &tracing::Level::DEBUG));
        assert!(!f.would_enable("tributary_agent::forwarder", &tracing::Level::WARN));
        assert!(!f.would_enable("rumqttc", &tracing::Level::INFO));
        assert!("info,=nonsense=".parse::<Targets>().is_err());
    }
}
