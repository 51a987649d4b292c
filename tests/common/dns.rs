//! dig and kdig run inside a namespace, their output parsed into an
//! [`Answer`].

use std::collections::BTreeSet;
use std::time::Duration;

use super::netns::InNs;
use super::process::Run;

/// dig's options in every test: one try, 2 s to answer.
pub const DIG_OPTS: [&str; 3] = ["dig", "+time=2", "+tries=1"];

/// The parts of a dig or kdig answer the tests look at.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// "NOERROR", "REFUSED", ...; empty if no answer came.
    pub status: String,
    /// Header flags: "qr", "aa", "tc", "rd", "ra", ...
    pub flags: Vec<String>,
    /// The question line(s), as printed.
    pub question: Vec<String>,
    /// Answer-section records, as printed (tabs turned to spaces).
    pub answers: Vec<String>,
    /// Authority-section records, as printed (tabs turned to spaces).
    pub authority: Vec<String>,
    /// Everything the tool printed.
    pub text: String,
}

impl Answer {
    /// Parses dig's or kdig's default output.
    pub fn parse(text: &str) -> Answer {
        let mut a = Answer { text: text.to_string(), ..Answer::default() };
        let mut section = "";
        for raw in text.lines() {
            let line = raw.trim();
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(";; ->>header<<-") {
                if let Some(i) = lower.find("status: ") {
                    a.status = line[i + 8..].split([',', ';', ' ']).next().unwrap_or("").to_string();
                }
            } else if lower.starts_with(";; flags:") {
                let rest = &line[9..];
                let flags = rest.split(';').next().unwrap_or("");
                a.flags = flags.split_whitespace().map(str::to_ascii_lowercase).collect();
            } else if lower.starts_with(";; question section") {
                section = "q";
            } else if lower.starts_with(";; answer section") {
                section = "a";
            } else if lower.starts_with(";; authority section") {
                section = "u";
            } else if section == "q" && lower.starts_with(";; ") && !lower.contains("section") {
                // kdig prints the question as ";; name IN TYPE".
                a.question.push(line.trim_start_matches(';').split_whitespace().collect::<Vec<_>>().join(" "));
            } else if lower.starts_with(";;") || line.is_empty() {
                section = "";
            } else if section == "q" {
                a.question.push(line.trim_start_matches(';').split_whitespace().collect::<Vec<_>>().join(" "));
            } else if section == "a" {
                a.answers.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            } else if section == "u" {
                a.authority.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        a
    }

    /// Parses the output of a finished dig or kdig; `text` holds the whole
    /// run (command, status, stdout, stderr) for messages.
    pub fn from_run(r: &Run) -> Answer {
        Answer { text: r.both(), ..Answer::parse(&r.stdout) }
    }

    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// The data of the answer records of type `rtype` (last field(s)).
    pub fn rdata(&self, rtype: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let i = f.iter().position(|x| x.eq_ignore_ascii_case(rtype))?;
                (i >= 2).then(|| f[i + 1..].join(" "))
            })
            .collect()
    }
}

/// Runs `dig +time=2 +tries=1 <args>` in `ns` and parses its output.
pub fn dig(ns: &InNs, args: &[&str]) -> Answer {
    let argv = [&DIG_OPTS[..], args].concat();
    Answer::from_run(&ns.exec(&argv, Duration::from_secs(15)))
}

/// Runs `kdig +timeout=2 +retry=0 <args>` in `ns` and parses its output.
pub fn kdig(ns: &InNs, args: &[&str]) -> Answer {
    let argv = [&["kdig", "+timeout=2", "+retry=0"][..], args].concat();
    Answer::from_run(&ns.exec(&argv, Duration::from_secs(15)))
}

/// Runs one `dig +time=2 +tries=1 <args> name1 type1 name2 type2 ...` in
/// `ns` (dig asks them one after the other, each from a new source port)
/// and parses each answer. Panics unless every query got an answer.
pub fn dig_many(ns: &InNs, args: &[&str], queries: &[(&str, &str)]) -> Vec<Answer> {
    let mut argv = [&DIG_OPTS[..], args].concat();
    for (name, rtype) in queries {
        argv.push(name);
        argv.push(rtype);
    }
    let r = ns.exec(&argv, Duration::from_secs(20 + queries.len() as u64 / 5));
    let marker = ";; Got answer:";
    let starts: Vec<usize> = r.stdout.match_indices(marker).map(|(i, _)| i).collect();
    assert_eq!(starts.len(), queries.len(), "dig answered {} of {} queries:\n{}", starts.len(), queries.len(), r.both());
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).copied().unwrap_or(r.stdout.len());
            Answer::parse(&r.stdout[s..end])
        })
        .collect()
}

/// The A and AAAA data of an answer, in order.
pub fn addrs(a: &Answer) -> Vec<String> {
    a.answers
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 5 && (f[3] == "A" || f[3] == "AAAA")).then(|| f[4].to_string())
        })
        .collect()
}

/// The A and AAAA data of an answer, as a set.
pub fn addr_set(a: &Answer) -> BTreeSet<String> {
    addrs(a).into_iter().collect()
}

/// A set of strings from literals.
pub fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The authority section holds the SOA of `zone` (e.g. "kdns.").
pub fn has_soa(a: &Answer, zone: &str) -> bool {
    a.authority.iter().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() >= 5 && f[0] == zone && f[3] == "SOA"
    })
}
