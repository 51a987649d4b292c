#!/usr/bin/env python3
"""Summary of bench/records/rig.sh's CSV (Markdown on stdout).

    summarize.py rig results/rig-TAG.csv [more.csv ...]

Per kind (hit, local) and offered rate: the median over rounds of the
replies/s, the share answered and the CPU per reply; the saturation
throughput of each kind (highest median reply rate); the ratio local/hit
(medians and per round) against the target (>= 0.90); and a check that
each kind was answered the way it claims (cache hits vs local answers).
"""
import csv
import statistics
import sys
from collections import defaultdict

TARGET = 0.90


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def k(x):
    return f"{x / 1000:.1f}k"


def load(paths):
    rows = []
    for p in paths:
        with open(p, newline="") as f:
            rows.extend(csv.DictReader(line for line in f if not line.startswith("#")))
    return rows


def rig(rows):
    by = defaultdict(list)
    for r in rows:
        by[(r["kind"], int(r["offered_qps"]))].append(r)
    kinds = [x for x in ("hit", "local") if any(x == kk for kk, _ in by)]
    rates = sorted({q for _, q in by})
    rounds = sorted({int(r["round"]) for r in rows})
    out = [f"Rounds: {len(rounds)}; medians over rounds, [min-max] over rounds.\n"]
    out.append("| offered | " + " | ".join(f"{x}: replies/s (answered) [min-max]; us/reply" for x in kinds) + " |")
    out.append("|---:|" + "---:|" * len(kinds))
    for q in rates:
        cells = []
        for x in kinds:
            rr = by.get((x, q), [])
            if not rr:
                cells.append("-")
                continue
            rep = [float(r["reply_qps"]) for r in rr]
            ans = med([float(r["answered_pct"]) for r in rr])
            us = med([float(r["us_per_reply"]) for r in rr])
            cells.append(f"{k(med(rep))} ({ans:.1f}%) [{k(min(rep))}-{k(max(rep))}]; {us:.2f}")
        out.append(f"| {k(q)} | " + " | ".join(cells) + " |")
    out.append("")
    sat = {}
    for x in kinds:
        pts = [(med([float(r["reply_qps"]) for r in by[(x, q)]]), q) for q in rates if by.get((x, q))]
        sat[x] = max(pts)
    per_round = defaultdict(dict)
    for x in kinds:
        for rd in rounds:
            vals = [float(r["reply_qps"]) for r in rows if r["kind"] == x and int(r["round"]) == rd]
            if vals:
                per_round[rd][x] = max(vals)
    out.append("| kind | saturation replies/s (median over rounds) | at offered | per-round saturation [min-max] |")
    out.append("|---|---:|---:|---:|")
    for x in kinds:
        pr = [per_round[rd][x] for rd in rounds if x in per_round[rd]]
        out.append(f"| {x} | {k(sat[x][0])} | {k(sat[x][1])} | {k(min(pr))}-{k(max(pr))} |")
    out.append("")
    if "hit" in sat and "local" in sat:
        ratio = sat["local"][0] / sat["hit"][0]
        rr = [per_round[rd]["local"] / per_round[rd]["hit"] for rd in rounds if "hit" in per_round[rd] and "local" in per_round[rd]]
        verdict = "met" if ratio >= TARGET else "MISSED"
        out.append(
            f"- local-record answers / cache hits, saturation: **{ratio:.2f}** "
            f"(per round: {', '.join(f'{x:.2f}' for x in rr)}); target >= {TARGET:.2f}: {verdict}"
        )
    # Each kind answered the way it claims.
    bad = []
    for r in rows:
        recv, h, l = int(r["received"]), int(r["cache_hits"]), int(r["local_answers"])
        if r["kind"] == "hit" and (l > 0 or h < 0.99 * recv):
            bad.append(r)
        if r["kind"] == "local" and (h > 0 or l < 0.99 * recv):
            bad.append(r)
    fwd = sum(int(r["forwarded"]) for r in rows)
    out.append(
        f"- path check: {len(rows) - len(bad)} of {len(rows)} runs answered as claimed "
        f"(hit runs: cache hits >= 99% of replies and no local answer; local runs: the reverse); "
        f"queries forwarded during the runs: {fwd}"
    )
    return "\n".join(out)


def main():
    if len(sys.argv) < 3 or sys.argv[1] != "rig":
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    print(rig(load(sys.argv[2:])))


if __name__ == "__main__":
    main()
