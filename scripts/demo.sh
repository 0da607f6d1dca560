#!/usr/bin/env bash
# The whole pipeline on this one machine:
#   simulated + system sensors -> tributary-agent -> leaf nats-server
#   => hub nats-server (JetStream) -> tributary-uplink -> Kafka (tansu)
#   -> `tributary-uplink tail --age` printing each reading as it arrives in
#      Kafka with its age (sensor to Kafka to screen), and the latency
#      summary (p50/p90/p99/max) when it stops.
# Runs until Ctrl-C, or for DEMO_SECONDS seconds. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:/usr/sbin:$PATH"

LEAF_PORT=${LEAF_PORT:-4222}      # the agent's config/examples/agent.toml points here
HUB_PORT=${HUB_PORT:-4333}
HUB_LEAF_PORT=${HUB_LEAF_PORT:-7422}
KAFKA_PORT=${KAFKA_PORT:-9092}
NATS_SERVER=${TRIBUTARY_NATS_SERVER:-nats-server}
TANSU=${TRIBUTARY_TANSU:-tansu}
TOPIC=tributary.readings

scripts/install-test-deps.sh --demo

echo "==> building tributary-agent and tributary-uplink"
cargo build --quiet --bins -p tributary-agent -p tributary-uplink
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug

DEMO=$ROOT/.demo
rm -rf "$DEMO"
mkdir -p "$DEMO/hub" "$DEMO/kafka" "$DEMO/agent"

PIDS=()
cleanup() {
    trap - EXIT INT TERM
    echo
    echo "==> stopping"
    for ((i=${#PIDS[@]}-1; i>=0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    echo "==> logs are in $DEMO/*.log"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$2 did not start on port $1; see $DEMO/$2.log" >&2
    exit 1
}

for port in "$LEAF_PORT" "$HUB_PORT" "$HUB_LEAF_PORT" "$KAFKA_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is already in use; set LEAF_PORT/HUB_PORT/HUB_LEAF_PORT/KAFKA_PORT" >&2
        exit 1
    fi
done

cat > "$DEMO/hub.conf" <<CONF
server_name: demo_hub
listen: "127.0.0.1:$HUB_PORT"
jetstream { store_dir: "$DEMO/hub" }
leafnodes { listen: "127.0.0.1:$HUB_LEAF_PORT" }
CONF
cat > "$DEMO/leaf.conf" <<CONF
server_name: demo_leaf
listen: "127.0.0.1:$LEAF_PORT"
leafnodes { remotes [ { url: "nats-leaf://127.0.0.1:$HUB_LEAF_PORT" } ] }
CONF
sed -e "s#nats://127.0.0.1:4222#nats://127.0.0.1:$HUB_PORT#" \
    -e "s#127.0.0.1:9092#127.0.0.1:$KAFKA_PORT#" \
    config/examples/uplink.toml > "$DEMO/uplink.toml"
sed -e "s#nats://127.0.0.1:4222#nats://127.0.0.1:$LEAF_PORT#" \
    -e "s#state_dir = \".demo/agent\"#state_dir = \"$DEMO/agent\"#" \
    config/examples/agent.toml > "$DEMO/agent.toml"

echo "==> hub nats-server (JetStream) on $HUB_PORT, leaf nats-server on $LEAF_PORT"
"$NATS_SERVER" -c "$DEMO/hub.conf" > "$DEMO/hub.log" 2>&1 & PIDS+=($!)
wait_port "$HUB_PORT" hub
"$NATS_SERVER" -c "$DEMO/leaf.conf" > "$DEMO/leaf.log" 2>&1 & PIDS+=($!)
wait_port "$LEAF_PORT" leaf

echo "==> Kafka broker (tansu, in memory) on $KAFKA_PORT"
(cd "$DEMO/kafka" && exec "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "memory://tansu/") > "$DEMO/kafka.log" 2>&1 & PIDS+=($!)
wait_port "$KAFKA_PORT" kafka

echo "==> tributary-uplink (hub stream -> Kafka topic $TOPIC)"
TRIBUTARY_LOG=${TRIBUTARY_LOG:-info} "$BIN/tributary-uplink" run --config "$DEMO/uplink.toml" > "$DEMO/uplink.log" 2>&1 & PIDS+=($!)
echo "==> tributary-agent (config/examples/agent.toml)"
TRIBUTARY_LOG=${TRIBUTARY_LOG:-info} "$BIN/tributary-agent" run --config "$DEMO/agent.toml" > "$DEMO/agent.log" 2>&1 & PIDS+=($!)

for _ in $(seq 300); do
    grep -q "uplink started" "$DEMO/uplink.log" 2>/dev/null && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "the agent died; see $DEMO/agent.log" >&2; exit 1; }
    sleep 0.2
done
grep -q "uplink started" "$DEMO/uplink.log" || { echo "the uplink did not start; see $DEMO/uplink.log" >&2; exit 1; }

echo "==> readings as they arrive in Kafka, age = now - reading time (Ctrl-C to stop)"
TAIL_ARGS=(tail --brokers "127.0.0.1:$KAFKA_PORT" --topic "$TOPIC" --follow --age)
if [ -n "${DEMO_SECONDS:-}" ]; then
    # `> >(tee …)`, not `| tee`: $! is then the tail itself, which the
    # cleanup stops first (SIGTERM) so that it prints its latency summary.
    "$BIN/tributary-uplink" "${TAIL_ARGS[@]}" > >(tee "$DEMO/tail.out") & TAIL=$!
    PIDS+=($TAIL)
    sleep "$DEMO_SECONDS"
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a demo process died early; see $DEMO/*.log" >&2; exit 1; }; done
    lines=$(wc -l < "$DEMO/tail.out")
    echo "==> $lines readings shown in $DEMO_SECONDS s"
    [ "$lines" -gt 0 ] || { echo "no reading reached Kafka; see $DEMO/*.log" >&2; exit 1; }
else
    "$BIN/tributary-uplink" "${TAIL_ARGS[@]}"
fi
