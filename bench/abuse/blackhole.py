#!/usr/bin/env python3
"""The authoritative server that never answers: a UDP socket that reads
and discards. Usage: blackhole.py ADDR PORT. On SIGTERM it prints how many
datagrams it read."""

import signal
import socket
import sys

addr, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((addr, port))
n = 0


def done(*_):
    print(f"blackhole {addr}:{port}: read {n} datagrams", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, done)
signal.signal(signal.SIGINT, done)
print(f"blackhole {addr}:{port}: listening", flush=True)
buf = bytearray(4096)
while True:
    s.recv_into(buf)
    n += 1
