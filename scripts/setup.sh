#!/usr/bin/env bash
# Installs the Debian packages kdns needs to build, test and benchmark.
# Idempotent and quiet; fails loudly. Run as root (or through sudo).
set -euo pipefail

# What each package is for:
#   valgrind        bench/callgrind.sh (instructions per query)
#   pkg-config      building crates that link system libraries
#   iproute2        `ip netns`/veth: the dnsnet of tests/daemon.rs and scripts/demo.sh
#   unbound         the backends kdns forwards to (local zones only, no Internet)
#   dnsutils        dig: queries in tests/daemon.rs and scripts/demo.sh
#   knot-dnsutils   kdig (second DNS client in tests/daemon.rs), kxdpgun (AF_XDP load)
#   dnsperf         load with no lost query during failover (tests, demo, bench)
#   dnsdist         a DNS load balancer to compare kdns with (bench)
#   python3-matplotlib  the PNG figures of bench/summarize.py (Debian's /usr/bin/python3)
# Building the XDP program (kdns-sys/build.rs) and the AF_XDP crates:
#   clang           compiles bpf/kdns_xdp.c to BPF (clang -target bpf)
#   libbpf-dev      BPF headers (bpf/bpf_helpers.h, bpf_endian.h) for that
#   libelf-dev      libelf, linked by the vendored libxdp/libbpf of xsk-rs
#   zlib1g-dev      zlib, linked by the vendored libbpf of xsk-rs
#   m4              libxdp's build runs m4
#   pkg-config      (above) also finds libelf/zlib for the libxdp build
# The cluster layer (src/cluster, etcd-client's gRPC code is generated at build time):
#   protobuf-compiler  protoc
#   libprotobuf-dev    the well-known .proto files protoc imports (google/protobuf/descriptor.proto)
# Several hosts through etcd (tests/cluster.rs, bench/cluster/):
#   etcd-server     etcd 3.4, three members in a namespace
#   etcd-client     etcdctl: health, compaction, bulk loads
# AF_XDP integration tests (tests/xdp.rs):
#   ethtool         checksum offload off on the veth ends (`ethtool -K`), queue counts
#   iputils-ping    ping -4/-6 through the interface while the XDP program is attached
# Metrics:
#   prometheus      promtool check metrics on /metrics (src/control/metrics_tests.rs)
# The compose deployment on a real engine (tests/docker.rs):
#   docker.io       the Docker engine (dockerd, 20.10) and its client /usr/bin/docker;
#                   scripts/docker-engine.sh starts it for the tests
#   docker-compose  compose 1.29, runs compose.yaml
#   debootstrap     the Debian base image of the test images (scripts/base-image.sh;
#                   no image registry is needed)
# The deployment files (tests/deploy.rs, tests/socket_activation.rs):
#   systemd         systemd-analyze verify, systemd-socket-activate
#   python3-venv    the venv of kubernetes-validate (below; Debian's pip
#                   installs nothing outside a venv)
#   iptables        the DaemonSet's node setup and teardown scripts, run in a
#                   namespace (tests/deploy.rs)
PACKAGES=(valgrind pkg-config iproute2 unbound dnsutils knot-dnsutils dnsperf dnsdist python3-matplotlib
    clang libbpf-dev libelf-dev zlib1g-dev m4 ethtool iputils-ping prometheus
    docker.io docker-compose debootstrap systemd python3-venv iptables protobuf-compiler libprotobuf-dev etcd-server etcd-client)

# kubernetes-validate (PyPI), pinned, in its own venv: tests/deploy.rs
# validates deploy/k8s/ with it.
VENV=/opt/kdns-venv
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
venv() {
    [[ -x $VENV/bin/kubernetes-validate ]] && "$VENV/bin/pip" show kubernetes-validate 2>/dev/null |
        grep "^Version: ${KUBERNETES_VALIDATE#*==}$" >/dev/null && return 0
    echo "setup.sh: installing $KUBERNETES_VALIDATE in $VENV" >&2
    $SUDO /usr/bin/python3 -m venv "$VENV" && $SUDO "$VENV/bin/pip" install -q "$KUBERNETES_VALIDATE" >>/tmp/kdns-setup.log 2>&1 || {
        cat /tmp/kdns-setup.log >&2
        echo "setup.sh: pip install $KUBERNETES_VALIDATE failed (log above)" >&2
        exit 1
    }
}

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
        SUDO=false
    fi
else
    SUDO=
fi

if ((${#missing[@]} == 0)); then
    venv
    exit 0
fi

if [[ $SUDO == false ]]; then
    echo "setup.sh: need root to install: ${missing[*]}" >&2
    exit 1
fi

echo "setup.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/kdns-setup.log 2>&1; then
    # The package lists may be missing or stale on a new machine.
    $SUDO apt-get update -qq >>/tmp/kdns-setup.log 2>&1 || { cat /tmp/kdns-setup.log >&2; echo "setup.sh: apt-get update failed" >&2; exit 1; }
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >>/tmp/kdns-setup.log 2>&1 || {
        cat /tmp/kdns-setup.log >&2
        echo "setup.sh: apt-get install ${missing[*]} failed (log above)" >&2
        exit 1
    }
fi
venv
echo "setup.sh: done" >&2
