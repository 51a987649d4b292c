//! The cluster layer without I/O: the key layout ([`Keys`]), the values
//! read from etcd decoded and checked ([`Entries`]), the layer the records
//! store merges ([`Layer`]), what this host must have in etcd ([`Export`]
//! -> [`Desired`]) and the diff that gets it there, the hosts' view, and
//! the lease ([`Lease`]: an id and a TTL, never one for the other).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use kdns_api::cluster::{HostValue, HostView, InstanceValue, RecordValue, ServiceValue};
use kdns_api::records::{self as defs, InstanceDef, RecordData, RecordDef, ServiceDef};

/// The keys under one prefix (docs/cluster.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// A key part: `/` and `%` (and anything outside printable ASCII)
/// percent-encoded, so a part never spans two levels.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'/' || b == b'%' || !(0x21..0x7f).contains(&b) {
            let _ = write!(out, "%{b:02X}");
        } else {
            out.push(b as char);
        }
    }
    out
}

/// FNV-1a of the record's data: a stable key part for one record of an
/// RRset.
fn data_hash(d: &RecordData) -> u64 {
    let text = match d {
        RecordData::One(s) => s.clone(),
        RecordData::Many(v) => v.join("\u{0}"),
    };
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Keys {
    /// Keys under `prefix` (no trailing slash).
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.trim_end_matches('/').to_string() }
    }

    /// `<prefix>/`: everything, for the read and the watch.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn host(&self, host: &str) -> String {
        format!("{}/hosts/{}", self.prefix, seg(host))
    }

    pub fn instance(&self, host: &str, service: &str, id: &str) -> String {
        format!("{}/instances/{}/{}/{}", self.prefix, seg(host), seg(service), seg(id))
    }

    pub fn service(&self, name: &str) -> String {
        format!("{}/services/{}", self.prefix, seg(name))
    }

    pub fn record(&self, r: &RecordDef) -> String {
        format!("{}/records/{}/{}/{:016x}", self.prefix, seg(&r.name), seg(&r.rtype), data_hash(&r.data))
    }
}

/// One value read from etcd, decoded and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Host(HostValue),
    Instance(InstanceValue),
    Service(ServiceValue),
    Record(RecordValue),
}

impl Entry {
    /// The host that wrote it.
    pub fn owner(&self) -> &str {
        match self {
            Entry::Host(h) => &h.host,
            Entry::Instance(i) => &i.host,
            Entry::Service(s) => &s.owner,
            Entry::Record(r) => &r.owner,
        }
    }
}

/// Decodes the value at `key`: its JSON must match the kind its key names,
/// the key must be the one the value would be written at, and the
/// definition must pass the records rules. The error says why not.
pub fn decode(keys: &Keys, key: &str, value: &[u8]) -> Result<Entry, String> {
    fn json<T: serde::de::DeserializeOwned>(v: &[u8]) -> Result<T, String> {
        serde_json::from_slice(v).map_err(|e| format!("not a valid value: {e}"))
    }
    let rest = key.strip_prefix(&keys.all()).ok_or("outside the prefix")?;
    let kind = rest.split('/').next().unwrap_or("");
    let (entry, want) = match kind {
        "hosts" => {
            let h: HostValue = json(value)?;
            let k = keys.host(&h.host);
            (Entry::Host(h), k)
        }
        "instances" => {
            let i: InstanceValue = json(value)?;
            defs::instance_addrs(&i.instance).map_err(|e| format!("instance: {e}"))?;
            let k = keys.instance(&i.host, &i.service, &i.instance.id);
            (Entry::Instance(i), k)
        }
        "services" => {
            let mut s: ServiceValue = json(value)?;
            s.service = defs::service(&s.service).map_err(|e| format!("service: {e}"))?;
            s.service.instances.clear();
            let k = keys.service(&s.service.name);
            (Entry::Service(s), k)
        }
        "records" => {
            let r: RecordValue = json(value)?;
            let (def, _) = defs::record(&r.record).map_err(|e| format!("record: {e}"))?;
            let k = keys.record(&r.record);
            (Entry::Record(RecordValue { owner: r.owner, record: def }), k)
        }
        _ => return Err(format!("unknown kind '{kind}' (this kdns knows hosts, instances, services, records)")),
    };
    if entry.owner().is_empty() {
        return Err("no host named".into());
    }
    if want != key {
        return Err(format!("the value belongs at {want}"));
    }
    Ok(entry)
}

/// What other hosts put in etcd, as the records store merges it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    /// Service definitions (without instances).
    pub services: Vec<ServiceDef>,
    /// Instances of other hosts, each with its health as its host sees it.
    pub instances: Vec<InstanceValue>,
    /// Static records.
    pub records: Vec<RecordDef>,
}

/// What this host puts in etcd: its services, records and instances.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Export {
    /// Service definitions (without instances).
    pub services: Vec<ServiceDef>,
    /// (service, instance, in the answers).
    pub instances: Vec<(String, InstanceDef, bool)>,
    /// Static records.
    pub records: Vec<RecordDef>,
}

/// The keys and values this host wants in etcd: `leased` under its lease,
/// `plain` without.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    pub leased: BTreeMap<String, String>,
    pub plain: BTreeMap<String, String>,
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `export` as keys and values (the host key is written apart, with the lease).
pub fn desired(keys: &Keys, me: &str, export: &Export) -> Desired {
    let mut d = Desired::default();
    for (svc, inst, healthy) in &export.instances {
        let v = InstanceValue { host: me.into(), service: svc.clone(), instance: inst.clone(), healthy: *healthy };
        d.leased.insert(keys.instance(me, svc, &inst.id), to_json(&v));
    }
    for s in &export.services {
        let v = ServiceValue { owner: me.into(), service: ServiceDef { instances: Vec::new(), ..s.clone() } };
        d.plain.insert(keys.service(&s.name), to_json(&v));
    }
    for r in &export.records {
        d.plain.insert(keys.record(r), to_json(&RecordValue { owner: me.into(), record: r.clone() }));
    }
    d
}

/// The writes that turn `current` into `want`: (puts, deletes).
pub fn diff(current: &BTreeMap<String, String>, want: &BTreeMap<String, String>) -> (Vec<(String, String)>, Vec<String>) {
    let puts = want.iter().filter(|(k, v)| current.get(*k) != Some(*v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let deletes = current.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
    (puts, deletes)
}

/// Every value under the prefix, decoded, with its raw text.
#[derive(Debug, Clone, Default)]
pub struct Entries {
    map: BTreeMap<String, (String, Entry)>,
    /// Values skipped (bad JSON, wrong key, rules broken), since start.
    pub skipped: u64,
}

impl Entries {
    /// Sets `key` to `value`; a value that does not decode is logged,
    /// counted and not kept (the key's previous entry goes too).
    pub fn put(&mut self, keys: &Keys, key: &str, value: &[u8]) {
        match decode(keys, key, value) {
            Ok(e) => {
                let raw = String::from_utf8_lossy(value).into_owned();
                self.map.insert(key.to_string(), (raw, e));
            }
            Err(why) => {
                self.skipped += 1;
                self.map.remove(key);
                tracing::warn!("cluster: etcd key {key} skipped: {why}");
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.map.remove(key);
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every (key, raw value), for the snapshot file.
    pub fn raw(&self) -> impl Iterator<Item = (&String, &String)> {
        self.map.iter().map(|(k, (raw, _))| (k, raw))
    }

    /// What the other hosts wrote.
    pub fn layer(&self, me: &str) -> Layer {
        let mut l = Layer::default();
        for (_, e) in self.map.values().filter(|(_, e)| e.owner() != me) {
            match e {
                Entry::Host(_) => {}
                Entry::Instance(i) => l.instances.push(i.clone()),
                Entry::Service(s) => l.services.push(s.service.clone()),
                Entry::Record(r) => l.records.push(r.record.clone()),
            }
        }
        l
    }

    /// This host's keys and raw values in etcd: (instances, services and records).
    pub fn own(&self, me: &str) -> Desired {
        let mut d = Desired::default();
        for (k, (raw, e)) in self.map.iter().filter(|(_, (_, e))| e.owner() == me) {
            match e {
                Entry::Host(_) => {}
                Entry::Instance(_) => {
                    d.leased.insert(k.clone(), raw.clone());
                }
                Entry::Service(_) | Entry::Record(_) => {
                    d.plain.insert(k.clone(), raw.clone());
                }
            }
        }
        d
    }

    /// Every host with a host key or any value, `me` first, the others
    /// by name; `now_ms` is the Unix time.
    pub fn hosts(&self, me: &str, now_ms: u64) -> Vec<HostView> {
        let mut hosts: HashMap<&str, HostView> = HashMap::new();
        let blank = |h: &str| HostView {
            host: h.to_string(),
            local: h == me,
            alive: false,
            lease_age_s: None,
            lease_ttl_s: None,
            instances: 0,
            healthy: 0,
            services: 0,
            records: 0,
        };
        hosts.insert(me, blank(me));
        for (_, e) in self.map.values() {
            let v = hosts.entry(e.owner()).or_insert_with(|| blank(e.owner()));
            match e {
                Entry::Host(h) => {
                    v.alive = true;
                    v.lease_age_s = Some(now_ms.saturating_sub(h.granted_unix_ms) as f64 / 1000.0);
                    v.lease_ttl_s = Some(h.lease_ttl_s);
                }
                Entry::Instance(i) => {
                    v.instances += 1;
                    v.healthy += usize::from(i.healthy);
                }
                Entry::Service(_) => v.services += 1,
                Entry::Record(_) => v.records += 1,
            }
        }
        let mut out: Vec<HostView> = hosts.into_values().collect();
        out.sort_by(|a, b| b.local.cmp(&a.local).then_with(|| a.host.cmp(&b.host)));
        out
    }
}

/// A lease granted by etcd: its id (a handle for keep-alives and puts) and
/// its TTL. The two are different numbers and never stand in for each
/// other (CoreDNS's etcd plugin once used a lease id as a DNS TTL,
/// GHSA-93mf-426m-g6x9): DNS TTLs come from the records, timings from `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: Duration,
}

impl Lease {
    /// From a grant's (id, TTL in seconds).
    pub fn granted(id: i64, ttl_s: i64) -> Lease {
        Lease { id, ttl: Duration::from_secs(u64::try_from(ttl_s).unwrap_or(0).max(1)) }
    }

    /// How often it is kept alive: three times per TTL.
    pub fn keep_alive_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(300))
    }

    /// The id as shown (`/v1/cluster`).
    pub fn id_hex(&self) -> String {
        format!("{:x}", self.id)
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
