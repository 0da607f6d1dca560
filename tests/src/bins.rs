//! Where the programs the tests run are found: the external servers and the workspace's own
//! binaries.
//!
//! | program             | looked up as                                                            |
//! |---------------------|-------------------------------------------------------------------------|
//! | `nats-server`       | `$TRIBUTARY_NATS_SERVER`, else `nats-server` on `PATH`, `/usr/sbin`, `/sbin` |
//! | `tansu`             | `$TRIBUTARY_TANSU`, else `tansu` on `PATH`, `~/.cargo/bin/tansu`          |
//! | `mosquitto`         | `$TRIBUTARY_MOSQUITTO`, else `/usr/sbin/mosquitto`, `mosquitto` on `PATH` |
//! | `prometheus`        | `$TRIBUTARY_PROMETHEUS`, else `prometheus` on `PATH`, `/usr/bin`        |
//! | `promtool`          | `$TRIBUTARY_PROMTOOL`, else `promtool` on `PATH`, `/usr/bin`            |
//! | `tributary-agent`   | `$TRIBUTARY_AGENT_BIN`, else next to the test executable's `deps/` dir, else `$CARGO_TARGET_DIR/debug` |
//! | `tributary-uplink`  | `$TRIBUTARY_UPLINK_BIN`, same places                                     |
//!
//! A missing program is an error naming the command that installs or builds it.

use crate::error::{HarnessError, Result};
use std::path::{Path, PathBuf};

/// The `nats-server` binary.
pub fn nats_server() -> Result<PathBuf> {
    find_program(
        "nats-server",
        "TRIBUTARY_NATS_SERVER",
        &[Path::new("/usr/sbin"), Path::new("/sbin")],
        "apt-get install nats-server",
    )
}

/// The `tansu` Kafka-compatible broker binary.
pub fn tansu() -> Result<PathBuf> {
    let cargo_bin = home_cargo_bin();
    find_program(
        "tansu",
        "TRIBUTARY_TANSU",
        &[cargo_bin.as_path()],
        "cargo install tansu --locked --version 0.6.0 --features libsql,dynostore",
    )
}

/// The `mosquitto` MQTT broker binary.
pub fn mosquitto() -> Result<PathBuf> {
    let fixed = Path::new("/usr/sbin/mosquitto");
    if std::env::var_os("TRIBUTARY_MOSQUITTO").is_none() && fixed.is_file() {
        return Ok(fixed.to_path_buf());
    }
    find_program(
        "mosquitto",
        "TRIBUTARY_MOSQUITTO",
        &[Path::new("/usr/sbin")],
        "apt-get install mosquitto",
    )
}

/// The `prometheus` server (Debian package `prometheus`, 2.42).
pub fn prometheus() -> Result<PathBuf> {
    find_program(
        "prometheus",
        "TRIBUTARY_PROMETHEUS",
        &[Path::new("/usr/bin")],
        "apt-get install prometheus",
    )
}

/// Prometheus's `promtool` (same Debian package as [`prometheus`]).
pub fn promtool() -> Result<PathBuf> {
    find_program(
        "promtool",
        "TRIBUTARY_PROMTOOL",
        &[Path::new("/usr/bin")],
        "apt-get install prometheus",
    )
}

/// The workspace's `tributary-agent` binary, built by `cargo build --workspace --bins`.
pub fn agent() -> Result<PathBuf> {
    workspace_binary("tributary-agent", "TRIBUTARY_AGENT_BIN")
}

/// The workspace's `tributary-uplink` binary, built by `cargo build --workspace --bins`.
pub fn uplink() -> Result<PathBuf> {
    workspace_binary("tributary-uplink", "TRIBUTARY_UPLINK_BIN")
}

fn home_cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Finds `name`: the path in `$env_var` when set (it must exist), else on `PATH`, else in
/// `extra_dirs`.
fn find_program(
    name: &'static str,
    env_var: &str,
    extra_dirs: &[&Path],
    install: &'static str,
) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::MissingProgram {
                program: name,
                looked: format!("${env_var} = {} does not exist", path.display()),
                install,
            })
        };
    }
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let candidates = path_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain(extra_dirs.iter().copied())
        .map(|dir| dir.join(name));
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let extra: Vec<String> = extra_dirs.iter().map(|d| d.display().to_string()).collect();
    Err(HarnessError::MissingProgram {
        program: name,
        looked: format!("${env_var} unset, not on PATH nor in {}", extra.join(", ")),
        install,
    })
}

fn workspace_binary(name: &'static str, env_var: &str) -> Result<PathBuf> {
    workspace_binary_in(
        name,
        std::env::var_os(env_var).map(PathBuf::from),
        std::env::current_exe().ok(),
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from),
    )
}

fn workspace_binary_in(
    name: &'static str,
    override_path: Option<PathBuf>,
    test_exe: Option<PathBuf>,
    target_dir: Option<PathBuf>,
) -> Result<PathBuf> {
    if let Some(path) = override_path {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(HarnessError::MissingWorkspaceBinary { name, path })
        };
    }
    // Test executables live in <target>/<profile>/deps/; binaries in <target>/<profile>/.
    let beside_tests = test_exe.and_then(|exe| Some(exe.parent()?.parent()?.join(name)));
    if let Some(path) = &beside_tests {
        if path.is_file() {
            return Ok(path.clone());
        }
    }
    if let Some(target) = target_dir {
        let path = target.join("debug").join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(HarnessError::MissingWorkspaceBinary {
        name,
        path: beside_tests.unwrap_or_else(|| PathBuf::from(name)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_install_command() {
        let err = find_program(
            "no-such-program-xyz",
            "TRIBUTARY_TEST_UNSET_VARIABLE",
            &[Path::new("/nonexistent")],
            "apt-get install xyz",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("apt-get install xyz"), "{err}");
        assert!(err.contains("no-such-program-xyz"), "{err}");
    }

    #[test]
    fn a_workspace_binary_is_found_beside_the_test_executables_deps_dir() {
        let target = tempfile::tempdir().unwrap();
        let deps = target.path().join("debug/deps");
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::write(target.path().join("debug/tributary-agent"), "").unwrap();
        let found =
            workspace_binary_in("tributary-agent", None, Some(deps.join("e2e-123")), None).unwrap();
        assert_eq!(found, target.path().join("debug/tributary-agent"));
        let found = workspace_binary_in(
            "tributary-agent",
            None,
            None,
            Some(target.path().to_path_buf()),
        )
        .unwrap();
        assert_eq!(found, target.path().join("debug/tributary-agent"));
    }

    #[test]
    fn a_missing_workspace_binary_names_the_build_command() {
        let err = workspace_binary_in(
            "tributary-uplink",
            None,
            Some("/nonexistent/deps/t".into()),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cargo build --workspace --bins"), "{err}");
        assert!(err.contains("/nonexistent/tributary-uplink"), "{err}");
    }

    #[test]
    fn a_program_in_an_extra_dir_is_found() {
        let found = find_program(
            "sh",
            "TRIBUTARY_TEST_UNSET_VARIABLE",
            &[Path::new("/bin")],
            "n/a",
        )
        .unwrap();
        assert!(found.ends_with("sh"));
    }
}
