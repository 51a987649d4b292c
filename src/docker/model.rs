//! What the Docker engine says, turned into records: sans-IO, so every
//! rule (which network, which name, which number, health) is tested
//! without an engine. The driver (`super`) feeds it what it reads from the
//! API and publishes [`Model::layer`].
//!
//! A running container attached to a served network is an instance of a
//! service: its `kdns.service` label, else its compose service
//! (`com.docker.compose.service`), else its container name. Its number is
//! its compose container number (`com.docker.compose.container-number`)
//! where that is free, else the lowest free number, kept while it lives.
//! Its container name and its network aliases answer its addresses too.
//! Labels `kdns.mode`, `kdns.ttl` and `kdns.ports` set the service's
//! answers; `kdns.enable=false` leaves the container out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use kdns_api::records::{self as defs, ModeName, PortDef, ServiceDef};
use kdns_api::view::Health as Served;

/// Label: the service a container belongs to.
pub const LABEL_SERVICE: &str = "kdns.service";
/// Label: `all`, `random-one` or `sticky`.
pub const LABEL_MODE: &str = "kdns.mode";
/// Label: TTL of the service's answers, in seconds.
pub const LABEL_TTL: &str = "kdns.ttl";
/// Label: SRV ports, `name:port[/proto],...` (`http:8080/tcp,dns:53/udp`).
pub const LABEL_PORTS: &str = "kdns.ports";
/// Label: `false` leaves the container out.
pub const LABEL_ENABLE: &str = "kdns.enable";
/// Compose's service label.
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
/// Compose's replica number label.
pub const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";
/// Compose's label on the networks it creates: the name in the compose file.
pub const COMPOSE_NETWORK: &str = "com.docker.compose.network";

/// A container's endpoint on one network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// The network's name (as in `NetworkSettings.Networks`).
    pub network: String,
    /// Its addresses there (IPv4 and global IPv6).
    pub addrs: Vec<IpAddr>,
    /// Its aliases there.
    pub aliases: Vec<String>,
}

/// A container's healthcheck state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No healthcheck.
    None,
    /// Not passed yet.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// What the provider knows of one container (from an inspect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Full id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Creation time as the API gives it (RFC 3339: sorts as text).
    pub created: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Running and not paused.
    pub running: bool,
    /// Healthcheck state.
    pub health: Health,
    /// Its endpoints, on every network.
    pub endpoints: Vec<Endpoint>,
}

/// A network as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// Its `com.docker.compose.network` label.
    pub compose_name: Option<String>,
    /// Its IPAM subnets.
    pub subnets: Vec<(IpAddr, u8)>,
}

/// Which networks are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Named networks (name or compose name); empty: by listen address.
    pub networks: Vec<String>,
    /// The listen addresses.
    pub listen: Vec<IpAddr>,
    /// Serve containers whose healthcheck has not passed yet.
    pub serve_starting: bool,
}

impl Selection {
    /// The names of the networks served, out of `nets`.
    pub fn served(&self, nets: &[Network]) -> Vec<String> {
        let mut out: Vec<String> = nets
            .iter()
            .filter(|n| {
                if self.networks.is_empty() {
                    n.subnets.iter().any(|&(net, len)| self.listen.iter().any(|&a| in_subnet(a, net, len)))
                } else {
                    self.networks.iter().any(|w| *w == n.name || n.compose_name.as_deref() == Some(w.as_str()))
                }
            })
            .map(|n| n.name.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

fn in_subnet(a: IpAddr, net: IpAddr, len: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Parses `10.0.0.0/24` (an IPAM subnet).
pub fn parse_subnet(s: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = s.split_once('/')?;
    let a: IpAddr = a.parse().ok()?;
    let l: u8 = l.parse().ok()?;
    let max = if a.is_ipv4() { 32 } else { 128 };
    (l <= max).then_some((a, l))
}

/// One instance the provider contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerInstance {
    /// The container's name: what operators read and what
    /// `kdns-ctl instance health` takes (the model keys containers by id).
    pub id: String,
    /// Its number in the service.
    pub number: u32,
    /// Its addresses on the served networks.
    pub addrs: Vec<IpAddr>,
    /// In the answers.
    pub healthy: bool,
    /// `up`, `starting`, `unhealthy` (for `kdns-ctl records list`).
    pub health: Served,
}

/// One service the provider contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerService {
    /// Name, mode, TTL and ports (no instances, no check).
    pub def: ServiceDef,
    /// Its instances by number.
    pub instances: Vec<DockerInstance>,
}

/// What the provider contributes to the records: merged with the records
/// file and the runtime changes by the store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layer {
    /// Services of the running containers.
    pub services: Vec<DockerService>,
    /// Container names and network aliases (one label, answered under
    /// every local domain) and their addresses, sorted by label.
    pub names: Vec<(String, Vec<IpAddr>)>,
}

/// The containers known and the numbers given out.
#[derive(Debug, Default)]
pub struct Model {
    containers: HashMap<String, Container>,
    /// Container id -> (service, number), kept while the container lives.
    numbers: HashMap<String, (String, u32)>,
    /// Warnings already given, per container id (not repeated).
    warned: HashMap<String, HashSet<String>>,
}

impl Model {
    /// Replaces everything known (a full resync).
    pub fn replace_all(&mut self, list: Vec<Container>) {
        self.containers = list.into_iter().map(|c| (c.id.clone(), c)).collect();
        self.forget_gone();
    }

    /// A container as inspected now.
    pub fn upsert(&mut self, c: Container) {
        self.containers.insert(c.id.clone(), c);
    }

    /// A container that no longer exists.
    pub fn remove(&mut self, id: &str) {
        self.containers.remove(id);
        self.forget_gone();
    }

    fn forget_gone(&mut self) {
        let c = &self.containers;
        self.numbers.retain(|id, _| c.contains_key(id));
        self.warned.retain(|id, _| c.contains_key(id));
    }

    fn warn(&mut self, c: &Container, msg: String, out: &mut Vec<String>) {
        if self.warned.entry(c.id.clone()).or_default().insert(msg.clone()) {
            out.push(format!("Docker container {} ({}): {msg}", c.name, short(&c.id)));
        }
    }

    /// The records of the containers known, given the served `networks`.
    /// Returns the layer and the warnings not given before (each names
    /// its container).
    pub fn layer(&mut self, networks: &[String], sel: &Selection) -> (Layer, Vec<String>) {
        let mut warnings = Vec::new();
        let mut list: Vec<Container> = self.containers.values().cloned().collect();
        list.sort_by(|a, b| (a.created.as_str(), a.id.as_str()).cmp(&(b.created.as_str(), b.id.as_str())));

        struct Member {
            c: Container,
            addrs: Vec<IpAddr>,
            aliases: Vec<String>,
            wanted: Option<u32>,
        }
        let mut services: BTreeMap<String, (ServiceDef, String, Vec<Member>)> = BTreeMap::new();
        let mut serving_ids = HashSet::new();
        for c in list {
            if !c.running {
                continue;
            }
            if c.labels.get(LABEL_ENABLE).is_some_and(|v| v.eq_ignore_ascii_case("false")) {
                continue;
            }
            let mut addrs = Vec::new();
            let mut aliases = Vec::new();
            for e in c.endpoints.iter().filter(|e| networks.contains(&e.network)) {
                for a in &e.addrs {
                    if !addrs.contains(a) {
                        addrs.push(*a);
                    }
                }
                aliases.extend(e.aliases.iter().cloned());
            }
            if addrs.is_empty() {
                continue; // not on a served network (or no address there)
            }
            let (name, from) = if let Some(s) = c.labels.get(LABEL_SERVICE) {
                (s.clone(), format!("label {LABEL_SERVICE}"))
            } else if let Some(s) = c.labels.get(COMPOSE_SERVICE) {
                (s.clone(), format!("compose service (label {COMPOSE_SERVICE})"))
            } else {
                (c.name.clone(), "container name".to_string())
            };
            let Ok(svc) = defs::service_name(&name) else {
                self.warn(
                    &c,
                    format!("skipped: its {from} '{name}' is not a valid DNS label (letters, digits, '-' and '_', 1 to 63 characters)"),
                    &mut warnings,
                );
                continue;
            };
            let mut def =
                ServiceDef { name: svc.clone(), mode: ModeName::All, ttl: None, ports: Vec::new(), check: None, instances: Vec::new() };
            if let Some(m) = c.labels.get(LABEL_MODE) {
                match m.as_str() {
                    "all" => def.mode = ModeName::All,
                    "random-one" => def.mode = ModeName::RandomOne,
                    "sticky" => def.mode = ModeName::Sticky,
                    other => {
                        self.warn(&c, format!("label {LABEL_MODE}='{other}' ignored: expected all, random-one or sticky"), &mut warnings)
                    }
                }
            }
            if let Some(t) = c.labels.get(LABEL_TTL) {
                match t.trim().parse::<u32>() {
                    Ok(v) if (1..=defs::MAX_TTL).contains(&v) => def.ttl = Some(v),
                    _ => self.warn(&c, format!("label {LABEL_TTL}='{t}' ignored: expected seconds, 1 to {}", defs::MAX_TTL), &mut warnings),
                }
            }
            if let Some(p) = c.labels.get(LABEL_PORTS) {
                match parse_ports(p).and_then(|ports| {
                    let d = ServiceDef { ports, ..def.clone() };
                    defs::service(&d).map(|d| d.ports).map_err(|e| e.to_string())
                }) {
                    Ok(ports) => def.ports = ports,
                    Err(e) => self.warn(&c, format!("label {LABEL_PORTS}='{p}' ignored: {e}"), &mut warnings),
                }
            }
            let wanted = c.labels.get(COMPOSE_NUMBER).and_then(|n| n.trim().parse::<u32>().ok()).filter(|&n| n > 0);
            let entry = services.entry(svc.clone()).or_insert_with(|| (def.clone(), c.name.clone(), Vec::new()));
            if entry.0 != def {
                let first = entry.1.clone();
                self.warn(
                    &c,
                    format!("its kdns.* labels differ from those of {first}, the oldest container of service {svc}; {first}'s are used"),
                    &mut warnings,
                );
            }
            serving_ids.insert(c.id.clone());
            services.get_mut(&svc).expect("inserted").2.push(Member { c, addrs, aliases, wanted });
        }
        // A container that moved to another service (never happens to a
        // live one, but a resync may see a new container reusing an id)
        // gets a new number.
        self.numbers.retain(|id, _| serving_ids.contains(id));

        let mut layer = Layer::default();
        let mut names: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        let mut labels_taken: HashSet<String> = HashSet::new();
        for (svc, (def, _, members)) in services {
            // Numbers: kept ones first, then the compose number if free,
            // then the lowest free one.
            let mut used: HashSet<u32> = HashSet::new();
            let mut numbered: Vec<(u32, Member)> = Vec::new();
            let mut rest = Vec::new();
            for m in members {
                match self.numbers.get(&m.c.id) {
                    Some((s, n)) if *s == svc && used.insert(*n) => numbered.push((*n, m)),
                    _ => rest.push(m),
                }
            }
            let mut later = Vec::new();
            for m in rest {
                match m.wanted {
                    Some(n) if used.insert(n) => numbered.push((n, m)),
                    _ => later.push(m),
                }
            }
            let mut next = 1;
            for m in later {
                while used.contains(&next) {
                    next += 1;
                }
                used.insert(next);
                numbered.push((next, m));
            }
            numbered.sort_by_key(|(n, _)| *n);
            let mut instances = Vec::new();
            for (n, m) in numbered {
                self.numbers.insert(m.c.id.clone(), (svc.clone(), n));
                let (healthy, health) = match m.c.health {
                    Health::Unhealthy => (false, Served::Unhealthy),
                    Health::Starting if !sel.serve_starting => (false, Served::Starting),
                    Health::Starting => (true, Served::Starting),
                    Health::None | Health::Healthy => (true, Served::Up),
                };
                labels_taken.insert(format!("{svc}-{n}"));
                if healthy {
                    let mut own = vec![m.c.name.clone()];
                    own.extend(m.aliases.iter().cloned());
                    for (i, label) in own.into_iter().enumerate() {
                        let l = label.to_ascii_lowercase();
                        if l == svc {
                            continue; // compose's alias for the service itself
                        }
                        if defs::service_name(&l).is_err() {
                            if i == 0 {
                                let msg = format!("its name is not a valid DNS label; it answers as {svc} and {svc}-{n} only");
                                self.warn(&m.c, msg, &mut warnings);
                            }
                            continue;
                        }
                        let v = names.entry(l).or_default();
                        for a in &m.addrs {
                            if !v.contains(a) {
                                v.push(*a);
                            }
                        }
                    }
                }
                instances.push(DockerInstance { id: m.c.name.clone(), number: n, addrs: m.addrs, healthy, health });
            }
            labels_taken.insert(svc.clone());
            layer.services.push(DockerService { def, instances });
        }
        // A name that is also a service or an instance name is theirs.
        layer.names = names.into_iter().filter(|(l, _)| !labels_taken.contains(l)).collect();
        (layer, warnings)
    }
}

/// `http:8080/tcp,dns:53/udp` (proto defaults to tcp; spaces allowed).
pub fn parse_ports(s: &str) -> Result<Vec<PortDef>, String> {
    let mut out = Vec::new();
    for part in s.split([',', ' ']).map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("'{part}' is not name:port[/tcp|udp]");
        let (name, rest) = part.split_once(':').ok_or_else(bad)?;
        let (port, proto) = rest.split_once('/').unwrap_or((rest, "tcp"));
        let port: u16 = port.parse().map_err(|_| bad())?;
        out.push(PortDef { name: name.into(), proto: proto.into(), port });
    }
    if out.is_empty() {
        return Err("no port".into());
    }
    Ok(out)
}

/// The first 12 characters of an id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests;
