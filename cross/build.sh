#!/usr/bin/env bash
# One command for Raspberry Pi delivery: static, stripped tributary-agent
# binaries for every Pi, tributary-uplink for amd64 and arm64 servers, and
# the .deb packages of both.
#
#   cross/build.sh                 everything (runs cross/setup.sh first)
#   cross/build.sh --agent-only    agents and their .debs, no uplink
#   cross/build.sh --uplink-only   uplinks and their .debs, no agent
#   cross/build.sh --no-deb        binaries only
#   cross/build.sh --skip-setup    do not check the toolchain first
#
# Environment:
#   CARGO_TARGET_DIR   cargo's build directory (default <repo>/target)
#   TRIBUTARY_DIST     where artifacts go (default <repo>/target/cross):
#                        <dist>/<triple>/tributary-agent|tributary-uplink
#                        <dist>/deb/*.deb
#                        <dist>/sizes.txt
#   CROSS_PROFILE      cargo profile (default release: opt-level "s", fat
#                      LTO, one codegen unit, panic=abort, stripped)
#   AGENT_OPT_LEVEL    opt-level of the agent builds (default "z": smallest)
#
# Agent targets (static musl, no runtime dependencies at all):
#   aarch64-unknown-linux-musl       Pi 3/4/5 (and Zero 2) on a 64-bit OS   -> arm64 .deb
#   armv7-unknown-linux-musleabihf   Pi 2/3/4 on a 32-bit OS (ARMv7+NEON)   -> armhf .deb (…_armhf-armv7.deb)
#   arm-unknown-linux-musleabihf     every Pi incl. Zero/1 (ARMv6+VFP2,     -> armhf .deb (the default one)
#                                    arm1176jzf-s)                            and armel .deb
#   x86_64-unknown-linux-musl        amd64 hosts (tests, gateways)          -> amd64 .deb
# The 32-bit ARM musl targets have no prebuilt std from rustup here: they are
# built with nightly and -Zbuild-std, with zig supplying the musl C runtime.
#
# Uplink targets (glibc 2.28+, librdkafka/OpenSSL/zlib/zstd linked in
# statically; librdkafka is built with cmake through zig's C compiler):
#   x86_64-unknown-linux-gnu.2.28    -> amd64 .deb
#   aarch64-unknown-linux-gnu.2.28   -> arm64 .deb
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DIST=${TRIBUTARY_DIST:-$ROOT/target/cross}
PROFILE=${CROSS_PROFILE:-release}

agent=1 uplink=1 deb=1 setup=1
for arg in "$@"; do
    case "$arg" in
        --agent-only) uplink=0 ;;
        --uplink-only) agent=0 ;;
        --no-deb) deb=0 ;;
        --skip-setup) setup=0 ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '\n== %s\n' "$*" >&2; }

[ "$setup" = 1 ] && "$ROOT/cross/setup.sh"

# cargo-zigbuild finds zig through the ziglang Python package.
export CARGO_ZIGBUILD_ZIG_PATH=${CARGO_ZIGBUILD_ZIG_PATH:-"python3 -m ziglang"}

mkdir -p "$DIST/deb"
: >"$DIST/sizes.txt.new"

profile_dir() { [ "$PROFILE" = dev ] && echo debug || echo "$PROFILE"; }

# build <package> <rust triple> <zig triple suffix or ""> <toolchain: stable|nightly> [extra cargo args...]
build() {
    local pkg=$1 triple=$2 suffix=$3 toolchain=$4
    shift 4
    local start=$SECONDS
    log "$pkg for $triple$suffix ($toolchain)"
    if [ "$toolchain" = nightly ]; then
        # No prebuilt std for this target: build std from source. zig, not
        # Rust's self-contained objects, provides the musl startup files.
        # std with `optimize_for_size` (smaller implementations) and without
        # its panic-unwind and backtrace features, which panic = "abort" does
        # not need (a panic prints its message and location, no backtrace),
        # keeps the agent inside its 4 MB goal: 3,829,464 instead of
        # 4,005,304 bytes on aarch64 once MQTT 5 and the read back came in.
        RUSTFLAGS="-C link-self-contained=no ${EXTRA_RUSTFLAGS:-}" \
            nice -n 10 cargo +nightly zigbuild --profile "$PROFILE" -p "$pkg" \
            --target "$triple$suffix" -Zbuild-std=std,panic_abort \
            -Zbuild-std-features=optimize_for_size "$@"
    else
        RUSTFLAGS="${EXTRA_RUSTFLAGS:-}" \
            nice -n 10 cargo zigbuild --profile "$PROFILE" -p "$pkg" --target "$triple$suffix" "$@"
    fi
    local bin="$CARGO_TARGET_DIR/$triple/$(profile_dir)/$pkg"
    mkdir -p "$DIST/$triple"
    cp "$bin" "$DIST/$triple/$pkg"
    local size
    size=$(stat -c %s "$DIST/$triple/$pkg")
    printf '%-18s %-34s %9d bytes  %6.2f MiB  built in %ds\n' "$pkg" "$triple" "$size" \
        "$(echo "$size / 1048576" | bc -l)" $((SECONDS - start)) | tee -a "$DIST/sizes.txt.new" >&2
}

# deb <package> <rust triple> <output file name> [dpkg architecture override]
deb() {
    local pkg=$1 triple=$2 out=$3 arch=${4:-}
    log "deb $out"
    cargo deb -p "$pkg" --no-build --no-strip --profile "$PROFILE" --target "$triple" \
        --output "$DIST/deb/$out" >/dev/null
    if [ -n "$arch" ]; then
        # Same static binary, other dpkg architecture name (see README).
        local tmp
        tmp=$(mktemp -d)
        dpkg-deb -R "$DIST/deb/$out" "$tmp/pkg"
        sed -i "s/^Architecture: .*/Architecture: $arch/" "$tmp/pkg/DEBIAN/control"
        dpkg-deb --root-owner-group -Zxz -b "$tmp/pkg" "$DIST/deb/$out" >/dev/null
        rm -rf "$tmp"
    fi
    dpkg-deb -f "$DIST/deb/$out" Package Version Architecture | paste -sd' ' >&2
}

version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="tributary-agent"))')
debver="${version}-1"

if [ "$agent" = 1 ]; then
    # The edge agent is built for size (opt-level "z": 10% smaller than "s",
    # 3.58 vs 3.98 MiB on aarch64); it waits on sensors, disk and network, not
    # on the CPU. The uplink keeps the profile's own level.
    export CARGO_PROFILE_RELEASE_OPT_LEVEL=${AGENT_OPT_LEVEL:-z}
    # std built from source at the same opt-level (nightly build-std, as
    # for the 32-bit Pis): 3.70 MiB instead of 3.83 MiB with the prebuilt
    # std, which keeps the control plane inside the 4 MB goal.
    build tributary-agent aarch64-unknown-linux-musl "" nightly
    # ARMv6 + VFP2 (BCM2835: Pi Zero/1): pin the CPU so nothing newer sneaks in.
    EXTRA_RUSTFLAGS="-C target-cpu=arm1176jzf-s" \
        build tributary-agent arm-unknown-linux-musleabihf "" nightly
    build tributary-agent armv7-unknown-linux-musleabihf "" nightly
    build tributary-agent x86_64-unknown-linux-musl "" stable
    unset CARGO_PROFILE_RELEASE_OPT_LEVEL
fi

if [ "$uplink" = 1 ]; then
    # librdkafka through cmake (cross-aware, uses zig via CC_<target>);
    # OpenSSL built from source so the binary needs no libssl of the host.
    # cmake-cross.sh keeps librdkafka from linking the build host's libcurl
    # and Cyrus SASL (see that file).
    export CMAKE="$ROOT/cross/cmake-cross.sh"
    for triple in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
        build tributary-uplink "$triple" .2.28 stable \
            --features rdkafka/cmake-build,rdkafka/ssl-vendored,rdkafka/libz-static
    done
fi

if [ "$deb" = 1 ]; then
    if [ "$agent" = 1 ]; then
        deb tributary-agent aarch64-unknown-linux-musl "tributary-agent_${debver}_arm64.deb"
        deb tributary-agent x86_64-unknown-linux-musl "tributary-agent_${debver}_amd64.deb"
        # Raspberry Pi OS 32-bit calls its ARMv6+VFP2 port "armhf": the ARMv6
        # build runs on every Pi, so it is THE armhf package.
        deb tributary-agent arm-unknown-linux-musleabihf "tributary-agent_${debver}_armhf.deb"
        # Debian's own armel port (ARMv5T+, used on Pi Zero/1 by Debian
        # proper): the static ARMv6 binary runs there too.
        deb tributary-agent arm-unknown-linux-musleabihf "tributary-agent_${debver}_armel.deb" armel
        # ARMv7 build for Pi 2/3/4 with Debian armhf (ARMv7) or Raspberry Pi
        # OS 32-bit on those boards: slightly faster, not for Zero/1.
        deb tributary-agent armv7-unknown-linux-musleabihf "tributary-agent_${debver}_armhf-armv7.deb"
    fi
    if [ "$uplink" = 1 ]; then
        deb tributary-uplink x86_64-unknown-linux-gnu "tributary-uplink_${debver}_amd64.deb"
        deb tributary-uplink aarch64-unknown-linux-gnu "tributary-uplink_${debver}_arm64.deb"
    fi
fi

# Keep the sizes of targets not built this time.
if [ -f "$DIST/sizes.txt" ]; then
    while read -r line; do
        set -- $line
        grep -q "^$1 *$2 " "$DIST/sizes.txt.new" || echo "$line" >>"$DIST/sizes.txt.new"
    done <"$DIST/sizes.txt"
fi
sort -o "$DIST/sizes.txt" "$DIST/sizes.txt.new" && rm "$DIST/sizes.txt.new"
log "stripped sizes ($DIST/sizes.txt)"
cat "$DIST/sizes.txt"
[ "$deb" = 1 ] && { log "packages"; ls -l "$DIST/deb"/*.deb; }
exit 0
