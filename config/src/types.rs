//! Value types shared by the agent and uplink configurations.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A duration that must be greater than zero, written for humans (`"10s"`,
/// `"1m 30s"`, `"250ms"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NonZeroDuration(Duration);

impl NonZeroDuration {
    /// Wraps `d`; `None` when it is zero.
    pub const fn new(d: Duration) -> Option<Self> {
        if d.is_zero() { None } else { Some(Self(d)) }
    }

    /// A whole number of seconds; panics at compile time on zero.
    pub const fn from_secs(s: u64) -> Self {
        match Self::new(Duration::from_secs(s)) {
            Some(d) => d,
            None => panic!("zero duration"),
        }
    }

    /// A whole number of milliseconds; panics on zero.
    pub const fn from_millis(ms: u64) -> Self {
        match Self::new(Duration::from_millis(ms)) {
            Some(d) => d,
            None => panic!("zero duration"),
        }
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for NonZeroDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// What a duration looks like, for error messages.
const DURATION_EXAMPLE: &str = "a duration such as \"10s\", \"250ms\" or \"1m 30s\"";

impl<'de> Deserialize<'de> for NonZeroDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let d = duration(d)?;
        NonZeroDuration::new(d).ok_or_else(|| {
            de::Error::custom("a duration greater than zero is required, such as \"10s\"")
        })
    }
}

/// A duration (zero allowed) written for humans, with errors in the
/// user's terms; for `#[serde(deserialize_with = "crate::types::duration")]`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(DURATION_EXAMPLE)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            humantime::parse_duration(v).map_err(|e| {
                E::custom(format_args!(
                    "{v:?} is not a duration ({e}): expected {DURATION_EXAMPLE}"
                ))
            })
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format_args!(
                "{v} has no unit: expected {DURATION_EXAMPLE}, written as a string (\"{v}s\")"
            )))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format_args!(
                "{v} has no unit: expected {DURATION_EXAMPLE}, written as a string"
            )))
        }
    }
    d.deserialize_any(V)
}

impl Serialize for NonZeroDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        humantime_serde::serialize(&self.0, s)
    }
}

/// A secret (password, token): given inline, read from a file, or taken
/// from an environment variable. Never printed: `Debug` and `Serialize`
/// show only where it comes from.
///
/// ```toml
/// password = "inline"                      # works, but a file is better
/// password = { file = "/etc/tributary/nats.pass" }
/// password = { env = "NATS_PASSWORD" }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Written in the configuration itself.
    Inline(String),
    /// The contents of this file, without the trailing newline.
    File(PathBuf),
    /// The value of this environment variable.
    Env(String),
}

/// A secret that could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret's file could not be read (the source says why).
    #[error("cannot read the secret file {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The secret's environment variable is not set (or not valid UTF-8).
    #[error("environment variable {0} holding a secret is not set")]
    Env(String),
}

impl Secret {
    /// Reads the secret's value.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                }),
            Secret::Env(var) => std::env::var(var).map_err(|_| SecretError::Env(var.clone())),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("<redacted>"),
            Secret::File(p) => write!(f, "<from file {}>", p.display()),
            Secret::Env(v) => write!(f, "<from env {v}>"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{self:?}"))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, { file = \"/path\" } or { env = \"VARIABLE\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::Inline(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        "expected `file` or `env`, found an empty table",
                    ));
                };
                let secret = match key.as_str() {
                    "file" => Secret::File(map.next_value()?),
                    "env" => Secret::Env(map.next_value()?),
                    other => return Err(de::Error::unknown_field(other, &["file", "env"])),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a secret takes exactly one of `file` or `env`, found also `{extra}`"
                    )));
                }
                Ok(secret)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        s: Secret,
        d: Option<NonZeroDuration>,
    }

    #[test]
    fn secrets_come_inline_from_files_or_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pass");
        std::fs::write(&p, "hunter2\n").unwrap();
        let t: T = toml::from_str(&format!("s = {{ file = {:?} }}", p)).unwrap();
        assert_eq!(t.s.resolve().unwrap(), "hunter2");
        let t: T = toml::from_str("s = \"x\"").unwrap();
        assert_eq!(t.s.resolve().unwrap(), "x");
        let t: T = toml::from_str("s = { env = \"TRIBUTARY_TEST_NOT_SET_ANYWHERE\" }").unwrap();
        assert!(matches!(t.s.resolve(), Err(SecretError::Env(_))));
    }

    #[test]
    fn secrets_never_show_their_value_when_printed() {
        let t: T = toml::from_str("s = \"hunter2\"").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
        assert!(
            !toml::to_string(&Secret::Inline("hunter2".into()))
                .unwrap_or_default()
                .contains("hunter2")
        );
    }

    #[test]
    fn a_duration_without_a_unit_or_with_an_unknown_one_says_what_a_duration_looks_like() {
        for text in ["d = 5", "d = \"5 parsecs\"", "d = 1.5", "d = true"] {
            let err = toml::from_str::<T>(&format!("s = \"x\"\n{text}")).unwrap_err();
            assert!(
                err.to_string().contains("a duration such as \"10s\""),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn a_zero_duration_is_refused_with_an_explanation() {
        let err = toml::from_str::<T>("s = \"x\"\nd = \"0s\"").unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
        let t: T = toml::from_str("s = \"x\"\nd = \"1m 30s\"").unwrap();
        assert_eq!(t.d.unwrap().get(), Duration::from_secs(90));
    }
}
