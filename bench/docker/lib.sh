# Shared by the bench/docker scripts (sourced, not run).
#
# Every object a script makes is named kdnsbench-<RUN>-... (RUN = kb<pid>
# unless set) and its containers carry the label kdns.bench.run=<RUN>;
# cleanup (on EXIT, INT and TERM) removes the containers by that label,
# then the networks, network namespaces, processes and images recorded
# by the script. Images: built once per run by build_images, unless
# BENCH_IMAGES=<prefix> names images another run built (they are then
# left alone; run-all.sh builds them once for all three scripts).
set -euo pipefail

# shellcheck source=../lib/rig.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/rig.sh"
ROOT=$RIG_ROOT
HERE=$BENCH_DIR/docker
# results: bench/results/docker/<script>-<tag>/ (docker_out)
RES=$BENCH_DIR/results/docker
DOCKER=${DOCKER:-/usr/bin/docker}
RUN=${RUN:-kb$$}
PFX=kdnsbench-$RUN
LABEL=kdns.bench.run=$RUN

_NETS=() _NETNS=() _PIDS=() _IMAGES=() _DIRS=()

say() { log "$@"; }

# docker_out NAME: RES = the run folder results/docker/NAME-$TAG, created
docker_out() {
    RES=$BENCH_DIR/results/docker/$1-$TAG
    mkdir -p "$RES"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local p
    for p in "${_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    local ids
    ids=$("$DOCKER" ps -aq --filter "label=$LABEL")
    if [[ -n $ids ]]; then
        say "removing $(wc -w <<<"$ids") containers labelled $LABEL"
        # shellcheck disable=SC2086
        # one at a time: 100 at once (one CLI call) wedged dockerd 20.10 once (a
        # libnetwork lock-order deadlock between concurrent endpoint deletions)
        xargs -n 1 "$DOCKER" rm -f <<<"$ids" >/dev/null
    fi
    for p in "${_NETS[@]}"; do "$DOCKER" network rm "$p" >/dev/null; done
    for p in "${_NETNS[@]}"; do ip netns del "$p"; done
    for p in "${_IMAGES[@]}"; do "$DOCKER" rmi "$p" >/dev/null; done
    for p in "${_DIRS[@]}"; do rm -rf "$p"; done
    say "cleaned up run $RUN (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

track_pid() { _PIDS+=("$1"); }
track_netns() { _NETNS+=("$1"); }
# workdir: WORK = a temp directory removed at exit
workdir() { WORK=$(mktemp -d "/tmp/$PFX.XXXXXX"); chmod 755 "$WORK"; _DIRS+=("$WORK"); }

# The image names of this run (or of BENCH_IMAGES).
IMG_PFX=${BENCH_IMAGES:-$PFX}
IMG_BASE=$IMG_PFX-base:latest
IMG_KDNS=$IMG_PFX-kdns:latest
IMG_UNBOUND=$IMG_PFX-unbound:latest
IMG_CLIENT=$IMG_PFX-client:latest
IMG_BENCH=$IMG_PFX-bench:latest

# build_images [all|kdns-base]: base image, kdns-host from target/release,
# and (all) Unbound, client and the bench client with dnsperf.
build_images() {
    local what=${1:-all}
    if [[ -n ${BENCH_IMAGES:-} ]]; then
        say "using the images $IMG_PFX-*"
        return
    fi
    [[ -x $ROOT/target/release/kdns && -x $ROOT/target/release/kdns-ctl ]] ||
        { say "build kdns first: cargo build --release -p kdns -p kdns-ctl"; return 1; }
    _IMAGES+=("$IMG_BASE")
    "$ROOT/scripts/base-image.sh" "$IMG_BASE" >/dev/null
    say "building $IMG_KDNS"
    _IMAGES+=("$IMG_KDNS")
    DOCKER_BUILDKIT=1 "$DOCKER" build -q --build-arg BASE="$IMG_BASE" -f "$ROOT/deploy/Dockerfile" \
        --target kdns-host -t "$IMG_KDNS" "$ROOT/target/release" >/dev/null
    [[ $what == all ]] || return 0
    say "building $IMG_UNBOUND, $IMG_CLIENT, $IMG_BENCH"
    _IMAGES+=("$IMG_UNBOUND" "$IMG_CLIENT" "$IMG_BENCH")
    DOCKER_BUILDKIT=1 "$DOCKER" build -q --build-arg BASE="$IMG_BASE" -f "$ROOT/deploy/Dockerfile" \
        --target unbound -t "$IMG_UNBOUND" "$ROOT" >/dev/null
    DOCKER_BUILDKIT=1 "$DOCKER" build -q --build-arg BASE="$IMG_BASE" -f "$ROOT/deploy/Dockerfile" \
        --target client -t "$IMG_CLIENT" "$ROOT" >/dev/null
    DOCKER_BUILDKIT=1 "$DOCKER" build -q --build-arg CLIENT="$IMG_CLIENT" -f "$HERE/Dockerfile" \
        -t "$IMG_BENCH" "$HERE" >/dev/null
}

# free_subnet BITS: the first 172.31.X.0/BITS (BITS 24 or 22; X from 40 up)
# that no Docker network and no route of the host overlaps. Never
# 172.30.53.0/24 (not in 172.31/16 anyway).
free_subnet() {
    local bits=$1 step=1 x used
    ((bits == 22)) && step=4
    used=$( { "$DOCKER" network inspect $("$DOCKER" network ls -q) \
                --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}' 2>/dev/null; ip -4 route show; } |
        grep -o '172\.31\.[0-9]*\.[0-9]*/[0-9]*' || true)
    for ((x = 40; x + step <= 252; x += step)); do
        if ! python3 - "$x" "$bits" "$used" <<'EOF'; then continue; fi
import ipaddress, sys
x, bits, used = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
me = ipaddress.ip_network(f"172.31.{x}.0/{bits}")
sys.exit(1 if any(me.overlaps(ipaddress.ip_network(u, strict=False)) for u in used) else 0)
EOF
        echo "172.31.$x.0/$bits"
        return 0
    done
    return 1
}

# make_network NAME SUBNET [docker network create options...]
make_network() {
    local name=$1 subnet=$2
    shift 2
    "$DOCKER" network create --driver bridge --subnet "$subnet" --label "$LABEL" "$@" "$name" >/dev/null
    _NETS+=("$name")
}

# net_prefix 172.31.44.0/24 -> 172.31.44
net_prefix() { local s=${1%/*}; echo "${s%.*}"; }

# bench_network: the run's /24 network $PFX-net on a free subnet; sets
# NET, SUBNET and P (its first three octets).
bench_network() {
    SUBNET=$(free_subnet 24)
    P=$(net_prefix "$SUBNET")
    NET=$PFX-net
    make_network "$NET" "$SUBNET"
    say "network $NET $SUBNET"
}

# The CPU load of the machine at this moment (for the result files).
machine_note() {
    echo "# $(date -Is) host $(hostname) $(nproc) cpus; load $(cut -d' ' -f1-3 /proc/loadavg);" \
        "docker $("$DOCKER" version --format '{{.Server.Version}}'); other containers running:" \
        "$(( $("$DOCKER" ps -q | wc -l) - $("$DOCKER" ps -q --filter "label=$LABEL" | wc -l) ))"
}
