# shellcheck shell=bash
# Helpers of bench/records/{propagation,memory}.sh: one network namespace of
# our own (kr<pid>), kdns daemons started in it by pid, everything removed
# by rec_cleanup (the EXIT trap), also on failure or Ctrl-C.
#
# Env: KDNS_BIN, KDNS_CTL_BIN (default target/release/kdns{,-ctl}; copied
# into the run's temp dir so a concurrent rebuild cannot swap them).

REC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REC_NS="kr$$"
REC_DIR=""
REC_PIDS=()

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

rec_cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${REC_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${REC_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$REC_NS"; then
        for pid in $(ip netns pids "$REC_NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$REC_NS" 2>/dev/null || true
    fi
    if [[ -n $REC_DIR && -d $REC_DIR ]]; then
        if [[ ${REC_KEEP:-0} == 1 || $rc != 0 ]]; then log "files kept in $REC_DIR"; else rm -rf "$REC_DIR"; fi
    fi
    exit "$rc"
}

rec_up() {
    [[ $(id -u) -eq 0 ]] || die "run as root (network namespace)"
    trap rec_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    REC_DIR=$(mktemp -d /tmp/kdns-records-bench.XXXXXX)
    local kb=${KDNS_BIN:-$REC_ROOT/target/release/kdns} cb=${KDNS_CTL_BIN:-$REC_ROOT/target/release/kdns-ctl}
    [[ -x $kb && -x $cb ]] || die "kdns binaries not found ($kb, $cb): cargo build --release -p kdns -p kdns-ctl"
    "$kb" --help | grep -q -- '--records-file' || die "$kb has no --records-file (an old build?)"
    cp "$kb" "$REC_DIR/kdns"
    cp "$cb" "$REC_DIR/kdns-ctl"
    KDNS="$REC_DIR/kdns"
    KCTL="$REC_DIR/kdns-ctl"
    KDNS_VERSION="$("$KDNS" --version | head -1) (git $(git -C "$REC_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$REC_ROOT" diff --quiet HEAD -- src kdns-core 2>/dev/null || echo "+uncommitted"), sha256 $(sha256sum "$KDNS" | cut -c1-12))"
    ip netns add "$REC_NS"
    ip netns exec "$REC_NS" ip link set lo up
    log "kdns: $KDNS_VERSION; namespace $REC_NS; dir $REC_DIR"
}

# rec_kdns NAME ARGS...: start kdns in the namespace (UDP+TCP on
# 127.0.0.1:53, a backend that is never asked, control socket
# $REC_DIR/NAME.sock, log $REC_DIR/NAME.log); sets KPID; waits until the
# control socket answers (60 s at most).
rec_kdns() {
    local name=$1
    shift
    rm -f "$REC_DIR/$name.sock"
    ip netns exec "$REC_NS" "$KDNS" --listen 127.0.0.1:53 --backend 127.0.0.1:5301 --control-socket "$REC_DIR/$name.sock" \
        "$@" >"$REC_DIR/$name.log" 2>&1 &
    KPID=$!
    REC_PIDS+=("$KPID")
    local i
    for i in $(seq 600); do
        kill -0 "$KPID" 2>/dev/null || die "kdns ($name) exited: $(tail -5 "$REC_DIR/$name.log")"
        "$KCTL" --socket "$REC_DIR/$name.sock" records list --json >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "kdns ($name) did not answer on its control socket within 60 s"
}

# rec_stop PID: SIGTERM, wait (5 s), SIGKILL
rec_stop() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
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
