#!/usr/bin/env python3
"""Time from `docker start` / `docker stop` to kdns's answer changing.

  churn.py --server ADDR --container NAME --qname NAME.kdns --changes 200 --csv FILE

The container must exist and run. For each change (stop, start, stop, ...):
a poller thread asks QNAME A of the server every 1 ms over UDP (each query
with its own ID; time.monotonic) and waits for the first answer that shows
the change (stop: no A record, start: an A record); once it has seen the
old state, the docker CLI command is issued (`docker stop` / `docker
start`, timed around subprocess.run). `docker events` runs alongside; its
TimeNano of the container's start / die event, moved onto the monotonic
clock with the offset sampled at the issue, gives the engine's event time.
One CSV line per change, in ms from the issue: return_ms (CLI returned),
answer_ms; and answer_after_return_ms, answer_after_event_ms (after the
start / die event), answer_after_last_event_ms (after the start / stop
event: for a stop, die comes first and stop last, once the engine has
taken the container down).
"""
import argparse
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time


def query(qid, qname):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in qname.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


class Poller(threading.Thread):
    def __init__(self, server, qname, want_answer, limit_s):
        super().__init__(daemon=True)
        self.server, self.qname, self.want, self.limit = server, qname, want_answer, limit_s
        self.saw_old = threading.Event()
        self.t_change = None
        self.sent = self.recv = 0

    def run(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((self.server, 53))
        s.setblocking(False)
        t_end = time.monotonic() + self.limit
        qid = random.randrange(65536)
        next_send = time.monotonic()
        while time.monotonic() < t_end:
            now = time.monotonic()
            if now >= next_send:
                qid = (qid + 1) & 0xFFFF
                s.send(query(qid, self.qname))
                self.sent += 1
                next_send = now + 0.001
            r, _, _ = select.select([s], [], [], max(0.0, next_send - time.monotonic()))
            if not r:
                continue
            while True:
                try:
                    m = s.recv(4096)
                except BlockingIOError:
                    break
                t = time.monotonic()
                if len(m) < 12:
                    continue
                self.recv += 1
                _, flags, _, an = struct.unpack(">HHHH", m[:8])
                has = (flags & 0xF) == 0 and an > 0
                if has == self.want:
                    if self.saw_old.is_set():
                        self.t_change = t
                        s.close()
                        return
                else:
                    self.saw_old.set()
        s.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--container", required=True)
    ap.add_argument("--qname", required=True)
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--docker", default="/usr/bin/docker")
    ap.add_argument("--stop-args", default="")
    a = ap.parse_args()

    events = []
    ev = subprocess.Popen([a.docker, "events", "--filter", f"container={a.container}", "--format", "{{.TimeNano}} {{.Action}}"],
                          stdout=subprocess.PIPE, text=True)

    def read_events():
        for line in ev.stdout:
            f = line.split()
            if len(f) >= 2:
                events.append((int(f[0]), f[1]))

    threading.Thread(target=read_events, daemon=True).start()
    time.sleep(0.5)
    out = open(a.csv, "a")
    out.write("i,change,return_ms,answer_ms,answer_after_return_ms,event,answer_after_event_ms,answer_after_last_event_ms,polls_sent,polls_answered\n")
    running = True
    try:
        for i in range(a.changes):
            change = "stop" if running else "start"
            p = Poller(a.server, a.qname, want_answer=not running, limit_s=15)
            p.start()
            if not p.saw_old.wait(5):
                print(f"{i}: the poller never saw the old state", file=sys.stderr)
                p.join()
                break
            cmd = [a.docker, change] + (a.stop_args.split() if change == "stop" else []) + [a.container]
            off_ns = time.time_ns() - time.monotonic_ns()
            t0 = time.monotonic()
            rc = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
            t1 = time.monotonic()
            p.join()
            if rc != 0:
                print(f"{i}: {' '.join(cmd)} failed ({rc})", file=sys.stderr)
                break
            running = not running
            time.sleep(0.3)  # let docker events catch up
            issue_ns = int(t0 * 1e9) + off_ns
            want_ev = "start" if change == "start" else "die"
            last_ev = "start" if change == "start" else "stop"
            evs = [(ns, act) for ns, act in list(events) if ns >= issue_ns - 50_000_000]
            evt = next((ns for ns, act in evs if act == want_ev), None)
            evl = next((ns for ns, act in evs if act == last_ev), None)
            ms = lambda x: f"{(x - t0) * 1e3:.2f}"
            ans = p.t_change
            row = [i, change, ms(t1), ms(ans) if ans else "", f"{(ans - t1) * 1e3:.2f}" if ans else ""]
            if evt is not None and ans:
                t_ev = (evt - off_ns) / 1e9
                row += [want_ev, f"{(ans - t_ev) * 1e3:.2f}"]
            else:
                row += ["", ""]
            row += [f"{(ans - (evl - off_ns) / 1e9) * 1e3:.2f}" if evl is not None and ans else ""]
            row += [p.sent, p.recv]
            out.write(",".join(map(str, row)) + "\n")
            out.flush()
            print(",".join(map(str, row)), file=sys.stderr)
            events.clear()
            time.sleep(random.uniform(0.1, 0.4))
    finally:
        ev.terminate()
        out.close()


if __name__ == "__main__":
    main()
