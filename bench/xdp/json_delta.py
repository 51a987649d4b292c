#!/usr/bin/env python3
"""json_delta.py BEFORE.json AFTER.json [LABEL]: the numeric leaves of two
kdns-ctl stats --json snapshots that changed, as 'path=delta' on one line
(worker I/O counters, XDP program counters, drops...)."""
import json
import sys


def flat(x, p=""):
    if isinstance(x, dict):
        for k, v in x.items():
            yield from flat(v, f"{p}.{k}" if p else str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from flat(v, f"{p}[{i}]")
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        yield p, x


try:
    a = dict(flat(json.load(open(sys.argv[1]))))
    b = dict(flat(json.load(open(sys.argv[2]))))
except Exception as e:  # a missing snapshot: say so, do not fail the run
    print(f"{sys.argv[3] if len(sys.argv) > 3 else ''} (no stats: {e})")
    sys.exit(0)
keep = ("rx", "tx", "error", "drop", "redirect", "passed", "malformed", "hit", "miss", "oversized", "xsk_")
out = []
for k, v in b.items():
    d = v - a.get(k, 0)
    leaf = k.rsplit(".", 1)[-1]
    if d and any(w in leaf for w in keep) and "rtt" not in k and "latency" not in k:
        out.append(f"{k}={d:g}")
print((sys.argv[3] + " " if len(sys.argv) > 3 else "") + " ".join(out))
