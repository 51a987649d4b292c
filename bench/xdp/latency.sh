#!/usr/bin/env bash
# Latency percentiles that dnsperf sees at half of each system's capacity
# (cache hits, the rig of sweep.sh): dnsperf -Q RATE for 10 s with -v (one
# line per answer with its latency; dnsperf 2.10 has no histogram option),
# percentiles computed from those lines. Systems interleaved in rounds.
# dnsperf sends from kernel sockets and cannot offer much more than ~100k
# queries/s from one core here (its own queueing then shows as latency): a
# half-capacity rate above DNSPERF_MAX (80k) is
# capped there, and the table says so.
#
#   bench/xdp/latency.sh -c results/sweep-TAG.csv [options]
#     -c CSV       sweep results: half of each system's saturation (median)
#     -Q "s=rate ..." explicit rates instead (e.g. "kdns-xdp=300000 unbound=60000")
#     -d SECONDS   (default 10)   -r N rounds (default 3)
#     -s "SYSTEMS" (default "kdns-xdp knot-xdp reflector unbound dnsdist")
#     -o DIR / -t TAG / -W  as in sweep.sh
# Env: DNSPERF_MAX (default 80000), DNSPERF_CLIENTS (default 8)
set -euo pipefail
DUR=10
ROUNDS=3
SYSTEMS="kdns-xdp knot-xdp reflector unbound dnsdist"
SWEEP=""
EXPLICIT=""
# shellcheck source=../lib/rig.sh
source "$(dirname "$0")/../lib/rig.sh"
rig_session "$0" "$@"
rig_opts "c=SWEEP Q=EXPLICIT d=DUR r=ROUNDS s=SYSTEMS o=OUT t=TAG W:RIG_NO_WAIT=1" "$@"
[[ -n $SWEEP || -n $EXPLICIT ]] || { echo "need -c SWEEP_CSV or -Q RATES" >&2; exit 2; }
[[ -z $SWEEP ]] || SWEEP=$(realpath "$SWEEP")
rig_out xdp latency
command -v knotd >/dev/null || PATH="$PATH:/usr/sbin"
MAXQ=${DNSPERF_MAX:-80000}
declare -A RATE
if [[ -n $EXPLICIT ]]; then
    for kv in $EXPLICIT; do RATE[${kv%%=*}]=${kv#*=}; done
else
    while read -r s r; do RATE[$s]=$r; done < <(python3 - "$SWEEP" <<'EOF'
import csv, statistics, sys
from collections import defaultdict
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if not l.startswith("#")))
by = defaultdict(list)
for r in rows:
    by[(r["system"], int(r["offered_qps"]))].append(float(r["reply_qps"]))
sat = defaultdict(float)
for (s, q), v in by.items():
    sat[s] = max(sat[s], statistics.median(v))
for s, v in sat.items():
    print(s, int(round(v / 2, -3)))
EOF
)
fi
rig_up
rig_reflector
for i in 1 2 3; do xpair_add "$i"; done
rig_queries "$RIG_DIR/hit.txt" 1000 n
read -r -a SYS <<<"$SYSTEMS"
for s in "${SYS[@]}"; do
    [[ -n ${RATE[$s]:-} ]] || die "no rate for $s"
    xsys_start "$s"
    warm "${ADDR_OF[$s]}" "$RIG_DIR/hit.txt"
done
echo "# half-capacity rates: $(for s in "${SYS[@]}"; do printf '%s=%s ' "$s" "${RATE[$s]}"; done); dnsperf capped at $MAXQ" >"$CSV"
echo "round,system,half_capacity_qps,offered_qps,sent,completed,answered_pct,reply_qps,avg_ms,p50_ms,p90_ms,p99_ms,p999_ms,max_ms" >>"$CSV"
for ((round = 1; round <= ROUNDS; round++)); do
    rig_rotation "$round"
    for s in "${ORDER[@]}"; do
        half=${RATE[$s]}
        q=$half
        ((q > MAXQ)) && q=$MAXQ
        out="$RIG_DIR/dnsperf.out"
        gen_dnsperf "${ADDR_OF[$s]}" "$q" "$DUR" "$RIG_DIR/hit.txt" "${DNSPERF_CLIENTS:-8}" -v >/dev/null
        dnsperf_row "$out" --duration "$DUR" "$round" "$s" "$half" "$q" sent completed answered_pct reply_qps \
            avg_ms p50_ms p90_ms p99_ms p999_ms max_ms | tee -a "$CSV" >&2
        head -c 300 "$out" >"$RIG_DIR/dnsperf-v.head.$s" || true
        sleep 0.5
    done
done
for s in "${SYS[@]}"; do xsys_stop "$s"; done
python3 "$BENCH_DIR/summarize.py" xdp-latency "$CSV" | tee "$OUT/latency-$TAG.md"
