//! Whether the system clock is synchronized, so every reading can say so.
//!
//! A Raspberry Pi has no real-time clock: until a time service synchronized
//! it after boot, its wall clock may be hours or years off (or restored by
//! `fake-hwclock` to the last shutdown), and it jumps when it is set. A
//! reading taken then carries [`Clock::Unsynced`] all the way into Kafka
//! (`"clock":"unsynced"`), so nobody mistakes its timestamp for a good one.
//!
//! # Where the answer comes from
//!
//! [`SystemClock`] asks, in this order:
//!
//! 1. **systemd-timesyncd** (Raspberry Pi OS's and Debian's default): it
//!    touches `/run/systemd/timesync/synchronized` each time it synchronized
//!    the clock. The file present: synced. Its directory present without the
//!    file: timesyncd runs and has not synchronized yet: unsynced.
//! 2. Otherwise (chrony, ntpd…), **`timedatectl show -p NTPSynchronized`**,
//!    which is the kernel's own status: systemd-timedated reads `adjtimex`
//!    (`STA_UNSYNC` clear and a maximum error under 16 s) for us. The agent
//!    cannot ask the kernel itself: neither rustix nor nix wraps
//!    `adjtimex`, the workspace denies `unsafe`, and the shipped systemd unit
//!    sets `ProtectClock=yes`, whose seccomp filter refuses `adjtimex` (even
//!    a read-only call) with `EPERM` anyway.
//! 3. Neither available (no systemd at all): [`Clock::Unknown`]; readings
//!    say `"clock":"unknown"`, not a synchronization nobody checked.
//!
//! The probe is the [`ClockSource`] trait, so tests script it.
//!
//! # The watcher
//!
//! [`start`] probes once before it returns (so the first readings already
//! carry the answer) and spawns [`watch`], which probes at once (or goes on
//! from `start`'s answer), then every [`UNSYNCED_RECHECK`] while the clock
//! is known to be unsynchronized and every [`SYNCED_RECHECK`] once it is
//! synchronized or when nothing can tell,
//! and stores the answer in [`AgentStats`] ([`AgentStats::clock`]), where a
//! sensor reads it at the moment it takes a reading's timestamp. It logs
//! the state once at start (a warning when unsynced) and each change once
//! (info when the clock synchronizes), plus any jump of the wall clock
//! against the monotonic clock between two probes, which is what a first
//! synchronization usually does.

use crate::stats::AgentStats;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;
use tributary_wire::Clock;

/// How often the watcher looks again while the clock is known to be
/// unsynchronized (waiting for NTP).
pub const UNSYNCED_RECHECK: Duration = Duration::from_secs(5);
/// How often the watcher looks again once the clock is synchronized, or
/// when nothing can tell.
pub const SYNCED_RECHECK: Duration = Duration::from_secs(60);
/// Longest a `timedatectl` query may take before it counts as no answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// A wall-clock jump (against the monotonic clock between two probes)
/// larger than this is logged.
const JUMP_LOGGED: Duration = Duration::from_secs(2);

/// Something that can tell whether the system clock is synchronized.
pub trait ClockSource: Send + 'static {
    /// Looks once. Never fails: what cannot be told is [`Clock::Unknown`].
    fn probe(&mut self) -> impl Future<Output = Clock> + Send;
}

/// The real system: systemd-timesyncd's state, else `timedatectl` (see the
/// module documentation).
#[derive(Debug, Clone)]
pub struct SystemClock {
    /// systemd-timesyncd's runtime directory.
    pub timesyncd_dir: PathBuf,
    /// The `timedatectl` program; `None` to never run it. Set to `None`
    /// after it was found missing, so a system without it costs one try.
    pub timedatectl: Option<PathBuf>,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            timesyncd_dir: PathBuf::from("/run/systemd/timesync"),
            timedatectl: Some(PathBuf::from("timedatectl")),
        }
    }
}

impl SystemClock {
    /// What systemd-timesyncd's files say, `None` when it is not there.
    pub fn timesyncd(&self) -> Option<Clock> {
        if self.timesyncd_dir.join("synchronized").exists() {
            Some(Clock::Synced)
        } else if self.timesyncd_dir.is_dir() {
            Some(Clock::Unsynced)
        } else {
            None
        }
    }

    /// What `timedatectl` says, `None` when it cannot be asked or gives no
    /// clear answer.
    async fn timedatectl(&mut self) -> Option<Clock> {
        let program = self.timedatectl.as_ref()?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(["show", "--property=NTPSynchronized", "--value"])
            // A systemd tool reports its failure to $NOTIFY_SOCKET
            // ("ERRNO=…"): that socket is the agent's own line to systemd.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_PID")
            .env_remove("WATCHDOG_USEC")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(COMMAND_TIMEOUT, cmd.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    tracing::debug!(program = %program.display(), "no timedatectl: not asking it again");
                    self.timedatectl = None;
                }
                return None;
            }
            Err(_) => return None,
        };
        if !output.status.success() {
            return None;
        }
        parse_ntp_synchronized(&String::from_utf8_lossy(&output.stdout))
    }
}

impl ClockSource for SystemClock {
    async fn probe(&mut self) -> Clock {
        if let Some(clock) = self.timesyncd() {
            return clock;
        }
        self.timedatectl().await.unwrap_or(Clock::Unknown)
    }
}

/// `timedatectl show --property=NTPSynchronized --value` prints `yes` or
/// `no`.
fn parse_ntp_synchronized(out: &str) -> Option<Clock> {
    match out.trim() {
        "yes" => Some(Clock::Synced),
        "no" => Some(Clock::Unsynced),
        _ => None,
    }
}

/// Probes once and stores the answer, so that the very first readings
/// already carry it, then spawns [`watch`] (which goes on from that answer)
/// and returns its handle. Waits at most for one probe (a `timedatectl`
/// query is bounded by a few seconds).
pub async fn start(
    mut source: impl ClockSource,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let first = source.probe().await;
    stats.set_clock(first);
    tokio::spawn(watch_from(source, stats, shutdown, Some(first)))
}

/// Probes `source` until `shutdown`, keeping [`AgentStats::clock`] current
/// and logging each change once (see the module documentation).
pub async fn watch(source: impl ClockSource, stats: Arc<AgentStats>, shutdown: CancellationToken) {
    watch_from(source, stats, shutdown, None).await;
}

/// [`watch`], taking `first` as its first probe's answer when given.
async fn watch_from(
    mut source: impl ClockSource,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
    mut first: Option<Clock>,
) {
    let mut last: Option<Clock> = None;
    let mut jump = JumpDetector::default();
    loop {
        let clock = match first.take() {
            Some(clock) => clock,
            None => tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                clock = source.probe() => clock,
            },
        };
        stats.set_clock(clock);
        log_change(last, clock);
        if let Some(seconds) = jump.check(Instant::now(), SystemTime::now()) {
            tracing::info!(
                jump_seconds = seconds,
                clock = %clock,
                "the wall clock jumped; buffered readings keep their order and their timestamps"
            );
        }
        last = Some(clock);
        // Unknown (nothing can tell) is not asked again every few seconds:
        // on such a system each probe is a `timedatectl` process spawned
        // for nothing, and the spawn stalls the agent's one runtime thread.
        let wait = match clock {
            Clock::Unsynced => UNSYNCED_RECHECK,
            Clock::Synced | Clock::Unknown => SYNCED_RECHECK,
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What to say about the clock going from `last` (`None` at start) to
/// `now`: the level (true = warning) and the message, or nothing when it
/// did not change.
pub fn change_message(last: Option<Clock>, now: Clock) -> Option<(bool, &'static str)> {
    match (last, now) {
        (Some(a), b) if a == b => None,
        (None, Clock::Synced) => Some((false, "the system clock is synchronized")),
        (None, Clock::Unsynced) => Some((
            true,
            "the system clock is not synchronized: readings are marked clock=unsynced until it is",
        )),
        (None, Clock::Unknown) => Some((
            false,
            "cannot tell whether the system clock is synchronized (neither systemd-timesyncd nor timedatectl answer): readings are marked clock=unknown",
        )),
        (Some(_), Clock::Synced) => Some((
            false,
            "the system clock is now synchronized: readings from now on carry a good time",
        )),
        (Some(_), Clock::Unsynced) => Some((
            true,
            "the system clock is no longer synchronized: readings are marked clock=unsynced",
        )),
        (Some(_), Clock::Unknown) => Some((
            true,
            "cannot tell any more whether the system clock is synchronized: readings are marked clock=unknown",
        )),
    }
}

fn log_change(last: Option<Clock>, now: Clock) {
    match change_message(last, now) {
        Some((true, message)) => tracing::warn!(clock = %now, "{message}"),
        Some((false, message)) => tracing::info!(clock = %now, "{message}"),
        None => {}
    }
}

/// Notices when the wall clock moved differently from the monotonic clock
/// between two looks.
#[derive(Debug, Default)]
struct JumpDetector {
    last: Option<(Instant, SystemTime)>,
}

impl JumpDetector {
    /// The jump in whole seconds (negative: backwards) since the last
    /// look, when larger than [`JUMP_LOGGED`].
    fn check(&mut self, mono: Instant, wall: SystemTime) -> Option<i64> {
        let (last_mono, last_wall) = self.last.replace((mono, wall))?;
        let elapsed = signed_ns(Ok(mono.saturating_duration_since(last_mono)));
        let moved = signed_ns(wall.duration_since(last_wall).map_err(|e| e.duration()));
        let jump = moved - elapsed;
        (jump.unsigned_abs() > JUMP_LOGGED.as_nanos())
            .then(|| i64::try_from(jump / 1_000_000_000).unwrap_or(i64::MAX))
    }
}

/// A duration forwards (`Ok`) or backwards (`Err`) in signed nanoseconds.
fn signed_ns(d: Result<Duration, Duration>) -> i128 {
    match d {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(d) => -i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Answers from a script, then repeats its last answer.
    #[derive(Debug)]
    struct Scripted {
        answers: VecDeque<Clock>,
        last: Clock,
        probes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl ClockSource for Scripted {
        async fn probe(&mut self) -> Clock {
            self.probes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(next) = self.answers.pop_front() {
                self.last = next;
            }
            self.last
        }
    }

    fn no_timedatectl(dir: PathBuf) -> SystemClock {
        SystemClock {
            timesyncd_dir: dir,
            timedatectl: None,
        }
    }

    #[tokio::test]
    async fn timesyncd_state_decides_synced_unsynced_and_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("timesync");
        let mut source = no_timedatectl(dir.clone());
        assert_eq!(source.probe().await, Clock::Unknown, "no timesyncd at all");
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            source.probe().await,
            Clock::Unsynced,
            "timesyncd runs, not synchronized yet"
        );
        std::fs::write(dir.join("synchronized"), b"").unwrap();
        assert_eq!(source.probe().await, Clock::Synced);
    }

    #[tokio::test]
    async fn without_timesyncd_timedatectl_answers_and_a_missing_one_is_not_asked_again() {
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("timedatectl");
        let mut source = SystemClock {
            timesyncd_dir: tmp.path().join("absent"),
            timedatectl: Some(script.clone()),
        };
        for (printed, expected) in [("yes", Clock::Synced), ("no", Clock::Unsynced)] {
            write_script(&script, &format!("#!/bin/sh\necho {printed}\n"));
            assert_eq!(source.probe().await, expected, "{printed}");
        }
        write_script(&script, "#!/bin/sh\necho maybe\n");
        assert_eq!(source.probe().await, Clock::Unknown);
        write_script(&script, "#!/bin/sh\nexit 1\n");
        assert_eq!(source.probe().await, Clock::Unknown);
        std::fs::remove_file(&script).unwrap();
        assert_eq!(source.probe().await, Clock::Unknown);
        assert_eq!(source.timedatectl, None, "missing: not run again");
    }

    fn write_script(path: &std::path::Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        // Written beside and renamed, so the exec never meets a file still
        // open for writing (ETXTBSY).
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn timedatectl_output_is_read_strictly() {
        assert_eq!(parse_ntp_synchronized("yes\n"), Some(Clock::Synced));
        assert_eq!(parse_ntp_synchronized("no\n"), Some(Clock::Unsynced));
        assert_eq!(parse_ntp_synchronized(""), None);
        assert_eq!(parse_ntp_synchronized("Failed to connect"), None);
    }

    #[test]
    fn each_state_is_told_once_a_warning_when_unsynced_and_info_when_it_syncs() {
        let warns = |last, now| change_message(last, now).map(|(warn, _)| warn);
        assert_eq!(warns(None, Clock::Unsynced), Some(true));
        assert_eq!(warns(None, Clock::Synced), Some(false));
        assert_eq!(warns(None, Clock::Unknown), Some(false));
        let synced = change_message(Some(Clock::Unsynced), Clock::Synced).unwrap();
        assert!(
            !synced.0 && synced.1.contains("now synchronized"),
            "{synced:?}"
        );
        assert_eq!(warns(Some(Clock::Synced), Clock::Unsynced), Some(true));
        for c in [Clock::Synced, Clock::Unsynced, Clock::Unknown] {
            assert_eq!(change_message(Some(c), c), None, "{c}: no repeat");
        }
    }

    #[test]
    fn a_wall_clock_jump_against_the_monotonic_clock_is_noticed_in_either_direction() {
        let mono = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut d = JumpDetector::default();
        assert_eq!(d.check(mono, wall), None, "first look: nothing to compare");
        let s = Duration::from_secs;
        assert_eq!(d.check(mono + s(5), wall + s(5)), None, "no jump");
        assert_eq!(d.check(mono + s(10), wall + s(3610)), Some(3600));
        assert_eq!(d.check(mono + s(15), wall + s(15)), Some(-3600));
        assert_eq!(d.check(mono + s(20), wall + s(16)), Some(-4));
        assert_eq!(d.check(mono + s(25), wall + s(22)), None, "1 s of drift");
    }

    /// A scripted source giving `answers` in turn, and its probe count.
    fn scripted(answers: &[Clock]) -> (Scripted, Arc<std::sync::atomic::AtomicUsize>) {
        let probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let source = Scripted {
            answers: answers.iter().copied().collect(),
            last: Clock::Unknown,
            probes: probes.clone(),
        };
        (source, probes)
    }

    #[tokio::test(start_paused = true)]
    async fn start_stores_the_first_answer_before_it_returns_and_the_watcher_goes_on_from_it() {
        let (source, probes) = scripted(&[Clock::Unsynced, Clock::Synced]);
        let stats = Arc::new(AgentStats::default());
        let stop = CancellationToken::new();
        let task = start(source, stats.clone(), stop.clone()).await;
        assert_eq!(stats.clock(), Clock::Unsynced, "set before start returned");
        let count = || probes.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(count(), 1, "the watcher does not probe again at once");
        tokio::time::sleep(UNSYNCED_RECHECK).await;
        assert_eq!((count(), stats.clock()), (2, Clock::Synced));
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_keeps_the_stats_current_and_rechecks_faster_while_unsynced() {
        let (source, probes) = scripted(&[Clock::Unsynced, Clock::Unsynced, Clock::Synced]);
        let stats = Arc::new(AgentStats::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(source, stats.clone(), stop.clone()));
        let count = || probes.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(
            (count(), stats.clock()),
            (1, Clock::Unsynced),
            "probed at once"
        );
        tokio::time::sleep(UNSYNCED_RECHECK).await;
        assert_eq!((count(), stats.clock()), (2, Clock::Unsynced));
        tokio::time::sleep(UNSYNCED_RECHECK).await;
        assert_eq!((count(), stats.clock()), (3, Clock::Synced));
        tokio::time::sleep(SYNCED_RECHECK - Duration::from_secs(1)).await;
        assert_eq!(count(), 3, "synced: looks again only after a minute");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(count(), 4);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("the watcher stops on shutdown")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_nothing_can_tell_is_asked_again_only_after_a_minute() {
        let (source, probes) = scripted(&[Clock::Unknown, Clock::Unknown]);
        let stats = Arc::new(AgentStats::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(source, stats.clone(), stop.clone()));
        let count = || probes.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(UNSYNCED_RECHECK + Duration::from_secs(1)).await;
        assert_eq!(count(), 1, "no timedatectl every few seconds for nothing");
        tokio::time::sleep(SYNCED_RECHECK).await;
        assert_eq!(count(), 2);
        stop.cancel();
        task.await.unwrap();
    }
}
