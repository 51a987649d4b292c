use super::*;

#[test]
fn counters_add_field_by_field() {
    let mut a = Counters { queries: 2, ..Counters::default() };
    a.rcodes.0[0] = 1;
    a.drops.0[1] = 4;
    a.io.rx = 7;
    let mut b = a.clone();
    b.queries = u64::MAX;
    b.sum(&a);
    assert_eq!((b.queries, b.rcodes.0[0], b.drops.0[1], b.io.rx), (1, 2, 8, 14), "wrapping sums");
}

#[test]
fn rcodes_list_mnemonics_and_nonzero_others() {
    let mut r = ByRcode::default();
    r.0[3] = 5;
    r.0[12] = 1;
    let v = serde_json::to_value(r).unwrap();
    let m = v.as_object().unwrap();
    assert_eq!(m["NXDOMAIN"], 5);
    assert_eq!(m["NOERROR"], 0, "a mnemonic is always listed");
    assert_eq!(m["RCODE12"], 1);
    assert!(!m.contains_key("RCODE13"), "others only when non-zero");
    assert!(serde_json::to_string(&r).unwrap().starts_with(r#"{"NOERROR":0,"FORMERR":0,"SERVFAIL":0,"NXDOMAIN":5,"#), "rcode order");
    assert_eq!(serde_json::from_value::<ByRcode>(v).unwrap(), r, "read back");
}

#[test]
fn drops_by_name_and_unknown_names_are_skipped() {
    let v = serde_json::json!({"query_too_short": 2, "reason_of_a_later_version": 9});
    let d: ByDropReason = serde_json::from_value(v).unwrap();
    assert_eq!(d.total(), 2);
    assert_eq!(d.0[0], 2);
    let out = serde_json::to_value(d).unwrap();
    assert_eq!(out.as_object().unwrap().len(), DROPS, "every reason is listed");
}

#[test]
fn documents_read_back_and_absent_fields_default() {
    let mut s = Stats { version: "1".into(), ..Stats::default() };
    s.totals.counters.queries = 3;
    s.workers.push(WorkerStats { id: 1, kind: "udp".into(), snapshot: SnapshotState::Timeout, ..WorkerStats::default() });
    s.backends.push(Backend { address: "10.0.0.1:53".into(), state: BackendState::Partial, ..Backend::default() });
    s.xdp.push(XdpInterface {
        interface: "eth0".into(),
        error: None,
        program: Some(XdpProgram { program_id: 9, link_id: 4, mode: "driver".into(), attached_at: 5, ..XdpProgram::default() }),
        queues: vec![XdpQueue { queue: 1, redirected: 5, ..XdpQueue::default() }],
    });
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["totals"]["queries"], 3, "counters are flattened");
    assert_eq!(v["workers"][0]["snapshot"], "timeout");
    assert_eq!(v["backends"][0]["state"], "partial");
    assert!(v["xdp"][0].get("error").is_none(), "no error field without an error");
    assert!(v["xdp"][0]["program"].get("pin_dir").is_none() && v["xdp"][0]["program"].get("adopted_from").is_none());
    assert_eq!(v["xdp"][0]["program"]["link_id"], 4);
    assert_eq!(serde_json::from_value::<Stats>(v).unwrap(), s);
    let w: WorkerStats = serde_json::from_str(r#"{"id": 2, "queries": 10, "future": true}"#).unwrap();
    assert_eq!((w.id, w.counters.queries, w.snapshot), (2, 10, SnapshotState::Ok));
}
