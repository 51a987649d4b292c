#!/usr/bin/env python3
"""Summaries of the bench/docker result files (markdown tables on stdout).

  summarize.py dnsperf results/dnsperf-TAG.csv
  summarize.py churn results/churn-TAG.csv
"""
import csv
import statistics
import sys
from collections import defaultdict


def rows_of(path):
    return list(csv.DictReader(l for l in open(path) if not l.startswith("#")))


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def fnum(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")


def dnsperf(path):
    rows = rows_of(path)
    by = defaultdict(list)
    for r in rows:
        by[(r["kind"], r["mode"], int(r["q"]), r["target"])].append(r)
    rounds = len({r["round"] for r in rows})
    print(f"Medians over {rounds} rounds ({path}).\n")
    print("Rate runs (no -Q: as fast as dnsperf goes with q queries outstanding):\n")
    print("| kind | outstanding (-q) | target | qps | lost % | avg ms | per-round qps | direct / docker (qps) |")
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for (kind, mode, q, target), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3] != "direct")):
        if mode != "rate":
            continue
        qps = med([fnum(r["qps"]) for r in rs])
        lost = med([100 * fnum(r["lost"]) / max(1, fnum(r["sent"])) for r in rs])
        avg = med([fnum(r["avg_ms"]) for r in rs])
        per = ", ".join(f"{fnum(r['qps']) / 1e3:.1f}k" for r in rs)
        ratio = ""
        if target == "direct" and (kind, mode, q, "docker") in by:
            other = med([fnum(r["qps"]) for r in by[(kind, mode, q, "docker")]])
            ratio = f"{qps / other:.2f}x" if other else ""
        name = "kdns direct" if target == "direct" else "127.0.0.11 -> kdns"
        print(f"| {kind} | {q} | {name} | {qps / 1e3:.1f}k | {lost:.2f} | {avg:.3f} | {per} | {ratio} |")
    print("\nLatency runs (fixed rate -Q, 5 s, -v: one line per answer):\n")
    print("| kind | rate | target | answered % | p50 ms | p90 ms | p99 ms | max ms | p50 docker / direct | p99 docker / direct |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for (kind, mode, q, target), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][3] != "direct")):
        if mode != "latency":
            continue
        ans = med([100 * fnum(r["completed"]) / max(1, fnum(r["sent"])) for r in rs])
        p50, p90, p99, mx = (med([fnum(r[k]) for r in rs]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        r50 = r99 = ""
        if target == "docker" and (kind, mode, q, "direct") in by:
            d = by[(kind, mode, q, "direct")]
            d50, d99 = med([fnum(r["p50_ms"]) for r in d]), med([fnum(r["p99_ms"]) for r in d])
            r50, r99 = f"{p50 / d50:.1f}x", f"{p99 / d99:.1f}x"
        name = "kdns direct" if target == "direct" else "127.0.0.11 -> kdns"
        print(f"| {kind} | {q} | {name} | {ans:.2f} | {p50:.3f} | {p90:.3f} | {p99:.3f} | {mx:.3f} | {r50} | {r99} |")


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def churn(path):
    rows = rows_of(path)
    print(f"{len(rows)} changes ({path}); ms, median / p90 / p99 / max.\n")
    print("| change | n | issue -> answer | CLI returned -> answer | issue -> CLI returned | event (start / die) -> answer | last event (start / stop) -> answer |")
    print("|---|---:|---|---|---|---|---|")
    for what in ("start", "stop"):
        rs = [r for r in rows if r["change"] == what and r["answer_ms"] != ""]
        miss = sum(1 for r in rows if r["change"] == what and r["answer_ms"] == "")
        cols = []
        for k in ("answer_ms", "answer_after_return_ms", "return_ms", "answer_after_event_ms", "answer_after_last_event_ms"):
            xs = [fnum(r[k]) for r in rs if r[k] != ""]
            cols.append(" / ".join(f"{pct(xs, p):.1f}" for p in (0.5, 0.9, 0.99)) + f" / {max(xs):.1f}" if xs else "")
        extra = f" ({miss} without an answer)" if miss else ""
        print(f"| docker {what} | {len(rs)}{extra} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    {"dnsperf": dnsperf, "churn": churn}[sys.argv[1]](sys.argv[2])
