//! The deployment files of deploy/: the systemd units pass `systemd-analyze
//! verify`, the Kubernetes manifests pass kubernetes-validate (strict, for a
//! pinned Kubernetes version) and the ConfigMap's kdns.toml passes `kdns
//! --check-config`. Needs no root and no namespace. See tests/README.md.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.31.0";
/// Where scripts/setup.sh installs kubernetes-validate (a venv: Debian's
/// pip installs nothing outside one).
const KUBERNETES_VALIDATE: &str = "/opt/kdns-venv/bin/kubernetes-validate";

fn deploy(file: &str) -> PathBuf {
    repo().join("deploy").join(file)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// `systemd-analyze verify` on `units` in `dir`: (exit status ok, output).
fn verify(dir: &Path, units: &[&str]) -> (bool, String) {
    let tool = find_tool("systemd-analyze").expect("systemd-analyze (package systemd) is not installed");
    let paths: Vec<String> = units.iter().map(|u| dir.join(u).display().to_string()).collect();
    let mut argv = vec![tool.to_str().expect("utf-8 path"), "verify"];
    argv.extend(paths.iter().map(String::as_str));
    let r = run_limited(&argv, Duration::from_secs(60));
    (r.ok(), format!("{}{}", r.stdout, r.stderr))
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    // verify checks that ExecStart= exists: the units are copied with the
    // binary under test in place of /usr/local/bin/kdns.
    let dir = temp_dir("units");
    let service = read(&deploy("kdns.service"));
    assert!(service.contains("ExecStart=/usr/local/bin/kdns --config /etc/kdns/kdns.toml"), "kdns.service: ExecStart changed");
    std::fs::write(dir.path().join("kdns.service"), service.replace("/usr/local/bin/kdns", kdns_bin().to_str().unwrap())).unwrap();
    std::fs::copy(deploy("kdns.socket"), dir.path().join("kdns.socket")).unwrap();
    let (ok, out) = verify(dir.path(), &["kdns.socket", "kdns.service"]);
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify complained:\n{out}");

    // Control: it does see a wrong key (a warning, exit status 0).
    let bad = read(&dir.path().join("kdns.service")).replace("RestartSec=1", "RestartSecs=1");
    std::fs::write(dir.path().join("kdns-bad.service"), bad).unwrap();
    let (_, out) = verify(dir.path(), &["kdns-bad.service"]);
    assert!(out.contains("RestartSecs"), "systemd-analyze did not see a wrong key:\n{out}");
}

/// The value of `key=` in a unit file (the last one).
fn unit_value<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

#[test]
fn systemd_units_restart_hold_the_sockets_and_match_each_other() {
    let service = read(&deploy("kdns.service"));
    let socket = read(&deploy("kdns.socket"));
    assert_eq!(unit_value(&service, "Restart"), ["always"]);
    let secs: f64 = unit_value(&service, "RestartSec")[0].parse().expect("RestartSec in seconds");
    assert!(secs <= 1.0, "RestartSec={secs}");
    assert_eq!(unit_value(&service, "Requires"), ["kdns.socket"]);
    assert_eq!(unit_value(&socket, "Service"), ["kdns.service"]);
    // Every datagram address has its stream twin (tcp.enabled defaults on).
    let (udp, tcp) = (unit_value(&socket, "ListenDatagram"), unit_value(&socket, "ListenStream"));
    assert!(!udp.is_empty() && udp == tcp, "ListenDatagram {udp:?} vs ListenStream {tcp:?}");
    assert_eq!(unit_value(&socket, "ReceiveBuffer"), ["32M"], "the default of server.udp_receive_buffer");
    assert_eq!(unit_value(&socket, "FreeBind"), ["yes"]);
    // The planned upgrade is a restart on the held sockets, not a reload.
    assert!(unit_value(&service, "ExecReload").is_empty(), "an ExecReload: systemd would keep the old main process");
    assert_eq!(unit_value(&service, "Restart"), ["always"]);
    for rw in ["/var/lib/kdns", "/sys/fs/bpf"] {
        assert!(unit_value(&service, "ReadWritePaths")[0].split(' ').any(|p| p == rw), "ReadWritePaths lacks {rw}");
    }
}

/// kubernetes-validate on `files`: (exit status ok, output).
fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    assert!(Path::new(KUBERNETES_VALIDATE).is_file(), "{KUBERNETES_VALIDATE} not found: run scripts/setup.sh (as root)");
    let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let mut argv = vec![KUBERNETES_VALIDATE, "--strict", "-k", KUBERNETES];
    argv.extend(paths.iter().map(String::as_str));
    let r = run_limited(&argv, Duration::from_secs(120));
    (r.ok(), r.both())
}

#[test]
fn kubernetes_manifests_pass_kubernetes_validate() {
    let files = [deploy("k8s/configmap.yaml"), deploy("k8s/daemonset.yaml")];
    let (ok, out) = kubernetes_validate(&files);
    assert!(ok, "kubernetes-validate failed:\n{out}");
    assert_eq!(out.matches(" passed ").count(), 2, "{out}");

    // Control: a misspelt field fails strict validation.
    let dir = temp_dir("k8s");
    let bad = dir.path().join("daemonset.yaml");
    std::fs::write(&bad, read(&files[1]).replace("hostNetwork: true", "hostNetwrok: true")).unwrap();
    let (ok, out) = kubernetes_validate(&[bad]);
    assert!(!ok && out.contains("hostNetwrok"), "a misspelt field passed:\n{out}");
}

fn yaml(p: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn daemonset_is_node_local_and_surges_on_update() {
    let ds = yaml(&deploy("k8s/daemonset.yaml"));
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "Default");
    let ru = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!((ru["maxSurge"].as_u64(), ru["maxUnavailable"].as_u64()), (Some(1), Some(0)));
    let hostpaths: Vec<&str> = spec["volumes"].as_sequence().unwrap().iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
    for p in ["/sys/fs/bpf", "/run/kdns", "/var/lib/kdns"] {
        assert!(hostpaths.contains(&p), "no hostPath {p} in {hostpaths:?}");
    }
    let kdns = &spec["containers"][0];
    assert!(kdns["ports"].is_null(), "host ports would keep the surge pod off the node");
    assert!(!kdns["livenessProbe"].is_null() && !kdns["readinessProbe"].is_null());
    // The surge pod takes over from the running one; the old pod's
    // supervisor then waits (its container exiting would be restarted and
    // take over back), and holds the sockets across a crash.
    let args: Vec<&str> = kdns["args"].as_sequence().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(args.contains(&"--takeover"), "the new pod does not take over: {args:?}");
    assert!(args.contains(&"--supervise"), "nothing holds the sockets across a crash of the pod's kdns: {args:?}");
    let cm = yaml(&deploy("k8s/configmap.yaml"));
    let toml = cm["data"]["kdns.toml"].as_str().expect("data.kdns.toml");
    assert!(toml.contains("handover_socket = \"/run/kdns/handover.sock\""), "the handover socket is not on the shared hostPath");
    let config = &ds["spec"]["template"]["spec"]["initContainers"][0]["command"];
    assert_eq!(config[1], "/etc/kdns/setup-node.sh");
}

#[test]
fn configmap_kdns_toml_passes_check_config_and_matches_the_node_setup() {
    let cm = yaml(&deploy("k8s/configmap.yaml"));
    let toml = cm["data"]["kdns.toml"].as_str().expect("data.kdns.toml");
    let setup = cm["data"]["setup-node.sh"].as_str().expect("data.setup-node.sh");
    let dir = temp_dir("configmap");
    let (conf, script) = (dir.path().join("kdns.toml"), dir.path().join("setup-node.sh"));
    std::fs::write(&conf, toml).unwrap();
    std::fs::write(&script, setup).unwrap();
    let bin = kdns_bin();
    let r = run_limited(&[bin.to_str().unwrap(), "--check-config", "--config", conf.to_str().unwrap()], Duration::from_secs(30));
    assert!(r.ok(), "kdns --check-config refused the ConfigMap's kdns.toml:\n{}", r.both());
    assert!(r.stdout.contains("listen:          169.254.20.10:53"), "{}", r.both());
    assert!(r.stdout.contains("backends:        10.96.0.10:53"), "{}", r.both());
    // The script sets up the address kdns listens on, on the dummy
    // interface, with NOTRACK both ways; and it is valid sh.
    for s in [
        "ADDR=169.254.20.10",
        "IF=nodelocaldns",
        "type dummy",
        "PREROUTING \"-d $ADDR -p $p --dport 53 -j NOTRACK\"",
        "OUTPUT \"-s $ADDR -p $p --sport 53 -j NOTRACK\"",
    ] {
        assert!(setup.contains(s), "setup-node.sh lacks `{s}`");
    }
    let r = run_limited(&["sh", "-n", script.to_str().unwrap()], Duration::from_secs(10));
    assert!(r.ok(), "setup-node.sh is not valid sh:\n{}", r.both());
}

/// setup-node.sh and teardown-node.sh for real, in a network namespace of
/// the test's own (iptables and links are per namespace): the setup puts
/// the address on the dummy interface with its NOTRACK and ACCEPT rules,
/// twice without duplicating a rule; the teardown leaves nothing of it.
#[test]
fn node_setup_and_teardown_leave_nothing_behind() {
    require_root_and_tools();
    assert!(find_tool("iptables").is_some(), "iptables (package iptables) is not installed: run scripts/setup.sh");
    let cm = yaml(&deploy("k8s/configmap.yaml"));
    let dir = temp_dir("node-setup");
    let script = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, cm["data"][name].as_str().unwrap_or_else(|| panic!("data.{name}"))).unwrap();
        p.display().to_string()
    };
    let (setup, teardown) = (script("setup-node.sh"), script("teardown-node.sh"));
    let ns = Netns::new(next_id(), "node");
    // A kernel without the dummy driver (these VMs' has none): the same
    // script with a veth pair standing in for the dummy interface.
    if !ns.exec(&["ip", "link", "add", "probe", "type", "dummy"], Duration::from_secs(10)).ok() {
        eprintln!("no dummy interfaces in this kernel: setup-node.sh runs with `type veth` instead");
        let text = std::fs::read_to_string(&setup).unwrap();
        assert!(text.contains(" type dummy"), "setup-node.sh makes no dummy interface");
        std::fs::write(&setup, text.replace(" type dummy", " type veth")).unwrap();
    }
    let rules = |ns: &Netns| -> Vec<String> {
        let out = ns.exec_ok(&["iptables-save"]).stdout;
        out.lines().filter(|l| l.contains("169.254.20.10")).map(str::to_string).collect()
    };
    for _ in 0..2 {
        let r = ns.exec(&["sh", &setup], Duration::from_secs(30));
        assert!(r.ok(), "setup-node.sh:\n{}", r.both());
    }
    let addr = ns.exec_ok(&["ip", "-o", "addr", "show", "dev", "nodelocaldns"]).stdout;
    assert!(addr.contains("169.254.20.10/32"), "{addr}");
    let set = rules(&ns);
    assert_eq!(set.len(), 11, "setup-node.sh run twice: each rule once:\n{}", set.join("\n"));
    assert_eq!(set.iter().filter(|l| l.contains("NOTRACK")).count(), 6, "{}", set.join("\n"));
    for _ in 0..2 {
        let r = ns.exec(&["sh", &teardown], Duration::from_secs(30));
        assert!(r.ok(), "teardown-node.sh:\n{}", r.both());
    }
    assert!(rules(&ns).is_empty(), "rules left behind:\n{}", rules(&ns).join("\n"));
    let links = ns.exec_ok(&["ip", "-o", "link", "show"]).stdout;
    assert!(!links.contains("nodelocaldns"), "the dummy interface is left behind:\n{links}");
}
