#!/usr/bin/env bash
# Issue 10: a wrong password, an unknown operator and a locked one must
# get the same answer in the same time (no timing oracle). Signs in N
# times each way against one gateway and prints the medians of the
# refusals' latency; the answers themselves are checked by
# tests/operators.rs.
#
#   bench/signin_timing.sh      env: N=200 RATE=50 SKIP_BUILD=0
set -euo pipefail
bench=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$bench")
. "$bench/lib.sh"
N=${N:-200}
RATE=${RATE:-50}
release_bins "$root"

work=$(mktemp -d)
gw_pid=
cleanup() {
    [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "Testing1-bench-key" > "$work/key"
for who in bob carol; do
    RINGWAY_PASSWORD="$who's right password" "$rw" operator add $who >> "$work/operators.toml" 2>/dev/null
done
verifier() { awk -v n="name = \"$1\"" '$0==n {f=1} f && /^verifier/ {print; exit}' "$work/operators.toml" | sed 's/^verifier = "\(.*\)"$/\1/'; }
{
    printf '[gateway]\nlisten = ["127.0.0.1:0"]\nworkers = 1\nkeys = ["Testing1-bench-key"]\n'
    printf '[auth]\ntotp = "off"\nlockout_after = 100\n'
    cat "$work/operators.toml"
} > "$work/gw.toml"
"$rw" serve --config "$work/gw.toml" 2> "$work/gw.err" &
gw_pid=$!
gw=$(listen_addr "$work/gw.err")
secs=$(( (N + RATE - 1) / RATE ))

# attempt LABEL USER PASSWORD VERIFIER_OF NET: N sign-ins from 127.NET.0.1-200.
attempt() {
    RINGWAY_PASSWORD=$3 "$sg" --gateway "$gw" --key-file "$work/key" --user "$2" --verifier "$(verifier "$4")" \
        --rate "$RATE" --duration "$secs" --source "127.$5.0.1-127.$5.0.200" > "$work/$1.json"
    echo "[timing] $1: $(cat "$work/$1.json")" >&2
}
attempt wrong_user mallory "anything at all" bob 10
attempt wrong_password bob "not bob's password" bob 11
# carol: 100 wrong passwords lock her; then her right one is refused too.
attempt locking carol "not carol's password" carol 12
attempt locked carol "carol's right password" carol 13
python3 - "$work" <<'PY'
import json, sys
d = {k: json.load(open(f"{sys.argv[1]}/{k}.json")) for k in ("wrong_user", "wrong_password", "locked")}
out = {k: {"refused": v["refused"], "ok": v["ok"], "p50_us": v["refused_latency_us"]["p50"],
           "p99_us": v["refused_latency_us"]["p99"]} for k, v in d.items()}
base = out["wrong_password"]["p50_us"]
for v in out.values():
    v["p50_vs_wrong_password"] = round(v["p50_us"] / base, 3) if base else None
print(json.dumps(out, indent=1))
PY
