//! dnsperf: query files, a run in the background ([`Dnsperf`]) and the
//! lines of its report the tests read ([`PerfReport`]).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::netns::InNs;
use super::process::Proc;
use super::temp_dir;

/// Writes a dnsperf query file of `count` distinct names `n<i>.<zone> A`,
/// starting at `first`.
pub fn write_queries(path: &Path, first: usize, count: usize, zone: &str) {
    let mut s = String::with_capacity(count * 16);
    for i in first..first + count {
        let _ = writeln!(s, "n{i}.{zone} A");
    }
    fs::write(path, s).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A dnsperf run in the background, bounded by its own `-l` and by a kill
/// on drop.
#[derive(Debug)]
pub struct Dnsperf {
    proc: Proc,
    _dir: TempDir,
}

impl Dnsperf {
    /// Starts `dnsperf -s <server> -d <file> <args>` in `ns`.
    pub fn spawn(ns: &InNs, server: &str, queries: &Path, args: &[&str]) -> Dnsperf {
        let dir = temp_dir("dnsperf");
        let mut c = ns.command(&["dnsperf", "-s", server, "-d", queries.to_str().expect("utf-8 path")]);
        c.args(args);
        let proc = Proc::spawn(c, &dir.path().join("dnsperf.out"));
        Dnsperf { proc, _dir: dir }
    }

    /// Waits (at most `limit`) for dnsperf to finish; returns its report.
    pub fn wait(&mut self, limit: Duration) -> PerfReport {
        let st = self.proc.wait(limit);
        self.proc.kill();
        assert!(st.is_some(), "dnsperf did not finish within {limit:?}:\n{}", self.proc.log());
        PerfReport::parse(&self.proc.log())
    }
}

/// The lines of dnsperf's report the tests use.
#[derive(Debug, Clone)]
pub struct PerfReport {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    /// The "Queries lost:" line as printed.
    pub lost_line: String,
    pub text: String,
}

impl PerfReport {
    pub fn parse(text: &str) -> PerfReport {
        let field = |name: &str| -> Option<(u64, String)> {
            let line = text.lines().find(|l| l.trim_start().starts_with(name))?;
            let n = line.trim_start()[name.len()..].split_whitespace().next()?.parse().ok()?;
            Some((n, line.trim().to_string()))
        };
        let get = |name: &str| field(name).unwrap_or_else(|| panic!("dnsperf output has no '{name}' line:\n{text}"));
        let (sent, _) = get("Queries sent:");
        let (completed, _) = get("Queries completed:");
        let (lost, lost_line) = get("Queries lost:");
        PerfReport { sent, completed, lost, lost_line, text: text.to_string() }
    }
}

impl PerfReport {
    /// The "Response codes:" line as (rcode, count) pairs.
    pub fn rcodes(&self) -> Vec<(String, u64)> {
        let Some(line) = self.text.lines().find(|l| l.trim_start().starts_with("Response codes:")) else { return Vec::new() };
        let rest = line.trim_start().trim_start_matches("Response codes:");
        rest.split(',')
            .filter_map(|part| {
                let mut w = part.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect()
    }

    /// How many answers had `rcode` ("NOERROR", "SERVFAIL", ...).
    pub fn rcode_count(&self, rcode: &str) -> u64 {
        self.rcodes().iter().filter(|(r, _)| r == rcode).map(|(_, n)| n).sum()
    }
}
