#!/usr/bin/env bash
# Failover and failback at scale: a primary and a secondary gateway, AGENTS
# simulated agents (`ringway-loadgen agents --secondary`) registered with
# the primary; the primary is killed (SIGKILL), the agents fail over; it is
# started again on its port, the agents come home. Both gateways write an
# event log (UTC), whose `Client <name> connected (failover from ...)` and
# `(failback from ...)` lines bench/failover_report.py turns into the
# delays after the kill and after the restart (p50, p99, max; 1 s
# resolution, the log's) and arrivals per second, with a plot.
#
# Every process it starts is stopped by its pid.
#
# Usage: bench/failover.sh   (env: AGENTS=2000 CMPI=30 PROFILE=debug|release
#                             SKIP_BUILD=1)
# Output: bench/results/failover-<date>.json (the report) and
#         bench/failover-<date>.png if matplotlib is there; the gateways'
#         logs and the loadgen's live summary stay in the /tmp folder named.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
AGENTS=${AGENTS:-2000}
CMPI=${CMPI:-30}
PROFILE=${PROFILE:-release}
date_tag=$(date -u +%Y-%m-%d)
results=$bench/results
work=$(mktemp -d /tmp/ringway-failover.XXXXXX)
mkdir -p "$results"
started=()

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
cleanup() {
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${started[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

if [ -z "${SKIP_BUILD:-}" ]; then
    flag=$([ "$PROFILE" = release ] && echo --release)
    log "cargo build $flag -p ringway -p ringway-loadgen"
    (cd "$root" && cargo build $flag -p ringway -p ringway-loadgen) >"$work/build.log" 2>&1 \
        || { cat "$work/build.log" >&2; exit 1; }
fi
rw=$root/target/$PROFILE/ringway
lg=$root/target/$PROFILE/ringway-loadgen
ulimit -n "$(ulimit -Hn)"

key=failover-$RANDOM$RANDOM$RANDOM
printf '%s' "$key" > "$work/key"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start NAME PORT ROLE: a gateway on 127.0.0.1:PORT with its event log in
# $work/NAME-log; its pid in $gw_pid.
start() {
    mkdir -p "$work/$1-log"
    printf '[gateway]\nlisten = ["127.0.0.1:%s"]\nworkers = 2\ncmpi_secs = %s\nrole = "%s"\nkeys = ["%s"]\n[log]\ndir = "%s"\nutc = true\nmax_file_kb = 100000\n' \
        "$2" "$CMPI" "$3" "$key" "$work/$1-log" > "$work/$1.toml"
    RUST_LOG=info "$rw" serve --config "$work/$1.toml" 2>> "$work/$1.err" &
    gw_pid=$!
    started+=("$gw_pid")
    for _ in $(seq 1 100); do
        grep -q "Gateway started" "$work/$1.err" 2>/dev/null && return 0
        kill -0 "$gw_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# wait_live FIELD VALUE SECS: until the loadgen's live summary has
# agents.FIELD == VALUE.
wait_live() {
    for _ in $(seq 1 $(($3 * 10))); do
        python3 -c "import json,sys; sys.exit(0 if json.load(open('$work/live.json'))['agents']['$1'] == $2 else 1)" \
            2>/dev/null && return 0
        sleep 0.1
    done
    log "agents.$1 never reached $2"; return 1
}

p_port=$(free_port); s_port=$(free_port)
start primary "$p_port" primary || { log "the primary did not start"; cat "$work/primary.err" >&2; exit 1; }
p_pid=$gw_pid
start secondary "$s_port" secondary || { log "the secondary did not start"; cat "$work/secondary.err" >&2; exit 1; }
log "primary 127.0.0.1:$p_port (pid $p_pid), secondary 127.0.0.1:$s_port; logs and configs in $work"

"$lg" agents --gateway "127.0.0.1:$p_port" --secondary "127.0.0.1:$s_port" --key-file "$work/key" \
    --count "$AGENTS" --ramp 1000 --duration $((CMPI * 6 + 60)) \
    --live-json "$work/live.json" \
    > "$work/loadgen.out" 2> "$work/loadgen.err" &
lg_pid=$!
started+=("$lg_pid")
wait_live up_at_end "$AGENTS" 120 || exit 1
log "$AGENTS agents up on the primary"

kill_at=$(date +%s.%N)
kill -9 "$p_pid"
wait_live failovers "$AGENTS" 60 || exit 1
log "all on the secondary"
sleep 5
for _ in $(seq 1 50); do
    restart_at=$(date +%s.%N)
    start primary "$p_port" primary && break
    sleep 0.1
done
log "primary started again"
wait_live failbacks "$AGENTS" $((CMPI * 3)) || exit 1
log "all back home"

python3 "$bench/failover_report.py" --agents "$AGENTS" --cmpi "$CMPI" --profile "$PROFILE" \
    --kill "$kill_at" --restart "$restart_at" \
    --primary-log "$work/primary-log" --secondary-log "$work/secondary-log" \
    --json "$results/failover-$date_tag.json" --plot "$bench/failover-$date_tag.png"
