#!/usr/bin/env python3
"""Writes the seed corpus of the kdns-core fuzz targets.

    python3 kdns-core/fuzz/gen_corpus.py

Creates corpus/parse/*.bin and corpus/roundtrip/*.bin next to this file:
small hand-assembled DNS messages (queries with and without EDNS, answers
that use name compression, NXDOMAIN with SOA, TXT / AAAA / MX / SRV
answers, a referral with glue) and a few malformed ones. The same set
seeds both targets. corpus/engine/*.bin are event scripts for the engine
target (queries, answers to what the engine sent, time; the format is in
fuzz_targets/engine.rs): a miss then hits, timeouts to SERVFAIL, backends
marked down and probed, errors and REFUSED, local records, a full pending
table, negative caching, truncation, expiry and stale answers, answers from
the wrong source, and a flood of unanswered names beside an ordinary client.
Deterministic: rerunning rewrites identical files.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41
IN = 1
QR, AA, TC, RD, RA, AD, CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010


def name(text):
    out = b""
    for label in text.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\x00"


def ptr(offset):
    return struct.pack(">H", 0xC000 | offset)


def header(id_, flags, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", id_, flags, qd, an, ns, ar)


def question(qname, qtype, qclass=IN):
    return (qname if isinstance(qname, bytes) else name(qname)) + struct.pack(">HH", qtype, qclass)


def rr(owner, rtype, ttl, rdata, rclass=IN):
    owner = owner if isinstance(owner, bytes) else name(owner)
    return owner + struct.pack(">HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def opt(udp=1232, do=False, version=0, ext_rcode=0, options=b""):
    ttl = (ext_rcode << 24) | (version << 16) | (0x8000 if do else 0)
    return rr(b"\x00", OPT, ttl, options, rclass=udp)


def option(code, data):
    return struct.pack(">HH", code, len(data)) + data


def soa(mname, rname, serial=2024010101, refresh=7200, retry=900, expire=1209600, minimum=300):
    return mname + rname + struct.pack(">IIIII", serial, refresh, retry, expire, minimum)


def txt(*strings):
    return b"".join(bytes([len(s)]) + s for s in strings)


Q = 12  # offset of the question name

messages = {}

# Queries.
messages["query-a"] = header(0x1001, RD) + question("example.com", A)
messages["query-aaaa-edns"] = header(0x1002, RD | AD, ar=1) + question("www.example.com", AAAA) + opt(1232)
messages["query-do-cookie"] = (
    header(0x1003, RD, ar=1) + question("example.org", A) + opt(4096, do=True, options=option(10, bytes(range(8))))
)
messages["query-txt"] = header(0x1004, RD | CD) + question("_dmarc.example.com", TXT)
messages["query-ecs"] = (
    header(0x1005, RD, ar=1) + question("cdn.example.net", A) + opt(1232, options=option(8, b"\x00\x01\x18\x00\xc6\x33\x64"))
)
messages["query-padding"] = (
    header(0x1006, RD, ar=1) + question("a.b.c.d.example", AAAA) + opt(1232, options=option(12, b"\x00" * 20))
)
messages["query-mixed-case"] = header(0x1007, RD) + question("wWw.ExAmPlE.CoM", A)
messages["query-root-ns"] = header(0x1008, 0) + question(".", NS)

# Responses (names compressed against the question at 12).
qn = name("example.com")
messages["answer-a-compressed"] = (
    header(0x2001, QR | RD | RA, an=2)
    + question(qn, A)
    + rr(ptr(Q), A, 300, bytes([93, 184, 216, 34]))
    + rr(ptr(Q), A, 300, bytes([93, 184, 216, 35]))
)
# www.example.com CNAME web.example.com (rdata: "web" + pointer to "example.com" at 16), A.
qn = name("www.example.com")
body = header(0x2002, QR | RD | RA, an=2) + question(qn, A)
cname_at = len(body) + 2 + 10  # where the CNAME rdata starts
body += rr(ptr(Q), CNAME, 3600, b"\x03web" + ptr(Q + 4))
body += rr(ptr(cname_at), A, 60, bytes([192, 0, 2, 80]))
messages["answer-cname-chain"] = body
# NXDOMAIN with SOA (mname ns1.<zone>, rname hostmaster.<zone>, zone = "example.com" at 12+8).
qn = name("missing.example.com")
messages["nxdomain-soa"] = (
    header(0x2003, QR | RD | RA | 3, ns=1, ar=1)
    + question(qn, A)
    + rr(ptr(Q + 8), SOA, 900, soa(b"\x03ns1" + ptr(Q + 8), b"\x0ahostmaster" + ptr(Q + 8)))
    + opt(1232)
)
messages["nodata-soa"] = (
    header(0x2004, QR | AA, ns=1) + question("example.com", MX) + rr(ptr(Q), SOA, 3600, soa(b"\x02ns" + ptr(Q), b"\x04root" + ptr(Q), minimum=60))
)
messages["answer-txt"] = (
    header(0x2005, QR | RD | RA, an=1)
    + question("example.com", TXT)
    + rr(ptr(Q), TXT, 120, txt(b"v=spf1 -all", b"", b"hello world"))
)
messages["answer-aaaa"] = (
    header(0x2006, QR | RD | RA | AD, an=1, ar=1)
    + question("ipv6.example.com", AAAA)
    + rr(ptr(Q), AAAA, 86400, bytes.fromhex("20010db8000000000000000000000001"))
    + opt(1232, do=True)
)
messages["answer-mx"] = (
    header(0x2007, QR | RD | RA, an=2)
    + question("example.com", MX)
    + rr(ptr(Q), MX, 3600, struct.pack(">H", 10) + b"\x04mail" + ptr(Q))
    + rr(ptr(Q), MX, 3600, struct.pack(">H", 20) + b"\x05mail2" + ptr(Q))
)
messages["answer-srv"] = (
    header(0x2008, QR | RD | RA, an=1)
    + question("_sip._udp.example.com", SRV)
    + rr(ptr(Q), SRV, 300, struct.pack(">HHH", 0, 5, 5060) + b"\x03sip" + ptr(Q + 10))
)
qn = name("www.example.com")
body = header(0x2009, QR, ns=2, ar=2) + question(qn, A)
ns1 = len(body) + 2 + 10
body += rr(ptr(Q + 4), NS, 172800, b"\x03ns1" + ptr(Q + 4))
ns2 = len(body) + 2 + 10
body += rr(ptr(Q + 4), NS, 172800, b"\x03ns2" + ptr(Q + 4))
body += rr(ptr(ns1), A, 172800, bytes([192, 0, 2, 53]))
body += rr(ptr(ns2), AAAA, 172800, bytes.fromhex("20010db8000000000000000000000035"))
messages["referral-glue"] = body
messages["response-badvers-edns1"] = header(0x200A, QR | RD, ar=1) + question("example.com", A) + opt(1232, version=1, ext_rcode=1)
messages["answer-ptr"] = (
    header(0x200B, QR | RD | RA, an=1)
    + question("1.2.0.192.in-addr.arpa", PTR)
    + rr(ptr(Q), PTR, 3600, name("host.example.com"))
)
# A 255-byte owner: 61-byte label + pointer to three 63-byte labels (193 bytes).
long_q = b"".join(b"\x3f" + bytes([c]) * 63 for c in b"xyz") + b"\x00"
messages["name-255-compressed"] = (
    header(0x200C, QR, an=1) + question(long_q, A) + rr(b"\x3d" + b"w" * 61 + ptr(Q), A, 1, bytes(4))
)

# Malformed.
messages["bad-truncated-question"] = (header(0x3001, RD) + question("example.com", A))[:20]
messages["bad-pointer-loop"] = header(0x3002, RD) + b"\x01a" + ptr(Q) + struct.pack(">HH", A, IN)
messages["bad-forward-pointer"] = header(0x3003, RD) + ptr(40) + struct.pack(">HH", A, IN)
messages["bad-rdlength"] = header(0x3004, QR, an=1) + question("example.com", A) + rr(ptr(Q), A, 60, bytes(4))[:-2]
messages["bad-qdcount-2"] = header(0x3005, RD, qd=2) + question("a.example", A) + question("b.example", A)
messages["bad-two-opts"] = header(0x3006, RD, ar=2) + question("example.com", A) + opt() + opt()
messages["bad-option-overrun"] = header(0x3007, RD, ar=1) + question("example.com", A) + opt(options=b"\x00\x0a\x00\x08abcd")

# Scripts for the engine target (format: fuzz_targets/engine.rs).
def ev_query(msg, client=0, port=40000, tcp=False, out=7):
    mode = (out << 1) | (1 if tcp else 0)
    return b"\x00" + bytes([client]) + struct.pack(">HBH", port, mode, len(msg)) + msg


def ev_answer(tail=b"", flags=QR | RD | RA, an=0, ns=0, ar=0, which=0, source=0, case=0):
    return b"\x01" + struct.pack(">BBHHHHBH", which, source, flags, an, ns, ar, case, len(tail)) + tail


def ev_raw(msg, source=0):
    return b"\x02" + struct.pack(">BH", source, len(msg)) + msg


def ev_time(ms):
    return b"\x03" + struct.pack(">H", ms)


def q(qname, qtype=A, id_=0x4242, edns=None, flags=RD):
    if edns is None:
        return header(id_, flags) + question(qname, qtype)
    return header(id_, flags, ar=1) + question(qname, qtype) + opt(edns)


A_RR = rr(ptr(Q), A, 300, bytes([10, 99, 0, 1]))
CLIENT_A, CLIENT_B, CLIENT_V6, OUTSIDE = 0, 2, 3, 5  # see client_ip()

scripts = {}
scripts["miss-answer-hit"] = bytes([0]) + (
    ev_query(q("www.example.com", edns=1232))
    + ev_answer(A_RR, an=1)
    + ev_query(q("www.example.com", edns=1232, id_=7))
    + ev_query(q("WwW.eXaMpLe.CoM", id_=8), client=CLIENT_V6)
    + ev_query(q("www.example.com", AAAA), tcp=True)
    + ev_answer(rr(ptr(Q), AAAA, 60, bytes(16)), an=1, case=0x55)
)
scripts["timeouts-retry-servfail"] = bytes([0]) + (
    ev_query(q("slow.example.com")) + ev_time(900) + ev_time(900) + ev_time(900) + ev_time(900)
)
scripts["backends-down-probes"] = bytes([0]) + b"".join(
    ev_query(q(f"d{i}.example.com", id_=i)) for i in range(8)
) + ev_time(1000) + ev_time(1000) + ev_time(1000) + ev_time(600) + ev_answer(
    rr(ptr(Q), TXT, 0, txt(b"unbound")), an=1, flags=QR
) + ev_time(600) + ev_answer(rr(ptr(Q), TXT, 0, txt(b"unbound")), an=1, flags=QR) + ev_query(q("after.example.com"))
scripts["errors-and-refused"] = bytes([0]) + (
    ev_query(q("refused.example.com"), client=OUTSIDE)
    + ev_query(messages["bad-qdcount-2"])
    + ev_query(messages["bad-truncated-question"])
    + ev_query(messages["bad-pointer-loop"])
    + ev_query(header(1, 0x2800) + question("notify.example", SOA))
    + ev_query(header(2, RD, ar=1) + question("example.com", A) + opt(1232, version=1))
    + ev_query(b"\x00\x01\x02")
    + ev_query(messages["answer-a-compressed"])
)
scripts["local-records"] = bytes([1]) + (
    ev_query(q("web.kdns"))
    + ev_query(q("web.kdns", AAAA, edns=1232))
    + ev_query(q("alias.kdns"))
    + ev_query(q("web-7.kdns"))
    + ev_query(q("nope.kdns"))
    + ev_query(q("web"))
    + ev_query(q("kdns", SOA))
)
scripts["pending-full"] = bytes([2]) + b"".join(ev_query(q(f"p{i}.example.com", id_=i)) for i in range(7)) + ev_answer(
    A_RR, an=1, which=1
) + ev_answer(A_RR, an=1, which=3)
qn = name("missing.example.com")
scripts["nxdomain-negative-cache"] = bytes([0]) + (
    ev_query(q("missing.example.com", edns=4096))
    + ev_answer(
        rr(ptr(Q + 8), SOA, 900, soa(b"\x03ns1" + ptr(Q + 8), b"\x0ahostmaster" + ptr(Q + 8))), flags=QR | RD | RA | 3, ns=1
    )
    + ev_query(q("missing.example.com", edns=4096))
    + ev_query(q("missing.example.com", MX))
)
big = rr(ptr(Q), TXT, 300, txt(*[bytes([65 + i]) * 200 for i in range(6)]))
scripts["truncated-udp-full-tcp"] = bytes([0]) + (
    ev_query(q("big.example.com", TXT))
    + ev_answer(big, an=1)
    + ev_query(q("big.example.com", TXT), out=0)
    + ev_query(q("big.example.com", TXT), tcp=True)
    + ev_query(q("big.example.com", TXT, edns=4096), out=3)
)
scripts["ttl-expiry-stale-refresh"] = bytes([0]) + (
    ev_query(q("short.example.com"))
    + ev_answer(rr(ptr(Q), A, 2, bytes([10, 0, 0, 9])), an=1)
    + ev_time(1900)
    + ev_query(q("short.example.com"))
    + ev_time(1000)
    + ev_query(q("short.example.com"))
    + ev_time(1000) + ev_time(1000) + ev_time(1000)
)
scripts["wrong-source-and-garbage"] = bytes([0]) + (
    ev_query(q("src.example.com"))
    + ev_answer(A_RR, an=1, source=0x84)
    + ev_answer(A_RR, an=1, source=0x85)
    + ev_answer(A_RR, an=1, flags=RD)
    + ev_raw(messages["answer-a-compressed"])
    + ev_raw(b"\x00")
    + ev_answer(A_RR, an=1, source=0x83)
)
# One client floods names that are never answered; another asks names the
# backend answers at once.
flood = b""
for i in range(40):
    flood += ev_query(q(f"r{i * 7919 % 100000}.blackhole.test", id_=i), client=CLIENT_A, port=1000 + i)
    if i % 4 == 0:
        flood += ev_query(q(f"n{i}.ok.test", id_=0x8000 + i), client=CLIENT_B) + ev_answer(A_RR, an=1)
    if i % 10 == 9:
        flood += ev_time(300)
scripts["flood-and-ordinary-client"] = bytes([0]) + flood

for key, data in sorted(scripts.items()):
    d = os.path.join(HERE, "corpus", "engine")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, key + ".bin"), "wb") as f:
        f.write(data)
print(f"wrote {len(scripts)} scripts to corpus/engine")

for target in ("parse", "roundtrip"):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for key, data in sorted(messages.items()):
        with open(os.path.join(d, key + ".bin"), "wb") as f:
            f.write(data)
print(f"wrote {len(messages)} messages to corpus/parse and corpus/roundtrip")
