//! Services and records as they are written in the records file, kept in
//! the state file and sent to the API, and their validation into the types
//! of `kdns_core::records`. Every error names the key at fault.
//!
//! The DNS rules (a label is at most 63 bytes, a name 255, a TXT string
//! 255) are kdns-core's constants; what is checked here on top is what the
//! API accepts of a user (a service label's characters, TTL, ports, check
//! bounds), each rule in one function.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kdns_core::records::{Mode, StaticData, StaticRecord, MAX_TXT_STRING};
use kdns_core::wire::{encode_name, MAX_LABEL_LEN};
use serde::{Deserialize, Serialize};

use crate::error::FieldError;

/// Longest TTL accepted (RFC 2181: 2^31 - 1).
pub const MAX_TTL: u32 = i32::MAX as u32;

/// How a service name is answered, as written (`kdns-ctl service add
/// --mode` takes the same words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum ModeName {
    /// Every healthy instance, the order rotated from answer to answer
    #[default]
    All,
    /// One healthy instance at random
    RandomOne,
    /// The same instance for the same client while it stays healthy
    Sticky,
}

impl ModeName {
    /// Its name in the API (`random-one`).
    pub fn name(self) -> &'static str {
        match self {
            ModeName::All => "all",
            ModeName::RandomOne => "random-one",
            ModeName::Sticky => "sticky",
        }
    }
}

impl From<ModeName> for Mode {
    fn from(m: ModeName) -> Mode {
        match m {
            ModeName::All => Mode::All,
            ModeName::RandomOne => Mode::RandomOne,
            ModeName::Sticky => Mode::Sticky,
        }
    }
}

/// An SRV port: `_<name>._<proto>.<service>.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortDef {
    /// `http` (without the underscore).
    pub name: String,
    /// `tcp` (default) or `udp`.
    #[serde(default = "tcp")]
    pub proto: String,
    /// The port.
    pub port: u16,
}

fn tcp() -> String {
    "tcp".into()
}

/// What a health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect to the instance's address and `port`.
    Tcp,
    /// A DNS query (`name`, type A) over UDP to the address and `port`
    /// (53); any answer counts.
    Dns,
}

/// A health check as written; defaults filled in by [`check_spec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDef {
    /// `tcp` or `dns`.
    pub kind: CheckKind,
    /// Port (tcp: default the service's first SRV port; dns: 53).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The name a `dns` check asks for (default: the service name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Time between the starts of two checks.
    #[serde(default = "interval_ms")]
    pub interval_ms: u64,
    /// A check not done by then failed.
    #[serde(default = "timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive passes that bring a down instance back.
    #[serde(default = "two")]
    pub rise: u32,
    /// Consecutive failures that take an instance out of the answers.
    #[serde(default = "two")]
    pub fall: u32,
}

fn interval_ms() -> u64 {
    1000
}
fn timeout_ms() -> u64 {
    500
}
fn two() -> u32 {
    2
}

/// A validated health check with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSpec {
    /// `tcp` or `dns`.
    pub kind: CheckKind,
    /// Port checked.
    pub port: u16,
    /// The name asked (dns checks); the service name otherwise unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Time between the starts of two checks (ms).
    pub interval_ms: u64,
    /// Time allowed per check (ms).
    pub timeout_ms: u64,
    /// Passes to come back.
    pub rise: u32,
    /// Failures to leave.
    pub fall: u32,
}

/// One instance as written: an id and its addresses (text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceDef {
    /// A stable identifier (container id or name), unique in its service.
    pub id: String,
    /// Its addresses.
    pub addrs: Vec<String>,
}

/// A service as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// The service label (`web`).
    pub name: String,
    /// `all` (default), `random-one` or `sticky`.
    #[serde(default)]
    pub mode: ModeName,
    /// TTL of its answers (default: the default TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// SRV ports.
    #[serde(default)]
    pub ports: Vec<PortDef>,
    /// Health check (none: healthy unless forced down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckDef>,
    /// Instances, oldest first.
    #[serde(default)]
    pub instances: Vec<InstanceDef>,
}

/// Record data: one string, or a list (TXT only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordData {
    /// `"10.5.0.1"`, `"0 10 5432 db-1.kdns"`, `"v=1"`.
    One(String),
    /// TXT strings.
    Many(Vec<String>),
}

/// A static record as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordDef {
    /// Owner name, fully qualified (`db.kdns`).
    pub name: String,
    /// A, AAAA, CNAME, TXT, SRV or PTR.
    #[serde(rename = "type")]
    pub rtype: String,
    /// The data (see [`RecordData`]).
    pub data: RecordData,
    /// TTL (default: the default TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

/// The record types accepted.
pub const RECORD_TYPES: [&str; 6] = ["A", "AAAA", "CNAME", "TXT", "SRV", "PTR"];

/// A service label: letters, digits, `-` and `_`, 1 to 63 bytes, starting
/// and ending with a letter or digit. Returned lower-case.
pub fn service_name(name: &str) -> Result<String, FieldError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !ok {
        return Err(FieldError::new(
            "name",
            format!("'{name}' is not a service name (one DNS label: letters, digits, '-' and '_', 1 to 63 characters)"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// A domain name (`kdns`, `svc.cluster.local`), returned lower-case without
/// the trailing dot.
pub fn domain_name(text: &str) -> Result<String, String> {
    let t = text.trim_end_matches('.').to_ascii_lowercase();
    let mut b = [0u8; 256];
    if t.is_empty() || encode_name(&t, &mut b).is_err() {
        return Err(format!("'{text}' is not a domain name"));
    }
    Ok(t)
}

/// The label of an SRV port (`http`, `_http`: the underscore is added on
/// the wire): letters, digits and `-`, at most 62 bytes so that `_<label>`
/// is one DNS label. Returned lower-case without the underscore.
pub fn srv_label(text: &str) -> Option<String> {
    let n = text.strip_prefix('_').unwrap_or(text).to_ascii_lowercase();
    let ok = !n.is_empty() && n.len() < MAX_LABEL_LEN && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(n)
}

/// The protocol of an SRV port: `tcp` or `udp` (any case, `_tcp` too).
/// Returned lower-case without the underscore.
pub fn srv_proto(text: &str) -> Result<String, String> {
    let p = text.strip_prefix('_').unwrap_or(text).to_ascii_lowercase();
    if p == "tcp" || p == "udp" {
        Ok(p)
    } else {
        Err(p)
    }
}

fn ttl(v: Option<u32>) -> Result<Option<u32>, FieldError> {
    match v {
        Some(t) if t > MAX_TTL => Err(FieldError::new("ttl", format!("{t}: at most {MAX_TTL}"))),
        _ => Ok(v),
    }
}

/// An instance's addresses.
pub fn instance_addrs(inst: &InstanceDef) -> Result<Vec<IpAddr>, FieldError> {
    if inst.id.is_empty() || inst.id.len() > 253 || inst.id.chars().any(|c| c.is_control() || c == '/') {
        return Err(FieldError::new("id", format!("{:?}: 1 to 253 characters, no '/' or control characters", inst.id)));
    }
    if inst.addrs.is_empty() {
        return Err(FieldError::new("addrs", "at least one address is needed"));
    }
    let mut out = Vec::with_capacity(inst.addrs.len());
    for (i, a) in inst.addrs.iter().enumerate() {
        let ip: IpAddr = a.trim().parse().map_err(|_| FieldError::new(format!("addrs[{i}]"), format!("'{a}' is not an IP address")))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// The service's health check with defaults filled in, if it has one.
pub fn check_spec(def: &ServiceDef) -> Result<Option<CheckSpec>, FieldError> {
    let Some(c) = &def.check else { return Ok(None) };
    let port = match (c.kind, c.port) {
        (_, Some(0)) => return Err(FieldError::new("check.port", "0 is not a port")),
        (_, Some(p)) => p,
        (CheckKind::Dns, None) => 53,
        (CheckKind::Tcp, None) => def
            .ports
            .first()
            .map(|p| p.port)
            .ok_or_else(|| FieldError::new("check.port", "required for a tcp check when the service has no ports"))?,
    };
    let name = match c.kind {
        CheckKind::Tcp => None,
        CheckKind::Dns => {
            let n = c.name.clone().unwrap_or_else(|| def.name.to_ascii_lowercase());
            let mut b = [0u8; 256];
            if encode_name(&n, &mut b).is_err() {
                return Err(FieldError::new("check.name", format!("'{n}' is not a domain name")));
            }
            Some(n)
        }
    };
    if !(50..=3_600_000).contains(&c.interval_ms) {
        return Err(FieldError::new("check.interval_ms", format!("{}: must be 50..=3600000", c.interval_ms)));
    }
    if c.timeout_ms < 10 || c.timeout_ms > c.interval_ms {
        return Err(FieldError::new(
            "check.timeout_ms",
            format!("{}: must be at least 10 and at most interval_ms ({})", c.timeout_ms, c.interval_ms),
        ));
    }
    if !(1..=100).contains(&c.rise) {
        return Err(FieldError::new("check.rise", format!("{}: must be 1..=100", c.rise)));
    }
    if !(1..=100).contains(&c.fall) {
        return Err(FieldError::new("check.fall", format!("{}: must be 1..=100", c.fall)));
    }
    Ok(Some(CheckSpec { kind: c.kind, port, name, interval_ms: c.interval_ms, timeout_ms: c.timeout_ms, rise: c.rise, fall: c.fall }))
}

/// Checks a service (name, ports, check, instances with unique ids) and
/// returns it normalised (lower-case name).
pub fn service(def: &ServiceDef) -> Result<ServiceDef, FieldError> {
    let mut d = def.clone();
    d.name = service_name(&def.name)?;
    ttl(def.ttl)?;
    let mut seen = HashSet::new();
    for (i, p) in d.ports.iter_mut().enumerate() {
        let key = |k: &str| format!("ports[{i}].{k}");
        p.name = srv_label(&p.name)
            .ok_or_else(|| FieldError::new(key("name"), format!("'{}' is not an SRV service label (letters, digits, '-')", p.name)))?;
        p.proto = srv_proto(&p.proto).map_err(|p| FieldError::new(key("proto"), format!("'{p}': expected tcp or udp")))?;
        if p.port == 0 {
            return Err(FieldError::new(key("port"), "0 is not a port"));
        }
        if !seen.insert((p.name.clone(), p.proto.clone())) {
            return Err(FieldError::new(key("name"), format!("_{}._{} is listed twice", p.name, p.proto)));
        }
    }
    check_spec(&d)?;
    let mut ids = HashSet::new();
    for (i, inst) in d.instances.iter().enumerate() {
        instance_addrs(inst).map_err(|e| e.under(&format!("instances[{i}]")))?;
        if !ids.insert(inst.id.as_str()) {
            return Err(FieldError::new(format!("instances[{i}].id"), format!("'{}' is used twice in service '{}'", inst.id, d.name)));
        }
    }
    Ok(d)
}

fn one<'a>(def: &'a RecordDef, what: &str) -> Result<&'a str, FieldError> {
    match &def.data {
        RecordData::One(s) => Ok(s.trim()),
        RecordData::Many(_) => Err(FieldError::new("data", format!("a list is only allowed for TXT; {} takes {what}", def.rtype))),
    }
}

fn target(s: &str) -> Result<String, FieldError> {
    domain_name(s).map_err(|e| FieldError::new("data", e))
}

/// A static record's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Alias.
    Cname,
    /// Text strings.
    Txt,
    /// Service location.
    Srv,
    /// Pointer.
    Ptr,
}

impl RecordType {
    /// Every type, in the order of [`RECORD_TYPES`].
    pub const ALL: [RecordType; 6] =
        [RecordType::A, RecordType::Aaaa, RecordType::Cname, RecordType::Txt, RecordType::Srv, RecordType::Ptr];

    /// Its name (`AAAA`).
    pub fn name(self) -> &'static str {
        RECORD_TYPES[self as usize]
    }

    /// The type named `text` (any case).
    pub fn parse(text: &str) -> Result<RecordType, FieldError> {
        let t = text.to_ascii_uppercase();
        match RecordType::ALL.into_iter().find(|r| r.name() == t) {
            Some(r) => Ok(r),
            None => Err(FieldError::new("type", format!("'{t}': expected one of {}", RECORD_TYPES.join(", ")))),
        }
    }
}

/// Checks a static record and returns it normalised (lower-case name
/// without the trailing dot, upper-case type) with its core form.
pub fn record(def: &RecordDef) -> Result<(RecordDef, StaticRecord), FieldError> {
    let name = domain_name(&def.name).map_err(|e| FieldError::new("name", e))?;
    ttl(def.ttl)?;
    let rtype = RecordType::parse(&def.rtype)?;
    let mut d = RecordDef { name: name.clone(), rtype: rtype.name().into(), data: def.data.clone(), ttl: def.ttl };
    let data = match rtype {
        RecordType::A => {
            let s = one(&d, "an IPv4 address")?;
            StaticData::A(s.parse::<Ipv4Addr>().map_err(|_| FieldError::new("data", format!("'{s}' is not an IPv4 address")))?)
        }
        RecordType::Aaaa => {
            let s = one(&d, "an IPv6 address")?;
            StaticData::Aaaa(s.parse::<Ipv6Addr>().map_err(|_| FieldError::new("data", format!("'{s}' is not an IPv6 address")))?)
        }
        RecordType::Cname => StaticData::Cname(target(one(&d, "a name")?)?),
        RecordType::Ptr => StaticData::Ptr(target(one(&d, "a name")?)?),
        RecordType::Txt => {
            let v = match &d.data {
                RecordData::One(s) => vec![s.clone()],
                RecordData::Many(v) => v.clone(),
            };
            if v.is_empty() {
                return Err(FieldError::new("data", "a TXT record needs at least one string"));
            }
            if let Some(i) = v.iter().position(|s| s.len() > MAX_TXT_STRING) {
                return Err(FieldError::new(format!("data[{i}]"), format!("a TXT string is longer than {MAX_TXT_STRING} bytes")));
            }
            StaticData::Txt(v)
        }
        RecordType::Srv => {
            let s = one(&d, "\"priority weight port target\"")?;
            let parts: Vec<&str> = s.split_whitespace().collect();
            let bad = || FieldError::new("data", format!("'{s}' is not \"priority weight port target\" (e.g. \"0 10 5432 db-1.kdns\")"));
            let [p, w, port, t] = parts[..] else { return Err(bad()) };
            let (Ok(priority), Ok(weight), Ok(port)) = (p.parse::<u16>(), w.parse::<u16>(), port.parse::<u16>()) else {
                return Err(bad());
            };
            let target = target(t)?;
            d.data = RecordData::One(format!("{priority} {weight} {port} {target}"));
            StaticData::Srv { priority, weight, port, target }
        }
    };
    Ok((d, StaticRecord { name, ttl: def.ttl, data }))
}

#[cfg(test)]
mod tests;
