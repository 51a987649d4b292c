//! Health checks of service instances: the rise/fall state machine, a
//! scheduler (on a clock the caller gives, so tests use a virtual one) and
//! the checker thread, which runs every check without blocking (mio) so
//! that one slow instance never delays the others.
//!
//! Bounds: a check has its own timeout (at most its interval); an
//! instance has at most one check in flight; a check opens one socket.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use kdns_core::engine::Rng;
use kdns_core::wire::{encode_name, flags, write_query, Class, Rtype, HEADER_LEN};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use super::defs::{CheckKind, CheckSpec};

/// (service, instance id).
pub type Key = (String, String);

/// The health of one instance as its checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// In the answers.
    pub up: bool,
    /// Consecutive passes (while down) or 0.
    pub passes: u32,
    /// Consecutive failures (while up) or 0.
    pub failures: u32,
    /// Checks passed since the instance appeared.
    pub checks_ok: u64,
    /// Checks failed since the instance appeared.
    pub checks_failed: u64,
    /// Why the last check failed (cleared by a pass).
    pub last_error: Option<String>,
}

impl Default for Machine {
    /// A new instance starts up: it is in the answers until `fall` checks
    /// in a row fail.
    fn default() -> Self {
        Machine { up: true, passes: 0, failures: 0, checks_ok: 0, checks_failed: 0, last_error: None }
    }
}

impl Machine {
    /// Records one check's outcome; returns the new state when it changed.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.checks_ok += 1;
            self.failures = 0;
            self.last_error = None;
            if !self.up {
                self.passes += 1;
                if self.passes >= rise.max(1) {
                    self.up = true;
                    self.passes = 0;
                    return Some(true);
                }
            }
        } else {
            self.checks_failed += 1;
            self.passes = 0;
            if self.up {
                self.failures += 1;
                if self.failures >= fall.max(1) {
                    self.up = false;
                    self.failures = 0;
                    return Some(false);
                }
            }
        }
        None
    }
}

/// One instance to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// (service, instance id).
    pub key: Key,
    /// Where: the instance's first address and the check's port.
    pub addr: SocketAddr,
    /// What.
    pub check: CheckSpec,
}

#[derive(Debug)]
struct Slot {
    target: Target,
    /// When the next check starts (time since the scheduler's origin).
    next: Duration,
    running: bool,
}

/// Decides when each instance is checked: every `interval` from the start
/// of its previous check, never two at once.
#[derive(Debug, Default)]
pub struct Scheduler {
    slots: HashMap<Key, Slot>,
}

impl Scheduler {
    /// Replaces the targets. Unchanged ones keep their schedule; new or
    /// changed ones are checked at once.
    pub fn set_targets(&mut self, targets: Vec<Target>, now: Duration) {
        let mut old = std::mem::take(&mut self.slots);
        for t in targets {
            let slot = match old.remove(&t.key) {
                Some(s) if s.target == t => s,
                Some(s) => Slot { target: t, next: now, running: s.running },
                None => Slot { target: t, next: now, running: false },
            };
            self.slots.insert(slot.target.key.clone(), slot);
        }
    }

    /// Targets whose check starts now; each is marked running until
    /// [`Scheduler::finished`].
    pub fn due(&mut self, now: Duration) -> Vec<Target> {
        let mut out = Vec::new();
        for s in self.slots.values_mut() {
            if !s.running && s.next <= now {
                s.running = true;
                s.next = now + Duration::from_millis(s.target.check.interval_ms);
                out.push(s.target.clone());
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The check of `key` is over.
    pub fn finished(&mut self, key: &Key) {
        if let Some(s) = self.slots.get_mut(key) {
            s.running = false;
        }
    }

    /// The earliest start of a check not running.
    pub fn next_start(&self) -> Option<Duration> {
        self.slots.values().filter(|s| !s.running).map(|s| s.next).min()
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Where check outcomes go: (target, passed, why it failed).
pub type Report = Arc<dyn Fn(&Target, bool, Option<String>) + Send + Sync>;

/// The running checker thread.
#[derive(Debug)]
pub struct Checker {
    targets: Sender<Vec<Target>>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const WAKE: Token = Token(usize::MAX);

impl Checker {
    /// Starts the thread; it reports every check's outcome to `report`.
    pub fn spawn(report: Report) -> io::Result<Checker> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new().name("kdns-health".into()).spawn(move || run(poll, rx, s, report))?;
        Ok(Checker { targets: tx, waker, stop, thread: Some(thread) })
    }

    /// Replaces the targets.
    pub fn set_targets(&self, t: Vec<Target>) {
        if self.targets.send(t).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Stops the thread (checks in flight are abandoned).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// A check in flight.
enum Probe {
    Tcp(TcpStream),
    Dns(UdpSocket, u16),
}

struct InFlight {
    target: Target,
    probe: Probe,
    deadline: Instant,
}

/// A DNS query for `name` A IN with `id` (RD set, no OPT).
pub fn dns_query(name: &str, id: u16) -> Option<Vec<u8>> {
    let mut qname = [0u8; 256];
    let n = encode_name(name, &mut qname).ok()?;
    let mut q = vec![0u8; HEADER_LEN + n + 4];
    let len = write_query(&mut q, id, flags::RD, &qname[..n], Rtype::A, Class::IN, None)?;
    q.truncate(len);
    Some(q)
}

fn start(t: &Target, id: u16) -> io::Result<Probe> {
    match t.check.kind {
        CheckKind::Tcp => Ok(Probe::Tcp(TcpStream::connect(t.addr)?)),
        CheckKind::Dns => {
            let any: IpAddr = if t.addr.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
            let s = UdpSocket::bind(SocketAddr::new(any, 0))?;
            s.connect(t.addr)?;
            let q = dns_query(t.check.name.as_deref().unwrap_or(&t.key.0), id)
                .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "bad check name"))?;
            s.send(&q)?;
            Ok(Probe::Dns(s, id))
        }
    }
}

/// Whether a probe is done: `Some(Ok)` passed, `Some(Err)` failed, `None` not yet.
fn progress(p: &mut Probe) -> Option<Result<(), String>> {
    match p {
        Probe::Tcp(s) => {
            if let Ok(Some(e)) | Err(e) = s.take_error() {
                return Some(Err(format!("connect: {e}")));
            }
            match s.peer_addr() {
                Ok(_) => Some(Ok(())),
                Err(e) if e.kind() == ErrorKind::NotConnected => None,
                Err(e) => Some(Err(format!("connect: {e}"))),
            }
        }
        Probe::Dns(s, id) => {
            let mut buf = [0u8; 512];
            loop {
                match s.recv(&mut buf) {
                    // Any answer to our query counts (whatever its rcode).
                    Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 => return Some(Ok(())),
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                    Err(e) => return Some(Err(format!("dns: {e}"))),
                }
            }
        }
    }
}

fn run(mut poll: Poll, rx: Receiver<Vec<Target>>, stop: Arc<AtomicBool>, report: Report) {
    let origin = Instant::now();
    let mut sched = Scheduler::default();
    let mut flights: HashMap<usize, InFlight> = HashMap::new();
    let mut next_token = 0usize;
    let mut events = Events::with_capacity(64);
    let mut rng = Rng::new((origin.elapsed().as_nanos() as u64) ^ u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15);
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut latest = None;
        loop {
            match rx.try_recv() {
                Ok(t) => latest = Some(t),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if let Some(t) = latest {
            sched.set_targets(t, origin.elapsed());
            tracing::debug!(targets = sched.len(), "health check targets updated");
        }
        for t in sched.due(origin.elapsed()) {
            let started = start(&t, rng.next_u16()).and_then(|mut p| {
                let token = Token(next_token);
                match &mut p {
                    Probe::Tcp(s) => poll.registry().register(s, token, Interest::WRITABLE)?,
                    Probe::Dns(s, _) => poll.registry().register(s, token, Interest::READABLE)?,
                }
                Ok(p)
            });
            match started {
                Ok(probe) => {
                    let deadline = Instant::now() + Duration::from_millis(t.check.timeout_ms);
                    flights.insert(next_token, InFlight { target: t, probe, deadline });
                    next_token = next_token.wrapping_add(1) % (usize::MAX - 1);
                }
                Err(e) => {
                    sched.finished(&t.key);
                    report(&t, false, Some(format!("cannot start check: {e}")));
                }
            }
        }
        let now = Instant::now();
        let mut wait = Duration::from_secs(1);
        if let Some(n) = sched.next_start() {
            wait = wait.min(n.saturating_sub(origin.elapsed()));
        }
        if let Some(d) = flights.values().map(|f| f.deadline).min() {
            wait = wait.min(d.saturating_duration_since(now));
        }
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != ErrorKind::Interrupted {
                tracing::error!("health checks stop: poll failed: {e}");
                return;
            }
        }
        let mut done: Vec<(usize, Result<(), String>)> = Vec::new();
        for ev in events.iter() {
            if ev.token() == WAKE {
                continue;
            }
            if let Some(f) = flights.get_mut(&ev.token().0) {
                if let Some(r) = progress(&mut f.probe) {
                    done.push((ev.token().0, r));
                }
            }
        }
        let now = Instant::now();
        for (tok, f) in &flights {
            if f.deadline <= now && !done.iter().any(|(t, _)| t == tok) {
                done.push((*tok, Err(format!("no answer within {} ms", f.target.check.timeout_ms))));
            }
        }
        for (tok, r) in done {
            let Some(mut f) = flights.remove(&tok) else { continue };
            let _ = match &mut f.probe {
                Probe::Tcp(s) => poll.registry().deregister(s),
                Probe::Dns(s, _) => poll.registry().deregister(s),
            };
            sched.finished(&f.target.key);
            match r {
                Ok(()) => report(&f.target, true, None),
                Err(e) => report(&f.target, false, Some(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn rise_and_fall() {
        let mut m = Machine::default();
        assert!(m.up);
        // fall = 3: two failures are not enough, a pass resets the count.
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(true, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), Some(false));
        assert!(!m.up);
        assert_eq!(m.record(false, 2, 3), None, "already down");
        // rise = 2: a failure between passes starts over.
        assert_eq!(m.record(true, 2, 3), None);
        assert_eq!(m.record(false, 2, 3), None);
        assert_eq!(m.record(true, 2, 3), None);
        assert_eq!(m.record(true, 2, 3), Some(true));
        assert!(m.up);
        assert_eq!((m.checks_ok, m.checks_failed), (4, 7));
        // rise = fall = 1 flips at once.
        assert_eq!(m.record(false, 1, 1), Some(false));
        assert_eq!(m.record(true, 1, 1), Some(true));
    }

    fn target(id: &str, interval_ms: u64) -> Target {
        Target {
            key: ("web".into(), id.into()),
            addr: "127.0.0.1:1".parse().unwrap(),
            check: CheckSpec { kind: CheckKind::Tcp, port: 1, name: None, interval_ms, timeout_ms: interval_ms / 2, rise: 2, fall: 2 },
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Scheduler and machine together on a virtual clock: an instance
    /// whose checks fail leaves after `fall` intervals and returns `rise`
    /// intervals after they pass again.
    #[test]
    fn virtual_clock() {
        let mut s = Scheduler::default();
        s.set_targets(vec![target("c1", 1000), target("c2", 250)], ms(0));
        let mut m = Machine::default();
        let mut healthy_c1 = true;
        let mut changes = Vec::new();
        let mut checks_c1 = 0;
        // c1 fails from 0 to 4.5 s, then passes.
        for t in (0..10_000).step_by(50) {
            let now = ms(t);
            for tg in s.due(now) {
                if tg.key.1 == "c1" {
                    checks_c1 += 1;
                    if let Some(up) = m.record(t >= 4500, 2, 2) {
                        healthy_c1 = up;
                        changes.push((t, up));
                    }
                }
                s.finished(&tg.key);
            }
        }
        assert!(healthy_c1);
        // Down after the 2nd failure (t = 1000), up after the 2nd pass (t = 6000).
        assert_eq!(changes, vec![(1000, false), (6000, true)]);
        assert_eq!(checks_c1, 10);
        assert_eq!(s.next_start(), Some(ms(10_000)));
    }

    #[test]
    fn one_check_in_flight_per_instance() {
        let mut s = Scheduler::default();
        s.set_targets(vec![target("c1", 100)], ms(0));
        assert_eq!(s.due(ms(0)).len(), 1);
        assert!(s.due(ms(500)).is_empty(), "still running");
        assert_eq!(s.next_start(), None);
        s.finished(&("web".into(), "c1".into()));
        assert_eq!(s.due(ms(500)).len(), 1, "overdue: starts at once");
        s.finished(&("web".into(), "c1".into()));
        assert!(s.due(ms(550)).is_empty());
        // Same targets again: the schedule is kept; a changed one restarts.
        s.set_targets(vec![target("c1", 100)], ms(560));
        assert!(s.due(ms(560)).is_empty());
        s.set_targets(vec![target("c1", 200)], ms(570));
        assert_eq!(s.due(ms(570)).len(), 1);
        s.set_targets(vec![], ms(580));
        assert_eq!(s.len(), 0);
    }

    fn check(kind: CheckKind, port: u16) -> CheckSpec {
        CheckSpec { kind, port, name: Some("web.kdns".into()), interval_ms: 100, timeout_ms: 80, rise: 1, fall: 1 }
    }

    /// Real checks against local sockets.
    #[test]
    fn tcp_and_dns_checks() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        // A DNS server that answers everything, and a UDP socket that never answers.
        let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dns_addr = dns.local_addr().unwrap();
        let quiet = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let quiet_addr = quiet.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 512];
            while let Ok((n, from)) = dns.recv_from(&mut b) {
                b[2] |= 0x80;
                b[3] = (b[3] & 0xf0) | 3; // NXDOMAIN still counts
                let _ = dns.send_to(&b[..n], from);
            }
        });
        type Outcomes = HashMap<String, Vec<(bool, Option<String>)>>;
        let got: Arc<Mutex<Outcomes>> = Arc::default();
        let g = Arc::clone(&got);
        let c = Checker::spawn(Arc::new(move |t: &Target, ok, why| {
            g.lock().unwrap().entry(t.key.1.clone()).or_default().push((ok, why));
        }))
        .unwrap();
        let t = |id: &str, addr: SocketAddr, kind| Target { key: ("web".into(), id.into()), addr, check: check(kind, addr.port()) };
        c.set_targets(vec![
            t("tcp-open", open, CheckKind::Tcp),
            t("tcp-closed", closed, CheckKind::Tcp),
            t("dns-ok", dns_addr, CheckKind::Dns),
            t("dns-quiet", quiet_addr, CheckKind::Dns),
        ]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && got.lock().unwrap().values().filter(|v| v.len() >= 2).count() < 4 {
            std::thread::sleep(Duration::from_millis(20));
        }
        c.stop();
        let got = got.lock().unwrap();
        let all = |id: &str, ok: bool| got.get(id).is_some_and(|v| v.len() >= 2 && v.iter().all(|(o, _)| *o == ok));
        assert!(all("tcp-open", true), "{got:?}");
        assert!(all("tcp-closed", false), "{got:?}");
        assert!(all("dns-ok", true), "{got:?}");
        assert!(all("dns-quiet", false), "{got:?}");
        assert!(got["tcp-closed"][0].1.as_deref().unwrap().contains("refused"), "{got:?}");
        assert!(got["dns-quiet"][0].1.as_deref().unwrap().contains("no answer within 80 ms"), "{got:?}");
        drop(listener);
        drop(quiet);
    }

    #[test]
    fn dns_query_bytes() {
        let q = dns_query("web.kdns", 0x1234).unwrap();
        assert_eq!(&q[..12], &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..], b"\x03web\x04kdns\x00\x00\x01\x00\x01");
    }
}
