#!/usr/bin/env bash
# Local-record answers vs cache hits on the AF_XDP rig (bench/peers/rig.sh +
# bench/xdp/rig_xdp.sh, sourced and used unchanged): one kdns --io xdp (one
# AF_XDP worker on core 0, --workers 1) with a records file, kxdpgun on
# core 1, two query files against the same daemon:
#   hit    n<i>.bench.test A, 1000 names (forwarded once to Unbound, cached)
#   local  web.kdns A (a 3-instance "all" service: 3 A records, rotated),
#          web-1.kdns, web-2.kdns, web-3.kdns A (one A record each)
# At every offered rate both kinds run back to back (order alternating),
# for ROUNDS rounds. Per run: replies/s, share answered, CPU per reply
# (kdns process + the server end's NAPI thread), and from kdns-ctl stats
# the cache hits and local answers the run added (each kind must be
# answered the way it claims). Summary: median over rounds per rate, the
# saturation throughput of each kind (highest median reply rate) and the
# ratio local / hit (target >= 0.90).
#
# Runs only when no other benchmark does (pgrep -x kxdpgun, pgrep -x
# dnsperf, pgrep -f bench/ other than this script): waits, polling every
# 30 s, up to WAIT_MAX seconds (default 1800), then gives up (exit 3).
# Checks again before every round and pauses while another one runs.
#
#   bench/records/rig.sh [-r ROUNDS (3)] [-d SECONDS (5)] [-k "RATES"] [-o DIR] [-t TAG] [-W]
#     -W  do not wait for other benchmarks
# Env: KDNS_BIN / KDNS_CTL_BIN (default target/release/kdns{,-ctl}; a build
#      with --records-file is needed), WAIT_MAX, plus rig.sh's knobs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=3
DUR=5
RATES="200000 300000 400000 500000 600000 800000 1000000 1200000"
OUT="$HERE/results"
TAG=$(date +%Y%m%d-%H%M%S)
WAIT=1
WAIT_MAX=${WAIT_MAX:-1800}
while getopts "r:d:k:o:t:Wh" o; do
    case $o in
    r) ROUNDS=$OPTARG ;;
    d) DUR=$OPTARG ;;
    k) RATES=$OPTARG ;;
    o) OUT=$OPTARG ;;
    t) TAG=$OPTARG ;;
    W) WAIT=0 ;;
    *) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
# shellcheck source=../peers/rig.sh
source "$HERE/../peers/rig.sh"
# shellcheck source=../xdp/rig_xdp.sh
source "$HERE/../xdp/rig_xdp.sh"
rig_session "$0" "$@"

# Other benchmarks: kxdpgun / dnsperf not started by us, or any process
# running something under bench/ other than this script (bench/records/).
others_busy() {
    local mine pids p
    mine=" $(ip netns pids "${NS_GEN:-none}" 2>/dev/null | tr '\n' ' ') "
    pids=$( (pgrep -x kxdpgun; pgrep -x dnsperf; pgrep -f 'bench/' | while read -r p; do
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q 'bench/records/' || echo "$p"
    done) 2>/dev/null | sort -u)
    for p in $pids; do
        [[ $p == "$$" || $p == "$BASHPID" || $mine == *" $p "* ]] && continue
        [[ -d /proc/$p ]] || continue
        echo "$p $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-100)"
    done
}

# wait_quiet SECONDS: until others_busy is empty (polls every 30 s); 1 if
# still busy after SECONDS. After a busy spell, quiet must hold at two polls
# 40 s apart: a colleague's script that was waiting too (bench/xdp's
# other_load_wait polls every 30 s) then starts first and we wait for it.
wait_quiet() {
    local limit=$1 waited=0 busy was_busy=0
    while :; do
        busy=$(others_busy)
        if [[ -z $busy ]]; then
            ((was_busy == 0)) && return 0
            sleep 40
            waited=$((waited + 40))
            busy=$(others_busy)
            [[ -z $busy ]] && return 0
        fi
        ((was_busy == 0)) && log "another benchmark is running; waiting (30 s polls, ${limit} s max): $(head -3 <<<"$busy" | tr '\n' ';')"
        was_busy=1
        ((waited >= limit)) && return 1
        sleep 30
        waited=$((waited + 30))
    done
}

if ((WAIT)) && ! wait_quiet "$WAIT_MAX"; then
    log "other benchmarks still running after ${WAIT_MAX} s: rig figure skipped"
    exit 3
fi
if [[ -z ${KDNS_BIN:-} ]] && ! "$RIG_ROOT/target/release/kdns" --help 2>/dev/null | grep -q -- '--records-file'; then
    die "target/release/kdns has no --records-file: cargo build --release -p kdns -p kdns-ctl (or set KDNS_BIN/KDNS_CTL_BIN)"
fi
mkdir -p "$OUT"
CSV="$OUT/rig-$TAG.csv"
rig_up
xpair_add 1
rig_queries "$RIG_DIR/hit.txt" 1000 n
printf '%s\n' "web.kdns A" "web-1.kdns A" "web-2.kdns A" "web-3.kdns A" >"$RIG_DIR/local.txt"
cat >"$RIG_DIR/records.toml" <<'EOF'
[[service]]
name = "web"
mode = "all"
ports = [{ name = "http", proto = "tcp", port = 8080 }]
instances = [{ id = "c1", addrs = ["10.60.0.1"] }, { id = "c2", addrs = ["10.60.0.2"] }, { id = "c3", addrs = ["10.60.0.3"] }]
EOF
KDNS_XDP_TOML="[records]\ndomains = [\"kdns\"]\nfile = \"$RIG_DIR/records.toml\"\nstate_file = \"\"" xsys_start kdns-xdp
A=${ADDR_OF[kdns-xdp]}
PID=${SYS_PIDS[kdns-xdp]}
SOCK="$RIG_DIR/kdns-xdp.sock"
in_gen dig +short "@$A" web.kdns A | sort | tr '\n' ' ' | grep -q '10.60.0.1 10.60.0.2 10.60.0.3' || die "kdns-xdp does not answer web.kdns (see $RIG_DIR/kdns-xdp.log)"
xwarm kdns-xdp "$RIG_DIR/hit.txt"
grep -h -i -E 'AF_XDP on|local records' "$RIG_DIR/kdns-xdp.log" | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^/[kdns-xdp] /' >&2 || true

# counters KEY... -> values from kdns-ctl stats --json totals
counters() {
    "$RIG_DIR/kdns-ctl" --socket "$SOCK" stats --json | python3 -c 'import json, sys
t = json.load(sys.stdin)["totals"]
print(" ".join(str(t.get(k, 0)) for k in sys.argv[1:]))' "$@"
}

{
    echo "# kdns: $KDNS_VERSION"
    echo "# kxdpgun: $(kxdpgun -V 2>&1 | head -1); kernel $(uname -r); $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'); $(nproc) cores; server core $SRV_CORE, generator core $GEN_CORE; load before $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "round,kind,offered_qps,duration_s,sent,received,sent_qps,reply_qps,answered_pct,cache_hits,local_answers,forwarded,proc_cpu_s,napi_cpu_s,us_per_reply"
} >"$CSV"
read -r -a RATE <<<"$RATES"
total=$((${#RATE[@]} * 2 * ROUNDS))
n=0
np=$(napi_srv_pid kdns-xdp)
for ((round = 1; round <= ROUNDS; round++)); do
    if ((WAIT)) && ! wait_quiet "$WAIT_MAX"; then die "another benchmark kept running; stopped before round $round"; fi
    for q in "${RATE[@]}"; do
        if (((n / 2 + round) % 2)); then kinds=(hit local); else kinds=(local hit); fi
        for kind in "${kinds[@]}"; do
            kill -0 "$PID" 2>/dev/null || die "kdns-xdp (pid $PID) died; see $RIG_DIR/kdns-xdp.log"
            read -r h0 l0 f0 < <(counters cache_hits local_answers forwarded)
            c0=$(cpu_ns "$PID")
            n0=0
            [[ -n $np ]] && n0=$(tid_cpu_ns "$np")
            read -r sent recv < <(gen_kx "$A" "$q" "$DUR" "$RIG_DIR/$kind.txt")
            c1=$(cpu_ns "$PID")
            n1=0
            [[ -n $np ]] && n1=$(tid_cpu_ns "$np")
            read -r h1 l1 f1 < <(counters cache_hits local_answers forwarded)
            n=$((n + 1))
            awk -v round="$round" -v kind="$kind" -v q="$q" -v d="$DUR" -v sent="$sent" -v recv="$recv" \
                -v h=$((h1 - h0)) -v l=$((l1 - l0)) -v f=$((f1 - f0)) -v c=$((c1 - c0)) -v nn=$((n1 - n0)) 'BEGIN {
                    printf "%d,%s,%d,%.3f,%d,%d,%.0f,%.0f,%.2f,%d,%d,%d,%.3f,%.3f,%.3f\n", round, kind, q, d, sent, recv,
                        sent / d, recv / d, sent ? 100 * recv / sent : 0, h, l, f, c / 1e9, nn / 1e9, recv ? (c + nn) / 1e3 / recv : 0
                }' | tee -a "$CSV" | awk -F, -v n="$n" -v t="$total" '{printf "[%d/%d] round %s %-5s offered %7d: replies %7.0f/s (%6.2f%%) hits %d local %d fwd %d; %.2f us/reply\n", n, t, $1, $2, $3, $8, $9, $10, $11, $12, $15}' >&2
            sleep 0.5
        done
    done
done
"$RIG_DIR/kdns-ctl" --socket "$SOCK" stats --json >"$OUT/rig-$TAG.kdns-stats.json" 2>/dev/null || true
xsys_stop kdns-xdp
cp "$RIG_DIR/kdns-xdp.log" "$OUT/rig-$TAG.kdns-xdp.log" 2>/dev/null || true
python3 "$HERE/summarize.py" rig "$CSV" | tee "$OUT/rig-$TAG.md"
