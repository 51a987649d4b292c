#!/usr/bin/env bash
# CPU cost per answered query of the AF_XDP servers at fixed offered loads:
# per thread user and system time (/proc/<pid>/task/<tid>/stat, clock
# ticks), the server end's NAPI thread (the receive path: XDP program and
# copy into the UMEM), and the whole server core (/proc/stat). kdns-xdp and
# the reflector (and Knot) on the rig of sweep.sh; then kdns variants
# (config knobs) and reflector variants, each restarted with its knob.
#
#   bench/xdp/cost.sh [options]
#     -q "RATES"   offered rates (default "300000 600000 1000000")
#     -d SECONDS   length of each run (default 5)
#     -r N         rounds (default 3)
#     -s "SYSTEMS" (default "kdns-xdp reflector knot-xdp")
#     -V "VARIANTS" kdns/reflector variants measured after the main rounds,
#                  each "name=system:knob" with knob a kdns TOML (\n for
#                  newlines) or reflector arguments; default:
#                  "busy_poll=kdns-xdp:[xdp]\nbusy_poll = true
#                   ring512=kdns-xdp:[xdp]\nring_size = 512\nframes = 2048
#                   ring4096=kdns-xdp:[xdp]\nring_size = 4096\nframes = 8192
#                   kicks1=reflector:--kicks 1
#                   spin0=reflector:--spin 0
#                   busy=reflector:--busy-poll"   ("" for none)
#     -p           also profile the server core (perf record -e cpu-clock)
#                  for each system at each rate; top symbols to DIR
#     -o DIR / -t TAG / -W  as in sweep.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RATES="300000 600000 1000000"
DUR=5
ROUNDS=3
SYSTEMS="kdns-xdp reflector knot-xdp"
VARIANTS='busy_poll=kdns-xdp:[xdp]\nbusy_poll = true
ring512=kdns-xdp:[xdp]\nring_size = 512\nframes = 2048
ring4096=kdns-xdp:[xdp]\nring_size = 4096\nframes = 8192
kicks1=reflector:--kicks 1
spin0=reflector:--spin 0
busy=reflector:--busy-poll'
PROFILE=0
# shellcheck source=../lib/rig.sh
source "$HERE/../lib/rig.sh"
rig_session "$0" "$@"
rig_opts "q=RATES d=DUR r=ROUNDS s=SYSTEMS V=VARIANTS p:PROFILE=1 o=OUT t=TAG W:RIG_NO_WAIT=1" "$@"
rig_out xdp cost
command -v knotd >/dev/null || PATH="$PATH:/usr/sbin"
rig_up
rig_reflector MUST=1
for i in 1 2 3; do xpair_add "$i"; done
rig_queries "$RIG_DIR/hit.txt" 1000 n
TCK=$(getconf CLK_TCK)
echo "# kdns: $KDNS_VERSION; kernel $(uname -r); server core $SRV_CORE, generator core $GEN_CORE; CLK_TCK $TCK" >"$CSV"
echo "round,system,variant,offered_qps,duration_s,sent,received,reply_qps,answered_pct,worker,worker_user_s,worker_sys_s,other_threads_s,napi_s,core_busy_s,worker_user_us_q,worker_sys_us_q,other_us_q,napi_us_q,core_us_q,srv_if_tx_pps,srv_if_tx_dropped_pps" >>"$CSV"

# if_stats SYSTEM -> "srv_tx_packets srv_tx_dropped gen_rx_packets gen_rx_dropped" of the system's pair
if_stats() {
    local i=${XSYS_PAIR[$1]:-} si=$IF_SRV gi=$IF_GEN
    [[ -n $i ]] && si=${XP_IF_S[$i]} gi=${XP_IF_G[$i]}
    echo "$(in_srv cat /sys/class/net/$si/statistics/tx_packets) $(in_srv cat /sys/class/net/$si/statistics/tx_dropped)" \
        "$(in_gen cat /sys/class/net/$gi/statistics/rx_packets) $(in_gen cat /sys/class/net/$gi/statistics/rx_dropped)"
}

# refl_counters: SIGUSR1 to the reflector, then its last counters line
refl_counters() {
    kill -USR1 "${SYS_PIDS[reflector]}" 2>/dev/null || return 0
    sleep 0.2
    grep 'kdns-reflector: counters' "$RIG_DIR/reflector.log" | tail -1 | sed 's/.*counters //'
}

# thread_ticks PID -> lines "tid comm utime stime" (comm without spaces)
thread_ticks() {
    local f
    for f in /proc/"$1"/task/*/stat; do
        # comm is field 2 in parentheses and may hold spaces: cut around it
        awk '{ s = $0; i = index(s, "("); j = 0; for (p = length(s); p > 0; p--) if (substr(s, p, 1) == ")") { j = p; break }
               comm = substr(s, i + 1, j - i - 1); gsub(/ /, "_", comm); split(substr(s, j + 2), a, " ")
               print $1, comm, a[12], a[13] }' "$f" 2>/dev/null || true
    done
}

# measure ROUND SYSTEM VARIANT RATE
measure() {
    local round=$1 s=$2 v=$3 q=$4 pid=${SYS_PIDS[$2]} np
    np=$(napi_srv_pid "$s")
    local sock="$RIG_DIR/kdns-xdp.sock"
    [[ $s == kdns-xdp ]] && "$RIG_DIR/kdns-ctl" --socket "$sock" stats --json >"$RIG_DIR/s0.json" 2>/dev/null
    local if0 if1 rc0="" rc1=""
    [[ $s == reflector ]] && rc0=$(refl_counters)
    if0=$(if_stats "$s")
    thread_ticks "$pid" >"$RIG_DIR/t0"
    local n0 k0 n1 k1
    n0=$(tid_cpu_ns "$np")
    k0=$(core_busy_ticks "$SRV_CORE")
    read -r sent recv < <(gen_kxdpgun "${ADDR_OF[$s]}" "$q" "$DUR" "$RIG_DIR/hit.txt")
    thread_ticks "$pid" >"$RIG_DIR/t1"
    if1=$(if_stats "$s")
    [[ $s == reflector ]] && rc1=$(refl_counters)
    n1=$(tid_cpu_ns "$np")
    k1=$(core_busy_ticks "$SRV_CORE")
    if [[ $s == kdns-xdp ]]; then
        "$RIG_DIR/kdns-ctl" --socket "$sock" stats --json >"$RIG_DIR/s1.json" 2>/dev/null
        python3 "$HERE/json_delta.py" "$RIG_DIR/s0.json" "$RIG_DIR/s1.json" "round $round $v offered $q sent $sent received $recv:" >>"$OUT/cost-$TAG.kdns-io.txt"
    fi
    read -r a0 b0 c0 d0 <<<"$if0"
    read -r a1 b1 c1 d1 <<<"$if1"
    echo "round $round $s $v offered $q: kxdpgun sent $sent received $recv; server if tx +$((a1 - a0)) tx_dropped +$((b1 - b0)); generator if rx +$((c1 - c0)) rx_dropped +$((d1 - d0))${rc0:+; reflector before: $rc0; after: $rc1}" >>"$OUT/cost-$TAG.io.txt"
    # the worker: the thread with the most CPU time in the run
    awk -v itx=$((a1 - a0)) -v itxd=$((b1 - b0)) -v round="$round" -v s="$s" -v v="$v" -v q="$q" -v d="$DUR" -v sent="$sent" -v recv="$recv" \
        -v napi=$(((n1 - n0))) -v core=$((k1 - k0)) -v tck="$TCK" '
        FNR == NR { u0[$1] = $3; s0[$1] = $4; next }
        { du = $3 - u0[$1]; ds = $4 - s0[$1]; tot += du + ds
          if (du + ds > best) { best = du + ds; wu = du; ws = ds; wn = $2 } }
        END {
            r = recv ? recv : 1
            other = tot - wu - ws
            printf "%d,%s,%s,%d,%d,%d,%d,%.0f,%.2f,%s,%.2f,%.2f,%.2f,%.3f,%.2f,%.3f,%.3f,%.3f,%.3f,%.3f,%.0f,%.0f\n", round, s, v, q, d, sent, recv,
                recv / d, sent ? 100 * recv / sent : 0, wn, wu / tck, ws / tck, other / tck, napi / 1e9, core / tck,
                wu / tck * 1e6 / r, ws / tck * 1e6 / r, other / tck * 1e6 / r, napi / 1e3 / r, core / tck * 1e6 / r, itx / d, itxd / d
        }' "$RIG_DIR/t0" "$RIG_DIR/t1" | tee -a "$CSV" |
        awk -F, '{printf "round %s %-9s %-10s offered %7d: replies %7.0f/s (%6.2f%%) [server if tx %7.0f/s, dropped %6.0f/s] worker %s user %.3f sys %.3f other %.3f napi %.3f core %.3f us/q\n", $1, $2, $3, $4, $8, $9, $21, $22, $10, $16, $17, $18, $19, $20}' >&2
    sleep 0.5
}

# profile SYSTEM VARIANT RATE: perf on the server core during one run
profile() {
    local s=$1 v=$2 q=$3 f="$OUT/cost-$TAG.perf-$1-$2-$3"
    perf record -q -e cpu-clock -F 4999 -C "$SRV_CORE" -o "$RIG_DIR/perf.data" -- sleep "$DUR" >/dev/null 2>&1 &
    local pp=$!
    RIG_PIDS+=("$pp")
    gen_kxdpgun "${ADDR_OF[$s]}" "$q" "$DUR" "$RIG_DIR/hit.txt" >/dev/null
    wait "$pp" || true
    perf report -i "$RIG_DIR/perf.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 >"$f.txt" || true
    perf report -i "$RIG_DIR/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15 >"$f.comm.txt" || true
    log "profile of $s ($v) at $q: $f.txt"
}

read -r -a SYS <<<"$SYSTEMS"
for s in "${SYS[@]}"; do xsys_start "$s"; warm "${ADDR_OF[$s]}" "$RIG_DIR/hit.txt"; done
for ((round = 1; round <= ROUNDS; round++)); do
    rig_rotation "$round"
    for q in $RATES; do
        for s in "${ORDER[@]}"; do
            measure "$round" "$s" default "$q"
        done
    done
done
if ((PROFILE)); then
    for q in $RATES; do
        for s in "${SYS[@]}"; do profile "$s" default "$q"; done
    done
fi
# variants: restart the system with the knob, measure, restore
while IFS= read -r line; do
    [[ -n $line ]] || continue
    name=${line%%=*}
    rest=${line#*=}
    s=${rest%%:*}
    knob=${rest#*:}
    [[ " ${SYS[*]} " == *" $s "* ]] || continue
    xsys_stop "$s"
    if [[ $s == kdns-xdp ]]; then KDNS_XDP_TOML=$knob xsys_start "$s"; else REFLECTOR_ARGS=$knob xsys_start "$s"; fi
    warm "${ADDR_OF[$s]}" "$RIG_DIR/hit.txt"
    for ((round = 1; round <= ROUNDS; round++)); do
        for q in $RATES; do
            measure "$round" "$s" "$name" "$q"
            # a reference in the same minutes: the other system, unchanged
            if [[ $s == kdns-xdp ]]; then ref=reflector; else ref=kdns-xdp; fi
            [[ -n ${SYS_PIDS[$ref]:-} ]] && measure "$round" "$ref" "ref-for-$name" "$q"
        done
    done
    ((PROFILE)) && profile "$s" "$name" "${RATES%% *}"
    xsys_stop "$s"
    xsys_start "$s"
    warm "${ADDR_OF[$s]}" "$RIG_DIR/hit.txt"
done <<<"$VARIANTS"
for s in "${SYS[@]}"; do cp "$RIG_DIR/$s.log" "$OUT/cost-$TAG.$s.log" 2>/dev/null || true; done
python3 "$BENCH_DIR/summarize.py" xdp-cost "$CSV" | tee "$OUT/cost-$TAG.md"
