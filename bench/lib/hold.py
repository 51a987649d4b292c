#!/usr/bin/env python3
"""Holds listening sockets and starts a daemon on them, as systemd does
with a socket unit (deploy/kdns.socket) and Restart=: the sockets outlive
every process of the daemon, so while none runs, queries wait in the UDP
socket's buffer and connections in the TCP accept queue.

    hold.py serve CTL [--udp ADDR:PORT]... [--tcp ADDR:PORT]... [--rcvbuf BYTES] [--sndbuf BYTES] -- CMD ARG...
    hold.py start CTL      # start CMD on the held sockets; prints its pid
    hold.py pid CTL        # the running child's pid, or "none"

`serve` binds the sockets (in the namespace it runs in; UDP ones with
the receive buffer --rcvbuf, default 32 MiB as deploy/kdns.socket's
ReceiveBuffer=, and the send buffer --sndbuf, default the kernel's;
restarts.sh passes 4 MiB, as kdns.socket's SendBuffer=), then answers
commands on the unix socket CTL. Each `start` runs CMD with the sockets as
descriptors 3, 4, ... and LISTEN_FDS / LISTEN_PID set, the protocol of
sd_listen_fds(3): through `sh -c 'LISTEN_PID=$$ exec "$0" "$@"'`, since the
variable must hold the pid of the process that execs CMD. The children's
output goes to serve's own output. Children are reaped (their exit logged)
at once; on SIGTERM or SIGINT serve stops its child (SIGTERM, then SIGKILL
after 5 s) and exits. The caller stops a child by its pid (kill -TERM or
-KILL), as systemd would, and starts the next one with `start`.

Python's standard library alone (runs wherever the rig runs)."""

import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import time

WRAPPER = ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"']
# systemd's default for ReceiveBuffer= is the kernel's; kdns.socket sets 8M.
DEFAULT_RCVBUF = 32 << 20


def log(msg):
    print(f"[hold {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_addr(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return family, (host, int(port))


def bind_sockets(udp, tcp, rcvbuf, sndbuf):
    socks = []
    for kind, addrs in ((socket.SOCK_DGRAM, udp), (socket.SOCK_STREAM, tcp)):
        for a in addrs:
            family, addr = parse_addr(a)
            s = socket.socket(family, kind)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if kind == socket.SOCK_DGRAM and rcvbuf:
                # SO_RCVBUFFORCE (33) as root, like systemd's ReceiveBuffer=
                try:
                    s.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            if kind == socket.SOCK_DGRAM and sndbuf:
                # SO_SNDBUFFORCE (32) as root, like systemd's SendBuffer=
                try:
                    s.setsockopt(socket.SOL_SOCKET, 32, sndbuf)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            s.bind(addr)
            if kind == socket.SOCK_STREAM:
                s.listen(socket.SOMAXCONN)
            socks.append(s)
            log(f"holding {'udp' if kind == socket.SOCK_DGRAM else 'tcp'} {a} (descriptor 3+{len(socks) - 1})")
    return socks


def spawn(cmd, socks):
    # Copies above the target numbers, so no dup2 overwrites a source it
    # still needs; dup2 then clears close-on-exec on the targets.
    above = 3 + len(socks)
    copies = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, above) for s in socks]

    def place():
        for i, c in enumerate(copies):
            os.dup2(c, 3 + i)

    env = {k: v for k, v in os.environ.items() if k not in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
    env["LISTEN_FDS"] = str(len(socks))
    try:
        # close_fds=False: Python opens everything close-on-exec, so the
        # child inherits exactly 0-2 and the placed sockets.
        p = subprocess.Popen(WRAPPER + cmd, env=env, preexec_fn=place, close_fds=False)
    finally:
        for c in copies:
            os.close(c)
    return p.pid


def serve(ctl, udp, tcp, bufs, cmd):
    socks = bind_sockets(udp, tcp, *bufs)
    try:
        os.unlink(ctl)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(ctl)
    srv.listen(8)
    child = None
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"ready on {ctl}: {' '.join(cmd)}")

    def reap():
        nonlocal child
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"
            log(f"child pid {pid} ended: {how}")
            if pid == child:
                child = None

    while not stopping:
        reap()
        try:
            ready, _, _ = select.select([srv], [], [], 0.05)
        except InterruptedError:
            continue
        if not ready:
            continue
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            try:
                line = conn.makefile().readline().strip()
            except OSError:
                continue
            if line == "start":
                reap()
                if child is not None:
                    reply = f"error child pid {child} still runs"
                else:
                    try:
                        child = spawn(cmd, socks)
                        log(f"started pid {child}")
                        reply = f"ok {child}"
                    except OSError as e:
                        reply = f"error {e}"
            elif line == "pid":
                reap()
                reply = f"ok {child if child is not None else 'none'}"
            else:
                reply = f"error unknown command {line!r}"
            try:
                conn.sendall((reply + "\n").encode())
            except OSError:
                pass
    log(f"signal {stopping[0]}: stopping")
    if child is not None:
        try:
            os.kill(child, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while child is not None and time.monotonic() < deadline:
            reap()
            time.sleep(0.05)
        if child is not None:
            os.kill(child, signal.SIGKILL)
            reap()
    srv.close()
    os.unlink(ctl)


def request(ctl, what):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(ctl)
        s.sendall((what + "\n").encode())
        reply = s.makefile().readline().strip()
    status, _, rest = reply.partition(" ")
    if status != "ok":
        print(f"hold.py {what}: {rest or reply or 'no reply'}", file=sys.stderr)
        return 1
    print(rest)
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] in ("start", "pid"):
        return request(argv[1], argv[0])
    if len(argv) >= 2 and argv[0] == "serve" and "--" in argv:
        ctl, opts, cmd = argv[1], argv[2 : argv.index("--")], argv[argv.index("--") + 1 :]
        udp, tcp, rcvbuf, sndbuf = [], [], DEFAULT_RCVBUF, 0
        while opts:
            flag, val, opts = opts[0], opts[1] if len(opts) > 1 else None, opts[2:]
            if val is None or flag not in ("--udp", "--tcp", "--rcvbuf", "--sndbuf"):
                break
            if flag == "--udp":
                udp.append(val)
            elif flag == "--tcp":
                tcp.append(val)
            elif flag == "--rcvbuf":
                rcvbuf = int(val)
            else:
                sndbuf = int(val)
        else:
            if cmd and (udp or tcp):
                serve(ctl, udp, tcp, (rcvbuf, sndbuf), cmd)
                return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
