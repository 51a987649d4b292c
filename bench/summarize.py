#!/usr/bin/python3
"""Tables and figures of the benchmarks' raw results (bench/results/).

    summarize.py [all]              every run under bench/results: its
                                    tables (Markdown), then the figures
    summarize.py plots [DIR]        the PNG figures of RESULTS.md into DIR
                                    (default bench/results/plots)
    summarize.py KIND FILE...       the tables of one kind of result file,
                                    as the scripts write them next to it

KIND (the script that writes the files):
    peers-sweep CSV...     bench/peers/sweep.sh (several CSVs: one table)
    peers-miss CSV...      bench/peers/miss.sh
    peers-profile CSV [S]  bench/peers/profile.sh (S: seconds per run, 5)
    xdp-sweep CSV...       bench/xdp/sweep.sh
    xdp-cost CSV...        bench/xdp/cost.sh
    xdp-latency CSV...     bench/xdp/latency.sh
    xdp-lookup CSV...      bench/xdp/lookup.sh
    xdp-tier CSV...        bench/xdp/tier.sh (cost rate: the CSV header's)
    xdp-tier-plot CSV PNG  its figure
    records-rig CSV...     bench/records/rig.sh
    docker-dnsperf CSV     bench/docker/dnsperf.sh
    docker-churn CSV       bench/docker/churn.sh
    abuse DIR              bench/abuse/flood.sh (a run folder)
    restarts CSV...        bench/restarts/restarts.sh

Tables need Python 3 alone; the figures need matplotlib (Debian package
python3-matplotlib).
"""
import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))

import abuse  # noqa: E402
import plots  # noqa: E402
import restarts  # noqa: E402
import tables  # noqa: E402
from results import RESULTS, load  # noqa: E402

KINDS = {
    "peers-sweep": lambda p: tables.peers_sweep(load(p, renumber=True)),
    "peers-miss": lambda p: tables.peers_miss(load(p, renumber=True)),
    "peers-profile": lambda p: tables.peers_profile(load(p[:1]), float(p[1]) if len(p) > 1 else 5.0),
    "xdp-sweep": lambda p: tables.xdp_sweep(load(p)),
    "xdp-cost": lambda p: tables.xdp_cost(load(p)),
    "xdp-latency": lambda p: tables.xdp_latency(load(p)),
    "xdp-lookup": lambda p: tables.plain(load(p)),
    "xdp-tier": lambda p: tables.xdp_tier(load(p), tier_cost(p[0])),
    "xdp-tier-plot": lambda p: plots.tier_figure(load(p[:1]), p[1]) or f"wrote {p[1]}",
    "records-rig": lambda p: tables.records_rig(load(p)),
    "docker-dnsperf": lambda p: tables.docker_dnsperf(load(p[:1]), p[0]),
    "docker-churn": lambda p: tables.docker_churn(load(p[:1]), p[0]),
    "abuse": lambda p: abuse.summary(p[0]).rstrip("\n"),
    "restarts": lambda p: restarts.summary(load(p, renumber=True)).rstrip("\n"),
}

# The kind of a run folder's main file, by benchmark and run name prefix.
BY_RUN = {
    ("peers", "sweep-"): "peers-sweep", ("peers", "miss-"): "peers-miss", ("peers", "profile-"): "peers-profile",
    ("xdp", "sweep-"): "xdp-sweep", ("xdp", "cost-"): "xdp-cost", ("xdp", "latency-"): "xdp-latency",
    ("xdp", "lookup-"): "xdp-lookup", ("xdp", "tier-"): "xdp-tier", ("records", "rig-"): "records-rig",
    ("docker", "dnsperf-"): "docker-dnsperf", ("docker", "churn-"): "docker-churn",
    ("restarts", "restarts-"): "restarts",
}


def tier_cost(path):
    """The cost rate written in a tier.sh CSV's header ('cost rate N')."""
    with open(path) as f:
        for line in f:
            if line.startswith("#") and "cost rate " in line:
                return int(line.rsplit("cost rate ", 1)[1].split()[0])
    return None


def run_kind(bench, run):
    if bench == "abuse":
        return "abuse"
    return next((kind for (b, pre), kind in BY_RUN.items() if b == bench and run.startswith(pre)), None)


def everything():
    """The tables of every run folder, then the figures."""
    for d in sorted(glob.glob(os.path.join(RESULTS, "*", "*", ""))):
        bench, run = d.rstrip("/").split("/")[-2:]
        if bench == "plots":
            continue
        kind = run_kind(bench, run)
        csv = os.path.join(d, run + ".csv")
        print(f"## {bench}/{run}\n")
        if kind == "abuse" and (os.path.isdir(os.path.join(d, "runs")) or os.path.exists(os.path.join(d, "summary.csv"))):
            print(KINDS[kind]([d]))
        elif kind and os.path.exists(csv):
            print(KINDS[kind]([csv]))
        else:
            # runs summarized by their scripts alone (callgrind, memory,
            # propagation, the Docker provider) or by hand
            print("(no table: see " + ", ".join(sorted(os.listdir(d))) + ")")
        print()
    for path in plots.draw_all(load, RESULTS, os.path.join(RESULTS, "plots")):
        print(f"figure: {os.path.relpath(path)}")


def main(argv):
    if not argv or argv == ["all"]:
        everything()
    elif argv[0] == "plots":
        for path in plots.draw_all(load, RESULTS, argv[1] if len(argv) > 1 else os.path.join(RESULTS, "plots")):
            print(path)
    elif argv[0] in KINDS and len(argv) > 1:
        print(KINDS[argv[0]](argv[1:]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
