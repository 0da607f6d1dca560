//! What the `.deb` packages ship is right.
//!
//! Fast checks (always run): the conffiles `cross/deb/*/…toml` parse with the real
//! configuration loader — the agent's also with every commented example uncommented — and
//! the example leafnode config passes `nats-server -t`.
//!
//! Package checks (`#[ignore]`d: they need the output of `cross/build.sh`; `make test-pi`, part
//! of `make test` and so of CI, builds it and runs them with `-- --ignored`): every `.deb` in
//! `$TRIBUTARY_DIST/deb` (default `target/cross/deb`) holds the systemd unit, declares its
//! conffile, carries maintainer scripts that create the service user, ships its program's
//! Prometheus alert rules and Grafana dashboard under `/usr/share/<package>/monitoring/`, and
//! its binary is an ELF for the package's architecture (the agent's static, without an
//! interpreter).

use std::path::{Path, PathBuf};
use std::process::Command;
use tributary_config::{AgentConfig, UplinkConfig};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The commented-out example blocks of a config file: a block starts at a line `# [` (a
/// table header) and runs while lines are `# key …` comments, ending at a bare `#`, a blank
/// line or an uncommented line. Returned uncommented.
fn commented_examples(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let body = line.strip_prefix("# ");
        match (body, current.as_mut()) {
            (Some(b), None) if b.starts_with('[') => current = Some(format!("{b}\n")),
            (Some(b), Some(block)) if !b.starts_with(' ') => {
                if b.starts_with('[') {
                    blocks.push(std::mem::take(block));
                }
                block.push_str(b);
                block.push('\n');
            }
            _ => {
                if let Some(block) = current.take() {
                    blocks.push(block);
                }
            }
        }
    }
    blocks.extend(current);
    blocks.retain(|b| !b.is_empty());
    blocks
}

#[test]
fn the_agent_conffile_parses_as_shipped() {
    let path = repo().join("cross/deb/agent/agent.toml");
    let config: AgentConfig =
        tributary_config::parse(&read(&path), &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.agent.state_dir, Path::new("/var/lib/tributary"));
    assert_eq!(config.nats.urls, ["nats://127.0.0.1:4222"]);
    assert!(!config.sensors.system.is_empty(), "system metrics are on");
}

#[test]
fn the_agent_conffile_parses_with_every_commented_example_uncommented() {
    let path = repo().join("cross/deb/agent/agent.toml");
    let text = read(&path);
    let examples = commented_examples(&text);
    let kinds: Vec<&str> = examples.iter().filter_map(|b| b.lines().next()).collect();
    for kind in [
        "[[sensors.file]]",
        "[[sensors.w1]]",
        "[[sensors.command]]",
        "[[sensors.mqtt]]",
        "[[sensors.simulated]]",
        "[mqtt]",
        "[metrics]",
    ] {
        assert!(
            kinds.contains(&kind),
            "no commented example of {kind}: {kinds:?}"
        );
    }
    let full = format!("{text}\n{}", examples.join("\n"));
    let config: AgentConfig =
        tributary_config::parse(&full, &path).unwrap_or_else(|e| panic!("{e}\n---\n{full}"));
    let s = &config.sensors;
    assert!(
        !s.file.is_empty()
            && !s.w1.is_empty()
            && !s.command.is_empty()
            && !s.mqtt.is_empty()
            && !s.simulated.is_empty()
            && !s.system.is_empty(),
        "every sensor kind is in the uncommented file: {s:?}"
    );
}

#[test]
fn the_uplink_conffile_parses_with_its_commented_examples() {
    let path = repo().join("cross/deb/uplink/uplink.toml");
    let text = read(&path);
    let shipped: UplinkConfig =
        tributary_config::parse(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shipped.stream.subjects, ["tributary.>"]);
    let examples = commented_examples(&text);
    let full = format!("{text}\n{}", examples.join("\n"));
    let _: UplinkConfig =
        tributary_config::parse(&full, &path).unwrap_or_else(|e| panic!("{e}\n---\n{full}"));
}

#[test]
fn the_leafnode_example_passes_the_nats_server_config_test() {
    let certs = tributary_tests::TestCerts::generate().expect("test certificates");
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("leaf.creds");
    std::fs::write(&creds, "placeholder: not read by -t\n").unwrap();
    let example = read(&repo().join("cross/deb/agent/leafnode.conf"));
    assert!(example.contains("credentials:") && example.contains("tls {"));
    let conf = example
        .replace("/etc/nats/leaf.creds", creds.to_str().unwrap())
        .replace("/etc/nats/hub-ca.pem", certs.ca().to_str().unwrap());
    let path = dir.path().join("leafnode.conf");
    std::fs::write(&path, conf).unwrap();
    let out = Command::new(tributary_tests::bins::nats_server().unwrap())
        .arg("-t")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nats-server -t rejects the example: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- package checks ---------------------------------------------------------------------

fn dist() -> PathBuf {
    std::env::var_os("TRIBUTARY_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/cross"))
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .expect("dpkg-deb runs");
    assert!(
        out.status.success(),
        "dpkg-deb {args:?} {}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What an ELF header says about the machine it is for.
#[derive(Debug, PartialEq)]
struct Elf {
    /// `e_machine`: 40 ARM, 62 x86-64, 183 AArch64.
    machine: u16,
    /// 32 or 64.
    bits: u8,
    /// Has a `PT_INTERP` program header (is dynamically linked).
    interpreter: bool,
    /// ARM only: `EF_ARM_ABI_FLOAT_HARD` is set.
    hard_float: bool,
}

fn parse_elf(bytes: &[u8]) -> Elf {
    assert!(
        bytes.len() > 64 && bytes[..4] == *b"\x7fELF",
        "not an ELF file"
    );
    assert_eq!(bytes[5], 1, "not little-endian");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let bits = match bytes[4] {
        1 => 32,
        2 => 64,
        c => panic!("bad ELF class {c}"),
    };
    let machine = u16_at(18);
    let (phoff, flags, phentsize, phnum) = if bits == 32 {
        (u32_at(28) as usize, u32_at(36), u16_at(42), u16_at(44))
    } else {
        (u64_at(32) as usize, u32_at(48), u16_at(54), u16_at(56))
    };
    const PT_INTERP: u32 = 3;
    let interpreter =
        (0..phnum as usize).any(|i| u32_at(phoff + i * phentsize as usize) == PT_INTERP);
    const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
    Elf {
        machine,
        bits,
        interpreter,
        hard_float: machine == 40 && flags & EF_ARM_ABI_FLOAT_HARD != 0,
    }
}

/// Expected `(e_machine, bits)` per dpkg architecture.
fn machine_of(arch: &str) -> (u16, u8) {
    match arch {
        "amd64" => (62, 64),
        "arm64" => (183, 64),
        "armhf" | "armel" => (40, 32),
        other => panic!("unexpected package architecture {other}"),
    }
}

fn check_package(deb: &Path, package: &str) {
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let field = |f: &str| {
        dpkg_deb(&["-f"], deb)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{f}: ")).map(str::to_owned))
    };
    assert_eq!(field("Package").as_deref(), Some(package), "{name}");
    let arch = field("Architecture").expect("Architecture field");
    assert!(name.contains(&format!("_{arch}")), "{name} is for {arch}");

    let contents = dpkg_deb(&["--contents"], deb);
    let unit = format!("systemd/system/{package}.service");
    assert!(
        contents.lines().any(|l| l.ends_with(&unit)),
        "{name} lacks {unit}:\n{contents}"
    );
    let conffile = if package == "tributary-agent" {
        "/etc/tributary/agent.toml"
    } else {
        "/etc/tributary/uplink.toml"
    };
    assert!(
        contents.contains(&format!(".{conffile}")),
        "{name} lacks {conffile}"
    );
    let conffiles = dpkg_deb(&["--info"], deb);
    assert!(
        conffiles.contains("conffiles"),
        "{name} has no conffiles member"
    );
    let listed = {
        let out = Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .arg("conffiles")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        listed.lines().any(|l| l.trim() == conffile),
        "{name}: {conffile} not in DEBIAN/conffiles: {listed:?}"
    );
    let postinst = Command::new("dpkg-deb")
        .arg("--info")
        .arg(deb)
        .arg("postinst")
        .output()
        .unwrap();
    let postinst = String::from_utf8_lossy(&postinst.stdout);
    assert!(
        postinst.contains("useradd") && postinst.contains("tributary"),
        "{name}: postinst"
    );
    let (rules, dashboard) = if package == "tributary-agent" {
        (
            "tributary-agent.rules.yml",
            "tributary-agents.dashboard.json",
        )
    } else {
        (
            "tributary-uplink.rules.yml",
            "tributary-uplink.dashboard.json",
        )
    };
    for file in [rules, dashboard] {
        let path = format!("./usr/share/{package}/monitoring/{file}");
        assert!(
            contents.lines().any(|l| l.ends_with(&path)),
            "{name} lacks {path}:\n{contents}"
        );
    }
    if package == "tributary-agent" {
        assert!(
            contents.contains("examples/leafnode.conf"),
            "{name} lacks leafnode.conf"
        );
        assert_eq!(
            field("Recommends").as_deref(),
            Some("nats-server"),
            "{name}"
        );
        assert!(
            postinst.contains("gpio") && postinst.contains("dialout"),
            "{name}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(out.success());
    let bin = std::fs::read(dir.path().join("usr/bin").join(package)).unwrap();
    let elf = parse_elf(&bin);
    assert_eq!(
        (elf.machine, elf.bits),
        machine_of(&arch),
        "{name}: binary is for the wrong machine: {elf:?}"
    );
    if elf.machine == 40 {
        assert!(
            elf.hard_float,
            "{name}: 32-bit ARM binary is not hard-float: {elf:?}"
        );
    }
    if package == "tributary-agent" {
        assert!(
            !elf.interpreter,
            "{name}: the agent must be static: {elf:?}"
        );
    }
    if package == "tributary-uplink" {
        for schema in ["reading.schema.json", "dead-letter-headers.schema.json"] {
            let shipped = dir
                .path()
                .join("usr/share/tributary-uplink/schema")
                .join(schema);
            let shipped = std::fs::read(&shipped)
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", shipped.display()));
            let published = std::fs::read(repo().join("schema").join(schema)).unwrap();
            assert!(
                shipped == published,
                "{name}: {schema} differs from schema/{schema}"
            );
        }
    }
}

fn packages(prefix: &str) -> Vec<PathBuf> {
    let dir = dist().join("deb");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run cross/build.sh first", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".deb")
        })
        .collect();
    debs.sort();
    debs
}

#[test]
#[ignore = "needs the packages of cross/build.sh"]
fn every_agent_package_holds_unit_conffile_and_a_static_binary_for_its_architecture() {
    let debs = packages("tributary-agent_");
    let mut archs: Vec<String> = debs
        .iter()
        .map(|d| dpkg_deb(&["-f"], d))
        .map(|f| {
            f.lines()
                .find_map(|l| l.strip_prefix("Architecture: ").map(str::to_owned))
                .unwrap()
        })
        .collect();
    archs.sort();
    archs.dedup();
    assert_eq!(archs, ["amd64", "arm64", "armel", "armhf"], "{debs:?}");
    for deb in &debs {
        check_package(deb, "tributary-agent");
    }
}

#[test]
#[ignore = "needs the binaries of cross/build.sh"]
fn the_static_aarch64_agent_is_at_most_4_mb_stripped() {
    let bin = dist().join("aarch64-unknown-linux-musl/tributary-agent");
    let size = std::fs::metadata(&bin)
        .unwrap_or_else(|e| panic!("{}: {e}; run cross/build.sh first", bin.display()))
        .len();
    assert!(
        size <= 4_000_000,
        "{} is {size} bytes, over the 4 MB goal",
        bin.display()
    );
}

#[test]
#[ignore = "needs the packages of cross/build.sh"]
fn every_uplink_package_holds_unit_conffile_and_a_binary_for_its_architecture() {
    let debs = packages("tributary-uplink_");
    assert_eq!(debs.len(), 2, "amd64 and arm64 uplink packages: {debs:?}");
    for deb in &debs {
        check_package(deb, "tributary-uplink");
    }
}

#[test]
fn the_elf_reader_tells_this_test_binary_apart_from_other_machines() {
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let elf = parse_elf(&me);
    let expected = match std::env::consts::ARCH {
        "x86_64" => (62, 64),
        "aarch64" => (183, 64),
        "arm" => (40, 32),
        other => panic!("no ELF machine number known for {other}"),
    };
    assert_eq!((elf.machine, elf.bits), expected);
    assert!(elf.interpreter, "the test binary is dynamically linked");
    assert!(!elf.hard_float);
}
