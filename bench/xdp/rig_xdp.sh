# shellcheck shell=bash
# AF_XDP additions to the peer rig (bench/peers/rig.sh, sourced first and
# used unchanged): one extra single-queue veth pair per AF_XDP system, so
# every system keeps its XDP program attached on an interface of its own and
# all of them can run side by side and be measured in interleaved rounds.
#
#   generator ns                                   server ns
#   kp<pid>g0  10.77.0.2   <-- main pair -->  kp<pid>s0  10.77.0.1/.3/.4  kdns(udp) unbound dnsdist
#   x1g<pid>   10.78.1.2   <-- pair 1 ---->  x1s<pid>   10.78.1.1        kdns --io xdp
#   x2g<pid>   10.78.2.2   <-- pair 2 ---->  x2s<pid>   10.78.2.1        knotd (xdp: listen x2s<pid>)
#   x3g<pid>   10.78.3.2   <-- pair 3 ---->  x3s<pid>   10.78.3.1        kdns-reflector
#
# Packet steering on the extra pairs, as a NIC's interrupt steering would put
# it: both ends get GRO on (which gives veth a NAPI instance even without
# XDP) and threaded NAPI; the server end's NAPI thread is pinned to the
# server core, the generator end's to the generator core. So the server's
# receive path (the XDP program and the copy into the UMEM, copy mode) runs
# on the server core, and the generator's reply receive path (kxdpgun's
# AF_XDP socket) on the generator core. Without this, veth runs the receive
# work of a frame on the CPU that sent it. RPS masks as on the main pair.
# XDP_SRV_NAPI=0 leaves the server end's NAPI unthreaded (receive work on
# the generator core) for comparison.
#
# Cleanup: everything lives in the two namespaces of rig.sh, which
# rig_cleanup deletes (interfaces, and with them any XDP program, go too).
# Knot's netlink-attached program is also removed by knot_stop.

XP_IDX=()              # pair indexes created
declare -A XP_IF_G XP_IF_S XP_MAC_G XP_MAC_S XP_V4_G XP_V4_S XP_NAPI_S XP_NAPI_G

# _napi_pid IFNAME: pid of the NAPI kthread of IFNAME ("napi/<if>-<id>"), or ""
_napi_pid() {
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

# xpair_add IDX: veth pair IDX (1 rx + 1 tx queue each end) between the rig's
# namespaces, 10.78.IDX.2 (generator) <-> 10.78.IDX.1 (server), static
# neighbours, steering as described above.
xpair_add() {
    # names "x<i>g<pid>" / "x<i>s<pid>": the NAPI thread's comm ("napi/<if>-<id>",
    # 15 characters at most) then still tells the pairs and their ends apart
    local i=$1 g="x${1}g${RIG_TAG#kp}" s="x${1}s${RIG_TAG#kp}"
    ip link add "$g" netns "$NS_GEN" numrxqueues 1 numtxqueues 1 type veth \
        peer name "$s" netns "$NS_SRV" numrxqueues 1 numtxqueues 1
    in_gen ip addr add "10.78.$i.2/24" dev "$g"
    in_srv ip addr add "10.78.$i.1/24" dev "$s"
    in_gen ip link set "$g" up
    in_srv ip link set "$s" up
    XP_IF_G[$i]=$g
    XP_IF_S[$i]=$s
    XP_V4_G[$i]=10.78.$i.2
    XP_V4_S[$i]=10.78.$i.1
    XP_MAC_G[$i]=$(in_gen cat "/sys/class/net/$g/address")
    XP_MAC_S[$i]=$(in_srv cat "/sys/class/net/$s/address")
    in_gen ip neigh replace "10.78.$i.1" lladdr "${XP_MAC_S[$i]}" dev "$g" nud permanent
    in_srv ip neigh replace "10.78.$i.2" lladdr "${XP_MAC_G[$i]}" dev "$s" nud permanent
    in_srv sh -c "echo $(printf '%x' $((1 << SRV_CORE))) > /sys/class/net/$s/queues/rx-0/rps_cpus"
    in_gen sh -c "echo $(printf '%x' $((1 << GEN_CORE))) > /sys/class/net/$g/queues/rx-0/rps_cpus"
    in_gen ethtool -K "$g" gro on >/dev/null || die "cannot enable GRO on $g"
    in_gen sh -c "echo 1 > /sys/class/net/$g/threaded" || die "cannot make NAPI threaded on $g"
    XP_NAPI_G[$i]=$(_napi_pid "$g")
    [[ -n ${XP_NAPI_G[$i]} ]] || die "no NAPI thread for $g"
    taskset -pc "$GEN_CORE" "${XP_NAPI_G[$i]}" >/dev/null
    renice -n "$RIG_NICE" -p "${XP_NAPI_G[$i]}" >/dev/null
    XP_NAPI_S[$i]=""
    if [[ ${XDP_SRV_NAPI:-1} == 1 ]]; then
        in_srv ethtool -K "$s" gro on >/dev/null || die "cannot enable GRO on $s"
        in_srv sh -c "echo 1 > /sys/class/net/$s/threaded" || die "cannot make NAPI threaded on $s"
        XP_NAPI_S[$i]=$(_napi_pid "$s")
        [[ -n ${XP_NAPI_S[$i]} ]] || die "no NAPI thread for $s"
        taskset -pc "$SRV_CORE" "${XP_NAPI_S[$i]}" >/dev/null
        renice -n "$RIG_NICE" -p "${XP_NAPI_S[$i]}" >/dev/null
    fi
    XP_IDX+=("$i")
    log "pair $i: $NS_GEN($g 10.78.$i.2, napi pid ${XP_NAPI_G[$i]} on core $GEN_CORE) <-> $NS_SRV($s 10.78.$i.1, napi pid ${XP_NAPI_S[$i]:-none} on core $SRV_CORE)"
}

# The pair of each AF_XDP system.
declare -A XSYS_PAIR=([kdns-xdp]=1 [knot-xdp]=2 [reflector]=3)
# Every system's address (AF_XDP ones on their pair, socket ones on the main pair).
declare -A ADDR_OF=([kdns-xdp]=10.78.1.1 [knot-xdp]=10.78.2.1 [reflector]=10.78.3.1
    [kdns-udp]=10.77.0.1 [unbound]=10.77.0.3 [dnsdist]=10.77.0.4)

# xdp_off IFNAME: remove any XDP program attached by netlink (Knot's,
# kxdpgun's, a crashed run's) from IFNAME in the server namespace.
xdp_off() {
    if in_srv ip -d link show dev "$1" 2>/dev/null | grep -q 'prog/xdp'; then
        in_srv ip link set dev "$1" xdp off 2>/dev/null || in_srv ip link set dev "$1" xdpgeneric off 2>/dev/null || true
        log "removed the XDP program left on $1"
    fi
}

# knot_conf DIR IFNAME ADDR: knotd.conf + zone bench.test (wildcard A 10.99.0.1)
knot_conf() {
    local d=$1
    mkdir -p "$d"
    cat >"$d/bench.test.zone" <<'EOF'
$ORIGIN bench.test.
$TTL 86400
@   SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 3600
@   NS  ns
ns  A   10.99.0.1
*   A   10.99.0.1
EOF
    cat >"$d/knotd.conf" <<EOF
server:
    rundir: "$d"
    pidfile: "$d/knotd.pid"
    listen: $3@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
xdp:
    listen: $2
    udp: on
    tcp: off
log:
  - target: stderr
    any: notice
database:
    storage: "$d/db"
control:
    listen: "$d/knot.sock"
zone:
  - domain: bench.test
    file: "$d/bench.test.zone"
    journal-content: none
    zonefile-sync: -1
EOF
}

# xsys_start SYSTEM: start kdns-xdp | knot-xdp | reflector on its pair, or
# kdns-udp | unbound | dnsdist on the main pair (via rig.sh's sys_start).
xsys_start() {
    local s=$1 i=${XSYS_PAIR[$1]:-} a=${ADDR_OF[$1]}
    case $s in
    kdns-udp) KDNS_MODE_ARGS=(--io udp); sys_start kdns; SYS_PIDS[kdns-udp]=${SYS_PIDS[kdns]}; return 0 ;;
    unbound | dnsdist) sys_start "$s"; return 0 ;;
    esac
    [[ -n $i ]] || die "unknown system $s"
    local ifs=${XP_IF_S[$i]}
    xdp_off "$ifs"
    case $s in
    kdns-xdp)
        backend_start be5301 5301
        local conf=()
        if [[ -n ${KDNS_XDP_TOML:-} ]]; then
            printf '%b\n' "$KDNS_XDP_TOML" >"$RIG_DIR/kdns-xdp.toml"
            conf=(--config "$RIG_DIR/kdns-xdp.toml")
            log "kdns-xdp config: $(tr '\n' ' ' <"$RIG_DIR/kdns-xdp.toml")"
        fi
        rm -f "$RIG_DIR/kdns-xdp.sock"
        _spawn kdns-xdp "$KDNS" "${conf[@]}" --io xdp --listen "$a:53" --backend 127.0.0.1:5301 --workers 1 \
            --allow 10.78.0.0/16 --allow 10.77.0.0/24 --control-socket "$RIG_DIR/kdns-xdp.sock" --log-level info
        ;;
    knot-xdp)
        knot_conf "$RIG_DIR/knot" "$ifs" "$a"
        _spawn knot-xdp knotd -c "$RIG_DIR/knot/knotd.conf"
        ;;
    reflector)
        [[ -x $REFLECTOR ]] || die "reflector not built: (cd bench/reflector && cargo build --release)"
        _spawn reflector "$REFLECTOR" --iface "$ifs" --addr "$a" ${REFLECTOR_ARGS:-}
        ;;
    esac
    wait_answer "$a" 53 n0.bench.test || die "$s does not answer on $a:53 (see $RIG_DIR/$s.log)"
}

# xsys_stop SYSTEM
xsys_stop() {
    local s=$1
    [[ $s == kdns-udp ]] && { sys_stop kdns; unset "SYS_PIDS[kdns-udp]"; return 0; }
    sys_stop "$s"
    local i=${XSYS_PAIR[$s]:-}
    [[ -n $i ]] && xdp_off "${XP_IF_S[$i]}"
    return 0
}

# gen_kx ADDR QPS SECONDS FILE -> "sent received": kxdpgun on the pair that
# holds ADDR (or the main pair), pinned to the generator core.
gen_kx() {
    local a=$1 ifg=$IF_GEN lmac=$GEN_MAC rmac=$SRV_MAC lip=$GEN_V4 i
    for i in "${XP_IDX[@]}"; do
        if [[ $a == "${XP_V4_S[$i]}" ]]; then
            ifg=${XP_IF_G[$i]} lmac=${XP_MAC_G[$i]} rmac=${XP_MAC_S[$i]} lip=${XP_V4_G[$i]}
        fi
    done
    local out="$RIG_DIR/kxdpgun.out" try
    for try in 1 2 3 4 5; do
        timeout $(($3 + 20)) ip netns exec "$NS_GEN" nice -n "$RIG_NICE" taskset -c "$GEN_CORE" \
            kxdpgun -t "$3" -Q "$2" -i "$4" -I "$ifg" -F "$GEN_CORE" -L "$lmac" -R "$rmac" -l "$lip" "$a" >"$out" 2>&1 || true
        cat "$out" >>"$RIG_DIR/kxdpgun.all"
        # the previous run's XDP socket may still be going away ("resource is busy")
        grep -q '^total queries:' "$out" && break
        log "kxdpgun did not run (try $try): $(head -c 200 "$out" | tr '\n' ' ')"
        sleep 1
    done
    awk '/^total queries:/ {s=$3} /^total replies:/ {r=$3} END {printf "%d %d\n", s, r}' "$out"
}

# xwarm SYSTEM FILE: fill caches (every name twice by dnsperf, one second of
# kxdpgun: their queries may differ in flags, and so in cache keys)
xwarm() {
    local a=${ADDR_OF[$1]}
    in_gen taskset -c "$GEN_CORE" dnsperf -s "$a" -d "$2" -n 2 -l 20 -Q 20000 -c 4 -q 500 -t 2 >"$RIG_DIR/warm.out" 2>&1 || true
    local lost
    lost=$(awk '/Queries lost:/ {print $3}' "$RIG_DIR/warm.out")
    [[ ${lost:-1} == 0 ]] || log "warm-up of $1: ${lost:-?} queries lost"
    gen_kx "$a" 20000 1 "$2" >/dev/null
}

# napi_srv_pid SYSTEM: the server-end NAPI thread of the system's pair ("" for main-pair systems)
napi_srv_pid() {
    local i=${XSYS_PAIR[$1]:-}
    [[ -n $i ]] && echo "${XP_NAPI_S[$i]}" || echo ""
}

# tid_cpu_ns TID: CPU time of one thread (schedstat), ns
tid_cpu_ns() {
    local v
    read -r v _ <"/proc/$1/schedstat" 2>/dev/null || v=0
    echo "$v"
}

# core_busy_ticks CORE: non-idle jiffies of CORE so far (/proc/stat)
core_busy_ticks() {
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# other_load_wait: wait (max 40 min, poll 30 s) until no other benchmark
# (bench/peers scripts, dnsperf, kxdpgun not ours) has run for two polls
other_load_wait() {
    local i quiet=0
    for i in $(seq 80); do
        if ! pgrep -f 'bench/peers/(sweep|miss|profile)' >/dev/null && ! pgrep -x dnsperf >/dev/null && ! pgrep -x kxdpgun >/dev/null; then
            quiet=$((quiet + 1))
            ((quiet >= 2)) && return 0
        else
            quiet=0
            ((i == 1)) && log "another benchmark is running; waiting (30 s polls, 40 min max)"
        fi
        sleep 30
    done
    die "other benchmark still running after 40 minutes"
}
