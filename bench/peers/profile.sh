#!/usr/bin/env bash
# Where the server core's time goes, per system, at a fixed offered load.
#
#   bench/peers/profile.sh [-q QPS] [-d SECONDS] [-r ROUNDS] [-o DIR] [-t TAG]
#
# Same rig as sweep.sh (kdns socket mode, Unbound, dnsdist with its packet
# cache; all on core 0, kxdpgun on core 1), cache-hit queries at QPS
# (default 100000) for SECONDS (default 5), ROUNDS (default 3) interleaved:
#  1. `perf stat -e task-clock,context-switches` on each server process
#     during the run: CPU time per reply and replies per context switch;
#  2. `perf record -e cpu-clock -g` on each server process for one more run,
#     reported by DSO and by symbol (kernel and user) in DIR/profile-TAG-SYSTEM.txt.
# The kernel here has no IRQ time accounting: softirq packet work that runs
# on core 0 while a server runs is counted to that server.
# Writes DIR/profile-TAG.csv and DIR/profile-TAG.md (DIR: by default
# bench/results/peers/profile-TAG).
set -euo pipefail
# shellcheck source=../lib/rig.sh
source "$(dirname "$0")/../lib/rig.sh"
rig_session "$0" "$@"
QPS=100000
DUR=5
ROUNDS=3
rig_opts "q=QPS d=DUR r=ROUNDS o=OUT t=TAG" "$@"
rig_out peers profile
rig_up
rig_queries "$RIG_DIR/hit.txt" 1000 n
SYS=(kdns unbound dnsdist)
for s in "${SYS[@]}"; do sys_start "$s"; done
for s in "${SYS[@]}"; do warm "${SYS_ADDR[$s]}" "$RIG_DIR/hit.txt"; done

echo "round,system,offered_qps,sent,received,task_clock_ms,context_switches,us_per_reply,replies_per_switch" >"$CSV"
for ((round = 1; round <= ROUNDS; round++)); do
    rig_rotation "$round"
    for s in "${ORDER[@]}"; do
        pid=${SYS_PIDS[$s]}
        perf stat -x, -e task-clock,context-switches -p "$pid" -o "$RIG_DIR/perfstat.txt" &
        pp=$!
        read -r sent recv < <(gen_kxdpgun "${SYS_ADDR[$s]}" "$QPS" "$DUR" "$RIG_DIR/hit.txt")
        kill -INT "$pp"
        wait "$pp" 2>/dev/null || true
        tc=$(awk -F, '$3 ~ /task-clock/ {print $1}' "$RIG_DIR/perfstat.txt")
        cs=$(awk -F, '$3 ~ /context-switches/ {print $1}' "$RIG_DIR/perfstat.txt")
        awk -v r="$round" -v s="$s" -v q="$QPS" -v sent="$sent" -v recv="$recv" -v tc="${tc:-0}" -v cs="${cs:-0}" 'BEGIN {
            printf "%d,%s,%d,%d,%d,%.1f,%d,%.3f,%.1f\n", r, s, q, sent, recv, tc, cs, recv ? tc * 1000 / recv : 0, cs ? recv / cs : 0
        }' | tee -a "$CSV" >&2
        sleep 0.5
    done
done

for s in "${SYS[@]}"; do
    pid=${SYS_PIDS[$s]}
    perf record -e cpu-clock -F 2999 -g -p "$pid" -o "$RIG_DIR/perf-$s.data" >/dev/null 2>&1 &
    pp=$!
    gen_kxdpgun "${SYS_ADDR[$s]}" "$QPS" "$DUR" "$RIG_DIR/hit.txt" >/dev/null
    kill -INT "$pp"
    wait "$pp" 2>/dev/null || true
    {
        echo "# perf record -e cpu-clock -g -p <$s> during kxdpgun $QPS qps for $DUR s (server core $SRV_CORE)"
        echo "## by DSO"
        timeout 120 perf report -i "$RIG_DIR/perf-$s.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v -e '^$' -e '^#' | head -15 || true
        echo "## by symbol (self)"
        timeout 120 perf report -i "$RIG_DIR/perf-$s.data" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -v -e '^$' -e '^#' | head -60 || true
        echo "## call chains of the top kernel entries (caller view, 3% cut-off)"
        timeout 120 perf report -i "$RIG_DIR/perf-$s.data" --no-children --sort sym --stdio -g caller,3,0.5,callee --percent-limit 3 2>/dev/null | grep -v -e '^$' -e '^#' | head -150 || true
    } >"$OUT/profile-$TAG-$s.txt"
done

python3 "$BENCH_DIR/summarize.py" peers-profile "$CSV" "$DUR" | tee "$OUT/profile-$TAG.md"
