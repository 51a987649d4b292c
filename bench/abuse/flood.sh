#!/usr/bin/env bash
# Under abuse: one client floods names whose authoritative server never
# answers; a second client asks ordinary names (cache misses Unbound answers
# at once). What does the ordinary client get, and what does the flooder
# cost? The same rig and the same run for each system: kdns --io xdp in
# front of two Unbounds, dnsdist in front of the same two Unbounds, Unbound
# alone. Rig: lib.sh (network namespaces, see there).
#
#   bench/abuse/flood.sh [options]
#     -q "RATES"    flood rates in qps (default "0 300 1500 5000 20000";
#                   0 = no flood: the baseline)
#     -s "SYSTEMS"  default "kdns dnsdist unbound"
#     -r N          rounds (default 1); the order of the systems rotates
#                   each round
#     -l SECONDS    the ordinary client's run (default 20)
#     -w SECONDS    the flood runs this long before the ordinary client
#                   starts (default 5), and 1 s after it ends
#     -o DIR        results directory (default bench/results/abuse)
#     -t TAG        run tag (default: date-time)
#
# Every run starts from cold: the system and its Unbounds are restarted
# (no cache, no memory of the black hole's timeouts). Then the flooder
# (dnsperf -Q RATE, random names under blackhole.test, each asked once,
# timeout FLOOD_TIMEOUT) starts; after -w seconds the ordinary client
# (dnsperf -Q $ORD_QPS -v, unique names under ok.test, each asked once,
# timeout ORD_TIMEOUT) runs -l seconds. CPU time is taken over the
# ordinary client's run: the server process (schedstat, all threads, plus
# utime/stime from /proc/PID/stat), kdns's NAPI thread, the Unbounds
# behind kdns and dnsdist, and the server core's busy time (/proc/stat).
# After the flooder has finished and 4 s more (every query kdns holds has
# then ended), kdns's counters are read (kdns-ctl stats --json).
#
# Writes DIR/TAG/runs/r<round>-<rate>-<system>.json (one per run), with
# .kdns-stats.json (kdns) and .flood.txt (the flooder's dnsperf summary
# and timeout lines), DIR/TAG/meta.txt, then DIR/TAG/summary.{csv,md}
# (bench/lib/abuse.py summary), and prints the summary. Bounded: every dnsperf runs
# under timeout; about (w + l + 12) s per run.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
rig_session "$0" "$@"
RATES="0 300 1500 5000 20000"
SYSTEMS="kdns dnsdist unbound"
ROUNDS=1
DUR=20
LEAD=5
OUT="$BENCH_DIR/results/abuse"
rig_opts "q=RATES s=SYSTEMS r=ROUNDS l=DUR w=LEAD o=OUT t=TAG" "$@"
RES="$OUT/$TAG"
mkdir -p "$RES/runs"
ab_up
HZ=$(getconf CLK_TCK)
{
    echo "tag: $TAG"
    echo "date: $(date -Is)"
    echo "kdns: $KDNS_VERSION"
    echo "host: $(uname -r), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "versions: $(unbound -V 2>/dev/null | head -1); $(dnsdist --version 2>/dev/null | head -1); $(dnsperf -h 2>&1 | grep -m1 Version)"
    echo "rates: $RATES; systems: $SYSTEMS; rounds: $ROUNDS; ordinary: $ORD_QPS qps for $DUR s, timeout $ORD_TIMEOUT s; flood lead $LEAD s, timeout $FLOOD_TIMEOUT s, $FLOOD_CLIENTS sockets"
    echo "KDNS_ARGS: ${KDNS_ARGS:-}"
} >"$RES/meta.txt"

# cpu_now PID NAPI_TID BACKEND_PID...: the CPU counters a run is measured
# by: PID's CPU time (ns), its user and system ticks, the backends' CPU
# time (ns), the NAPI thread's (ns; 0 without one) and the server core's
# busy ticks
cpu_now() {
    local pid=$1 napi=$2 b u s backends=0 napi_ns=0 proc
    shift 2
    proc=$(cpu_ns "$pid")
    read -r u s < <(proc_ticks "$pid")
    for b in "$@"; do backends=$((backends + $(cpu_ns "$b"))); done
    [[ -n $napi ]] && napi_ns=$(tid_cpu_ns "$napi")
    echo "$proc $u $s $backends $napi_ns $(core_busy_ticks "$SRV_CORE")"
}

read -ra SYS <<<"$SYSTEMS"
total=$((ROUNDS * $(wc -w <<<"$RATES") * ${#SYS[@]}))
n=0
log "$total runs of ~$((LEAD + DUR + 12)) s; results in $RES"
for ((round = 1; round <= ROUNDS; round++)); do
    rig_rotation "$round"
    for q in $RATES; do
        for s in "${ORDER[@]}"; do
            n=$((n + 1))
            run="r$round-$q-$s"
            ab_start "$s"
            pid=${SYS_PIDS[$s]}
            ab_names "$RIG_DIR/ord.txt" $((ORD_QPS * DUR)) ordinary "$TAG-$run"
            fout=-
            if ((q > 0)); then
                fout="$RES/runs/$run.flood.txt"
                ab_flood_start "$s" "$q" $((LEAD + DUR + 1)) "$RIG_DIR/flood.out"
                sleep "$LEAD"
            fi
            bes=()
            [[ $s != unbound ]] && for p in "${BACKEND_PORTS[@]}"; do bes+=("${SYS_PIDS[be$p]}"); done
            napi=""
            [[ $s == kdns ]] && napi=${XP_NAPI_S[1]:-}
            read -r c0 u0 s0 b0 n0 k0 < <(cpu_now "$pid" "$napi" "${bes[@]}")
            ab_ordinary "$s" "$DUR" "$RIG_DIR/ord.txt" "$RIG_DIR/ord.out"
            read -r c1 u1 s1 b1 n1 k1 < <(cpu_now "$pid" "$napi" "${bes[@]}")
            if ((q > 0)); then
                wait "$AB_FLOOD_PID" 2>/dev/null || true
                # its summary (without a line per timed-out query)
                grep -v '^\[Timeout\]' "$RIG_DIR/flood.out" >"$fout" || true
            fi
            kst=-
            if [[ $s == kdns ]]; then
                sleep 4
                kst="$RES/runs/$run.kdns-stats.json"
                "$RIG_DIR/kdns-ctl" --socket "$RIG_DIR/kdns.sock" stats --json >"$kst" 2>/dev/null || { log "kdns-ctl stats failed"; kst=-; }
            fi
            kill -0 "$pid" 2>/dev/null || log "WARNING: $s (pid $pid) is gone (see $RIG_DIR/$s.log)"
            python3 "$BENCH_DIR/lib/abuse.py" run "$RIG_DIR/ord.out" "$fout" "$kst" \
                round="$round" system="$s" flood_qps="$q" duration_s="$DUR" ord_qps="$ORD_QPS" ord_timeout_s="$ORD_TIMEOUT" \
                flood_secs=$((LEAD + DUR + 1)) \
                cpu_s="$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" \
                cpu_user_s="$(awk -v a="$u0" -v b="$u1" -v h="$HZ" 'BEGIN { printf "%.2f", (b - a) / h }')" \
                cpu_sys_s="$(awk -v a="$s0" -v b="$s1" -v h="$HZ" 'BEGIN { printf "%.2f", (b - a) / h }')" \
                napi_cpu_s="$(awk -v a="$n0" -v b="$n1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" \
                backends_cpu_s="$(awk -v a="$b0" -v b="$b1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')" \
                core_busy_s="$(awk -v a="$k0" -v b="$k1" -v h="$HZ" 'BEGIN { printf "%.2f", (b - a) / h }')" \
                >"$RES/runs/$run.json"
            python3 - "$RES/runs/$run.json" "$n" "$total" <<'PY' >&2
import json, sys
r = json.load(open(sys.argv[1]))
f = lambda v, s: "-" if v is None else format(v, s)
print(f"[{sys.argv[2]}/{sys.argv[3]}] round {r['round']} {r['system']:8s} flood {r['flood_qps']:>6}: ordinary "
      f"{f(r['ord_answered_pct'], '.2f')}% answered (sent {r['ord_sent']}, timeouts {r['ord_timeout']}, SERVFAIL {r['ord_servfail']}), "
      f"p50 {f(r['ord_p50_ms'], '.2f')} p99 {f(r['ord_p99_ms'], '.2f')} ms; flooder sent {r.get('flood_sent_qps', 0)}/s, "
      f"SERVFAIL {r.get('flood_servfail', 0)} REFUSED {r.get('flood_refused', 0)} none {r.get('flood_no_answer', 0)}; "
      f"cpu {r['cpu_s']:.2f} s" + (f" (+napi {r['napi_cpu_s']:.2f})" if r['system'] == 'kdns' else ""))
PY
            ab_stop "$s"
        done
    done
done
python3 "$BENCH_DIR/lib/abuse.py" summary "$RES"
