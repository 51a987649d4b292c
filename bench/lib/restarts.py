"""The tables of bench/restarts/restarts.sh (used by bench/summarize.py).

One CSV line per run: a system restarted one way (case) under a fixed-rate
open-loop load; unanswered = queries sent - replies, hit ratios from the
server's own counters before the restart and in the 5 s after it.
"""
from collections import defaultdict

from results import fnum, med

SYSTEMS = ["kdns", "unbound", "dnsdist"]
CASES = ["upgrade", "term-0", "term-1", "term-5", "kill-0", "kill-1", "kill-5"]
CASE_NAMES = {
    "upgrade": "upgrade",
    "term-0": "SIGTERM, start at once",
    "term-1": "SIGTERM, start 1 s later",
    "term-5": "SIGTERM, start 5 s later",
    "kill-0": "kill -9, start at once",
    "kill-1": "kill -9, start 1 s later",
    "kill-5": "kill -9, start 5 s later",
}


def _order(xs, known):
    return sorted(xs, key=lambda x: (known.index(x) if x in known else len(known), x))


def _pct(x):
    return "n/a" if x != x else f"{x:.1f}%"


def _unanswered_cell(rr):
    """'median unanswered (median %)', and the range over rounds."""
    u = [int(r["unanswered"]) for r in rr]
    p = [fnum(r["unanswered_pct"]) for r in rr]
    cell = f"{med(u):,.0f} ({med(p):.3f}%)"
    if len(rr) > 1 and min(u) != max(u):
        cell += f" [{min(u):,}-{max(u):,}]"
    return cell


def _veth_total(cell):
    """The sum of a 'name=delta;...' cell of veth drop counters."""
    return sum(int(kv.split("=")[1]) for kv in cell.split(";") if "=" in kv)


def summary(rows):
    """Markdown: unanswered and hit ratios per case and system (medians
    over rounds), the checks of the kdns runs."""
    by = defaultdict(list)
    for r in rows:
        by[(r["case"], r["system"])].append(r)
    systems = _order({s for _, s in by}, SYSTEMS)
    cases = _order({c for c, _ in by}, CASES)
    rounds = sorted({int(r["round"]) for r in rows})
    rates = sorted({int(r["offered_qps"]) for r in rows})
    out = [
        f"Rounds: {len(rounds)}; {', '.join(f'{q:,}' for q in rates)} queries/s offered (kxdpgun, open loop); "
        "every figure is the median over rounds, [min-max] where they differ.\n",
        "### Unanswered queries (sent - replies)\n",
        "| case | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for c in cases:
        cells = [_unanswered_cell(by[(c, s)]) if by.get((c, s)) else "" for s in systems]
        out.append(f"| {CASE_NAMES.get(c, c)} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Of which (medians, kdns): dropped by the held UDP socket (buffer full) / by the rig's veths "
        "(drop counters of both ends) / the new kdns's failed sends (tx_errors: replies, or queries to the backend) / the rest:\n",
        "| case | held socket | veth | send errors | rest |",
        "|---|---|---|---|---|",
    ]
    for c in cases:
        rr = by.get((c, "kdns"), [])
        if not rr:
            continue
        held = [fnum(r["held_socket_drops"]) for r in rr]
        veth = [_veth_total(r["veth_drops"]) for r in rr]
        txe = [fnum(r["kdns_tx_errors"]) for r in rr]
        rest = [int(r["unanswered"]) - h - v - t for r, h, v, t in zip(rr, held, veth, txe)]
        out.append(f"| {CASE_NAMES.get(c, c)} | {med(held):,.0f} | {med(veth):,.0f} | {med(txe):,.0f} | {med(rest):,.0f} |")
    out += [
        "",
        "### Cache hit ratio: before the restart / first second / 5 s after it (new process)\n",
        "| case | " + " | ".join(systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    for c in cases:
        cells = []
        for s in systems:
            rr = by.get((c, s), [])
            if not rr:
                cells.append("")
                continue
            before = med([fnum(r["hit_before_pct"]) for r in rr])
            first = med([fnum(r["hit_1s_pct"]) for r in rr])
            after = med([fnum(r["hit_after_pct"]) for r in rr])
            cells.append(f"{_pct(before)} / {_pct(first)} / {_pct(after)}")
        out.append(f"| {CASE_NAMES.get(c, c)} | " + " | ".join(cells) + " |")
    checks = [r for r in rows if r["system"] == "kdns"]
    if checks:
        bad = [r for r in checks if r["check"] != "ok"]
        out.append("")
        out.append(
            f"kdns after each run: one XDP program on the interface, the new kdns's, and the expected pins: "
            f"{len(checks) - len(bad)} of {len(checks)} runs"
            + ("" if not bad else " (failed: " + ", ".join(f"round {r['round']} {r['case']}: {r['check']}" for r in bad) + ")")
            + "."
        )
    longer = sorted({(r["case"], r["duration_s"]) for r in rows if r["duration_s"] != rows[0]["duration_s"]})
    if longer:
        out.append(
            "Load length: "
            + ", ".join(f"{c} {d} s" for c, d in longer)
            + f" (else {rows[0]['duration_s']} s), so that the 5 s after the restart are under load."
        )
    return "\n".join(out) + "\n"
