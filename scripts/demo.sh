#!/usr/bin/env bash
# kdns demo: a small dnsnet in network namespaces, two Unbound backends
# serving a local zone (no Internet needed), kdns in front of them, a few
# lookups from a "container", and a backend killed under load.
#
#   sudo scripts/demo.sh
#
# Installs the Debian packages it needs (scripts/setup.sh), builds kdns and
# kdns-ctl in release mode, and removes everything it created when it ends,
# fails or is interrupted. Touches nothing outside its own namespaces and
# temp dir. Takes about 15 s once built.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DEMO_START=$SECONDS
NAME="kd$$"                 # namespaces $NAME-c (containers) and $NAME-h (host)
X=$((1 + $$ % 254))         # subnet 10.53.X.0/24, fd53:X::/64
HOSTNS="$NAME-h"
CLIENTNS="$NAME-c"
KDNS_V4="10.53.$X.1"
KDNS_V6="fd53:$X::1"
CLIENT_V4="10.53.$X.2"
TMP=$(mktemp -d /tmp/kdns-demo.XXXXXX)
SOCK="$TMP/kdns.sock"
PIDS=()                     # processes we started, killed by pid at the end
UNBOUND_PID=()

bold() { if [[ -t 1 ]]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
section() { echo; bold "== $* "; }
note() { printf '   %s\n' "$*"; }
in_host() { ip netns exec "$HOSTNS" "$@"; }
in_client() { ip netns exec "$CLIENTNS" "$@"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((rc == 130 || rc == 143)); then
        echo
        echo "demo.sh: interrupted" >&2
    elif ((rc != 0)); then
        echo
        echo "demo.sh: failed (exit $rc); last lines of the logs:" >&2
        for f in "$TMP"/*.log; do
            [[ -s $f ]] || continue
            echo "--- $(basename "$f")" >&2
            tail -n 15 "$f" >&2
        done
    fi
    section "Teardown"
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    "$ROOT/scripts/dnsnet.sh" down "$NAME" || true
    rm -rf "$TMP"
    note "namespaces, processes and $TMP removed (demo: $((SECONDS - DEMO_START)) s after the build)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root (network namespaces): sudo $0" >&2; exit 1; }

section "Setup"
t0=$SECONDS
scripts/setup.sh
command -v cargo >/dev/null || { echo "demo.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }
note "building kdns and kdns-ctl (release)"
cargo build --release --quiet -p kdns -p kdns-ctl
note "ready in $((SECONDS - t0)) s"
DEMO_START=$SECONDS
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
KDNS="$BIN/kdns"
CTL=("$BIN/kdns-ctl" --socket "$SOCK")

section "A dnsnet in network namespaces"
scripts/dnsnet.sh up "$NAME" "$X"
cat <<EOF
   $CLIENTNS  (the containers)  $CLIENT_V4, fd53:$X::2
        |  veth
   $HOSTNS  (the host)          kdns on $KDNS_V4:53 and [$KDNS_V6]:53
                                unbound-1 on 127.0.0.1:5301, unbound-2 on 127.0.0.1:5302
EOF

# --- Unbound backends: a local zone "demo.", no recursion, no Internet ---
# (the server options the tests' Unbounds use too: scripts/unbound-base.conf)
write_unbound_conf() { # $1 = port, $2 = identity
    sed -e "s|@IP@|127.0.0.1|" -e "s|@PORT@|$1|" -e "s|@DIR@|$TMP|" scripts/unbound-base.conf
    cat <<EOF
    identity: "$2"
    local-zone: "demo." static
    local-data: "demo. 300 IN SOA ns.demo. admin.demo. 1 3600 600 86400 60"
    local-data: "www.demo. 300 IN A 10.99.0.10"
    local-data: "www.demo. 300 IN AAAA fd99::10"
    local-data: "api.demo. 300 IN A 10.99.0.11"
    local-data: "db.demo. 300 IN A 10.99.0.12"
    local-data: "app.demo. 300 IN A 10.99.0.13"
    local-zone: "load.demo." redirect
    local-data: "load.demo. 300 IN A 10.99.1.1"
remote-control:
    control-enable: no
EOF
}

start_unbound() { # $1 = index (1 or 2)
    local i=$1 port=$((5300 + $1))
    write_unbound_conf "$port" "unbound-$i" >"$TMP/unbound-$i.conf"
    ip netns exec "$HOSTNS" unbound -d -c "$TMP/unbound-$i.conf" >>"$TMP/unbound-$i.log" 2>&1 &
    UNBOUND_PID[i]=$!
    PIDS+=("$!")
    disown "$!" # killed on purpose below: no "Killed" message from bash
    for _ in $(seq 50); do
        if in_host dig +time=1 +tries=1 -p "$port" @127.0.0.1 www.demo A +short 2>/dev/null | grep -q 10.99.0.10; then
            return 0
        fi
        sleep 0.1
    done
    echo "demo.sh: unbound-$i did not start" >&2
    return 1
}

section "Backends"
start_unbound 1
start_unbound 2
note "unbound-1 (pid ${UNBOUND_PID[1]}) and unbound-2 (pid ${UNBOUND_PID[2]}) serve the zone demo."

section "kdns"
ip netns exec "$HOSTNS" "$KDNS" --listen "$KDNS_V4:53" --listen "[$KDNS_V6]:53" \
    --backend 127.0.0.1:5301 --backend 127.0.0.1:5302 \
    --allow "10.53.$X.0/24" --allow "fd53:$X::/64" \
    --control-socket "$SOCK" --handover-socket "$TMP/handover.sock" \
    --cache-dump "$TMP/cache.dump" --state-file "$TMP/records.json" \
    --pin-dir "" >"$TMP/kdns.log" 2>&1 &
KDNS_PID=$!
PIDS+=("$KDNS_PID")
for i in $(seq 50); do
    in_client dig +time=1 +tries=1 @"$KDNS_V4" db.demo A +short 2>/dev/null | grep -q 10.99.0.12 && [[ -S $SOCK ]] && break
    kill -0 "$KDNS_PID" 2>/dev/null || { echo "demo.sh: kdns exited" >&2; exit 1; }
    ((i < 50)) || { echo "demo.sh: kdns does not answer" >&2; exit 1; }
    sleep 0.1
done
note "$KDNS --listen $KDNS_V4:53 --listen [$KDNS_V6]:53 --backend 127.0.0.1:5301 --backend 127.0.0.1:5302 ..."
sed -n 's/.*INFO[^ ]* //p' "$TMP/kdns.log" | sed 's/^/   log: /' | head -n 2

section "Lookups from a container"
for q in "www.demo A" "www.demo AAAA" "api.demo A" "nothing.demo A"; do
    # shellcheck disable=SC2086
    out=$(in_client dig +time=2 +tries=1 @"$KDNS_V4" $q)
    status=$(sed -n 's/.*status: \([A-Z]*\).*/\1/p' <<<"$out")
    answer=$(awk '/^;; ANSWER SECTION/{a=1;next} a&&NF==0{a=0} a{print $NF}' <<<"$out" | paste -sd' ' -)
    printf '   dig %-16s -> %-8s %s\n' "$q" "$status" "${answer:--}"
done
in_client dig +time=2 +tries=1 @"$KDNS_V6" www.demo A +short | sed 's/^/   dig @'"$KDNS_V6"' www.demo A -> /'
in_client dig +time=2 +tries=1 +tcp @"$KDNS_V4" api.demo A +short | sed 's/^/   dig +tcp api.demo A -> /'

section "The second query is a cache hit"
note "each UDP worker has its own cache; the same source port reaches the same worker"
hits() { "${CTL[@]}" stats | sed -n 's/^Cache: *//p'; }
note "before:        $(hits)"
for n in 1 2; do
    t=$(in_client dig +time=2 +tries=1 -b "$CLIENT_V4#45353" @"$KDNS_V4" app.demo A | sed -n 's/;; Query time: //p')
    note "query $n for app.demo: $t; cache now: $(hits)"
done

section "Failover under load: unbound-1 is killed while dnsperf runs"
seq 0 15999 | sed 's/^/n/; s/$/.load.demo A/' >"$TMP/queries.txt"
note "dnsperf: 16000 distinct names (all cache misses), 2000 queries/s, 8 sockets, 5 s timeout"
ip netns exec "$CLIENTNS" dnsperf -s "$KDNS_V4" -d "$TMP/queries.txt" -n 1 -l 8 -Q 2000 -c 8 -q 1000 -t 5 >"$TMP/dnsperf.log" 2>&1 &
PERF_PID=$!
PIDS+=("$PERF_PID")
sleep 3
kill -KILL "${UNBOUND_PID[1]}"
note "t=3 s: unbound-1 killed (SIGKILL)"
sleep 1.5
note "t=4.5 s: kdns-ctl backends"
"${CTL[@]}" backends | sed 's/^/     /'
note "(each worker judges each backend on its own: the UDP workers saw the timeouts and"
note " took unbound-1 out; the TCP worker had no traffic for it, hence \"partial\")"
for _ in $(seq 200); do kill -0 "$PERF_PID" 2>/dev/null || break; sleep 0.1; done
wait "$PERF_PID" || { echo "demo.sh: dnsperf failed" >&2; cat "$TMP/dnsperf.log" >&2; exit 1; }
note "dnsperf:"
grep -E "Queries (sent|completed|lost)|Average Latency" "$TMP/dnsperf.log" | sed 's/^ */     /'
lost=$(sed -n 's/.*Queries lost: *\([0-9]*\).*/\1/p' "$TMP/dnsperf.log")
if [[ $lost == 0 ]]; then note "no query lost: those sent to unbound-1 were retried on unbound-2"; else note "LOST $lost queries"; fi

section "unbound-1 comes back"
start_unbound 1
note "restarted (pid ${UNBOUND_PID[1]}); kdns probes it (id.server CH TXT) with backoff"
for i in $(seq 150); do
    state=$("${CTL[@]}" backends | awk '$1 == "127.0.0.1:5301" {print $2}')
    [[ $state == up ]] && { note "up again after $((i / 10)).$((i % 10)) s"; break; }
    sleep 0.1
done
[[ $state == up ]] || note "still $state after 15 s"

section "kdns-ctl stats"
"${CTL[@]}" stats | sed 's/^/   /'

section "kdns-ctl backends"
"${CTL[@]}" backends | sed 's/^/   /'

section "Stopping kdns (SIGTERM)"
kill -TERM "$KDNS_PID"
for _ in $(seq 50); do kill -0 "$KDNS_PID" 2>/dev/null || break; sleep 0.1; done
wait "$KDNS_PID" && note "kdns exited 0" || note "kdns exited with status $?"
tail -n 1 "$TMP/kdns.log" | sed 's/.*INFO[^ ]* //; s/^/   log: /'
