#!/usr/bin/env bash
# Cache-hit capacity sweep: kdns (socket mode, one worker) vs Unbound vs
# dnsdist (packet cache), all on server core 0, load from core 1.
#
#   bench/peers/sweep.sh [options]
#     -r N          rounds (default 5); systems interleaved per rate point,
#                   their order rotated each round (A B C, B C A, C A B)
#     -d SECONDS    length of each load run (default 5)
#     -k "RATES"    kxdpgun offered rates in qps
#                   (default "50000 100000 150000 200000 250000 300000 400000 500000 600000 800000")
#     -p "RATES"    dnsperf offered rates in qps (default "25000 50000 100000 150000 200000 300000";
#                   dnsperf itself sends at most ~150-250k qps from one core here)
#     -s "SYSTEMS"  subset of "kdns unbound dnsdist"
#     -g "GENS"     subset of "kxdpgun dnsperf"
#     -o DIR        results directory (default bench/results/peers/sweep-TAG)
#     -t TAG        file name tag (default: date-time)
#
# Needs root, the Debian packages unbound dnsdist dnsperf knot-dnsutils
# dnsutils linux-perf ethtool, and kdns built:
#   cargo build --release -p kdns -p kdns-ctl
# Writes DIR/sweep-TAG.csv (one line per run) and DIR/sweep-TAG.md (medians,
# saturation, share answered at 2x, ratios), prints the summary.
set -euo pipefail
# shellcheck source=../lib/rig.sh
source "$(dirname "$0")/../lib/rig.sh"
rig_session "$0" "$@"
ROUNDS=5
DUR=5
KX_RATES="50000 100000 150000 200000 250000 300000 400000 500000 600000 800000"
DP_RATES="25000 50000 100000 150000 200000 300000"
SYSTEMS="kdns unbound dnsdist"
GENS="kxdpgun dnsperf"
rig_opts "r=ROUNDS d=DUR k=KX_RATES p=DP_RATES s=SYSTEMS g=GENS o=OUT t=TAG" "$@"
rig_out peers sweep
rig_up
rig_queries "$RIG_DIR/hit.txt" 1000 n
read -r -a SYS <<<"$SYSTEMS"
for s in "${SYS[@]}"; do sys_start "$s"; done
log "systems up: $(for s in "${SYS[@]}"; do printf '%s=%s:53 ' "$s" "${SYS_ADDR[$s]}"; done)"

echo "round,generator,system,offered_qps,duration_s,sent,received,sent_qps,reply_qps,answered_pct,cpu_s,cpu_us_per_reply,backend_cpu_s" >"$CSV"
total_runs=0
for g in $GENS; do
    [[ $g == kxdpgun ]] && r=$KX_RATES || r=$DP_RATES
    total_runs=$((total_runs + $(wc -w <<<"$r") * ${#SYS[@]} * ROUNDS))
done
log "$total_runs runs of $DUR s; results in $CSV"
n=0
for ((round = 1; round <= ROUNDS; round++)); do
    rig_rotation "$round"
    for s in "${ORDER[@]}"; do warm "${SYS_ADDR[$s]}" "$RIG_DIR/hit.txt"; done
    for g in $GENS; do
        [[ $g == kxdpgun ]] && rates=$KX_RATES || rates=$DP_RATES
        for q in $rates; do
            for s in "${ORDER[@]}"; do
                sys_alive "$s"
                pid=${SYS_PIDS[$s]}
                be=${SYS_PIDS[be5301]:-}
                c0=$(cpu_ns "$pid")
                b0=0
                [[ -n $be ]] && b0=$(cpu_ns "$be")
                t0=$(date +%s.%N)
                if [[ $g == kxdpgun ]]; then
                    read -r sent recv < <(gen_kxdpgun "${SYS_ADDR[$s]}" "$q" "$DUR" "$RIG_DIR/hit.txt")
                    rt=$DUR
                else
                    read -r sent recv rt < <(gen_dnsperf "${SYS_ADDR[$s]}" "$q" "$DUR" "$RIG_DIR/hit.txt")
                fi
                c1=$(cpu_ns "$pid")
                b1=0
                [[ -n $be ]] && b1=$(cpu_ns "$be")
                n=$((n + 1))
                awk -v round="$round" -v g="$g" -v s="$s" -v q="$q" -v d="$rt" -v sent="$sent" -v recv="$recv" \
                    -v c=$((c1 - c0)) -v b=$((b1 - b0)) 'BEGIN {
                        if (d <= 0) d = 1
                        printf "%d,%s,%s,%d,%.3f,%d,%d,%.0f,%.0f,%.2f,%.3f,%.3f,%.3f\n", round, g, s, q, d, sent, recv,
                            sent / d, recv / d, sent ? 100 * recv / sent : 0, c / 1e9, recv ? c / 1e3 / recv : 0, b / 1e9
                    }' | tee -a "$CSV" | awk -F, -v n="$n" -v t="$total_runs" '{printf "[%d/%d] round %s %-8s %-8s offered %7d: sent %7.0f/s replies %7.0f/s (%6.2f%%) cpu %.2f us/reply\n", n, t, $1, $2, $3, $4, $8, $9, $10, $12}' >&2
                sleep 0.5
            done
        done
    done
done
if [[ " ${SYS[*]} " == *" kdns "* ]]; then
    "${KDNS_CTL[@]}" stats --json >"$OUT/sweep-$TAG.kdns-stats.json" 2>/dev/null || true
fi
for s in "${SYS[@]}"; do sys_stop "$s"; done
python3 "$BENCH_DIR/summarize.py" peers-sweep "$CSV" | tee "$OUT/sweep-$TAG.md"
