//! [`ServerProcess`]: a real child process owned by a test, with its temp dir and log file.
//!
//! The guard SIGKILLs and reaps its child when dropped, also when the test panics (then it first
//! prints the last lines of the child's log to stderr, which `cargo test` shows with the failure).
//! The child's stdout and stderr both go to `<temp dir>/<name>.log`, appended across restarts.
//! Set `TRIBUTARY_KEEP_TEST_DIRS=1` to keep the temp dirs (and logs) after the test.
//!
//! The same guard runs Tributary's own binaries in end-to-end tests:
//!
//! ```no_run
//! use tributary_tests::{bins, ProcessSpec, ServerProcess};
//! # fn main() -> tributary_tests::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let config = dir.path().join("agent.toml");
//! // … write the config …
//! let spec = ProcessSpec::new("agent", bins::agent()?).arg("--config").arg(&config);
//! let mut agent = ServerProcess::start(spec, dir)?;
//! agent.terminate(std::time::Duration::from_secs(10))?;
//! # Ok(()) }
//! ```

use crate::error::{HarnessError, Result};
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How a process is started: program, arguments, working directory and environment.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Short name used in logs and errors, e.g. `nats-hub`; also the log file's stem.
    pub name: String,
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Working directory; the process's temp dir when `None`.
    pub cwd: Option<PathBuf>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
}

impl ProcessSpec {
    /// A spec running `program` without arguments in its temp dir.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        ProcessSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the process in `dir` instead of its temp dir.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
}

/// A running (or killed, restartable) child process owned by a test.
///
/// Dropping it SIGKILLs and reaps the child, then deletes its temp dir.
#[derive(Debug)]
pub struct ServerProcess {
    spec: ProcessSpec,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    // Declared last: dropped after `Drop::drop` has killed the child.
    dir: Option<TempDir>,
}

impl ServerProcess {
    /// Spawns `spec` with `dir` as its temp dir (owned from now on). Does not wait for readiness:
    /// use [`ServerProcess::wait_until`] for that.
    pub fn start(spec: ProcessSpec, dir: TempDir) -> Result<Self> {
        let log_path = dir.path().join(format!("{}.log", spec.name));
        let mut process = ServerProcess {
            spec,
            log_path,
            child: None,
            starts: 0,
            dir: Some(dir),
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| HarnessError::io("opening log file", &self.log_path, e))?;
        self.starts += 1;
        let _ = writeln!(
            log,
            "=== harness: start #{} of {} ===",
            self.starts, self.spec.name
        );
        let stderr = log
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating log file", &self.log_path, e))?;
        let cwd = self
            .spec
            .cwd
            .clone()
            .unwrap_or_else(|| self.dir().to_path_buf());
        let child = Command::new(&self.spec.program)
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                name: self.spec.name.clone(),
                program: self.spec.program.clone(),
                source,
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The process's temp dir (config files, data, log).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the temp dir lives as long as the guard")
            .path()
    }

    /// The log file holding the process's stdout and stderr (all starts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The current child's pid, `None` after [`kill`](Self::kill) or
    /// [`terminate`](Self::terminate).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child is still alive (a paused child is alive). Reaps it if it exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// The exit status if the child has exited on its own, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `timeout` for the child to exit on its own and returns its status.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit_status() {
                return Ok(status);
            }
            if self.child.is_none() {
                return Err(HarnessError::NotRunning {
                    name: self.spec.name.clone(),
                });
            }
            if start.elapsed() >= timeout {
                return Err(self.not_ready(timeout, "the process did not exit".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the child and reaps it. Does nothing if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            // SIGKILL also ends a stopped (paused) process.
            let _ = child.kill();
            child.wait().map_err(|source| HarnessError::Signal {
                action: "wait after SIGKILL",
                name: self.spec.name.clone(),
                pid,
                source,
            })?;
        }
        Ok(())
    }

    /// SIGTERMs the child (resuming it if paused) and waits up to `timeout` for it to exit.
    /// Past the deadline it is SIGKILLed and [`HarnessError::DidNotExit`] is returned.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(pid) = self.pid() else {
            return Err(HarnessError::NotRunning {
                name: self.spec.name.clone(),
            });
        };
        if let Some(status) = self.try_exit_status() {
            self.child = None;
            return Ok(status);
        }
        self.signal(libc::SIGTERM, "SIGTERM")?;
        self.signal(libc::SIGCONT, "SIGCONT")?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.try_exit_status() {
                self.child = None;
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill()?;
        Err(HarnessError::DidNotExit {
            name: self.spec.name.clone(),
            pid,
            waited: timeout,
        })
    }

    /// Freezes the child with SIGSTOP: its sockets stay open but it answers nothing.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP, "SIGSTOP")
    }

    /// Resumes a paused child with SIGCONT.
    pub fn resume(&mut self) -> Result<()> {
        self.signal(libc::SIGCONT, "SIGCONT")
    }

    /// Starts the process again with the same program, arguments, working directory and temp
    /// dir, SIGKILLing the old child first if it still runs. Does not wait for readiness.
    pub fn respawn(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// Sends `signal` to the running child.
    pub fn signal(&mut self, signal: libc::c_int, action: &'static str) -> Result<()> {
        let name = self.spec.name.clone();
        let Some(pid) = self.pid() else {
            return Err(HarnessError::NotRunning { name });
        };
        send_signal(pid, signal).map_err(|source| HarnessError::Signal {
            action,
            name,
            pid,
            source,
        })
    }

    /// Polls `ready` every 50 ms until it returns `Ok(true)`, for at most `timeout`.
    ///
    /// Fails early when the child exits; `ready` returns `Err(reason)` or `Ok(false)` while not
    /// ready (the last reason goes into the error, with the log tail).
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> std::result::Result<bool, String>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut reason = String::from("not ready yet");
        loop {
            if let Some(status) = self.try_exit_status() {
                self.child = None;
                return Err(
                    self.not_ready(start.elapsed(), format!("the process exited: {status}"))
                );
            }
            if self.child.is_none() {
                return Err(HarnessError::NotRunning {
                    name: self.spec.name.clone(),
                });
            }
            match ready() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(r) => reason = r,
            }
            if start.elapsed() >= timeout {
                return Err(self.not_ready(timeout, reason));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn not_ready(&self, waited: Duration, reason: String) -> HarnessError {
        HarnessError::NotReady {
            name: self.spec.name.clone(),
            waited,
            reason,
            log: self.log_path.clone(),
            log_tail: self.log_tail(30),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ({}), last lines ---\n{}",
                self.spec.name,
                self.log_path.display(),
                self.log_tail(20)
            );
        }
        let _ = self.kill();
        if std::env::var_os("TRIBUTARY_KEEP_TEST_DIRS").is_some_and(|v| v == "1") {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept {} temp dir {}", self.spec.name, dir.keep().display());
            }
        }
    }
}

/// Implements the process-guard methods (`kill`, `terminate`, `pause`, `resume`, `pid`,
/// `is_running`, `log_tail`, `log_path`, `process`, `process_mut`) on a server type with a
/// `process: ServerProcess` field.
macro_rules! delegate_process_methods {
    ($ty:ty) => {
        impl $ty {
            /// SIGKILLs the server and reaps it; [`restart`](Self::restart) brings it back.
            pub fn kill(&mut self) -> $crate::Result<()> {
                self.process.kill()
            }

            /// SIGTERMs the server and waits up to `timeout` for it to exit (SIGKILL after).
            pub fn terminate(
                &mut self,
                timeout: std::time::Duration,
            ) -> $crate::Result<std::process::ExitStatus> {
                self.process.terminate(timeout)
            }

            /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
            pub fn pause(&mut self) -> $crate::Result<()> {
                self.process.pause()
            }

            /// Resumes a paused server (SIGCONT).
            pub fn resume(&mut self) -> $crate::Result<()> {
                self.process.resume()
            }

            /// The server's pid; `None` once killed.
            pub fn pid(&self) -> Option<u32> {
                self.process.pid()
            }

            /// Whether the server process is alive (paused counts as alive).
            pub fn is_running(&mut self) -> bool {
                self.process.is_running()
            }

            /// The last `lines` lines of the server's log.
            pub fn log_tail(&self, lines: usize) -> String {
                self.process.log_tail(lines)
            }

            /// The server's log file (stdout and stderr of all starts).
            pub fn log_path(&self) -> &std::path::Path {
                self.process.log_path()
            }

            /// The process guard (log, pid, signals).
            pub fn process(&self) -> &$crate::ServerProcess {
                &self.process
            }

            /// The process guard, mutable.
            pub fn process_mut(&mut self) -> &mut $crate::ServerProcess {
                &mut self.process
            }
        }
    };
}
pub(crate) use delegate_process_methods;

/// Whether a process with this pid exists (including zombies) on this machine.
pub fn pid_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Sends `signal` to process `pid` (a child of the caller's that it has
/// not reaped yet, so that the pid cannot have been reused).
#[allow(unsafe_code)]
pub fn send_signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of this process; the pid is that
    // of a child we own and have not reaped, so it cannot have been reused by another process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> ServerProcess {
        let spec = ProcessSpec::new("sleeper", "/bin/sh")
            .arg("-c")
            .arg("echo started; exec sleep 600");
        ServerProcess::start(spec, tempfile::tempdir().unwrap()).unwrap()
    }

    #[test]
    fn a_dropped_guard_leaves_no_process_behind() {
        let p = sleeper();
        let pid = p.pid().unwrap();
        assert!(pid_exists(pid));
        drop(p);
        assert!(!pid_exists(pid));
    }

    #[test]
    fn a_guard_dropped_by_a_panicking_test_leaves_no_process_behind() {
        let (tx, rx) = std::sync::mpsc::channel();
        let result = std::thread::spawn(move || {
            let p = sleeper();
            tx.send(p.pid().unwrap()).unwrap();
            panic!("test failure");
        })
        .join();
        assert!(result.is_err());
        assert!(!pid_exists(rx.recv().unwrap()));
    }

    #[test]
    fn terminate_ends_a_paused_process_and_reports_the_signal() {
        use std::os::unix::process::ExitStatusExt;
        let mut p = sleeper();
        p.pause().unwrap();
        let status = p.terminate(Duration::from_secs(5)).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!p.is_running());
    }

    #[test]
    fn respawn_runs_the_same_command_again_and_appends_to_the_log() {
        let mut p = sleeper();
        let first = p.pid().unwrap();
        let log = p.log_path().to_path_buf();
        p.wait_until(Duration::from_secs(5), || Ok(p_log_has(&log, 1)))
            .unwrap();
        p.respawn().unwrap();
        let second = p.pid().unwrap();
        assert_ne!(first, second);
        assert!(!pid_exists(first));
        p.wait_until(Duration::from_secs(5), || Ok(p_log_has(&log, 2)))
            .unwrap();
    }

    fn p_log_has(path: &Path, starts: usize) -> bool {
        std::fs::read_to_string(path)
            .map(|s| s.matches("started").count() >= starts)
            .unwrap_or(false)
    }

    #[test]
    fn a_process_that_exits_early_fails_readiness_with_its_log_tail() {
        let spec = ProcessSpec::new("failer", "/bin/sh")
            .arg("-c")
            .arg("echo bad config on line 3 >&2; exit 1");
        let mut p = ServerProcess::start(spec, tempfile::tempdir().unwrap()).unwrap();
        let err = p
            .wait_until(Duration::from_secs(5), || Ok(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad config on line 3"), "{err}");
        assert!(err.contains("exited"), "{err}");
    }
}
