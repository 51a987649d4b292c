//! The pinned XDP data plane, end to end: kdns `--io xdp --pin-dir DIR`
//! (DIR on a bpffs of the test's own) in the lab's server namespace, dig
//! in the client namespace. The program outlives kdns (kill -9 and
//! SIGTERM) and then passes the queries to the kernel (fail-open: a UDP
//! socket of the test's on the listen address gets them); the next kdns
//! adopts the pinned link (same link id, new program) and answers over
//! AF_XDP again; `kdns --uninstall-xdp` leaves no program and no pin.
//!
//! Needs root and the daemon tests' tools (scripts/setup.sh), and
//! `cargo build --workspace` first; fails (never skips) without them.

#![forbid(unsafe_code)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The lab with kdns on AF_XDP only, pinning under `fs`.
fn pinned_lab(fs: &BpfFs) -> Lab {
    let dir = fs.pin_dir().display().to_string();
    Lab::start(LabOpts::with_args(&["--io", "xdp", "--pin-dir", &dir]))
}

/// `xdp[0].program` of the stats, checked to be about `ifname`.
fn program(st: &Value, ifname: &str) -> Value {
    let x = &st["xdp"][0];
    assert_eq!(x["interface"], ifname, "stats.xdp:\n{:#}", st["xdp"]);
    assert!(x["program"].is_object(), "no program in stats.xdp:\n{:#}", st["xdp"]);
    x["program"].clone()
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v:#}"))
}

/// A UDP socket of the test's on `addr` in the server namespace answers
/// one query with REFUSED (kdns never answers REFUSED to the lab's
/// client): a REFUSED dig shows the query went to the kernel's socket.
fn kernel_socket_answers_once(lab: &Lab, addr: SocketAddr) -> std::thread::JoinHandle<bool> {
    let sock = lab.server.udp_socket(addr);
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let Ok((n, from)) = sock.recv_from(&mut buf) else { return false };
        if n < 12 {
            return false;
        }
        buf[2] |= 0x80; // QR
        buf[3] = (buf[3] & 0xf0) | 5; // REFUSED
        sock.send_to(&buf[..n], from).is_ok()
    })
}

#[test]
fn kill_9_fails_open_a_new_kdns_adopts_sigterm_keeps_it_and_uninstall_removes_all() {
    require_root_and_tools();
    let _slot = shared_slot();
    let fs = BpfFs::new();
    let mut lab = pinned_lab(&fs);
    let sif = lab.link.server_if.clone();
    let if_dir = fs.pin_dir().join(&sif);

    // 1. Attached and pinned; the stats say so.
    let p1 = program(&lab.stats(), &sif);
    let (id1, link1) = (num(&p1, "program_id") as u32, num(&p1, "link_id"));
    assert_eq!(attached_id(&lab.server, &sif), Some(id1), "ip link and the stats disagree");
    assert_eq!(p1["pin_dir"], if_dir.display().to_string(), "{p1:#}");
    assert_eq!(p1["mode"], "driver", "{p1:#}");
    assert!(p1.get("adopted_from").is_none(), "the first kdns adopted something: {p1:#}");
    assert!(num(&p1, "attached_at") > 1_600_000_000, "{p1:#}");
    assert_eq!(fs.pins(&sif), PINS);
    let text = ctl(&lab.kdns.socket, &["stats"]);
    assert!(text.stdout.contains("XDP programs") && text.stdout.contains(&if_dir.display().to_string()), "{}", text.stdout);

    // 2. kill -9: the program stays, with its pins, and fails open.
    lab.kdns.kill();
    assert!(lab.kdns.wait(Duration::from_secs(5)).is_some(), "kdns did not die of SIGKILL");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(attached_id(&lab.server, &sif), Some(id1), "the pinned program did not outlive kill -9");
    assert_eq!(fs.pins(&sif), PINS);
    let addr: SocketAddr = format!("{}:53", lab.link.server_v4()).parse().expect("addr");
    let answered = kernel_socket_answers_once(&lab, addr);
    let a = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let a = dig(&lab.client, &[&lab.at4(), "fail-open.test", "A"]);
        (!a.status.is_empty()).then_some(a)
    })
    .expect("no answer at all after kill -9: the query did not reach the kernel's socket");
    assert_eq!(a.status, "REFUSED", "not the kernel socket's answer:\n{}", a.text);
    assert!(answered.join().expect("socket thread"), "the kernel's socket did not get the query");

    // 3. A new kdns adopts the link: same link, new program, AF_XDP again.
    let t = std::time::Instant::now();
    lab.respawn_kdns();
    let restart = t.elapsed();
    let log = lab.kdns.plain_log();
    let st = lab.stats();
    let p2 = program(&st, &sif);
    let id2 = num(&p2, "program_id") as u32;
    assert_eq!(num(&p2, "link_id"), link1, "not the same link: {p2:#}");
    assert_ne!(id2, id1, "{p2:#}");
    assert_eq!(num(&p2, "adopted_from"), u64::from(id1), "{p2:#}");
    assert_eq!(attached_id(&lab.server, &sif), Some(id2));
    let line = format!("adopted the XDP program of a previous kdns on {sif} (link {link1}, program {id1} -> {id2})");
    assert!(log.contains(&line), "no '{line}' in the log:\n{log}");
    let (r0, q0) = (xdp_total(&st, "redirected"), kind_sum(&st, "xdp", "queries"));
    let a = dig(&lab.client, &[&lab.at4(), "adopted.test", "A"]);
    assert_eq!((a.status.as_str(), a.rdata("A")), ("NOERROR", vec![TEST_A.to_string()]), "{}", a.text);
    let grew = poll_until(Duration::from_secs(3), Duration::from_millis(50), || {
        let s = lab.stats();
        (xdp_total(&s, "redirected") > r0 && kind_sum(&s, "xdp", "queries") > q0).then_some(())
    });
    assert!(grew.is_some(), "the adopted program did not redirect to the new kdns's AF_XDP socket:\n{:#}", lab.stats()["xdp"]);
    assert_eq!(fs.pins(&sif), PINS);

    // 4. SIGTERM: exit 0, the program stays pinned, and the log says so.
    let st = lab.kdns.stop_with(libc::SIGTERM, Duration::from_secs(10)).expect("kdns did not stop on SIGTERM");
    assert_eq!(st.code(), Some(0), "{}", lab.kdns.log());
    let log = lab.kdns.plain_log();
    let line = format!("XDP program left attached on {sif} (pinned at {})", if_dir.display());
    assert!(log.contains(&line) && log.contains("kdns --uninstall-xdp"), "no '{line}' in the log:\n{log}");
    assert_eq!(attached_id(&lab.server, &sif), Some(id2), "SIGTERM took the pinned program away");
    assert_eq!(fs.pins(&sif), PINS);

    // 5. Uninstall: no program, no pin, no directory; a second run finds nothing.
    let r = uninstall(&lab, &fs.pin_dir());
    assert!(r.ok(), "kdns --uninstall-xdp failed:\n{}", r.both());
    assert!(r.stdout.contains(&format!("{sif}: detached program {id2} (link {link1})")), "{}", r.both());
    assert!(r.stdout.contains(&format!("removed {}", if_dir.display())), "{}", r.both());
    let gone = poll_until(Duration::from_secs(3), Duration::from_millis(50), || attached_id(&lab.server, &sif).is_none().then_some(()));
    assert!(gone.is_some(), "a program is still attached to {sif} after --uninstall-xdp: {:?}", attached_program(&lab.server, &sif));
    assert!(!fs.pin_dir().exists(), "--uninstall-xdp left {}", fs.pin_dir().display());
    let r = uninstall(&lab, &fs.pin_dir());
    assert!(r.ok() && r.stdout.contains("nothing pinned under"), "{}", r.both());
    eprintln!("program {id1} -> {id2} on link {link1}; the new kdns answered {restart:?} after it was started");
}

#[test]
fn uninstall_off_bpffs_exits_1_naming_the_directory() {
    let dir = temp_dir("not-bpffs");
    std::fs::create_dir(dir.path().join("eth0")).expect("mkdir");
    let bin = kdns_bin();
    let r = run_limited(
        &[bin.to_str().expect("utf-8"), "--uninstall-xdp", "--pin-dir", dir.path().to_str().expect("utf-8")],
        Duration::from_secs(20),
    );
    assert_eq!(r.status.code(), Some(1), "{}", r.both());
    assert!(
        r.stderr.contains("--uninstall-xdp") && r.stderr.contains(&dir.path().display().to_string()) && r.stderr.contains("bpf"),
        "{}",
        r.both()
    );
    assert!(dir.path().join("eth0").exists(), "removed something off bpffs");
}
