//! The answer path: the query sent to a backend (ID, source-port slot,
//! 0x20 spelling, deadline) and the checks its answer must pass before it
//! becomes the client's reply.

use super::*;

impl Engine {
    /// Writes the query of `h` for `backend` into `out` (its ID, drawn at
    /// the first try, its source-port slot and its 0x20 spelling) and arms
    /// the try's deadline: the backend's try timeout, or its probe timeout.
    pub(super) fn send(&mut self, now: Timestamp, h: Handle, backend: BackendId, out: &mut [u8]) -> Option<Transmit> {
        let (id, port) = match self.pending.flight(h) {
            Some(f) => (f.id, f.port),
            None => {
                let id = self.next_id()?;
                let port = if self.source_ports > 1 { ((self.random() >> 32) % u64::from(self.source_ports)) as u16 } else { 0 };
                if let Some(seed) = self.randomize_case.then(|| self.random()) {
                    self.pending.get_mut(h)?.case_seed = seed;
                }
                (id, port)
            }
        };
        let u = self.pending.get_mut(h)?;
        let len = reply::upstream_query(out, id, u.client_flags, &u_question(u), self.udp_size, u.key_flags)?;
        if u.case_seed != 0 {
            spell_0x20(&mut out[HEADER_LEN..HEADER_LEN + u.qlen as usize], u.case_seed);
        }
        u.tries += 1;
        u.tried.insert(backend);
        u.settled = false;
        u.slow = false;
        u.waits = 0;
        if u.over_tcp {
            return self.send_tcp(now, h, backend, id, len);
        }
        let wait = if u.purpose == Purpose::Probe { self.pool.probe_timeout(backend) } else { self.pool.try_timeout(backend) };
        let deadline = if u.purpose == Purpose::Probe { now + wait } else { (now + wait).min(u.first_sent + self.query_deadline) };
        if !self.pending.sent(h, backend, id, port, now, deadline) {
            return None;
        }
        self.pool.on_sent(backend, now);
        Some(Transmit::Backend { backend, addr: self.pool.addr(backend), len, port })
    }

    /// Handles an answer that arrived at `now` from `from` on source-port
    /// slot `port` of a backend socket. It is accepted only from a backend
    /// asked, on the slot asked from, with the ID and the exact (0x20)
    /// question asked; then it is cached and turned into the client's
    /// reply, and queries waiting on the same question are queued for
    /// [`Engine::poll_transmit`].
    pub fn handle_backend_answer(&mut self, now: Timestamp, from: SocketAddr, port: u16, answer: &[u8], out: &mut [u8]) -> AnswerVerdict {
        let v = self.backend_answer(now, from, Via::Udp(port), answer, out);
        if let AnswerVerdict::Drop(r) = v {
            self.stats.count_drop(r);
        }
        v
    }

    pub(super) fn backend_answer(&mut self, now: Timestamp, from: SocketAddr, via: Via, answer: &[u8], out: &mut [u8]) -> AnswerVerdict {
        let drop = |r: DropReason| AnswerVerdict::Drop(r);
        let Ok(h) = Header::new_checked(answer) else { return drop(DropReason::AnswerMalformed) };
        let Some(handle) = self.pending.by_id(h.id()) else { return drop(DropReason::AnswerUnknownId) };
        let Some(flight) = self.pending.flight(handle) else { return drop(DropReason::AnswerUnknownId) };
        let Some(&u) = self.pending.get(handle) else { return drop(DropReason::AnswerUnknownId) };
        let Some(from_b) = self.pool.find(from).filter(|&b| b == flight.backend || u.tried.contains(b)) else {
            return drop(DropReason::AnswerWrongSource);
        };
        match via {
            Via::Udp(port) if u.over_tcp || port != flight.port => return drop(DropReason::AnswerWrongPort),
            Via::Tcp(asked) if asked != handle || !u.over_tcp => return drop(DropReason::AnswerUnknownId),
            _ => {}
        }
        if !h.qr() {
            return drop(DropReason::AnswerNotResponse);
        }
        let Ok(msg) = Message::parse(answer) else { return drop(DropReason::AnswerMalformed) };
        // The reply leaves the backend's OPT out: records after it would
        // move, and their compression pointers with them.
        if msg.edns().is_some_and(|e| e.options_offset + e.options_len as usize != msg.sections.end) {
            return drop(DropReason::AnswerMalformed);
        }
        let q = &msg.question;
        if q.qtype != u.qtype || q.qclass != u.qclass || !q.name.eq_wire_ignore_case(answer, u.qname()) {
            return drop(DropReason::AnswerWrongQuestion);
        }
        if u.case_seed != 0 && !spelled_0x20(&answer[HEADER_LEN..], u.qname(), u.case_seed) {
            return drop(DropReason::AnswerCaseMismatch);
        }
        // Accepted.
        self.stats.answers.inc();
        self.note_answer(now, from_b, &flight, &u);
        self.release(handle);
        if u.purpose != Purpose::Probe {
            if let Some(key) = self.cache.key(u.qname(), u.qtype, u.qclass, u.key_flags) {
                if self.cache.insert(now, &key, answer, &msg).is_err() {
                    self.stats.not_cached.inc();
                    if u.purpose == Purpose::Refresh {
                        self.cache.refresh_failed(&key);
                    }
                }
            }
        }
        if u.waiters.is_some() {
            // Keep the answer for the followers (the cache may not hold it).
            self.fanout.gen = self.fanout.gen.wrapping_add(1);
            match self.fanout.buf.get_mut(..answer.len()) {
                Some(buf) => {
                    buf.copy_from_slice(answer);
                    self.fanout.len = answer.len();
                    self.fanout.msg = Some(msg);
                    let gen = self.fanout.gen;
                    self.queue_followers(&u, |f| Action::Fanout(f, gen));
                }
                None => self.queue_followers(&u, Action::GiveUp),
            }
        }
        let Purpose::Client(client) = u.purpose else { return AnswerVerdict::Consumed };
        if h.tc() && client.transport == Transport::Tcp && matches!(via, Via::Udp(_)) && self.ask_over_tcp(&u, from_b) {
            return AnswerVerdict::Consumed;
        }
        match self.client_reply(now, &u, answer, &msg, out) {
            Some(len) => AnswerVerdict::Reply { client, len },
            None => drop(DropReason::NoBufferSpace),
        }
    }

    /// Tells the pool what an accepted answer from `from_b` means for the
    /// try in flight.
    pub(super) fn note_answer(&mut self, now: Timestamp, from_b: BackendId, flight: &InFlight, u: &Upstream) {
        if u.over_tcp {
            // One exchange on its own connection: neither a round-trip
            // sample nor a try the pool counted.
            return;
        }
        let probe = u.purpose == Purpose::Probe;
        if from_b == flight.backend && !u.settled {
            let rtt = now.saturating_since(flight.sent_at);
            let sample = (!u.slow).then_some(rtt);
            if let Some(r) = sample {
                self.last_rtt = Some((from_b, r));
            }
            let t = self.pool.on_answer(from_b, now, sample, probe);
            self.note(t);
        } else {
            // An earlier try's answer: that backend lives; the current try
            // is abandoned.
            self.stats.late_answers.inc();
            self.pool.on_late_answer(from_b, now);
            if !u.settled {
                self.pool.on_cancel(flight.backend);
            }
        }
    }

    /// Our OPT for a reply (when the client sent one) and the room for the
    /// reply before it: the client's UDP size (512 without EDNS), at most
    /// ours, or 65 535 over TCP, and at most `out_len`.
    pub(super) fn reply_room(
        &self,
        client_edns: Option<u16>,
        key_flags: KeyFlags,
        transport: Transport,
        out_len: usize,
    ) -> (Option<OptSpec>, usize) {
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(client_edns.map_or(512, |s| s.min(self.udp_size))),
        }
        .min(out_len);
        let opt = client_edns.map(|_| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: key_flags.0 & KeyFlags::DO != 0 });
        (opt, limit.saturating_sub(if opt.is_some() { OPT_LEN } else { 0 }))
    }

    /// Writes the reply to `u`'s client from a backend's answer: the
    /// client's ID, flags, spelling and OPT, truncated if it does not fit.
    pub(super) fn client_reply(&self, now: Timestamp, u: &Upstream, answer: &[u8], msg: &Message, out: &mut [u8]) -> Option<usize> {
        let Purpose::Client(client) = u.purpose else { return None };
        let (opt, room) = self.reply_room(u.client_edns, u.key_flags, client.transport, out.len());
        let len = match reply::copy_without_opt(answer, msg, &mut out[..room]) {
            Some(len) => reply::finish(out, len, u.client_id, u.client_flags, Some(u.qname()), opt),
            None => {
                self.stats.truncated.inc();
                reply::truncated(out, &u_question(u), u.client_id, u.client_flags, answer, opt)?
            }
        };
        self.count_reply(out);
        self.stats.latency(now.saturating_since(u.first_sent));
        Some(len)
    }

    pub(super) fn note(&self, t: Option<Transition>) {
        match t {
            Some(Transition::WentDown) => self.stats.backend_down.inc(),
            Some(Transition::CameUp) => self.stats.backend_up.inc(),
            None => {}
        }
    }

    /// A try to `b` timed out with no answer from `b` since it left:
    /// counted, and reported to the pool.
    pub(super) fn silent_timeout(&mut self, b: BackendId, now: Timestamp, probe: bool) {
        self.stats.timeouts.inc();
        let t = self.pool.on_timeout(b, now, probe);
        self.note(t);
    }
}

/// How a backend's answer came: on a source-port slot over UDP, or on the
/// TCP connection of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Udp(u16),
    Tcp(Handle),
}

/// The 0x20 spelling of `seed`: bit `i` of a stream drawn from it flips
/// the case of the `i`-th letter.
pub(super) struct CaseBits(u64, u64);

impl CaseBits {
    fn next(&mut self) -> bool {
        if self.1 <= 1 {
            // Refill from a splitmix64 step of the seed.
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            self.1 = (z ^ (z >> 31)) | (1 << 63);
        }
        let bit = self.1 & 1 == 1;
        self.1 >>= 1;
        bit
    }
}

/// Randomises the case of the letters of the wire name in `name` (length
/// octets are skipped).
pub(super) fn spell_0x20(name: &mut [u8], seed: u64) {
    let mut bits = CaseBits(seed, 0);
    let mut at = 0;
    while at < name.len() {
        let len = name[at] as usize;
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        for b in name.iter_mut().skip(at + 1).take(len) {
            if b.is_ascii_alphabetic() {
                let upper = bits.next();
                *b = if upper { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() };
            }
        }
        at += len + 1;
    }
}

/// Whether `wire` starts with the 0x20 spelling of `qname` for `seed`.
pub(super) fn spelled_0x20(wire: &[u8], qname: &[u8], seed: u64) -> bool {
    let Some(got) = wire.get(..qname.len()) else { return false };
    let mut want = [0u8; 255];
    let want = &mut want[..qname.len()];
    want.copy_from_slice(qname);
    spell_0x20(want, seed);
    got == want
}
