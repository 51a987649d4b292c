//! From the configuration the control plane holds to a [`Snapshot`].

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::{HashMap, HashSet};

use super::{Entry, NameHasher, Rr, Snapshot, Svc};
use crate::wire::{encode_name, Rtype, MAX_LABEL_LEN, MAX_NAME_LEN};

/// Longest string of a TXT record (its length is one byte on the wire).
pub const MAX_TXT_STRING: usize = 255;

/// The number of the instance at place `k` (from 0) of its service: its
/// own `number`, else its place counted from 1 (`<service>-<number>`).
pub fn instance_number(number: Option<u32>, k: usize) -> u64 {
    number.map_or(k as u64 + 1, u64::from)
}

/// How a service name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every healthy instance, the order rotated from answer to answer.
    #[default]
    All,
    /// One healthy instance at random.
    RandomOne,
    /// The same instance for the same client address while it stays
    /// healthy (rendezvous hashing spreads clients over instances).
    Sticky,
}

/// An SRV port of a service: `_<name>._<proto>.<service>.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvPort {
    /// Service label without the underscore (`http`).
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// The port every instance serves on.
    pub port: u16,
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// A stable identifier (container id or name): keys stickiness.
    pub id: String,
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
    /// Whether it may be handed out.
    pub healthy: bool,
    /// Its number (`<name>-<number>`); `None`: its place in the list,
    /// counted from 1. Numbers must not repeat within a service.
    pub number: Option<u32>,
}

impl Instance {
    /// `<name>-<n>`: the instance's own number, or its place `k` (from 0).
    pub fn number_at(&self, k: usize) -> u64 {
        instance_number(self.number, k)
    }
}

/// A service: a name and its instances in creation order (instance `k` is
/// `<name>-<k>`, counted from 1, unless it has a number of its own).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    /// The service label (`web`).
    pub name: String,
    /// How the service name is answered.
    pub mode: Mode,
    /// TTL of its answers (default: the records' default TTL).
    pub ttl: Option<u32>,
    /// Instances, oldest first.
    pub instances: Vec<Instance>,
    /// SRV ports.
    pub ports: Vec<SrvPort>,
}

/// The data of a static record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias (followed when the target is under our domains).
    Cname(String),
    /// Text strings (each at most 255 bytes).
    Txt(Vec<String>),
    /// Service location.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Target host.
        target: String,
    },
    /// Pointer (reverse names).
    Ptr(String),
}

/// A static record: a fully qualified name under one of the domains (or an
/// `.arpa` name for PTR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRecord {
    /// Owner name.
    pub name: String,
    /// TTL (default: the records' default TTL).
    pub ttl: Option<u32>,
    /// Data.
    pub data: StaticData,
}

/// Everything the local records are made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordsConfig {
    /// Domains answered locally (`kdns`, `svc.cluster.local`).
    pub domains: Vec<String>,
    /// TTL of answers without their own (and of the SOA).
    pub default_ttl: u32,
    /// Services.
    pub services: Vec<Service>,
    /// Static records.
    pub records: Vec<StaticRecord>,
    /// Serial of the SOA; the control plane bumps it on every change.
    pub serial: u32,
}

/// Why a configuration cannot be compiled; says which name is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordsError {
    /// A name or label is not a valid domain name.
    BadName {
        /// The name.
        name: String,
    },
    /// A static record's name is under none of the domains.
    NotUnderDomain {
        /// The name.
        name: String,
    },
    /// Two things claim the same name.
    Duplicate {
        /// The name.
        name: String,
    },
    /// A CNAME shares its name with other data.
    CnameConflict {
        /// The name.
        name: String,
    },
    /// A TXT string longer than [`MAX_TXT_STRING`] bytes.
    TxtTooLong {
        /// The owner.
        name: String,
    },
}

impl fmt::Display for RecordsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordsError::BadName { name } => write!(f, "'{name}' is not a valid domain name or label"),
            RecordsError::NotUnderDomain { name } => write!(f, "'{name}' is under none of the local domains"),
            RecordsError::Duplicate { name } => {
                write!(f, "'{name}' is defined twice (services, instances and static records share one namespace)")
            }
            RecordsError::CnameConflict { name } => write!(f, "'{name}' has a CNAME and other data"),
            RecordsError::TxtTooLong { name } => write!(f, "'{name}': a TXT string is longer than 255 bytes"),
        }
    }
}

impl std::error::Error for RecordsError {}

/// Lower-case wire form of `text`.
fn wire(text: &str) -> Result<Box<[u8]>, RecordsError> {
    let mut b = [0u8; 256];
    let n = encode_name(&text.to_ascii_lowercase(), &mut b).map_err(|_| RecordsError::BadName { name: text.into() })?;
    Ok(b[..n].into())
}

/// Wire form of `label.rest` where `rest` is already wire form.
fn prefix(label: &str, rest: &[u8]) -> Result<Box<[u8]>, RecordsError> {
    let l = label.to_ascii_lowercase();
    if l.is_empty() || l.len() > MAX_LABEL_LEN || l.contains('.') || 1 + l.len() + rest.len() > MAX_NAME_LEN {
        return Err(RecordsError::BadName { name: label.into() });
    }
    let mut v = Vec::with_capacity(1 + l.len() + rest.len());
    v.push(l.len() as u8);
    v.extend_from_slice(l.as_bytes());
    v.extend_from_slice(rest);
    Ok(v.into())
}

/// Whether wire name `name` is `suffix` or under it.
pub(crate) fn is_under(name: &[u8], suffix: &[u8]) -> bool {
    if name.len() < suffix.len() {
        return false;
    }
    // Walk the labels of `name` to a boundary where the rest is as long as `suffix`.
    let mut at = 0;
    while name.len() - at > suffix.len() {
        let Some(&l) = name.get(at) else { return false };
        if l == 0 {
            return false;
        }
        at += 1 + l as usize;
    }
    name.len() - at == suffix.len() && name[at..].eq_ignore_ascii_case(suffix)
}

/// The reverse name of an address, wire form (`4.3.2.1.in-addr.arpa.`).
pub(crate) fn reverse_name(ip: IpAddr) -> Box<[u8]> {
    wire(&reverse_name_text(ip)).expect("reverse names are valid")
}

/// The reverse name of an address, presentation form.
pub(crate) fn reverse_name_text(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(72);
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

fn rdata_name(text: &str) -> Result<Vec<u8>, RecordsError> {
    Ok(wire(text)?.into_vec())
}

/// FNV-1a of a string: the stable sticky key of an instance.
fn stable_key(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl Snapshot {
    /// Compiles `cfg`. Fails with the first name at fault; the caller keeps
    /// serving its previous snapshot.
    pub fn build(cfg: &RecordsConfig) -> Result<Snapshot, RecordsError> {
        let ttl0 = if cfg.default_ttl == 0 { 10 } else { cfg.default_ttl };
        let mut domains: Vec<Box<[u8]>> = Vec::new();
        for d in &cfg.domains {
            let w = wire(d)?;
            if w.len() == 1 {
                return Err(RecordsError::BadName { name: d.clone() });
            }
            if !domains.contains(&w) {
                domains.push(w);
            }
        }
        let first = domains.first().cloned();
        // Longest first, so the most specific domain matches.
        let mut sorted = domains.clone();
        sorted.sort_by_key(|d| core::cmp::Reverse(d.len()));
        let soas = sorted
            .iter()
            .map(|d| {
                let mut r = Vec::new();
                r.extend_from_slice(&prefix("ns", d).expect("short"));
                r.extend_from_slice(&prefix("hostmaster", d).expect("short"));
                for v in [cfg.serial, 3600, 600, 86_400, ttl0] {
                    r.extend_from_slice(&v.to_be_bytes());
                }
                r.into_boxed_slice()
            })
            .collect();
        let mut names: HashMap<Box<[u8]>, Entry, NameHasher> = HashMap::with_hasher(NameHasher::with_seed(0x6b64_6e73));
        let claim =
            |names: &mut HashMap<Box<[u8]>, Entry, NameHasher>, name: Box<[u8]>, e: Entry, text: &str| -> Result<(), RecordsError> {
                if names.insert(name, e).is_some() {
                    return Err(RecordsError::Duplicate { name: text.into() });
                }
                Ok(())
            };
        let mut services = Vec::new();
        let mut has_ptr = false;
        let mut fixed: Vec<(Box<[u8]>, Rr, String)> = Vec::new();
        for (si, s) in cfg.services.iter().enumerate() {
            let ttl = s.ttl.unwrap_or(ttl0);
            for d in &domains {
                claim(&mut names, prefix(&s.name, d)?, Entry::Service(si), &s.name)?;
                for (k, inst) in s.instances.iter().enumerate() {
                    let iname = format!("{}-{}", s.name, inst.number_at(k));
                    claim(&mut names, prefix(&iname, d)?, Entry::Instance(si, k), &iname)?;
                }
                for p in &s.ports {
                    let owner = prefix(&format!("_{}", p.name), &prefix(&format!("_{}", p.proto), &prefix(&s.name, d)?)?)?;
                    for (k, inst) in s.instances.iter().enumerate() {
                        if !inst.healthy {
                            continue;
                        }
                        let mut rdata = Vec::new();
                        rdata.extend_from_slice(&0u16.to_be_bytes());
                        rdata.extend_from_slice(&10u16.to_be_bytes());
                        rdata.extend_from_slice(&p.port.to_be_bytes());
                        rdata.extend_from_slice(&prefix(&format!("{}-{}", s.name, inst.number_at(k)), d)?);
                        fixed.push((owner.clone(), Rr { rtype: Rtype::SRV.0, ttl, rdata: rdata.into() }, s.name.clone()));
                    }
                    // A port with no healthy instance still exists (NODATA, not NXDOMAIN).
                    names.entry(owner).or_insert_with(|| Entry::Fixed(Vec::new()));
                }
            }
            if let Some(d) = &first {
                for (k, inst) in s.instances.iter().enumerate() {
                    let target = prefix(&format!("{}-{}", s.name, inst.number_at(k)), d)?;
                    for ip in &inst.addrs {
                        has_ptr = true;
                        fixed.push((reverse_name(*ip), Rr { rtype: Rtype::PTR.0, ttl, rdata: target.clone() }, ip.to_string()));
                    }
                }
            }
            services.push(Svc {
                mode: s.mode,
                ttl,
                instances: s.instances.iter().map(|i| (i.healthy, i.addrs.clone())).collect(),
                keys: s.instances.iter().map(|i| stable_key(&i.id)).collect(),
            });
        }
        for r in &cfg.records {
            let owner = wire(&r.name)?;
            let is_arpa = is_under(&owner, &wire("arpa").expect("literal"));
            if !is_arpa && !domains.iter().any(|d| is_under(&owner, d)) {
                return Err(RecordsError::NotUnderDomain { name: r.name.clone() });
            }
            let ttl = r.ttl.unwrap_or(ttl0);
            let (rtype, rdata) = match &r.data {
                StaticData::A(a) => (Rtype::A, a.octets().to_vec()),
                StaticData::Aaaa(a) => (Rtype::AAAA, a.octets().to_vec()),
                StaticData::Cname(t) => (Rtype::CNAME, rdata_name(t)?),
                StaticData::Ptr(t) => {
                    has_ptr |= is_arpa;
                    (Rtype::PTR, rdata_name(t)?)
                }
                StaticData::Txt(strings) => {
                    let mut v = Vec::new();
                    for s in strings {
                        if s.len() > MAX_TXT_STRING {
                            return Err(RecordsError::TxtTooLong { name: r.name.clone() });
                        }
                        v.push(s.len() as u8);
                        v.extend_from_slice(s.as_bytes());
                    }
                    (Rtype::TXT, v)
                }
                StaticData::Srv { priority, weight, port, target } => {
                    let mut v = Vec::new();
                    v.extend_from_slice(&priority.to_be_bytes());
                    v.extend_from_slice(&weight.to_be_bytes());
                    v.extend_from_slice(&port.to_be_bytes());
                    v.extend_from_slice(&rdata_name(target)?);
                    (Rtype::SRV, v)
                }
            };
            fixed.push((owner, Rr { rtype: rtype.0, ttl, rdata: rdata.into() }, r.name.clone()));
        }
        for (owner, rr, text) in fixed {
            match names.entry(owner) {
                std::collections::hash_map::Entry::Occupied(mut o) => match o.get_mut() {
                    Entry::Fixed(v) => {
                        let cname = Rtype::CNAME.0;
                        if (rr.rtype == cname && !v.is_empty()) || v.iter().any(|x| x.rtype == cname) {
                            return Err(RecordsError::CnameConflict { name: text });
                        }
                        if !v.contains(&rr) {
                            v.push(rr);
                        }
                    }
                    _ => return Err(RecordsError::Duplicate { name: text }),
                },
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Entry::Fixed(vec![rr]));
                }
            }
        }
        // The apexes and every name between an apex and a name we hold.
        let mut ents: HashSet<Box<[u8]>, NameHasher> = HashSet::with_hasher(NameHasher::with_seed(0x656e_7473));
        for d in &sorted {
            ents.insert(d.clone());
        }
        for name in names.keys() {
            let Some(d) = sorted.iter().find(|d| is_under(name, d)) else { continue };
            let mut at = 0;
            while name.len() - at > d.len() {
                at += 1 + name[at] as usize;
                if name.len() - at > d.len() {
                    ents.insert(name[at..].into());
                }
            }
        }
        ents.retain(|e| !names.contains_key(e));
        let first = first.and_then(|f| sorted.iter().position(|d| *d == f)).unwrap_or(0);
        Ok(Snapshot { domains: sorted, soas, soa_ttl: ttl0, names, ents, services, serial: cfg.serial, has_ptr, first })
    }
}
