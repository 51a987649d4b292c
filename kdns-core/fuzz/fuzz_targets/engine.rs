//! The whole sans-IO engine driven by a script of events: client queries
//! (arbitrary bytes from a handful of client addresses, UDP or TCP, output
//! buffers of several sizes), backend answers (to a query the engine really
//! sent, with the fuzzer's flags and sections after the question, or raw
//! bytes, from the right backend or another source, on the source-port slot
//! it went out from or another) and time passing
//! (`handle_timeout` when `poll_timeout` is due, `poll_transmit` drained
//! after every call, as a driver does).
//!
//! Checked besides "no panic":
//! - every reply to a client is a response (QR) with the query's ID, fits
//!   the buffer, and over UDP the client's size (512 without EDNS, else its
//!   EDNS size capped at ours); with one question it parses with
//!   `Message::parse` and asks what the client asked (any case);
//! - every query sent to a backend parses, is a query, asks what the
//!   client asked, and goes to a configured backend;
//! - every client query ends exactly once: a reply, a counted drop, or a
//!   forward (or a wait on an identical question in flight) that is later
//!   answered (backend answer, stale answer or SERVFAIL); none is answered
//!   twice, and once time has run past every deadline none is left waiting;
//! - the counters add up: `queries` = replies + drops of queries + queries
//!   still waiting, `rcodes` sum to the replies.
//!
//! - a backend answer whose names point into the header (a compression
//!   pointer below offset 12, in an owner, the question or the data of NS,
//!   CNAME, PTR, DNAME, MX, SRV or SOA) is never accepted: the reply's
//!   header differs from the answer's, so the name would change.
//!
//! Script format (what gen_corpus.py writes; a short read ends the script):
//!   byte 0: config (bit 0: local records, bit 1: pending capacity 4
//!           instead of 64, bits 2-3: max_tries 1..=4, bit 4: tight
//!           per-client limits (clients by /24, 3 pending, 20 misses/s, burst
//!           10), bits 5-6: what a client over them gets (SERVFAIL, REFUSED,
//!           nothing), bit 7: no coalescing)
//!   then events, each one opcode byte (taken mod 4):
//!   0 query   client:u8 port:u16 mode:u8 len:u16 bytes[len]
//!             (mode bit 0: TCP, bits 1-3: output buffer size)
//!   1 answer  which:u8 from:u8 flags:u16 an:u16 ns:u16 ar:u16 case:u8
//!             len:u16 tail[len]: an answer to the `which`-th latest query
//!             sent to a backend (its ID and question, the name's case
//!             flipped by `case`), `tail` after the question; from bit 7:
//!             from another source, bit 6: on another source-port slot
//!   2 raw     from:u8 len:u16 bytes[len]: a backend answer as is (slot:
//!             bits 4-5 of from)
//!   3 time    ms:u16: advance the clock
#![no_main]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use std::sync::Arc;

use kdns_core::cache::CacheConfig;
use kdns_core::engine::{
    Acl, AnswerVerdict, Client, ClientLimits, DropReason, Engine, EngineConfig, OverLimit, Transmit, Transport, Verdict,
};
use kdns_core::records::{Instance, Mode, RecordsConfig, Service, Snapshot, StaticData, StaticRecord};
use kdns_core::upstream::BackendSpec;
use kdns_core::wire::{quick_query, Header, Message, HEADER_LEN};
use kdns_core::Timestamp;
use libfuzzer_sys::fuzz_target;

const UDP_SIZE: u16 = 1232;
/// Source-port slots of the backend sockets.
const PORTS: u16 = 3;
const OUT_SIZES: [usize; 8] = [512, 600, 1232, 1400, 2048, 4096, 9000, 65535];

fn backends() -> [SocketAddr; 2] {
    ["127.0.0.1:5301".parse().unwrap(), "[::1]:5302".parse().unwrap()]
}

/// Where a backend answer comes from: one of the backends (or backend 0
/// as an IPv4-mapped IPv6 address, which must count as the same), or a
/// wrong port or address.
fn source(sel: u8) -> SocketAddr {
    match sel % 6 {
        0 | 1 => backends()[0],
        2 => backends()[1],
        3 => "[::ffff:127.0.0.1]:5301".parse().unwrap(),
        4 => "127.0.0.1:5399".parse().unwrap(),
        _ => "127.0.0.2:5301".parse().unwrap(),
    }
}

/// Client addresses: two /24s and an IPv6 /64 allowed, IPv4-mapped, and a
/// network outside the ACL (REFUSED).
fn client_ip(sel: u8) -> IpAddr {
    let host = sel >> 3;
    match sel & 7 {
        0 | 1 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, host)),
        2 => IpAddr::V4(Ipv4Addr::new(10, 0, 1, host)),
        3 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(host))),
        4 => IpAddr::V6(Ipv4Addr::new(10, 0, 0, host).to_ipv6_mapped()),
        5 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, host)),
        _ => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    }
}

fn records() -> Snapshot {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let cfg = RecordsConfig {
        domains: vec!["kdns".into()],
        default_ttl: 10,
        services: vec![Service {
            name: "web".into(),
            mode: Mode::All,
            ttl: None,
            instances: vec![
                Instance { id: "a".into(), addrs: vec![ip("10.9.0.1"), ip("fd09::1")], healthy: true, number: None },
                Instance { id: "b".into(), addrs: vec![ip("10.9.0.2")], healthy: true, number: Some(7) },
            ],
            ports: vec![],
        }],
        records: vec![StaticRecord { name: "alias.kdns".into(), ttl: Some(30), data: StaticData::Cname("web.kdns".into()) }],
        serial: 1,
    };
    Snapshot::build(&cfg).expect("records")
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(b)
    }
}

/// A client query as the harness remembers it (`Client::tag` is its index).
struct Asked {
    client: Client,
    id: u16,
    question: Option<Vec<u8>>,
    /// The largest reply allowed.
    limit: usize,
    done: bool,
}

/// A query the engine sent to a backend.
struct Sent {
    addr: SocketAddr,
    port: u16,
    bytes: Vec<u8>,
}

struct World {
    engine: Engine,
    now: Timestamp,
    asked: Vec<Asked>,
    sent: Vec<Sent>,
    out: Vec<u8>,
    replies: u64,
    query_drops: u64,
    waiting: u64,
}

/// The question of a message: its name uncompressed and in lower case,
/// then type and class.
fn question_of(msg: &[u8]) -> Option<Vec<u8>> {
    let m = Message::parse(msg).ok()?;
    let mut name = [0u8; 255];
    let n = m.question.name.write_lowercase(msg, &mut name).ok()?;
    let mut q = name[..n].to_vec();
    q.extend_from_slice(&m.question.qtype.0.to_be_bytes());
    q.extend_from_slice(&m.question.qclass.0.to_be_bytes());
    Some(q)
}

/// Whether the name at `pos` is or leads through a compression pointer into
/// the header (offset < 12).
fn name_points_into_header(msg: &[u8], mut pos: usize) -> bool {
    for _ in 0..128 {
        match msg.get(pos) {
            Some(&b) if b & 0xc0 == 0xc0 => {
                let Some(&lo) = msg.get(pos + 1) else { return false };
                pos = usize::from(b & 0x3f) << 8 | usize::from(lo);
                if pos < HEADER_LEN {
                    return true;
                }
            }
            Some(&b) if b & 0xc0 == 0 && b != 0 => pos += 1 + usize::from(b),
            _ => return false,
        }
    }
    false
}

/// Whether any name of `msg` (question, owners, names in NS, CNAME, PTR,
/// DNAME, MX, SRV and SOA data) points into the header: those bytes differ
/// between the backend's answer and the client's reply (ID, flags, counts).
fn points_into_header(msg: &[u8]) -> bool {
    let Ok(m) = Message::parse(msg) else { return false };
    if name_points_into_header(msg, HEADER_LEN) {
        return true;
    }
    m.sections.records(msg).any(|r| {
        let at = r.rdata_offset;
        name_points_into_header(msg, r.name.start())
            || match r.rtype.0 {
                2 | 5 | 12 | 39 => name_points_into_header(msg, at),
                15 => name_points_into_header(msg, at + 2),
                33 => name_points_into_header(msg, at + 6),
                6 => {
                    name_points_into_header(msg, at)
                        || kdns_core::wire::Name::parse(msg, at).is_ok_and(|n| name_points_into_header(msg, at + n.len_in_place()))
                }
                _ => false,
            }
    })
}

impl World {
    fn query(&mut self, client: Client, query: &[u8], out_len: usize) {
        let tag = self.asked.len();
        let client = Client { tag: tag as u64, ..client };
        // An upper bound of the reply size: the largest EDNS size either
        // parser sees (the engine reads the query with one or the other).
        let mut edns = 0u16;
        if let Some(q) = quick_query(query) {
            edns = edns.max(q.edns.map_or(0, |e| e.udp_size));
        }
        if let Some(size) = Message::parse(query).ok().and_then(|m| m.edns().map(|e| e.udp_size)) {
            edns = edns.max(size);
        }
        let limit = match client.transport {
            Transport::Udp => usize::from(edns.max(512).min(UDP_SIZE).max(512)),
            Transport::Tcp => usize::from(u16::MAX),
        };
        let id = Header::new_checked(query).map_or(0, |h| h.id());
        self.asked.push(Asked { client, id, question: question_of(query), limit, done: false });
        let out = &mut self.out[..out_len];
        match self.engine.handle_query(self.now, &client, query, out) {
            Verdict::Reply(len) => {
                assert!(len <= out_len, "reply of {len} bytes in a buffer of {out_len}");
                let reply = self.out[..len].to_vec();
                self.reply(&client, &reply);
            }
            Verdict::Forward { addr, len, port, .. } => {
                assert!(len <= out_len);
                let bytes = self.out[..len].to_vec();
                self.forwarded(Some(tag), addr, port, bytes);
                self.waiting += 1;
            }
            // An identical question is in flight: the reply comes with its answer.
            Verdict::Wait => self.waiting += 1,
            Verdict::Drop(reason) => {
                assert!(!reason.name().starts_with("answer_"), "a query dropped for an answer's reason: {reason:?}");
                self.asked[tag].done = true;
                self.query_drops += 1;
            }
        }
        self.drain();
    }

    /// A reply to a client: well-formed, the first and only one for it.
    fn reply(&mut self, client: &Client, reply: &[u8]) {
        let a = self.asked.get_mut(client.tag as usize).expect("a reply for a client never seen");
        assert_eq!(&a.client, client, "the client came back changed");
        assert!(!a.done, "a second reply to one query");
        a.done = true;
        assert!(reply.len() <= a.limit, "reply of {} bytes over the client's limit of {}", reply.len(), a.limit);
        let h = Header::new_checked(reply).expect("a reply shorter than a header");
        assert!(h.qr(), "a reply without QR");
        assert_eq!(h.id(), a.id, "a reply with another ID");
        if h.qdcount() == 1 {
            let q = question_of(reply).unwrap_or_else(|| panic!("a reply that does not parse: {reply:02x?}"));
            if let Some(asked) = &a.question {
                assert!(q == *asked, "a reply to another question: asked {asked:02x?}, reply {reply:02x?}");
            }
        }
        self.replies += 1;
    }

    /// A query the engine sends to a backend (for a client, or a probe or
    /// refresh when `tag` is None).
    fn forwarded(&mut self, tag: Option<usize>, addr: SocketAddr, port: u16, bytes: Vec<u8>) {
        assert!(backends().contains(&addr), "a query sent to {addr}, not a backend");
        assert!(port < PORTS, "a query sent from source-port slot {port} of {PORTS}");
        let h = Header::new_checked(&bytes[..]).expect("a backend query shorter than a header");
        assert!(!h.qr() && h.qdcount() == 1, "a backend query that is not a query");
        let q = question_of(&bytes).expect("a backend query that does not parse");
        if let Some(asked) = tag.and_then(|t| self.asked[t].question.as_deref()) {
            assert!(q == asked, "a backend asked another question than the client");
        }
        if self.sent.len() == 16 {
            self.sent.remove(0);
        }
        self.sent.push(Sent { addr, port, bytes });
    }

    fn answer(&mut self, from: SocketAddr, port: u16, answer: &[u8], out_len: usize) {
        let v = self.engine.handle_backend_answer(self.now, from, port, answer, &mut self.out[..out_len]);
        assert!(
            matches!(v, AnswerVerdict::Drop(_)) || !points_into_header(answer),
            "an answer whose names point into the header was accepted: {answer:02x?}"
        );
        match v {
            AnswerVerdict::Reply { client, len } => {
                assert!(len <= out_len);
                let reply = self.out[..len].to_vec();
                self.reply(&client, &reply);
                self.waiting -= 1;
            }
            AnswerVerdict::Consumed => {}
            AnswerVerdict::Drop(reason) => {
                assert!(reason != DropReason::NoBufferSpace, "an accepted answer lost for want of room in {out_len} bytes");
            }
        }
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.engine.handle_timeout(self.now);
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(t) = self.engine.poll_transmit(self.now, &mut self.out) {
            match t {
                Transmit::Backend { addr, len, port, .. } => {
                    let bytes = self.out[..len].to_vec();
                    self.forwarded(None, addr, port, bytes);
                }
                Transmit::Client { client, len } => {
                    let reply = self.out[..len].to_vec();
                    self.reply(&client, &reply);
                    self.waiting -= 1;
                }
                // No TCP here: the exchange fails at once, and the client's
                // stale answer or SERVFAIL comes out of this loop.
                Transmit::BackendTcp { exchange, .. } => self.engine.tcp_failed(self.now, exchange),
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(conf) = input.u8() else { return };
    let cfg = EngineConfig {
        backends: backends().iter().map(|&a| BackendSpec::new(a)).collect(),
        cache: CacheConfig::for_entries(64),
        acl: Acl::new(["10.0.0.0/16", "fd00::/64"].iter().map(|n| n.parse().unwrap()).collect()),
        udp_size: UDP_SIZE,
        pending_capacity: if conf & 2 != 0 { 4 } else { 64 },
        max_tries: 1 + ((conf >> 2) & 3),
        limits: if conf & 0x10 != 0 {
            ClientLimits {
                prefix_v4: 24,
                max_pending: 3,
                miss_rate: 20,
                miss_burst: 10,
                over_limit: [OverLimit::Servfail, OverLimit::Refused, OverLimit::Drop][usize::from(conf >> 5 & 3) % 3],
                ..ClientLimits::default()
            }
        } else {
            ClientLimits::default()
        },
        coalesce: conf & 0x80 == 0,
        source_ports: PORTS,
        seed: 0x5eed,
        ..EngineConfig::default()
    };
    let deadline = cfg.query_deadline;
    let mut engine = Engine::new(cfg).expect("engine");
    if conf & 1 != 0 {
        engine.set_records(Arc::new(records()));
    }
    let mut w = World {
        engine,
        now: Timestamp::from_secs(1),
        asked: Vec::new(),
        sent: Vec::new(),
        out: vec![0u8; 65535],
        replies: 0,
        query_drops: 0,
        waiting: 0,
    };
    let local: SocketAddr = "10.0.0.53:53".parse().unwrap();

    while let Some(op) = input.u8() {
        match op % 4 {
            0 => {
                let (Some(c), Some(port), Some(mode), Some(q)) = (input.u8(), input.u16(), input.u8(), input.bytes()) else { break };
                let transport = if mode & 1 != 0 { Transport::Tcp } else { Transport::Udp };
                let client = Client { addr: SocketAddr::new(client_ip(c), port), local, transport, tag: 0 };
                w.query(client, q, OUT_SIZES[usize::from(mode >> 1) % OUT_SIZES.len()]);
            }
            1 => {
                let (Some(which), Some(from), Some(flags), Some(an), Some(ns), Some(ar), Some(case), Some(tail)) =
                    (input.u8(), input.u8(), input.u16(), input.u16(), input.u16(), input.u16(), input.u8(), input.bytes())
                else {
                    break;
                };
                let Some(s) = w.sent.len().checked_sub(1 + usize::from(which) % 16).map(|i| &w.sent[i]) else { continue };
                let Ok(m) = Message::parse(&s.bytes) else { continue };
                let port = if from & 0x40 != 0 { (s.port + 1) % PORTS } else { s.port };
                let from = if from & 0x80 != 0 { source(from) } else { s.addr };
                let mut a = Vec::with_capacity(64 + tail.len());
                a.extend_from_slice(&s.bytes[..2]);
                a.extend_from_slice(&flags.to_be_bytes());
                a.extend_from_slice(&1u16.to_be_bytes());
                for n in [an, ns, ar] {
                    a.extend_from_slice(&n.to_be_bytes());
                }
                let mut q = s.bytes[HEADER_LEN..m.question.end()].to_vec();
                if case != 0 {
                    // flip the case of letters where `case` has a bit set
                    for (i, b) in q.iter_mut().enumerate() {
                        if b.is_ascii_alphabetic() && case & (1 << (i % 8)) != 0 {
                            *b ^= 0x20;
                        }
                    }
                }
                a.extend_from_slice(&q);
                a.extend_from_slice(tail);
                w.answer(from, port, &a, 65535);
            }
            2 => {
                let (Some(from), Some(bytes)) = (input.u8(), input.bytes()) else { break };
                w.answer(source(from), u16::from(from >> 4 & 3), bytes, 65535);
            }
            _ => {
                let Some(ms) = input.u16() else { break };
                w.advance(Duration::from_millis(u64::from(ms)));
            }
        }
    }

    // Run past every deadline: nothing may be left waiting.
    for _ in 0..8 {
        w.advance(deadline);
    }
    assert_eq!(w.waiting, 0, "queries forwarded and never answered");
    assert!(w.asked.iter().all(|a| a.done), "a query left without an end");
    let st = w.engine.stats();
    let rcodes: u64 = st.rcodes.iter().map(|c| c.get()).sum();
    assert_eq!(st.queries.get(), w.asked.len() as u64, "queries counter");
    assert_eq!(rcodes, w.replies, "rcode counters against replies sent");
    assert_eq!(st.queries.get(), w.replies + w.query_drops, "queries != replies + drops");
});
