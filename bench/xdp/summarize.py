#!/usr/bin/env python3
"""Summaries of the AF_XDP benchmark CSVs (Markdown on stdout).

    summarize.py sweep results/sweep-TAG.csv [more.csv ...]
    summarize.py cost  results/cost-TAG.csv
    summarize.py latency results/latency-TAG.csv
    summarize.py lookup results/lookup-TAG.csv

sweep: per system, the median over rounds at each offered rate; the
saturation throughput (highest median reply rate, with the share answered
there); the share answered at twice the offered rate of that point (and
the reply rate there as a share of the saturation throughput); per-round
saturation range; CPU per reply; the ratios of kdns-xdp to the reflector
and to Knot (medians, and per round), checked against the targets.
"""
import csv
import statistics
import sys
from collections import defaultdict

ORDER = ["kdns-xdp", "reflector", "knot-xdp", "unbound", "dnsdist", "kdns-udp"]


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def load(paths):
    rows = []
    for p in paths:
        with open(p, newline="") as f:
            rows.extend(csv.DictReader(line for line in f if not line.startswith("#")))
    return rows


def k(x):
    return f"{x / 1000:.1f}k"


def sweep(rows):
    by = defaultdict(list)
    failed = [r for r in rows if int(r["sent"]) == 0]
    rows = [r for r in rows if int(r["sent"]) > 0]
    for r in rows:
        by[(r["system"], int(r["offered_qps"]))].append(r)
    systems = [s for s in ORDER if any(s == ss for ss, _ in by)]
    rates = sorted({q for _, q in by})
    rounds = sorted({int(r["round"]) for r in rows})
    out = [f"Rounds: {len(rounds)}; medians over rounds; [min-max] over rounds."
           + (f" {len(failed)} run(s) where kxdpgun did not start are left out." if failed else "") + "\n"]
    out.append("| offered | " + " | ".join(f"{s}" for s in systems) + " |")
    out.append("|---:|" + "---:|" * len(systems))
    for q in rates:
        cells = []
        for s in systems:
            rr = by.get((s, q), [])
            if not rr:
                cells.append("-")
                continue
            rep = [float(r["reply_qps"]) for r in rr]
            ans = med([float(r["answered_pct"]) for r in rr])
            sent = med([float(r["sent_qps"]) for r in rr])
            extra = f", sent {k(sent)}" if sent < 0.9 * q else ""
            cells.append(f"{k(med(rep))} ({ans:.1f}%{extra}) [{k(min(rep))}-{k(max(rep))}]")
        out.append(f"| {k(q)} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Cells: median replies/s (median share answered; 'sent' where kxdpgun sent < 90% of the offered rate) [min-max over rounds].\n")

    sat, per_round_sat, ovl = {}, {}, {}
    out.append("| system | saturation replies/s | at offered | answered there | at 2x offered: replies/s (answered; % of saturation) | per-round saturation min-max | CPU us/reply at 300k offered (process+NAPI; whole server core) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for s in systems:
        pts = []
        for q in rates:
            rr = by.get((s, q), [])
            if rr:
                pts.append((med([float(r["reply_qps"]) for r in rr]), q, med([float(r["answered_pct"]) for r in rr])))
        best = max(pts)
        sat[s] = best
        q2 = 2 * best[1]
        rr2 = by.get((s, q2), [])
        if rr2:
            rep2 = med([float(r["reply_qps"]) for r in rr2])
            sent2 = med([float(r["sent_qps"]) for r in rr2])
            ovl[s] = (rep2, med([float(r["answered_pct"]) for r in rr2]), sent2)
            a2 = f"{k(rep2)} ({ovl[s][1]:.1f}%; {100 * rep2 / best[0]:.0f}%)"
            if sent2 < 0.9 * q2:
                a2 += f" [kxdpgun sent only {k(sent2)}/s]"
        else:
            a2 = f"n/a ({k(q2)} not in sweep)"
        pr = []
        for rd in rounds:
            v = [float(r["reply_qps"]) for q in rates for r in by.get((s, q), []) if int(r["round"]) == rd]
            if v:
                pr.append(max(v))
        per_round_sat[s] = pr
        c300 = by.get((s, 300000), [])
        cpu = (
            f"{med([float(r['us_per_reply_proc_napi']) for r in c300]):.2f}; {med([float(r['us_per_reply_core']) for r in c300]):.2f}"
            if c300
            else "-"
        )
        out.append(f"| {s} | {k(best[0])} | {k(best[1])} | {best[2]:.1f}% | {a2} | {k(min(pr))}-{k(max(pr))} | {cpu} |")
    out.append("")

    def ratio(a, b, target, label):
        if a not in sat or b not in sat:
            return
        r = sat[a][0] / sat[b][0]
        pr = [x / y for x, y in zip(per_round_sat[a], per_round_sat[b]) if y]
        rng = f" (per round {min(pr):.2f}-{max(pr):.2f})" if pr else ""
        verdict = f"target >= {target}: {'met' if r >= target else 'MISSED'} {label}" if target else label
        out.append(f"- {a} / {b} saturation: **{r:.2f}x**{rng}; {verdict}")

    ratio("kdns-xdp", "reflector", 0.90, "(>= 90% of the ceiling)")
    ratio("kdns-xdp", "knot-xdp", 1.5, "")
    ratio("kdns-xdp", "unbound", 0, "(for reference)")
    ratio("kdns-xdp", "dnsdist", 0, "(for reference)")
    if "kdns-xdp" in ovl:
        rep2, ans2, sent2 = ovl["kdns-xdp"]
        share = rep2 / sat["kdns-xdp"][0]
        out.append(
            f"- kdns-xdp at 2x its saturation's offered load ({k(2 * sat['kdns-xdp'][1])} offered, {k(sent2)} sent): "
            f"{k(rep2)} replies/s = **{100 * share:.0f}%** of its capacity; target >= 90%: {'met' if share >= 0.9 else 'MISSED'}"
        )
    out.append("")
    return "\n".join(out)


def cost(rows):
    """Medians per (system, variant, offered rate) of the cost CSV."""
    by = defaultdict(list)
    for r in rows:
        if int(r["sent"]) > 0:
            by[(r["system"], r["variant"], int(r["offered_qps"]))].append(r)
    order = {s: i for i, s in enumerate(ORDER)}
    keys = sorted(by, key=lambda x: (x[1] != "default", x[1].startswith("ref-"), x[1], order.get(x[0], 9), x[2]))
    out = ["Medians over rounds. us/q = microseconds of CPU per answered query; 'server tx' = frames the server",
           "handed to its veth per second (replies that left the server), 'gen drop' = of those, dropped at the",
           "generator end's ring.\n"]
    cols = ["system", "variant", "offered", "replies/s", "answered", "server tx/s", "gen drop/s", "worker user us/q",
            "worker sys us/q", "other threads us/q", "NAPI (rx) us/q", "sum us/q", "whole core us/q", "rounds"]
    out.append("| " + " | ".join(cols) + " |")
    out.append("|---|---|" + "---:|" * (len(cols) - 2))
    for key in keys:
        rr = by[key]

        def m(f):
            return med([float(r[f]) for r in rr])

        tot = m("worker_user_us_q") + m("worker_sys_us_q") + m("other_us_q") + m("napi_us_q")
        out.append(
            f"| {key[0]} | {key[1]} | {k(key[2])} | {k(m('reply_qps'))} | {m('answered_pct'):.1f}% | {k(m('srv_if_tx_pps'))} | "
            f"{k(m('srv_if_tx_dropped_pps'))} | {m('worker_user_us_q'):.2f} | {m('worker_sys_us_q'):.2f} | {m('other_us_q'):.2f} | "
            f"{m('napi_us_q'):.2f} | {tot:.2f} | {m('core_us_q'):.2f} | {len(rr)} |"
        )
    return "\n".join(out) + "\n"


def table(rows, cols):
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    rows = load(sys.argv[2:])
    if sys.argv[1] == "sweep":
        print(sweep(rows))
    elif sys.argv[1] == "cost":
        print(cost(rows))
    else:
        print(table(rows, list(rows[0].keys())))


if __name__ == "__main__":
    main()
