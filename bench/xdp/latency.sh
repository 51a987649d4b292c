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
HERE=$(cd "$(dirname "$0")" && pwd)
DUR=10
ROUNDS=3
SYSTEMS="kdns-xdp knot-xdp reflector unbound dnsdist"
OUT="$HERE/results"
TAG=$(date +%Y%m%d-%H%M%S)
WAIT=1
SWEEP=""
EXPLICIT=""
while getopts "c:Q:d:r:s:o:t:Wh" o; do
    case $o in
    c) SWEEP=$OPTARG ;;
    Q) EXPLICIT=$OPTARG ;;
    d) DUR=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    s) SYSTEMS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    t) TAG=$OPTARG ;;
    W) WAIT=0 ;;
    *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
[[ -n $SWEEP || -n $EXPLICIT ]] || { echo "need -c SWEEP_CSV or -Q RATES" >&2; exit 2; }
[[ -z $SWEEP ]] || SWEEP=$(realpath "$SWEEP")
source "$HERE/../peers/rig.sh"
source "$HERE/rig_xdp.sh"
rig_session "$0" "$@"
((WAIT)) && other_load_wait
mkdir -p "$OUT"
CSV="$OUT/latency-$TAG.csv"
command -v knotd >/dev/null || PATH="$PATH:/usr/sbin"
RB=${REFLECTOR_BIN:-$HERE/../reflector/target/release/kdns-reflector}
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
if [[ -x $RB ]]; then cp "$RB" "$RIG_DIR/kdns-reflector"; fi
REFLECTOR="$RIG_DIR/kdns-reflector"
for i in 1 2 3; do xpair_add "$i"; done
rig_queries "$RIG_DIR/hit.txt" 1000 n
read -r -a SYS <<<"$SYSTEMS"
for s in "${SYS[@]}"; do
    [[ -n ${RATE[$s]:-} ]] || die "no rate for $s"
    xsys_start "$s"
    xwarm "$s" "$RIG_DIR/hit.txt"
done
echo "# half-capacity rates: $(for s in "${SYS[@]}"; do printf '%s=%s ' "$s" "${RATE[$s]}"; done); dnsperf capped at $MAXQ" >"$CSV"
echo "round,system,half_capacity_qps,offered_qps,sent,completed,answered_pct,reply_qps,avg_ms,p50_ms,p90_ms,p99_ms,p999_ms,max_ms" >>"$CSV"
for ((round = 1; round <= ROUNDS; round++)); do
    for ((i = 0; i < ${#SYS[@]}; i++)); do
        s=${SYS[$(((i + round - 1) % ${#SYS[@]}))]}
        half=${RATE[$s]}
        q=$half
        ((q > MAXQ)) && q=$MAXQ
        out="$RIG_DIR/dnsperf-v.out"
        timeout $((DUR + 20)) ip netns exec "$NS_GEN" nice -n "$RIG_NICE" taskset -c "$GEN_CORE" \
            dnsperf -s "${ADDR_OF[$s]}" -d "$RIG_DIR/hit.txt" -l "$DUR" -Q "$q" -c "${DNSPERF_CLIENTS:-8}" -T 1 -q 20000 -t 1 \
            -b "${DNSPERF_BUF_KB:-4096}" -v >"$out" 2>&1 || true
        python3 - "$out" "$round" "$s" "$half" "$q" "$DUR" <<'EOF' | tee -a "$CSV" >&2
import re, sys
path, rnd, s, half, q, dur = sys.argv[1:]
lat, sent, done = [], 0, 0
for line in open(path, errors="replace"):
    if line.startswith("> "):
        f = line.split()
        try:
            lat.append(float(f[-1]) * 1e3)
        except ValueError:
            pass
    elif "Queries sent:" in line:
        sent = int(line.split()[2])
    elif "Queries completed:" in line:
        done = int(line.split()[2])
lat.sort()
p = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))] if lat else float("nan")
avg = sum(lat) / len(lat) if lat else float("nan")
print(f"{rnd},{s},{half},{q},{sent},{done},{100 * done / sent if sent else 0:.2f},{done / float(dur):.0f},"
      f"{avg:.3f},{p(0.5):.3f},{p(0.9):.3f},{p(0.99):.3f},{p(0.999):.3f},{lat[-1] if lat else float('nan'):.3f}")
EOF
        head -c 300 "$out" >"$RIG_DIR/dnsperf-v.head.$s" || true
        sleep 0.5
    done
done
for s in "${SYS[@]}"; do xsys_stop "$s"; done
python3 - "$CSV" <<'EOF' | tee "$OUT/latency-$TAG.md"
import csv, statistics, sys
from collections import defaultdict
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if not l.startswith("#")))
by = defaultdict(list)
for r in rows:
    by[r["system"]].append(r)
print(f"Medians over {len({r['round'] for r in rows})} rounds.\n")
print("| system | half capacity | dnsperf offered | answered | replies/s | avg ms | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s, rr in by.items():
    m = lambda f: statistics.median(float(r[f]) for r in rr)
    print(f"| {s} | {m('half_capacity_qps')/1e3:.0f}k | {m('offered_qps')/1e3:.0f}k | {m('answered_pct'):.2f}% | {m('reply_qps')/1e3:.1f}k | "
          f"{m('avg_ms'):.3f} | {m('p50_ms'):.3f} | {m('p90_ms'):.3f} | {m('p99_ms'):.3f} | {m('p999_ms'):.3f} | {m('max_ms'):.2f} |")
EOF
