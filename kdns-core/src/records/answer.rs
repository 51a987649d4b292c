//! Answering a query from a [`Snapshot`].

use core::cell::Cell;
use core::net::IpAddr;

use super::build::is_under;
use super::{Entry, Mode, Snapshot};
use crate::wire::{flags, Class, MessageBuilder, OptSpec, Rcode, Rtype, Section, HEADER_LEN, MAX_NAME_LEN, OPT_LEN};

/// A query as the engine hands it to the local records.
#[derive(Debug, Clone, Copy)]
pub struct LocalQuery<'a> {
    /// The question name as the client wrote it (wire form, at offset 12).
    pub qname: &'a [u8],
    /// QTYPE.
    pub qtype: Rtype,
    /// QCLASS.
    pub qclass: Class,
    /// The query's ID.
    pub id: u16,
    /// The query's header flags (RD and CD are echoed).
    pub flags: u16,
    /// Our OPT, when the client sent one.
    pub opt: Option<OptSpec>,
    /// The client's address (for sticky answers).
    pub client: IpAddr,
    /// Largest reply allowed.
    pub limit: usize,
    /// Varies per answer: rotates "all" answers.
    pub rotate: u32,
    /// A random value: picks "random-one" answers.
    pub random: u64,
}

/// What the local records made of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAnswer {
    /// Not a local name: go on (cache, backends).
    NotLocal,
    /// An answer of this length is in the output buffer, with this rcode;
    /// the flag says whether it is fixed: the same bytes for any client
    /// and any later query until the records change (no rotation, random
    /// or sticky choice among several instances was made), which the
    /// in-kernel tier can then hold.
    Reply(usize, Rcode, bool),
}

/// Most CNAME hops followed inside our domains.
const MAX_CHAIN: usize = 8;

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn ip_key(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let x = u128::from(a);
            (x as u64) ^ mix((x >> 64) as u64)
        }
    }
}

impl Snapshot {
    /// Answers `q` into `out` if its name is local. Never allocates.
    pub fn answer(&self, q: &LocalQuery<'_>, out: &mut [u8]) -> LocalAnswer {
        if self.is_empty() || q.qname.len() > MAX_NAME_LEN {
            return LocalAnswer::NotLocal;
        }
        // Cheap rejection first: most queries are for other names.
        let n = q.qname.len();
        let dom = self.domains.iter().position(|d| is_under(q.qname, d));
        let bare = dom.is_none() && !self.domains.is_empty() && q.qname.first().is_some_and(|&l| l > 0 && 1 + l as usize + 1 == n);
        let ptr = dom.is_none() && !bare && self.has_ptr && q.qtype == Rtype::PTR;
        if dom.is_none() && !bare && !ptr {
            return LocalAnswer::NotLocal;
        }
        let mut buf = [0u8; 2 * MAX_NAME_LEN];
        for (o, b) in buf.iter_mut().zip(q.qname) {
            *o = b.to_ascii_lowercase();
        }
        // Which domain, and the full name to look up.
        let (full_len, dom) = match dom {
            Some(i) => (n, Some(i)),
            None if bare => {
                // A bare single label: looked up under the first domain, and
                // local only if it names something there (`com`, `localhost`
                // and other single labels still go to the backends).
                let d = &self.domains[self.first];
                if n - 1 + d.len() > MAX_NAME_LEN {
                    return LocalAnswer::NotLocal;
                }
                buf[n - 1..n - 1 + d.len()].copy_from_slice(d);
                if !self.names.contains_key(&buf[..n - 1 + d.len()]) {
                    return LocalAnswer::NotLocal;
                }
                (n - 1 + d.len(), Some(self.first))
            }
            None if self.names.contains_key(&buf[..n]) => (n, None),
            None => return LocalAnswer::NotLocal,
        };
        let full = &buf[..full_len];
        if q.qclass != Class::IN && q.qclass != Class::ANY {
            return self.write(q, out, Rcode::REFUSED, dom, |_| Ok(0));
        }
        let Some(entry) = self.names.get(full) else {
            if self.ents.contains(full) {
                // The apex (its SOA when asked) or an empty non-terminal: NODATA.
                let apex = dom.filter(|&d| *self.domains[d] == *full);
                return self.write(q, out, Rcode::NOERROR, dom, |b| match apex {
                    Some(d) if q.qtype == Rtype::SOA || q.qtype == Rtype::ANY => {
                        let _ = b.record_at(Section::Answer, 12, Rtype::SOA, Class::IN, self.soa_ttl, &self.soas[d]);
                        Ok(1)
                    }
                    _ => Ok(0),
                });
            }
            return self.write(q, out, Rcode::NXDOMAIN, dom, |_| Ok(0));
        };
        // Only records can depend on the query (a choice among instances).
        let varies = Cell::new(false);
        match self.write(q, out, Rcode::NOERROR, dom, |b| self.fill(q, entry, b, &varies)) {
            LocalAnswer::Reply(len, rcode, fixed) => LocalAnswer::Reply(len, rcode, fixed && !varies.get()),
            other => other,
        }
    }

    /// Writes header, question, the records `fill` adds (it returns how
    /// many), the SOA when there are none, and the OPT. The reply is fixed
    /// unless truncated; the caller knows whether `fill` chose.
    fn write(
        &self,
        q: &LocalQuery<'_>,
        out: &mut [u8],
        rcode: Rcode,
        dom: Option<usize>,
        fill: impl Fn(&mut MessageBuilder<'_>) -> Result<usize, ()>,
    ) -> LocalAnswer {
        let build = |out: &mut [u8], with_records: bool| -> Option<(usize, bool)> {
            let mut b = MessageBuilder::new(out, q.limit).ok()?;
            {
                let mut h = b.header();
                h.set_id(q.id);
                h.set_flags(flags::QR | flags::AA | flags::RA | (q.flags & (flags::RD | flags::CD)));
                h.set_rcode(rcode);
            }
            b.question(q.qname, q.qtype, q.qclass).ok()?;
            if q.opt.is_some() {
                b.reserve(OPT_LEN).ok()?;
            }
            let mut n = 0;
            if with_records {
                n = fill(&mut b).ok()?;
                if n == 0 {
                    if let Some(d) = dom {
                        let owner = self.owner_of(q, d);
                        let _ = match owner {
                            Ok(ptr) => b.record_at(Section::Authority, ptr, Rtype::SOA, Class::IN, self.soa_ttl, &self.soas[d]),
                            Err(()) => b.record(Section::Authority, &self.domains[d], Rtype::SOA, Class::IN, self.soa_ttl, &self.soas[d]),
                        };
                    }
                }
            }
            let truncated = b.truncated();
            if let Some(o) = q.opt {
                b.opt(o).ok()?;
            }
            let _ = n;
            Some((b.finish(), truncated))
        };
        match build(out, true) {
            Some((len, false)) => LocalAnswer::Reply(len, rcode, true),
            // Did not fit: an empty reply with TC, so the client asks over TCP.
            _ => match build(out, false) {
                Some((len, _)) => {
                    out[2] |= (flags::TC >> 8) as u8;
                    LocalAnswer::Reply(len, rcode, false)
                }
                None => LocalAnswer::NotLocal,
            },
        }
    }

    /// A compression pointer to domain `d` inside the question name, if
    /// the question name ends with it (it does unless the name was bare).
    fn owner_of(&self, q: &LocalQuery<'_>, d: usize) -> Result<u16, ()> {
        let dl = self.domains[d].len();
        if q.qname.len() >= dl
            && q.qname[q.qname.len() - dl..].eq_ignore_ascii_case(&self.domains[d])
            && is_under(q.qname, &self.domains[d])
        {
            Ok((HEADER_LEN + q.qname.len() - dl) as u16)
        } else {
            Err(())
        }
    }

    /// Adds the answer records for `entry`; returns how many.
    fn fill(&self, q: &LocalQuery<'_>, entry: &Entry, b: &mut MessageBuilder<'_>, varies: &Cell<bool>) -> Result<usize, ()> {
        match entry {
            Entry::Service(si) => Ok(self.addresses(q, *si, None, 12, &[], b, varies)),
            Entry::Instance(si, k) => Ok(self.addresses(q, *si, Some(*k), 12, &[], b, varies)),
            Entry::Fixed(rrs) => {
                let mut n = 0;
                for rr in rrs.iter().filter(|r| q.qtype == Rtype::ANY || r.rtype == q.qtype.0) {
                    let _ = b.record_at(Section::Answer, 12, Rtype(rr.rtype), Class::IN, rr.ttl, &rr.rdata);
                    n += 1;
                }
                if n == 0 {
                    if let Some(c) = rrs.iter().find(|r| r.rtype == Rtype::CNAME.0) {
                        let _ = b.record_at(Section::Answer, 12, Rtype::CNAME, Class::IN, c.ttl, &c.rdata);
                        n += 1 + self.follow(q, &c.rdata, b, varies);
                    }
                }
                Ok(n)
            }
        }
    }

    /// Follows a CNAME chain inside our domains, adding the target's records.
    fn follow(&self, q: &LocalQuery<'_>, first: &[u8], b: &mut MessageBuilder<'_>, varies: &Cell<bool>) -> usize {
        let mut target: &[u8] = first;
        let mut n = 0;
        for _ in 0..MAX_CHAIN {
            if !self.domains.iter().any(|d| is_under(target, d)) {
                break;
            }
            match self.names.get(target) {
                Some(Entry::Service(si)) => return n + self.addresses(q, *si, None, 0, target, b, varies),
                Some(Entry::Instance(si, k)) => return n + self.addresses(q, *si, Some(*k), 0, target, b, varies),
                Some(Entry::Fixed(rrs)) => {
                    let mut found = 0;
                    for rr in rrs.iter().filter(|r| q.qtype == Rtype::ANY || r.rtype == q.qtype.0) {
                        let _ = b.record(Section::Answer, target, Rtype(rr.rtype), Class::IN, rr.ttl, &rr.rdata);
                        found += 1;
                    }
                    if found > 0 {
                        return n + found;
                    }
                    match rrs.iter().find(|r| r.rtype == Rtype::CNAME.0) {
                        Some(c) => {
                            let _ = b.record(Section::Answer, target, Rtype::CNAME, Class::IN, c.ttl, &c.rdata);
                            n += 1;
                            target = &c.rdata;
                        }
                        None => break,
                    }
                }
                None => break,
            }
        }
        n
    }

    /// A/AAAA of service `si` (or of its instance `k`), in the service's
    /// mode. The owner is a pointer to `ptr` when `owner` is empty. Sets
    /// `varies` when the answer depends on the query (a choice or an order
    /// among several instances).
    #[allow(clippy::too_many_arguments)]
    fn addresses(
        &self,
        q: &LocalQuery<'_>,
        si: usize,
        k: Option<usize>,
        ptr: u16,
        owner: &[u8],
        b: &mut MessageBuilder<'_>,
        varies: &Cell<bool>,
    ) -> usize {
        let s = &self.services[si];
        let want = |ip: &IpAddr| match q.qtype {
            Rtype::A => ip.is_ipv4(),
            Rtype::AAAA => ip.is_ipv6(),
            Rtype::ANY => true,
            _ => false,
        };
        let mut put = |ip: &IpAddr| {
            let (v4, v6);
            let (t, data): (Rtype, &[u8]) = match ip {
                IpAddr::V4(a) => {
                    v4 = a.octets();
                    (Rtype::A, &v4)
                }
                IpAddr::V6(a) => {
                    v6 = a.octets();
                    (Rtype::AAAA, &v6)
                }
            };
            let _ = if owner.is_empty() {
                b.record_at(Section::Answer, ptr, t, Class::IN, s.ttl, data)
            } else {
                b.record(Section::Answer, owner, t, Class::IN, s.ttl, data)
            };
        };
        if let Some(k) = k {
            let Some((true, addrs)) = s.instances.get(k) else { return 0 };
            let mut n = 0;
            for ip in addrs.iter().filter(|ip| want(ip)) {
                put(ip);
                n += 1;
            }
            return n;
        }
        let healthy = s.instances.iter().enumerate().filter(|(_, (h, a))| *h && a.iter().any(want));
        let count = healthy.clone().count();
        if count == 0 {
            return 0;
        }
        if count > 1 {
            varies.set(true);
        }
        let chosen: Option<usize> = match s.mode {
            Mode::All => None,
            Mode::RandomOne => healthy.clone().nth((q.random % count as u64) as usize).map(|(i, _)| i),
            Mode::Sticky => {
                let c = ip_key(q.client);
                healthy.clone().max_by_key(|(i, _)| mix(c ^ s.keys[*i])).map(|(i, _)| i)
            }
        };
        let mut n = 0;
        match chosen {
            Some(i) => {
                for ip in s.instances[i].1.iter().filter(|ip| want(ip)) {
                    put(ip);
                    n += 1;
                }
            }
            None => {
                let start = q.rotate as usize % count;
                for (_, (_, addrs)) in healthy.clone().skip(start).chain(healthy.take(start)) {
                    for ip in addrs.iter().filter(|ip| want(ip)) {
                        put(ip);
                        n += 1;
                    }
                }
            }
        }
        n
    }
}
