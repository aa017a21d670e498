#!/usr/bin/env bash
# ringway against its peers on one machine, loopback only.
#
#   W1 bulk     iperf3 one stream: direct, haproxy (copy, splice), socat,
#               ringway agent+gateway+control, rathole server+client;
#               and loadgen bulk through the gateway alone (one hop)
#   W2 latency  64 B sequential round trips (bench/pingpong.py) through each;
#               loadgen pingpong through the gateway alone
#   W3 idle     15,000 loadgen agents: plain at CMPI 60 and 5, TLS at CMPI 60
#   W4 setup    sessions/s with 1,000 agents; connect+first echo via peers
#   W5 TLS      W1 and W2 with TLS on both ringway legs vs a haproxy chain
#               with two TLS links
#
# Every process it starts is killed by its pid. Raw records go to
# $work/records.jsonl, then bench/report.py writes bench/results/<date>.json,
# the PNG plots and the table in bench/README.md.
#
# Usage: bench/run.sh            (env: RUNS=3 W1_SECS=10 RTT_COUNT=20000
#                                 SETUP_COUNT=1000 W3_AGENTS=15000 SKIP_INSTALL=1
#                                 ONLY="W1 W2 W3 W4 W5")
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/bench
. "$bench/lib.sh"
date_tag=$(date -u +%Y-%m-%d)
RUNS=${RUNS:-3}
W1_SECS=${W1_SECS:-10}
RTT_COUNT=${RTT_COUNT:-20000}
SETUP_COUNT=${SETUP_COUNT:-1000}
W3_AGENTS=${W3_AGENTS:-15000}
ONLY=${ONLY:-"W1 W2 W3 W4 W5"}
work=$(mktemp -d /tmp/ringway-bench.XXXXXX)
records=$work/records.jsonl
raw=$bench/results/$date_tag/peers
mkdir -p "$raw/samples"
: > "$records"
started=()   # every pid this script started

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

stop_pid() {
    local p=$1
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
cleanup() {
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    for p in "${started[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# ---------------------------------------------------------------- install
install_deps() {
    local need=()
    for c in haproxy socat iperf3 python3; do command -v $c >/dev/null || need+=($c); done
    command -v ss >/dev/null || need+=(iproute2)
    if [ ${#need[@]} -gt 0 ]; then
        log "apt-get install ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    fi
    python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib \
        || log "matplotlib could not be installed: no plots"
    export PATH=$PATH:$HOME/.cargo/bin
    if ! command -v rathole >/dev/null; then
        if pgrep -f 'cargo install rathole' >/dev/null; then
            log "rathole is still being installed elsewhere: its cases are reported missing"
        else
            log "cargo install rathole"
            cargo install rathole >"$work/rathole-install.log" 2>&1 \
                || log "cargo install rathole failed: its cases are reported missing"
        fi
    fi
}
if [ -z "${SKIP_INSTALL:-}" ]; then install_deps; fi
export PATH=$PATH:$HOME/.cargo/bin
have_rathole=0; command -v rathole >/dev/null && have_rathole=1

log "cargo build --release"
(cd "$root" && cargo build --release -p ringway -p ringway-loadgen) >"$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; exit 1; }
rw=$root/target/release/ringway
lg=$root/target/release/ringway-loadgen
ulimit -n "$(ulimit -Hn)"

echo -n 'Testing1-bench-key' > "$work/key"
export RINGWAY_KEY=Testing1-bench-key
"$rw" gen-cert --host 127.0.0.1 --out "$work/certs" >/dev/null 2>&1
cat "$work/certs/cert.pem" "$work/certs/key.pem" > "$work/certs/haproxy.pem"
tick=$(getconf CLK_TCK)

# ---------------------------------------------------------------- helpers
freeport() { python3 "$bench/pingpong.py" freeport; }

# cpu_secs PID...: utime+stime+cutime+cstime summed (children: socat's forks).
cpu_secs() {
    local t=0 p v
    for p in "$@"; do
        v=$(sed 's/^.*) //' /proc/$p/stat 2>/dev/null | awk '{print $12+$13+$14+$15}')
        t=$((t + ${v:-0}))
    done
    awk -v t=$t -v k=$tick 'BEGIN{printf "%.3f", t/k}'
}
rss_kib() { awk '/VmRSS/{print $2}' /proc/$1/status; }

wait_listen() {
    for _ in $(seq 1 100); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.1
    done
    log "nothing listens on $1"; return 1
}

# rec KEY=VALUE...: one JSON record (numbers stay numbers).
rec() { python3 - "$@" >>"$records" <<'EOF'
import json, sys
r = {}
for kv in sys.argv[1:]:
    k, _, v = kv.partition("=")
    try:
        r[k] = json.loads(v)
    except ValueError:
        r[k] = v
print(json.dumps(r))
EOF
}
# jq-less JSON field: jget FILE 'd["a"]["b"]'
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }

# start_gateway TLS(0|1) CMPI: sets gw_pid, gw_addr (plain host:port), gw_url.
start_gateway() {
    {
        printf '[gateway]\nlisten = ["127.0.0.1:0"]\nworkers = 2\ncmpi_secs = %s\nkeys = ["Testing1-bench-key"]\n' "$2"
        if [ "$1" = 1 ]; then
            printf '[tls]\ncert = "%s"\nkey = "%s"\n' "$work/certs/cert.pem" "$work/certs/key.pem"
        fi
    } > "$work/gw.toml"
    "$rw" serve --config "$work/gw.toml" 2> "$work/gw.err" &
    gw_pid=$!; started+=($gw_pid)
    gw_addr=$(listen_addr "$work/gw.err") || exit 1
    if [ "$1" = 1 ]; then
        gw_url=https://$gw_addr; tls_args=(--ca-file "$work/certs/ca.pem")
    else
        gw_url=$gw_addr; tls_args=()
    fi
}

haproxy_defaults() {
    printf 'global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 120s\n  timeout server 120s\n'
}

# start_relay CASE TARGET_PORT: sets relay_port and relay_pids (the relay's
# processes, whose CPU is counted). Returns 2 when the case is unavailable.
start_relay() {
    local case=$1 target=$2
    relay_pids=()
    relay_port=$(freeport)
    case $case in
    direct)
        relay_port=$target ;;
    haproxy-copy | haproxy-splice)
        {
            haproxy_defaults
            printf 'listen l\n  bind 127.0.0.1:%s\n' "$relay_port"
            [ $case = haproxy-splice ] && printf '  option splice-request\n  option splice-response\n'
            printf '  server s 127.0.0.1:%s\n' "$target"
        } > "$work/hap.cfg"
        haproxy -f "$work/hap.cfg" -db 2>"$work/hap.err" &
        relay_pids=($!) ;;
    haproxy-tls)
        # plain -> [a] =TLS=> [b] =TLS=> [c] -> plain: two TLS links, three
        # proxies (one haproxy process), as agent/gateway/control.
        local p2 p3; p2=$(freeport); p3=$(freeport)
        {
            haproxy_defaults
            printf 'listen a\n  bind 127.0.0.1:%s\n  server s 127.0.0.1:%s ssl verify none\n' "$relay_port" "$p2"
            printf 'listen b\n  bind 127.0.0.1:%s ssl crt %s\n  server s 127.0.0.1:%s ssl verify none\n' "$p2" "$work/certs/haproxy.pem" "$p3"
            printf 'listen c\n  bind 127.0.0.1:%s ssl crt %s\n  server s 127.0.0.1:%s\n' "$p3" "$work/certs/haproxy.pem" "$target"
        } > "$work/hap.cfg"
        haproxy -f "$work/hap.cfg" -db 2>"$work/hap.err" &
        relay_pids=($!) ;;
    socat)
        socat TCP-LISTEN:$relay_port,bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:$target &
        relay_pids=($!) ;;
    ringway | ringway-tls)
        local tls=0; [ $case = ringway-tls ] && tls=1
        start_gateway $tls 60
        local name=bench-$RANDOM
        "$rw" agent --gateway "$gw_url" "${tls_args[@]}" --key-file "$work/key" --name $name \
            --expose 127.0.0.1:$target 2>"$work/agent.err" &
        local ap=$!; started+=($ap)
        for _ in $(seq 1 50); do
            "$rw" control ls --gateway "$gw_url" "${tls_args[@]}" --key-file "$work/key" 2>/dev/null \
                | grep -q $name && break
            sleep 0.1
        done
        "$rw" control connect $name --gateway "$gw_url" "${tls_args[@]}" --key-file "$work/key" \
            --as bench --listen 127.0.0.1:$relay_port 2>"$work/control.err" &
        relay_pids=($gw_pid $ap $!) ;;
    rathole)
        [ $have_rathole = 1 ] || return 2
        local rp; rp=$(freeport)
        printf '[server]\nbind_addr = "127.0.0.1:%s"\n[server.services.s]\ntoken = "bench-token"\nbind_addr = "127.0.0.1:%s"\n' \
            "$rp" "$relay_port" > "$work/rh-server.toml"
        printf '[client]\nremote_addr = "127.0.0.1:%s"\n[client.services.s]\ntoken = "bench-token"\nlocal_addr = "127.0.0.1:%s"\n' \
            "$rp" "$target" > "$work/rh-client.toml"
        RUST_LOG=warn rathole --server "$work/rh-server.toml" 2>"$work/rh-server.err" &
        local sp=$!; started+=($sp)
        wait_listen $rp || return 1
        RUST_LOG=warn rathole --client "$work/rh-client.toml" 2>"$work/rh-client.err" &
        relay_pids=($sp $!) ;;
    esac
    started+=("${relay_pids[@]}")
    wait_listen $relay_port || return 1
    sleep 0.3
    return 0
}
stop_relay() {
    local p
    for p in "${relay_pids[@]}"; do stop_pid $p; done
    relay_pids=()
}

# ---------------------------------------------------------------- targets
iperf_port=$(freeport)
iperf3 -s -p $iperf_port -B 127.0.0.1 >"$work/iperf-server.log" 2>&1 &
started+=($!)
echo_port=$(freeport)
python3 "$bench/pingpong.py" echo $echo_port &
started+=($!)
wait_listen $iperf_port && wait_listen $echo_port || exit 1

procs_of() {
    case $1 in
    direct) echo 0 ;; haproxy-* | socat) echo 1 ;; ringway | ringway-tls) echo 3 ;; rathole) echo 2 ;;
    esac
}

# bulk CASE WORKLOAD: RUNS iperf3 runs through one relay instance.
bulk() {
    local case=$1 w=$2 r out c0 c1
    start_relay $case $iperf_port; local st=$?
    if [ $st = 2 ]; then rec workload=$w case=$case status=missing; log "$w $case: missing"; return; fi
    if [ $st != 0 ]; then rec workload=$w case=$case status=failed; stop_relay; return; fi
    for r in $(seq 1 $RUNS); do
        out=$raw/iperf-$w-$case-$r.json
        c0=$(cpu_secs "${relay_pids[@]}")
        iperf3 -c 127.0.0.1 -p $relay_port -t $W1_SECS -J > "$out" 2>"$work/iperf.err"
        sleep 0.3   # socat's forked children are reaped into cutime
        c1=$(cpu_secs "${relay_pids[@]}")
        local gbps bytes
        gbps=$(jget "$out" 'd["end"]["sum_received"]["bits_per_second"]/1e9' 2>/dev/null) || gbps=null
        bytes=$(jget "$out" 'd["end"]["sum_received"]["bytes"]' 2>/dev/null) || bytes=0
        local cpu; cpu=$(awk -v a=$c0 -v b=$c1 'BEGIN{printf "%.3f", b-a}')
        local per_gb; per_gb=$(awk -v c=$cpu -v b=$bytes 'BEGIN{ if (b>0) printf "%.4f", c/(b/1e9); else print "null"}')
        rec workload=$w case=$case run=$r gbps=$gbps bytes=$bytes relay_cpu_secs=$cpu \
            cpu_secs_per_gb=$per_gb relay_processes=$(procs_of $case) secs=$W1_SECS
        log "$w $case run $r: $gbps Gbit/s, $per_gb CPU-s/GB"
    done
    stop_relay
}

# latency CASE WORKLOAD: RUNS x RTT_COUNT round trips, then SETUP_COUNT setups.
latency() {
    local case=$1 w=$2 r out c0 c1
    start_relay $case $echo_port; local st=$?
    if [ $st = 2 ]; then rec workload=$w case=$case status=missing; return; fi
    if [ $st != 0 ]; then rec workload=$w case=$case status=failed; stop_relay; return; fi
    for r in $(seq 1 $RUNS); do
        c0=$(cpu_secs "${relay_pids[@]}")
        out=$(python3 "$bench/pingpong.py" rtt $relay_port $RTT_COUNT 64 "$raw/samples/$w-$case-$r.txt") || out='{}'
        c1=$(cpu_secs "${relay_pids[@]}")
        local cpu_us; cpu_us=$(awk -v a=$c0 -v b=$c1 -v n=$((RTT_COUNT + 200)) 'BEGIN{printf "%.2f", (b-a)*1e6/n}')
        rec workload=$w case=$case run=$r rtt="$out" relay_cpu_us_per_rtt=$cpu_us \
            relay_processes=$(procs_of $case)
        log "$w $case run $r: $out cpu/rtt ${cpu_us}us"
    done
    if [ $w = W2 ]; then
        for r in $(seq 1 $RUNS); do
            out=$(python3 "$bench/pingpong.py" setup $relay_port $SETUP_COUNT) || out='{}'
            rec workload=W4 case=$case run=$r setup="$out"
            log "W4 $case run $r: $out"
        done
    fi
    stop_relay
}

# gateway_only TLS: loadgen agents + loadgen controls through the gateway
# alone (bulk, then pingpong), RUNS each.
gateway_only() {
    local tls=$1 w1=W1 w2=W2 sfx=""
    [ $tls = 1 ] && { w1=W5-bulk; w2=W5-rtt; sfx=-tls; }
    start_gateway $tls 60
    local r pat
    for pat in bulk pingpong; do
        for r in $(seq 1 $RUNS); do
            "$lg" agents --gateway "$gw_url" "${tls_args[@]}" --key-file "$work/key" --count 1 \
                --duration $((W1_SECS + 4)) >/dev/null 2>"$work/lg-agents.err" &
            local ap=$!; started+=($ap)
            sleep 1
            local out=$raw/loadgen-$pat$sfx-$r.json
            local size=64; [ $pat = bulk ] && size=65536
            "$lg" controls --gateway "$gw_url" "${tls_args[@]}" --key-file "$work/key" --count 1 \
                --pattern $pat --size $size --per-session 0 --duration $W1_SECS \
                --gateway-pid $gw_pid --json "$out" >/dev/null 2>"$work/lg-controls.err"
            stop_pid $ap
            if [ $pat = bulk ]; then
                local v; v=$(jget "$out" '"%s %s %s" % (d["controls"]["bytes_received"], d["gateway_process"]["cpu_secs_used"], d["duration_secs"])')
                set -- $v
                local gbps per_gb
                gbps=$(awk -v b=$1 -v s=$3 'BEGIN{printf "%.3f", b*8/s/1e9}')
                # the gateway relays each byte twice (there and echoed back)
                per_gb=$(awk -v c=$2 -v b=$1 'BEGIN{ if (b>0) printf "%.4f", c/(2*b/1e9); else print "null"}')
                rec workload=$w1 case=ringway-1hop-loadgen$sfx run=$r gbps=$gbps bytes=$1 \
                    relay_cpu_secs=$2 cpu_secs_per_gb=$per_gb relay_processes=1 secs=$3 \
                    note="one way; gateway relays 2x bytes (echo); CPU/GB over both directions"
                log "$w1 1hop$sfx run $r: $gbps Gbit/s each way, $per_gb CPU-s/GB"
            else
                local v; v=$(jget "$out" '"%s %s %s %s" % (d["latency_us"]["round_trip"]["p50"], d["latency_us"]["round_trip"]["p99"], d["controls"]["round_trips"], d["gateway_process"]["cpu_secs_used"])')
                set -- $v
                local cpu_us; cpu_us=$(awk -v c=$4 -v n=$3 'BEGIN{ if (n>0) printf "%.2f", c*1e6/n; else print "null"}')
                rec workload=$w2 case=ringway-1hop-loadgen$sfx run=$r \
                    rtt="{\"p50_us\": $1, \"p99_us\": $2, \"count\": $3}" relay_cpu_us_per_rtt=$cpu_us relay_processes=1
                log "$w2 1hop$sfx run $r: p50 $1 p99 $2 us, $cpu_us us CPU/rtt"
            fi
        done
    done
    stop_pid $gw_pid
}

# ---------------------------------------------------------------- W1, W2
peers="direct haproxy-copy haproxy-splice socat ringway rathole"
if [[ $ONLY == *W1* ]]; then
    log "== W1 bulk, ${W1_SECS}s per run, $RUNS runs"
    for c in $peers; do bulk $c W1; done
    gateway_only 0
fi
if [[ $ONLY == *W2* ]]; then
    log "== W2 latency, $RTT_COUNT round trips, $RUNS runs (+W4 setup through peers)"
    for c in $peers; do latency $c W2; done
    [[ $ONLY == *W1* ]] || gateway_only 0
fi

# ---------------------------------------------------------------- W5 TLS
if [[ $ONLY == *W5* ]]; then
    log "== W5 TLS"
    for c in direct haproxy-tls ringway-tls; do bulk $c W5-bulk; done
    for c in direct haproxy-tls ringway-tls; do latency $c W5-rtt; done
    gateway_only 1
fi

# ---------------------------------------------------------------- W3 idle
if [[ $ONLY == *W3* ]]; then
    # Plain at CMPI 60 and 5, and TLS (how production runs) at CMPI 60.
    for variant in plain-60 plain-5 tls-60; do
        tls=0; [[ $variant == tls-* ]] && tls=1
        cmpi=${variant#*-}
        label=ringway-cmpi$cmpi; [ $tls = 1 ] && label=ringway-tls-cmpi$cmpi
        for r in $(seq 1 $RUNS); do
            log "== W3 $W3_AGENTS idle agents, $variant, run $r"
            start_gateway $tls $cmpi
            out=$raw/agents-$W3_AGENTS-$variant-$r.json
            "$lg" agents --gateway "$gw_url" "${tls_args[@]}" --key-file "$work/key" --count $W3_AGENTS \
                --source 127.0.0.2-127.0.0.40 --ramp 3000 --cmpi $cmpi --duration 20 \
                --gateway-pid $gw_pid --json "$out" >/dev/null 2>"$work/lg-w3.err" &
            ap=$!; started+=($ap)
            sleep 10   # ramp 5 s + settle
            c0=$(cpu_secs $gw_pid); sleep 8; c1=$(cpu_secs $gw_pid)
            wait $ap
            v=$(jget "$out" '"%s %s %s %s" % (d["gateway_process"]["rss_bytes_per_agent"], d["agents"]["up_at_end"], d["latency_us"]["poll_rtt"]["p99"], d["errors"]["total"])')
            set -- $v
            cps=$(awk -v a=$c0 -v b=$c1 'BEGIN{printf "%.4f", (b-a)/8}')
            rec workload=W3 case=$label run=$r rss_bytes_per_agent=$1 agents_up=$2 \
                poll_rtt_p99_us=$3 errors=$4 gateway_cpu_secs_per_sec=$cps
            log "W3 $variant run $r: $1 B/agent, $2 up, poll p99 $3 us, $cps CPU-s/s"
            stop_pid $gw_pid
        done
    done
    # Peer: rathole server RSS per held relayed (idle) connection. Not the same
    # thing as an idle agent (rathole's analogue is one control channel per
    # client), but what one idle tunnelled connection costs its server.
    n=5000
    if start_relay rathole $echo_port; then
        sp=${relay_pids[0]}; m0=$(rss_kib $sp)
        python3 "$bench/pingpong.py" hold $relay_port $n 12 127.0.0.2-127.0.0.3 > "$work/hold.out" &
        hp=$!; started+=($hp)
        sleep 9; m1=$(rss_kib $sp)
        stop_pid $hp
        rec workload=W3 case=rathole-held-conn run=1 rss_bytes_per_conn=$(( (m1 - m0) * 1024 / n )) conns=$n
        log "W3 rathole: $(( (m1 - m0) * 1024 / n )) B per held connection"
        stop_relay
    else
        rec workload=W3 case=rathole-held-conn status=missing
        stop_relay
    fi
fi

# ---------------------------------------------------------------- W4 setup
if [[ $ONLY == *W4* ]]; then
    for r in $(seq 1 $RUNS); do
        log "== W4 session setup, 1000 agents, run $r"
        start_gateway 0 60
        "$lg" agents --gateway "$gw_addr" --key-file "$work/key" --count 1000 --duration 16 \
            >/dev/null 2>"$work/lg-w4a.err" &
        ap=$!; started+=($ap)
        sleep 3
        out=$raw/controls-setup-$r.json
        "$lg" controls --gateway "$gw_addr" --key-file "$work/key" --count 4 --pattern pingpong \
            --per-session 1 --duration 10 --gateway-pid $gw_pid --json "$out" >/dev/null 2>"$work/lg-w4c.err"
        wait $ap
        v=$(jget "$out" '"%s %s %s %s" % (d["controls"]["sessions_per_sec"], d["latency_us"]["session_setup"]["p50"], d["latency_us"]["session_setup"]["p99"], d["errors"]["total"])')
        set -- $v
        rec workload=W4 case=ringway-loadgen-4controls run=$r sessions_per_sec=$1 setup_p50_us=$2 setup_p99_us=$3 errors=$4
        log "W4 loadgen run $r: $1 sessions/s, setup p50 $2 p99 $3 us"
        stop_pid $gw_pid
    done
fi

cp "$records" "$raw/records.jsonl"
python3 "$bench/report.py" "$raw/records.jsonl" "$date_tag" \
    "W1_SECS=$W1_SECS RUNS=$RUNS RTT_COUNT=$RTT_COUNT SETUP_COUNT=$SETUP_COUNT W3_AGENTS=$W3_AGENTS"
rm -rf "$work"
