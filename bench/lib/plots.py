"""PNG figures of the raw results (used by bench/summarize.py plots).

- Reply rate against offered load, one line per system: the median over
  rounds at each offered rate, the band between the lowest and the highest
  round; the dotted diagonal is "every query answered".
- Latency CDF: the raw results keep dnsperf's percentiles per run (p50,
  p90, p99, p99.9), not every answer's latency, so the CDF is drawn through
  those points (the median over rounds of each percentile), on a logit
  axis that spaces 50%, 90%, 99% and 99.9% evenly.
"""
import os
import sys
from collections import defaultdict

from results import fnum, med

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
except ImportError:  # named in the error, not at import time of the tables
    plt = None

COLORS = {"kdns": "C0", "kdns-xdp": "C0", "reflector": "C7", "knot-xdp": "C2", "unbound": "C1", "dnsdist": "C3",
          "kdns-udp": "C4", "kdns-n": "C9", "kdns-tier": "C0", "kdns-notier": "C9", "kdns-xdp-b": "C4", "xdptx": "C5"}
PERCENTILES = [("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("p999_ms", 0.999)]


def need_matplotlib():
    if plt is None:
        sys.exit(f"summarize.py: the plots need matplotlib, which {sys.executable} does not have "
                 "(Debian package python3-matplotlib: apt-get install python3-matplotlib, then run /usr/bin/python3)")


def rate_panel(ax, rows, systems, title):
    """One panel of reply rate against offered load."""
    by = defaultdict(list)
    for r in rows:
        if int(r["sent"]) > 0:
            by[(r["system"], int(r["offered_qps"]))].append(float(r["reply_qps"]) / 1e3)
    top = 0
    for s in systems:
        qs = sorted(q for ss, q in by if ss == s)
        if not qs:
            continue
        x = [q / 1e3 for q in qs]
        ax.plot(x, [med(by[(s, q)]) for q in qs], marker="o", ms=3, label=s, color=COLORS.get(s))
        ax.fill_between(x, [min(by[(s, q)]) for q in qs], [max(by[(s, q)]) for q in qs], alpha=0.15, color=COLORS.get(s))
        top = max(top, x[-1])
    ax.plot([0, top], [0, top], ls=":", color="grey", lw=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("offered (k queries/s)")
    ax.set_ylabel("replies (k/s)")
    ax.set_xlim(0, top * 1.02)
    ax.set_ylim(0, None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def rate_figure(panels, path):
    """panels: [(rows, systems, title)] side by side, saved to path."""
    need_matplotlib()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (rows, systems, title) in zip(axes[0], panels):
        rate_panel(ax, rows, systems, title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tier_figure(rows, path):
    """bench/xdp/tier.sh: one rate panel per generator."""
    gens = sorted({r["generator"] for r in rows}, key=lambda x: (x != "kxdpgun", x))
    systems = ["kdns-tier", "kdns-notier", "kdns-xdp", "kdns-xdp-b", "knot-xdp", "xdptx", "reflector"]
    rate_figure([([r for r in rows if r["generator"] == g], systems, f"Cache hits, {g}") for g in gens], path)


def latency_figure(panels, path):
    """panels: [(rows, key column, title)]; rows hold p50_ms ... p999_ms;
    one curve per distinct value of the key column."""
    need_matplotlib()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (rows, key, title) in zip(axes[0], panels):
        by = defaultdict(list)
        for r in rows:
            by[r[key]].append(r)
        for name, rr in by.items():
            x = [med([fnum(r[c]) for r in rr]) for c, _ in PERCENTILES]
            ax.plot(x, [p for _, p in PERCENTILES], marker="o", ms=3, label=name, color=COLORS.get(name))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_yscale("logit")
        ax.set_yticks([p for _, p in PERCENTILES])
        ax.set_yticklabels(["50%", "90%", "99%", "99.9%"])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("answers within (median over rounds)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_all(load, results, out):
    """The figures of RESULTS.md from the runs under results/ into out/;
    returns the files written."""
    need_matplotlib()
    os.makedirs(out, exist_ok=True)
    run = lambda *p: os.path.join(results, *p)  # noqa: E731
    written = []

    peers = load([run("peers/sweep-r1/sweep-r1.csv"), run("peers/sweep-r2/sweep-r2.csv")], renumber=True)
    gen = {g: [r for r in peers if r["generator"] == g] for g in ("kxdpgun", "dnsperf")}
    path = os.path.join(out, "peers-sweep.png")
    rate_figure([(gen["kxdpgun"], ["kdns", "unbound", "dnsdist"], "Socket mode, cache hits, kxdpgun (sweep-r1 + r2, 6 rounds)"),
                 (gen["dnsperf"], ["kdns", "unbound", "dnsdist"], "Socket mode, cache hits, dnsperf (sweep-r1 + r2)")], path)
    written.append(path)

    xdp = ["kdns-xdp", "reflector", "knot-xdp", "unbound", "dnsdist"]
    path = os.path.join(out, "xdp-sweep.png")
    rate_figure([(load([run("xdp/sweep-fifo/sweep-fifo.csv")]), xdp, "AF_XDP, default (SCHED_FIFO worker): sweep-fifo"),
                 (load([run("xdp/sweep-s2/sweep-s2.csv")]), xdp, "AF_XDP, normal priority: sweep-s2"),
                 (load([run("xdp/sweep-main/sweep-main.csv")]), xdp, "AF_XDP, before the TX fix: sweep-main")], path)
    written.append(path)

    path = os.path.join(out, "latency-cdf.png")
    miss = [r for r in load([run("peers/miss-m1/miss-m1.csv")]) if r["offered_qps"] == "10000"]
    latency_figure([(load([run("xdp/latency-fifo/latency-fifo.csv")]), "system", "dnsperf at 80k/s, AF_XDP default: latency-fifo"),
                    (load([run("xdp/latency-s2/latency-s2.csv")]), "system", "dnsperf at 80k/s, normal priority: latency-s2"),
                    (miss, "system", "Miss path at 10k/s: miss-m1 (kdns + 2 Unbound)")], path)
    written.append(path)
    return written
