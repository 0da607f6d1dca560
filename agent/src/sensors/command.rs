//! `command` sensors: run a program (no shell) and parse its standard output
//! as a plain number, or as JSON with a pointer. A program that cannot start,
//! exits non-zero, runs past its timeout (it is killed) or prints garbage
//! yields an error, never a reading.

use super::error::{PayloadError, SensorError};
use super::parse;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tributary_config::CommandSensor;
use tributary_wire::Value;

/// Most bytes of standard output read.
const MAX_STDOUT: usize = 64 * 1024;
/// Most bytes of standard error kept for the error message.
const MAX_STDERR: usize = 512;

/// A configured `command` sensor.
#[derive(Debug, Clone)]
pub(crate) struct CommandSource {
    program: String,
    args: Vec<String>,
    timeout: Duration,
    pointer: Option<String>,
}

impl CommandSource {
    pub(crate) fn new(cfg: &CommandSensor) -> Self {
        let mut parts = cfg.command.iter().cloned();
        CommandSource {
            program: parts.next().unwrap_or_default(),
            args: parts.collect(),
            timeout: cfg.timeout.get(),
            pointer: cfg.pointer.clone(),
        }
    }

    /// Runs the program once.
    pub(crate) async fn read(&self) -> Result<Value, SensorError> {
        let out = match tokio::time::timeout(self.timeout, self.run()).await {
            Ok(r) => r?,
            // Dropping the child kills it (`kill_on_drop`).
            Err(_) => {
                return Err(SensorError::Timeout {
                    program: self.program.clone(),
                    timeout: self.timeout,
                });
            }
        };
        parse_output(&out, self.pointer.as_deref(), &self.program)
    }

    /// Runs the program to its end; its standard output.
    async fn run(&self) -> Result<Vec<u8>, SensorError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SensorError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (out, err) = tokio::join!(
            read_capped(stdout, MAX_STDOUT),
            read_capped(stderr, MAX_STDERR)
        );
        let status = child.wait().await.map_err(|source| SensorError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        let (out, out_full) = out.map_err(|source| SensorError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        if !status.success() {
            let stderr = err.map(|(e, _)| String::from_utf8_lossy(&e).trim().to_owned());
            return Err(SensorError::Exit {
                program: self.program.clone(),
                status,
                stderr: stderr.unwrap_or_default(),
            });
        }
        if out_full {
            return Err(SensorError::OutputTooLarge {
                program: self.program.clone(),
                max: MAX_STDOUT,
            });
        }
        Ok(out)
    }
}

/// The value of a command's standard output: JSON at `pointer` when one is
/// given, else a plain number; `program` names it in errors.
pub(crate) fn parse_output(
    out: &[u8],
    pointer: Option<&str>,
    program: &str,
) -> Result<Value, SensorError> {
    let text = std::str::from_utf8(out).map_err(|_| PayloadError::NotUtf8)?;
    match pointer {
        Some(_) => parse::payload(text, pointer),
        None => {
            let v = parse::number(text).ok_or_else(|| SensorError::NoNumber {
                origin: format!("output of {program:?}"),
                snippet: parse::snippet(text.trim()),
            })?;
            parse::check(v)
        }
    }
}

/// Reads up to `max` bytes, then drains the rest so the program is not
/// blocked on a full pipe; whether there was more than `max`.
async fn read_capped(
    mut r: impl AsyncRead + Unpin,
    max: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    (&mut r).take(max as u64).read_to_end(&mut buf).await?;
    let extra = tokio::io::copy(&mut r, &mut tokio::io::sink()).await?;
    Ok((buf, extra > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(command: &[&str], timeout: &str, pointer: Option<&str>) -> CommandSource {
        let cmd: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
        let pointer = pointer
            .map(|p| format!("pointer = {p:?}\n"))
            .unwrap_or_default();
        let cfg = crate::sensors::test_config(&format!(
            "[[sensors.command]]\nid = \"c\"\ncommand = [{}]\ntimeout = {timeout:?}\n{pointer}",
            cmd.join(", ")
        ));
        CommandSource::new(&cfg.sensors.command[0])
    }

    #[tokio::test]
    async fn a_plain_number_is_read_from_standard_output() {
        let v = sensor(&["sh", "-c", "echo 42"], "5s", None)
            .read()
            .await
            .unwrap();
        assert_eq!(v, Value::Int(42));
        let v = sensor(&["echo", " 21.5 "], "5s", None)
            .read()
            .await
            .unwrap();
        assert_eq!(v, Value::Float(21.5));
    }

    #[tokio::test]
    async fn json_output_is_read_through_the_pointer() {
        let s = sensor(
            &[
                "sh",
                "-c",
                r#"echo '{"soc": {"temp": 48.3}, "volts": 1.2}'"#,
            ],
            "5s",
            Some("/soc/temp"),
        );
        assert_eq!(s.read().await.unwrap(), Value::Float(48.3));
        let s = sensor(&["echo", r#"{"a": 1}"#], "5s", Some("/b"));
        let err = s.read().await.unwrap_err();
        assert!(err.to_string().contains("/b"), "{err}");
    }

    #[tokio::test]
    async fn a_non_zero_exit_is_an_error_even_with_a_number_printed() {
        let err = sensor(&["false"], "5s", None).read().await.unwrap_err();
        assert!(matches!(err, SensorError::Exit { .. }), "{err}");
        let err = sensor(
            &["sh", "-c", "echo 42; echo broken >&2; exit 3"],
            "5s",
            None,
        )
        .read()
        .await
        .unwrap_err();
        let SensorError::Exit { stderr, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(stderr, "broken");
    }

    #[tokio::test]
    async fn a_program_running_past_its_timeout_is_killed_and_an_error() {
        let started = std::time::Instant::now();
        let err = sensor(&["sleep", "10"], "200ms", None)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, SensorError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn garbage_output_and_missing_programs_are_errors() {
        let err = sensor(&["echo", "hot"], "5s", None)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, SensorError::NoNumber { .. }), "{err}");
        let err = sensor(&["echo", "NaN"], "5s", None)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, SensorError::NotFinite(_)), "{err}");
        let err = sensor(&["/nonexistent/tool"], "5s", None)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, SensorError::Spawn { .. }), "{err}");
        let err = sensor(&["head", "-c", "100000", "/dev/zero"], "5s", None)
            .read()
            .await
            .unwrap_err();
        assert!(matches!(err, SensorError::OutputTooLarge { .. }), "{err}");
    }
}
