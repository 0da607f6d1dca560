#!/usr/bin/env bash
# The whole pipeline on this one machine:
#   simulated + system sensors -> tributary-agent -> leaf nats-server
#   => hub nats-server (JetStream) -> tributary-uplink -> Kafka (tansu)
#   -> `tributary-uplink tail --age` printing each reading as it arrives in
#      Kafka with its age (sensor to Kafka to screen), and the latency
#      summary (p50/p90/p99/max) when it stops.
# Runs until Ctrl-C, or for DEMO_SECONDS seconds. Stops everything it started.
#
# Ports: each server takes its usual port when it is free and otherwise the
# next free one (a system nats-server on 4222, say), and the generated
# configs say which. LEAF_PORT, HUB_PORT, HUB_LEAF_PORT, KAFKA_PORT,
# AGENT_METRICS_PORT, UPLINK_METRICS_PORT pin a port (taken: an error).
#
# Environment: DEMO_SECONDS (stop by itself), DEMO_DIR (default .demo: configs,
# logs, `pids`), TRIBUTARY_NATS_SERVER, TRIBUTARY_TANSU (the servers),
# TRIBUTARY_AGENT_BIN and TRIBUTARY_UPLINK_BIN (prebuilt programs: nothing is
# installed nor built).
#
# Every process runs in its own session, so Ctrl-C reaches only this script,
# which then stops them one by one in dependency order, each with the signal
# it stops cleanly on (SIGINT for the tail, as Ctrl-C would, and for
# nats-server, which exits 1 on SIGTERM; SIGTERM for the agent, the uplink and
# tansu, as systemd would) and waits for it to exit: the tail and the agent
# first, then the uplink, then Kafka, the leaf and the hub. No SIGKILL.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:/usr/sbin:$PATH"

NATS_SERVER=${TRIBUTARY_NATS_SERVER:-nats-server}
TANSU=${TRIBUTARY_TANSU:-tansu}
TOPIC=tributary.readings
DEMO=${DEMO_DIR:-$ROOT/.demo}

if [ -n "${TRIBUTARY_AGENT_BIN:-}" ] && [ -n "${TRIBUTARY_UPLINK_BIN:-}" ]; then
    AGENT=$TRIBUTARY_AGENT_BIN
    UPLINK=$TRIBUTARY_UPLINK_BIN
else
    if ! command -v "$NATS_SERVER" >/dev/null || ! command -v "$TANSU" >/dev/null; then
        scripts/install-test-deps.sh --demo
    fi
    echo "==> building tributary-agent and tributary-uplink"
    cargo build --quiet --bins -p tributary-agent -p tributary-uplink
    AGENT=${CARGO_TARGET_DIR:-$ROOT/target}/debug/tributary-agent
    UPLINK=${CARGO_TARGET_DIR:-$ROOT/target}/debug/tributary-uplink
fi
for program in "$NATS_SERVER" "$TANSU" "$AGENT" "$UPLINK"; do
    command -v "$program" >/dev/null || { echo "error: $program not found" >&2; exit 1; }
done

rm -rf "$DEMO"
mkdir -p "$DEMO/hub" "$DEMO/kafka" "$DEMO/agent"

# --- ports ---------------------------------------------------------------------------------------
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PICKED=" "
# pick_port VAR DEFAULT WHAT: $VAR if set (it must be free), else DEFAULT or the next free port.
pick_port() {
    local var=$1 port=$2 what=$3 pinned=${!1:-}
    if [ -n "$pinned" ]; then
        if port_taken "$pinned" || [[ $PICKED == *" $pinned "* ]]; then
            echo "error: port $pinned ($var, $what) is in use" >&2
            exit 1
        fi
        port=$pinned
    else
        while port_taken "$port" || [[ $PICKED == *" $port "* ]]; do
            port=$((port + 1))
            [ "$port" -le 65535 ] || { echo "error: no free port for $what" >&2; exit 1; }
        done
        [ "$port" = "$2" ] || echo "==> port $2 is taken; the $what uses $port"
    fi
    PICKED+="$port "
    printf -v "$var" '%s' "$port"
}
pick_port LEAF_PORT 4222 "leaf nats-server"
pick_port HUB_PORT 4333 "hub nats-server"
pick_port HUB_LEAF_PORT 7422 "hub's leafnode port"
pick_port KAFKA_PORT 9092 "Kafka broker"
pick_port AGENT_METRICS_PORT 9464 "agent's metrics endpoint"
pick_port UPLINK_METRICS_PORT 9465 "uplink's metrics endpoint"

# --- configs -------------------------------------------------------------------------------------
cat > "$DEMO/hub.conf" <<CONF
server_name: demo_hub
listen: "127.0.0.1:$HUB_PORT"
# The domain lets agents behind the leaf reach the fleet store (JetStream domain hub).
jetstream { store_dir: "$DEMO/hub", domain: hub }
leafnodes { listen: "127.0.0.1:$HUB_LEAF_PORT" }
CONF
cat > "$DEMO/leaf.conf" <<CONF
server_name: demo_leaf
listen: "127.0.0.1:$LEAF_PORT"
leafnodes { remotes [ { url: "nats-leaf://127.0.0.1:$HUB_LEAF_PORT" } ] }
CONF
sed -e "s#nats://127.0.0.1:4222#nats://127.0.0.1:$HUB_PORT#" \
    -e "s#127.0.0.1:9092#127.0.0.1:$KAFKA_PORT#" \
    -e '/^\[stream\]/a max_bytes = "1 GiB"  # demo: JetStream refuses a stream bigger than its free disk allows' \
    config/examples/uplink.toml > "$DEMO/uplink.toml"
printf '\n# Added by the demo.\n[http]\nlisten = "127.0.0.1:%s"\n' "$UPLINK_METRICS_PORT" >> "$DEMO/uplink.toml"
sed -e "s#nats://127.0.0.1:4222#nats://127.0.0.1:$LEAF_PORT#" \
    -e "s#state_dir = \".demo/agent\"#state_dir = \"$DEMO/agent\"#" \
    config/examples/agent.toml > "$DEMO/agent.toml"
printf '\n# Added by the demo.\n[metrics]\nlisten = "127.0.0.1:%s"\n' "$AGENT_METRICS_PORT" >> "$DEMO/agent.toml"
# The examples must still say what the substitutions expect.
for want in "$DEMO/uplink.toml:nats://127.0.0.1:$HUB_PORT" "$DEMO/uplink.toml:\"127.0.0.1:$KAFKA_PORT\"" \
            "$DEMO/agent.toml:nats://127.0.0.1:$LEAF_PORT" "$DEMO/agent.toml:state_dir = \"$DEMO/agent\""; do
    grep -qF "${want#*:}" "${want%%:*}" || { echo "error: ${want%%:*} lacks ${want#*:}" >&2; exit 1; }
done
"$AGENT" check --config "$DEMO/agent.toml" > "$DEMO/check.log" 2>&1 \
    && "$UPLINK" check --config "$DEMO/uplink.toml" >> "$DEMO/check.log" 2>&1 \
    || { cat "$DEMO/check.log" >&2; exit 1; }

# --- processes -----------------------------------------------------------------------------------
NAMES=() PIDS=() SIGNALS=() BOUNDS=()
# start NAME SIGNAL BOUND_SECONDS COMMAND...: runs COMMAND in its own session, output to
# $DEMO/NAME.log; stopped with SIGNAL, and waited for up to BOUND_SECONDS.
start() {
    local name=$1 sig=$2 bound=$3
    shift 3
    setsid "$@" > "$DEMO/$name.log" 2>&1 < /dev/null &
    NAMES+=("$name") PIDS+=($!) SIGNALS+=("$sig") BOUNDS+=("$bound")
    echo "$name $!" >> "$DEMO/pids"
}
alive() { kill -0 "$1" 2>/dev/null; }
# wait_port NAME PORT: until the last started process listens on PORT.
wait_port() {
    local pid=${PIDS[-1]}
    for _ in $(seq 300); do
        alive "$pid" || { echo "error: $1 exited at start; see $DEMO/$1.log" >&2; exit 1; }
        port_taken "$2" && return 0
        sleep 0.1
    done
    echo "error: $1 did not listen on port $2 within 30 s; see $DEMO/$1.log" >&2
    exit 1
}

STATUS=0
# stop_all: the processes in the reverse order of their start, each with its own signal,
# waiting for each before the next; no SIGKILL. Sets STATUS to 1 if one exits unclean.
stop_all() {
    local i name pid status t
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        name=${NAMES[$i]} pid=${PIDS[$i]}
        if alive "$pid"; then
            kill -s "${SIGNALS[$i]}" "$pid" 2>/dev/null || true
            for ((t = 0; t < ${BOUNDS[$i]} * 10; t++)); do
                alive "$pid" || break
                sleep 0.1
            done
            if alive "$pid"; then
                echo "error: $name (pid $pid) did not stop within ${BOUNDS[$i]} s of SIG${SIGNALS[$i]}; it is left running, see $DEMO/$name.log" >&2
                STATUS=1
                continue
            fi
        fi
        status=0
        wait "$pid" 2>/dev/null || status=$?
        if [ "$status" != 0 ]; then
            echo "error: $name exited with status $status; see $DEMO/$name.log" >&2
            STATUS=1
        fi
    done
}

TEE=
cleanup() {
    trap - EXIT INT TERM
    echo
    echo "==> stopping: tail, agent, uplink, then Kafka, the leaf and the hub"
    stop_all
    if [ -n "$TEE" ]; then
        for _ in $(seq 50); do alive "$TEE" || break; sleep 0.1; done
    fi
    if [ -f "$DEMO/tail.out" ]; then
        grep -h -e "age on arrival" -e "already in Kafka" "$DEMO/tail.log" 2>/dev/null || true
        echo "==> $(wc -l < "$DEMO/tail.out") readings shown"
    fi
    echo "==> logs are in $DEMO/*.log"
    exit "$STATUS"
}
trap 'STATUS=$?; cleanup' EXIT
trap 'exit 0' INT TERM

echo "==> hub nats-server (JetStream) on $HUB_PORT, leafnodes on $HUB_LEAF_PORT; leaf nats-server on $LEAF_PORT"
start nats-hub INT 10 "$NATS_SERVER" -c "$DEMO/hub.conf"
wait_port nats-hub "$HUB_PORT"
start nats-leaf INT 10 "$NATS_SERVER" -c "$DEMO/leaf.conf"
wait_port nats-leaf "$LEAF_PORT"

echo "==> Kafka broker (tansu, in memory) on $KAFKA_PORT"
start kafka TERM 10 sh -c 'cd "$1" && shift && exec "$@"' sh "$DEMO/kafka" \
    "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "memory://tansu/"
wait_port kafka "$KAFKA_PORT"

echo "==> tributary-uplink (hub stream -> Kafka topic $TOPIC)"
TRIBUTARY_LOG=${TRIBUTARY_LOG:-info} start uplink TERM 40 "$UPLINK" run --config "$DEMO/uplink.toml"
echo "==> tributary-agent (config/examples/agent.toml)"
TRIBUTARY_LOG=${TRIBUTARY_LOG:-info} start agent TERM 15 "$AGENT" run --config "$DEMO/agent.toml"

for _ in $(seq 300); do
    grep -q "uplink started" "$DEMO/uplink.log" 2>/dev/null && break
    for i in "${!PIDS[@]}"; do
        alive "${PIDS[$i]}" || { echo "error: ${NAMES[$i]} exited; see $DEMO/${NAMES[$i]}.log" >&2; exit 1; }
    done
    sleep 0.2
done
grep -q "uplink started" "$DEMO/uplink.log" || { echo "error: the uplink did not start; see $DEMO/uplink.log" >&2; exit 1; }

echo "==> metrics: agent http://127.0.0.1:$AGENT_METRICS_PORT/metrics, uplink http://127.0.0.1:$UPLINK_METRICS_PORT/metrics (and /health)"
echo "==> readings as they arrive in Kafka, age = now - reading time (Ctrl-C to stop)"
# The tail's stdout goes to the screen and tail.out through tee (-i: Ctrl-C is for this
# script); its stderr (logs, the latency summary) to tail.log, the summary shown at the end.
exec 4> >(exec tee -i "$DEMO/tail.out")
TEE=$!
setsid "$UPLINK" tail --brokers "127.0.0.1:$KAFKA_PORT" --topic "$TOPIC" --follow --age \
    >&4 2> "$DEMO/tail.log" < /dev/null &
NAMES+=(tail) PIDS+=($!) SIGNALS+=(INT) BOUNDS+=(10)
echo "tail $!" >> "$DEMO/pids"
exec 4>&-

end=$((SECONDS + ${DEMO_SECONDS:-0}))
while [ -z "${DEMO_SECONDS:-}" ] || [ "$SECONDS" -lt "$end" ]; do
    for i in "${!PIDS[@]}"; do
        alive "${PIDS[$i]}" || { echo "error: ${NAMES[$i]} exited early; see $DEMO/${NAMES[$i]}.log" >&2; exit 1; }
    done
    sleep 0.2
done
[ -s "$DEMO/tail.out" ] || { echo "error: no reading reached Kafka in $DEMO_SECONDS s; see $DEMO/*.log" >&2; exit 1; }
