#!/usr/bin/env bash
# Propagation time of a local-record change to every worker, as kdns-ctl
# reports it (`propagated_ms`: from sending the new snapshot to the last
# worker's acknowledgement), over CHANGES changes: kdns in socket mode
# (--io udp --workers 2, plus the TCP server: 3 workers acknowledge), idle,
# in a network namespace of its own. The changes alternate
# `kdns-ctl records add pK.kdns A ...` and `kdns-ctl instance add web ...`.
# Also prints the wall time of each kdns-ctl call (process start, HTTP over
# the socket, snapshot build, state-file write with fsync, propagation).
#
#   bench/records/propagation.sh [-n CHANGES (50)] [-o DIR] [-t TAG]
# Writes DIR/propagation-TAG.csv and prints min/median/p90/max.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CHANGES=50
# shellcheck source=../lib/rig.sh
source "$HERE/../lib/rig.sh"
source "$HERE/lib.sh"
rig_opts "n=CHANGES o=OUT t=TAG" "$@"
rig_netns
rig_out records propagation
rec_kdns prop --io udp --workers 2 --domain kdns --state-file "$RIG_DIR/state.json" --log-level warn
CTL=("$KCTL" --socket "$RIG_DIR/prop.sock")
"${CTL[@]}" service add web --mode all >/dev/null
{
    echo "# kdns: $KDNS_VERSION; kernel $(uname -r); $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "change,command,serial,workers,workers_acked,propagated_ms,wall_ms"
} >"$CSV"
for ((k = 1; k <= CHANGES; k++)); do
    if ((k % 2)); then
        cmd=(records add "p$k.kdns" A "10.5.$((k / 250)).$((k % 250 + 1))")
    else
        cmd=(instance add web "c$k" "10.60.$((k / 250)).$((k % 250 + 1))")
    fi
    t0=$(date +%s%N)
    j=$("${CTL[@]}" "${cmd[@]}" --json)
    t1=$(date +%s%N)
    python3 -c 'import json, sys
j = json.loads(sys.argv[1])
print(",".join([sys.argv[2], sys.argv[3], str(j["serial"]), str(j["workers"]), str(j["workers_acked"]), "%.3f" % j["propagated_ms"], "%.3f" % ((int(sys.argv[5]) - int(sys.argv[4])) / 1e6)]))' \
        "$j" "$k" "${cmd[0]} ${cmd[1]}" "$t0" "$t1" >>"$CSV"
    sleep 0.05
done
sys_stop "$KNAME"
acked=$(awk -F, 'NR > 2 && $4 != $5 { bad++ } END { print bad + 0 }' "$CSV")
read -r n mn md p9 mx mean < <(stats_of "$(awk -F, 'NR > 2 { print $6 }' "$CSV" | tr '\n' ' ')")
read -r _ wmn wmd wp9 wmx wmean < <(stats_of "$(awk -F, 'NR > 2 { print $7 }' "$CSV" | tr '\n' ' ')")
workers=$(awk -F, 'NR == 3 { print $4 }' "$CSV")
{
    echo "propagated_ms over $n changes ($workers workers: 2 UDP + TCP; changes not acknowledged by every worker: $acked):"
    echo "  min $mn  median $md  p90 $p9  max $mx  (mean $mean)"
    echo "kdns-ctl wall time per change, ms: min $wmn  median $wmd  p90 $wp9  max $wmx  (mean $wmean)"
} | tee "$OUT/propagation-$TAG.txt"
echo "results: $CSV" >&2
