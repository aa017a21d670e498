#!/usr/bin/env bash
# Load-balanced gateways (issue 12): three gateways on 127.0.0.1, .2 and .3
# sharing one redis-server (Unix socket, no persistence).
#
#   1. AGENTS agents (default 30,000, two load generators) all dial gw1;
#      gw1 spreads them. Reported: where they landed.
#   2. Steady state: Redis commands per second over IDLE_SECS with every
#      agent idle (the gateways' lease renewals only), from Redis's own
#      INFO and each gateway's ringway_cluster_redis_ops_total.
#   3. Session setup, RUNS times: 100 more agents (x-*) register with gw2
#      directly; 4 controls open one-round-trip sessions to them for
#      SETUP_SECS through gw2 (local), through gw3 (redirect to gw2) and
#      through gw1, which has cross = "relay" (relayed to gw2).
#
# Everything stays on loopback, is bounded in time, and ends the processes
# it started by pid. Output: bench/results/cluster-<date>.jsonl lines and
# a summary on stderr.
#
#   bench/cluster.sh                 # AGENTS=30000 RUNS=3
#   AGENTS=3000 RUNS=1 bench/cluster.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
source "$bench/lib.sh"
release_bins "$root"
lg=$root/target/release/ringway-loadgen
AGENTS=${AGENTS:-30000}
RUNS=${RUNS:-3}
IDLE_SECS=${IDLE_SECS:-30}
SETUP_SECS=${SETUP_SECS:-10}
RAMP=${RAMP:-2000}
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install -y redis-server" >&2; exit 1; }

work=$(mktemp -d /tmp/ringway-cluster-bench.XXXXXX)
out=$bench/results/cluster-$(date +%Y-%m-%d).jsonl
mkdir -p "$bench/results"
started=()
cleanup() {
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "[cluster] $*" >&2; }
rec() { python3 -c 'import json,sys; print(json.dumps(dict(a.split("=",1) for a in sys.argv[1:])))' "$@" >>"$out"; }
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }

printf 'Testing1-bench-key' >"$work/key"
redis-server --port 0 --unixsocket "$work/redis.sock" --save '' --appendonly no --logfile "$work/redis.log" &
started+=($!)
for _ in $(seq 1 100); do redis-cli -s "$work/redis.sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
cli() { redis-cli -s "$work/redis.sock" "$@"; }

gw_addr=(); admin=(); gw_pid=()
for i in 1 2 3; do
    # A folder each: the state folder (name pins) is the config's.
    mkdir -p "$work/gw$i"
    cross=$([ "$i" = 1 ] && echo relay || echo redirect)
    printf '[gateway]\nlisten = ["127.0.0.%s:0"]\nworkers = 2\ncmpi_secs = 60\nkeys = ["Testing1-bench-key"]\n[limits]\nnew_connections_burst_per_source = 100000\nnew_connections_per_source_per_sec = 100000\n[admin]\nlisten = "127.0.0.1:0"\n[cluster]\nredis = "unix://%s"\nid = "gw%s"\ncross = "%s"\n' \
        "$i" "$work/redis.sock" "$i" "$cross" >"$work/gw$i/gw.toml"
    "$root/target/release/ringway" serve --config "$work/gw$i/gw.toml" 2>"$work/gw$i.err" &
    gw_pid+=($!); started+=($!)
done
for i in 1 2 3; do
    a=
    for _ in $(seq 1 100); do
        a=$(grep -o "Listening on port 127.0.0.$i:[0-9]*" "$work/gw$i.err" | head -1 | sed 's/Listening on port //') || true
        m=$(grep -o 'Admin console on http://[0-9.:]*' "$work/gw$i.err" | head -1 | sed 's|Admin console on http://||') || true
        [ -n "$a" ] && [ -n "$m" ] && break
        sleep 0.1
    done
    [ -n "$a" ] || { cat "$work/gw$i.err" >&2; exit 1; }
    gw_addr+=("$a"); admin+=("$m")
done
for i in 0 1 2; do
    for _ in $(seq 1 100); do
        [ "$(metric "${admin[$i]}" ringway_cluster_gateways_live)" = 3 ] && break
        sleep 0.2
    done
done
log "gateways ${gw_addr[*]}, redis $work/redis.sock"

# 1. The fleet, all dialling gw1, in two load generators (open files).
half=$((AGENTS / 2))
ramp_secs=$(( (half + RAMP - 1) / RAMP ))
hold=$((ramp_secs + 15 + IDLE_SECS + RUNS * (3 * SETUP_SECS + 12) + 20))
for p in 0 1; do
    "$lg" agents --gateway "${gw_addr[0]}" --key-file "$work/key" --count $half --first-index $((p * half)) \
        --ramp $RAMP --duration $hold --source "127.0.$((10 + p)).1-127.0.$((10 + p)).20" \
        --json "$work/fleet-$p.json" >/dev/null 2>"$work/fleet-$p.err" &
    started+=($!)
done
for _ in $(seq 1 $((ramp_secs * 10 + 300))); do
    n=0
    for i in 0 1 2; do n=$((n + $(metric "${admin[$i]}" ringway_agents_licensed_in_use))); done
    [ "$n" -ge "$AGENTS" ] && break
    sleep 0.1
done
held=()
for i in 0 1 2; do held+=("$(metric "${admin[$i]}" ringway_agents_licensed_in_use)"); done
log "fleet: ${held[*]} (gw1 gw2 gw3) of $AGENTS; redirected by gw1: $(curl -s "http://${admin[0]}/metrics" | awk '/^ringway_cluster_redirects_total\{kind="agent"\}/ {print $2}')"
rec step=spread agents=$AGENTS gw1=${held[0]} gw2=${held[1]} gw3=${held[2]} ramp_per_sec=$RAMP

# 2. Steady state: every agent idle.
sleep 5
c0=$(cli info stats | awk -F: '/^total_commands_processed/ {print $2}' | tr -d '\r')
o0=(); for i in 0 1 2; do o0+=("$(metric "${admin[$i]}" ringway_cluster_redis_ops_total)"); done
sleep "$IDLE_SECS"
c1=$(cli info stats | awk -F: '/^total_commands_processed/ {print $2}' | tr -d '\r')
o1=(); for i in 0 1 2; do o1+=("$(metric "${admin[$i]}" ringway_cluster_redis_ops_total)"); done
per_sec=$(python3 -c "print(round(($c1 - $c0) / $IDLE_SECS, 2))")
per_agent=$(python3 -c "print('%.2e' % (($c1 - $c0) / $IDLE_SECS / $AGENTS))")
ours=$(python3 -c "print(round(sum(b - a for a, b in zip([$(IFS=,; echo "${o0[*]}")], [$(IFS=,; echo "${o1[*]}")])) / $IDLE_SECS, 2))")
log "steady state: Redis $per_sec commands/s for $AGENTS idle agents ($per_agent per agent per s); gateways sent $ours ops/s"
rec step=steady agents=$AGENTS secs=$IDLE_SECS redis_commands_per_sec=$per_sec per_agent_per_sec=$per_agent gateway_ops_per_sec=$ours

# 3. Session setup to 100 agents on gw2: through gw2, and through gw1 (redirect).
"$lg" agents --gateway "${gw_addr[1]}" --key-file "$work/key" --count 100 --prefix x- \
    --duration $((RUNS * (3 * SETUP_SECS + 12) + 10)) --json "$work/x.json" >/dev/null 2>"$work/x.err" &
started+=($!)
sleep 3
for r in $(seq 1 "$RUNS"); do
    for via in 1 2 0; do
        case=$(case $via in 1) echo local-gw2 ;; 2) echo redirect-gw3-to-gw2 ;; 0) echo relay-gw1-to-gw2 ;; esac)
        j=$work/setup-$case-$r.json
        "$lg" controls --gateway "${gw_addr[$via]}" --key-file "$work/key" --count 4 --agents-prefix x- \
            --pattern pingpong --per-session 1 --duration "$SETUP_SECS" --json "$j" >/dev/null 2>"$work/c.err"
        v=$(jget "$j" '"%s %s %s %s" % (d["controls"]["sessions_per_sec"], d["latency_us"]["session_setup"]["p50"], d["latency_us"]["session_setup"]["p99"], d["errors"]["total"])')
        set -- $v
        rec step=setup case=$case run=$r sessions_per_sec=$1 setup_p50_us=$2 setup_p99_us=$3 errors=$4
        log "setup $case run $r: $1 sessions/s, p50 $2 us, p99 $3 us, errors $4"
        sleep 2
    done
done
log "results in $out"
