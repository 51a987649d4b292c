#!/usr/bin/env bash
# Figure 3: memory and CPU of kdns's Docker provider with 1 000 running
# containers, and the time of a full resync.
#
#   bench/docker/thousand.sh [-t TAG] [-n CONTAINERS] [-p PARALLEL] [-b BUDGET_S] [-k RESTARTS]
#
# kdns runs on the host in a network namespace of its own (a veth pair
# inside it, one end holding 172.31.X+3.250, inside the /22 of the Docker network
# this script makes, reserved with --aux-address so that no container
# gets it), --io udp, --workers 1, [docker] socket = /var/run/docker.sock,
# networks = [that network], domain kdns; a copy of target/release/kdns is
# run, so a rebuild in the shared target dir does not change it midway.
# Then N (1000) containers of the base image running `sleep 3600` are
# started on the network (PARALLEL `docker run` at a time, at most
# BUDGET_S seconds, and only while MemAvailable > 3 GiB), labelled
# kdns.service=svc<i/10> (100 services of 10 containers). Measured:
#   - kdns's VmRSS (/proc/PID/status) before, after the start loop, after
#     an idle minute, and after each restart (a fresh process that resynced
#     N containers);
#   - the CPU time (utime+stime of /proc/PID/task/TID/stat) of the thread
#     named kdns-docker and of the whole process, over the start loop and
#     over an idle minute;
#   - the full resync: kdns restarted RESTARTS (5) times; each start logs
#     "resync: N running containers, ... (X ms)"; after each, all 100
#     services are asked (dig svc<j>.kdns A: do all answer, with 10 addresses?).
# Removes every container (docker rm -f by label, one at a time), the network
# and the namespace at the end, also on failure.
# Results (in bench/results/docker/<script>-TAG/): thousand-TAG.txt (everything above), thousand-TAG.log
# (kdns's provider log lines).
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

TAG=main N=1000 PAR=4 BUDGET=720 RESTARTS=5 IDLE=${IDLE:-60}
while getopts t:n:p:b:k: o; do
    case $o in
        t) TAG=$OPTARG ;; n) N=$OPTARG ;; p) PAR=$OPTARG ;; b) BUDGET=$OPTARG ;; k) RESTARTS=$OPTARG ;;
        *) exit 2 ;;
    esac
done
docker_out thousand
OUT=$RES/thousand-$TAG.txt
HZ=$(getconf CLK_TCK)

if [[ -z ${BENCH_IMAGES:-} ]]; then
    # only the base image is needed here
    _IMAGES+=("$IMG_BASE")
    "$ROOT/scripts/base-image.sh" "$IMG_BASE" >/dev/null
fi
workdir
cp "$ROOT/target/release/kdns" "$WORK/kdns"
SUBNET=$(free_subnet 22)
P0=$(net_prefix "$SUBNET")
X=${P0##*.}
KADDR=${P0%.*}.$((X + 3)).250
NET=$PFX-net
make_network "$NET" "$SUBNET" --aux-address "kdns=$KADDR"
say "network $NET $SUBNET, kdns at $KADDR"

NS=$PFX-ns
ip netns add "$NS"
track_netns "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add kd0 type veth peer name kd1
ip -n "$NS" link set kd1 up
ip -n "$NS" addr add "$KADDR/22" dev kd0
ip -n "$NS" link set kd0 up

cat >"$WORK/kdns.toml" <<EOF
[server]
listen = ["$KADDR:53"]
io = "udp"
workers = 1
allow = ["$SUBNET", "127.0.0.0/8"]
control_socket = "$WORK/control.sock"
[upstream]
backends = ["127.0.0.1:5399"]
[records]
domains = ["kdns"]
state_file = ""
[docker]
enabled = true
socket = "/var/run/docker.sock"
networks = ["$NET"]
EOF

KPID=
LOGN=0
start_kdns() {
    LOGN=$((LOGN + 1))
    ip netns exec "$NS" "$WORK/kdns" --config "$WORK/kdns.toml" >"$WORK/kdns.$LOGN.log" 2>&1 &
    KPID=$!
    track_pid "$KPID"
    local i
    for i in $(seq 600); do
        grep -q 'Docker provider: .*resync' "$WORK/kdns.$LOGN.log" && return 0
        kill -0 "$KPID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$WORK/kdns.$LOGN.log" >&2
    say "kdns did not resync"
    return 1
}
stop_kdns() { kill -TERM "$KPID"; wait "$KPID" 2>/dev/null || true; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$KPID/status"; }
docker_tid() {
    local t
    for t in /proc/"$KPID"/task/*; do
        [[ $(cat "$t/comm") == kdns-docker ]] && { echo "${t##*/}"; return; }
    done
}
# cpu ticks (utime+stime) of a /proc stat file
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "$1"; }
resync_line() { grep -m1 -o 'resync: .*' "$WORK/kdns.$LOGN.log"; }
note() { echo "$*" | tee -a "$OUT" >&2; }
# answers: how many of the NS services answer with how many addresses
answers() {
    local s=$1 j n full=0 some=0 addrs=0
    for ((j = 0; j < s; j++)); do
        n=$(ip netns exec "$NS" dig +short +tries=2 +time=1 "@$KADDR" "svc$j.kdns" A | grep -c '^[0-9]' || true)
        ((n > 0)) && some=$((some + 1))
        ((n == 10)) && full=$((full + 1))
        addrs=$((addrs + n))
    done
    echo "$some/$s services answer, $full with 10 addresses, $addrs addresses in all"
}

machine_note >"$OUT"
note "# kdns $("$WORK/kdns" --version 2>&1 | sed -n 1,1p); network $NET $SUBNET; N=$N parallel=$PAR budget=${BUDGET}s; HZ=$HZ"
start_kdns
TID=$(docker_tid)
note "start 0: $(resync_line)"
sleep 2
note "rss_kb before: $(rss_kb)"

c0=$(ticks "/proc/$KPID/task/$TID/stat") p0=$(ticks "/proc/$KPID/stat") t0=$(date +%s.%N)
DEADLINE=$(($(date +%s) + BUDGET))
export DOCKER NET LABEL PFX IMG_BASE DEADLINE
# start_one I: one container, unless the budget or the memory is used up
start_one() {
    local i=$1
    (($(date +%s) < DEADLINE)) || exit 0
    (($(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) > 3 * 1024 * 1024)) || exit 0
    "$DOCKER" run -d --name "$PFX-c$i" --label "$LABEL" --label "kdns.service=svc$((i / 10))" \
        --network "$NET" --log-driver none "$IMG_BASE" sleep 3600 >/dev/null || echo "start $i failed" >&2
}
export -f start_one
seq 0 $((N - 1)) | timeout $((BUDGET + 120)) xargs -P "$PAR" -I{} bash -c 'start_one {}' || true
t1=$(date +%s.%N)
sleep 1
c1=$(ticks "/proc/$KPID/task/$TID/stat") p1=$(ticks "/proc/$KPID/stat")
RUNNING=$("$DOCKER" ps -q --filter "label=$LABEL" --filter status=running | wc -l)
note "started: $RUNNING of $N running, in $(echo "$t1 - $t0" | bc) s (parallel $PAR)"
note "start loop: kdns-docker cpu $(((c1 - c0) * 1000 / HZ)) ms, whole kdns $(((p1 - p0) * 1000 / HZ)) ms"
note "rss_kb after start loop: $(rss_kb)"
note "MemAvailable after start loop: $(awk '/^MemAvailable:/ {print $2}' /proc/meminfo) kB"
sleep 5
note "answers after start loop: $(answers $((RUNNING / 10)))"
c1=$(ticks "/proc/$KPID/task/$TID/stat") p1=$(ticks "/proc/$KPID/stat")
sleep "$IDLE"
c2=$(ticks "/proc/$KPID/task/$TID/stat") p2=$(ticks "/proc/$KPID/stat")
note "idle $IDLE s: kdns-docker cpu $(((c2 - c1) * 1000 / HZ)) ms, whole kdns $(((p2 - p1) * 1000 / HZ)) ms"
note "rss_kb after idle minute: $(rss_kb)"
grep -i docker "$WORK/kdns.1.log" | sed -n 1,5p | sed 's/\x1b\[[0-9;]*m//g' >"$RES/thousand-$TAG.log"
grep -ci 'joined' "$WORK/kdns.1.log" | sed 's/^/joined lines in the first run: /' >>"$RES/thousand-$TAG.log"
for ((k = 1; k <= RESTARTS; k++)); do
    stop_kdns
    start_kdns
    note "restart $k: $(resync_line)"
    sleep 2
    note "restart $k: rss_kb $(rss_kb); $(answers 10 | sed 's/^/first 10 services: /')"
done
note "after the last restart: $(answers $((RUNNING / 10)))"
grep -h 'resync' "$WORK"/kdns.*.log | sed 's/\x1b\[[0-9;]*m//g' >>"$RES/thousand-$TAG.log"
stop_kdns
python3 - "$OUT" <<'EOF' | tee -a "$OUT" >&2
import re, statistics, sys
ms = [int(m) for m in re.findall(r"restart \d+: resync: .*\((\d+) ms", open(sys.argv[1]).read())]
if ms:
    print(f"resync ms over {len(ms)} restarts: median {statistics.median(ms)}, min {min(ms)}, max {max(ms)}: {ms}")
EOF
t2=$(date +%s.%N)
ids=$("$DOCKER" ps -aq --filter "label=$LABEL")
xargs -n 1 "$DOCKER" rm -f <<<"$ids" >/dev/null   # one at a time: see lib.sh
note "removed $(wc -w <<<"$ids") containers in $(echo "$(date +%s.%N) - $t2" | bc) s"
