#!/usr/bin/env bash
# The load generator's baseline on this machine: a release gateway with two
# workers on 127.0.0.1 (port 0), then
#   1. 5,000 agents for 20 s alone (registration latency, RSS per agent);
#   2. 5,000 agents for 20 s with 4 ping-pong controls for 10 s in the
#      middle (session setup and round-trip latency under idle load);
#   3. 5,000 agents for 20 s against a 5 s CMPI (poll round trip: with the
#      default 60 s CMPI no agent polls within 20 s).
# Each step gets a fresh gateway, killed by its pid afterwards. Summaries go
# to bench/results/<UTC date>/ as JSON. Heavy steps run one at a time.
#
# Usage: bench/loadgen-baseline.sh [TARGET_DIR]   (default: ./target)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-$root/target}
out=$root/bench/results/$(date -u +%Y-%m-%d)
work=$(mktemp -d)
gw_pid=
cleanup() {
    if [ -n "$gw_pid" ]; then kill "$gw_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

CARGO_TARGET_DIR=$target cargo build --release -j1 -p ringway -p ringway-loadgen
gateway=$target/release/ringway
loadgen=$target/release/ringway-loadgen
mkdir -p "$out"
echo 'Testing1' > "$work/key"

# start_gateway CMPI: starts a gateway, sets gw_pid and gw_addr.
start_gateway() {
    printf '[gateway]\nlisten = ["127.0.0.1:0"]\nworkers = 2\ncmpi_secs = %s\nkeys = ["Testing1"]\n' "$1" \
        > "$work/gw.toml"
    RUST_LOG=info "$gateway" serve --config "$work/gw.toml" 2> "$work/gw.err" &
    gw_pid=$!
    gw_addr=
    for _ in $(seq 1 100); do
        gw_addr=$(grep -o 'Listening on port 127.0.0.1:[0-9]*' "$work/gw.err" | head -1 | sed 's/Listening on port //') || true
        [ -n "$gw_addr" ] && return 0
        sleep 0.1
    done
    echo "the gateway did not start:" >&2
    cat "$work/gw.err" >&2
    exit 1
}

stop_gateway() {
    kill "$gw_pid"
    wait "$gw_pid" 2>/dev/null || true
    gw_pid=
}

common=(--key-file "$work/key")

echo "== 1. 5000 agents, 20 s, CMPI 60"
start_gateway 60
"$loadgen" agents --gateway "$gw_addr" "${common[@]}" --count 5000 --duration 20 \
    --gateway-pid "$gw_pid" --json "$out/agents-5000.json"
stop_gateway

echo "== 2. 5000 agents, 20 s, CMPI 60; 4 ping-pong controls for 10 s from t=7 s"
start_gateway 60
"$loadgen" agents --gateway "$gw_addr" "${common[@]}" --count 5000 --duration 20 \
    --gateway-pid "$gw_pid" --json "$out/agents-5000-with-controls.json" > "$work/agents.out" &
agents_pid=$!
sleep 7
"$loadgen" controls --gateway "$gw_addr" "${common[@]}" --count 4 --pattern pingpong --size 64 \
    --duration 10 --json "$out/controls-4-pingpong.json"
wait "$agents_pid"
cat "$work/agents.out"
stop_gateway

echo "== 3. 5000 agents, 20 s, CMPI 5"
start_gateway 5
"$loadgen" agents --gateway "$gw_addr" "${common[@]}" --count 5000 --duration 20 --cmpi 5 \
    --gateway-pid "$gw_pid" --json "$out/agents-5000-cmpi5.json"
stop_gateway

echo "summaries in $out"
