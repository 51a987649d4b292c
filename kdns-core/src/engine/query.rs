//! The query path: a client's query, from the header check through local
//! records and the cache to a miss (fair share, coalescing, a backend).

use super::*;

impl Engine {
    /// Handles one client query received at `now`. The reply or the query
    /// for a backend is written to `out`, which should hold at least
    /// 65 535 bytes for TCP and the largest UDP size for UDP (shorter
    /// buffers cap the answer size and may cause TC replies).
    pub fn handle_query(&mut self, now: Timestamp, client: &Client, query: &[u8], out: &mut [u8]) -> Verdict {
        let st = &*self.stats;
        st.queries.inc();
        if client.transport == Transport::Tcp {
            st.queries_tcp.inc();
        }
        let Ok(h) = Header::new_checked(query) else {
            st.count_drop(DropReason::QueryTooShort);
            return Verdict::Drop(DropReason::QueryTooShort);
        };
        if h.qr() {
            st.count_drop(DropReason::QueryIsResponse);
            return Verdict::Drop(DropReason::QueryIsResponse);
        }
        let allowed = self.acl.allows(client.addr.ip());
        let fast = match quick_query(query) {
            Some(q) if allowed && h.opcode() == Opcode::QUERY && q.edns.is_none_or(|e| e.version == 0) => Some(q),
            _ => None,
        };
        let asked = match fast {
            Some(q) => q,
            None => match self.check_slow(query, &h, allowed) {
                Ok(q) => q,
                Err((msg, rcode)) => return self.empty_reply(query, msg.as_ref(), rcode, false, out),
            },
        };
        let edns = asked.edns.map(|e| (e.udp_size.max(512), e.dnssec_ok));
        let limit = match client.transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(edns.map_or(512, |(size, _)| size.min(self.udp_size))),
        }
        .min(out.len());
        let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
        let qname = &query[HEADER_LEN..asked.qname_end];
        let q = &asked;
        let key_flags = KeyFlags::new(edns.is_some_and(|e| e.1), h.cd());
        if !self.records.is_empty() {
            let lq = LocalQuery {
                qname,
                qtype: q.qtype,
                qclass: q.qclass,
                id: h.id(),
                flags: h.flags(),
                opt: edns.map(|(_, d)| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: d }),
                client: client.addr.ip(),
                limit,
                rotate: self.rotate,
                random: self.rng.peek(),
            };
            if let LocalAnswer::Reply(len, _, fixed) = self.records.answer(&lq, out) {
                if fixed && self.local_tier.on() && client.transport == Transport::Udp {
                    self.local_tier.hit(now, qname, q.qtype, q.qclass, key_flags, &out[..len], edns.is_some());
                }
                self.rotate = self.rotate.wrapping_add(1);
                self.rng.stir();
                st.local_answers.inc();
                st.latency[0].inc();
                self.count_reply(out);
                return Verdict::Reply(len);
            }
        }
        let Some(key) = self.cache.key(qname, q.qtype, q.qclass, key_flags) else {
            st.formerr.inc();
            return self.empty_reply(query, Message::parse(query).ok().as_ref(), Rcode::FORMERR, false, out);
        };
        let Some(room) = limit.checked_sub(opt_len) else {
            st.count_drop(DropReason::NoBufferSpace);
            return Verdict::Drop(DropReason::NoBufferSpace);
        };
        match self.cache.lookup(now, &key, &mut out[..room]) {
            Lookup::Hit { len, refresh, kind } => {
                st.cache_hits.inc();
                if kind != crate::cache::EntryKind::Positive {
                    st.cache_negative_hits.inc();
                }
                let opt = edns.map(|(_, d)| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: d });
                let len = reply::finish(out, len, h.id(), h.flags(), Some(qname), opt);
                self.count_reply(out);
                st.latency[0].inc();
                if refresh {
                    self.start_refresh(now, qname, q.qtype, q.qclass, key_flags);
                }
                Verdict::Reply(len)
            }
            Lookup::TooLong { .. } => {
                st.cache_hits.inc();
                st.truncated.inc();
                self.empty_reply(query, Message::parse(query).ok().as_ref(), Rcode::NOERROR, true, out)
            }
            Lookup::Stale | Lookup::Miss => {
                st.cache_misses.inc();
                let asked =
                    Asked { id: h.id(), flags: h.flags(), edns: edns.map(|e| e.0), key_flags, qname, qtype: q.qtype, qclass: q.qclass };
                self.miss(now, client, &asked, &key, out)
            }
        }
    }

    /// A cache miss: fair share, coalescing, then a backend.
    fn miss(&mut self, now: Timestamp, client: &Client, a: &Asked<'_>, key: &Key<'_>, out: &mut [u8]) -> Verdict {
        let leader = if self.coalesce { self.find_in_flight(key.hash(), a.qname, a.qtype, a.qclass, a.key_flags) } else { None };
        let client_slot = if self.clients.enabled() {
            match self.clients.admit(client.addr.ip(), now, leader.is_none()) {
                Ok(i) => i,
                Err(r) => return self.over_limit(r, a, out),
            }
        } else {
            NO_CLIENT
        };
        let fill = |u: &mut Upstream| {
            *u = Upstream {
                purpose: Purpose::Client(*client),
                client_id: a.id,
                client_flags: a.flags,
                client_edns: a.edns,
                key_flags: a.key_flags,
                qlen: a.qname.len() as u8,
                qtype: a.qtype,
                qclass: a.qclass,
                first_sent: now,
                client_slot,
                key_hash: key.hash(),
                ..Upstream::default()
            };
            u.qname[..a.qname.len()].copy_from_slice(a.qname);
        };
        let Some(handle) = self.pending.insert(fill) else {
            self.clients.release(client_slot);
            self.stats.count_drop(DropReason::PendingFull);
            return Verdict::Drop(DropReason::PendingFull);
        };
        if let Some(l) = leader {
            // Wait on the identical question in flight: push onto its list.
            let first = self.pending.get(l).and_then(|u| u.waiters);
            if let Some(u) = self.pending.get_mut(handle) {
                u.waiters = first;
            }
            if let Some(u) = self.pending.get_mut(l) {
                u.waiters = Some(handle);
            }
            self.stats.coalesced.inc();
            return Verdict::Wait;
        }
        let verdict = match self.pool.select(now, TriedSet::EMPTY) {
            Some(b) => match self.send(now, handle, b, out) {
                Some(t) => {
                    self.stats.forwarded.inc();
                    Some(t)
                }
                None => None,
            },
            // No backend is up: a stale answer at once if we have one; else
            // ask one anyway (panic mode), since the pool may have marked a
            // live backend down under overload.
            None if self.cache.has_stale(now, key) => return self.give_up_now(handle, now, out),
            None => match self.pool.select_any(TriedSet::EMPTY).and_then(|b| self.send(now, handle, b, out)) {
                Some(t) => {
                    self.stats.forwarded.inc();
                    self.stats.panic_forwards.inc();
                    Some(t)
                }
                None => return self.give_up_now(handle, now, out),
            },
        };
        match verdict {
            Some(Transmit::Backend { backend, addr, len, port }) => {
                self.index_in_flight(handle);
                Verdict::Forward { backend, addr, len, port }
            }
            Some(Transmit::Client { len, .. }) => Verdict::Reply(len),
            // A first try is never over TCP.
            Some(Transmit::BackendTcp { .. }) | None => {
                self.release(handle);
                self.stats.count_drop(DropReason::PendingFull);
                Verdict::Drop(DropReason::PendingFull)
            }
        }
    }

    pub(super) fn give_up_now(&mut self, handle: Handle, now: Timestamp, out: &mut [u8]) -> Verdict {
        match self.give_up(handle, now, out) {
            Some(Transmit::Client { len, .. }) => Verdict::Reply(len),
            _ => Verdict::Drop(DropReason::NoBufferSpace),
        }
    }

    /// A client over its share: a fast SERVFAIL or REFUSED, or a counted
    /// drop, as configured.
    #[cold]
    fn over_limit(&mut self, why: Refusal, a: &Asked<'_>, out: &mut [u8]) -> Verdict {
        match why {
            Refusal::Pending => self.stats.limited_pending.inc(),
            Refusal::Rate => self.stats.limited_rate.inc(),
        }
        let rcode = match self.over_limit {
            OverLimit::Servfail => Rcode::SERVFAIL,
            OverLimit::Refused => Rcode::REFUSED,
            OverLimit::Drop => {
                self.stats.count_drop(DropReason::OverLimit);
                return Verdict::Drop(DropReason::OverLimit);
            }
        };
        let opt = a.edns.map(|_| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: a.key_flags.0 & KeyFlags::DO != 0 });
        let q = reply::QuestionParts { name: a.qname, qtype: a.qtype, qclass: a.qclass };
        match reply::error(out, &q, a.id, a.flags, rcode, opt) {
            Some(len) => {
                self.count_reply(out);
                Verdict::Reply(len)
            }
            None => {
                self.stats.count_drop(DropReason::NoBufferSpace);
                Verdict::Drop(DropReason::NoBufferSpace)
            }
        }
    }

    pub(super) fn find_in_flight(&self, hash: u64, qname: &[u8], qtype: Rtype, qclass: Class, key_flags: KeyFlags) -> Option<Handle> {
        let pending = &self.pending;
        self.in_flight.find(hash, |&h| pending.get(h).is_some_and(|u| u.same_question(qname, qtype, qclass, key_flags))).copied()
    }

    /// Makes `h` the leader identical questions wait on (unless one is
    /// already indexed, which only a hash collision allows).
    pub(super) fn index_in_flight(&mut self, h: Handle) {
        if !self.coalesce {
            return;
        }
        let Some(u) = self.pending.get(h).copied() else { return };
        if self.find_in_flight(u.key_hash, u.qname(), u.qtype, u.qclass, u.key_flags).is_some()
            || self.in_flight.len() >= self.pending.capacity()
        {
            return;
        }
        let pending = &self.pending;
        self.in_flight.insert_unique(u.key_hash, h, |x| pending.get(*x).map_or(0, |u| u.key_hash));
        if let Some(u) = self.pending.get_mut(h) {
            u.indexed = true;
        }
    }

    /// Ends `h`: out of the index, its client's share given back, its slot
    /// freed. Its followers are the caller's business.
    pub(super) fn release(&mut self, h: Handle) {
        let Some(u) = self.pending.get(h).copied() else { return };
        if u.indexed {
            if let Ok(e) = self.in_flight.find_entry(u.key_hash, |&x| x == h) {
                e.remove();
            }
        }
        self.clients.release(u.client_slot);
        self.pending.remove(h);
    }

    /// Queues one action per follower of `u`.
    pub(super) fn queue_followers(&mut self, u: &Upstream, make: impl Fn(Handle) -> Action) {
        let mut next = u.waiters;
        while let Some(f) = next {
            next = self.pending.get(f).and_then(|w| w.waiters);
            self.actions.push_back(make(f));
        }
    }

    /// The full parse, for queries off the fast path: either what the
    /// engine needs from the query, or the error rcode to reply with (and
    /// the message, when readable, to echo its question and OPT).
    #[cold]
    pub(super) fn check_slow(&self, query: &[u8], h: &Header<&[u8]>, allowed: bool) -> Result<QuickQuery, (Option<Message>, Rcode)> {
        let st = &*self.stats;
        let parsed = Message::parse(query);
        let rcode = match &parsed {
            _ if !allowed => Rcode::REFUSED,
            _ if h.opcode() != Opcode::QUERY => Rcode::NOTIMP,
            Err(MessageError::QuestionCount | MessageError::Malformed(_)) => Rcode::FORMERR,
            Ok(m) if m.edns().is_some_and(|e| e.version != 0) => Rcode::BADVERS,
            Ok(m) if m.question.name.is_compressed() => Rcode::FORMERR,
            Ok(_) => Rcode::NOERROR,
        };
        match parsed {
            Ok(m) if rcode == Rcode::NOERROR => Ok(QuickQuery {
                qname_end: m.question.name.end(),
                qtype: m.question.qtype,
                qclass: m.question.qclass,
                edns: m.edns().map(|e| QuickEdns { udp_size: e.udp_size, version: e.version, dnssec_ok: e.dnssec_ok() }),
            }),
            other => {
                match rcode {
                    Rcode::REFUSED => st.refused_acl.inc(),
                    Rcode::NOTIMP => st.notimp.inc(),
                    Rcode::BADVERS => st.badvers.inc(),
                    _ => st.formerr.inc(),
                }
                Err((other.ok(), rcode))
            }
        }
    }

    pub(super) fn empty_reply(&self, query: &[u8], msg: Option<&Message>, rcode: Rcode, tc: bool, out: &mut [u8]) -> Verdict {
        let opt = msg.and_then(|m| m.edns()).map(|e| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: e.dnssec_ok() });
        match crate::wire::write_empty_reply(query, msg.map(|m| &m.question), opt, rcode, out) {
            Ok(len) => {
                if tc {
                    out[2] |= (flags::TC >> 8) as u8;
                }
                self.stats.rcodes[rcode.0.min(16) as usize].inc();
                Verdict::Reply(len)
            }
            Err(_) => {
                self.stats.count_drop(DropReason::NoBufferSpace);
                Verdict::Drop(DropReason::NoBufferSpace)
            }
        }
    }

    pub(super) fn start_refresh(&mut self, now: Timestamp, qname: &[u8], qtype: Rtype, qclass: Class, key_flags: KeyFlags) {
        let Some(key_hash) = self.cache.key(qname, qtype, qclass, key_flags).map(|k| k.hash()) else { return };
        if self.coalesce && self.find_in_flight(key_hash, qname, qtype, qclass, key_flags).is_some() {
            return; // already being asked
        }
        let fill = |u: &mut Upstream| {
            *u = Upstream {
                purpose: Purpose::Refresh,
                client_flags: flags::RD,
                key_flags,
                qlen: qname.len() as u8,
                qtype,
                qclass,
                first_sent: now,
                key_hash,
                ..Upstream::default()
            };
            u.qname[..qname.len()].copy_from_slice(qname);
        };
        let handle = self.pending.insert(fill);
        let backend = self.pool.select(now, TriedSet::EMPTY);
        match (handle, backend) {
            (Some(h), Some(b)) if self.actions.len() < self.actions.capacity() => {
                if let Some(u) = self.pending.get_mut(h) {
                    u.next = b;
                }
                self.index_in_flight(h);
                self.actions.push_back(Action::Send(h));
            }
            (h, _) => {
                if let Some(h) = h {
                    self.pending.remove(h);
                }
                if let Some(key) = self.cache.key(qname, qtype, qclass, key_flags) {
                    self.cache.refresh_failed(&key);
                }
            }
        }
    }
}

/// What the engine keeps of a client's query on a miss.
struct Asked<'a> {
    id: u16,
    flags: u16,
    edns: Option<u16>,
    key_flags: KeyFlags,
    qname: &'a [u8],
    qtype: Rtype,
    qclass: Class,
}
