//! Local records: the names of the services on this host, answered by kdns
//! itself (authoritative), from an immutable [`Snapshot`].
//!
//! The control plane builds a snapshot from a [`RecordsConfig`] (a records
//! file, `kdns-ctl`, health checks) and hands an `Arc` of it to every
//! worker; workers swap it in between two packets, so the query path reads
//! records without locks. Answers that depend on the client (rotation,
//! random choice, stickiness) are built per query and never enter the
//! answer cache.
//!
//! Names under a configured domain `D`:
//! * `web.D` — A/AAAA of every healthy instance of service `web` (order
//!   rotated per answer, one at random, or the client's sticky instance);
//! * `web-2.D` — instance 2 (1-based, by creation order);
//! * `_http._tcp.web.D` — SRV to each healthy instance's name and port;
//! * static A, AAAA, CNAME (followed inside our domains), TXT, SRV, PTR;
//! * PTR for every instance address (`in-addr.arpa` / `ip6.arpa`);
//! * a bare `web` (one label) is looked up as `web.<first domain>`;
//! * anything else under `D`: NXDOMAIN with the SOA; a known name without
//!   data of the type asked (or a service with no healthy instance): NODATA
//!   with the SOA — never a dead address.

mod answer;
mod build;

use core::net::IpAddr;
use std::collections::{HashMap, HashSet};

/// Hashing for the name maps: fixed-seed foldhash. The keys are our own
/// names; a client's query can only probe, never insert, so a secret seed
/// buys nothing here, and the fixed one keeps kdns-core free of syscalls.
pub(crate) type NameHasher = foldhash::fast::FixedState;

pub use answer::{LocalAnswer, LocalQuery};
pub use build::{instance_number, Instance, Mode, RecordsConfig, RecordsError, Service, SrvPort, StaticData, StaticRecord, MAX_TXT_STRING};

/// One resource record ready to write: type, TTL, RDATA in wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rr {
    pub rtype: u16,
    pub ttl: u32,
    pub rdata: Box<[u8]>,
}

/// What a name holds.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// A service: its index in `services`.
    Service(usize),
    /// One instance: service index, instance index.
    Instance(usize, usize),
    /// Fixed records (static records, SRV, PTR, and CNAMEs).
    Fixed(Vec<Rr>),
}

/// A compiled service.
#[derive(Debug, Clone)]
pub(crate) struct Svc {
    pub mode: Mode,
    pub ttl: u32,
    /// Instances in creation order: (healthy, addresses).
    pub instances: Vec<(bool, Vec<IpAddr>)>,
    /// A stable key per instance for sticky hashing.
    pub keys: Vec<u64>,
}

/// An immutable, compiled view of the local records.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Our domains, lower-case wire form, longest first.
    pub(crate) domains: Vec<Box<[u8]>>,
    /// SOA RDATA per domain (same order), and its TTL.
    pub(crate) soas: Vec<Box<[u8]>>,
    pub(crate) soa_ttl: u32,
    /// Lower-case wire name -> what it holds.
    pub(crate) names: HashMap<Box<[u8]>, Entry, NameHasher>,
    /// Names that exist only because names below them do (empty
    /// non-terminals, e.g. `_tcp.web.kdns`), and the domain apexes: NODATA,
    /// not NXDOMAIN (RFC 8020).
    pub(crate) ents: HashSet<Box<[u8]>, NameHasher>,
    pub(crate) services: Vec<Svc>,
    /// Serial, bumped by every change.
    pub(crate) serial: u32,
    /// Whether any PTR name exists (then `.arpa` names are looked up too).
    pub(crate) has_ptr: bool,
    /// Index in `domains` of the first configured domain (bare names go there).
    pub(crate) first: usize,
}

impl Snapshot {
    /// A snapshot with no domains: every query goes to the backends.
    pub fn empty() -> Snapshot {
        Snapshot::default()
    }

    /// Whether there is anything to answer locally.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && !self.has_ptr
    }

    /// The serial (increases with every change).
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Names held (services, instances, static and derived names).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Approximate heap bytes used (for the memory figure).
    pub fn memory(&self) -> usize {
        let names: usize = self
            .names
            .iter()
            .map(|(k, v)| {
                k.len()
                    + core::mem::size_of::<(Box<[u8]>, Entry)>()
                    + match v {
                        Entry::Fixed(rrs) => rrs.iter().map(|r| r.rdata.len() + core::mem::size_of::<Rr>()).sum(),
                        _ => 0,
                    }
            })
            .sum();
        let svcs: usize = self
            .services
            .iter()
            .map(|s| {
                core::mem::size_of::<Svc>()
                    + s.instances.iter().map(|(_, a)| 40 + a.len() * core::mem::size_of::<IpAddr>()).sum::<usize>()
                    + s.keys.len() * 8
            })
            .sum();
        names + svcs + self.names.capacity() / 8
    }
}

#[cfg(test)]
mod tests;
