//! kxdpgun as an open-loop, fixed-rate load in the client namespace: it
//! keeps sending whatever comes back, so every query of an outage counts.

use std::path::PathBuf;
use std::time::Duration;

use super::{InNs, Lab, Netns, Proc};

/// kxdpgun running in the background.
#[derive(Debug)]
pub struct Gun {
    proc: Proc,
    log: PathBuf,
    qps: u64,
    seconds: u64,
    /// The lab's veth pair, and its drop counters at the start.
    pair: Option<(VethPair, u64)>,
}

/// A veth pair whose drops a run reports: what the kernel lost between
/// kdns and kxdpgun is not kdns's loss, but it is not hidden either.
#[derive(Debug)]
struct VethPair {
    ends: [(InNs, String); 2],
}

impl VethPair {
    /// The sum of both ends' `rx_dropped` and `tx_dropped`, and veth's own
    /// per-queue drop and XDP error counters (`ethtool -S`).
    fn drops(&self) -> u64 {
        let mut sum = 0;
        for (ns, ifn) in &self.ends {
            for f in ["rx_dropped", "tx_dropped"] {
                let r = ns.exec_ok(&["cat", &format!("/sys/class/net/{ifn}/statistics/{f}")]);
                sum += r.stdout.trim().parse::<u64>().unwrap_or(0);
            }
            let r = ns.exec_ok(&["ethtool", "-S", ifn]);
            for l in r.stdout.lines() {
                let Some((k, v)) = l.trim().split_once(':') else { continue };
                if k.ends_with("_drops") || k.ends_with("_errors") {
                    sum += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        sum
    }
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
    ///
    /// The server's end of the pair gets a 10,000-packet pfifo, as a NIC's
    /// TX ring and qdisc would be: kxdpgun's XDP program puts the client's
    /// end in NAPI mode with a 256-frame ring, and without a queue in front
    /// of it veth drops a burst of replies (such as the answers to what
    /// waited in a socket during a restart) instead of pushing back.
    pub fn start(lab: &Lab, qps: u64, seconds: u64, names: &[String]) -> Gun {
        let srv_if = lab.link.server_if.as_str();
        lab.server.exec_ok(&["tc", "qdisc", "replace", "dev", srv_if, "root", "pfifo", "limit", "10000"]);
        let pair = VethPair { ends: [(lab.server.handle(), srv_if.to_string()), (lab.client.handle(), lab.link.client_if.clone())] };
        let before = pair.drops();
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
        let mut gun = Gun::start_at(&target, qps, seconds, names);
        gun.pair = Some((pair, before));
        gun
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
        Gun { proc: Proc::spawn(cmd, &log), log, qps, seconds, pair: None }
    }

    /// [`Gun::finish`], printing the figures as `what: ...` (with the veth
    /// pair's drops in the run, when started on a lab) and checking that
    /// kxdpgun sent at least 80% of what it was asked to.
    pub fn finish_reported(mut self, what: &str) -> (u64, u64) {
        let asked = self.qps * self.seconds;
        let pair = self.pair.take();
        let (sent, replies) = self.finish();
        let lost = sent.saturating_sub(replies);
        let veth = pair.map(|(p, before)| format!("; the veth pair dropped {}", p.drops().saturating_sub(before))).unwrap_or_default();
        eprintln!("{what}: {sent} sent, {replies} replies, {lost} unanswered ({:.3}%){veth}", 100.0 * lost as f64 / sent.max(1) as f64);
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
