#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for FUZZ_SECONDS seconds each, one
# after the other (nightly, libFuzzer, no sanitizer: the workspace forbids
# unsafe code, so the fuzzers look for panics and broken properties).
# Corpora live in fuzz/corpus/<target> (not committed) and are seeded from
# the committed golden fixtures and example configurations; a crash is saved
# in fuzz/artifacts/<target>/ and ends the run non-zero.
#
#   FUZZ_SECONDS=N     seconds per target (default 30)
#   FUZZ_TARGETS="a b" only these targets
#   FUZZ_NICE=N        nice level (default 10)
# Prints one line per target: its name, executions and executions/s.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-30}
NICE=${FUZZ_NICE:-10}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-target}-fuzz}
TARGETS=${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^tributary-fuzz$')}
LOGS=fuzz/logs
mkdir -p "$LOGS"

seed() { # target dir: put the committed examples in an empty corpus
	local t=$1 d=$2
	[ -n "$(ls -A "$d" 2>/dev/null)" ] && return 0
	mkdir -p "$d"
	case $t in
	wire_envelope) cp wire/tests/fixtures/envelope-v*.bin "$d/" ;;
	buffer_frame)
		for f in agent/tests/fixtures/buffer-v1/*.seg; do
			{ printf '\xff\x0f'; tail -c +33 "$f"; } >"$d/frame-$(basename "$f")"
			{ printf '\xff\x0f'; cat "$f"; } >"$d/header-$(basename "$f")"
		done ;;
	buffer_open) printf '\x10\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x00\x00\x10\x00' >"$d/sixteen-records-one-flip" ;;
	config)
		for f in config/examples/agent.toml cross/deb/agent/agent.toml; do
			[ -f "$f" ] && { printf '\x00'; cat "$f"; } >"$d/agent-$(basename "$(dirname "$f")")"
		done
		for f in config/examples/uplink*.toml; do { printf '\x01'; cat "$f"; } >"$d/$(basename "$f")"; done ;;
	payloads)
		printf '\x00t=21375\n' >"$d/sysfs"
		printf '\x01%s' $'72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n' >"$d/w1"
		printf '\x02 42.5\n' >"$d/command"
		printf '\x03/temperature\0{"temperature": 21.5, "state": "ON"}' >"$d/json"
		printf '\x04\x40ON' >"$d/mqtt-plain"
		printf '\x05zigbee2mqtt/+/set\0zigbee2mqtt/lamp/set' >"$d/filter" ;;
	esac
}

status=0
for t in $TARGETS; do
	corpus=fuzz/corpus/$t
	seed "$t" "$corpus"
	log=$LOGS/$t.log
	if ! (cd fuzz && nice -n "$NICE" cargo +nightly fuzz run -O -s none "$t" "corpus/$t" -- \
		-max_total_time="$SECONDS_EACH" -print_final_stats=1 -timeout=10 -rss_limit_mb=1024) >"$log" 2>&1; then
		echo "FUZZ $t: FAILED (see $log and fuzz/artifacts/$t/)"
		grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 || true
		status=1
		continue
	fi
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
	echo "FUZZ $t: ${execs:-?} execs in ${SECONDS_EACH}s (${rate:-?}/s), corpus $(ls "$corpus" | wc -l) inputs"
done
exit $status
