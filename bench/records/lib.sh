# shellcheck shell=bash
# Helpers of bench/records/{propagation,memory}.sh, on top of ../lib/rig.sh
# (sourced first): rig_netns gives the namespace (kp<pid>s), the copied
# binaries ($KDNS, $KCTL) and the cleanup trap.

# rec_kdns NAME ARGS...: start kdns in the namespace (UDP+TCP on
# 127.0.0.1:53, a backend that is never asked, control socket
# $RIG_DIR/NAME.sock, log $RIG_DIR/NAME.log); sets KPID and KNAME; waits
# until the control socket answers (60 s at most).
rec_kdns() {
    local name=$1 i
    shift
    "$KDNS" --help | grep -q -- '--records-file' || die "$KDNS has no --records-file (an old build?)"
    rm -f "$RIG_DIR/$name.sock" "$RIG_DIR/$name.log"
    ip netns exec "$NS_SRV" "$KDNS" --listen 127.0.0.1:53 --backend 127.0.0.1:5301 --control-socket "$RIG_DIR/$name.sock" \
        "$@" >"$RIG_DIR/$name.log" 2>&1 &
    KPID=$!
    KNAME=$name
    RIG_PIDS+=("$KPID")
    SYS_PIDS[$name]=$KPID
    for i in $(seq 600); do
        kill -0 "$KPID" 2>/dev/null || die "kdns ($name) exited: $(tail -5 "$RIG_DIR/$name.log")"
        "$KCTL" --socket "$RIG_DIR/$name.sock" records list --json >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "kdns ($name) did not answer on its control socket within 60 s"
}

# stats_of "v1 v2 ...": "n min median p90 max mean" (nearest-rank percentiles)
stats_of() {
    tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '
        { v[NR] = $1; s += $1 }
        END {
            n = NR
            if (n == 0) { print "0 - - - - -"; exit }
            m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
            p = int(0.9 * n + 0.999999); if (p < 1) p = 1
            printf "%d %.3f %.3f %.3f %.3f %.3f\n", n, v[1], m, v[p], v[n], s / n
        }'
}
