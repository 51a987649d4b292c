#!/usr/bin/env bash
# The figures of bench/RESULTS.md "Several hosts": kdns hosts sharing
# records through a real 3-member etcd (Debian's etcd-server 3.4), on the
# rig of tests/cluster.rs (network namespaces, real kdns, real etcd):
#
#   propagation   time from a change on host a (an instance added or
#                 removed through the control API) to host b's answer
#                 showing it, p50/p90/p99 over CHANGES changes (1000)
#   startup       a kdns joining a cluster whose etcd holds SERVICES
#                 services (10000) of 10 instances: time until it answers,
#                 until every service is served, and its RSS
#   writes        etcd writes per second while hosts a, b and c together
#                 add and remove 100 instances a second (SECONDS, 30)
#
#   sudo bench/cluster/run.sh [-t TAG] [-n CHANGES] [-s SERVICES] [-d SECONDS] [FIGURE...]
#
# The tests are the ignored ones of tests/cluster_bench.rs, built in
# release mode. Results: bench/results/cluster/TAG/ (one JSON a figure,
# the test output, README.md naming the rig and the commit).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TAG=$(date -u +%Y%m%d-%H%M) CHANGES=1000 SERVICES=10000 SECONDS_=30
while getopts t:n:s:d: o; do
    case $o in
        t) TAG=$OPTARG ;; n) CHANGES=$OPTARG ;; s) SERVICES=$OPTARG ;; d) SECONDS_=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
FIGURES=("${@:-propagation_latency startup_with_10k_services writes_at_100_changes_per_second}")
OUT=$ROOT/bench/results/cluster/$TAG
mkdir -p "$OUT"
cd "$ROOT"
nice -n 10 cargo build --release --locked -p kdns-ctl
for f in ${FIGURES[*]}; do
    echo "== $f" >&2
    KDNS_BENCH_OUT=$OUT KDNS_BENCH_CHANGES=$CHANGES KDNS_BENCH_SERVICES=$SERVICES KDNS_BENCH_SECONDS=$SECONDS_ \
        nice -n 10 cargo test --release --locked -p kdns --test cluster_bench -- --ignored --exact --nocapture "$f" \
        2>&1 | tee "$OUT/$f.log" | grep -E "^FIGURE|^test |panicked" || true
done
{
    echo "# Several hosts: run $TAG"
    echo
    echo "- commit: $(git rev-parse HEAD)$(git diff --quiet || echo ' (with uncommitted changes)')"
    echo "- rig: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB,"
    echo "  Linux $(uname -r), $(etcd --version | head -1), kdns release build; etcd members, kdns hosts"
    echo "  and clients share the machine (network namespaces joined by veth pairs)"
    echo "- figures: propagation.json, startup.json, writes.json; *.log: each test's output"
} >"$OUT/README.md"
ls "$OUT"
