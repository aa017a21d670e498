#!/usr/bin/env bash
# Soak: one release gateway under 15,000 idle agents (1 % of them hanging up
# and registering again every minute) and 200 busy echo sessions, with a
# `ringway reload` every minute, for SOAK_SECS. Every 10 s it samples the
# gateway's RSS, open descriptors and open connections, and the sessions'
# echo mismatches, into a CSV; at the end bench/soak_report.py plots them,
# checks that RSS and descriptors stay flat and that no echo ever differed,
# and writes the soak section of bench/README.md.
#
#   idle   3 x `ringway-loadgen agents --count 5000 --churn 1`, each from
#          10 source addresses of its own (127.0.0.2-31): 5,000 sockets per
#          process, well inside the 20,000 open files a process may have
#   busy   `ringway-loadgen mixed --agents 200 --controls 200 --pattern
#          pingpong --size 4096 --rate 10 --per-session 300`: each control
#          keeps a session to its own agent, 10 round trips of 4 KiB a
#          second, each echo compared byte for byte, and opens a fresh
#          session every 30 s. Another key than the idle agents', so a
#          browse lists 200 agents, not 15,200.
#   reload every 60 s the config is rewritten with a new third key (the
#          previous one removed) and `ringway reload` applies it
#
# Every process it starts is stopped by its pid. Heavy: run nothing else
# meanwhile.
#
# Usage: bench/soak.sh    (env: SOAK_SECS=3600 IDLE_AGENTS=15000 BUSY=200
#                          SAMPLE_SECS=10 RELOAD_SECS=60 WARMUP_SECS=120
#                          SKIP_INSTALL=1 SKIP_BUILD=1)
# Output: bench/results/soak-<date>.csv, .json (the loadgens' summaries),
#         bench/soak-<date>.png, and bench/README.md's soak section.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
SOAK_SECS=${SOAK_SECS:-3600}
IDLE_AGENTS=${IDLE_AGENTS:-15000}
BUSY=${BUSY:-200}
SAMPLE_SECS=${SAMPLE_SECS:-10}
RELOAD_SECS=${RELOAD_SECS:-60}
WARMUP_SECS=${WARMUP_SECS:-120}
# Idle agents per load generator process, and the source addresses each
# dials from: 10 addresses give ~280,000 ephemeral ports, far more than
# 5,000 agents and their churn's TIME_WAITs need.
IDLE_PROCS=3
SOURCES_PER_PROC=10
# The load generators run this much past the sampling, so their last
# figures are taken while everything is still up.
LOADGEN_SLACK=20
# The busy sessions: 4 KiB messages, 10 round trips a second each, a new
# session after 300 of them (30 s).
BUSY_SIZE=4096
BUSY_RATE=10
BUSY_PER_SESSION=300
CHURN_PERCENT=1

date_tag=$(date -u +%Y-%m-%d)
results=$bench/results
csv=$results/soak-$date_tag.csv
work=$(mktemp -d /tmp/ringway-soak.XXXXXX)
mkdir -p "$results"
started=()   # every pid this script started

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

cleanup() {
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${started[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

if [ -z "${SKIP_INSTALL:-}" ]; then
    command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-pip; }
    python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib \
        || log "matplotlib could not be installed (pip install matplotlib): no plot"
fi
if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release -p ringway -p ringway-loadgen"
    (cd "$root" && cargo build --release -p ringway -p ringway-loadgen) >"$work/build.log" 2>&1 \
        || { cat "$work/build.log" >&2; exit 1; }
fi
rw=$root/target/release/ringway
lg=$root/target/release/ringway-loadgen
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt 20000 ]; then
    log "the open-file limit is $(ulimit -n); the soak needs 20,000 (ulimit -Hn)"; exit 1
fi

idle_key=soak-idle-$RANDOM$RANDOM
busy_key=soak-busy-$RANDOM$RANDOM
printf '%s' "$idle_key" > "$work/idle.key"
printf '%s' "$busy_key" > "$work/busy.key"

# write_config N: the gateway's config with the Nth rotating key.
write_config() {
    printf '[gateway]\nlisten = ["127.0.0.1:0"]\nworkers = 2\nkeys = ["%s", "%s", "soak-rotating-%s"]\n[admin]\nlisten = "127.0.0.1:0"\n' \
        "$idle_key" "$busy_key" "$1" > "$work/gw.tmp"
    mv "$work/gw.tmp" "$work/gw.toml"
}
write_config 0
RUST_LOG=info "$rw" serve --config "$work/gw.toml" 2> "$work/gw.err" &
gw_pid=$!
started+=("$gw_pid")
gw_addr=; admin=
for _ in $(seq 1 100); do
    gw_addr=$(grep -o 'Listening on port 127.0.0.1:[0-9]*' "$work/gw.err" | head -1 | sed 's/Listening on port //')
    admin=$(grep -o 'Admin console on http://127.0.0.1:[0-9]*' "$work/gw.err" | head -1 | sed 's|.*http://||')
    [ -n "$gw_addr" ] && [ -n "$admin" ] && break
    sleep 0.1
done
if [ -z "$gw_addr" ] || [ -z "$admin" ]; then
    log "the gateway did not start:"; cat "$work/gw.err" >&2; exit 1
fi
log "gateway pid $gw_pid on $gw_addr, admin $admin"

run_secs=$((SOAK_SECS + LOADGEN_SLACK))
per_proc=$((IDLE_AGENTS / IDLE_PROCS))
for i in $(seq 0 $((IDLE_PROCS - 1))); do
    first=$((2 + i * SOURCES_PER_PROC)); last=$((first + SOURCES_PER_PROC - 1))
    "$lg" agents --gateway "$gw_addr" --key-file "$work/idle.key" --prefix idle- \
        --count "$per_proc" --first-index $((i * per_proc)) --source "127.0.0.$first-127.0.0.$last" \
        --ramp 500 --churn "$CHURN_PERCENT" --duration "$run_secs" \
        --live-json "$work/idle-$i.live.json" --json "$work/idle-$i.json" > "$work/idle-$i.out" 2> "$work/idle-$i.err" &
    started+=("$!")
done
busy_first=$((2 + IDLE_PROCS * SOURCES_PER_PROC))
"$lg" mixed --gateway "$gw_addr" --key-file "$work/busy.key" --prefix busy- --control-prefix busyc- \
    --agents "$BUSY" --controls "$BUSY" --source "127.0.0.$busy_first-127.0.0.$((busy_first + 3))" \
    --pattern pingpong --size "$BUSY_SIZE" --rate "$BUSY_RATE" --per-session "$BUSY_PER_SESSION" \
    --duration "$run_secs" --live-json "$work/busy.live.json" --json "$work/busy.json" \
    > "$work/busy.out" 2> "$work/busy.err" &
started+=("$!")
loadgens=("${started[@]:1}")

# sample T RELOADS: one CSV row from /proc, /metrics and the live summaries.
sample() {
    python3 - "$gw_pid" "$admin" "$work" "$1" "$2" <<'EOF' >> "$csv"
import glob, json, os, sys, urllib.request
pid, admin, work, t, reloads = sys.argv[1:]
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
fds = len(os.listdir(f"/proc/{pid}/fd"))
try:
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    conns = next(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith("ringway_connections_open"))
except Exception:
    conns = -1
up = churned = errors = completed = mismatches = 0
for f in glob.glob(f"{work}/*.live.json"):
    try:
        s = json.load(open(f))
    except (OSError, ValueError):
        continue
    up += s["agents"]["up_at_end"]
    churned += s["agents"]["churned"]
    errors += s["errors"]["total"]
    completed += s["controls"]["sessions_completed"]
    mismatches += s["controls"]["mismatches"]
print(f"{t},{rss},{fds},{conns},{up},{churned},{completed},{mismatches},{errors},{reloads}")
EOF
}

echo "t_secs,rss_kib,fds,connections_open,agents_up,churned,sessions_completed,mismatches,errors,reloads" > "$csv"
setup="\`SOAK_SECS=$SOAK_SECS\`: $IDLE_AGENTS idle agents in $IDLE_PROCS load generators ($CHURN_PERCENT % churn a minute), $BUSY ping-pong sessions of $BUSY_SIZE B at $BUSY_RATE round trips/s each (a new session every $((BUSY_PER_SESSION / BUSY_RATE)) s), a reload every $RELOAD_SECS s; samples every $SAMPLE_SECS s, warm-up $WARMUP_SECS s"
log "soak: ${setup//\`/}; samples to $csv"
start=$(date +%s)
reloads=0; reload_failures=0; next_reload=$RELOAD_SECS
for t in $(seq "$SAMPLE_SECS" "$SAMPLE_SECS" "$SOAK_SECS"); do
    wait_for=$((start + t - $(date +%s)))
    [ "$wait_for" -gt 0 ] && sleep "$wait_for"
    if ! kill -0 "$gw_pid" 2>/dev/null; then log "the gateway died:"; tail -20 "$work/gw.err" >&2; exit 1; fi
    if [ "$t" -ge "$next_reload" ]; then
        write_config $((t / RELOAD_SECS))
        if "$rw" reload --admin "$admin" > "$work/reload.out" 2>&1; then
            reloads=$((reloads + 1))
        else
            reload_failures=$((reload_failures + 1)); log "reload failed: $(cat "$work/reload.out")"
        fi
        next_reload=$((next_reload + RELOAD_SECS))
    fi
    sample "$t" "$reloads"
    tail -1 "$csv" | awk -F, '{printf "[%5ss] rss %d KiB, fds %d, connections %d, agents %d, churned %d, sessions %d, mismatches %d, errors %d, reloads %d\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}' >&2
done

log "waiting for the load generators' final summaries"
for p in "${loadgens[@]}"; do wait "$p" || log "load generator $p exited with $?"; done
python3 - "$work" > "$results/soak-$date_tag.json" <<'EOF'
import glob, json, os, sys
print(json.dumps({os.path.basename(f): json.load(open(f)) for f in sorted(glob.glob(f"{sys.argv[1]}/*.json"))
                  if not f.endswith(".live.json")}, indent=1))
EOF
grep -c 'Configuration reloaded' "$work/gw.err" > "$work/reloaded.count" || true
python3 "$bench/soak_report.py" --csv "$csv" --summaries "$results/soak-$date_tag.json" \
    --png "$bench/soak-$date_tag.png" --readme "$bench/README.md" --warmup "$WARMUP_SECS" \
    --reloads "$reloads" --reload-failures "$reload_failures" --reloaded-events "$(cat "$work/reloaded.count")" \
    --commit "$(cd "$root" && git rev-parse --short HEAD)" --setup "$setup" \
    --title "soak $date_tag: $IDLE_AGENTS idle agents + $BUSY busy sessions, $((SOAK_SECS / 60)) min"
status=$?
if [ "$status" = 0 ]; then rm -rf "$work"; else log "kept $work (gateway and load generator logs)"; fi
exit $status
