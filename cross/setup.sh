#!/usr/bin/env bash
# Installs the cross-build toolchain for Tributary's Raspberry Pi builds.
#
# Idempotent: every step checks first and skips what is already there, so a
# second run takes a second or two. Nothing here needs Docker.
#
#   zig            from the `ziglang` Python package (pip --user when not root)
#   cargo-zigbuild crates.io, links with zig (and zig's musl / glibc stubs)
#   cargo-deb      crates.io, builds the .deb packages
#   rust targets   aarch64 and x86_64 musl (+ aarch64 gnu for the uplink) via rustup;
#                  the 32-bit ARM musl targets have no prebuilt std here, so
#                  nightly + rust-src is installed and build.sh uses -Zbuild-std
#   qemu-user-static  Debian package, runs the ARM builds in the tests
#
# Usage: cross/setup.sh            (prints what it did)
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

have_cargo_bin() { [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/$1" ] || command -v "$1" >/dev/null 2>&1; }

# --- zig (ziglang wheel) ------------------------------------------------------
# Pinned: zig 0.17 links the aarch64 musl agent without musl's startup files
# ("failed to open object crt1.o" under cargo-zigbuild 0.24.1, seen
# 2026-12-02 on a new machine); 0.15.2 is the version the builds are made with.
ZIG_VERSION=0.15.2
if [ "$(python3 -m ziglang version 2>/dev/null)" = "$ZIG_VERSION" ]; then
    log "ziglang $ZIG_VERSION present"
else
    log "installing ziglang $ZIG_VERSION (pip)"
    pip_args=(install --quiet "ziglang==$ZIG_VERSION")
    [ "$(id -u)" -eq 0 ] || pip_args+=(--user)
    python3 -m pip "${pip_args[@]}"
    log "ziglang $(python3 -m ziglang version) installed"
fi

# --- cargo tools ----------------------------------------------------------------
# Pinned, like zig: the versions the builds were last proven with (2026-12-02).
for pinned in cargo-zigbuild@0.24.1 cargo-deb@3.8.0; do
    tool=${pinned%@*}
    if have_cargo_bin "$tool"; then
        log "$tool present"
    else
        log "installing $pinned (cargo install --locked; a few minutes)"
        nice -n 10 cargo install "$tool" --locked --version "${pinned#*@}"
    fi
done

# --- rust targets ---------------------------------------------------------------
installed_targets=$(rustup target list --installed)
for target in aarch64-unknown-linux-musl aarch64-unknown-linux-gnu x86_64-unknown-linux-musl; do
    if grep -qx "$target" <<<"$installed_targets"; then
        log "target $target present"
    else
        log "adding target $target"
        rustup target add "$target"
    fi
done

# 32-bit ARM musl (armv7 and ARMv6): std is built from source with nightly.
if rustup toolchain list | grep -q '^nightly'; then
    log "nightly toolchain present"
else
    log "installing nightly toolchain (minimal profile)"
    rustup toolchain install nightly --profile minimal
fi
if rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    log "nightly rust-src present"
else
    log "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi

# --- Debian packages ------------------------------------------------------------
need_apt=()
dpkg -s qemu-user-static >/dev/null 2>&1 || need_apt+=(qemu-user-static)
# The arm64 glibc the aarch64 uplink (a glibc build) loads under qemu-user.
dpkg -s libc6-arm64-cross >/dev/null 2>&1 || need_apt+=(libc6-arm64-cross)
# systemd-analyze (unit security check in the tests). On a machine without
# systemd as init this only installs the tools; it does not change PID 1.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "apt-get install ${need_apt[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
else
    log "qemu-user-static, libc6-arm64-cross and systemd-analyze present"
fi

log "done"
