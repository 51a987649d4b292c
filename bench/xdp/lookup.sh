#!/usr/bin/env bash
# The single-lookup comparison users run by hand: hyperfine -N over N runs of
# `dig @ADDR NAME` and `kdig @ADDR NAME` from the generator (client)
# namespace, pinned to the generator core, against kdns --io xdp, kdns
# --io udp and Unbound (servers on the server core, the rig of sweep.sh).
# NAME is in every cache (warmed first). A baseline row times `dig -v` /
# `kdig -V` (process start-up and exit, no query): the lookup rows are
# mostly that start-up cost, not the server's answer time.
#
#   bench/xdp/lookup.sh [-n RUNS (2000)] [-s "SYSTEMS"] [-o DIR] [-t TAG] [-W]
# Needs hyperfine (Debian package hyperfine) besides the rig's packages.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=2000
SYSTEMS="kdns-xdp kdns-udp unbound"
NAME=n0.bench.test
# shellcheck source=../lib/rig.sh
source "$HERE/../lib/rig.sh"
rig_session "$0" "$@"
rig_opts "n=RUNS s=SYSTEMS o=OUT t=TAG W:RIG_NO_WAIT=1" "$@"
command -v hyperfine >/dev/null || die "hyperfine missing (apt-get install hyperfine)"
rig_out xdp lookup
rig_up
xpair_add 1
rig_queries "$RIG_DIR/hit.txt" 1000 n
read -r -a SYS <<<"$SYSTEMS"
for s in "${SYS[@]}"; do xsys_start "$s"; warm "${ADDR_OF[$s]}" "$RIG_DIR/hit.txt"; done
echo "tool,target,runs,mean_ms,stddev_ms,median_ms,min_ms,p90_ms,p99_ms,max_ms" >"$CSV"

# hf LABEL TARGET CMD...: hyperfine in the client ns on the generator core
hf() {
    local tool=$1 target=$2 j="$RIG_DIR/hf.json"
    shift 2
    in_gen nice -n "$RIG_NICE" taskset -c "$GEN_CORE" hyperfine -N --style none --runs "$RUNS" --warmup 50 \
        --export-json "$j" "$*" >"$RIG_DIR/hf.out" 2>&1 || { cat "$RIG_DIR/hf.out" >&2; die "hyperfine failed: $*"; }
    python3 - "$j" "$tool" "$target" "$RUNS" >>"$CSV" <<'EOF'
import json, sys, statistics
r = json.load(open(sys.argv[1]))["results"][0]
t = sorted(x * 1e3 for x in r["times"])
q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
print(f"{sys.argv[2]},{sys.argv[3]},{len(t)},{statistics.mean(t):.3f},{statistics.pstdev(t):.3f},{statistics.median(t):.3f},{t[0]:.3f},{q(0.9):.3f},{q(0.99):.3f},{t[-1]:.3f}")
EOF
    tail -1 "$CSV" >&2
}

hf dig "(start-up only: dig -v)" dig -v
hf kdig "(start-up only: kdig -V)" kdig -V
for s in "${SYS[@]}"; do
    a=${ADDR_OF[$s]}
    hf dig "$s" dig +tries=1 +time=1 "@$a" "$NAME" A
    hf kdig "$s" kdig +retry=0 +timeout=1 "@$a" "$NAME" A
done
for s in "${SYS[@]}"; do xsys_stop "$s"; done
python3 "$BENCH_DIR/summarize.py" xdp-lookup "$CSV" | tee "$OUT/lookup-$TAG.md"
