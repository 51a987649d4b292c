#!/usr/bin/env bash
# The "In-kernel tier" benchmark: cache-hit capacity, overload and CPU per
# reply of kdns (two configurations, e.g. the in-kernel answer tier on and
# off), Knot DNS in XDP mode, the XDP_TX reflector (bench/xdp/xdptx.bpf.c:
# the answer written in the XDP program, the ceiling of in-kernel
# answering) and the minimal AF_XDP responder (bench/src/bin/reflector.rs),
# with both load generators (kxdpgun and livegen), on the AF_XDP rig
# (rig_xdp.sh: one single-queue veth pair per system, threaded NAPI pinned
# to each side's core; server core SRV_CORE, default 0, generator core
# GEN_CORE, default 1). Every round runs every generator, rate and system,
# systems interleaved and their order rotated per round, so noise on this
# shared machine hits all of them.
#
#   bench/xdp/tier.sh [options]
#     -r N          rounds (default 3)
#     -d SECONDS    length of each load run (default 3)
#     -s "SYSTEMS"  default "kdns-tier kdns-notier knot-xdp xdptx reflector";
#                   also kdns-xdp, kdns-xdp-b (KDNS_B_BIN: a second kdns build)
#     -g "GENS"     generators (default "kxdpgun livegen")
#     -k "RATES"    kxdpgun offered rates (default "200000 500000 1000000")
#     -l "RATES"    livegen offered rates (default "200000 600000 1000000 2000000")
#     -c RATE       the rate for the CPU cost per reply (default 200000:
#                   below every system's saturation); must be in the rates
#     -T TOML       kdns-tier's extra config (default '[xdp]\nanswer_tier = true')
#     -N TOML       kdns-notier's extra config (default '[xdp]\nanswer_tier = false')
#     -B TOML       kdns-xdp-b's extra config (default none)
#     -o DIR / -t TAG / -W   as in sweep.sh
# Env: LIVEGEN (the livegen binary: cp -r ../shared/tools/livegen /tmp/livegen
#      && make -C /tmp/livegen), LIVEGEN_ARGS (default "-B 128"),
#      KDNS_XDP_TOML (extra config for every kdns system), REFLECTOR_ARGS,
#      plus rig.sh's knobs. Needs what sweep.sh needs, and clang for xdptx.
#
# CPU: process (all threads) + the server end's NAPI thread per reply is
# the server's own work (xdptx has no process: its NAPI thread is all of
# it); the whole server core's busy time per reply also counts whatever
# else ran there, over the generator's whole run (window_s: its start-up
# and end included), so it reads high on a busy machine.
#
# Writes DIR/tier-TAG.csv (one line per run), DIR/tier-TAG.io.txt (per
# run: the server and generator interface counters and, for kdns, the
# kdns-ctl stats delta with the AF_XDP socket's ring statistics),
# DIR/tier-TAG.md (per generator: saturation, share kept at 2x load,
# server-core CPU per reply at the cost rate, ratios to the peers; made by
# bench/summarize.py xdp-tier) and DIR/tier-TAG.png (reply rate against
# offered load, one panel per generator).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=3
DUR=3
SYSTEMS="kdns-tier kdns-notier knot-xdp xdptx reflector"
GENS="kxdpgun livegen"
KRATES="200000 500000 1000000"
LRATES="200000 600000 1000000 2000000"
COST=200000
TIER_TOML='[xdp]\nanswer_tier = true'
NOTIER_TOML='[xdp]\nanswer_tier = false'
B_TOML=""
# shellcheck source=../lib/rig.sh
source "$HERE/../lib/rig.sh"
rig_session "$0" "$@"
rig_opts "r=ROUNDS d=DUR s=SYSTEMS g=GENS k=KRATES l=LRATES c=COST T=TIER_TOML N=NOTIER_TOML B=B_TOML o=OUT t=TAG W:RIG_NO_WAIT=1" "$@"
LIVEGEN_ARGS=${LIVEGEN_ARGS:--B 128}
export LIVEGEN_ARGS
for g in $GENS; do [[ $g == kxdpgun || $g == livegen ]] || die "-g: kxdpgun and/or livegen, not $g"; done
[[ " $GENS " == *" livegen "* && ! -x ${LIVEGEN:-} ]] && die "livegen needs LIVEGEN (cp -r ../shared/tools/livegen /tmp/livegen && make -C /tmp/livegen)"
rig_out xdp tier
read -r -a SYS <<<"$SYSTEMS"
[[ " $SYSTEMS " == *" kdns-xdp "* && " $SYSTEMS " == *" kdns-tier "* ]] && die "kdns-xdp and kdns-tier share a veth pair: choose one"
[[ " $SYSTEMS " == *" knot-xdp "* ]] && knotd_path
KDNS_TOML_OF[kdns-tier]=$TIER_TOML
KDNS_TOML_OF[kdns-notier]=$NOTIER_TOML
[[ -n $B_TOML ]] && KDNS_TOML_OF[kdns-xdp-b]=$B_TOML
rig_up
[[ " $SYSTEMS " == *" reflector "* ]] && rig_reflector MUST=1
xpairs_for "${SYS[@]}"
rig_queries "$RIG_DIR/hit.txt" 1000 n
for s in "${SYS[@]}"; do xsys_start "$s"; done
log "systems up: $(for s in "${SYS[@]}"; do printf '%s=%s ' "$s" "${ADDR_OF[$s]}"; done)"
IO="$OUT/tier-$TAG.io.txt"
{
    echo "# kdns: $KDNS_VERSION"
    echo "# knotd: $(knotd -V 2>&1 | head -1); kxdpgun: $(kxdpgun -V 2>&1 | head -1); livegen args: $LIVEGEN_ARGS"
    echo "# kernel $(uname -r); $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'); $(nproc) cores; server core $SRV_CORE, generator core $GEN_CORE; cost rate $COST"
    echo "# kdns-tier: '$TIER_TOML'; kdns-notier: '$NOTIER_TOML'; kdns-xdp-b: '$B_TOML' ${KDNS_B_BIN:+($KDNS_B_BIN)}; KDNS_XDP_TOML='${KDNS_XDP_TOML:-}' REFLECTOR_ARGS='${REFLECTOR_ARGS:-}'"
    echo "round,generator,system,offered_qps,duration_s,sent,received,sent_qps,reply_qps,answered_pct,proc_cpu_s,napi_cpu_s,core_busy_s,us_per_reply_proc_napi,us_per_reply_core,srv_rx_dropped,gen_tx_dropped,srv_xdp_drops,window_s"
} >"$CSV"

# ifc SYSTEM -> "srv_rx_dropped gen_tx_dropped srv_xdp_drops" so far on the system's pair
ifc() {
    local i=${XSYS_PAIR[$1]} si gi
    si=${XP_IF_S[$i]} gi=${XP_IF_G[$i]}
    echo "$(in_srv cat "/sys/class/net/$si/statistics/rx_dropped") $(in_gen cat "/sys/class/net/$gi/statistics/tx_dropped")" \
        "$(in_srv ethtool -S "$si" 2>/dev/null | awk '/xdp_drops:|xdp_tx_errors:|xdp_redirect_err/ {n += $2} END {print n + 0}')"
}

is_kdns() { [[ $1 == kdns-* ]]; }

TCK=$(getconf CLK_TCK)
nrates=0
for g in $GENS; do
    if [[ $g == kxdpgun ]]; then r=$KRATES; else r=$LRATES; fi
    nrates=$((nrates + $(wc -w <<<"$r")))
done
total_runs=$((nrates * ${#SYS[@]} * ROUNDS))
log "$total_runs runs of $DUR s; results in $CSV"
n=0
for ((round = 1; round <= ROUNDS; round++)); do
    rig_rotation "$round"
    for s in "${ORDER[@]}"; do [[ $s == xdptx ]] || warm "${ADDR_OF[$s]}" "$RIG_DIR/hit.txt"; done
    for g in $GENS; do
        if [[ $g == kxdpgun ]]; then rates=$KRATES; else rates=$LRATES; fi
        for q in $rates; do
            for s in "${ORDER[@]}"; do
                xsys_alive "$s"
                read -r c0 n0 k0 < <(srv_cpu "$s")
                read -r i0a i0b i0c < <(ifc "$s")
                is_kdns "$s" && "$KCTL" --socket "$RIG_DIR/$s.sock" stats --json >"$RIG_DIR/s0.json" 2>/dev/null
                w0=$(date +%s%N)
                read -r sent recv < <("gen_$g" "${ADDR_OF[$s]}" "$q" "$DUR" "$RIG_DIR/hit.txt")
                w1=$(date +%s%N)
                read -r c1 n1 k1 < <(srv_cpu "$s")
                read -r i1a i1b i1c < <(ifc "$s")
                n=$((n + 1))
                line=$(awk -v round="$round" -v g="$g" -v s="$s" -v q="$q" -v d="$DUR" -v sent="$sent" -v recv="$recv" \
                    -v c=$((c1 - c0)) -v nn=$((n1 - n0)) -v k=$((k1 - k0)) -v tck="$TCK" \
                    -v da=$((i1a - i0a)) -v db=$((i1b - i0b)) -v dc=$((i1c - i0c)) -v w=$((w1 - w0)) 'BEGIN {
                        printf "%d,%s,%s,%d,%.3f,%d,%d,%.0f,%.0f,%.2f,%.3f,%.3f,%.3f,%.3f,%.3f,%d,%d,%d,%.3f\n", round, g, s, q, d, sent, recv,
                            sent / d, recv / d, sent ? 100 * recv / sent : 0, c / 1e9, nn / 1e9, k / tck,
                            recv ? (c + nn) / 1e3 / recv : 0, recv ? k / tck * 1e6 / recv : 0, da, db, dc, w / 1e9
                    }')
                echo "$line" >>"$CSV"
                awk -F, -v n="$n" -v t="$total_runs" '{printf "[%d/%d] round %s %-7s %-11s offered %7d: sent %7.0f/s replies %7.0f/s (%6.2f%%) core %.2f us/reply; srv rx_dropped %d gen tx_dropped %d xdp drops %d\n", n, t, $1, $2, $3, $4, $8, $9, $10, $15, $16, $17, $18}' <<<"$line" >&2
                echo "round $round $g $s offered $q: sent $sent received $recv; server if rx_dropped +$((i1a - i0a)), xdp drops/errors +$((i1c - i0c)); generator if tx_dropped +$((i1b - i0b))" >>"$IO"
                if is_kdns "$s"; then
                    "$KCTL" --socket "$RIG_DIR/$s.sock" stats --json >"$RIG_DIR/s1.json" 2>/dev/null &&
                        python3 "$HERE/json_delta.py" "$RIG_DIR/s0.json" "$RIG_DIR/s1.json" "  $s:" >>"$IO" || true
                fi
                sleep 0.5
            done
        done
    done
done
for s in "${SYS[@]}"; do xsys_stop "$s"; done
for s in "${SYS[@]}"; do cp "$RIG_DIR/$s.log" "$OUT/tier-$TAG.$s.log" 2>/dev/null || true; done
python3 "$BENCH_DIR/summarize.py" xdp-tier "$CSV" | tee "$OUT/tier-$TAG.md"
# the plot needs matplotlib: Debian's python3 has it when python3 on PATH does not
py=python3
python3 -c 'import matplotlib' 2>/dev/null || py=/usr/bin/python3
"$py" "$BENCH_DIR/summarize.py" xdp-tier-plot "$CSV" "$OUT/tier-$TAG.png" || log "no plot (matplotlib missing?)"
