#!/usr/bin/env bash
# Local-record answers vs cache hits on the AF_XDP rig (bench/lib/rig.sh):
# one kdns --io xdp (one
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
# Runs only when no other benchmark does (rig_wait_quiet of bench/lib/rig.sh:
# another rig's namespace, a dnsperf or kxdpgun not ours): waits, polling
# every 30 s, up to WAIT_MAX seconds (default 1800), then gives up (exit 3).
# Checks again before every round and pauses while another one runs.
#
#   bench/records/rig.sh [-r ROUNDS (3)] [-d SECONDS (5)] [-k "RATES"] [-o DIR] [-t TAG] [-W]
#     -W  do not wait for other benchmarks
#     -o DIR  results directory (default bench/results/records/rig-TAG)
# Env: KDNS_BIN / KDNS_CTL_BIN (default target/release/kdns{,-ctl}; a build
#      with --records-file is needed), WAIT_MAX, plus rig.sh's knobs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=3
DUR=5
RATES="200000 300000 400000 500000 600000 800000 1000000 1200000"
RIG_WAIT_MAX=${RIG_WAIT_MAX:-${WAIT_MAX:-1800}}
# shellcheck source=../lib/rig.sh
source "$HERE/../lib/rig.sh"
rig_session "$0" "$@"
rig_opts "r=ROUNDS d=DUR k=RATES o=OUT t=TAG W:RIG_NO_WAIT=1" "$@"

if [[ -z ${KDNS_BIN:-} ]] && ! "$RIG_ROOT/target/release/kdns" --help 2>/dev/null | grep -q -- '--records-file'; then
    die "target/release/kdns has no --records-file: cargo build --release -p kdns -p kdns-ctl (or set KDNS_BIN/KDNS_CTL_BIN)"
fi
rig_out records rig
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
warm "${ADDR_OF[kdns-xdp]}" "$RIG_DIR/hit.txt"
grep -h -i -E 'AF_XDP on|local records' "$RIG_DIR/kdns-xdp.log" | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^/[kdns-xdp] /' >&2 || true

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
    rig_wait_quiet
    for q in "${RATE[@]}"; do
        if (((n / 2 + round) % 2)); then kinds=(hit local); else kinds=(local hit); fi
        for kind in "${kinds[@]}"; do
            kill -0 "$PID" 2>/dev/null || die "kdns-xdp (pid $PID) died; see $RIG_DIR/kdns-xdp.log"
            read -r h0 l0 f0 < <(kdns_stat "$SOCK" totals.cache_hits totals.local_answers totals.forwarded)
            c0=$(cpu_ns "$PID")
            n0=$(tid_cpu_ns "$np")
            read -r sent recv < <(gen_kxdpgun "$A" "$q" "$DUR" "$RIG_DIR/$kind.txt")
            c1=$(cpu_ns "$PID")
            n1=$(tid_cpu_ns "$np")
            read -r h1 l1 f1 < <(kdns_stat "$SOCK" totals.cache_hits totals.local_answers totals.forwarded)
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
python3 "$BENCH_DIR/summarize.py" records-rig "$CSV" | tee "$OUT/rig-$TAG.md"
