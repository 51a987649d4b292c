#!/usr/bin/env bash
# Miss path: every query a name never asked before (m<i>.bench.test A, 100k
# distinct names), kdns in socket mode (one worker) in front of TWO Unbound
# backends (127.0.0.1:5301 and :5302 in the server ns, num-threads 1 each)
# versus one Unbound queried directly. Everything on the server runs on core
# 0 (kdns and both backends; Unbound alone when measured directly), dnsperf
# on core 1.
#
#   bench/peers/miss.sh [options]
#     -r N          rounds (default 3); kdns and Unbound alternate at each rate,
#                   which of them goes first alternates each round
#     -q "RATES"    offered rates in qps (default "5000 10000 20000 40000 60000 80000")
#     -n NAMES      distinct names (default 100000); each run asks each name
#                   at most once (dnsperf -n 1), for at most NAMES/rate + 1 s
#     -o DIR        results directory (default bench/peers/results)
#     -t TAG        file name tag (default: date-time)
#
# Before every run both start cold: the kdns cache is flushed
# (kdns-ctl cache flush) and every Unbound (kdns's two backends, or the
# directly measured one) is restarted. Latency: dnsperf -v reports each
# query's latency; percentiles are computed from those (timeouts, 1 s, count
# as lost, not in the percentiles).
# Writes DIR/miss-TAG.csv and DIR/miss-TAG.md, prints the summary.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=rig.sh
source "$HERE/rig.sh"
rig_session "$0" "$@"
ROUNDS=3
RATES="5000 10000 20000 40000 60000 80000"
NAMES=100000
OUT="$HERE/results"
TAG=$(date +%Y%m%d-%H%M%S)
while getopts "r:q:n:o:t:h" o; do
    case $o in
    r) ROUNDS=$OPTARG ;;
    q) RATES=$OPTARG ;;
    n) NAMES=$OPTARG ;;
    o) OUT=$OPTARG ;;
    t) TAG=$OPTARG ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
    esac
done
mkdir -p "$OUT"
CSV="$OUT/miss-$TAG.csv"
rig_up
rig_queries "$RIG_DIR/miss.txt" "$NAMES" m

# cold SYSTEM: (re)start SYSTEM so that nothing is cached anywhere
cold() {
    case $1 in
    kdns)
        if [[ -z ${SYS_PIDS[kdns]:-} ]]; then
            sys_start kdns 5301 5302
        else
            sys_stop be5301
            sys_stop be5302
            backend_start be5301 5301
            backend_start be5302 5302
            "${KDNS_CTL[@]}" cache flush >/dev/null || die "kdns-ctl cache flush failed"
            # the check query of the restart must not warm anything: flush again after it
            wait_answer "${SYS_ADDR[kdns]}" 53 n0.bench.test || die "kdns does not answer"
            "${KDNS_CTL[@]}" cache flush >/dev/null
        fi
        ;;
    unbound)
        sys_stop unbound
        sys_start unbound
        ;;
    esac
}

# kdns_stat FIELD: a number from kdns-ctl stats --json (dotted path)
kdns_stat() {
    "${KDNS_CTL[@]}" stats --json 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1].split('.'):
    d = d.get(k, 0) if isinstance(d, dict) else 0
print(d if isinstance(d, (int, float)) else 0)" "$1"
}

echo "round,system,offered_qps,sent,received,runtime_s,sent_qps,reply_qps,answered_pct,avg_ms,stddev_ms,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,servfail,cpu_s,backend_cpu_s,kdns_cache_hits,kdns_queries" >"$CSV"
sys_start unbound
cold kdns
total=$((ROUNDS * $(wc -w <<<"$RATES") * 2))
n=0
log "$total runs; results in $CSV"
for ((round = 1; round <= ROUNDS; round++)); do
    ((round % 2)) && order=(kdns unbound) || order=(unbound kdns)
    for q in $RATES; do
        for s in "${order[@]}"; do
            cold "$s"
            pid=${SYS_PIDS[$s]}
            bes=()
            [[ $s == kdns ]] && bes=("${SYS_PIDS[be5301]}" "${SYS_PIDS[be5302]}")
            c0=$(cpu_ns "$pid")
            b0=0
            for b in "${bes[@]}"; do b0=$((b0 + $(cpu_ns "$b"))); done
            h0=0 q0=0
            if [[ $s == kdns ]]; then
                h0=$(kdns_stat totals.cache_hits)
                q0=$(kdns_stat totals.queries)
            fi
            lim=$((NAMES / q + 2))
            gen_dnsperf "${SYS_ADDR[$s]}" "$q" "$lim" "$RIG_DIR/miss.txt" 8 -n 1 -v >/dev/null
            c1=$(cpu_ns "$pid")
            b1=0
            for b in "${bes[@]}"; do b1=$((b1 + $(cpu_ns "$b"))); done
            h1=0 q1=0
            if [[ $s == kdns ]]; then
                h1=$(kdns_stat totals.cache_hits)
                q1=$(kdns_stat totals.queries)
            fi
            n=$((n + 1))
            # per-query lines: "> RCODE name type latency" ("> T name type" on a timeout)
            python3 - "$RIG_DIR/dnsperf.out" "$round" "$s" "$q" $((c1 - c0)) $((b1 - b0)) $((h1 - h0)) $((q1 - q0)) <<'PY' | tee -a "$CSV" | awk -F, -v n="$n" -v t="$total" '{printf "[%d/%d] round %s %-8s offered %6d: replies %7.0f/s (%6.2f%%) avg %.3f ms p50 %.3f p99 %.3f max %.1f ms\n", n, t, $1, $2, $3, $8, $9, $10, $12, $14, $16}' >&2
import math, re, sys
path, rnd, system, offered, cpu, bcpu, hits, queries = sys.argv[1:9]
lat, sent, recv, rt, servfail = [], 0, 0, 0.0, 0
for line in open(path, errors="replace"):
    if line.startswith("> "):
        f = line.split()
        if f[1] != "T" and len(f) >= 5:
            lat.append(float(f[4]) * 1000)
            if f[1] == "SERVFAIL":
                servfail += 1
    elif "Queries sent:" in line:
        sent = int(line.split()[2])
    elif "Queries completed:" in line:
        recv = int(line.split()[2])
    elif "Run time (s):" in line:
        rt = float(line.split()[3])
lat.sort()
def pct(p):
    if not lat:
        return float("nan")
    return lat[min(len(lat) - 1, max(0, math.ceil(p / 100 * len(lat)) - 1))]
n = len(lat)
avg = sum(lat) / n if n else float("nan")
sd = math.sqrt(sum((x - avg) ** 2 for x in lat) / n) if n else float("nan")
rt = rt or 1
print(f"{rnd},{system},{offered},{sent},{recv},{rt:.3f},{sent / rt:.0f},{recv / rt:.0f},{100 * recv / sent if sent else 0:.2f},"
      f"{avg:.3f},{sd:.3f},{pct(50):.3f},{pct(90):.3f},{pct(99):.3f},{pct(99.9):.3f},{lat[-1] if lat else float('nan'):.3f},{servfail},"
      f"{int(cpu) / 1e9:.3f},{int(bcpu) / 1e9:.3f},{hits},{queries}")
PY
            sleep 0.5
        done
    done
done
"${KDNS_CTL[@]}" stats --json >"$OUT/miss-$TAG.kdns-stats.json" 2>/dev/null || true
python3 "$HERE/summarize.py" miss "$CSV" | tee "$OUT/miss-$TAG.md"
