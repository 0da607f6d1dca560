//! The text formats for a file, a pipe or the journal: each event is
//! formatted by `tracing-subscriber`'s own format (without time), then
//! written with its control characters escaped, after a timestamp for a
//! file or pipe, and for the journal with the event's syslog priority
//! (`<3>` error … `<7>` debug) in front of every line instead, so that the
//! lines of a multi-line message keep their level too.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// An event format that escapes control characters of what `inner` writes
/// and adds either a timestamp (files) or priorities (journal).
#[derive(Debug)]
pub(crate) struct Sanitized<F> {
    inner: F,
    priority_prefix: bool,
}

impl<F> Sanitized<F> {
    /// For files and pipes: a timestamp first.
    pub(crate) fn plain(inner: F) -> Self {
        Sanitized {
            inner,
            priority_prefix: false,
        }
    }

    /// For journald's stream: a `<N>` prefix on every line.
    pub(crate) fn journal(inner: F) -> Self {
        Sanitized {
            inner,
            priority_prefix: true,
        }
    }
}

/// The syslog priority journald gives a line of `level`.
pub(crate) fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

impl<S, N, F> FormatEvent<S, N> for Sanitized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        if !self.priority_prefix {
            SystemTime.format_time(&mut Writer::new(&mut text))?;
            text.push(' ');
        }
        self.inner
            .format_event(ctx, Writer::new(&mut text), event)?;
        let prefix = self
            .priority_prefix
            .then(|| priority(event.metadata().level()));
        write_clean(&mut writer, &text, prefix)
    }
}

/// Writes `text` line by line, each line prefixed by `<prefix>` when given,
/// with every control character but the tab written as an escape; ends
/// with one newline.
pub(crate) fn write_clean(
    out: &mut impl fmt::Write,
    text: &str,
    prefix: Option<u8>,
) -> fmt::Result {
    let text = text.strip_suffix('\n').unwrap_or(text);
    for line in text.split('\n') {
        if let Some(p) = prefix {
            write!(out, "<{p}>")?;
        }
        for c in line.chars() {
            if c != '\t' && c.is_control() {
                write!(out, "{}", c.escape_default())?;
            } else {
                out.write_char(c)?;
            }
        }
        out.write_char('\n')?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(text: &str, prefix: Option<u8>) -> String {
        let mut out = String::new();
        write_clean(&mut out, text, prefix).unwrap();
        out
    }

    #[test]
    fn control_characters_are_escaped_and_tabs_and_newlines_kept() {
        let out = clean("a\x1b[31mred\x1b[0m\tb\r\x07\x7f\u{9b}\n", None);
        assert_eq!(out, "a\\u{1b}[31mred\\u{1b}[0m\tb\\r\\u{7}\\u{7f}\\u{9b}\n");
        assert!(
            out.bytes()
                .all(|b| b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b)),
            "{out:?}"
        );
    }

    #[test]
    fn every_line_of_a_journal_message_carries_its_priority() {
        assert_eq!(
            clean("ERROR bad config\n  |\n3 | x = 1\n", Some(3)),
            "<3>ERROR bad config\n<3>  |\n<3>3 | x = 1\n"
        );
        assert_eq!(clean("no newline", Some(6)), "<6>no newline\n");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
