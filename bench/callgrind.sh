#!/usr/bin/env bash
# Instructions per cache-hit query, counted by callgrind (repeatable, unlike
# wall-clock time on a shared machine).
#
# Builds bench/src/bin/hitloop.rs in release, runs it under callgrind with
# N=0 and N=$N queries for each mode, and prints (Ir(N) - Ir(0)) / N:
#   frame        parse_udp_frame + handle_query + turn_around (AF_XDP path)
#   engine-only  handle_query alone
# A third run collects only inside the measured loop (--toggle-collect);
# its profile goes to $OUT/annotate-<mode>.txt (callgrind_annotate: top
# functions) and $OUT/lines-<mode>.txt (bench/cg_lines.py: cost per
# kdns-core source line, the useful view with LTO inlining).
#
# Usage: bench/callgrind.sh [N]      (default N=200000)
# Env:   OUT=dir (default target/callgrind), VALGRIND=path (default valgrind)
set -euo pipefail

N=${1:-200000}
cd "$(dirname "$0")/.."
OUT=${OUT:-target/callgrind}
VALGRIND=${VALGRIND:-valgrind}
mkdir -p "$OUT"

command -v "$VALGRIND" >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -p kdns-bench --bin hitloop
# Run (and resolve addresses in) a copy: a later cargo build or bench may
# replace target/release/hitloop.
BIN=$OUT/hitloop
cp ./target/release/hitloop "$BIN"

# Total Ir of one run: callgrind's "summary:" line. Extra callgrind options
# come from the array CG_OPTS.
CG_OPTS=()
ir() {
    local file=$1
    shift
    "$VALGRIND" --tool=callgrind --callgrind-out-file="$file" ${CG_OPTS[@]+"${CG_OPTS[@]}"} "$BIN" "$@" >/dev/null 2>"$file.log" \
        || { cat "$file.log" >&2; exit 1; }
    awk '/^summary:/ { print $2 }' "$file"
}

for mode in frame engine-only; do
    flag=()
    label="frame path: parse + engine + turnaround"
    if [ "$mode" = engine-only ]; then
        flag=(--engine-only)
        label="engine only: handle_query"
    fi
    base=$(ir "$OUT/callgrind.$mode.0" 0 ${flag[@]+"${flag[@]}"})
    full=$(ir "$OUT/callgrind.$mode.$N" "$N" ${flag[@]+"${flag[@]}"})
    per=$(awk -v a="$full" -v b="$base" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }')
    echo "$mode: Ir(0)=$base Ir($N)=$full"
    echo "$per instructions per cache-hit query ($label)"
    # The loop alone (callgrind collects only inside hitloop::run): the same
    # figure without the subtraction, and a profile free of the setup.
    CG_OPTS=(--toggle-collect='hitloop::run' --dump-instr=yes)
    loop=$(ir "$OUT/callgrind.$mode.loop" "$N" ${flag[@]+"${flag[@]}"})
    CG_OPTS=()
    echo "  (cross-check, loop only: $(awk -v a="$loop" -v n="$N" 'BEGIN { printf "%.1f", a / n }') per query)"
    if command -v callgrind_annotate >/dev/null; then
        # Exclusive and inclusive cost by function (divide by N for per
        # query); callgrind_annotate splits a function by the source file of
        # its inlined code.
        {
            echo "=== $mode, N=$N, loop only: $loop Ir = $(awk -v a="$loop" -v n="$N" 'BEGIN { printf "%.1f", a / n }') per query ==="
            echo "=== exclusive Ir by function ==="
            callgrind_annotate "$OUT/callgrind.$mode.loop" 2>/dev/null | sed -n '/file:function/,$p' | head -70 || true
            echo
            echo "=== inclusive Ir by function ==="
            callgrind_annotate --inclusive=yes "$OUT/callgrind.$mode.loop" 2>/dev/null | sed -n '/file:function/,$p' | head -60 || true
            echo
        } >"$OUT/annotate-$mode.txt"
        echo "  (profile of the loop: $OUT/annotate-$mode.txt)"
    fi
    # Per project source line, inlined std code and libc mem* calls counted
    # on the line that uses them (needs python3 and binutils' addr2line).
    if command -v python3 >/dev/null && command -v addr2line >/dev/null; then
        python3 bench/cg_lines.py "$OUT/callgrind.$mode.loop" "$BIN" "$N" 80 >"$OUT/lines-$mode.txt"
        echo "  (per source line: $OUT/lines-$mode.txt)"
    fi
done
