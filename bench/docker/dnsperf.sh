#!/usr/bin/env bash
# Figure 1: dnsperf from inside a container, kdns asked directly against
# the same queries through Docker's embedded resolver 127.0.0.11 (which
# forwards to kdns: the client runs with --dns <kdns>).
#
#   bench/docker/dnsperf.sh [-t TAG] [-r ROUNDS] [-l SECONDS] [-i udp|xdp|auto]
#
# Layout (one user-defined bridge network 172.31.X.0/24 of this run):
#   .11  Unbound (bench/docker/unbound.conf: *.bench.test answered locally)
#   .53  kdns (image kdns-host): --workers 1, --io IO, records file with
#        100 services s0..s99 (one instance each), cache for the rest
#   .100 client (bench image: client + dnsperf), --dns .53
# kdns and Unbound pinned to core 0 (--cpuset-cpus 0), the client to
# core 1; dockerd (which runs 127.0.0.11's forwarding) is not pinned.
#
# Query files (100 names each): hit = h0..h99.bench.test A (forwarded to
# Unbound once, then kdns cache hits), local = s0..s99.kdns A (kdns's own
# records). Per round, for each kind, both targets interleaved (order
# alternating round by round):
#   rate runs:    dnsperf -l L -c 8 -T 1 -q Q, no -Q (as fast as it can with
#                 Q outstanding), for Q in $QLIST (default 20 100 500;
#                 Docker's resolver takes at most 100 queries at once)
#   latency runs: dnsperf -Q RATE -l 5 -v (one line per answer), for RATE in
#                 $LAT_RATES (default 2000 5000):
#                 p50/p90/p99 from those lines (dnsperf 2.10 has no
#                 latency histogram option)
# Results (in bench/results/docker/<script>-TAG/): dnsperf-TAG.csv (one line per run), dnsperf-TAG.md
# (summary, python3 bench/summarize.py docker-dnsperf), dnsperf-TAG.log (kdns's log).
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

TAG=main ROUNDS=3 DUR=10 IO=udp
while getopts t:r:l:i: o; do
    case $o in
        t) TAG=$OPTARG ;; r) ROUNDS=$OPTARG ;; l) DUR=$OPTARG ;; i) IO=$OPTARG ;;
        *) exit 2 ;;
    esac
done
QLIST=${QLIST:-"20 100 500"}
LAT_RATES=${LAT_RATES:-"2000 5000"}
docker_out dnsperf
CSV=$RES/dnsperf-$TAG.csv

build_images all
bench_network

workdir
{
    echo 'domains = ["kdns"]'
    for i in $(seq 0 99); do
        printf '[[service]]\nname = "s%d"\ninstances = [{ id = "i%d", addrs = ["10.98.%d.%d"] }]\n' "$i" "$i" $((i / 250)) $((i % 250 + 1))
    done
} >"$WORK/records.toml"
for i in $(seq 0 99); do echo "h$i.bench.test A"; done >"$WORK/hit.txt"
for i in $(seq 0 99); do echo "s$i.kdns A"; done >"$WORK/local.txt"
chmod -R a+rX "$WORK"

"$DOCKER" run -d --name "$PFX-unbound" --label "$LABEL" --network "$NET" --ip "$P.11" --cpuset-cpus 0 \
    -v "$HERE/unbound.conf:/etc/unbound/unbound.conf:ro" "$IMG_UNBOUND" >/dev/null
CAPS=()
[[ $IO == udp ]] || CAPS=(--cap-add NET_ADMIN --cap-add NET_RAW --cap-add SYS_ADMIN --cap-add IPC_LOCK)
"$DOCKER" run -d --name "$PFX-kdns" --label "$LABEL" --network "$NET" --ip "$P.53" --cpuset-cpus 0 "${CAPS[@]}" \
    -v "$WORK/records.toml:/etc/kdns/records.toml:ro" "$IMG_KDNS" \
    --listen "$P.53:53" --backend "$P.11" --allow "$SUBNET" --workers 1 --io "$IO" \
    --domain kdns --records-file /etc/kdns/records.toml --state-file "" \
    --control-socket /run/kdns/control.sock >/dev/null
"$DOCKER" run -d --name "$PFX-client" --label "$LABEL" --network "$NET" --ip "$P.100" --cpuset-cpus 1 \
    --dns "$P.53" -v "$WORK:/q:ro" "$IMG_BENCH" sleep 3600 >/dev/null
sleep 2
"$DOCKER" logs "$PFX-kdns" 2>&1 | sed -n 1,20p >&2
cx() { timeout 120 "$DOCKER" exec "$PFX-client" "$@"; }
for t in "$P.53" 127.0.0.11; do
    cx dig +short +tries=1 "@$t" h1.bench.test A >&2
    cx dig +short +tries=1 "@$t" s1.kdns A >&2
done
# Warm: every name through both paths twice.
for t in "$P.53" 127.0.0.11; do for k in hit local; do
    cx dnsperf -s "$t" -d "/q/$k.txt" -n 2 -c 1 -q 10 >/dev/null 2>&1 || true
done; done

echo "$(machine_note); io=$IO dur=$DUR qlist=$QLIST lat_rates=$LAT_RATES" >"$CSV"
echo "round,kind,target,mode,q,sent,completed,lost,qps,avg_ms,p50_ms,p90_ms,p99_ms,max_ms" >>"$CSV"

# run ROUND KIND TARGET MODE Q
run() {
    local round=$1 kind=$2 target=$3 mode=$4 q=$5 addr out
    [[ $target == direct ]] && addr=$P.53 || addr=127.0.0.11
    out=$WORK/out
    if [[ $mode == rate ]]; then
        cx dnsperf -s "$addr" -d "/q/$kind.txt" -l "$DUR" -c 8 -T 1 -q "$q" -t 1 >"$out" 2>&1 || true
    else
        cx dnsperf -s "$addr" -d "/q/$kind.txt" -l 5 -Q "$q" -c 8 -T 1 -q 100 -t 1 -v >"$out" 2>&1 || true
    fi
    dnsperf_row "$out" "$round" "$kind" "$target" "$mode" "$q" sent completed lost dnsperf_qps dnsperf_avg_ms \
        p50_ms p90_ms p99_ms max_ms | tee -a "$CSV" >&2
}

for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order=(direct docker); else order=(docker direct); fi
    say "round $r/$ROUNDS (${order[*]})"
    for kind in hit local; do
        for q in $QLIST; do for t in "${order[@]}"; do run "$r" "$kind" "$t" rate "$q"; done; done
        for q in $LAT_RATES; do for t in "${order[@]}"; do run "$r" "$kind" "$t" latency "$q"; done; done
    done
done
"$DOCKER" exec "$PFX-kdns" kdns-ctl --socket /run/kdns/control.sock stats >"$WORK/stats" 2>&1 || true
{ "$DOCKER" logs "$PFX-kdns" 2>&1 | sed -n 1,40p; echo "--- kdns-ctl stats"; head -60 "$WORK/stats"; } | sed "s/\x1b\[[0-9;]*m//g" >"$RES/dnsperf-$TAG.log"
python3 "$BENCH_DIR/summarize.py" docker-dnsperf "$CSV" | tee "$RES/dnsperf-$TAG.md"
