//! Shared helpers for the kdns benchmarks.
//!
//! Everything a benchmark needs to drive a [`kdns_core::engine::Engine`]
//! the way a driver would, with no sockets:
//!
//! * [`Rig`]: an engine with one or two (fake) loopback backends, a fixed
//!   clock, and the buffers a driver owns. [`Rig::resolve`] plays the whole
//!   miss dance (query -> `Forward` -> a synthesized backend answer ->
//!   `handle_backend_answer` -> reply), [`Rig::warm`] fills the cache with
//!   it, and [`Rig::answer_frame`] is the AF_XDP per-packet path.
//! * [`write_query`] / [`query`]: a client query with EDNS.
//! * [`write_answer`]: the answer a backend sends to a query (same ID and
//!   question, one A record, an OPT), written without allocating.
//! * [`query_frame`]: an Ethernet / IPv4 / UDP frame carrying a query.
//! * [`MissQueries`]: an endless supply of distinct names, patched in place.
//!
//! Helpers that run inside measured loops ([`Rig::resolve`],
//! [`Rig::answer_frame`], [`Rig::answer_query`], [`write_answer`],
//! [`MissQueries::next_query`]) never allocate.

use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use kdns_core::engine::{Acl, AnswerVerdict, Client, Engine, EngineConfig, IpNet, Transport, Verdict};
use kdns_core::net::{self, FrameInfo, L2Header, MacAddr};
use kdns_core::upstream::BackendSpec;
use kdns_core::wire::{encode_name, flags, Class, Header, Message, MessageBuilder, OptSpec, Rtype, Section, HEADER_LEN};
use kdns_core::Timestamp;

/// The client of every benchmark query: a container address on the host's
/// bridge (what AF_XDP sees; allowed by the rig's ACL).
pub const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 53000);
/// The address the client queried (kdns's listening address).
pub const SERVER: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 53);
/// MAC address of [`CLIENT`].
pub const CLIENT_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x02];
/// MAC address of [`SERVER`].
pub const SERVER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
/// The (fake, never contacted) backends: loopback resolvers.
pub const BACKENDS: [SocketAddr; 2] = [
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5301)),
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5302)),
];
/// The fixed time every benchmark runs at (answers never age or expire).
pub const NOW: Timestamp = Timestamp::from_secs(1_000);
/// The EDNS UDP size clients advertise.
pub const EDNS_SIZE: u16 = 1232;
/// TTL of the A record of every synthesized backend answer.
pub const ANSWER_TTL: u32 = 300;
/// Size of an AF_XDP UMEM frame (the buffer [`Rig::answer_frame`] works in).
pub const FRAME_SIZE: usize = 2048;
/// Largest query payload copied out of a frame (a larger one is dropped by
/// [`Rig::answer_frame`], as the XDP driver would).
pub const MAX_QUERY: usize = 512;

/// The benchmark name number `i`: `h` + 8 hex digits + `.bench.example.`
/// (e.g. `h0000002a.bench.example.`), all names of the same length.
pub fn bench_name(i: u32) -> String {
    format!("h{i:08x}.bench.example.")
}

/// `name` in mixed case (DNS 0x20 style): each letter's case is chosen by a
/// bit of kdns's generator seeded by `seed`. Compared without case, the
/// result is the same name.
pub fn mix_case(name: &str, seed: u64) -> String {
    let mut rng = kdns_core::engine::Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    name.chars().map(|c| if rng.next_u64() >> 63 == 1 { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }).collect()
}

/// Writes a query for `name` / `qtype` with ID `id` and RD set into `out`,
/// with an OPT record advertising `edns` bytes (DO clear) when given.
/// Returns its length, or `None` if `name` is invalid or `out` too small.
pub fn write_query(out: &mut [u8], id: u16, name: &str, qtype: Rtype, edns: Option<u16>) -> Option<usize> {
    let mut n = [0u8; 256];
    let nlen = encode_name(name, &mut n).ok()?;
    let opt = edns.map(|udp_size| OptSpec { udp_size, ext_rcode: 0, dnssec_ok: false });
    kdns_core::wire::write_query(out, id, flags::RD, &n[..nlen], qtype, Class::IN, opt)
}

/// A query for `name` A with ID `id`, RD set, and an OPT record advertising
/// [`EDNS_SIZE`]: what a stub resolver in a container sends.
///
/// # Panics
/// If `name` is not a valid domain name.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let len = write_query(&mut buf, id, name, Rtype::A, Some(EDNS_SIZE)).expect("valid query name");
    buf[..len].to_vec()
}

/// Writes into `out` the answer a backend sends to `query`: same ID and
/// question (spelling kept), QR and RA set, RD and CD copied, NOERROR, one A
/// record `addr` with TTL `ttl` for the question name, and an OPT record
/// (size 1232). Returns its length, or `None` if `query` is not a readable
/// query or `out` too small. Does not allocate.
pub fn write_answer(query: &[u8], addr: [u8; 4], ttl: u32, out: &mut [u8]) -> Option<usize> {
    let q = Message::parse(query).ok()?;
    let qh = Header::new_checked(query).ok()?;
    let mut b = MessageBuilder::new(out, usize::MAX).ok()?;
    b.header().set_id(qh.id());
    b.header().set_flags(flags::QR | flags::RA | (qh.flags() & (flags::RD | flags::CD)));
    b.copy_question(query, &q.question).ok()?;
    if !b.record_at(Section::Answer, HEADER_LEN as u16, Rtype::A, Class::IN, ttl, &addr).ok()? {
        return None;
    }
    b.opt(OptSpec { udp_size: 1232, ext_rcode: 0, dnssec_ok: false }).ok()?;
    Some(b.finish())
}

/// An Ethernet / IPv4 / UDP frame from `src` to `dst` (MACs [`CLIENT_MAC`]
/// -> [`SERVER_MAC`]) carrying `payload`, with valid IPv4 and UDP
/// checksums: what AF_XDP hands the driver for a client's query.
///
/// # Panics
/// If the payload does not fit a UDP datagram.
pub fn query_frame(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let l2 = L2Header { dst_mac: SERVER_MAC, src_mac: CLIENT_MAC, vlan: None };
    let hl = net::udp_headers_len(&l2, false);
    // Room for the headers, then the payload.
    let mut buf = vec![0u8; hl];
    buf.extend_from_slice(payload);
    let len = net::write_udp_frame(&mut buf, &l2, SocketAddr::V4(src), SocketAddr::V4(dst), payload.len()).expect("frame fits");
    buf.truncate(len);
    buf
}

/// The engine configuration of the rig: the defaults (65 536-entry cache,
/// EDNS 1232, round-robin), `backends` of [`BACKENDS`] (1 or 2), and an ACL
/// allowing 10.0.0.0/8 (the client's network) and loopback.
///
/// # Panics
/// If `backends` is not 1 or 2.
pub fn engine_config(backends: usize) -> EngineConfig {
    assert!((1..=BACKENDS.len()).contains(&backends), "1 or 2 backends");
    let nets: Vec<IpNet> = ["10.0.0.0/8", "127.0.0.0/8", "::1/128"].iter().map(|n| n.parse().expect("literal")).collect();
    EngineConfig {
        backends: BACKENDS[..backends].iter().map(|&a| BackendSpec::new(a)).collect(),
        acl: Acl::new(nets),
        ..EngineConfig::default()
    }
}

/// How [`Rig::resolve`] or [`Rig::answer_frame`] failed: the engine did not
/// produce a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RigError {
    /// `handle_query` dropped the query.
    QueryDropped(Verdict),
    /// `handle_backend_answer` did not give the client's reply.
    AnswerNotReplied(AnswerVerdict),
    /// The backend answer could not be synthesized.
    BadForward,
    /// The frame did not parse, the query did not fit, or the reply frame
    /// could not be built.
    Frame,
}

/// An engine with its driver's buffers and a fixed clock; see the crate
/// docs.
#[derive(Debug)]
pub struct Rig {
    /// The engine under test.
    pub engine: Engine,
    /// The client every engine-level query comes from ([`CLIENT`] ->
    /// [`SERVER`], UDP).
    pub client: Client,
    /// The time passed to the engine (default [`NOW`]).
    pub now: Timestamp,
    /// The engine's output buffer (64 KiB, as for TCP).
    pub out: Box<[u8]>,
    answer: Box<[u8]>,
    drain: Box<[u8]>,
    /// Where [`Rig::answer_parsed_frame`] copies a frame's query (reused,
    /// not zeroed per packet, as in the XDP driver).
    qbuf: Box<[u8; MAX_QUERY]>,
    /// Answers synthesized for forwarded queries so far.
    pub forwarded: u64,
}

impl Rig {
    /// A rig with `backends` (1 or 2) loopback backends and the default
    /// cache; see [`engine_config`].
    pub fn new(backends: usize) -> Rig {
        Rig::with_config(engine_config(backends))
    }

    /// A rig around an engine built from `cfg`.
    ///
    /// # Panics
    /// If the engine rejects `cfg`.
    pub fn with_config(cfg: EngineConfig) -> Rig {
        Rig {
            engine: Engine::new(cfg).expect("valid engine config"),
            client: Client { addr: SocketAddr::V4(CLIENT), local: SocketAddr::V4(SERVER), transport: Transport::Udp, tag: 0 },
            now: NOW,
            out: vec![0u8; 65_535].into_boxed_slice(),
            answer: vec![0u8; 4096].into_boxed_slice(),
            drain: vec![0u8; 65_535].into_boxed_slice(),
            qbuf: Box::new([0u8; MAX_QUERY]),
            forwarded: 0,
        }
    }

    /// Answers the client query `query` as a driver with a live backend
    /// would: `handle_query`; on `Forward`, a backend answer to the
    /// outgoing query (one A record derived from the forward count, TTL
    /// [`ANSWER_TTL`]) goes to `handle_backend_answer`; then
    /// `poll_transmit` is drained. Returns the length of the client's reply
    /// in [`Rig::out`]. Does not allocate.
    pub fn resolve(&mut self, query: &[u8]) -> Result<usize, RigError> {
        let now = self.now;
        match self.engine.handle_query(now, &self.client, query, &mut self.out) {
            Verdict::Reply(len) => Ok(len),
            Verdict::Forward { addr, len, .. } => {
                self.forwarded += 1;
                let a = (self.forwarded as u32).to_be_bytes();
                let alen =
                    write_answer(&self.out[..len], [10, a[1], a[2], a[3]], ANSWER_TTL, &mut self.answer).ok_or(RigError::BadForward)?;
                let v = self.engine.handle_backend_answer(now, addr, 0, &self.answer[..alen], &mut self.out);
                while self.engine.poll_transmit(now, &mut self.drain).is_some() {}
                match v {
                    AnswerVerdict::Reply { len, .. } => Ok(len),
                    other => Err(RigError::AnswerNotReplied(other)),
                }
            }
            v => Err(RigError::QueryDropped(v)),
        }
    }

    /// Puts `names` in the cache (type A, via [`Rig::resolve`] of an EDNS
    /// query each).
    ///
    /// # Panics
    /// If a name is invalid or is not cached afterwards.
    pub fn warm<S: AsRef<str>>(&mut self, names: &[S]) {
        let mut q = [0u8; 512];
        for (i, name) in names.iter().enumerate() {
            let len = write_query(&mut q, i as u16, name.as_ref(), Rtype::A, Some(EDNS_SIZE)).expect("valid name");
            self.resolve(&q[..len]).expect("resolved");
        }
        let before = self.engine.stats().cache_hits.get();
        for (i, name) in names.iter().enumerate() {
            let len = write_query(&mut q, i as u16, name.as_ref(), Rtype::A, Some(EDNS_SIZE)).expect("valid name");
            let v = self.engine.handle_query(self.now, &self.client, &q[..len], &mut self.out);
            assert!(matches!(v, Verdict::Reply(_)), "{} cached: {v:?}", name.as_ref());
        }
        assert_eq!(self.engine.stats().cache_hits.get() - before, names.len() as u64, "every warmed name hits");
    }

    /// Warms the cache with [`bench_name`] `0..n` and returns the names.
    pub fn warm_n(&mut self, n: u32) -> Vec<String> {
        let names: Vec<String> = (0..n).map(bench_name).collect();
        self.warm(&names);
        names
    }

    /// `handle_query` of `query` from [`Rig::client`] into [`Rig::out`]:
    /// the engine alone. Returns the reply length (0 if the engine did not
    /// reply at once). Does not allocate.
    #[inline]
    pub fn answer_query(&mut self, query: &[u8]) -> usize {
        match self.engine.handle_query(self.now, &self.client, query, &mut self.out) {
            Verdict::Reply(len) => len,
            _ => 0,
        }
    }

    /// The AF_XDP per-packet path for a query frame `frame` received into
    /// the UMEM frame `buf` (typically [`FRAME_SIZE`] bytes): copy the frame
    /// in, [`net::parse_udp_frame`], copy the DNS payload to a stack buffer
    /// (the engine's query and output must not alias; a buffer kept in the
    /// rig, not zeroed per packet), `handle_query` with
    /// the rest of `buf` after the UDP header as output, then
    /// [`net::turn_around`]. Returns the reply frame's length in `buf`.
    /// Does not allocate.
    #[inline]
    pub fn answer_frame(&mut self, frame: &[u8], buf: &mut [u8]) -> Result<usize, RigError> {
        let rx = buf.get_mut(..frame.len()).ok_or(RigError::Frame)?;
        rx.copy_from_slice(frame);
        let info = net::parse_udp_frame(rx).map_err(|_| RigError::Frame)?;
        self.answer_parsed_frame(&info, buf)
    }

    /// [`Rig::answer_frame`] after the copy-in and parse: the query is at
    /// `info.payload_offset` of `buf`.
    #[inline]
    pub fn answer_parsed_frame(&mut self, info: &FrameInfo, buf: &mut [u8]) -> Result<usize, RigError> {
        let qlen = info.payload_len;
        if qlen > MAX_QUERY {
            return Err(RigError::Frame);
        }
        let q = &mut self.qbuf[..qlen];
        q.copy_from_slice(buf.get(info.payload_offset..info.payload_offset + qlen).ok_or(RigError::Frame)?);
        let client = Client { addr: info.src, local: info.dst, transport: Transport::Udp, tag: 0 };
        let out = buf.get_mut(info.payload_offset..).ok_or(RigError::Frame)?;
        match self.engine.handle_query(self.now, &client, q, out) {
            Verdict::Reply(len) => net::turn_around(buf, info, len).map_err(|_| RigError::Frame),
            v => Err(RigError::QueryDropped(v)),
        }
    }
}

/// An endless supply of queries for distinct names, for the miss path:
/// one query buffer whose first label (`m` + 8 hex digits, then
/// `.miss.bench.example.`) is rewritten in place from a counter. Cheap
/// enough (a few ns) not to distort a miss measurement.
#[derive(Debug, Clone)]
pub struct MissQueries {
    buf: [u8; 128],
    len: usize,
    counter: u32,
}

/// Offset of the 8 hex digits in a [`MissQueries`] query: header, label
/// length, `m`.
const MISS_DIGITS_AT: usize = HEADER_LEN + 2;

impl MissQueries {
    /// Starts at counter `start` (the next query's name is number `start`).
    pub fn new(start: u32) -> MissQueries {
        let mut buf = [0u8; 128];
        let len = write_query(&mut buf, 0x4242, "m00000000.miss.bench.example.", Rtype::A, Some(EDNS_SIZE)).expect("valid template");
        MissQueries { buf, len, counter: start }
    }

    /// The next query (ID 0x4242, EDNS 1232) for a name not asked before
    /// (until the 32-bit counter wraps).
    #[inline]
    pub fn next_query(&mut self) -> &[u8] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let c = self.counter;
        self.counter = c.wrapping_add(1);
        for (k, d) in self.buf[MISS_DIGITS_AT..MISS_DIGITS_AT + 8].iter_mut().enumerate() {
            *d = HEX[((c >> (28 - 4 * k)) & 0xf) as usize];
        }
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_then_hit_through_engine_and_frame() {
        let mut rig = Rig::new(2);
        let names = rig.warm_n(100);
        assert_eq!(rig.engine.cache().len(), 100);
        assert_eq!(rig.forwarded, 100);
        // Engine path, mixed case: the reply carries the client's spelling and ID.
        let mixed = mix_case(&names[7], 7);
        assert_ne!(mixed, names[7]);
        let q = query(0xbeef, &mixed);
        let len = rig.answer_query(&q);
        assert!(len > q.len());
        let r = rig.out[..len].to_vec();
        assert_eq!(&r[..2], &[0xbe, 0xef]);
        assert_eq!(&r[HEADER_LEN..HEADER_LEN + 25], &q[HEADER_LEN..HEADER_LEN + 25]);
        let m = Message::parse(&r).unwrap();
        assert!(m.edns().is_some());
        // Frame path: the reply frame parses back with the addresses swapped.
        let frame = query_frame(CLIENT, SERVER, &q);
        let mut buf = [0u8; FRAME_SIZE];
        let flen = rig.answer_frame(&frame, &mut buf).unwrap();
        let info = net::parse_udp_frame(&buf[..flen]).unwrap();
        assert_eq!(info.src, SocketAddr::V4(SERVER));
        assert_eq!(info.dst, SocketAddr::V4(CLIENT));
        assert_eq!(&buf[info.payload_offset..info.payload_offset + info.payload_len], &r[..]);
        assert_eq!(rig.forwarded, 100, "hits forward nothing");
    }

    #[test]
    fn miss_queries_are_distinct_and_resolve() {
        let mut rig = Rig::new(1);
        let mut m = MissQueries::new(0xabc);
        let q1 = m.next_query().to_vec();
        let q2 = m.next_query().to_vec();
        assert_ne!(q1, q2);
        let name = Message::parse(&q1).unwrap().question.name.display(&q1).to_string();
        assert_eq!(name, "m00000abc.miss.bench.example.");
        for _ in 0..1000 {
            let q = m.next_query().to_vec();
            rig.resolve(&q).unwrap();
        }
        assert_eq!(rig.forwarded, 1000);
        assert_eq!(rig.engine.cache().len(), 1000);
    }
}
