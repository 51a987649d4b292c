//! The records file (TOML): domains, a default TTL, `[[service]]` and
//! `[[record]]` tables. Errors give the file, the line and the key.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use kdns_api::records::{self as defs, RecordDef, ServiceDef};
use kdns_api::FieldError;

/// The records file, parsed and checked entry by entry (names across
/// entries are checked when the snapshot is built).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRecords {
    /// Domains added to `[records].domains`, lower-case.
    pub domains: Vec<String>,
    /// Replaces `[records].default_ttl` when set.
    pub default_ttl: Option<u32>,
    /// Services, normalised, in file order.
    pub services: Vec<ServiceDef>,
    /// Static records, normalised, in file order.
    pub records: Vec<RecordDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    default_ttl: Option<u32>,
    #[serde(default)]
    service: Vec<ServiceDef>,
    #[serde(default)]
    record: Vec<RecordDef>,
}

type SpannedTable = Spanned<BTreeMap<String, Spanned<toml::Value>>>;

/// The same file again, only to find where things are.
#[derive(Debug, Deserialize, Default)]
struct Spans {
    #[serde(default)]
    domains: Option<Spanned<toml::Value>>,
    #[serde(default)]
    default_ttl: Option<Spanned<toml::Value>>,
    #[serde(default)]
    service: Vec<SpannedTable>,
    #[serde(default)]
    record: Vec<SpannedTable>,
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line of `key` (its first path component) in table `t`, else of the table.
fn line_in(text: &str, t: Option<&SpannedTable>, key: &str) -> Option<usize> {
    let t = t?;
    let top = key.split(['.', '[']).next().unwrap_or(key);
    let at = t.get_ref().get(top).map_or(t.span().start, |v| v.span().start);
    Some(line_of(text, at))
}

fn with_line(line: Option<usize>, msg: String) -> String {
    match line {
        Some(l) => format!("line {l}: {msg}"),
        None => msg,
    }
}

/// Parses the text of a records file. The error says where (line) and
/// what (key, value); the caller prefixes the file name.
pub fn parse(text: &str) -> Result<FileRecords, String> {
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim_end().replace('\n', "; ");
        match e.span() {
            Some(sp) => {
                let line = line_of(text, sp.start);
                let start = text[..sp.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
                let col = sp.start - start + 1;
                let src = text[start..].lines().next().unwrap_or("").trim();
                format!("line {line}, column {col}: {msg} (in `{src}`)")
            }
            None => msg,
        }
    })?;
    // Where things are is needed only for an error message: parse the text
    // a second time (for the spans) only then, since on a large file the
    // spanned tree costs as much memory as the values themselves.
    let spans_cell: std::cell::OnceCell<Spans> = std::cell::OnceCell::new();
    let spans = || spans_cell.get_or_init(|| toml::from_str(text).unwrap_or_default());
    let mut out = FileRecords::default();
    for (i, d) in raw.domains.iter().enumerate() {
        let d = defs::domain_name(d)
            .map_err(|e| with_line(spans().domains.as_ref().map(|s| line_of(text, s.span().start)), format!("domains[{i}]: {e}")))?;
        if !out.domains.contains(&d) {
            out.domains.push(d);
        }
    }
    if let Some(t) = raw.default_ttl {
        if t == 0 || t > defs::MAX_TTL {
            let line = spans().default_ttl.as_ref().map(|s| line_of(text, s.span().start));
            return Err(with_line(line, format!("default_ttl: {t}: must be 1..={}", defs::MAX_TTL)));
        }
    }
    out.default_ttl = raw.default_ttl;
    let mut names = HashSet::new();
    // Consume the raw entries so each one's memory goes as it is converted.
    for (i, s) in raw.service.into_iter().enumerate() {
        let at = |e: FieldError| {
            let line = line_in(text, spans().service.get(i), &e.key);
            with_line(line, format!("service[{i}] '{}': {e}", s.name))
        };
        let d = defs::service(&s).map_err(at)?;
        if !names.insert(d.name.clone()) {
            return Err(at(FieldError::new("name", format!("service '{}' is defined twice", d.name))));
        }
        out.services.push(d);
    }
    for (i, r) in raw.record.into_iter().enumerate() {
        let (d, _) = defs::record(&r).map_err(|e| {
            let line = line_in(text, spans().record.get(i), &e.key);
            with_line(line, format!("record[{i}] '{}': {e}", r.name))
        })?;
        out.records.push(d);
    }
    Ok(out)
}

/// Reads and parses `path`; the error starts with the path.
pub fn read(path: &Path) -> Result<FileRecords, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("records file {}: cannot read: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("records file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::defs::{CheckKind, InstanceDef, ModeName, PortDef, RecordData};

    /// The example of the documentation, every form.
    const EXAMPLE: &str = r#"
domains = ["kdns", "svc.cluster.local"]   # optional, added to [records].domains
default_ttl = 10

[[service]]
name = "web"
mode = "all"            # "all" | "random-one" | "sticky"
ttl = 10                # optional
ports = [{ name = "http", proto = "tcp", port = 8080 }]
check = { kind = "tcp", port = 8080, interval_ms = 1000, timeout_ms = 500, rise = 2, fall = 2 }   # optional
instances = [{ id = "c1", addrs = ["10.0.0.1", "fd00::1"] }, { id = "c2", addrs = ["10.0.0.2"] }]

[[service]]
name = "Cache"
mode = "random-one"
check = { kind = "dns" }
instances = [{ id = "r1", addrs = ["10.0.1.1"] }]

[[service]]
name = "api"
mode = "sticky"

[[record]]
name = "db.kdns"
type = "A"              # A AAAA CNAME TXT SRV PTR
data = "10.5.0.1"       # TXT: a string or list; SRV: "prio weight port target"
ttl = 60

[[record]]
name = "db.kdns"
type = "AAAA"
data = "fd00::5"

[[record]]
name = "www.kdns"
type = "CNAME"
data = "web.kdns"

[[record]]
name = "info.kdns"
type = "txt"
data = ["v=1", "owner=ops"]

[[record]]
name = "note.kdns"
type = "TXT"
data = "hello"

[[record]]
name = "_pg._tcp.kdns"
type = "SRV"
data = "0 10 5432 db.kdns"

[[record]]
name = "1.0.5.10.in-addr.arpa"
type = "PTR"
data = "db.kdns"
"#;

    #[test]
    fn every_form_parses() {
        let f = parse(EXAMPLE).unwrap();
        assert_eq!(f.domains, vec!["kdns", "svc.cluster.local"]);
        assert_eq!(f.default_ttl, Some(10));
        assert_eq!(f.services.len(), 3);
        let web = &f.services[0];
        assert_eq!((web.name.as_str(), web.mode, web.ttl), ("web", ModeName::All, Some(10)));
        assert_eq!(web.ports, vec![PortDef { name: "http".into(), proto: "tcp".into(), port: 8080 }]);
        let c = web.check.as_ref().unwrap();
        assert_eq!((c.kind, c.port, c.interval_ms, c.timeout_ms, c.rise, c.fall), (CheckKind::Tcp, Some(8080), 1000, 500, 2, 2));
        assert_eq!(
            web.instances,
            vec![
                InstanceDef { id: "c1".into(), addrs: vec!["10.0.0.1".into(), "fd00::1".into()] },
                InstanceDef { id: "c2".into(), addrs: vec!["10.0.0.2".into()] },
            ]
        );
        let cache = &f.services[1];
        assert_eq!((cache.name.as_str(), cache.mode), ("cache", ModeName::RandomOne));
        let c = cache.check.as_ref().unwrap();
        assert_eq!((c.kind, c.port, c.interval_ms, c.timeout_ms, c.rise, c.fall), (CheckKind::Dns, None, 1000, 500, 2, 2));
        assert_eq!((f.services[2].mode, f.services[2].instances.len(), f.services[2].ttl), (ModeName::Sticky, 0, None));
        let types: Vec<&str> = f.records.iter().map(|r| r.rtype.as_str()).collect();
        assert_eq!(types, ["A", "AAAA", "CNAME", "TXT", "TXT", "SRV", "PTR"]);
        assert_eq!(f.records[0].ttl, Some(60));
        assert_eq!(f.records[3].data, RecordData::Many(vec!["v=1".into(), "owner=ops".into()]));
        assert_eq!(f.records[4].data, RecordData::One("hello".into()));
        // An empty file is valid.
        assert_eq!(parse("").unwrap(), FileRecords::default());
        // Inline arrays of tables work as well as [[...]] tables.
        let f = parse("service = [{ name = \"a\", instances = [{ id = \"x\", addrs = [\"10.0.0.9\"] }] }]").unwrap();
        assert_eq!(f.services[0].instances[0].id, "x");
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let cases: &[(&str, &[&str])] = &[
            // TOML syntax: line and column.
            ("domains = [\"kdns\"\n[[service]\n", &["line 2", "column"]),
            // Unknown keys.
            ("[[service]]\nname = \"web\"\nport = 80\n", &["line 3", "unknown field `port`"]),
            ("[[service]]\nname = \"web\"\nports = [{ name = \"http\", prot = \"tcp\", port = 80 }]\n", &["line 3", "prot"]),
            ("[[record]]\nname = \"x.kdns\"\ntype = \"A\"\ndata = \"10.0.0.1\"\nweight = 3\n", &["line 5", "weight"]),
            ("zones = []\n", &["line 1", "zones"]),
            // Wrong types and values.
            ("[[service]]\nname = \"web\"\nmode = \"round-robin\"\n", &["line 3", "round-robin", "random-one"]),
            ("[[service]]\nname = \"web\"\nports = [{ name = \"http\", port = 70000 }]\n", &["line 3"]),
            ("[[service]]\nname = \"web\"\ncheck = { kind = \"icmp\" }\n", &["line 3", "icmp"]),
            // Checked after parsing: the line of the key at fault.
            (
                "domains = [\"kdns\"]\n\n[[service]]\nname = \"web\"\ninstances = [{ id = \"c1\", addrs = [\"10.0.0.1\"] },\n  { id = \"c2\", addrs = [\"10.0.0.x\"] }]\n",
                &["line 5", "service[0] 'web'", "instances[1].addrs[0]", "'10.0.0.x' is not an IP address"],
            ),
            ("[[service]]\nname = \"web\"\n[[service]]\nname = \"web.x\"\n", &["line 4", "service[1]", "name"]),
            ("[[service]]\nname = \"web\"\n[[service]]\nname = \"WEB\"\n", &["line 4", "defined twice"]),
            (
                "[[service]]\nname = \"web\"\ncheck = { kind = \"tcp\" }\n",
                &["line 3", "check.port", "required for a tcp check"],
            ),
            (
                "[[record]]\nname = \"x.kdns\"\ntype = \"A\"\n\n\ndata = \"fd00::1\"\n",
                &["line 6", "record[0] 'x.kdns'", "data: 'fd00::1' is not an IPv4 address"],
            ),
            ("[[record]]\nname = \"x.kdns\"\ntype = \"NS\"\ndata = \"ns.kdns\"\n", &["line 3", "type: 'NS'"]),
            ("domains = [\"ok\", \"bad..name\"]\n", &["line 1", "domains[1]"]),
            ("\ndefault_ttl = 0\n", &["line 2", "default_ttl"]),
        ];
        for (text, wants) in cases {
            let e = parse(text).unwrap_err();
            for w in *wants {
                assert!(e.contains(w), "{text:?}: {e:?} lacks {w:?}");
            }
            assert!(!e.contains('\n'), "one line: {e:?}");
        }
    }

    #[test]
    fn read_names_the_file() {
        let dir = std::env::temp_dir().join(format!("kdns-records-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("records.toml");
        std::fs::write(&p, "[[record]]\nname = \"x.kdns\"\ntype = \"A\"\ndata = \"nope\"\n").unwrap();
        let e = read(&p).unwrap_err();
        assert!(e.starts_with(&format!("records file {}: line 4:", p.display())), "{e}");
        let e = read(&dir.join("missing.toml")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
