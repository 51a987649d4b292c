//! The configuration: parsing, flags, checks naming the key, and the
//! documentation rendered from the table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kdns_core::engine::{ClientLimits, OverLimit};
use kdns_core::upstream::Selection;

use super::table::{DEFAULT_LISTEN, DEFAULT_REALTIME_PRIORITY, DEFAULT_STATE_FILE};
use super::*;

/// A resolv.conf with one usable nameserver.
const R: Option<&str> = Some("nameserver 10.0.0.53\n");

/// Settles `text` with the command line `args`, as `kdns` does.
fn settle_args(args: &[&str], text: &str, resolv_conf: Option<&str>, cores: usize) -> Result<Settings, ConfigError> {
    let m = command().try_get_matches_from(std::iter::once("kdns").chain(args.iter().copied())).expect("the command line parses");
    let mut file = parse(text)?;
    let names = file.apply_flags(&m)?;
    settle(file, &names, resolv_conf, cores)
}

#[test]
fn docker_section() {
    assert_eq!(settle_text("").unwrap().docker, None, "off by default");
    let s = settle_text(
        "[server]\nlisten = [\"172.30.53.53:53\"]\n[records]\ndomains = [\"kdns\"]\n[docker]\nenabled = true\nsocket = \"unix:///run/d.sock\"\nnetworks = [\"dnsnet\"]\nstarting = \"hide\"\n",
    )
    .unwrap();
    let d = s.docker.unwrap();
    assert_eq!(d.socket, PathBuf::from("/run/d.sock"));
    assert_eq!((d.networks, d.serve_starting), (vec!["dnsnet".to_string()], false));
    assert_eq!(d.listen, vec!["172.30.53.53".parse::<std::net::IpAddr>().unwrap()]);
    let d = settle_args(&["--docker-socket", "/tmp/x.sock", "--domain", "kdns"], "", R, 1).unwrap().docker.unwrap();
    assert_eq!((d.socket, d.serve_starting), (PathBuf::from("/tmp/x.sock"), true), "--docker-socket turns it on");
    for (text, key) in [
        ("[docker]\nenabled = true", "docker.enabled"),
        ("[records]\ndomains = [\"kdns\"]\n[docker]\nstarting = \"later\"", "docker.starting"),
        ("[records]\ndomains = [\"kdns\"]\n[docker]\nsocket = \"docker.sock\"", "docker.socket"),
        ("[records]\ndomains = [\"kdns\"]\n[docker]\nnetworks = [\"\"]", "docker.networks[0]"),
    ] {
        assert_eq!(settle_text(text).unwrap_err().key, key, "{text}");
    }
    assert_eq!(settle_args(&["--docker"], "", R, 1).unwrap_err().key, "--docker");
}

fn settle_text(text: &str) -> Result<Settings, ConfigError> {
    settle_args(&[], text, R, 4)
}

#[test]
fn limits_section() {
    let l = settle_text("").unwrap().engine.limits;
    assert_eq!(l, ClientLimits::default());
    assert_eq!(l.max_pending, 256, "a sixteenth of max_in_flight (4096)");
    assert_eq!(settle_text("[upstream]\nmax_in_flight = 160").unwrap().engine.limits.max_pending, 10);
    let s = settle_text(
        "[limits]\nclient_prefix_v4 = 24\nclient_prefix_v6 = 56\nclient_max_pending = 64\nclient_miss_rate = 0\nover_limit = \"refused\"\nclients = 100\n[upstream]\ntry_timeout_min_ms = 20\ncoalesce = false\nrandomize_case = false\n",
    )
    .unwrap();
    let l = s.engine.limits;
    assert_eq!(
        (l.prefix_v4, l.prefix_v6, l.max_pending, l.miss_rate, l.over_limit, l.table_size),
        (24, 56, 64, 0, OverLimit::Refused, 100)
    );
    assert_eq!(s.engine.try_timeout_min, Duration::from_millis(20));
    assert_eq!(s.engine.health.try_timeout_min, Duration::from_millis(20));
    assert!(!s.engine.coalesce && !s.engine.randomize_case);
    for (text, key) in [
        ("[limits]\nclient_prefix_v4 = 33", "limits.client_prefix_v4"),
        ("[limits]\nclient_prefix_v6 = 129", "limits.client_prefix_v6"),
        ("[limits]\nclient_max_pending = 5000", "limits.client_max_pending"),
        ("[limits]\nclient_miss_burst = 0", "limits.client_miss_burst"),
        ("[limits]\nover_limit = \"tarpit\"", "limits.over_limit"),
        ("[limits]\nclients = 0", "limits.clients"),
        ("[limits]\nxdp_client_qps = 10\nxdp_client_burst = 0", "limits.xdp_client_burst"),
        ("[limits]\nxdp_clients = 0", "limits.xdp_clients"),
        ("[upstream]\ntry_timeout_min_ms = 900", "upstream.try_timeout_min_ms"),
        ("[upstream]\ntry_timeout_min_ms = 0", "upstream.try_timeout_min_ms"),
    ] {
        assert_eq!(settle_text(text).unwrap_err().key, key, "{text}");
    }
}

#[test]
fn xdp_workers_are_real_time_unless_busy_polling() {
    let rt = |text: &str| settle_text(text).unwrap().realtime_priority;
    assert_eq!(rt(""), DEFAULT_REALTIME_PRIORITY);
    assert_eq!(rt("[xdp]\nbusy_poll = true"), 0);
    assert_eq!(rt("[xdp]\nrealtime_priority = 0"), 0);
    assert_eq!(rt("[xdp]\nrealtime_priority = 50"), 50);
    assert_eq!(rt("[xdp]\nrealtime_priority = 0\nbusy_poll = true"), 0);
    assert_eq!(settle_args(&["--realtime-priority", "0"], "[xdp]\nrealtime_priority = 20", R, 4).unwrap().realtime_priority, 0);
    assert_eq!(settle_args(&["--realtime-priority", "100"], "", R, 4).unwrap_err().key, "--realtime-priority");
}

#[test]
fn defaults_serve_on_loopback_with_resolv_conf_backends() {
    let s = settle_args(&[], "", Some("# x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n"), 2).unwrap();
    assert_eq!(s.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
    assert_eq!(s.workers, 2);
    let b: Vec<SocketAddr> = s.engine.backends.iter().map(|b| b.addr).collect();
    assert_eq!(b, vec!["192.0.2.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
    assert_eq!(s.backends_from, "/etc/resolv.conf");
    assert!(s.engine.acl.allows("127.0.0.1".parse().unwrap()));
    assert!(!s.engine.acl.allows("192.0.2.1".parse().unwrap()));
}

#[test]
fn resolv_conf_skips_kdns_itself() {
    let ours = ["0.0.0.0:53".parse().unwrap()];
    assert!(resolv_conf_backends("nameserver 127.0.0.1\n", &ours).is_empty());
    let ours = ["127.0.0.1:5353".parse().unwrap()];
    assert_eq!(resolv_conf_backends("nameserver 127.0.0.1\n", &ours).len(), 1);
    let err = settle_args(&["--listen", "127.0.0.1:53"], "", Some("nameserver 127.0.0.1"), 1).unwrap_err();
    assert_eq!(err.key, "upstream.backends");
}

#[test]
fn a_full_file() {
    let s = settle_text(
        r#"
        [server]
        listen = ["10.53.0.1:53", "[fd00::53]"]
        workers = 2
        allow = ["10.53.0.0/16"]
        [cache]
        entries = 1000
        min_ttl = 5
        [upstream]
        backends = ["10.53.1.1", { address = "10.53.1.2:5300", weight = 3 }]
        selection = "least-outstanding"
        try_timeout_ms = 700
        "#,
    )
    .unwrap();
    assert_eq!(s.listen[1], "[fd00::53]:53".parse().unwrap());
    assert_eq!(s.workers, 2);
    assert_eq!(s.engine.backends[1].weight, 3);
    assert_eq!(s.engine.backends[1].addr, "10.53.1.2:5300".parse().unwrap());
    assert_eq!(s.engine.try_timeout, Duration::from_millis(700));
    assert_eq!(s.engine.cache.max_entries, 1000);
    assert_eq!(s.engine.cache.min_ttl, 5);
    assert_eq!(s.engine.selection, Selection::LeastOutstanding);
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("[server]\nlisten = [\"nope\"]", "server.listen[0]"),
        ("[server]\nworkers = \"many\"", "server.workers"),
        ("[server]\nallow = [\"10.0.0.0/40\"]", "server.allow[0]"),
        ("[cache]\nmin_ttl = 10\nmax_ttl = 5", "cache.min_ttl"),
        ("[upstream]\nbackends = [\"x.y\"]", "upstream.backends[0]"),
        ("[upstream]\nselection = \"random\"", "upstream.selection"),
        ("[upstream]\ntry_timeout_ms = 0", "upstream.try_timeout_ms"),
        ("[upstream]\nbackends = [{ address = \"10.0.0.1\", weight = 0 }]", "upstream.backends[0]"),
        ("[server]\nlog_level = \"loud\"", "server.log_level"),
        ("[xdp]\nrealtime_priority = 100", "xdp.realtime_priority"),
        ("[xdp]\nrealtime_priority = 5\nbusy_poll = true", "xdp.realtime_priority"),
        ("[xdp]\nring_size = 1000", "xdp.ring_size"),
        ("[tcp]\nmax_connections = 0", "tcp.max_connections"),
        ("[upstream]\nsource_ports = 0", "upstream.source_ports"),
        ("[upstream]\nsource_ports = 5000", "upstream.source_ports"),
        ("[upstream]\nsource_port_rotate_ms = 100000000", "upstream.source_port_rotate_ms"),
        ("[tcp]\nmax_connections_per_client = 0", "tcp.max_connections_per_client"),
    ];
    for (text, key) in cases {
        assert_eq!(settle_text(text).unwrap_err().key, key, "{text}");
    }
    // Unknown keys and wrong types are caught by the parser, with the key in the message.
    let e = settle_text("[server]\nlisten_on = []").unwrap_err();
    assert!(e.msg.contains("listen_on"), "{e}");
    let e = settle_text("[cache]\nentries = \"lots\"").unwrap_err();
    assert!(e.msg.contains("entries"), "{e}");
}

#[test]
fn overrides_win() {
    let args = ["-l", "127.0.0.2:53", "--backend", "127.0.0.1:5301@2", "-b", "[::1]:5302", "--workers", "3", "--cache-entries", "77"];
    let s = settle_args(&args, "[server]\nworkers = 5\n[upstream]\nbackends = [\"10.0.0.1\"]", None, 8).unwrap();
    assert_eq!(s.workers, 3);
    assert_eq!(s.engine.cache.max_entries, 77);
    assert_eq!(s.engine.backends[0].weight, 2);
    assert_eq!(s.engine.backends[1].addr, "[::1]:5302".parse().unwrap());
    assert_eq!(s.backends_from, "--backend");
    assert_eq!(settle_args(&["--backend", "x@y"], "", None, 1).unwrap_err().key, "--backend[0]");
    assert_eq!(settle_args(&["-b", "10.0.0.1", "-b", "nope"], "", None, 1).unwrap_err().key, "--backend[1]");
    assert_eq!(settle_args(&["--workers", "many"], "", R, 1).unwrap_err().key, "--workers");
    assert_eq!(settle_args(&["--io", "dpdk"], "", R, 1).unwrap_err().key, "--io");
    assert_eq!(settle_args(&["--allow", "10.0.0.0/40"], "", R, 1).unwrap_err().key, "--allow[0]");
    assert_eq!(settle_args(&["--cache-entries", "0"], "", R, 1).unwrap_err().key, "--cache-entries");
    assert!(command().try_get_matches_from(["kdns", "--cache-entries", "lots"]).is_err(), "clap checks numbers");
}

#[test]
fn records_section() {
    let s = settle_text("").unwrap();
    assert!(s.records.domains.is_empty());
    assert_eq!(s.records.default_ttl, 10);
    assert_eq!(s.records.file, None);
    assert_eq!(s.records.state_file, Some(PathBuf::from(DEFAULT_STATE_FILE)));
    assert_eq!((s.records.control_tcp, s.records.control_token.as_ref().map(Secret::expose)), (None, None));

    let s = settle_text(
        "[records]\ndomains = [\"KDNS.\", \"svc.cluster.local\"]\ndefault_ttl = 30\nfile = \"/etc/kdns/records.toml\"\nstate_file = \"\"\n",
    )
    .unwrap();
    assert_eq!(s.records.domains, vec!["kdns", "svc.cluster.local"]);
    assert_eq!(s.records.default_ttl, 30);
    assert_eq!(s.records.file, Some(PathBuf::from("/etc/kdns/records.toml")));
    assert_eq!(s.records.state_file, None, "an empty state_file keeps nothing");

    let args = ["--records-file", "/tmp/r.toml", "--domain", "kdns", "--state-file", "/tmp/s.json"];
    let s = settle_args(&args, "[records]\ndomains = [\"other\"]", R, 1).unwrap();
    assert_eq!(s.records.domains, vec!["kdns"], "--domain replaces records.domains");
    assert_eq!(s.records.file, Some(PathBuf::from("/tmp/r.toml")));
    assert_eq!(s.records.state_file, Some(PathBuf::from("/tmp/s.json")));
    assert_eq!(settle_args(&["--domain", "ok", "--domain", "a..b"], "", R, 1).unwrap_err().key, "--domain[1]");

    for (text, key) in [
        ("[records]\ndomains = [\"a..b\"]", "records.domains[0]"),
        ("[records]\ndefault_ttl = 0", "records.default_ttl"),
        ("[records]\ncontrol_tcp = \"localhost\"", "records.control_tcp"),
        ("[records]\ncontrol_tcp = \"127.0.0.1:5380\"", "records.control_token_file"),
        ("[records]\ncontrol_tcp = \"127.0.0.1:5380\"\ncontrol_token_file = \"/nonexistent/token\"", "records.control_token_file"),
    ] {
        assert_eq!(settle_text(text).unwrap_err().key, key, "{text}");
    }
    let e = settle_text("[records]\nzones = []").unwrap_err();
    assert!(e.msg.contains("zones"), "{e}");

    let dir = std::env::temp_dir().join(format!("kdns-config-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tok = dir.join("token");
    std::fs::write(&tok, "  s3cret-token\n").unwrap();
    let s = settle_text(&format!("[records]\ncontrol_tcp = \"127.0.0.1:5380\"\ncontrol_token_file = \"{}\"", tok.display())).unwrap();
    assert_eq!(s.records.control_tcp, Some("127.0.0.1:5380".parse().unwrap()));
    assert_eq!(s.records.control_token.as_ref().map(Secret::expose), Some("s3cret-token"));
    assert!(!format!("{:?}", s.records).contains("s3cret"), "the token is not printed");
    std::fs::write(&tok, "\n").unwrap();
    let e = settle_text(&format!("[records]\ncontrol_tcp = \"127.0.0.1:5380\"\ncontrol_token_file = \"{}\"", tok.display())).unwrap_err();
    assert_eq!(e.key, "records.control_token_file");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The configuration file `--help` shows is a valid file, and (but for
/// the example backends) it settles to exactly the defaults.
#[test]
fn the_help_config_file_is_the_defaults() {
    let help = cli::config_file_help();
    let body: String = help.lines().skip(1).map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    let mut file = parse(&body).expect("the help's file parses");
    assert_eq!(file.upstream.backends.len(), 2, "the example backends");
    file.upstream.backends.clear();
    // Shown with the value they settle to when unset.
    let default = settle_args(&[], "", R, 2).unwrap();
    assert_eq!(file.limits.client_max_pending, Some(default.engine.limits.max_pending));
    assert_eq!(file.xdp.realtime_priority, Some(default.realtime_priority));
    assert_eq!(default.realtime_priority, DEFAULT_REALTIME_PRIORITY);
    file.limits.client_max_pending = None;
    file.xdp.realtime_priority = None;
    assert_eq!(file, FileConfig::default());
    for k in table::keys() {
        assert!(help.contains(&format!("\n    {} = ", k.name)), "--help shows {}.{}", k.section, k.name);
    }
}

/// The prose of `--help` mentions defaults through the table's constants.
#[test]
fn the_help_prose_names_the_defaults() {
    let help = command().render_long_help().to_string();
    assert!(!help.contains("{listen}") && !help.contains("{realtime_priority}"), "placeholders filled");
    assert!(help.contains(&format!("UDP and TCP on {DEFAULT_LISTEN}")));
    assert!(help.contains(&format!("(xdp.realtime_priority, {DEFAULT_REALTIME_PRIORITY})")));
    assert!(help.contains("CONFIGURATION FILE") && help.contains("EXIT STATUS:"));
}

/// The records file shown in `--help` parses.
#[test]
fn the_help_example_records_file_parses() {
    let body: String = help::AFTER_CONFIG
        .lines()
        .skip_while(|l| !l.starts_with("LOCAL RECORDS:"))
        .filter(|l| l.starts_with("        "))
        .map(|l| &l[8..])
        .collect::<Vec<_>>()
        .join("\n");
    let f = crate::records::file::parse(&body).expect("help example parses");
    assert_eq!((f.services.len(), f.records.len()), (1, 1));
}

#[test]
fn the_cli_is_well_formed() {
    command().debug_assert();
}

/// Each flag says in its help which key it replaces, and each key with
/// words refuses another word, naming the key.
#[test]
fn flags_and_words_follow_the_table() {
    for k in table::keys() {
        let key = format!("{}.{}", k.section, k.name);
        if let Some(f) = &k.flag {
            assert!(f.help.contains(&key), "--{} says it replaces {key}", f.long);
        }
        if k.words.is_some() {
            let e = settle_args(&[], &format!("[{}]\n{} = \"no-such-word\"", k.section, k.name), R, 1).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }
}

/// The README's configuration table is the one the table renders (run
/// `kdns --print-config-reference` to get it).
#[test]
fn the_readme_table_is_the_reference() {
    let readme = include_str!("../../README.md");
    let start = "<!-- configuration reference: kdns --print-config-reference -->\n";
    let end = "<!-- end of the configuration reference -->";
    let body = readme.split_once(start).and_then(|(_, r)| r.split_once(end)).map(|(t, _)| t);
    let expected = reference_table();
    assert!(
        body == Some(expected.as_str()),
        "README.md's configuration table differs from the settings table; between the lines\n{start}and\n{end}\nit should read:\n{expected}"
    );
}

/// The AF_XDP workers get the configuration's values, the settled
/// priority included (real time by default).
#[cfg(feature = "xdp")]
#[test]
fn xdp_workers_take_the_settled_values() {
    let w = settle_args(&[], "[xdp]\nframe_size = 4096\nring_size = 1024\nframes = 8192", R, 1).unwrap().xdp_worker();
    assert_eq!((w.frame_size, w.ring_size, w.frames, w.zero_copy, w.busy_poll), (4096, 1024, 8192, true, false));
    assert_eq!(w.realtime_priority, DEFAULT_REALTIME_PRIORITY);
    assert_eq!(settle_args(&["--realtime-priority", "0"], "", R, 1).unwrap().xdp_worker().realtime_priority, 0);
}
