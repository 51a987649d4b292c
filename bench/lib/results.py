#!/usr/bin/env python3
"""Reading raw benchmark results: the pieces every summary shares.

As a module (bench/summarize.py, bench/lib/*.py): CSV loading, medians,
nearest-rank percentiles, the `12.3k` rate format, and the parser of a
dnsperf output file (its summary, and with -v one line per query).

As a command, for the rig scripts (one CSV line from one dnsperf run):

    results.py dnsperf OUT [--duration S] FIELD...

FIELD is one of the names of `DNSPERF_FIELDS` (computed from OUT) or any
other word, printed as it is (the script's own columns: round, system...).
Rates are over dnsperf's run time, or over S seconds with --duration;
latency figures are over the answered queries (any rcode), in ms, empty
where nothing was answered.
"""
import csv
import math
import os
import statistics
import sys

RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


def fnum(s):
    """A number from a CSV cell; NaN for an empty or unreadable one."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return float("nan")


def med(xs):
    """Median of the numbers that are not NaN or None (NaN if none)."""
    xs = [x for x in xs if x is not None and x == x]
    return statistics.median(xs) if xs else float("nan")


def pct(sorted_vals, p):
    """Nearest-rank percentile: the smallest value with at least p% of the
    values at or below it (None for no values)."""
    if not sorted_vals:
        return None
    i = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[i]


def k(x):
    """A rate in thousands: 281300 -> '281.3k'."""
    return f"{x / 1000:.1f}k"


def load(paths, renumber=False):
    """The rows of CSV files, skipping '#' comment lines. renumber: make the
    rounds of several files distinct (file index * 1000 + round)."""
    rows = []
    for i, p in enumerate(paths):
        with open(p, newline="") as f:
            for r in csv.DictReader(line for line in f if not line.startswith("#")):
                if renumber and len(paths) > 1:
                    r["round"] = str(i * 1000 + int(r["round"]))
                rows.append(r)
    return rows


def comments(path):
    """The '#' header lines of a result file, without the '# '."""
    with open(path, errors="replace") as f:
        return [line[1:].strip() for line in f if line.startswith("#")]


def dnsperf(path):
    """dnsperf's output: the summary (sent, completed, lost, runtime_s, qps,
    avg_ms, rcodes {name: n}) and, from -v lines ("> RCODE name type
    latency"; "> T name type" on a timeout), every answer's latency in ms
    (sorted, `lat`), by rcode (`lat_by_rcode`) and the timeouts. None if
    the file does not exist."""
    if not path or path == "-" or not os.path.exists(path):
        return None
    r = {"sent": 0, "completed": 0, "lost": 0, "runtime_s": 0.0, "qps": 0.0, "avg_ms": float("nan"),
         "rcodes": {}, "lat": [], "lat_by_rcode": {}, "timeouts": 0}
    for line in open(path, errors="replace"):
        if line.startswith("> "):
            f = line.split()
            if f[1] == "T":
                r["timeouts"] += 1
            elif len(f) >= 5:
                ms = fnum(f[4]) * 1000
                r["lat"].append(ms)
                r["lat_by_rcode"].setdefault(f[1], []).append(ms)
            continue
        s = line.strip()
        if s.startswith("Queries sent:"):
            r["sent"] = int(s.split()[2])
        elif s.startswith("Queries completed:"):
            r["completed"] = int(s.split()[2])
        elif s.startswith("Queries lost:"):
            r["lost"] = int(s.split()[2])
        elif s.startswith("Run time (s):"):
            r["runtime_s"] = float(s.split()[3])
        elif s.startswith("Queries per second:"):
            r["qps"] = float(s.split()[3])
        elif s.startswith("Average Latency"):
            r["avg_ms"] = float(s.split()[3]) * 1000
        elif s.startswith("Response codes:"):
            for part in filter(None, (p.strip() for p in s[len("Response codes:"):].split(","))):
                f = part.split()
                if len(f) >= 2:
                    r["rcodes"][f[0]] = int(f[1])
    r["lat"].sort()
    for v in r["lat_by_rcode"].values():
        v.sort()
    return r


def _ms(v):
    return "" if v is None or v != v else f"{v:.3f}"


def dnsperf_fields(r, duration=None):
    """The named figures of one dnsperf run (see DNSPERF_FIELDS)."""
    lat = r["lat"]
    n = len(lat)
    avg = sum(lat) / n if n else None
    t = duration or r["runtime_s"] or 1
    return {
        "sent": str(r["sent"]),
        "completed": str(r["completed"]),
        "lost": str(r["lost"]),
        "runtime_s": f"{r['runtime_s'] or 1:.3f}",
        "sent_qps": f"{r['sent'] / t:.0f}",
        "reply_qps": f"{r['completed'] / t:.0f}",
        "answered_pct": f"{100 * r['completed'] / r['sent'] if r['sent'] else 0:.2f}",
        "dnsperf_qps": f"{r['qps']:.0f}",
        "dnsperf_avg_ms": _ms(r["avg_ms"]),
        "avg_ms": _ms(avg),
        "stddev_ms": _ms(math.sqrt(sum((x - avg) ** 2 for x in lat) / n) if n else None),
        "p50_ms": _ms(pct(lat, 50)),
        "p90_ms": _ms(pct(lat, 90)),
        "p99_ms": _ms(pct(lat, 99)),
        "p999_ms": _ms(pct(lat, 99.9)),
        "max_ms": _ms(lat[-1] if lat else None),
        "servfail": str(len(r["lat_by_rcode"].get("SERVFAIL", []))),
    }


DNSPERF_FIELDS = list(dnsperf_fields(dnsperf(os.devnull)))


def main(argv):
    if len(argv) < 3 or argv[0] != "dnsperf":
        sys.exit(__doc__)
    path, rest, duration = argv[1], argv[2:], None
    if rest[:1] == ["--duration"]:
        duration, rest = float(rest[1]), rest[2:]
    r = dnsperf(path) or dnsperf(os.devnull)
    f = dnsperf_fields(r, duration)
    print(",".join(f.get(x, x) for x in rest))


if __name__ == "__main__":
    main(sys.argv[1:])
