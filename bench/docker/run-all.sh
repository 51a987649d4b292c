#!/usr/bin/env bash
# All three figures in one go (about 35 minutes): builds the images once
# (or uses BENCH_IMAGES=<prefix>), then
#   dnsperf.sh -t TAG -i udp -r 3 -l 8     (figure 1, kdns --io udp)
#   dnsperf.sh -t TAG-xdp -i xdp -r 2 -l 8 (figure 1, kdns --io xdp)
#   churn.sh -t TAG -n 200                 (figure 2)
#   thousand.sh -t TAG -n 1000             (figure 3)
# and records the kdns binaries used in results/run-TAG.txt.
#
#   bench/docker/run-all.sh [TAG]
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
TAG=${1:-main}
docker_out run
build_images all
export BENCH_IMAGES=$IMG_PFX
{
    machine_note
    echo "kdns image $IMG_KDNS: kdns sha256 $("$DOCKER" run --rm --entrypoint sha256sum "$IMG_KDNS" /usr/local/bin/kdns | cut -c1-16)"
    echo "target/release/kdns (thousand.sh): sha256 $(sha256sum "$ROOT/target/release/kdns" | cut -c1-16)"
    echo "git $(git -C "$ROOT" log -1 --format='%h %cd')"
} >"$RES/run-$TAG.txt"
"$HERE/dnsperf.sh" -t "$TAG" -i udp -r 3 -l 8
"$HERE/dnsperf.sh" -t "$TAG-xdp" -i xdp -r 2 -l 8
"$HERE/churn.sh" -t "$TAG" -n 200
"$HERE/thousand.sh" -t "$TAG" -n 1000
