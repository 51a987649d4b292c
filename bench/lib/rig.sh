# shellcheck shell=bash
# The benchmark rig, sourced by every script under bench/ (and through it
# rig_xdp.sh, the AF_XDP pairs and systems):
#
#   generator ns  <veth, 1 rx + 1 tx queue>  server ns
#   10.77.0.2/24 fd77::2/64                  10.77.0.1, .3, .4, .5 /24; fd77::1/64
#   load generators: taskset -c $GEN_CORE    systems under test: taskset -c $SRV_CORE
#
# Both namespaces, the veth pair and every process are created here and
# removed by rig_cleanup (the EXIT/INT/TERM trap that rig_up installs).
# Names are unique per run (kp<pid>g / kp<pid>s). Nothing touches the
# host's own network namespace.
#
# Systems (sys_start; each on its own address, port 53, so they can run
# side by side and be measured interleaved):
#   kdns     10.77.0.1  kdns socket mode (--io udp), --workers 1, backends =
#                       Unbound on 127.0.0.1:5301 (and more ports if given)
#   unbound  10.77.0.3  Unbound directly (num-threads: 1)
#   dnsdist  10.77.0.4  dnsdist with its packet cache, backend = Unbound 127.0.0.1:5301
#   kdns-n   10.77.0.5  a second kdns (--realtime-priority 0; KDNS_N: another binary)
# All answer <anything>.bench.test A from a local zone (redirect to 10.99.0.1).
#
# rig_up also: checks the tools (naming the Debian package of a missing
# one), waits while another benchmark runs (rig_wait_quiet), steers each
# side's kernel packet work to its own core (rig_steer), and gives the
# run's scheduler autogroup the nice value RIG_NICE (see rig_session).
#
# Environment knobs (all optional):
#   KDNS_BIN, KDNS_CTL_BIN  binaries (default: target/release/kdns{,-ctl},
#                           copied into the run's temp dir so a concurrent
#                           rebuild cannot swap them mid-run)
#   KDNS_IO (udp)           kdns --io value, passed when the binary has --io
#   SRV_CORE (0), GEN_CORE (1)
#   RIG_NICE (-10)          nice value of the servers and generators (and of
#                           the run's autogroup)
#   RIG_STEER=0             leave the kernel's default packet steering
#   RIG_NO_WAIT=1           do not wait for other benchmarks (the scripts' -W)
#   RIG_WAIT_MAX (2400)     seconds to wait for them at most, then exit 3
#   RIG_KEEP=1              keep the temp dir (logs) after the run
#   DNSPERF_BUF_KB (4096)   dnsperf socket buffers (-b)

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RIG_ROOT=$(cd "$BENCH_DIR/.." && pwd)
RIG_TAG="kp$$"
NS_GEN="${RIG_TAG}g"
NS_SRV="${RIG_TAG}s"
IF_GEN="${RIG_TAG}g0"
IF_SRV="${RIG_TAG}s0"
SRV_V4=10.77.0.1
GEN_V4=10.77.0.2
SRV_V6=fd77::1
GEN_V6=fd77::2
SRV_CORE=${SRV_CORE:-0}
RIG_NICE=${RIG_NICE:--10}
GEN_CORE=${GEN_CORE:-1}
# the scripts' -o and -t: results folder (rig_out) and run tag
OUT=""
TAG=$(date +%Y%m%d-%H%M%S)
RIG_DIR=""
RIG_PIDS=()          # every process we started (pids), killed by pid at the end
declare -A SYS_PIDS  # name (kdns, unbound, dnsdist, be5301, ...) -> pid
RIG_CLEANUP_HOOKS=() # functions rig_cleanup runs after killing RIG_PIDS, before deleting the namespaces

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

in_gen() { ip netns exec "$NS_GEN" "$@"; }
in_srv() { ip netns exec "$NS_SRV" "$@"; }

# rig_usage: the script's leading comment block, as its -h help
rig_usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# rig_opts "SPEC" "$@": the script's options. SPEC: space-separated items,
# "x=VAR" (-x ARG sets VAR) or "x:VAR=VALUE" (-x sets VAR to VALUE); -h
# and anything else print the usage and exit 2.
rig_opts() {
    local _spec=$1 _optstr="h" _item _o OPTIND=1
    shift
    local -A _arg=() _flag=()
    for _item in $_spec; do
        if [[ ${_item:1:1} == "=" ]]; then
            _arg[${_item:0:1}]=${_item:2}
            _optstr+="${_item:0:1}:"
        else
            _flag[${_item:0:1}]=${_item:2}
            _optstr+=${_item:0:1}
        fi
    done
    while getopts "$_optstr" _o; do
        if [[ -n ${_arg[$_o]:-} ]]; then
            printf -v "${_arg[$_o]}" '%s' "$OPTARG"
        elif [[ -n ${_flag[$_o]:-} ]]; then
            printf -v "${_flag[$_o]%%=*}" '%s' "${_flag[$_o]#*=}"
        else
            rig_usage
            exit 2
        fi
    done
}

# rig_out BENCHMARK SCRIPT: OUT (the results folder), by default
# bench/results/BENCHMARK/SCRIPT-$TAG, created; CSV, its SCRIPT-$TAG.csv
rig_out() {
    OUT=${OUT:-$BENCH_DIR/results/$1/$2-$TAG}
    CSV="$OUT/$2-$TAG.csv"
    mkdir -p "$OUT"
}

# rig_rotation ROUND: ORDER, the systems of SYS rotated by ROUND - 1 (interleaved runs, new order each round)
rig_rotation() { local i; ORDER=(); for ((i = 0; i < ${#SYS[@]}; i++)); do ORDER+=("${SYS[$(((i + $1 - 1) % ${#SYS[@]}))]}"); done; }

# sys_alive NAME: exit unless the system's process still runs
sys_alive() { kill -0 "${SYS_PIDS[$1]}" 2>/dev/null || die "$1 (pid ${SYS_PIDS[$1]}) died; see $RIG_DIR/$1.log"; }

# Check every tool the rig needs; name the Debian package of each missing one.
rig_require() {
    local missing=() c
    local -A pkgs=(
        [unbound]=unbound [dnsdist]=dnsdist [dnsperf]=dnsperf
        [kxdpgun]=knot-dnsutils [kdig]=knot-dnsutils [dig]=dnsutils
        [perf]=linux-perf [taskset]=util-linux [ip]=iproute2 [ethtool]=ethtool
    )
    for c in "${!pkgs[@]}"; do
        command -v "$c" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$c" >/dev/null 2>&1 ||
            missing+=("$c (Debian package ${pkgs[$c]})")
    done
    if ((${#missing[@]})); then
        for c in "${missing[@]}"; do log "missing: $c"; done
        die "install with: apt-get install $(for c in "${missing[@]}"; do echo "$c" | sed 's/.*package \(.*\))/\1/'; done | sort -u | tr '\n' ' ')"
    fi
    [[ $(id -u) -eq 0 ]] || die "run as root (network namespaces, XDP)"
    (($(nproc) >= 2)) || die "needs 2 cores (server core $SRV_CORE, generator core $GEN_CORE)"
}

# kill_pids PID...: SIGTERM, up to 5 s, SIGKILL (each by pid)
kill_pids() {
    local pid
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

rig_cleanup() {
    local rc=$? pid ns h
    trap - EXIT INT TERM
    kill_pids "${RIG_PIDS[@]}"
    for h in "${RIG_CLEANUP_HOOKS[@]}"; do "$h" || true; done
    for ns in "$NS_GEN" "$NS_SRV"; do
        ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || continue
        # anything still inside our own namespaces (by pid)
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
    if [[ -n $RIG_DIR && -d $RIG_DIR ]]; then
        if [[ ${RIG_KEEP:-0} == 1 || $rc != 0 ]]; then
            log "logs kept in $RIG_DIR"
        else
            rm -rf "$RIG_DIR"
        fi
    fi
    exit "$rc"
}

# rig_session "$0" "$@": call first thing in a script. Re-runs the script
# as a session of its own, which the scheduler's autogroup feature (on here)
# then treats as one group: `nice` only ranks tasks inside their autogroup,
# so without this the servers would compete at equal weight with every
# other session's compiler or fuzzer on the shared machine, however
# niced. rig_up gives the new group the nice value $RIG_NICE. INT and TERM
# are passed on to the new session, whose cleanup trap then runs.
rig_session() {
    [[ ${RIG_IN_SESSION:-0} == 1 ]] && return 0
    [[ $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null) == 1 ]] || return 0
    RIG_IN_SESSION=1 setsid "$@" &
    local child=$! rc
    trap 'kill -TERM "$child" 2>/dev/null' INT TERM
    while :; do
        rc=0
        wait "$child" || rc=$?
        kill -0 "$child" 2>/dev/null || break
    done
    exit "$rc"
}

# rig_busy: what of another benchmark runs now (empty: nothing): a network
# namespace of another rig run (kp<pid>g/s, kr<pid>) and any dnsperf or
# kxdpgun outside this run's namespaces, and a run of scripts/test.sh. A
# script that is itself still waiting has no namespace yet, so two waiting
# scripts do not wait for each other.
rig_busy() {
    local mine p
    mine=" $(ip netns pids "$NS_GEN" 2>/dev/null | tr '\n' ' ') $(ip netns pids "$NS_SRV" 2>/dev/null | tr '\n' ' ') "
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^k[pr][0-9]+[gs]?$' | grep -vx -e "$NS_GEN" -e "$NS_SRV" | sed 's/^/netns /'
    for p in $(pgrep -x dnsperf; pgrep -x kxdpgun); do
        [[ $mine == *" $p "* ]] || echo "pid $p $(cat "/proc/$p/comm" 2>/dev/null)"
    done
    # the project's test suite (its daemon tests run load generators too)
    for p in $(pgrep -f 'scripts/test\.sh'); do echo "pid $p test suite"; done
}

# rig_wait_quiet: wait until no other benchmark has run (rig_busy) for two
# polls in a row, 5 s apart; 30-s polls while one runs, RIG_WAIT_MAX
# seconds (2400) at most, then exit 3. Two benchmarks at once on this
# 2-core machine would spoil both. RIG_NO_WAIT=1 skips this.
rig_wait_quiet() {
    [[ ${RIG_NO_WAIT:-0} == 1 ]] && return 0
    local waited=0 quiet=0 busy logged=0
    while :; do
        busy=$(rig_busy)
        if [[ -z $busy ]]; then
            quiet=$((quiet + 1))
            ((quiet >= 2)) && return 0
            sleep 5
            continue
        fi
        quiet=0
        ((logged)) || log "another benchmark is running; waiting (30 s polls, ${RIG_WAIT_MAX:-2400} s max): $(head -3 <<<"$busy" | tr '\n' ';')"
        logged=1
        ((waited >= ${RIG_WAIT_MAX:-2400})) && { log "another benchmark still running after $waited s"; exit 3; }
        sleep 30
        waited=$((waited + 30))
    done
}

# rig_bins: copy kdns and kdns-ctl (KDNS_BIN, KDNS_CTL_BIN or
# target/release) into $RIG_DIR; sets KDNS, KCTL and KDNS_VERSION
rig_bins() {
    local kb=${KDNS_BIN:-$RIG_ROOT/target/release/kdns} cb=${KDNS_CTL_BIN:-$RIG_ROOT/target/release/kdns-ctl}
    [[ -x $kb && -x $cb ]] || die "kdns binaries not found ($kb, $cb): cargo build --release -p kdns -p kdns-ctl"
    cp "$kb" "$RIG_DIR/kdns"
    cp "$cb" "$RIG_DIR/kdns-ctl"
    KDNS="$RIG_DIR/kdns"
    KCTL="$RIG_DIR/kdns-ctl"
    KDNS_VERSION="$("$KDNS" --version 2>/dev/null | head -1) (git $(git -C "$RIG_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$RIG_ROOT" diff --quiet HEAD -- src kdns-core 2>/dev/null || echo "+uncommitted"), sha256 $(sha256sum "$KDNS" | cut -c1-12), built $(date -r "$kb" '+%F %T'))"
}

# rig_dir: the run's temp dir and the cleanup trap
rig_dir() {
    trap rig_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    RIG_DIR=$(mktemp -d /tmp/kdns-bench.XXXXXX)
}

# rig_netns: the server namespace alone (loopback up), with the binaries:
# for the scripts that need no load generator (bench/records)
rig_netns() {
    [[ $(id -u) -eq 0 ]] || die "run as root (network namespace)"
    rig_dir
    rig_bins
    ip netns add "$NS_SRV"
    in_srv ip link set lo up
    log "kdns: $KDNS_VERSION; namespace $NS_SRV; dir $RIG_DIR"
}

rig_up() {
    rig_require
    rig_wait_quiet
    if [[ ${RIG_IN_SESSION:-0} == 1 && -w /proc/self/autogroup ]]; then
        echo "$RIG_NICE" >/proc/self/autogroup 2>/dev/null || log "could not set the autogroup's nice value"
    fi
    rig_dir
    rig_bins
    # socket mode: newer builds pick AF_XDP by themselves (io = "auto")
    KDNS_MODE_ARGS=()
    if "$KDNS" --help 2>/dev/null | grep -q -- '--io <'; then
        KDNS_MODE_ARGS=(--io "${KDNS_IO:-udp}")
    fi
    log "kdns: $KDNS_VERSION, ${KDNS_MODE_ARGS[*]:-(no --io option: socket mode only)}"
    KDNS_CTL=("$KCTL" --socket "$RIG_DIR/kdns.sock")
    ip netns add "$NS_GEN"
    ip netns add "$NS_SRV"
    in_gen ip link set lo up
    in_srv ip link set lo up
    veth_pair "$IF_GEN" "$IF_SRV" "$GEN_V4/24" "$SRV_V4/24"
    in_gen ip -6 addr add "$GEN_V6/64" dev "$IF_GEN" nodad
    in_srv ip -6 addr add "$SRV_V6/64" dev "$IF_SRV" nodad
    GEN_MAC=$(mac_of gen "$IF_GEN")
    SRV_MAC=$(mac_of srv "$IF_SRV")
    # static neighbours both ways: no ARP during a run
    in_gen ip neigh replace "$SRV_V4" lladdr "$SRV_MAC" dev "$IF_GEN" nud permanent
    in_srv ip neigh replace "$GEN_V4" lladdr "$GEN_MAC" dev "$IF_SRV" nud permanent
    in_gen ip -6 neigh replace "$SRV_V6" lladdr "$SRV_MAC" dev "$IF_GEN" nud permanent
    in_srv ip -6 neigh replace "$GEN_V6" lladdr "$GEN_MAC" dev "$IF_SRV" nud permanent
    rig_steer
    log "rig up: $NS_GEN($IF_GEN $GEN_V4) <-> $NS_SRV($IF_SRV $SRV_V4), 1 rx/1 tx queue; server core $SRV_CORE, generator core $GEN_CORE; dir $RIG_DIR"
}

# veth_pair GEN_IF SRV_IF GEN_ADDR/LEN SRV_ADDR/LEN: a veth pair with one rx
# and one tx queue at each end between the rig's namespaces, addressed, up
veth_pair() {
    ip link add "$1" netns "$NS_GEN" numrxqueues 1 numtxqueues 1 type veth \
        peer name "$2" netns "$NS_SRV" numrxqueues 1 numtxqueues 1
    in_gen ip addr add "$3" dev "$1"
    in_srv ip addr add "$4" dev "$2"
    in_gen ip link set "$1" up
    in_srv ip link set "$2" up
}

# mac_of gen|srv IFNAME
mac_of() { "in_$1" cat "/sys/class/net/$2/address"; }

# napi_pid IFNAME: pid of the NAPI kthread of IFNAME ("napi/<if>-<id>"), or ""
napi_pid() {
    local want="napi/$1" f pid
    want=${want:0:15}
    for f in /proc/[0-9]*/comm; do
        [[ $(cat "$f" 2>/dev/null) == "$want"* ]] || continue
        pid=${f#/proc/}
        echo "${pid%/comm}"
        return 0
    done
    echo ""
}

# steer gen|srv IFNAME CORE: RPS of IFNAME to CORE, GRO on and threaded
# NAPI with its kthread pinned to CORE (nice RIG_NICE); prints the kthread's pid
steer() {
    local side=$1 ifn=$2 core=$3 pid
    "in_$side" sh -c "echo $(printf '%x' $((1 << core))) > /sys/class/net/$ifn/queues/rx-0/rps_cpus" || die "cannot set RPS on $ifn"
    "in_$side" ethtool -K "$ifn" gro on >/dev/null || die "cannot enable GRO on $ifn"
    "in_$side" sh -c "echo 1 > /sys/class/net/$ifn/threaded" || die "cannot make NAPI threaded on $ifn"
    pid=$(napi_pid "$ifn")
    [[ -n $pid ]] || die "no NAPI thread for $ifn to pin"
    taskset -pc "$core" "$pid" >/dev/null
    renice -n "$RIG_NICE" -p "$pid" >/dev/null
    echo "$pid"
}

# Put each side's kernel packet work on its own core, as a NIC's interrupt
# steering would: queries' receive path (IP/UDP up to the socket) on the
# server core via RPS on the server veth; replies' receive path (XDP for
# kxdpgun, UDP for dnsperf) on the generator core via threaded NAPI on the
# generator veth (GRO on gives it a NAPI instance) with the napi kthread
# pinned to the generator core, and RPS for the replies veth hands to
# netif_rx. Without this, veth does the receive work on the *sending* CPU.
# RIG_STEER=0 leaves the kernel defaults.
rig_steer() {
    [[ ${RIG_STEER:-1} == 1 ]] || { log "RIG_STEER=0: kernel default packet steering"; return 0; }
    in_srv sh -c "echo $(printf '%x' $((1 << SRV_CORE))) > /sys/class/net/$IF_SRV/queues/rx-0/rps_cpus" || die "cannot set RPS on $IF_SRV"
    steer gen "$IF_GEN" "$GEN_CORE" >/dev/null
}

# rig_queries FILE COUNT PREFIX: "PREFIX<i>.bench.test A" for i in 0..COUNT-1
rig_queries() {
    awk -v n="$2" -v p="$3" 'BEGIN { for (i = 0; i < n; i++) printf "%s%d.bench.test A\n", p, i }' >"$1"
}

# unbound_conf FILE IFACE[@PORT] ACCESS_NET: Unbound, one thread, answering
# <anything>.$UNBOUND_ZONE A (default bench.test) from a local zone
# (redirect to 10.99.0.1, TTL $UNBOUND_TTL, default 86400), plus the server
# lines $UNBOUND_SERVER and the clauses $UNBOUND_CLAUSES (bench/abuse: its
# stub zone) when set; remote control on the unix socket $UNBOUND_CONTROL
# (unbound-control -s PATH) when set, else off
unbound_conf() {
    local zone=${UNBOUND_ZONE:-bench.test}
    cat >"$1" <<EOF
server:
    verbosity: 0
    num-threads: 1
    interface: $2
    access-control: $3 allow
    access-control: 127.0.0.0/8 allow
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: ""
    username: ""
    chroot: ""
    directory: "$RIG_DIR"
    pidfile: ""
    module-config: "iterator"
${UNBOUND_SERVER:-}
    local-zone: "test." nodefault
    local-zone: "$zone." redirect
    local-data: "$zone. ${UNBOUND_TTL:-86400} IN A 10.99.0.1"
${UNBOUND_CLAUSES:-}
EOF
    if [[ -n ${UNBOUND_CONTROL:-} ]]; then
        printf 'remote-control:\n    control-enable: yes\n    control-interface: "%s"\n    control-use-cert: no\n' "$UNBOUND_CONTROL" >>"$1"
    else
        printf 'remote-control:\n    control-enable: no\n' >>"$1"
    fi
}

# dnsdist_conf FILE ADDR ACL CHECK_NAME PORT...: dnsdist on ADDR:53 with its
# packet cache, one backend per 127.0.0.1:PORT, checked by CHECK_NAME A,
# plus the lines $DNSDIST_EXTRA when set (bench/restarts: its web API)
dnsdist_conf() {
    local f=$1 a=$2 acl=$3 check=$4 p
    shift 4
    {
        echo 'setSecurityPollSuffix("")'
        echo "setLocal(\"$a:53\")"
        echo "setACL({$acl})"
        for p in "$@"; do
            echo "newServer({address=\"127.0.0.1:$p\", checkName=\"$check.\", checkType=\"A\"})"
        done
        echo 'pc = newPacketCache(100000, {maxTTL=86400, minTTL=0})'
        echo 'getPool(""):setCache(pc)'
        [[ -z ${DNSDIST_EXTRA:-} ]] || printf '%s\n' "$DNSDIST_EXTRA"
    } >"$f"
    dnsdist --check-config -C "$f" >>"$RIG_DIR/dnsdist.log" 2>&1 || die "dnsdist config rejected (see $RIG_DIR/dnsdist.log)"
}

# _spawn NAME CMD...: start CMD in the server ns pinned to $SRV_CORE (nice
# $RIG_NICE), log to $RIG_DIR/NAME.log; records the pid as SYS_PIDS[NAME]
_spawn() {
    local name=$1
    shift
    ip netns exec "$NS_SRV" nice -n "$RIG_NICE" taskset -c "$SRV_CORE" "$@" >>"$RIG_DIR/$name.log" 2>&1 &
    local pid=$!
    RIG_PIDS+=("$pid")
    SYS_PIDS[$name]=$pid
}

# wait_answer ADDR PORT NAME [NS]: until ADDR answers NAME A with NOERROR (10 s max)
wait_answer() {
    local ns=${4:-$NS_GEN} i
    for i in $(seq 100); do
        if ip netns exec "$ns" dig +tries=1 +time=1 -p "$2" @"$1" "$3" A 2>/dev/null | grep -q 'status: NOERROR'; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# backend_start NAME PORT: an Unbound on 127.0.0.1:PORT in the server ns
# (same core); does nothing if NAME runs already
backend_start() {
    [[ -n ${SYS_PIDS[$1]:-} ]] && kill -0 "${SYS_PIDS[$1]}" 2>/dev/null && return 0
    unbound_conf "$RIG_DIR/$1.conf" "127.0.0.1@$2" "127.0.0.0/8"
    _spawn "$1" unbound -d -c "$RIG_DIR/$1.conf"
    wait_answer 127.0.0.1 "$2" "n0.${UNBOUND_ZONE:-bench.test}" "$NS_SRV" || die "backend $1 on port $2 does not answer (see $RIG_DIR/$1.log)"
}

# Each system has its own address on the server veth (port 53). kdns-n is
# kdns with --realtime-priority 0, a second kdns on its own address, added
# to compare a real-time UDP worker with a normal one in the same run
# (RESULTS.md, "Real-time scheduling does not help the socket workers").
# The option now applies only to AF_XDP workers, so in socket mode kdns-n
# is the same as kdns, unless KDNS_N names another kdns binary for it (an
# A/B comparison of two builds in the same run).
declare -A SYS_ADDR=([kdns]=10.77.0.1 [unbound]=10.77.0.3 [dnsdist]=10.77.0.4 [kdns-n]=10.77.0.5)

# srv_addr ADDR: put ADDR/24 on the server veth (static neighbour on the
# generator side) unless it is there
srv_addr() {
    # (no pipe into grep -q: with pipefail, ip dying of SIGPIPE would read as "absent")
    [[ $(in_srv ip -4 addr show dev "$IF_SRV") == *"inet $1/"* ]] && return 0
    in_srv ip addr add "$1/24" dev "$IF_SRV"
    in_gen ip neigh replace "$1" lladdr "$SRV_MAC" dev "$IF_GEN" nud permanent
}

# sys_start SYSTEM [BACKEND_PORT...]: start kdns | kdns-n | unbound | dnsdist
# on ${SYS_ADDR[SYSTEM]}:53. kdns and dnsdist forward misses to Unbound
# backends on the server ns loopback (default one, 127.0.0.1:5301).
sys_start() {
    local s=$1 a=${SYS_ADDR[$1]:-}
    shift
    local ports=("${@:-5301}") p bargs=()
    [[ -n $a ]] || die "unknown system $s"
    srv_addr "$a"
    case $s in
    kdns | kdns-n)
        for p in "${ports[@]}"; do
            backend_start "be$p" "$p"
            bargs+=(--backend "127.0.0.1:$p")
        done
        # kdns also listens on the server's IPv6 address; kdns-n does not,
        # so the two never share a socket. pin_workers is on by default:
        # under taskset -c 0 the worker pins itself to core 0.
        local bin=$KDNS extra=(--listen "[$SRV_V6]:53")
        [[ $s == kdns-n ]] && bin=${KDNS_N:-$KDNS} extra=(--realtime-priority 0)
        kdns_start "$s" "$bin" --listen "$a:53" "${extra[@]}" "${bargs[@]}" --workers 1 "${KDNS_MODE_ARGS[@]}" \
            --allow 10.77.0.0/24 --allow fd77::/64 --log-level warn
        ;;
    unbound)
        unbound_conf "$RIG_DIR/unbound.conf" "$a" "10.77.0.0/24"
        _spawn unbound unbound -d -c "$RIG_DIR/unbound.conf"
        ;;
    dnsdist)
        for p in "${ports[@]}"; do backend_start "be$p" "$p"; done
        dnsdist_conf "$RIG_DIR/dnsdist.conf" "$a" '"10.77.0.0/24", "127.0.0.0/8"' bench.test "${ports[@]}"
        _spawn dnsdist dnsdist --supervised --disable-syslog -C "$RIG_DIR/dnsdist.conf"
        ;;
    esac
    wait_answer "$a" 53 n0.bench.test || die "$s does not answer on $a:53 (see $RIG_DIR/$s.log)"
}

# kdns_start NAME BINARY ARGS...: kdns in the server ns (core, nice) with
# the control socket $RIG_DIR/NAME.sock
kdns_start() {
    local name=$1 bin=$2 own=()
    shift
    rm -f "$RIG_DIR/$name.sock"
    # builds with a handover socket, cache dump and state file get their
    # own in $RIG_DIR: two kdns in one run must not see each other as a
    # running instance (nor share /var/lib/kdns with the host)
    local h
    h=$("$bin" --help 2>/dev/null)
    [[ $h == *--handover-socket* ]] && own+=(--handover-socket "$RIG_DIR/$name.handover")
    [[ $h == *--cache-dump* ]] && own+=(--cache-dump "$RIG_DIR/$name.dump")
    [[ $h == *--state-file* ]] && own+=(--state-file "$RIG_DIR/$name.state")
    _spawn "$name" "$@" "${own[@]}" --control-socket "$RIG_DIR/$name.sock"
}

# sys_stop NAME: stop one process started by _spawn (a system or a backend)
sys_stop() {
    local pid=${SYS_PIDS[$1]:-}
    [[ -n $pid ]] || return 0
    kill_pids "$pid"
    wait "$pid" 2>/dev/null || true
    unset "SYS_PIDS[$1]"
}

# kdns_stat SOCKET KEY...: numbers from kdns-ctl stats --json (dotted paths,
# 0 where absent), space-separated
kdns_stat() {
    local sock=$1
    shift
    "$KCTL" --socket "$sock" stats --json 2>/dev/null | python3 -c 'import json, sys
d = json.load(sys.stdin)
out = []
for key in sys.argv[1:]:
    v = d
    for k in key.split("."):
        v = v.get(k, 0) if isinstance(v, dict) else 0
    out.append(str(v if isinstance(v, (int, float)) else 0))
print(" ".join(out))' "$@"
}

# cpu_ns PID: CPU time of all threads of PID so far, in ns (schedstat). The
# kernel here has no IRQ time accounting, so softirq work that interrupts
# the process (packet receive on its core) is included in its figure.
cpu_ns() {
    local t=0 f v
    for f in /proc/"$1"/task/*/schedstat; do
        read -r v _ <"$f" 2>/dev/null || continue
        t=$((t + v))
    done
    echo "$t"
}

# tid_cpu_ns TID: CPU time of one thread (schedstat), ns; 0 without a TID
tid_cpu_ns() {
    local v=0
    [[ -n ${1:-} ]] && { read -r v _ <"/proc/$1/schedstat" 2>/dev/null || v=0; }
    echo "$v"
}

# core_busy_ticks CORE: non-idle jiffies of CORE so far (/proc/stat)
core_busy_ticks() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# proc_ticks PID: "utime stime" of PID (all threads), in clock ticks
proc_ticks() { awk '{ print $14, $15 }' "/proc/$1/stat" 2>/dev/null || echo "0 0"; }

# status_kb PID KEY: a value of /proc/PID/status in kB (VmRSS, VmHWM, ...)
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# warm ADDR FILE: every name of FILE asked twice by dnsperf and for one
# second by kxdpgun (their queries may differ in flags, and so in cache keys)
warm() {
    in_gen taskset -c "$GEN_CORE" dnsperf -s "$1" -d "$2" -n 2 -l 20 -Q 20000 -c 4 -q 500 -t 2 >"$RIG_DIR/warm.out" 2>&1 || true
    local lost
    lost=$(awk '/Queries lost:/ {print $3}' "$RIG_DIR/warm.out")
    [[ ${lost:-1} == 0 ]] || log "warm-up of $1: ${lost:-?} queries lost"
    gen_kxdpgun "$1" 20000 1 "$2" >/dev/null
}


# dnsperf_row OUT [--duration S] FIELD...: one CSV line from a dnsperf
# output (bench/lib/results.py dnsperf: the fields it computes)
dnsperf_row() { python3 "$BENCH_DIR/lib/results.py" dnsperf "$@"; }

# shellcheck source=rig_gen.sh
source "$BENCH_DIR/lib/rig_gen.sh"
# shellcheck source=rig_xdp.sh
source "$BENCH_DIR/lib/rig_xdp.sh"
