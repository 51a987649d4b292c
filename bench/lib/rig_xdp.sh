# shellcheck shell=bash
# AF_XDP part of the rig (sourced by rig.sh): one extra single-queue veth
# pair per AF_XDP system, so every system keeps its XDP program attached
# on an interface of its own and all of them can run side by side and be measured in interleaved rounds.
#
#   generator ns                                   server ns
#   kp<pid>g0  10.77.0.2   <-- main pair -->  kp<pid>s0  10.77.0.1/.3/.4  kdns(udp) unbound dnsdist
#   x1g<pid>   10.78.1.2   <-- pair 1 ---->  x1s<pid>   10.78.1.1        kdns --io xdp
#   x2g<pid>   10.78.2.2   <-- pair 2 ---->  x2s<pid>   10.78.2.1        knotd (xdp: listen x2s<pid>)
#   x3g<pid>   10.78.3.2   <-- pair 3 ---->  x3s<pid>   10.78.3.1        kdns-reflector
#   x4g<pid>   10.78.4.2   <-- pair 4 ---->  x4s<pid>   10.78.4.1        xdptx (XDP_TX reflector, no process)
#   x5g<pid>   10.78.5.2   <-- pair 5 ---->  x5s<pid>   10.78.5.1        kdns-xdp-b (a second kdns build)
#   x6g<pid>   10.78.6.2   <-- pair 6 ---->  x6s<pid>   10.78.6.1        kdns-notier (kdns, another config)
#
# kdns-tier is kdns-xdp (pair 1) under another name. A script creates only
# the pairs of the systems it runs (xpairs_for).
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
# the generator core) for comparison; RPS goes to the server core then.
#
# Cleanup: everything lives in the two namespaces of rig.sh, which
# rig_cleanup deletes (interfaces, and with them any XDP program, go too).
# Knot's netlink-attached program is also removed by knot_stop.

XP_IDX=()              # pair indexes created
declare -A XP_IF_G XP_IF_S XP_MAC_G XP_MAC_S XP_V4_G XP_V4_S XP_NAPI_S XP_NAPI_G

# xpair_add IDX: veth pair IDX (1 rx + 1 tx queue each end) between the rig's
# namespaces, 10.78.IDX.2 (generator) <-> 10.78.IDX.1 (server), static
# neighbours, steering as described above.
xpair_add() {
    # names "x<i>g<pid>" / "x<i>s<pid>": the NAPI thread's comm ("napi/<if>-<id>",
    # 15 characters at most) then still tells the pairs and their ends apart
    local i=$1 g="x${1}g${RIG_TAG#kp}" s="x${1}s${RIG_TAG#kp}"
    veth_pair "$g" "$s" "10.78.$i.2/24" "10.78.$i.1/24"
    XP_IF_G[$i]=$g
    XP_IF_S[$i]=$s
    XP_V4_G[$i]=10.78.$i.2
    XP_V4_S[$i]=10.78.$i.1
    XP_MAC_G[$i]=$(mac_of gen "$g")
    XP_MAC_S[$i]=$(mac_of srv "$s")
    in_gen ip neigh replace "10.78.$i.1" lladdr "${XP_MAC_S[$i]}" dev "$g" nud permanent
    in_srv ip neigh replace "10.78.$i.2" lladdr "${XP_MAC_G[$i]}" dev "$s" nud permanent
    XP_NAPI_G[$i]=$(steer gen "$g" "$GEN_CORE")
    XP_NAPI_S[$i]=""
    if [[ ${XDP_SRV_NAPI:-1} == 1 ]]; then
        XP_NAPI_S[$i]=$(steer srv "$s" "$SRV_CORE")
    else
        in_srv sh -c "echo $(printf '%x' $((1 << SRV_CORE))) > /sys/class/net/$s/queues/rx-0/rps_cpus"
    fi
    XP_IDX+=("$i")
    log "pair $i: $NS_GEN($g 10.78.$i.2, napi pid ${XP_NAPI_G[$i]} on core $GEN_CORE) <-> $NS_SRV($s 10.78.$i.1, napi pid ${XP_NAPI_S[$i]:-none} on core $SRV_CORE)"
}

# The pair of each AF_XDP system. kdns-xdp-b is a second kdns build
# (KDNS_B_BIN) for an interleaved A/B of two builds. kdns-tier and
# kdns-notier are kdns with two configurations (KDNS_TOML_OF[system], e.g.
# `[xdp] answer_tier = true|false`; bench/xdp/tier.sh); kdns-tier shares
# kdns-xdp's pair, so those two do not run together. xdptx is the XDP_TX
# reflector (bench/xdp/xdptx.bpf.c): no process, the answer is written in
# the XDP program.
declare -A XSYS_PAIR=([kdns-xdp]=1 [kdns-tier]=1 [knot-xdp]=2 [reflector]=3 [xdptx]=4 [kdns-xdp-b]=5 [kdns-notier]=6)
# Every system's address (AF_XDP ones on their pair, socket ones on the main pair).
declare -A ADDR_OF=([kdns-xdp]=10.78.1.1 [kdns-tier]=10.78.1.1 [knot-xdp]=10.78.2.1 [reflector]=10.78.3.1
    [xdptx]=10.78.4.1 [kdns-xdp-b]=10.78.5.1 [kdns-notier]=10.78.6.1
    [kdns-udp]=10.77.0.1 [unbound]=10.77.0.3 [dnsdist]=10.77.0.4)
# Extra kdns config per kdns system (TOML, \n for newlines); KDNS_XDP_TOML
# is the default for all of them.
declare -A KDNS_TOML_OF=()

# xpairs_for SYSTEM...: create the veth pairs those systems need (once each)
xpairs_for() {
    local s i
    for s in "$@"; do
        i=${XSYS_PAIR[$s]:-}
        [[ -n $i && " ${XP_IDX[*]} " != *" $i "* ]] && xpair_add "$i"
    done
    return 0
}

# xdptx_obj: build the XDP_TX reflector into $RIG_DIR/xdptx.o (once)
xdptx_obj() {
    [[ -s $RIG_DIR/xdptx.o ]] && return 0
    clang -O2 -g -Wall -target bpf -I/usr/include/x86_64-linux-gnu -c "$BENCH_DIR/xdp/xdptx.bpf.c" -o "$RIG_DIR/xdptx.o" ||
        die "cannot build bench/xdp/xdptx.bpf.c (Debian clang libbpf-dev)"
}

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
    kdns-xdp | kdns-xdp-b | kdns-tier | kdns-notier)
        backend_start be5301 5301
        local bin=$KDNS
        if [[ $s == kdns-xdp-b ]]; then
            [[ -x ${KDNS_B_BIN:-} ]] || die "kdns-xdp-b needs KDNS_B_BIN (the second kdns build)"
            bin="$RIG_DIR/kdns-b"
            cp "$KDNS_B_BIN" "$bin"
            log "kdns-xdp-b: $("$bin" --version 2>/dev/null | head -1), sha256 $(sha256sum "$bin" | cut -c1-12)"
        fi
        local conf=() toml=${KDNS_TOML_OF[$s]:-${KDNS_XDP_TOML:-}}
        if [[ -n $toml ]]; then
            printf '%b\n' "$toml" >"$RIG_DIR/$s.toml"
            conf=(--config "$RIG_DIR/$s.toml")
            log "$s config: $(tr '\n' ' ' <"$RIG_DIR/$s.toml")"
        fi
        kdns_start "$s" "$bin" "${conf[@]}" --io xdp --listen "$a:53" --backend 127.0.0.1:5301 --workers 1 \
            --allow 10.78.0.0/16 --allow 10.77.0.0/24 --log-level info
        ;;
    knot-xdp)
        knot_conf "$RIG_DIR/knot" "$ifs" "$a"
        _spawn knot-xdp knotd -c "$RIG_DIR/knot/knotd.conf"
        ;;
    reflector)
        [[ -x $REFLECTOR ]] || die "reflector not built: cargo build --release -p kdns-bench --bin reflector"
        _spawn reflector "$REFLECTOR" --iface "$ifs" --addr "$a" ${REFLECTOR_ARGS:-}
        ;;
    xdptx)
        # veth flushes XDP_TX frames to the peer only when the peer has an
        # XDP program (kxdpgun's and livegen's have one; dig has none), so
        # the check is that the program is attached, not a dig
        xdptx_obj
        in_srv ip link set dev "$ifs" xdpdrv obj "$RIG_DIR/xdptx.o" sec xdp 2>>"$RIG_DIR/xdptx.log" ||
            die "cannot attach the XDP_TX reflector to $ifs (see $RIG_DIR/xdptx.log)"
        in_srv ip -d link show dev "$ifs" | grep -o 'prog/xdp id [0-9]* name [a-z]*' >>"$RIG_DIR/xdptx.log"
        return 0
        ;;
    esac
    wait_answer "$a" 53 n0.bench.test || die "$s does not answer on $a:53 (see $RIG_DIR/$s.log)"
}

# xsys_alive SYSTEM: exit unless the system still runs (xdptx: its program is attached)
xsys_alive() {
    if [[ $1 == xdptx ]]; then
        in_srv ip -d link show dev "${XP_IF_S[${XSYS_PAIR[xdptx]}]}" | grep -q 'prog/xdp' || die "the XDP_TX reflector is no longer attached"
        return 0
    fi
    sys_alive "$1"
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

# napi_srv_pid SYSTEM: the server-end NAPI thread of the system's pair ("" for main-pair systems)
napi_srv_pid() {
    local i=${XSYS_PAIR[$1]:-}
    [[ -n $i ]] && echo "${XP_NAPI_S[$i]}" || echo ""
}

# srv_cpu SYSTEM: "process_ns napi_ns core_ticks" now, for a run's CPU
# accounting: SYSTEM's process (all threads; 0 without one, as xdptx),
# its pair's server-end NAPI thread and the server core's busy jiffies
srv_cpu() {
    local pid=${SYS_PIDS[$1]:-} c=0
    [[ -n $pid ]] && c=$(cpu_ns "$pid")
    echo "$c $(tid_cpu_ns "$(napi_srv_pid "$1")") $(core_busy_ticks "$SRV_CORE")"
}

# rig_reflector: copy the reflector (REFLECTOR_BIN, default
# target/release/reflector) into the run's dir; sets
# REFLECTOR. MUST=1: die if it is not built.
rig_reflector() {
    local rb=${REFLECTOR_BIN:-$BENCH_DIR/../target/release/reflector}
    REFLECTOR="$RIG_DIR/kdns-reflector"
    if [[ -x $rb ]]; then cp "$rb" "$REFLECTOR"; elif [[ ${1:-} == MUST=1 ]]; then die "reflector not built: cargo build --release -p kdns-bench --bin reflector"; fi
}

# knotd_path: knotd on PATH (it lives in /usr/sbin)
knotd_path() {
    command -v knotd >/dev/null || PATH="$PATH:/usr/sbin"
    command -v knotd >/dev/null || die "knotd missing (Debian package knot)"
}
