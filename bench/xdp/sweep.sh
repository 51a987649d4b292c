#!/usr/bin/env bash
# AF_XDP cache-hit capacity sweep: kdns --io xdp (one AF_XDP worker) vs Knot
# DNS in XDP mode vs Unbound vs dnsdist (packet cache) vs the minimal AF_XDP
# responder (bench/src/bin/reflector.rs, the rig's ceiling). All servers on core 0,
# kxdpgun on core 1, the same cache-hit query file (n<i>.bench.test A,
# 1000 names) for all; single-queue veth pairs, copy mode (veth has no
# zero-copy). See rig_xdp.sh for the pairs and the packet steering.
#
#   bench/xdp/sweep.sh [options]
#     -r N          rounds (default 3); systems interleaved at every rate,
#                   order rotated each round (A B C D E, B C D E A, ...)
#     -d SECONDS    length of each load run (default 5)
#     -k "RATES"    kxdpgun offered rates in qps (default
#                   "50000 100000 150000 200000 250000 300000 400000 500000
#                    600000 700000 800000 1000000 1200000 1400000")
#     -s "SYSTEMS"  subset of "kdns-xdp knot-xdp unbound dnsdist reflector";
#                   also xdptx (the XDP_TX reflector, bench/xdp/xdptx.bpf.c)
#                   and kdns-xdp-b, a second kdns build (KDNS_B_BIN) on its
#                   own pair, for an interleaved A/B of two builds
#     -o DIR        results directory (default bench/results/xdp/sweep-TAG)
#     -t TAG        file name tag (default: date-time)
#     -g GEN        generator: kxdpgun (default) or livegen (LIVEGEN=binary,
#                   LIVEGEN_ARGS e.g. "-B 128"; see rig.sh gen_livegen)
#     -W            do not wait for other benchmarks to finish
# Env: KDNS_XDP_TOML (extra kdns config, e.g. '[xdp]\nbusy_poll = true'),
#      REFLECTOR_ARGS (e.g. "--kicks 1"), XDP_SRV_NAPI=0, plus rig.sh's knobs.
#
# Needs root, Debian packages unbound dnsdist dnsperf knot knot-dnsutils
# dnsutils linux-perf ethtool, and the binaries:
#   cargo build --release -p kdns -p kdns-ctl
#   cargo build --release -p kdns-bench --bin reflector
# Writes DIR/sweep-TAG.csv (one line per run) and DIR/sweep-TAG.md (medians,
# saturation, answered at 2x, ratios vs targets), prints the summary.
set -euo pipefail
ROUNDS=3
DUR=5
RATES="50000 100000 150000 200000 250000 300000 400000 500000 600000 700000 800000 1000000 1200000 1400000"
SYSTEMS="kdns-xdp knot-xdp unbound dnsdist reflector"
# shellcheck source=../lib/rig.sh
source "$(dirname "$0")/../lib/rig.sh"
rig_session "$0" "$@"
GEN=kxdpgun
rig_opts "r=ROUNDS d=DUR k=RATES s=SYSTEMS g=GEN o=OUT t=TAG W:RIG_NO_WAIT=1" "$@"
[[ $GEN == kxdpgun || $GEN == livegen ]] || die "-g: kxdpgun or livegen, not $GEN"
rig_out xdp sweep
read -r -a SYS <<<"$SYSTEMS"
[[ " $SYSTEMS " == *" knot-xdp "* ]] && knotd_path
rig_up
[[ " $SYSTEMS " == *" reflector "* ]] && rig_reflector MUST=1
xpairs_for "${SYS[@]}"
rig_queries "$RIG_DIR/hit.txt" 1000 n
for s in "${SYS[@]}"; do xsys_start "$s"; done
log "systems up: $(for s in "${SYS[@]}"; do printf '%s=%s ' "$s" "${ADDR_OF[$s]}"; done)"
{
    echo "# kdns: $KDNS_VERSION"
    echo "# knotd: $(knotd -V 2>&1 | head -1); unbound: $(unbound -V 2>&1 | head -1); dnsdist: $(dnsdist --version 2>&1 | head -1); kxdpgun: $(kxdpgun -V 2>&1 | head -1)"
    echo "# kernel $(uname -r); $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'); $(nproc) cores; server core $SRV_CORE, generator core $GEN_CORE; XDP_SRV_NAPI=${XDP_SRV_NAPI:-1} KDNS_XDP_TOML='${KDNS_XDP_TOML:-}' REFLECTOR_ARGS='${REFLECTOR_ARGS:-}'"
    echo "round,system,offered_qps,duration_s,sent,received,sent_qps,reply_qps,answered_pct,proc_cpu_s,napi_cpu_s,core_busy_s,us_per_reply_proc_napi,us_per_reply_core"
} >"$CSV"
for s in "${SYS[@]}"; do grep -h -i -E 'AF_XDP|copy|zero|xdp' "$RIG_DIR/$s.log" 2>/dev/null | head -3 | sed "s/^/[$s] /" >&2 || true; done
total_runs=$(($(wc -w <<<"$RATES") * ${#SYS[@]} * ROUNDS))
log "$total_runs runs of $DUR s; results in $CSV"
TCK=$(getconf CLK_TCK)
n=0
for ((round = 1; round <= ROUNDS; round++)); do
    rig_rotation "$round"
    for s in "${ORDER[@]}"; do [[ $s == xdptx ]] || warm "${ADDR_OF[$s]}" "$RIG_DIR/hit.txt"; done
    for q in $RATES; do
        for s in "${ORDER[@]}"; do
            xsys_alive "$s"
            read -r c0 n0 k0 < <(srv_cpu "$s")
            read -r sent recv < <("gen_$GEN" "${ADDR_OF[$s]}" "$q" "$DUR" "$RIG_DIR/hit.txt")
            read -r c1 n1 k1 < <(srv_cpu "$s")
            n=$((n + 1))
            awk -v round="$round" -v s="$s" -v q="$q" -v d="$DUR" -v sent="$sent" -v recv="$recv" \
                -v c=$((c1 - c0)) -v nn=$((n1 - n0)) -v k=$((k1 - k0)) -v tck="$TCK" 'BEGIN {
                    printf "%d,%s,%d,%.3f,%d,%d,%.0f,%.0f,%.2f,%.3f,%.3f,%.3f,%.3f,%.3f\n", round, s, q, d, sent, recv,
                        sent / d, recv / d, sent ? 100 * recv / sent : 0, c / 1e9, nn / 1e9, k / tck,
                        recv ? (c + nn) / 1e3 / recv : 0, recv ? k / tck * 1e6 / recv : 0
                }' | tee -a "$CSV" | awk -F, -v n="$n" -v t="$total_runs" '{printf "[%d/%d] round %s %-9s offered %7d: sent %7.0f/s replies %7.0f/s (%6.2f%%) cpu %.2f us/reply (core %.2f)\n", n, t, $1, $2, $3, $7, $8, $9, $13, $14}' >&2
            sleep 0.5
        done
    done
done
if [[ " ${SYS[*]} " == *" kdns-xdp "* ]]; then
    "$RIG_DIR/kdns-ctl" --socket "$RIG_DIR/kdns-xdp.sock" stats --json >"$OUT/sweep-$TAG.kdns-xdp-stats.json" 2>/dev/null || true
fi
for s in "${SYS[@]}"; do xsys_stop "$s"; done
for s in "${SYS[@]}"; do cp "$RIG_DIR/$s.log" "$OUT/sweep-$TAG.$s.log" 2>/dev/null || true; done
python3 "$BENCH_DIR/summarize.py" xdp-sweep "$CSV" | tee "$OUT/sweep-$TAG.md"
