# shellcheck shell=bash
# The "under abuse" scenario: sourced by flood.sh and soak.sh. It uses the
# rig (../lib/rig.sh: namespaces, main veth pair and AF_XDP pair 1,
# steering, pinning, nice/autogroup, cleanup trap, the Unbound and dnsdist
# configurations, _spawn, wait_answer, cpu_ns) and adds what the abuse
# scenario needs:
#
#   generator ns                                        server ns
#   kp<pid>g0  10.77.0.2 ordinary  <-- main pair -->  kp<pid>s0  10.77.0.3 Unbound alone
#              10.66.0.2 flooder                                 10.77.0.4 dnsdist
#   x1g<pid>   10.78.1.2 ordinary  <-- pair 1 ---->  x1s<pid>   10.78.1.1 kdns --io xdp
#              10.66.1.2 flooder
#                                                    lo: 127.0.0.1:5301, :5302  the two Unbounds
#                                                        behind kdns and dnsdist
#                                                        127.0.0.1:5399  the black hole
#
# The ordinary client and the flooder of each system are two addresses of
# the generator namespace in two different /24s (10.77.0.0/24 or
# 10.78.1.0/24 against 10.66.X.0/24), so a limit keyed by client address or
# by /24 tells them apart; dnsperf binds each to its source address (-a).
#
# Every Unbound (the two backends and Unbound alone; num-threads 1, module
# iterator, default limits) answers any name under ok.test. at once from a
# local zone (redirect, A 10.99.0.1) and sends names under blackhole.test.
# to a stub zone whose only server, the black hole (blackhole.py: a UDP
# socket that reads and discards), never answers.
#
# Core placement as in the peer rig: servers (kdns, dnsdist, every
# Unbound) on SRV_CORE (0), the two dnsperf clients and the black hole on
# GEN_CORE (1).
#
# Knobs (environment, all optional; plus those of ../lib/rig.sh):
#   KDNS_ARGS      extra kdns arguments (e.g. "--config /path/kdns.toml")
#   ORD_QPS (2000) the ordinary client's rate
#   ORD_TIMEOUT (1) its dnsperf timeout in seconds: a reply later than this
#                  counts as not answered (deploy/resolv.conf: timeout:1)
#   FLOOD_TIMEOUT (5) the flooder's dnsperf timeout in seconds
#   FLOOD_CLIENTS (16) flooder sockets (dnsperf -c)

# kdns runs with --io xdp (ab_start); this only names the mode in rig_up's log line
KDNS_IO=xdp
AB_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/rig.sh
source "$AB_HERE/../lib/rig.sh"

ORD_QPS=${ORD_QPS:-2000}
ORD_TIMEOUT=${ORD_TIMEOUT:-1}
FLOOD_TIMEOUT=${FLOOD_TIMEOUT:-5}
FLOOD_CLIENTS=${FLOOD_CLIENTS:-16}
BH_PORT=5399
BACKEND_PORTS=(5301 5302)

# The three systems: address, ordinary client address, flooder address.
declare -A AB_ADDR=([kdns]=10.78.1.1 [dnsdist]=10.77.0.4 [unbound]=10.77.0.3)
declare -A AB_ORD=([kdns]=10.78.1.2 [dnsdist]=10.77.0.2 [unbound]=10.77.0.2)
declare -A AB_FLOOD=([kdns]=10.66.1.2 [dnsdist]=10.66.0.2 [unbound]=10.66.0.2)

# ab_up: the peer rig, pair 1 for kdns, the flooder addresses (with routes
# and static neighbours back to them in the server ns), the black hole.
ab_up() {
    rig_up
    xpair_add 1
    in_gen ip addr add 10.66.0.2/24 dev "$IF_GEN"
    in_gen ip addr add 10.66.1.2/24 dev "${XP_IF_G[1]}"
    in_srv ip route add 10.66.0.0/24 dev "$IF_SRV"
    in_srv ip route add 10.66.1.0/24 dev "${XP_IF_S[1]}"
    in_srv ip neigh replace 10.66.0.2 lladdr "$GEN_MAC" dev "$IF_SRV" nud permanent
    in_srv ip neigh replace 10.66.1.2 lladdr "${XP_MAC_G[1]}" dev "${XP_IF_S[1]}" nud permanent
    local a
    for a in 10.77.0.3 10.77.0.4; do
        in_srv ip addr add "$a/24" dev "$IF_SRV"
        in_gen ip neigh replace "$a" lladdr "$SRV_MAC" dev "$IF_GEN" nud permanent
    done
    ip netns exec "$NS_SRV" nice -n "$RIG_NICE" taskset -c "$GEN_CORE" \
        python3 "$AB_HERE/blackhole.py" 127.0.0.1 "$BH_PORT" >>"$RIG_DIR/blackhole.log" 2>&1 &
    RIG_PIDS+=("$!")
    SYS_PIDS[blackhole]=$!
    log "abuse rig: kdns ${AB_ADDR[kdns]} (ordinary ${AB_ORD[kdns]}, flooder ${AB_FLOOD[kdns]}); dnsdist ${AB_ADDR[dnsdist]} and Unbound alone ${AB_ADDR[unbound]} (ordinary 10.77.0.2, flooder 10.66.0.2); black hole 127.0.0.1:$BH_PORT"
}

# Every Unbound of this rig: the zone ok.test (TTL 3600), blackhole.test
# sent to the black hole, any 10/8 client
UNBOUND_ZONE=ok.test
UNBOUND_TTL=3600
UNBOUND_SERVER="    do-not-query-localhost: no"
UNBOUND_CLAUSES="stub-zone:
    name: \"blackhole.test.\"
    stub-addr: 127.0.0.1@$BH_PORT"

# ab_unbound NAME IFACE[@PORT] ADDR PORT: (re)start an Unbound with the
# abuse zones, wait until it answers
ab_unbound() {
    sys_stop "$1"
    unbound_conf "$RIG_DIR/$1.conf" "$2" 10.0.0.0/8
    _spawn "$1" unbound -d -c "$RIG_DIR/$1.conf"
    wait_answer "$3" "$4" "up.ok.test" "$NS_SRV" || die "Unbound $1 does not answer on $3:$4 (see $RIG_DIR/$1.log)"
}

# ab_backends: (re)start the two Unbounds behind kdns and dnsdist (cold: no
# cache, no memory of the black hole's timeouts)
ab_backends() {
    local p
    for p in "${BACKEND_PORTS[@]}"; do ab_unbound "be$p" "127.0.0.1@$p" 127.0.0.1 "$p"; done
}

# ab_start SYSTEM: start kdns | dnsdist | unbound fresh (with fresh
# backends), wait until it answers the ordinary client's kind of name
ab_start() {
    local s=$1 a=${AB_ADDR[$1]} p bargs=()
    case $s in
    kdns)
        ab_backends
        for p in "${BACKEND_PORTS[@]}"; do bargs+=(--backend "127.0.0.1:$p"); done
        xdp_off "${XP_IF_S[1]}"
        # shellcheck disable=SC2086
        kdns_start kdns "$KDNS" --io xdp --listen "$a:53" "${bargs[@]}" --workers 1 \
            --allow 10.78.1.0/24 --allow 10.66.1.0/24 --log-level warn ${KDNS_ARGS:-}
        ;;
    dnsdist)
        ab_backends
        dnsdist_conf "$RIG_DIR/dnsdist.conf" "$a" '"10.77.0.0/24", "10.66.0.0/24", "127.0.0.0/8"' ok.test "${BACKEND_PORTS[@]}"
        sys_stop dnsdist
        _spawn dnsdist dnsdist --supervised --disable-syslog -C "$RIG_DIR/dnsdist.conf"
        ;;
    unbound)
        ab_unbound unbound "$a" "$a" 53
        ;;
    *) die "unknown system $s" ;;
    esac
    wait_answer "$a" 53 "up.ok.test" || die "$s does not answer on $a:53 (see $RIG_DIR/$s.log)"
}

# ab_stop SYSTEM: stop it (and the backends of kdns and dnsdist)
ab_stop() {
    sys_stop "$1"
    [[ $1 == kdns ]] && xdp_off "${XP_IF_S[1]}"
    if [[ $1 != unbound ]]; then
        local p
        for p in "${BACKEND_PORTS[@]}"; do sys_stop "be$p"; done
    fi
    return 0
}

# ab_names FILE COUNT KIND TAG: a dnsperf query file. ordinary: COUNT unique
# names o<i>.TAG.ok.test A; flood: COUNT random names under blackhole.test
# (12 random hex characters, seeded by TAG)
ab_names() {
    python3 - "$@" <<'PY'
import random, sys
path, count, kind, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with open(path, "w") as f:
    if kind == "ordinary":
        f.writelines(f"o{i}.{tag}.ok.test A\n" for i in range(count))
    else:
        rnd = random.Random(tag)
        f.writelines(f"{rnd.getrandbits(48):012x}.blackhole.test A\n" for _ in range(count))
PY
}

# Both clients send every name of their file once (-n 1) at their rate:
# QPS x SECONDS names take SECONDS to send, then dnsperf waits for the
# queries still outstanding (up to its timeout: none is cut short by the
# end of the run); -l is only a bound, SECONDS + timeout + 2. dnsperf's own
# "Run time" includes that wait, so the rate offered is taken as names sent
# over SECONDS (bench/lib/abuse.py; a shortfall in names sent shows a generator that
# could not keep up).

# ab_flood_start SYSTEM QPS SECONDS OUT: the flooder's dnsperf in the
# background (pid in AB_FLOOD_PID), QPS x SECONDS random names under
# blackhole.test; enough queries outstanding for QPS x FLOOD_TIMEOUT, so
# that it keeps offering QPS while nothing answers
ab_flood_start() {
    local q=$(($2 * FLOOD_TIMEOUT * 3 / 2 + 100)) f="$RIG_DIR/flood.txt"
    ab_names "$f" $(($2 * $3)) flood "$TAG-$1-$2-$RANDOM"
    timeout --kill-after=5 $(($3 + FLOOD_TIMEOUT + 20)) ip netns exec "$NS_GEN" nice -n "$RIG_NICE" taskset -c "$GEN_CORE" \
        dnsperf -s "${AB_ADDR[$1]}" -a "${AB_FLOOD[$1]}" -d "$f" -n 1 -l $(($3 + FLOOD_TIMEOUT + 2)) -Q "$2" -c "$FLOOD_CLIENTS" -T 1 \
        -q "$q" -t "$FLOOD_TIMEOUT" -b "${DNSPERF_BUF_KB:-4096}" >"$4" 2>&1 &
    AB_FLOOD_PID=$!
    RIG_PIDS+=("$AB_FLOOD_PID")
}

# ab_ordinary SYSTEM SECONDS FILE OUT [QPS]: the ordinary client (dnsperf
# -v: one line per query with its rcode and latency) in the foreground;
# FILE: QPS (ORD_QPS) x SECONDS unique names under ok.test (ab_names)
ab_ordinary() {
    local qps=${5:-$ORD_QPS} f=$3
    timeout --kill-after=5 $(($2 + ORD_TIMEOUT + 20)) ip netns exec "$NS_GEN" nice -n "$RIG_NICE" taskset -c "$GEN_CORE" \
        dnsperf -s "${AB_ADDR[$1]}" -a "${AB_ORD[$1]}" -d "$f" -n 1 -l $(($2 + ORD_TIMEOUT + 2)) -Q "$qps" -c 4 -T 1 \
        -q $((qps * ORD_TIMEOUT + 100)) -t "$ORD_TIMEOUT" -b "${DNSPERF_BUF_KB:-4096}" -v >"$4" 2>&1 || true
}
