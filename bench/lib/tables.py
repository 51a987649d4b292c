"""Markdown tables of the benchmarks' raw results (used by bench/summarize.py).

Each function takes the rows of one benchmark's CSV files (results.load)
and returns the Markdown text that the scripts write next to the CSV.
"""
import statistics
from collections import defaultdict

from results import fnum, k, med

PEERS = ["kdns", "unbound", "dnsdist"]
XDP = ["kdns-xdp", "kdns-xdp-b", "reflector", "xdptx", "knot-xdp", "unbound", "dnsdist", "kdns-udp"]


def by_key(rows, *cols):
    """rows grouped by the values of cols (offered_qps as an int), leaving
    out runs where the generator sent nothing; also returns those."""
    by, failed = defaultdict(list), []
    for r in rows:
        if "sent" in r and int(r["sent"]) == 0:
            failed.append(r)
            continue
        by[tuple(int(r[c]) if c == "offered_qps" else r[c] for c in cols)].append(r)
    return by, failed


def rate_cell(rr, q):
    """'median replies/s (median answered%[, sent X]) [min-max]' of one rate."""
    rep = [float(r["reply_qps"]) for r in rr]
    sent = med([float(r["sent_qps"]) for r in rr])
    extra = f", sent {k(sent)}" if sent < 0.9 * q else ""
    return f"{k(med(rep))} ({med([float(r['answered_pct']) for r in rr]):.1f}%{extra}) [{k(min(rep))}-{k(max(rep))}]"


def points(by, key, rates):
    """(median reply rate, offered, median answered %) of every rate run."""
    pts = []
    for q in rates:
        rr = by.get(key + (q,), [])
        if rr:
            pts.append((med([float(r["reply_qps"]) for r in rr]), q, med([float(r["answered_pct"]) for r in rr])))
    return pts


def round_best(by, key, rates, rd):
    """The reply rates of one round (for its saturation: their maximum)."""
    return [float(r["reply_qps"]) for q in rates for r in by.get(key + (q,), []) if int(r["round"]) == rd]


def peers_sweep(rows):
    by, failed = by_key(rows, "generator", "system", "offered_qps")
    gens = sorted({g for g, _, _ in by}, key=lambda g: ["kxdpgun", "dnsperf"].index(g) if g in ("kxdpgun", "dnsperf") else 9)
    systems = [s for s in PEERS if any(s == ss for _, ss, _ in by)]
    rounds = sorted({int(r["round"]) for r in rows if int(r["sent"]) > 0})
    out = [f"Rounds: {len(rounds)}; every figure is the median over rounds unless it says min-max.\n"]
    if failed:
        out.append("Runs left out (the generator sent nothing): " + ", ".join(f"round {r['round']} {r['generator']} {r['system']} {r['offered_qps']}" for r in failed) + "\n")
    for g in gens:
        out.append(f"### Generator: {g}\n")
        rates = sorted({q for gg, _, q in by if gg == g})
        out.append("| offered | " + " | ".join(f"{s} replies/s (answered)" for s in systems) + " |")
        out.append("|---:|" + "---:|" * len(systems))
        for q in rates:
            out.append(f"| {k(q)} | " + " | ".join(rate_cell(by[(g, s, q)], q) if by.get((g, s, q)) else "-" for s in systems) + " |")
        out.append("")
        out.append("[min-max over rounds in brackets; 'sent' shown where the generator sent < 90% of the offered rate]\n")
        sat = {}
        out.append("| system | saturation replies/s | at offered | answered there | answered at 2x offered | per-round saturation median [min-max] | highest offered rate with >= 95% answered | CPU us/reply at 100k offered |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for s in systems:
            pts = points(by, (g, s), rates)
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
            # complete rounds only (one failed run allowed)
            per_round = [max(v) for v in (round_best(by, (g, s), rates, rd) for rd in rounds) if len(v) >= len(rates) - 1]
            per_round = per_round or [float("nan")]
            cpu100 = by.get((g, s, 100000), [])
            cpu = f"{med([float(r['cpu_us_per_reply']) for r in cpu100]):.2f}" if cpu100 else "-"
            clean = max([q for _, q, a in pts if a >= 95.0], default=0)
            out.append(f"| {s} | {k(best[0])} | {k(best[1])} | {best[2]:.1f}% | {a2} | {k(med(per_round))} [{k(min(per_round))}-{k(max(per_round))}] | {k(clean)} | {cpu} |")
        out.append("")
        if "kdns" in sat:
            for p in ("unbound", "dnsdist"):
                if p not in sat:
                    continue
                rr = []
                for rd in rounds:
                    a, b = round_best(by, (g, "kdns"), rates, rd), round_best(by, (g, p), rates, rd)
                    if len(a) >= len(rates) - 1 and len(b) >= len(rates) - 1:
                        rr.append(max(a) / max(b))
                rng = f" (per-round ratios: median {med(rr):.2f}, min {min(rr):.2f}, max {max(rr):.2f})" if rr else ""
                out.append(f"- kdns/{p} saturation ratio ({g}): **{sat['kdns'] / sat[p]:.2f}x**{rng}; target >= 1.25x: {'met' if sat['kdns'] / sat[p] >= 1.25 else 'MISSED'}")
            out.append("")
    return "\n".join(out)


def peers_miss(rows):
    by = defaultdict(list)
    for r in rows:
        by[(r["system"], int(r["offered_qps"]))].append(r)
    systems = list(dict.fromkeys(s for s in ["kdns", "unbound"] + PEERS if any(s == ss for ss, _ in by)))
    rounds = sorted({int(r["round"]) for r in rows})
    out = [f"Rounds: {len(rounds)}; medians over rounds, [min-max] of the reply rate.\n"]
    out.append("| system | offered | replies/s | answered | NOERROR | avg ms | stddev ms | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cap = {}
    for s in systems:
        for q in sorted({qq for ss, qq in by if ss == s}):
            rr = by[(s, q)]

            def m(f):
                return med([fnum(r[f]) for r in rr])

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


def peers_profile(rows, seconds=5.0):
    out = ["| system | offered | replies/s (median) | CPU us/reply median [min-max] | replies per context switch |", "|---|---:|---:|---:|---:|"]
    for s in PEERS:
        rr = [r for r in rows if r["system"] == s]
        if not rr:
            continue
        us = [float(r["us_per_reply"]) for r in rr]
        rep = statistics.median(int(r["received"]) for r in rr) / seconds
        rps = statistics.median(float(r["replies_per_switch"]) for r in rr)
        out.append(f"| {s} | {int(rr[0]['offered_qps']) // 1000}k | {rep:.0f} | {statistics.median(us):.2f} [{min(us):.2f}-{max(us):.2f}] | {rps:.1f} |")
    return "\n".join(out)


def xdp_sweep(rows):
    by, failed = by_key(rows, "system", "offered_qps")
    systems = [s for s in XDP if any(s == ss for ss, _ in by)]
    rates = sorted({q for _, q in by})
    rounds = sorted({int(r["round"]) for r in rows if int(r["sent"]) > 0})
    out = [f"Rounds: {len(rounds)}; medians over rounds; [min-max] over rounds."
           + (f" {len(failed)} run(s) where kxdpgun did not start are left out." if failed else "") + "\n"]
    out.append("| offered | " + " | ".join(f"{s}" for s in systems) + " |")
    out.append("|---:|" + "---:|" * len(systems))
    for q in rates:
        out.append(f"| {k(q)} | " + " | ".join(rate_cell(by[(s, q)], q) if by.get((s, q)) else "-" for s in systems) + " |")
    out.append("")
    out.append("Cells: median replies/s (median share answered; 'sent' where kxdpgun sent < 90% of the offered rate) [min-max over rounds].\n")
    sat, per_round_sat, ovl = {}, {}, {}
    out.append("| system | saturation replies/s | at offered | answered there | at 2x offered: replies/s (answered; % of saturation) | per-round saturation min-max | CPU us/reply at 300k offered (process+NAPI; whole server core) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for s in systems:
        best = max(points(by, (s,), rates))
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
        pr = [max(v) for v in (round_best(by, (s,), rates, rd) for rd in rounds) if v]
        per_round_sat[s] = pr
        c300 = by.get((s, 300000), [])
        cpu = (f"{med([float(r['us_per_reply_proc_napi']) for r in c300]):.2f}; {med([float(r['us_per_reply_core']) for r in c300]):.2f}"
               if c300 else "-")
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
    ratio("kdns-xdp", "kdns-xdp-b", 0, "(A/B of two builds: KDNS_BIN / KDNS_B_BIN)")
    if "kdns-xdp" in ovl:
        rep2, _, sent2 = ovl["kdns-xdp"]
        share = rep2 / sat["kdns-xdp"][0]
        out.append(
            f"- kdns-xdp at 2x its saturation's offered load ({k(2 * sat['kdns-xdp'][1])} offered, {k(sent2)} sent): "
            f"{k(rep2)} replies/s = **{100 * share:.0f}%** of its capacity; target >= 90%: {'met' if share >= 0.9 else 'MISSED'}"
        )
    out.append("")
    return "\n".join(out)


TIER = ["kdns-tier", "kdns-notier", "kdns-xdp", "kdns-xdp-b", "knot-xdp", "xdptx", "reflector"]


def xdp_tier(rows, cost_q=None):
    """bench/xdp/tier.sh: per generator, the reply rate per offered rate,
    each system's saturation (the highest median reply rate), the share of
    it kept at twice the offered load that reached it (the lowest measured
    rate >= 2x; the highest one, marked, if none is), the server core's
    busy time per reply at the cost rate, and the ratios of the kdns
    systems to the peers, on the medians and per round."""
    out = []
    if cost_q is None:
        cost_q = min(int(r["offered_qps"]) for r in rows)
    for g in sorted({r["generator"] for r in rows}, key=lambda x: (x != "kxdpgun", x)):
        gr = [r for r in rows if r["generator"] == g]
        by, failed = by_key(gr, "system", "offered_qps")
        systems = [s for s in TIER if any(s == ss for ss, _ in by)]
        rates = sorted({q for _, q in by})
        rounds = sorted({int(r["round"]) for r in gr if int(r["sent"]) > 0})
        out.append(f"### {g}: {len(rounds)} rounds, {len(rates)} rates; medians over rounds, [min-max] over rounds"
                   + (f"; {len(failed)} run(s) where the generator did not start left out" if failed else "") + "\n")
        out.append("| offered | " + " | ".join(systems) + " |")
        out.append("|---:|" + "---:|" * len(systems))
        for q in rates:
            out.append(f"| {k(q)} | " + " | ".join(rate_cell(by[(s, q)], q) if by.get((s, q)) else "-" for s in systems) + " |")
        out.append("")
        sat, keep, pr_sat = {}, {}, {}
        out.append(f"| system | saturation replies/s | at offered | kept at 2x load (replies/s at offered) | per-round saturation | CPU us/reply at {k(cost_q)}: process+NAPI; whole core |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for s in systems:
            best = max(points(by, (s,), rates))
            sat[s] = best[0]
            over = [q for q in rates if q >= 2 * best[1]]
            q2 = over[0] if over else rates[-1]
            rep2 = med([float(r["reply_qps"]) for r in by.get((s, q2), [])] or [0])
            keep[s] = rep2 / best[0] if best[0] else 0
            mark = "" if over else " (below 2x)"
            pr = [max(v) for v in (round_best(by, (s,), rates, rd) for rd in rounds) if v]
            pr_sat[s] = pr
            cr = by.get((s, cost_q), [])
            cost = (f"{med([float(r['us_per_reply_proc_napi']) for r in cr]):.2f}; {med([float(r['us_per_reply_core']) for r in cr]):.2f}"
                    if cr else "-")
            out.append(f"| {s} | {k(best[0])} | {k(best[1])} | **{100 * keep[s]:.0f}%** ({k(rep2)} at {k(q2)}{mark}) | "
                       f"{k(min(pr))}-{k(max(pr))} | {cost} |")
        out.append("")
        for a in [s for s in systems if s.startswith("kdns")]:
            parts = []
            for b in ("knot-xdp", "xdptx", "reflector", "kdns-xdp-b", "kdns-notier"):
                if b == a or b not in sat or not sat[b]:
                    continue
                rr = [x / y for x, y in zip(pr_sat[a], pr_sat[b]) if y]
                parts.append(f"/ {b} **{sat[a] / sat[b]:.2f}x**" + (f" (per round {min(rr):.2f}-{max(rr):.2f})" if rr else ""))
            if parts:
                out.append(f"- {a} saturation " + "; ".join(parts))
        out.append("")
    return "\n".join(out)


def xdp_cost(rows):
    """Medians per (system, variant, offered rate) of the cost CSV."""
    by, _ = by_key(rows, "system", "variant", "offered_qps")
    order = {s: i for i, s in enumerate(XDP)}
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


def xdp_latency(rows):
    by = defaultdict(list)
    for r in rows:
        by[r["system"]].append(r)
    out = [f"Medians over {len({r['round'] for r in rows})} rounds.\n",
           "| system | half capacity | dnsperf offered | answered | replies/s | avg ms | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, rr in by.items():
        def m(f):
            return med([fnum(r[f]) for r in rr])

        out.append(f"| {s} | {m('half_capacity_qps')/1e3:.0f}k | {m('offered_qps')/1e3:.0f}k | {m('answered_pct'):.2f}% | {m('reply_qps')/1e3:.1f}k | "
                   f"{m('avg_ms'):.3f} | {m('p50_ms'):.3f} | {m('p90_ms'):.3f} | {m('p99_ms'):.3f} | {m('p999_ms'):.3f} | {m('max_ms'):.2f} |")
    return "\n".join(out)


def plain(rows):
    """Every column of the rows as they are (the lookup CSV)."""
    cols = list(rows[0].keys())
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def records_rig(rows, target=0.90):
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
            cells.append(f"{k(med(rep))} ({med([float(r['answered_pct']) for r in rr]):.1f}%) [{k(min(rep))}-{k(max(rep))}]; "
                         f"{med([float(r['us_per_reply']) for r in rr]):.2f}")
        out.append(f"| {k(q)} | " + " | ".join(cells) + " |")
    out.append("")
    sat = {x: max(points(by, (x,), rates)) for x in kinds}
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
        out.append(f"- local-record answers / cache hits, saturation: **{ratio:.2f}** "
                   f"(per round: {', '.join(f'{x:.2f}' for x in rr)}); target >= {target:.2f}: {'met' if ratio >= target else 'MISSED'}")
    # each kind answered the way it claims
    bad = [r for r in rows if (r["kind"] == "hit" and (int(r["local_answers"]) > 0 or int(r["cache_hits"]) < 0.99 * int(r["received"])))
           or (r["kind"] == "local" and (int(r["cache_hits"]) > 0 or int(r["local_answers"]) < 0.99 * int(r["received"])))]
    out.append(f"- path check: {len(rows) - len(bad)} of {len(rows)} runs answered as claimed "
               f"(hit runs: cache hits >= 99% of replies and no local answer; local runs: the reverse); "
               f"queries forwarded during the runs: {sum(int(r['forwarded']) for r in rows)}")
    return "\n".join(out)


def docker_dnsperf(rows, path):
    by = defaultdict(list)
    for r in rows:
        by[(r["kind"], r["mode"], int(r["q"]), r["target"])].append(r)
    out = [f"Medians over {len({r['round'] for r in rows})} rounds ({path}).\n",
           "Rate runs (no -Q: as fast as dnsperf goes with q queries outstanding):\n",
           "| kind | outstanding (-q) | target | qps | lost % | avg ms | per-round qps | direct / docker (qps) |",
           "|---|---:|---|---:|---:|---:|---|---:|"]
    name = {"direct": "kdns direct", "docker": "127.0.0.11 -> kdns"}
    for (kind, mode, q, target), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3] != "direct")):
        if mode != "rate":
            continue
        qps = med([fnum(r["qps"]) for r in rs])
        ratio = ""
        if target == "direct" and (kind, mode, q, "docker") in by:
            other = med([fnum(r["qps"]) for r in by[(kind, mode, q, "docker")]])
            ratio = f"{qps / other:.2f}x" if other else ""
        lost = med([100 * fnum(r["lost"]) / max(1, fnum(r["sent"])) for r in rs])
        per = ", ".join(f"{fnum(r['qps']) / 1e3:.1f}k" for r in rs)
        out.append(f"| {kind} | {q} | {name[target]} | {qps / 1e3:.1f}k | {lost:.2f} | {med([fnum(r['avg_ms']) for r in rs]):.3f} | {per} | {ratio} |")
    out += ["\nLatency runs (fixed rate -Q, 5 s, -v: one line per answer):\n",
            "| kind | rate | target | answered % | p50 ms | p90 ms | p99 ms | max ms | p50 docker / direct | p99 docker / direct |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (kind, mode, q, target), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][3] != "direct")):
        if mode != "latency":
            continue
        p50, p90, p99, mx = (med([fnum(r[c]) for r in rs]) for c in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        r50 = r99 = ""
        if target == "docker" and (kind, mode, q, "direct") in by:
            d = by[(kind, mode, q, "direct")]
            r50, r99 = f"{p50 / med([fnum(r['p50_ms']) for r in d]):.1f}x", f"{p99 / med([fnum(r['p99_ms']) for r in d]):.1f}x"
        out.append(f"| {kind} | {q} | {name[target]} | {med([100 * fnum(r['completed']) / max(1, fnum(r['sent'])) for r in rs]):.2f} | "
                   f"{p50:.3f} | {p90:.3f} | {p99:.3f} | {mx:.3f} | {r50} | {r99} |")
    return "\n".join(out)


def _pfloor(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def docker_churn(rows, path):
    out = [f"{len(rows)} changes ({path}); ms, median / p90 / p99 / max.\n",
           "| change | n | issue -> answer | CLI returned -> answer | issue -> CLI returned | event (start / die) -> answer | last event (start / stop) -> answer |",
           "|---|---:|---|---|---|---|---|"]
    for what in ("start", "stop"):
        rs = [r for r in rows if r["change"] == what and r["answer_ms"] != ""]
        miss = sum(1 for r in rows if r["change"] == what and r["answer_ms"] == "")
        cols = []
        for c in ("answer_ms", "answer_after_return_ms", "return_ms", "answer_after_event_ms", "answer_after_last_event_ms"):
            xs = [fnum(r[c]) for r in rs if r[c] != ""]
            cols.append(" / ".join(f"{_pfloor(xs, p):.1f}" for p in (0.5, 0.9, 0.99)) + f" / {max(xs):.1f}" if xs else "")
        out.append(f"| docker {what} | {len(rs)}{f' ({miss} without an answer)' if miss else ''} | " + " | ".join(cols) + " |")
    return "\n".join(out)
