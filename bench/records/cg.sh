#!/usr/bin/env bash
# Instructions per local-record answer vs per cache hit, counted by
# callgrind (repeatable, unlike wall-clock time on a shared machine).
#
# Builds `recloop` (bench/src/bin/recloop.rs, package kdns-bench) in
# release, runs it under `valgrind --tool=callgrind` with N=0 and N queries
# for each mode, and prints (Ir(N) - Ir(0)) / N:
#   hit         cache hit (records snapshot in place: domain kdns, 98 services)
#   hit-norec   cache hit, no records (no local domains)
#   local       local-record mix: web.kdns (3 A), web-1/2/3.kdns (1 A), in turn
#   local-svc   web.kdns alone (3 A records, rotated)
#   local-inst  web-1..3.kdns (1 A record)
# All through Engine::handle_query alone (no frame parse/turnaround).
#
# Usage: bench/records/cg.sh [N]     (default N=100000)
# Env:   OUT=dir (default bench/results/records/cg-<date>), VALGRIND=path
# Writes OUT/cg-<date>.csv (mode,N,ir0,irN,ir_per_query) and prints a table.
set -euo pipefail
N=${1:-100000}
HERE=$(cd "$(dirname "$0")" && pwd)
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=${OUT:-$HERE/../results/records/cg-$STAMP}
VALGRIND=${VALGRIND:-valgrind}
command -v "$VALGRIND" >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
mkdir -p "$OUT"
(cd "$HERE/../.." && nice -n 10 cargo build --release --quiet -p kdns-bench --bin recloop)
TMP=$(mktemp -d /tmp/kdns-records-cg.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# Run a copy: a later build may replace target/release/recloop.
BIN=$TMP/recloop
cp "$HERE/../../target/release/recloop" "$BIN"

ir() { # ir FILE ARGS... -> total Ir of one run
    local f=$1
    shift
    "$VALGRIND" --tool=callgrind --callgrind-out-file="$f" "$BIN" "$@" >"$f.out" 2>"$f.log" || {
        cat "$f.out" "$f.log" >&2
        exit 1
    }
    awk '/^summary:/ { print $2 }' "$f"
}

CSV=$OUT/cg-$STAMP.csv
echo "# $(rustc --version); kdns-core git $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null)$(git -C "$HERE" diff --quiet HEAD -- "$HERE/../../kdns-core" 2>/dev/null || echo +uncommitted); valgrind $("$VALGRIND" --version)" >"$CSV"
echo "mode,n,ir0,irn,ir_per_query" >>"$CSV"
printf '%-11s %14s %14s %12s\n' mode "Ir(0)" "Ir($N)" "Ir/query"
for mode in hit hit-norec local local-svc local-inst; do
    base=$(ir "$TMP/cg.$mode.0" 0 "$mode")
    full=$(ir "$TMP/cg.$mode.$N" "$N" "$mode")
    per=$(awk -v a="$full" -v b="$base" -v n="$N" 'BEGIN { printf "%.1f", (a - b) / n }')
    echo "$mode,$N,$base,$full,$per" >>"$CSV"
    printf '%-11s %14s %14s %12s\n' "$mode" "$base" "$full" "$per"
done
awk -F, '$1 == "hit" { h = $5 } $1 == "local" { l = $5 } END { if (h && l) printf "local mix / cache hit: %.2f (instructions per answer)\n", l / h }' "$CSV"
echo "results: $CSV"
