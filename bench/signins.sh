#!/usr/bin/env bash
# Issue 10's benchmark: do 100 operator sign-ins a second raise the p99
# round trip of a busy session on the same worker by more than 10 %?
#
# One gateway worker (so the sign-ins and the session share its event
# loop), an operator made by `ringway operator add`, a session opened with
# the real `ringway control login` + `control connect --listen` to an
# agent exposing pingpong.py's echo; pingpong.py times RTT_COUNT 64-byte
# round trips through it, alone and while ringway-signins signs in RATE
# times a second from 200 source addresses (127.R.0.1-200, fresh ones per
# run, since each address gets 20 sign-ins and then 10 a minute). RUNS of
# each, alternating.
#
#   bench/signins.sh            env: RUNS=3 RATE=100 SECS=12 RTT_COUNT=20000 SKIP_BUILD=0
set -euo pipefail
bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
. "$bench/lib.sh"
RUNS=${RUNS:-3}
RATE=${RATE:-100}
SECS=${SECS:-12}
RTT_COUNT=${RTT_COUNT:-20000}
release_bins "$root"

work=$(mktemp -d)
started=()
cleanup() {
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "[signins] $*" >&2; }

password='a bench operator password'
echo "Testing1-bench-key" > "$work/key"
RINGWAY_PASSWORD=$password "$rw" operator add alice > "$work/operator.toml" 2>/dev/null
verifier=$(sed -n 's/^verifier = "\(.*\)"$/\1/p' "$work/operator.toml")
{
    printf '[gateway]\nlisten = ["127.0.0.1:0"]\nworkers = 1\nkeys = ["Testing1-bench-key"]\n[auth]\ntotp = "off"\n'
    cat "$work/operator.toml"
} > "$work/gw.toml"
"$rw" serve --config "$work/gw.toml" 2> "$work/gw.err" &
started+=($!)
gw=$(listen_addr "$work/gw.err")

echo_port=$(python3 "$bench/pingpong.py" freeport)
python3 "$bench/pingpong.py" echo "$echo_port" &
started+=($!)
"$rw" agent --gateway "$gw" --key-file "$work/key" --name pc1 --expose "127.0.0.1:$echo_port" 2> "$work/agent.err" &
started+=($!)
export XDG_CONFIG_HOME=$work/home
for _ in $(seq 1 100); do grep -q "Client pc1 connected" "$work/gw.err" && break; sleep 0.1; done
RINGWAY_PASSWORD=$password "$rw" control login --gateway "$gw" --key-file "$work/key" --user alice --as ops 2> "$work/login.err"
lport=$(python3 "$bench/pingpong.py" freeport)
"$rw" control connect pc1 --gateway "$gw" --key-file "$work/key" --listen "127.0.0.1:$lport" 2> "$work/connect.err" &
started+=($!)
for _ in $(seq 1 100); do python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$lport)).close()" 2>/dev/null && break; sleep 0.1; done

results=$work/results.txt
for r in $(seq 1 "$RUNS"); do
    quiet=$(python3 "$bench/pingpong.py" rtt "$lport" "$RTT_COUNT" 64 /dev/null)
    RINGWAY_PASSWORD=$password "$sg" --gateway "$gw" --key-file "$work/key" --user alice --verifier "$verifier" \
        --rate "$RATE" --duration "$SECS" --source "127.$r.0.1-127.$r.0.200" > "$work/sg.json" 2> "$work/sg.err" &
    sp=$!
    started+=($sp)
    sleep 1
    loaded=$(python3 "$bench/pingpong.py" rtt "$lport" "$RTT_COUNT" 64 /dev/null)
    wait $sp || true
    signins=$(cat "$work/sg.json")
    log "run $r: quiet $quiet"
    log "run $r: loaded $loaded"
    log "run $r: sign-ins $signins"
    echo "$quiet|$loaded|$signins" >> "$results"
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1])]
q = [json.loads(a) for a, _, _ in rows]
l = [json.loads(b) for _, b, _ in rows]
s = [json.loads(c) for _, _, c in rows]
med = lambda xs: statistics.median(xs)
qp99, lp99 = med([x["p99_us"] for x in q]), med([x["p99_us"] for x in l])
print(json.dumps({
    "runs": len(rows),
    "quiet": {"p50_us": med([x["p50_us"] for x in q]), "p99_us": qp99},
    "with_signins": {"p50_us": med([x["p50_us"] for x in l]), "p99_us": lp99},
    "p99_ratio": round(lp99 / qp99, 3),
    "signins": {"rate_per_sec": round(med([x["ok"] / x["secs"] for x in s]), 1),
                "ok": [x["ok"] for x in s], "refused": [x["refused"] for x in s], "errors": [x["errors"] for x in s],
                "latency_p50_us": med([x["latency_us"]["p50"] for x in s]),
                "latency_p99_us": med([x["latency_us"]["p99"] for x in s])},
}, indent=1))
PY
