#!/usr/bin/env bash
# The Docker engine for the tests (tests/docker.rs), Debian's docker.io:
#   scripts/docker-engine.sh start     start dockerd unless its API socket already answers
#   scripts/docker-engine.sh stop      stop dockerd, only if this script started it
#   scripts/docker-engine.sh restart   restart dockerd, only if this script started it
#   scripts/docker-engine.sh status    say whether the engine answers and who started it
#
# An engine that was already running (systemd's docker.service, or one
# started by hand) is used as it is and never stopped or restarted.
# dockerd started here runs with --live-restore, so containers survive a
# restart of the daemon; $KDNS_DOCKERD_ARGS adds arguments (e.g.
# "--cpu-rt-runtime=950000"), which restart keeps. Its pid file, log and
# the mark that this script started it are in $KDNS_DOCKERD_DIR (default
# /run/kdns-test-dockerd).
# The client used is $DOCKER (default /usr/bin/docker, the one that comes
# with Debian's engine).
set -euo pipefail

DIR=${KDNS_DOCKERD_DIR:-/run/kdns-test-dockerd}
DOCKER=${DOCKER:-/usr/bin/docker}
DOCKERD=${DOCKERD:-/usr/sbin/dockerd}
SOCK=/var/run/docker.sock
PIDFILE=$DIR/dockerd.pid
LOG=$DIR/dockerd.log
MARK=$DIR/started-here     # holds the pid of the dockerd this script started
ARGS=$DIR/args             # its extra arguments ($KDNS_DOCKERD_ARGS), reused by restart
WAIT=${KDNS_DOCKERD_WAIT:-60}

say() { echo "docker-engine: $*" >&2; }

answers() {
    [[ -S $SOCK ]] && timeout 10 "$DOCKER" -H "unix://$SOCK" version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# The pid of the dockerd this script started, if it is still that process.
ours() {
    [[ -f $MARK ]] || return 1
    local pid
    pid=$(cat "$MARK")
    [[ -n $pid && -d /proc/$pid ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || return 1
    echo "$pid"
}

start() {
    if answers; then
        if pid=$(ours); then say "dockerd $pid (started by this script) answers on $SOCK"; else say "a Docker engine already answers on $SOCK; using it (not started by this script)"; fi
        return 0
    fi
    if pid=$(ours); then
        say "dockerd $pid (started by this script) runs but does not answer on $SOCK; stopping it first"
        stop_pid "$pid"
    fi
    [[ -x $DOCKERD ]] || { say "$DOCKERD not found; run scripts/setup.sh (package docker.io)"; exit 1; }
    [[ $(id -u) -eq 0 ]] || { say "need root to start dockerd"; exit 1; }
    mkdir -p "$DIR"
    rm -f "$MARK"
    say "starting $DOCKERD --live-restore (log: $LOG)"
    # setsid: the engine must not share the caller's process group (Ctrl-C,
    # or a test harness killing its children, must not take it down).
    # shellcheck disable=SC2086 # extra arguments, split on spaces
    setsid "$DOCKERD" --live-restore --pidfile "$PIDFILE" ${KDNS_DOCKERD_ARGS:-} </dev/null >>"$LOG" 2>&1 &
    local pid=$!
    echo "$pid" >"$MARK"
    echo "${KDNS_DOCKERD_ARGS:-}" >"$ARGS"
    for ((i = 0; i < WAIT * 5; i++)); do
        if answers; then
            say "dockerd $pid answers on $SOCK ($("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null))"
            return 0
        fi
        if [[ ! -d /proc/$pid ]]; then
            rm -f "$MARK"
            say "dockerd exited at start; its log ($LOG):"
            tail -n 40 "$LOG" >&2
            exit 1
        fi
        sleep 0.2
    done
    say "dockerd $pid does not answer on $SOCK after ${WAIT}s; its log ($LOG):"
    tail -n 40 "$LOG" >&2
    stop_pid "$pid"
    rm -f "$MARK"
    exit 1
}

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.2
    done
    say "dockerd $pid did not stop within 30 s of SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
}

stop() {
    local pid
    if ! pid=$(ours); then
        rm -f "$MARK"
        say "no dockerd started by this script is running; nothing to stop"
        return 0
    fi
    say "stopping dockerd $pid"
    stop_pid "$pid"
    rm -f "$MARK"
    # containerd, started by dockerd for itself, goes with it; with
    # --live-restore the containers it runs would outlive it, so the
    # containerd it left behind is stopped too (the tests remove their
    # containers before this).
    local cpid
    for cpid in $(pgrep -x containerd -P 1 2>/dev/null || true); do
        if grep -q -- "/var/run/docker/containerd/containerd.toml" "/proc/$cpid/cmdline" 2>/dev/null; then
            say "stopping the containerd $cpid dockerd $pid had started"
            kill -TERM "$cpid" 2>/dev/null || true
        fi
    done
    say "stopped"
}

restart() {
    local pid
    if ! pid=$(ours); then
        if answers; then
            say "refusing to restart: the Docker engine on $SOCK was not started by this script (restart it with its own service manager)"
        else
            say "refusing to restart: no dockerd started by this script is running (use start)"
        fi
        exit 1
    fi
    # The same extra arguments as before unless new ones are given.
    if [[ -z ${KDNS_DOCKERD_ARGS+set} && -f $ARGS ]]; then
        KDNS_DOCKERD_ARGS=$(cat "$ARGS")
    fi
    say "restarting dockerd $pid${KDNS_DOCKERD_ARGS:+ (with $KDNS_DOCKERD_ARGS)}"
    stop_pid "$pid"
    rm -f "$MARK"
    start
}

status() {
    local pid
    if answers; then
        if pid=$(ours); then echo "running: dockerd $pid, started by this script ($LOG)"; else echo "running: not started by this script"; fi
    else
        if pid=$(ours); then echo "not answering: dockerd $pid started by this script runs but does not answer on $SOCK"; else echo "not running"; fi
        return 3
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
restart) restart ;;
status) status ;;
*)
    echo "usage: $0 start|stop|restart|status" >&2
    exit 2
    ;;
esac
