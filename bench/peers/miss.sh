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
#     -o DIR        results directory (default bench/results/peers/miss-TAG)
#     -t TAG        file name tag (default: date-time)
#
# Before every run both start cold: the kdns cache is flushed
# (kdns-ctl cache flush) and every Unbound (kdns's two backends, or the
# directly measured one) is restarted. Latency: dnsperf -v reports each
# query's latency; percentiles are computed from those (timeouts, 1 s, count
# as lost, not in the percentiles).
# Writes DIR/miss-TAG.csv and DIR/miss-TAG.md, prints the summary.
set -euo pipefail
# shellcheck source=../lib/rig.sh
source "$(dirname "$0")/../lib/rig.sh"
rig_session "$0" "$@"
ROUNDS=3
RATES="5000 10000 20000 40000 60000 80000"
NAMES=100000
rig_opts "r=ROUNDS q=RATES n=NAMES o=OUT t=TAG" "$@"
rig_out peers miss
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
            [[ $s == kdns ]] && read -r h0 q0 < <(kdns_stat "$RIG_DIR/kdns.sock" totals.cache_hits totals.queries)
            lim=$((NAMES / q + 2))
            gen_dnsperf "${SYS_ADDR[$s]}" "$q" "$lim" "$RIG_DIR/miss.txt" 8 -n 1 -v >/dev/null
            c1=$(cpu_ns "$pid")
            b1=0
            for b in "${bes[@]}"; do b1=$((b1 + $(cpu_ns "$b"))); done
            h1=0 q1=0
            [[ $s == kdns ]] && read -r h1 q1 < <(kdns_stat "$RIG_DIR/kdns.sock" totals.cache_hits totals.queries)
            n=$((n + 1))
            # latencies from the per-query lines of dnsperf -v (timeouts excluded)
            echo "$(dnsperf_row "$RIG_DIR/dnsperf.out" "$round" "$s" "$q" sent completed runtime_s sent_qps reply_qps answered_pct \
                avg_ms stddev_ms p50_ms p90_ms p99_ms p999_ms max_ms servfail),$(awk -v c=$((c1 - c0)) -v b=$((b1 - b0)) \
                'BEGIN { printf "%.3f,%.3f", c / 1e9, b / 1e9 }'),$((h1 - h0)),$((q1 - q0))" | tee -a "$CSV" |
                awk -F, -v n="$n" -v t="$total" '{printf "[%d/%d] round %s %-8s offered %6d: replies %7.0f/s (%6.2f%%) avg %.3f ms p50 %.3f p99 %.3f max %.1f ms\n", n, t, $1, $2, $3, $8, $9, $10, $12, $14, $16}' >&2
            sleep 0.5
        done
    done
done
"${KDNS_CTL[@]}" stats --json >"$OUT/miss-$TAG.kdns-stats.json" 2>/dev/null || true
python3 "$BENCH_DIR/summarize.py" peers-miss "$CSV" | tee "$OUT/miss-$TAG.md"
