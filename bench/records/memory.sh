#!/usr/bin/env bash
# Memory for 10k services x 10 instances:
#  1. the unit test's estimate of the snapshot alone
#     (cargo test -p kdns-core --release records::tests::ten_thousand -- --nocapture),
#     and the snapshot's real heap, counted by a counting allocator
#     (bench/src/bin/snapmem.rs);
#  2. the daemon's resident memory (VmRSS, VmHWM from /proc/PID/status) with
#     a records file of SERVICES services x INSTANCES instances (one IPv4
#     address each, no health check) vs an empty records file, both
#     --io udp --workers 2 --domain kdns, 2 s after the control socket
#     answers; then after one runtime change (a second snapshot is built
#     and the first one freed), with the wall time of that change
#     (kdns-ctl records add: rebuild of the whole snapshot, state file,
#     propagation), and after 10 changes. Each daemon is started ROUNDS
#     times (alternating).
#
#   bench/records/memory.sh [-s SERVICES (10000)] [-i INSTANCES (10)] [-r ROUNDS (2)] [-U] [-o DIR] [-t TAG]
#     -U  skip the unit test (step 1)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SERVICES=10000
INSTANCES=10
ROUNDS=2
UNIT=1
# shellcheck source=../lib/rig.sh
source "$HERE/../lib/rig.sh"
source "$HERE/lib.sh"
rig_opts "s=SERVICES i=INSTANCES r=ROUNDS U:UNIT=0 o=OUT t=TAG" "$@"
rig_out records memory
TXT="$OUT/memory-$TAG.txt"
: >"$TXT"
if ((UNIT)); then
    log "unit test (release build of kdns-core's tests)"
    (cd "$RIG_ROOT" && nice -n 10 cargo test -q -p kdns-core --release records::tests::ten_thousand -- --nocapture 2>&1) |
        grep -E '10k services|test result' | tee -a "$TXT"
fi
# The snapshot's real heap (counting allocator) next to Snapshot::memory().
(cd "$RIG_ROOT" && nice -n 10 cargo build --release --quiet -p kdns-bench --bin snapmem)
"$RIG_ROOT/target/release/snapmem" "$SERVICES" "$INSTANCES" | tee -a "$TXT"
rig_netns
python3 - "$RIG_DIR/big.toml" "$SERVICES" "$INSTANCES" <<'EOF'
import ipaddress, sys
path, ns, ni = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "w") as f:
    for i in range(ns):
        inst = ", ".join(
            '{ id = "c%d-%d", addrs = ["%s"] }' % (i, k, ipaddress.IPv4Address(0x0A000000 + i * 16 + k)) for k in range(ni)
        )
        f.write('[[service]]\nname = "svc%d"\ninstances = [%s]\n' % (i, inst))
EOF
: >"$RIG_DIR/empty.toml"
log "records file: $SERVICES services x $INSTANCES instances, $(du -h "$RIG_DIR/big.toml" | cut -f1)"

echo "# kdns: $KDNS_VERSION; kernel $(uname -r); --io udp --workers 2 --domain kdns; records file $SERVICES x $INSTANCES ($(du -h "$RIG_DIR/big.toml" | cut -f1))" >>"$TXT"
printf '%-6s %-5s %10s %10s %10s %12s %12s %12s\n' round file rss_kb hwm_kb threads rss_after_kb change_ms rss_10ch_kb | tee -a "$TXT"
for ((r = 1; r <= ROUNDS; r++)); do
    for f in empty big; do
        rm -f "$RIG_DIR/state.json"
        t0=$(date +%s%N)
        rec_kdns "$f$r" --io udp --workers 2 --domain kdns --records-file "$RIG_DIR/$f.toml" --state-file "$RIG_DIR/state.json" --log-level info
        t1=$(date +%s%N)
        sleep 2
        rss=$(status_kb "$KPID" VmRSS)
        hwm=$(status_kb "$KPID" VmHWM)
        thr=$(status_kb "$KPID" Threads)
        c0=$(date +%s%N)
        "$KCTL" --socket "$RIG_DIR/$f$r.sock" records add "probe.kdns" A 10.5.0.1 >/dev/null
        c1=$(date +%s%N)
        sleep 1
        rss2=$(status_kb "$KPID" VmRSS)
        for k in $(seq 2 10); do "$KCTL" --socket "$RIG_DIR/$f$r.sock" records add "probe$k.kdns" A 10.5.0.$k >/dev/null; done
        sleep 1
        rss10=$(status_kb "$KPID" VmRSS)
        loaded=$(sed 's/\x1b\[[0-9;]*m//g' "$RIG_DIR/$f$r.log" | grep -o 'local records: .*' | head -1)
        printf '%-6s %-5s %10s %10s %10s %12s %12s %12s\n' "$r" "$f" "$rss" "$hwm" "$thr" "$rss2" "$(((c1 - c0) / 1000000))" "$rss10" | tee -a "$TXT"
        echo "        (ready after $(((t1 - t0) / 1000000)) ms; $loaded)" | tee -a "$TXT"
        sys_stop "$KNAME"
    done
done
awk '$2 == "empty" { e[$1] = $3; ea[$1] = $6; e10[$1] = $8 } $2 == "big" { b[$1] = $3; ba[$1] = $6; b10[$1] = $8 }
     END { for (r in b) printf "round %s: RSS growth %.1f MiB at start, %.1f MiB after one change, %.1f MiB after 10 changes\n", r, (b[r] - e[r]) / 1024, (ba[r] - ea[r]) / 1024, (b10[r] - e10[r]) / 1024 }' "$TXT" |
    sort | tee -a "$TXT"
echo "results: $TXT" >&2
