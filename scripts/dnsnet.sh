#!/usr/bin/env bash
# Creates or destroys a small "dnsnet" in network namespaces: a client
# namespace (standing for the containers) joined by a veth pair to a host
# namespace (where kdns and its Unbound backends run). Nothing touches the
# machine's own network namespace.
#
#   scripts/dnsnet.sh up NAME X     create NAME-c and NAME-h, subnet X (1..254)
#   scripts/dnsnet.sh down NAME     kill what runs in them, delete them
#   scripts/dnsnet.sh show NAME     addresses and processes
#
#   NAME-h  <veth>  10.53.X.1/24  fd53:X::1/64    (kdns listens here)
#   NAME-c  <veth>  10.53.X.2/24  fd53:X::2/64    (the "containers")
#
# NAME: letters and digits, at most 12 characters (the veth names are
# derived from it and must fit in 15). Run as root.
set -euo pipefail

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

check_name() {
    [[ $1 =~ ^[A-Za-z0-9]{1,12}$ ]] || { echo "dnsnet.sh: bad NAME '$1' (letters and digits, at most 12)" >&2; exit 2; }
}

up() {
    local name=$1 x=$2
    check_name "$name"
    [[ $x =~ ^[0-9]+$ ]] && ((x >= 1 && x <= 254)) || { echo "dnsnet.sh: bad subnet number '$x' (1..254)" >&2; exit 2; }
    local c="$name-c" h="$name-h" vc="${name}c" vh="${name}h"
    ip netns add "$c"
    ip netns add "$h"
    ip -n "$c" link set lo up
    ip -n "$h" link set lo up
    # Created directly inside the namespaces: the pair never appears in the
    # host's namespace and disappears with them.
    ip link add "$vc" netns "$c" type veth peer name "$vh" netns "$h"
    ip -n "$h" addr add "10.53.$x.1/24" dev "$vh"
    ip -n "$c" addr add "10.53.$x.2/24" dev "$vc"
    ip -n "$h" -6 addr add "fd53:$x::1/64" dev "$vh" nodad
    ip -n "$c" -6 addr add "fd53:$x::2/64" dev "$vc" nodad
    ip -n "$h" link set "$vh" up
    ip -n "$c" link set "$vc" up
}

down() {
    local name=$1 ns pid
    check_name "$name"
    for ns in "$name-c" "$name-h"; do
        ip netns list | awk '{print $1}' | grep -qx "$ns" || continue
        # Only the processes inside our own namespaces, by pid.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -TERM "$pid" 2>/dev/null || true
        done
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
            sleep 0.2
        done
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        rm -rf "/etc/netns/$ns"
        ip netns del "$ns" 2>/dev/null || true
    done
}

show() {
    local name=$1 ns
    check_name "$name"
    for ns in "$name-h" "$name-c"; do
        echo "== $ns"
        ip -n "$ns" -brief addr 2>/dev/null || echo "(absent)"
        local pids
        pids=$(ip netns pids "$ns" 2>/dev/null | paste -sd, -)
        if [[ -n $pids ]]; then ps -o pid=,comm= -p "$pids" 2>/dev/null | sed 's/^ */   pid /' || true; fi
    done
}

[[ $(id -u) -eq 0 ]] || { echo "dnsnet.sh: run as root (network namespaces)" >&2; exit 1; }
case "${1:-}" in
    up) (($# == 3)) || usage; up "$2" "$3" ;;
    down) (($# == 2)) || usage; down "$2" ;;
    show) (($# == 2)) || usage; show "$2" ;;
    *) usage ;;
esac
