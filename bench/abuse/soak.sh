#!/usr/bin/env bash
# Soak: kdns --io xdp in front of two Unbounds for SOAK_SECS (600) under a
# flood of never-answered names and ordinary traffic, with an Unbound
# killed (SIGKILL) every 30-60 s and restarted SOAK_DOWN s later. Checks
# at the end:
#   - kdns is still running;
#   - its RSS stayed flat: sampled every SOAK_RSS_EVERY s; after a warm-up
#     (SOAK_WARMUP, default 60 s or half the run if shorter: the cache,
#     65 536 entries, fills with the new names of both clients in about
#     20 s and RSS grows until then) the median of the last quarter of the
#     samples is within max(1 MiB, 2%) of the median of the first;
#   - its counters add up: once the load has stopped and every query has
#     had time to end (5 s; the query deadline is 3 s), kdns-ctl stats
#     --json totals satisfy queries = replies (sum of replies_by_rcode) +
#     drops of queries (every drop reason but answer_*) + in flight, with
#     0 <= queries - replies - drops <= in_flight.
# Prints PASS or FAIL with the numbers, exits 0 or 1. Same rig as flood.sh
# (lib.sh; kdns only).
#
#   bench/abuse/soak.sh [-t TAG] [-o DIR]
#   environment: SOAK_SECS (600), SOAK_FLOOD_QPS (1500), SOAK_KILL_MIN /
#   SOAK_KILL_MAX (30 / 60: seconds between two kills), SOAK_DOWN (5: how
#   long the killed Unbound stays down), SOAK_RSS_EVERY (5), SOAK_WARMUP
#   (seconds), ORD_QPS (2000)
#   and the knobs of lib.sh (KDNS_ARGS ...)
#
# Writes DIR/TAG/soak.json (the figures and the verdict), rss.csv (seconds,
# RSS KiB), kills.csv (seconds, backend, event), kdns-stats.json, and the
# two dnsperf summaries.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
rig_session "$0" "$@"
OUT="$BENCH_DIR/results/abuse"
TAG=soak-$(date +%Y%m%d-%H%M%S)
rig_opts "t=TAG o=OUT" "$@"
SECS=${SOAK_SECS:-600}
FLOOD=${SOAK_FLOOD_QPS:-1500}
KMIN=${SOAK_KILL_MIN:-30}
KMAX=${SOAK_KILL_MAX:-60}
DOWN=${SOAK_DOWN:-5}
EVERY=${SOAK_RSS_EVERY:-5}
WARMUP=${SOAK_WARMUP:-$((SECS / 2 < 60 ? SECS / 2 : 60))}
RES="$OUT/$TAG"
mkdir -p "$RES"
ab_up
ab_start kdns
pid=${SYS_PIDS[kdns]}
log "soak: $SECS s, ordinary $ORD_QPS qps, flood $FLOOD qps, an Unbound killed every $KMIN-$KMAX s for $DOWN s; kdns pid $pid; results in $RES"
echo "tag: $TAG; kdns: $KDNS_VERSION; secs $SECS, ordinary $ORD_QPS qps, flood $FLOOD qps, kill every $KMIN-$KMAX s, down $DOWN s; KDNS_ARGS: ${KDNS_ARGS:-}" >"$RES/meta.txt"

ab_names "$RIG_DIR/ord.txt" $((ORD_QPS * SECS)) ordinary "$TAG"
if ((FLOOD > 0)); then
    ab_flood_start kdns "$FLOOD" "$SECS" "$RIG_DIR/flood.out"
fi
ab_ordinary kdns "$SECS" "$RIG_DIR/ord.txt" "$RIG_DIR/ord.out" &
ord_pid=$!
RIG_PIDS+=("$ord_pid")

echo "seconds,rss_kib" >"$RES/rss.csv"
echo "seconds,backend,event" >"$RES/kills.csv"
start=$(date +%s)
next_kill=$((KMIN + RANDOM % (KMAX - KMIN + 1)))
victim=0 restart_at=-1 kills=0 last_rss=-1000
while :; do
    now=$(($(date +%s) - start))
    ((now >= SECS)) && break
    kill -0 "$pid" 2>/dev/null || { log "kdns (pid $pid) is gone"; break; }
    if ((now - last_rss >= EVERY)); then
        echo "$now,$(status_kb "$pid" VmRSS)" >>"$RES/rss.csv"
        last_rss=$now
    fi
    p=${BACKEND_PORTS[victim]}
    if ((restart_at < 0 && now >= next_kill && now + DOWN < SECS)); then
        kill -KILL "${SYS_PIDS[be$p]}" 2>/dev/null || true
        echo "$now,be$p,killed" >>"$RES/kills.csv"
        log "t=${now}s: kill -9 Unbound be$p (pid ${SYS_PIDS[be$p]})"
        kills=$((kills + 1))
        restart_at=$((now + DOWN))
    elif ((restart_at >= 0 && now >= restart_at)); then
        ab_unbound "be$p" "127.0.0.1@$p" 127.0.0.1 "$p"
        now=$(($(date +%s) - start))
        echo "$now,be$p,restarted" >>"$RES/kills.csv"
        log "t=${now}s: Unbound be$p restarted (pid ${SYS_PIDS[be$p]})"
        restart_at=-1
        victim=$(((victim + 1) % ${#BACKEND_PORTS[@]}))
        next_kill=$((now + KMIN + RANDOM % (KMAX - KMIN + 1)))
    fi
    sleep 1
done
# a backend still down at the end comes back before the books are read
if ((restart_at >= 0)); then
    p=${BACKEND_PORTS[victim]}
    ab_unbound "be$p" "127.0.0.1@$p" 127.0.0.1 "$p"
fi
log "load ends; waiting for the clients, then 5 s for every query to end"
wait "$ord_pid" 2>/dev/null || true
((FLOOD > 0)) && { wait "$AB_FLOOD_PID" 2>/dev/null || true; }
echo "$(($(date +%s) - start)),$(status_kb "$pid" VmRSS)" >>"$RES/rss.csv"
sleep 5
alive=0
kill -0 "$pid" 2>/dev/null && alive=1
"$RIG_DIR/kdns-ctl" --socket "$RIG_DIR/kdns.sock" stats --json >"$RES/kdns-stats.json" 2>/dev/null || log "kdns-ctl stats failed"
grep -v -e '^>' -e '^\[Timeout\]' "$RIG_DIR/ord.out" >"$RES/ordinary.txt" || true
[[ -f $RIG_DIR/flood.out ]] && { grep -v '^\[Timeout\]' "$RIG_DIR/flood.out" >"$RES/flood.txt" || true; }

python3 - "$RES" "$alive" "$kills" "$SECS" "$RIG_DIR/ord.out" "$BENCH_DIR/lib" "$WARMUP" <<'PY'
import csv, json, os, statistics, sys
res, alive, kills, secs, ord_out, here = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
warm = int(sys.argv[7])
sys.path.insert(0, here)
import abuse as parse  # noqa: E402

rows = [(int(r["seconds"]), int(r["rss_kib"])) for r in csv.DictReader(open(os.path.join(res, "rss.csv")))]
after = [v for t, v in rows if t >= warm] or [v for _, v in rows]
q = max(1, len(after) // 4)
first, last = statistics.median(after[:q]), statistics.median(after[-q:])
growth = last - first
allowed = max(1024, 0.02 * first)
rss_ok = growth <= allowed

acc = None
path = os.path.join(res, "kdns-stats.json")
if os.path.exists(path) and os.path.getsize(path) > 0:
    acc = parse.accounting(json.load(open(path)))
books_ok = acc is not None and 0 <= acc["unaccounted"] <= acc["in_flight"]
ordinary = parse.ordinary(ord_out, secs) if os.path.exists(ord_out) else {}
flood = parse.flood(os.path.join(res, "flood.txt"), secs)
ok = bool(alive) and rss_ok and books_ok
out = {
    "pass": ok, "kdns_alive": bool(alive), "unbound_kills": kills, "secs": secs,
    "rss_kib": {"samples": len(rows), "warmup_s": warm, "min": min(v for _, v in rows), "max": max(v for _, v in rows),
                "first_quarter_median": first, "last_quarter_median": last, "growth": growth, "allowed": allowed, "ok": rss_ok},
    "books": acc, "books_ok": books_ok, "ordinary": ordinary, "flood": flood,
}
json.dump(out, open(os.path.join(res, "soak.json"), "w"), indent=1, sort_keys=True)
print(f"kdns alive at the end: {'yes' if alive else 'NO'}; Unbound kills: {kills}")
print(f"RSS (KiB): {len(rows)} samples, min {out['rss_kib']['min']}, max {out['rss_kib']['max']}; median of the first quarter "
      f"after {warm} s {first:.0f}, of the last {last:.0f}: growth {growth:+.0f} (allowed {allowed:.0f}): {'flat' if rss_ok else 'GROWS'}")
if acc:
    print(f"books: queries {acc['queries']} = replies {acc['replies']} + drops of queries {acc['query_drops']} "
          f"+ {acc['unaccounted']} left (in flight {acc['in_flight']}): {'ok' if books_ok else 'DO NOT ADD UP'}")
    print(f"  replies by rcode {acc['replies_by_rcode']}; drops {({k: v for k, v in acc['drops'].items() if v})}; "
          f"io rx {acc['io'].get('rx')} tx {acc['io'].get('tx')} tx_errors {acc['io'].get('tx_errors')}")
else:
    print("books: no kdns-ctl stats")
if ordinary:
    print(f"ordinary client: {ordinary['ord_answered_pct']}% answered of {ordinary['ord_sent']} (timeouts {ordinary['ord_timeout']}, "
          f"SERVFAIL {ordinary['ord_servfail']}), p50 {ordinary['ord_p50_ms']} p99 {ordinary['ord_p99_ms']} max {ordinary['ord_max_ms']} ms")
if flood.get("flood_sent"):
    print(f"flooder: sent {flood['flood_sent']} ({flood['flood_sent_qps']}/s), SERVFAIL {flood['flood_servfail']}, "
          f"REFUSED {flood['flood_refused']}, no answer {flood['flood_no_answer']}")
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
