#!/usr/bin/env bash
# Figure 2: time from `docker start` / `docker stop` to kdns's answer for
# the container's name changing.
#
#   bench/docker/churn.sh [-t TAG] [-n CHANGES]
#
# kdns runs in a container (image kdns-host, --io udp, --workers 1) at
# .53 of a network of this run (172.31.X.0/24), with the host's /var/run
# mounted read-only at /run/docker-host and
# --docker-socket /run/docker-host/docker.sock (the provider on, serving
# the network that holds its listen address) and --domain kdns. Container
# X: the base image running `sleep infinity` with --init (docker-init is
# PID 1 and passes SIGTERM on, so a plain `docker stop` ends it at once),
# on the same network. churn.py, on the host (it reaches .53 through the
# network's bridge), then stops and starts X CHANGES times (default 200:
# 100 stops, 100 starts) and times each change (see churn.py).
# Results (in bench/results/docker/<script>-TAG/): churn-TAG.csv, churn-TAG.md (summary), churn-TAG.log
# (kdns's log lines about the provider).
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

TAG=main CHANGES=200
while getopts t:n: o; do
    case $o in
        t) TAG=$OPTARG ;; n) CHANGES=$OPTARG ;;
        *) exit 2 ;;
    esac
done
docker_out churn
CSV=$RES/churn-$TAG.csv

build_images kdns
bench_network

"$DOCKER" run -d --name "$PFX-kdns" --label "$LABEL" --network "$NET" --ip "$P.53" \
    -v /var/run:/run/docker-host:ro "$IMG_KDNS" \
    --listen "$P.53:53" --backend 127.0.0.1:5399 --allow "$SUBNET" --workers 1 --io udp \
    --domain kdns --state-file "" --docker-socket /run/docker-host/docker.sock >/dev/null
X=$PFX-x
"$DOCKER" run -d --init --name "$X" --label "$LABEL" --network "$NET" "$IMG_BASE" sleep infinity >/dev/null
for _ in $(seq 50); do
    [[ -n $(dig +short +tries=1 +time=1 "@$P.53" "$X.kdns" A) ]] && break
    sleep 0.2
done
"$DOCKER" logs "$PFX-kdns" 2>&1 | grep -i docker >&2

machine_note >"$CSV"
echo "# kdns in a container, --docker-socket /run/docker-host/docker.sock; X: base image, --init, sleep infinity; docker stop (default -t 10, X ends on SIGTERM); poller on the host every 1 ms" >>"$CSV"
timeout $((CHANGES * 20 + 60)) python3 "$HERE/churn.py" --server "$P.53" --container "$X" --qname "$X.kdns" \
    --changes "$CHANGES" --csv "$CSV" --docker "$DOCKER" 2>"$RES/churn-$TAG.err" || say "churn.py failed (see churn-$TAG.err)"
"$DOCKER" logs "$PFX-kdns" 2>&1 | grep -i docker | sed -n 1,30p >"$RES/churn-$TAG.log"
python3 "$BENCH_DIR/summarize.py" docker-churn "$CSV" | tee "$RES/churn-$TAG.md"
