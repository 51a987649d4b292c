#!/usr/bin/env bash
# Restarts under load: how many queries go unanswered when the server is
# upgraded, stopped and started again, or killed and started again, and how
# warm its cache is afterwards. kdns (--io xdp, program pinned, listening
# sockets held as systemd holds them) against Unbound and dnsdist restarted
# the same way in the same run (they bind their own sockets, as under
# systemd without socket activation).
#
#   bench/restarts/restarts.sh [options]
#     -r N          rounds (default 1); systems interleaved, order rotated each round
#     -c "CASES"    of "upgrade term-0 term-1 term-5 kill-0 kill-1 kill-5"
#                   (default all): upgrade = kdns --takeover next to the
#                   running kdns (Unbound and dnsdist have none: SIGTERM and
#                   start again at once); term-G / kill-G = SIGTERM / SIGKILL,
#                   then a new process G seconds after the old one is gone
#     -s "SYSTEMS"  subset of "kdns unbound dnsdist" (default all three)
#     -Q QPS        kxdpgun's fixed rate, open loop (default 20000)
#     -d SECONDS    load length (default 10); a run is made longer when the
#                   restart + 5 s window would end after it
#     -a SECONDS    when the server is stopped, into the load (default 3)
#     -n NAMES      distinct names of the load, all cache hits (default 5000)
#     -q            quick: cases "upgrade term-0 kill-1", 1 round
#     -o DIR        results directory (default bench/results/restarts/restarts-TAG)
#     -t TAG        file name tag (default: date-time)
#     -W            do not wait for other benchmarks (or a test run) to finish
# Env: UNBOUND_MODE=local (Unbound answers from its local zone, as the
#      rig's peer; default: a cache forwarding to the backend Unbound, like
#      kdns and dnsdist), RESTARTS_QDISC=0 and RESTARTS_NAPI_FIFO=0 (see
#      below: the rig without a queue in front of the server ends and with
#      the server's NAPI threads at normal priority), RESTARTS_RCVBUF and
#      RESTARTS_SNDBUF (bytes: the held UDP socket's buffers, see below),
#      plus rig.sh's knobs.
#
# Per run: the names are warmed in the system (dnsperf, kxdpgun), kxdpgun
# sends QPS for the load's length, the restart happens at -a seconds;
# unanswered = kxdpgun's queries sent - replies received. Hit ratio: the
# server's own counters, over the -a seconds before the restart (old
# process) and the 5 s after the new process started (kdns: kdns-ctl stats
# cache_hits / (hits + misses); Unbound: unbound-control stats_noreset
# num.cachehits / num.queries; dnsdist: its web API's cache-hits /
# (cache-hits + cache-misses)). After each kdns run: the interface holds
# exactly one XDP program, the new kdns's, and the pins are the expected
# ones; at the end `kdns --uninstall-xdp` leaves no program and no pin.
#
# Needs root, the rig's Debian packages (unbound dnsdist dnsperf
# knot-dnsutils dnsutils ethtool), curl, python3, and
#   cargo build --release -p kdns -p kdns-ctl
# Writes DIR/restarts-TAG.csv (one line per run; where the unanswered went:
# the held socket's drops, the veths' drop counters, the XDP program's
# redirected/passed counts), DIR/restarts-TAG-checks.txt (the program and
# pin checks), DIR/kdns-stats/ (kdns-ctl stats --json after each run),
# DIR/restarts-TAG.md (the summary, printed) and the servers' logs.
set -euo pipefail
ROUNDS=1
CASES="upgrade term-0 term-1 term-5 kill-0 kill-1 kill-5"
SYSTEMS="kdns unbound dnsdist"
QPS=20000
DUR=10
AT=3
NAMES=5000
QUICK=0
HR_WIN=5
# shellcheck source=../lib/rig.sh
source "$(dirname "$0")/../lib/rig.sh"
rig_session "$0" "$@"
rig_opts "r=ROUNDS c=CASES s=SYSTEMS Q=QPS d=DUR a=AT n=NAMES q:QUICK=1 o=OUT t=TAG W:RIG_NO_WAIT=1" "$@"
((QUICK)) && CASES="upgrade term-0 kill-1" ROUNDS=1
for c in $CASES; do [[ $c =~ ^(upgrade|term-[0-9]+|kill-[0-9]+)$ ]] || die "-c: unknown case $c"; done
for s in $SYSTEMS; do [[ $s =~ ^(kdns|unbound|dnsdist)$ ]] || die "-s: unknown system $s"; done
command -v curl >/dev/null || die "missing: curl (Debian package curl)"
PATH="$PATH:/usr/sbin:/sbin"
rig_out restarts restarts
CHECKS="$OUT/restarts-$TAG-checks.txt"
read -r -a SYS <<<"$SYSTEMS"
rig_up
xpair_add 1
HOLD=(python3 "$BENCH_DIR/lib/hold.py")
declare -A ADDR=([kdns]=${XP_V4_S[1]} [unbound]=${SYS_ADDR[unbound]} [dnsdist]=${SYS_ADDR[dnsdist]})
KIF=${XP_IF_S[1]}
BPFFS="$RIG_DIR/bpffs"
PIN="$BPFFS/kdns"
PINS_WANT="client_rate counters link listen_v4 listen_v6 xsks_map"
DNSDIST_API=127.0.0.1:8083
KPID=""     # the running kdns
KSTARTS=0   # kdns processes started

# Cleanup (rig_cleanup, after every process of the run is killed): the
# pinned program and the bpffs; the namespaces go next.
restarts_cleanup() {
    if [[ -d $PIN ]]; then
        in_srv "$KDNS" --uninstall-xdp --pin-dir "$PIN" >>"$RIG_DIR/uninstall.log" 2>&1 || true
    fi
    if mountpoint -q "$BPFFS"; then umount -l "$BPFFS"; fi
    [[ -d $BPFFS ]] && rmdir "$BPFFS" 2>/dev/null
    return 0
}
RIG_CLEANUP_HOOKS+=(restarts_cleanup)
mkdir -p "$BPFFS"
mount -t bpf bpf "$BPFFS" || die "cannot mount a bpffs on $BPFFS"

# gone PID: the process has exited (no such process, or a zombie)
gone() { [[ ! -e /proc/$1/stat ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }

# wait_gone PID SECONDS: until PID is gone; 1 if it is not by then
wait_gone() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do gone "$1" && return 0; sleep 0.05; done
    return 1
}

now_ms() { date +%s%3N; }

# RESTARTS_RCVBUF / RESTARTS_SNDBUF (bytes): the held UDP socket's receive
# buffer (default 32 MiB, kdns.socket's ReceiveBuffer= and kdns's default
# server.udp_receive_buffer) and send buffer (default 4 MiB, kdns.socket's
# SendBuffer=)
HOLD_BUFS=(--rcvbuf "${RESTARTS_RCVBUF:-33554432}" --sndbuf "${RESTARTS_SNDBUF:-4194304}")

KDNS_CONF=()
if [[ -n ${RESTARTS_RCVBUF:-} ]]; then
    printf '[server]\nudp_receive_buffer = %d\n' "$RESTARTS_RCVBUF" >"$RIG_DIR/kdns.toml"
    KDNS_CONF=(--config "$RIG_DIR/kdns.toml")
fi
KDNS_ARGS=("$KDNS" "${KDNS_CONF[@]}" --io xdp --listen "${ADDR[kdns]}:53" --backend 127.0.0.1:5301 --workers 1
    --allow 10.78.0.0/16 --allow 10.77.0.0/24 --pin-dir "$PIN" --cache-dump "$RIG_DIR/kdns-cache.dump"
    --handover-socket "$RIG_DIR/kdns-handover.sock" --control-socket "$RIG_DIR/kdns.sock" --log-level info)

# start_server SYSTEM: a new process of SYSTEM, not waiting for it to
# answer (queries meanwhile wait in the held sockets or are lost). kdns:
# the holder starts it on the held sockets; sets KPID.
start_server() {
    case $1 in
    kdns)
        KPID=$("${HOLD[@]}" start "$RIG_DIR/hold.sock") || die "the holder did not start kdns (see $RIG_DIR/holder.log)"
        KSTARTS=$((KSTARTS + 1))
        ;;
    unbound) _spawn unbound unbound -d -c "$RIG_DIR/unbound.conf" ;;
    dnsdist) _spawn dnsdist dnsdist --supervised --disable-syslog -C "$RIG_DIR/dnsdist.conf" ;;
    esac
    # no job notice ("Killed") when kill -9 ends it; the shell still reaps it
    [[ $1 == kdns ]] || disown "${SYS_PIDS[$1]}"
}

# server_pid SYSTEM
server_pid() { [[ $1 == kdns ]] && echo "$KPID" || echo "${SYS_PIDS[$1]}"; }

# setup SYSTEM: configuration, first start, first answer
setup() {
    local s=$1
    backend_start be5301 5301
    case $s in
    kdns)
        _spawn holder "${HOLD[@]}" serve "$RIG_DIR/hold.sock" --udp "${ADDR[kdns]}:53" --tcp "${ADDR[kdns]}:53" "${HOLD_BUFS[@]}" -- "${KDNS_ARGS[@]}"
        local i
        for i in $(seq 100); do [[ -S $RIG_DIR/hold.sock ]] && break; sleep 0.1; done
        [[ -S $RIG_DIR/hold.sock ]] || die "the holder did not come up (see $RIG_DIR/holder.log)"
        ;;
    unbound)
        srv_addr "${ADDR[unbound]}"
        local clauses="" server=""
        if [[ ${UNBOUND_MODE:-forward} != local ]]; then
            # a cache in front of the backend, like kdns and dnsdist
            server="    do-not-query-localhost: no"
            clauses=$'forward-zone:\n    name: "bench.test."\n    forward-addr: 127.0.0.1@5301'
        fi
        UNBOUND_ZONE=$([[ ${UNBOUND_MODE:-forward} == local ]] && echo bench.test || echo none.test) \
            UNBOUND_SERVER="$server" UNBOUND_CLAUSES="$clauses" UNBOUND_CONTROL="$RIG_DIR/unbound-ctl.sock" \
            unbound_conf "$RIG_DIR/unbound.conf" "${ADDR[unbound]}" 10.77.0.0/24
        ;;
    dnsdist)
        srv_addr "${ADDR[dnsdist]}"
        DNSDIST_EXTRA="webserver(\"$DNSDIST_API\")
setWebserverConfig({apiKey=\"bench\", acl=\"127.0.0.0/8\"})" \
            dnsdist_conf "$RIG_DIR/dnsdist.conf" "${ADDR[dnsdist]}" '"10.77.0.0/24", "127.0.0.0/8"' bench.test 5301
        ;;
    esac
    start_server "$s"
    wait_answer "${ADDR[$s]}" 53 n0.bench.test || die "$s does not answer on ${ADDR[$s]}:53 (see $RIG_DIR/$s.log, holder.log)"
}

# hits SYSTEM -> "hits lookups" of the running process (counters since it
# started), "- -" when they cannot be read
hits() {
    local r
    case $1 in
    kdns)
        r=$(kdns_stat "$RIG_DIR/kdns.sock" pid totals.cache_hits totals.cache_misses 2>/dev/null) || r=""
        # only the expected process's counters
        awk -v want="$KPID" 'NF == 3 && $1 == want { print $2, $2 + $3; ok = 1 } END { if (!ok) print "- -" }' <<<"$r"
        ;;
    unbound)
        unbound-control -c "$RIG_DIR/unbound.conf" -s "$RIG_DIR/unbound-ctl.sock" stats_noreset 2>/dev/null |
            awk -F= '$1 == "total.num.cachehits" { h = $2 } $1 == "total.num.queries" { q = $2 } END { if (q != "") print h + 0, q; else print "- -" }'
        ;;
    dnsdist)
        in_srv curl -s -m 2 -H 'X-API-Key: bench' "http://$DNSDIST_API/jsonstat?command=stats" 2>/dev/null |
            python3 -c 'import json, sys
try:
    d = json.load(sys.stdin)
    print(d["cache-hits"], d["cache-hits"] + d["cache-misses"])
except Exception:
    print("- -")'
        ;;
    esac
}

# held_drops: queries the held UDP socket (kdns's) dropped so far, its
# buffer being full (the socket's drop counter, ss's skmem d<N>)
held_drops() {
    in_srv ss -uanm src "${ADDR[kdns]}:53" | awk '/skmem:/ { if (match($0, /,d[0-9]+/)) d += substr($0, RSTART + 2, RLENGTH - 2) } END { print d + 0 }'
}

# xdp_counts: "redirected passed" of the pinned XDP program's counters
# (summed over queues; the map outlives every kdns), "0 0" if unreadable
xdp_counts() {
    "$KCTL" --socket "$RIG_DIR/kdns.sock" stats --json 2>/dev/null | python3 -c 'import json, sys
try:
    q = json.load(sys.stdin)["xdp"][0]["queues"]
    print(sum(x["redirected"] for x in q), sum(x["passed"] for x in q))
except Exception:
    print("0 0")'
}

# veth_counters SYSTEM: "side.counter value" lines of the pair the system
# is reached on: the kernel's drop counters of both ends (ip -s link's
# rx/tx dropped, and veth's own per-queue counters from ethtool -S)
veth_counters() {
    local side ifn
    for side in srv gen; do
        if [[ $1 == kdns ]]; then
            ifn=$([[ $side == srv ]] && echo "${XP_IF_S[1]}" || echo "${XP_IF_G[1]}")
        else
            ifn=$([[ $side == srv ]] && echo "$IF_SRV" || echo "$IF_GEN")
        fi
        "in_$side" sh -c "echo rx_dropped \$(cat /sys/class/net/$ifn/statistics/rx_dropped); echo tx_dropped \$(cat /sys/class/net/$ifn/statistics/tx_dropped); ethtool -S $ifn" |
            awk -v p="$side." '$1 ~ /drops:?$|_dropped$|errors:?$/ { sub(/:$/, "", $1); print p $1, $2 }'
    done
}

# counter_delta FILE0 FILE1: "name=delta;..." of the counters that changed ("" if none)
counter_delta() {
    awk 'NR == FNR { a[$1] = $2; next } $2 != a[$1] { printf "%s%s=%d", sep, $1, $2 - a[$1]; sep = ";" }' "$1" "$2"
}

# ratio H0 L0 H1 L1 -> hit ratio (%) of the counters' difference, "" if unknown or no lookups
ratio() {
    awk -v h0="$1" -v l0="$2" -v h1="$3" -v l1="$4" 'BEGIN {
        if (h0 == "-" || h1 == "-" || l1 - l0 <= 0) { print ""; exit }
        printf "%.2f\n", 100 * (h1 - h0) / (l1 - l0) }'
}

# restart SYSTEM CASE: stops the running process the way CASE says, starts
# the next; sets EXIT_MS (signal or takeover start -> old process gone) and
# T_START (ms, when the new process was started)
restart() {
    local s=$1 c=$2 old sig gap
    old=$(server_pid "$s")
    local t0
    t0=$(now_ms)
    if [[ $c == upgrade && $s == kdns ]]; then
        # make-before-break: a new kdns next to the running one, outside the
        # holder; it gets the listening sockets from the old kdns
        T_START=$t0
        _spawn "kdns-up$KSTARTS" "${KDNS_ARGS[@]}" --takeover
        KPID=${SYS_PIDS[kdns-up$KSTARTS]}
        disown "$KPID"
        KSTARTS=$((KSTARTS + 1))
        wait_gone "$old" 30 || die "the old kdns (pid $old) did not exit after the takeover (see $RIG_DIR/holder.log, kdns-up*.log)"
        EXIT_MS=$(($(now_ms) - t0))
        return 0
    fi
    sig=TERM gap=0
    [[ $c == kill-* ]] && sig=KILL
    [[ $c == *-* ]] && gap=${c#*-}
    kill "-$sig" "$old"
    wait_gone "$old" 30 || die "$s (pid $old) did not exit after SIG$sig"
    EXIT_MS=$(($(now_ms) - t0))
    sleep "$gap"
    T_START=$(now_ms)
    start_server "$s"
}

# check_kdns ROUND CASE: the interface holds exactly one XDP program, the
# running kdns's, and the pins are the expected ones (one line in CHECKS)
check_kdns() {
    local progs want pins verdict=ok wid wpid wgen
    progs=$(in_srv ip -d link show dev "$KIF" | awk '/prog\/xdp/ { for (i = 1; i < NF; i++) if ($i == "id") print $(i + 1) }' | tr '\n' ' ')
    want=$("$KCTL" --socket "$RIG_DIR/kdns.sock" stats --json 2>/dev/null |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["xdp"][0]["program"]["program_id"], d["pid"], d["generation"])' 2>/dev/null || echo "? ? ?")
    pins=$(find "$PIN/$KIF" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort | tr '\n' ' ')
    read -r wid wpid wgen <<<"$want"
    [[ $progs == "$wid " ]] || verdict="FAIL(program)"
    [[ $wpid == "$KPID" ]] || verdict="FAIL(pid)"
    [[ ${pins% } == "$PINS_WANT" ]] || verdict="FAIL(pins)"
    echo "round $1 $2: $verdict: $KIF programs: ${progs:-none}; kdns pid $wpid (expected $KPID), generation $wgen, program $wid; pins: ${pins:-none}" >>"$CHECKS"
    CHECK=$verdict
}

# run SYSTEM CASE ROUND: one load run with a restart in it; one CSV line
run() {
    local s=$1 c=$2 rd=$3 a=${ADDR[$1]} gap=0 d=$DUR
    [[ $c == *-* ]] && gap=${c#*-}
    ((AT + gap + HR_WIN + 1 > d)) && d=$((AT + gap + HR_WIN + 1))
    if gone "$(server_pid "$s")"; then die "$s (pid $(server_pid "$s")) died; see $RIG_DIR/$s.log, holder.log"; fi
    warm "$a" "$RIG_DIR/names.txt"
    local h0 l0 h1 l1 h2 l2 hs ls e0 e1 r0=0 p0=0 r1=0 p1=0 txe=""
    read -r h0 l0 < <(hits "$s")
    e0=0
    [[ $s == kdns ]] && e0=$(held_drops) && read -r r0 p0 < <(xdp_counts)
    veth_counters "$s" >"$RIG_DIR/veth0.txt"
    gen_kxdpgun "$a" "$QPS" "$d" "$RIG_DIR/names.txt" >"$RIG_DIR/gun.res" &
    local gp=$!
    sleep "$AT"
    read -r h1 l1 < <(hits "$s")
    restart "$s" "$c"
    # the first second of the new process (its counters start at 0)
    local left=$((T_START + 1000 - $(now_ms)))
    ((left > 0)) && sleep "$(awk -v l="$left" 'BEGIN { printf "%.3f", l / 1000 }')"
    read -r hs ls < <(hits "$s")
    left=$((T_START + HR_WIN * 1000 - $(now_ms)))
    ((left > 0)) && sleep "$(awk -v l="$left" 'BEGIN { printf "%.3f", l / 1000 }')"
    read -r h2 l2 < <(hits "$s")
    wait "$gp" || true
    e1=0
    [[ $s == kdns ]] && e1=$(held_drops)
    veth_counters "$s" >"$RIG_DIR/veth1.txt"
    local vd
    vd=$(counter_delta "$RIG_DIR/veth0.txt" "$RIG_DIR/veth1.txt")
    local sent recv
    read -r sent recv <"$RIG_DIR/gun.res"
    CHECK="-"
    if [[ $s == kdns ]]; then
        wait_answer "$a" 53 n0.bench.test || log "kdns does not answer after the run"
        check_kdns "$rd" "$c"
        read -r r1 p1 < <(xdp_counts)
        txe=$(kdns_stat "$RIG_DIR/kdns.sock" totals.io.tx_errors)
        mkdir -p "$OUT/kdns-stats"
        "$KCTL" --socket "$RIG_DIR/kdns.sock" stats --json >"$OUT/kdns-stats/round$rd-$c.json" 2>/dev/null || true
    fi
    local before after first
    before=$(ratio "$h0" "$l0" "$h1" "$l1")
    after=$(ratio 0 0 "$h2" "$l2")
    first=$(ratio 0 0 "$hs" "$ls")
    awk -v rd="$rd" -v s="$s" -v c="$c" -v gap="$gap" -v d="$d" -v q="$QPS" -v sent="$sent" -v recv="$recv" \
        -v hb="$before" -v h1="$first" -v ha="$after" -v la="$l2" -v ex="$EXIT_MS" -v rb="$([[ $s == kdns ]] && echo $((e1 - e0)))" -v xr="$([[ $s == kdns ]] && echo $((r1 - r0)))" -v xp="$([[ $s == kdns ]] && echo $((p1 - p0)))" -v txe="$txe" -v vd="$vd" -v ck="$CHECK" 'BEGIN {
            u = sent - recv; if (u < 0) u = 0
            printf "%d,%s,%s,%d,%d,%d,%d,%d,%d,%.3f,%s,%s,%s,%s,%s,%s,%s,%s,%s,%d,%s\n", rd, s, c, gap, d, q, sent, recv, u,
                sent ? 100 * u / sent : 0, rb, vd, xr, xp, txe, hb, h1, ha, (la == "-" ? "" : la), ex, ck
        }' | tee -a "$CSV" | awk -F, -v n="$N" -v t="$TOTAL" '{
            printf "[%d/%d] round %s %-8s %-8s sent %7d unanswered %6d (%7.3f%%; held-socket drops %s, veth drops %s; xdp redirected %s passed %s; reply send errors %s) hit ratio before %s%%, 1st s %s%%, 5 s %s%% (%s lookups); old gone in %s ms; %s\n",
                n, t, $1, $2, $3, $7, $9, $10, $11 == "" ? "-" : $11, $12 == "" ? "none" : $12, $13 == "" ? "-" : $13, $14 == "" ? "-" : $14, $15 == "" ? "-" : $15, $16 == "" ? "-" : $16, $17 == "" ? "-" : $17, $18 == "" ? "-" : $18, $19 == "" ? "-" : $19, $20, $21 }' >&2
}

rig_queries "$RIG_DIR/names.txt" "$NAMES" n
# A queue in front of the server ends of the pairs, as a NIC's TX ring and
# qdisc would be (RESTARTS_QDISC=0: veth's default, none). Without it,
# veth drops replies that find the peer's 256-frame ring full (the
# generator end runs kxdpgun's XDP program), which a new process draining
# the queries held during a restart sends in a burst.
if [[ ${RESTARTS_QDISC:-1} == 1 ]]; then
    for ifn in "$IF_SRV" "$KIF"; do in_srv tc qdisc replace dev "$ifn" root pfifo limit 10000; done
fi
# The server ends' NAPI threads (the receive path up to the XDP program and
# the sockets) in SCHED_FIFO $RESTARTS_NAPI_FIFO (50), above kdns's AF_XDP
# worker (10), as a NIC's interrupt work preempts any task; 0: left at
# SCHED_OTHER, where a starting server on core 0 delays them and the
# generator's veth drops queries that find the 256-frame ring full.
if [[ ${RESTARTS_NAPI_FIFO:-50} != 0 ]]; then
    for pid in "${XP_NAPI_S[1]}" $(napi_pid "$IF_SRV"); do chrt -f -p "${RESTARTS_NAPI_FIFO:-50}" "$pid"; done
fi
for s in "${SYS[@]}"; do setup "$s"; done
log "systems up: $(for s in "${SYS[@]}"; do printf '%s=%s ' "$s" "${ADDR[$s]}"; done); kdns pins in $PIN"
if [[ " ${SYS[*]} " == *" kdns "* && $(in_srv ip -d link show dev "$KIF") != *prog/xdp* ]]; then
    die "no XDP program on $KIF after kdns started (see $RIG_DIR/holder.log)"
fi
{
    echo "# kdns: $KDNS_VERSION"
    echo "# unbound: $(unbound -V 2>&1 | head -1) (UNBOUND_MODE=${UNBOUND_MODE:-forward}); dnsdist: $(dnsdist --version 2>&1 | head -1); kxdpgun: $(kxdpgun -V 2>&1 | head -1)"
    echo "# kernel $(uname -r); $(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'); $(nproc) cores; server core $SRV_CORE, generator core $GEN_CORE; $QPS qps, $NAMES names, restart at ${AT} s, hit-ratio window ${HR_WIN} s; held UDP socket: ${HOLD_BUFS[*]}; RESTARTS_QDISC=${RESTARTS_QDISC:-1} RESTARTS_NAPI_FIFO=${RESTARTS_NAPI_FIFO:-50} UNBOUND_MODE=${UNBOUND_MODE:-forward}"
    echo "round,system,case,gap_s,duration_s,offered_qps,sent,received,unanswered,unanswered_pct,held_socket_drops,veth_drops,xdp_redirected,xdp_passed,kdns_tx_errors,hit_before_pct,hit_1s_pct,hit_after_pct,lookups_after,old_gone_ms,check"
} >"$CSV"
: >"$CHECKS"
read -r -a CASE_LIST <<<"$CASES"
TOTAL=$((ROUNDS * ${#SYS[@]} * ${#CASE_LIST[@]}))
N=0
log "$TOTAL runs; results in $CSV"
for ((round = 1; round <= ROUNDS; round++)); do
    rig_rotation "$round"
    for c in "${CASE_LIST[@]}"; do
        for s in "${ORDER[@]}"; do
            N=$((N + 1))
            run "$s" "$c" "$round"
            sleep 0.5
        done
    done
done

# The end: the last kdns stopped, the holder too, then uninstalled.
if [[ " ${SYS[*]} " == *" kdns "* ]]; then
    kill -TERM "$KPID"
    wait_gone "$KPID" 30 || log "kdns (pid $KPID) did not exit after SIGTERM"
    sys_stop holder
    left=$(in_srv ip -d link show dev "$KIF" | grep -c 'prog/xdp' || true)
    echo "after the last stop: $KIF has $left XDP program(s) (expected 1: the pinned one, passing to the kernel); pins: $(find "$PIN/$KIF" -mindepth 1 -printf '%f ' 2>/dev/null)" >>"$CHECKS"
    in_srv "$KDNS" --uninstall-xdp --pin-dir "$PIN" >>"$RIG_DIR/uninstall.log" 2>&1 || log "kdns --uninstall-xdp failed (see $RIG_DIR/uninstall.log)"
    left=$(in_srv ip -d link show dev "$KIF" | grep -c 'prog/xdp' || true)
    # Pinned objects left (progs.debug and maps.debug are the bpffs's own
    # files; iproute2 may have made its empty directories ip/, tc/, xdp/ in
    # it, having found it in /proc/mounts), and kdns's directory.
    remain=$(find "$BPFFS" -mindepth 1 -not -type d -not -name progs.debug -not -name maps.debug -printf '%P ' 2>/dev/null)
    [[ -e $PIN ]] && remain+="${PIN#"$BPFFS"/}/ "
    verdict=ok
    [[ $left == 0 && -z $remain ]] || verdict=FAIL
    echo "after kdns --uninstall-xdp: $verdict: $KIF has $left XDP program(s); pinned objects left: ${remain:-none} (bpffs directories: $(find "$BPFFS" -mindepth 1 -type d -printf '%P ' 2>/dev/null))" >>"$CHECKS"
fi
for s in "${SYS[@]}"; do [[ $s == kdns ]] || sys_stop "$s"; done
cp "$RIG_DIR"/holder.log "$OUT/restarts-$TAG.kdns.log" 2>/dev/null || true
for f in "$RIG_DIR"/kdns-up*.log; do [[ -e $f ]] && cat "$f" >>"$OUT/restarts-$TAG.kdns-takeover.log"; done
for s in unbound dnsdist; do cp "$RIG_DIR/$s.log" "$OUT/restarts-$TAG.$s.log" 2>/dev/null || true; done
cat "$CHECKS" >&2
python3 "$BENCH_DIR/summarize.py" restarts "$CSV" | tee "$OUT/restarts-$TAG.md"
