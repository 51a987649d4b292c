#!/usr/bin/env python3
"""Summaries of the peer benchmark CSVs (Markdown on stdout).

    summarize.py sweep results/sweep-TAG.csv [more.csv ...]
    summarize.py miss  results/miss-TAG.csv  [more.csv ...]

sweep: per generator and system, the median over rounds at each offered
rate; the saturation throughput (the highest median reply rate, with the
share answered there), the share answered at twice that offered rate, the
per-round saturation range (noise), CPU per reply, and the ratios of kdns
to the peers.

miss: per system and offered rate, medians over rounds of reply rate,
share answered and latency percentiles; the capacity (the highest median
reply rate with >= 99% answered, and the highest reply rate at all).
"""
import csv
import statistics
import sys
from collections import defaultdict

SYS_ORDER = ["kdns", "unbound", "dnsdist"]


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def load(paths):
    """Rows of every file; with several files, round numbers are made
    distinct per file (file index * 1000 + round)."""
    rows = []
    for i, p in enumerate(paths):
        with open(p, newline="") as f:
            for r in csv.DictReader(f):
                if len(paths) > 1:
                    r["round"] = str(i * 1000 + int(r["round"]))
                rows.append(r)
    return rows


def k(x):
    return f"{x / 1000:.1f}k"


def sweep(rows):
    failed = [r for r in rows if int(r["sent"]) == 0]
    rows = [r for r in rows if int(r["sent"]) > 0]
    by = defaultdict(list)  # (gen, sys, offered) -> rows
    for r in rows:
        by[(r["generator"], r["system"], int(r["offered_qps"]))].append(r)
    gens = sorted({g for g, _, _ in by}, key=lambda g: ["kxdpgun", "dnsperf"].index(g) if g in ("kxdpgun", "dnsperf") else 9)
    systems = [s for s in SYS_ORDER if any(s == ss for _, ss, _ in by)]
    rounds = sorted({int(r["round"]) for r in rows})
    out = []
    out.append(f"Rounds: {len(rounds)}; every figure is the median over rounds unless it says min-max.\n")
    if failed:
        out.append("Runs left out (the generator sent nothing): " + ", ".join(f"round {r['round']} {r['generator']} {r['system']} {r['offered_qps']}" for r in failed) + "\n")
    for g in gens:
        out.append(f"### Generator: {g}\n")
        rates = sorted({q for gg, _, q in by if gg == g})
        # per-rate table
        out.append("| offered | " + " | ".join(f"{s} replies/s (answered)" for s in systems) + " |")
        out.append("|---:|" + "---:|" * len(systems))
        for q in rates:
            cells = []
            for s in systems:
                rr = by.get((g, s, q), [])
                if not rr:
                    cells.append("-")
                    continue
                rep = [float(r["reply_qps"]) for r in rr]
                ans = [float(r["answered_pct"]) for r in rr]
                sent = med([float(r["sent_qps"]) for r in rr])
                extra = f", sent {k(sent)}" if sent < 0.9 * q else ""
                cells.append(f"{k(med(rep))} ({med(ans):.1f}%{extra}) [{k(min(rep))}-{k(max(rep))}]")
            out.append(f"| {k(q)} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("[min-max over rounds in brackets; 'sent' shown where the generator sent < 90% of the offered rate]\n")
        # saturation summary
        sat = {}
        out.append("| system | saturation replies/s | at offered | answered there | answered at 2x offered | per-round saturation median [min-max] | highest offered rate with >= 95% answered | CPU us/reply at 100k offered |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for s in systems:
            pts = []
            for q in rates:
                rr = by.get((g, s, q), [])
                if rr:
                    pts.append((med([float(r["reply_qps"]) for r in rr]), q, med([float(r["answered_pct"]) for r in rr])))
            if not pts:
                continue
            best = max(pts)
            sat[s] = best[0]
            q2 = 2 * best[1]
            rr2 = by.get((g, s, q2), [])
            if rr2:
                sent2 = med([float(r["sent_qps"]) for r in rr2])
                a2 = f"{med([float(r['answered_pct']) for r in rr2]):.1f}% ({k(med([float(r['reply_qps']) for r in rr2]))}/s"
                a2 += f", sent only {k(sent2)}/s)" if sent2 < 0.9 * q2 else ")"
            else:
                a2 = f"n/a ({k(q2)} not in sweep)"
            per_round = []
            for rd in rounds:
                v = [float(r["reply_qps"]) for q in rates for r in by.get((g, s, q), []) if int(r["round"]) == rd]
                if len(v) >= len(rates) - 1:  # complete rounds only (one failed run allowed)
                    per_round.append(max(v))
            per_round = per_round or [float("nan")]
            cpu100 = by.get((g, s, 100000), [])
            cpu = f"{med([float(r['cpu_us_per_reply']) for r in cpu100]):.2f}" if cpu100 else "-"
            clean = max([q for _, q, a in pts if a >= 95.0], default=0)
            out.append(f"| {s} | {k(best[0])} | {k(best[1])} | {best[2]:.1f}% | {a2} | {k(med(per_round))} [{k(min(per_round))}-{k(max(per_round))}] | {k(clean)} | {cpu} |")
        out.append("")
        if "kdns" in sat:
            for p in ("unbound", "dnsdist"):
                if p in sat:
                    # per-round ratio of saturations, for the noise
                    rr = []
                    for rd in rounds:
                        a = [float(r["reply_qps"]) for q in rates for r in by.get((g, "kdns", q), []) if int(r["round"]) == rd]
                        b = [float(r["reply_qps"]) for q in rates for r in by.get((g, p, q), []) if int(r["round"]) == rd]
                        if len(a) >= len(rates) - 1 and len(b) >= len(rates) - 1:
                            rr.append(max(a) / max(b))
                    rng = f" (per-round ratios: median {med(rr):.2f}, min {min(rr):.2f}, max {max(rr):.2f})" if rr else ""
                    out.append(f"- kdns/{p} saturation ratio ({g}): **{sat['kdns'] / sat[p]:.2f}x**{rng}; target >= 1.25x: {'met' if sat['kdns'] / sat[p] >= 1.25 else 'MISSED'}")
            out.append("")
    return "\n".join(out)


def miss(rows):
    by = defaultdict(list)
    for r in rows:
        by[(r["system"], int(r["offered_qps"]))].append(r)
    systems = [s for s in ["kdns", "unbound"] + SYS_ORDER if any(s == ss for ss, _ in by)]
    systems = list(dict.fromkeys(systems))
    rounds = sorted({int(r["round"]) for r in rows})
    out = [f"Rounds: {len(rounds)}; medians over rounds, [min-max] of the reply rate.\n"]
    out.append("| system | offered | replies/s | answered | NOERROR | avg ms | stddev ms | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cap = {}
    for s in systems:
        for q in sorted({qq for ss, qq in by if ss == s}):
            rr = by[(s, q)]

            def m(f):
                return med([float(r[f]) for r in rr if r[f] not in ("", "nan")])

            rep = [float(r["reply_qps"]) for r in rr]
            noerr = med([100 * (int(r["received"]) - int(r["servfail"])) / int(r["sent"]) for r in rr if int(r["sent"])])
            noerr_qps = med([(int(r["received"]) - int(r["servfail"])) / float(r["runtime_s"]) for r in rr])
            out.append(
                f"| {s} | {k(q)} | {k(m('reply_qps'))} [{k(min(rep))}-{k(max(rep))}] | {m('answered_pct'):.2f}% | {noerr:.2f}% | {m('avg_ms'):.3f} | {m('stddev_ms'):.3f} | "
                f"{m('p50_ms'):.3f} | {m('p90_ms'):.3f} | {m('p99_ms'):.3f} | {m('p999_ms'):.3f} | {m('max_ms'):.1f} |"
            )
            c = cap.setdefault(s, [0, 0, 0, 0])
            if noerr >= 99.0 and m("reply_qps") > c[0]:
                c[0], c[1] = m("reply_qps"), q
            c[2] = max(c[2], m("reply_qps"))
            c[3] = max(c[3], noerr_qps)
    out.append("")
    out.append("answered = any reply within dnsperf's 1 s timeout (SERVFAIL included); NOERROR = real answers.\n")
    out.append("| system | capacity (highest median reply rate with >= 99% NOERROR) | at offered | highest median reply rate | highest median NOERROR rate |")
    out.append("|---|---:|---:|---:|---:|")
    for s, (c, q, hi, hn) in cap.items():
        out.append(f"| {s} | {k(c)} | {k(q)} | {k(hi)} | {k(hn)} |")
    out.append("")
    return "\n".join(out)


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("sweep", "miss"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    rows = load(sys.argv[2:])
    print(sweep(rows) if sys.argv[1] == "sweep" else miss(rows))


if __name__ == "__main__":
    main()
