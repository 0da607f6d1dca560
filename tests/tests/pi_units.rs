//! The shipped systemd units (`cross/systemd/*.service`) are hardened: systemd's own offline
//! security analysis scores each at an exposure of 2.0 or less, and each keeps the settings
//! the product relies on (notify + watchdog, restart limits, a dedicated user, a state
//! directory, an empty capability set).
//!
//! Needs `systemd-analyze` (Debian package `systemd`; `cross/setup.sh` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Highest exposure the issue allows.
const MAX_EXPOSURE: f64 = 2.0;

fn unit_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cross/systemd")
        .join(name)
}

/// Runs `systemd-analyze security --offline=yes` on a unit file and returns the overall
/// exposure and the full report.
fn exposure(unit: &Path) -> (f64, String) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (install the Debian package `systemd`)");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure line in the report of {} (status {}):\n{report}\n{}",
                unit.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    // "→ Overall exposure level for tributary-agent.service: 1.4 OK 🙂"
    let value = line
        .rsplit(": ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure from {line:?}"));
    (value, report)
}

/// Values of `key=` in the `[Service]`/`[Unit]` sections, in file order.
fn settings(unit: &Path, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(unit).expect("unit file readable");
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
        .collect()
}

fn assert_hardened(name: &str) {
    let unit = unit_path(name);
    let (value, report) = exposure(&unit);
    assert!(
        value <= MAX_EXPOSURE,
        "{name}: exposure {value} is above {MAX_EXPOSURE}:\n{report}"
    );
    for (key, expected) in [
        ("Type", "notify"),
        ("Restart", "always"),
        ("User", "tributary"),
        ("CapabilityBoundingSet", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("SystemCallFilter", "@system-service"),
    ] {
        assert!(
            settings(&unit, key).iter().any(|v| v == expected),
            "{name}: expected {key}={expected}"
        );
    }
    for key in [
        "WatchdogSec",
        "StateDirectory",
        "MemoryMax",
        "StartLimitBurst",
        "StartLimitIntervalSec",
    ] {
        assert!(
            !settings(&unit, key).is_empty(),
            "{name}: {key}= is missing"
        );
    }
}

#[test]
fn the_agent_unit_scores_an_exposure_of_two_or_less() {
    assert_hardened("tributary-agent.service");
}

#[test]
fn the_uplink_unit_scores_an_exposure_of_two_or_less() {
    assert_hardened("tributary-uplink.service");
}

#[test]
fn the_agent_unit_keeps_sysfs_readable_and_device_access_for_sensors() {
    let unit = unit_path("tributary-agent.service");
    // /sys must not be hidden: no PrivateDevices (which would also drop /dev/gpiochip*),
    // no InaccessiblePaths covering it, and the device ACL lets GPIO, I2C and serial in.
    assert!(settings(&unit, "PrivateDevices").iter().all(|v| v == "no"));
    assert!(
        settings(&unit, "InaccessiblePaths")
            .iter()
            .all(|v| !v.split_whitespace().any(|p| p == "/sys" || p == "-/sys"))
    );
    let allowed = settings(&unit, "DeviceAllow").join(" ");
    for dev in ["char-gpiochip", "char-i2c", "char-ttyS", "char-ttyAMA"] {
        assert!(allowed.contains(dev), "DeviceAllow lacks {dev}: {allowed}");
    }
    let families = settings(&unit, "RestrictAddressFamilies").join(" ");
    for family in ["AF_INET", "AF_INET6", "AF_UNIX"] {
        assert!(
            families.contains(family),
            "{family} not allowed: {families}"
        );
    }
}
