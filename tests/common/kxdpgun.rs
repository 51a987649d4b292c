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
    seconds: u64,
}

impl Gun {
    /// Sends `qps` queries a second for `seconds` to kdns's IPv4 address,
    /// cycling over `names` (A queries).
    pub fn start(lab: &Lab, qps: u64, seconds: u64, names: &[String]) -> Gun {
        let queries = lab.file("gun-queries.txt");
        let text: String = names.iter().map(|n| format!("{n} A\n")).collect();
        std::fs::write(&queries, text).expect("write the query file");
        let mac = |ns: &Netns, ifname: &str| ns.exec_ok(&["cat", &format!("/sys/class/net/{ifname}/address")]).stdout.trim().to_string();
        let (cmac, smac) = (mac(&lab.client, &lab.link.client_if), mac(&lab.server, &lab.link.server_if));
        let log = lab.file("kxdpgun.log");
        let (t, q, qf) = (seconds.to_string(), qps.to_string(), queries.display().to_string());
        let (ci, cv4, sv4) = (lab.link.client_if.clone(), lab.link.client_v4(), lab.link.server_v4());
        let argv = ["kxdpgun", "-t", &t, "-Q", &q, "-i", &qf, "-I", &ci, "-L", &cmac, "-R", &smac, "-l", &cv4, &sv4];
        Gun { proc: Proc::spawn(lab.client.command(&argv), &log), log, seconds }
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
