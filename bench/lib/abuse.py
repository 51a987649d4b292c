#!/usr/bin/env python3
"""Results of the abuse rig (bench/abuse/flood.sh, soak.sh).

    abuse.py run ORD_OUT FLOOD_OUT|- KDNS_STATS|- key=value...  > RUN.json
        one run as a JSON object: the ordinary client (from dnsperf -v: one
        line per query, "> RCODE name type latency", "> T name type" for a
        timeout), the flooder (dnsperf's summary), kdns's counters when
        given, and the key=value pairs (system, flood_qps, CPU figures...)
    abuse.py summary DIR
        every DIR/runs/*.json: writes DIR/summary.csv, prints the Markdown
        tables (medians over rounds when there are several); without
        DIR/runs (not kept in git), the tables from DIR/summary.csv
        (without kdns's counters)
    abuse.py accounting KDNS_STATS
        queries, replies, drops of queries and in flight from
        `kdns-ctl stats --json`, as JSON

Latency percentiles are over the ordinary client's queries that got a
NOERROR reply within its timeout (nearest rank: the smallest latency with at
least p% of those at or below it); "answered" is that count over the
queries sent. Timeouts and other rcodes are counted separately.
"""

import csv
import glob
import json
import os
import statistics
import sys

import results


def ordinary(path, secs):
    r = results.dnsperf(path)
    lat = r["lat_by_rcode"].get("NOERROR", [])
    rc = {name: len(v) for name, v in r["lat_by_rcode"].items()}
    sent = r["sent"]
    out = {
        "ord_sent": sent,
        "ord_runtime_s": r["runtime_s"],
        "ord_sent_qps": round(sent / secs) if secs else 0,
        "ord_noerror": rc.get("NOERROR", 0),
        "ord_servfail": rc.get("SERVFAIL", 0),
        "ord_refused": rc.get("REFUSED", 0),
        "ord_other": sum(v for k, v in rc.items() if k not in ("NOERROR", "SERVFAIL", "REFUSED")),
        "ord_timeout": r["timeouts"],
        "ord_answered_pct": round(100 * rc.get("NOERROR", 0) / sent, 3) if sent else None,
    }
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        v = results.pct(lat, p)
        out[f"ord_{name}_ms"] = round(v, 3) if v is not None else None
    out["ord_max_ms"] = round(lat[-1], 3) if lat else None
    return out


def flood(path, secs):
    s = results.dnsperf(path)
    if s is None:
        return {"flood_sent": 0}
    rc = s["rcodes"]
    return {
        "flood_sent": s["sent"],
        "flood_runtime_s": s["runtime_s"],
        # every name is sent once at the set rate over `secs` (lib.sh); dnsperf's
        # run time also holds the wait for the last answers
        "flood_sent_qps": round(s["sent"] / secs) if secs else 0,
        "flood_noerror": rc.get("NOERROR", 0),
        "flood_nxdomain": rc.get("NXDOMAIN", 0),
        "flood_servfail": rc.get("SERVFAIL", 0),
        "flood_refused": rc.get("REFUSED", 0),
        "flood_other": sum(v for k, v in rc.items() if k not in ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED")),
        "flood_no_answer": s["lost"],
    }


def accounting(stats):
    """kdns's own books: every query is a reply, a counted drop of a query,
    or still in flight. Drops whose reason starts with answer_ are about
    backend answers, not queries."""
    t = stats["totals"]
    replies = sum(t.get("replies_by_rcode", {}).values())
    drops = t.get("drops", {})
    query_drops = sum(v for k, v in drops.items() if not k.startswith("answer_"))
    return {
        "queries": t.get("queries", 0),
        "replies": replies,
        "query_drops": query_drops,
        "answer_drops": sum(v for k, v in drops.items() if k.startswith("answer_")),
        "in_flight": t.get("in_flight", 0),
        "unaccounted": t.get("queries", 0) - replies - query_drops,
        "drops": drops,
        "replies_by_rcode": {k: v for k, v in t.get("replies_by_rcode", {}).items() if v},
        "io": t.get("io", {}),
        "forwarded": t.get("forwarded", 0),
        "retried": t.get("retried", 0),
        "timeouts": t.get("timeouts", 0),
        "gave_up": t.get("gave_up", 0),
        "panic_forwards": t.get("panic_forwards", 0),
    }


def cmd_run(args):
    ord_out, flood_out, kstats = args[:3]
    row = {}
    for kv in args[3:]:
        k, _, v = kv.partition("=")
        try:
            row[k] = int(v)
        except ValueError:
            try:
                row[k] = float(v)
            except ValueError:
                row[k] = v
    row.update(ordinary(ord_out, row.get("duration_s", 0)))
    row.update(flood(flood_out, row.get("flood_secs", 0)))
    if kstats != "-" and os.path.exists(kstats) and os.path.getsize(kstats) > 0:
        a = accounting(json.load(open(kstats)))
        row["kdns"] = a
        for k in ("pending_full",):
            row[f"kdns_drop_{k}"] = a["drops"].get(k, 0)
    print(json.dumps(row, sort_keys=True))


COLS = [
    "round", "system", "flood_qps", "duration_s",
    "ord_sent", "ord_sent_qps", "ord_noerror", "ord_servfail", "ord_refused", "ord_other", "ord_timeout", "ord_answered_pct",
    "ord_p50_ms", "ord_p90_ms", "ord_p99_ms", "ord_p999_ms", "ord_max_ms",
    "flood_sent", "flood_sent_qps", "flood_noerror", "flood_nxdomain", "flood_servfail", "flood_refused", "flood_other", "flood_no_answer",
    "cpu_s", "cpu_user_s", "cpu_sys_s", "napi_cpu_s", "backends_cpu_s", "core_busy_s",
]


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def cmd_summary(args):
    d = args[0]
    print(summary(d), end="")


def summary(d):
    """The Markdown tables of run folder d (see the module's doc)."""
    files = [f for f in sorted(glob.glob(os.path.join(d, "runs", "*.json"))) if not f.endswith(".kdns-stats.json")]
    rows = [json.loads(open(f).read()) for f in files]
    if rows:
        with open(os.path.join(d, "summary.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, COLS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow(r)
    elif os.path.exists(os.path.join(d, "summary.csv")):
        rows = [{c: _num(v) for c, v in r.items()} for r in csv.DictReader(open(os.path.join(d, "summary.csv")))]
    else:
        sys.exit(f"no runs in {d}/runs and no {d}/summary.csv")
    systems = [s for s in ("kdns", "dnsdist", "unbound") if any(r["system"] == s for r in rows)]
    rates = sorted({r["flood_qps"] for r in rows})
    rounds = len({r.get("round", 1) for r in rows})

    def pick(s, q, key):
        return med([r.get(key) for r in rows if r["system"] == s and r["flood_qps"] == q])

    out = []
    out.append(f"Ordinary client ({rows[0].get('ord_qps', 2000)} qps, unique names under ok.test), "
               f"answered (NOERROR within {rows[0].get('ord_timeout_s', 1)} s) and p99 latency"
               + (f"; medians of {rounds} rounds" if rounds > 1 else "")
               + "; in brackets the p99 over the same system's p99 without a flood:")
    out.append("")
    out.append("| flood (qps offered) | " + " | ".join(f"{s} answered | {s} p99" for s in systems) + " |")
    out.append("|---:|" + "---:|---:|" * len(systems))
    for q in rates:
        cells = []
        for s in systems:
            cells.append(fmt(pick(s, q, "ord_answered_pct"), ".2f") + "%")
            p99, base = pick(s, q, "ord_p99_ms"), pick(s, 0, "ord_p99_ms")
            ratio = f" ({p99 / base:.1f}x)" if q and p99 is not None and base else ""
            cells.append(fmt(p99, ".2f") + " ms" + ratio)
        label = "none (baseline)" if q == 0 else f"{q:,}"
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Flooder (random names under blackhole.test, never answered upstream): what it got (queries, not per "
               "second), and CPU time during the ordinary client's run: the server process (all threads), kdns's NAPI "
               "thread, the Unbounds behind kdns and dnsdist, and the server core's busy time:")
    out.append("")
    out.append("| system | flood offered | sent/s | NOERROR | NXDOMAIN | SERVFAIL | REFUSED | no answer | server CPU s | NAPI CPU s | backends CPU s | server core busy s |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in systems:
        for q in rates:
            g = lambda k: pick(s, q, k)  # noqa: E731
            out.append(f"| {s} | {q:,} | {fmt(g('flood_sent_qps'), ',.0f')} | {fmt(g('flood_noerror'), ',.0f')} | "
                       f"{fmt(g('flood_nxdomain'), ',.0f')} | {fmt(g('flood_servfail'), ',.0f')} | {fmt(g('flood_refused'), ',.0f')} | "
                       f"{fmt(g('flood_no_answer'), ',.0f')} | {fmt(g('cpu_s'), '.2f')} | {fmt(g('napi_cpu_s'), '.2f')} | "
                       f"{fmt(g('backends_cpu_s'), '.2f')} | {fmt(g('core_busy_s'), '.2f')} |")
    k = [r for r in rows if r["system"] == "kdns" and "kdns" in r]
    if k:
        out.append("")
        out.append("kdns's counters (`kdns-ctl stats --json` at the end of each run):")
        out.append("")
        out.append("| flood | round | queries | replies | query drops | unaccounted | in flight | forwarded | retried | gave up (SERVFAIL) | drops by reason |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in sorted(k, key=lambda r: (r["flood_qps"], r.get("round", 1))):
            a = r["kdns"]
            dr = ", ".join(f"{n} {v}" for n, v in a["drops"].items() if v) or "-"
            out.append(f"| {r['flood_qps']:,} | {r.get('round', 1)} | {a['queries']} | {a['replies']} | {a['query_drops']} | "
                       f"{a['unaccounted']} | {a['in_flight']} | {a['forwarded']} | {a['retried']} | {a['gave_up']} | {dr} |")
    text = "\n".join(out) + "\n"
    if files:
        with open(os.path.join(d, "summary.md"), "w") as f:
            f.write(text)
    return text


def _num(v):
    """A summary.csv cell as run JSON holds it: int, float, None or text."""
    if v == "":
        return None
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "run":
        cmd_run(args)
    elif cmd == "summary":
        cmd_summary(args)
    elif cmd == "accounting":
        print(json.dumps(accounting(json.load(open(args[0]))), sort_keys=True))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
