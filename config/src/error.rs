//! Configuration errors that point at the file, line, column and key.

use crate::ValidationError;
use std::fmt;
use std::path::PathBuf;

/// Where in a configuration file something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The whole line, for display.
    pub text: String,
}

impl Location {
    /// The location of byte offset `offset` in `source`.
    pub fn of(source: &str, offset: usize) -> Location {
        let offset = offset.min(source.len());
        let before = &source[..floor_char_boundary(source, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        let text = source[line_start..]
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        Location { line, column, text }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A configuration that could not be loaded. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (the source says why).
    #[error("{}: cannot read the configuration", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type or form, or
    /// a rule of the configuration is broken.
    #[error("{}", render(file, location.as_ref(), key, message))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Where, when known.
        location: Option<Location>,
        /// The dotted key path (empty for the document itself).
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn from_toml(
        file: &std::path::Path,
        source: &str,
        path: &str,
        e: toml::de::Error,
    ) -> ConfigError {
        let location = e.span().map(|s| Location::of(source, s.start));
        let key = if path.is_empty() {
            location
                .as_ref()
                .and_then(|l| key_on_line(&l.text))
                .unwrap_or_default()
        } else {
            path.to_owned()
        };
        ConfigError::Invalid {
            file: file.to_owned(),
            location,
            key,
            message: e.message().trim().to_owned(),
        }
    }

    pub(crate) fn from_validation(
        file: &std::path::Path,
        source: &str,
        v: ValidationError,
    ) -> ConfigError {
        // A rule that did not say where points at the key when the file
        // writes it (a default has no line).
        let span = v.span.or_else(|| crate::spans::find(source, &v.key));
        ConfigError::Invalid {
            file: file.to_owned(),
            location: span.map(|s| Location::of(source, s.start)),
            key: v.key,
            message: v.message,
        }
    }

    /// The dotted key path the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } if !key.is_empty() => Some(key),
            _ => None,
        }
    }

    /// The 1-based line the error is about, if known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid {
                location: Some(l), ..
            } => Some(l.line),
            _ => None,
        }
    }
}

/// The key assigned on a line such as `interval = "5s"`.
fn key_on_line(line: &str) -> Option<String> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

fn render(file: &std::path::Path, location: Option<&Location>, key: &str, message: &str) -> String {
    let mut out = String::new();
    use fmt::Write;
    let _ = write!(out, "{}", file.display());
    if let Some(l) = location {
        let _ = write!(out, ":{}:{}", l.line, l.column);
    }
    if !key.is_empty() {
        let _ = write!(out, ": key `{key}`");
    }
    let _ = write!(out, ": {message}");
    if let Some(l) = location {
        let gutter = l.line.to_string().len();
        let _ = write!(
            out,
            "\n{:gutter$} |\n{} | {}\n{:gutter$} | {:>col$}",
            "",
            l.line,
            l.text,
            "",
            "^",
            col = l.column
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_columns_from_one() {
        let src = "a = 1\nbb = 2\n";
        let l = Location::of(src, 6 + 5);
        assert_eq!((l.line, l.column, l.text.as_str()), (2, 6, "bb = 2"));
    }

    #[test]
    fn the_key_is_found_on_an_assignment_line() {
        assert_eq!(
            key_on_line("  interval = \"5s\"").as_deref(),
            Some("interval")
        );
        assert_eq!(key_on_line("[agent]"), None);
    }
}
