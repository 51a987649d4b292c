//! kxdpgun as an open-loop, fixed-rate load in the client namespace: it
//! keeps sending whatever comes back, so every query of an outage counts.

use std::path::PathBuf;
use std::time::Duration;

use super::{Lab, Netns, Proc};

/// kxdpgun running in the background.
#[derive(Debug)]
pub struct Gun {
    proc: Proc,
    log: PathBuf,
    qps: u64,
    seconds: u64,
}

/// Where kxdpgun runs and whom it sends to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The command that enters the client's network namespace (`ip netns
    /// exec NS`, `nsenter -t PID -n`).
    pub enter: Vec<String>,
    /// Where the query file and the log go.
    pub dir: PathBuf,
    /// The client's interface, its MAC and IPv4 address.
    pub iface: String,
    pub src_mac: String,
    pub src_v4: String,
    /// The next hop's MAC (the server's, on one link or one bridge) and
    /// the server's IPv4 address.
    pub dst_mac: String,
    pub dst_v4: String,
}

impl Gun {
    /// Sends `qps` queries a second for `seconds` to kdns's IPv4 address,
    /// cycling over `names` (A queries).
    pub fn start(lab: &Lab, qps: u64, seconds: u64, names: &[String]) -> Gun {
        let mac = |ns: &Netns, ifname: &str| ns.exec_ok(&["cat", &format!("/sys/class/net/{ifname}/address")]).stdout.trim().to_string();
        let target = Target {
            enter: lab.client.prefix(),
            dir: lab.dir.path().to_path_buf(),
            iface: lab.link.client_if.clone(),
            src_mac: mac(&lab.client, &lab.link.client_if),
            src_v4: lab.link.client_v4(),
            dst_mac: mac(&lab.server, &lab.link.server_if),
            dst_v4: lab.link.server_v4(),
        };
        Gun::start_at(&target, qps, seconds, names)
    }

    /// The same from and to `t`.
    pub fn start_at(t: &Target, qps: u64, seconds: u64, names: &[String]) -> Gun {
        // Files of their own: a test may run several loads from one dir.
        let n = super::next_id();
        let queries = t.dir.join(format!("gun-queries-{n}.txt"));
        let text: String = names.iter().map(|n| format!("{n} A\n")).collect();
        std::fs::write(&queries, text).expect("write the query file");
        let log = t.dir.join(format!("kxdpgun-{n}.log"));
        let (secs, q, qf) = (seconds.to_string(), qps.to_string(), queries.display().to_string());
        let argv =
            ["kxdpgun", "-t", &secs, "-Q", &q, "-i", &qf, "-I", &t.iface, "-L", &t.src_mac, "-R", &t.dst_mac, "-l", &t.src_v4, &t.dst_v4];
        let mut cmd = std::process::Command::new(&t.enter[0]);
        cmd.args(&t.enter[1..]).args(argv);
        kdns_sys::process::die_with_parent(&mut cmd);
        Gun { proc: Proc::spawn(cmd, &log), log, qps, seconds }
    }

    /// [`Gun::finish`], printing the figures as `what: ...` and checking
    /// that kxdpgun sent at least 80% of what it was asked to.
    pub fn finish_reported(self, what: &str) -> (u64, u64) {
        let asked = self.qps * self.seconds;
        let (sent, replies) = self.finish();
        let lost = sent.saturating_sub(replies);
        eprintln!("{what}: {sent} sent, {replies} replies, {lost} unanswered ({:.3}%)", 100.0 * lost as f64 / sent.max(1) as f64);
        assert!(sent >= asked * 8 / 10, "{what}: kxdpgun sent only {sent} queries (asked {asked})");
        (sent, replies)
    }

    /// Waits for the end of the run: (queries sent, replies received).
    pub fn finish(mut self) -> (u64, u64) {
        let st = self.proc.wait(Duration::from_secs(self.seconds + 30));
        let out = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(st.is_some(), "kxdpgun did not finish:\n{out}");
        let field = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse::<u64>().ok()))
                .unwrap_or_else(|| panic!("no `{key}` in kxdpgun's output:\n{out}"))
        };
        (field("total queries:"), field("total replies:"))
    }
}
