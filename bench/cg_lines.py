#!/usr/bin/env python3
"""Per-query instruction counts by kdns source line, from a callgrind profile.

Usage: cg_lines.py CALLGRIND_OUT BINARY N [TOP]

The profile must have been recorded with --dump-instr=yes (and, to leave
the setup out, --toggle-collect=hitloop::run). With LTO nearly everything is
inlined into a few symbols, so callgrind_annotate's function list says
little. Here every instruction's address is resolved with `addr2line -i`
and its cost goes to the innermost *project* source line of its inline
chain (kdns-core/src or bench/src): the standard-library code a line
inlines (to_ascii_lowercase, eq_ignore_ascii_case, from_be_bytes ...) is
counted on that line. Calls into libc (memset, memcpy) are counted on the
line that made them. Costs are divided by N (queries).
"""

import collections
import re
import subprocess
import sys


def parse(path):
    """(exclusive cost by address in the binary's object, libc call cost by call-site address)."""
    names = {"ob": {}, "fn": {}, "fl": {}}
    excl = collections.Counter()
    calls = collections.Counter()
    ob = fn = None
    cob = None
    cfn = None
    addr = 0
    line = 0
    pending_call = False
    main_ob = None

    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?", rest)
        if not m:
            return rest
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    def pos(tok, prev):
        if tok == "*":
            return prev
        if tok.startswith("+"):
            return prev + int(tok[1:], 0)
        if tok.startswith("-"):
            return prev - int(tok[1:], 0)
        return int(tok, 0)

    with open(path) as f:
        for raw in f:
            s = raw.rstrip("\n")
            if not s or s.startswith("#"):
                continue
            if s.startswith("ob="):
                ob = name("ob", s[3:])
                continue
            if s.startswith("cob="):
                cob = name("ob", s[4:])
                continue
            if s.startswith("fn="):
                fn = name("fn", s[3:])
                cob = None
                continue
            if s.startswith(("fl=", "fi=", "fe=")):
                name("fl", s[3:])
                continue
            if s.startswith("cfn="):
                cfn = name("fn", s[4:])
                continue
            if s.startswith(("cfi=", "cfl=")):
                name("fl", s[4:])
                continue
            if s.startswith("calls="):
                pending_call = True
                continue
            if not (s[0] in "+-*0123456789"):
                continue
            parts = s.split()
            if len(parts) < 3:
                continue
            addr = pos(parts[0], addr)
            line = pos(parts[1], line)
            cost = int(parts[2])
            if pending_call:
                pending_call = False
                callee_ob = cob if cob is not None else ob
                libc_mem = cfn and re.search(r"mem(set|cpy|move|cmp)|bcmp", cfn)
                if ob and "hitloop" in ob and callee_ob and "hitloop" not in callee_ob and libc_mem:
                    calls[addr] += cost
                cob = None
                cfn = None
                continue
            if ob and "hitloop" in ob:
                main_ob = ob
                excl[addr] += cost
    return excl, calls, main_ob


def resolve(binary, addrs):
    """address -> (project file:line or None, outermost function)."""
    addrs = sorted(addrs)
    res = {}
    out = subprocess.run(
        ["addr2line", "-a", "-i", "-f", "-C", "-e", binary] + [hex(a) for a in addrs],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    cur = None
    frames = []

    def flush():
        if cur is None:
            return
        proj = None
        for fn_name, loc in frames:  # innermost first
            if "kdns-core/src/" in loc or "bench/src/" in loc:
                proj = loc.split("kdns-core/src/")[-1] if "kdns-core/src/" in loc else "bench/src/" + loc.split("bench/src/")[-1]
                proj = re.sub(r" \(discriminator \d+\)", "", proj)
                break
        outer = frames[-1][0] if frames else "?"
        res[cur] = (proj, outer)

    i = 0
    while i < len(out):
        l = out[i]
        if l.startswith("0x"):
            flush()
            cur = int(l, 16)
            frames = []
            i += 1
            continue
        fn_name = l
        loc = out[i + 1] if i + 1 < len(out) else "??:0"
        frames.append((fn_name, loc))
        i += 2
    flush()
    return res


def source_line(loc, cache={}):
    m = re.match(r"(.*):(\d+)$", loc or "")
    if not m:
        return ""
    path, n = m.group(1), int(m.group(2))
    for base in ("kdns-core/src/", ""):
        p = (base + path) if not path.startswith("bench/") else path
        try:
            if p not in cache:
                with open(p) as f:
                    cache[p] = f.read().splitlines()
            return cache[p][n - 1].strip()[:70]
        except (OSError, IndexError):
            continue
    return ""


def main():
    path, binary, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 60
    excl, calls, _ = parse(path)
    res = resolve(binary, set(excl) | set(calls))
    by_line = collections.Counter()
    by_file = collections.Counter()
    libc = collections.Counter()
    for a, c in list(excl.items()) + list(calls.items()):
        proj, outer = res.get(a, (None, "?"))
        key = proj or f"(no project line: {outer})"
        by_line[key] += c
        by_file["(std/libc code not inlined into a project line)" if proj is None else proj.split(":")[0]] += c
        if a in calls:
            libc[key] += c
    total = sum(by_line.values())
    print(f"total {total / n:.1f} instructions per query (N={n})")
    print("\n-- by project source file (std code inlined by a line counted with it)")
    for k, v in by_file.most_common():
        if v / n >= 1:
            print(f"{v / n:8.1f}  {k}")
    print(f"\n-- top {top} source lines (libc calls included; [libc x] = memset/memcpy part)")
    for k, v in by_line.most_common(top):
        extra = f" [libc {libc[k] / n:.1f}]" if libc[k] else ""
        print(f"{v / n:8.1f}  {k:34} {source_line(k)}{extra}")


if __name__ == "__main__":
    main()
