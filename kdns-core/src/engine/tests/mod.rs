//! Engine scenarios on a virtual clock: a query, what the backends say,
//! time passing, and the answer the client gets.

use super::*;
use crate::testutil::{a, answer, query, soa, ttls, Rr};
use crate::upstream::BackendState;
use crate::wire::Section;

mod abuse;
mod basics;
mod kernel_tier;
mod local_records;
mod tcp_retry;

const B0: &str = "127.0.0.1:5301";
const B1: &str = "127.0.0.1:5302";

struct World {
    engine: Engine,
    now: Timestamp,
    out: Vec<u8>,
    next_id: u16,
}

/// What the client saw.
#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
}

impl Reply {
    fn header(&self) -> Header<&[u8]> {
        Header::new_checked(&self.bytes[..]).unwrap()
    }
    fn rcode(&self) -> Rcode {
        self.header().rcode()
    }
    fn ttls(&self) -> Vec<u32> {
        ttls(&self.bytes)
    }
    fn qname(&self) -> String {
        let m = Message::parse(&self.bytes).unwrap();
        m.question.name.display(&self.bytes).to_string()
    }
}

/// A query the engine sent to a backend.
#[derive(Debug, Clone)]
struct Sent {
    backend: BackendId,
    addr: SocketAddr,
    port: u16,
    bytes: Vec<u8>,
    /// Asked over TCP: the exchange to answer on.
    tcp: Option<TcpExchange>,
}

impl Sent {
    fn answer(&self, rcode: Rcode, rrs: &[Rr]) -> Vec<u8> {
        answer(&self.bytes, rcode, rrs, true)
    }
    /// An empty NOERROR answer with TC set.
    fn truncated(&self) -> Vec<u8> {
        let mut tc = self.answer(Rcode::NOERROR, &[]);
        tc[2] |= 0x02;
        tc
    }
    fn qname(&self) -> String {
        let m = Message::parse(&self.bytes).unwrap();
        m.question.name.display(&self.bytes).to_string()
    }
}

#[derive(Debug)]
enum Outcome {
    Reply(Reply),
    Forward(Sent),
    Wait,
    Drop(DropReason),
}

fn client() -> Client {
    Client { addr: "127.0.0.1:40000".parse().unwrap(), local: "127.0.0.1:53".parse().unwrap(), transport: Transport::Udp, tag: 7 }
}

impl World {
    fn new(backends: &[&str]) -> World {
        Self::with(backends, |_| {})
    }

    fn with(backends: &[&str], tweak: impl FnOnce(&mut EngineConfig)) -> World {
        let mut cfg = EngineConfig {
            backends: backends.iter().map(|b| BackendSpec::new(b.parse().unwrap())).collect(),
            cache: CacheConfig::for_entries(1024),
            // Round numbers for the scenarios below.
            try_timeout: Duration::from_millis(1000),
            query_deadline: Duration::from_millis(3500),
            // One client asks everything here; the fair-share scenarios
            // turn the limits on.
            limits: ClientLimits { max_pending: 0, miss_rate: 0, ..ClientLimits::default() },
            ..EngineConfig::default()
        };
        tweak(&mut cfg);
        World { engine: Engine::new(cfg).unwrap(), now: Timestamp::from_secs(1000), out: vec![0; 65535], next_id: 100 }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn send_raw(&mut self, c: &Client, q: &[u8]) -> Outcome {
        match self.engine.handle_query(self.now, c, q, &mut self.out) {
            Verdict::Reply(len) => Outcome::Reply(Reply { bytes: self.out[..len].to_vec() }),
            Verdict::Forward { backend, addr, len, port } => {
                Outcome::Forward(Sent { backend, addr, port, bytes: self.out[..len].to_vec(), tcp: None })
            }
            Verdict::Wait => Outcome::Wait,
            Verdict::Drop(r) => Outcome::Drop(r),
        }
    }

    fn ask(&mut self, name: &str, qtype: Rtype) -> Outcome {
        self.next_id += 1;
        let q = query(self.next_id, name, qtype, Some((1232, false)));
        self.send_raw(&client(), &q)
    }

    fn ask_forwarded(&mut self, name: &str) -> Sent {
        match self.ask(name, Rtype::A) {
            Outcome::Forward(s) => s,
            Outcome::Reply(r) => panic!("expected a forward, got a reply {:?}", r.rcode()),
            Outcome::Wait => panic!("expected a forward, got a wait"),
            Outcome::Drop(d) => panic!("expected a forward, got a drop {d:?}"),
        }
    }

    fn ask_answered(&mut self, name: &str) -> Reply {
        match self.ask(name, Rtype::A) {
            Outcome::Reply(r) => r,
            Outcome::Forward(s) => panic!("expected a reply, got a forward to {:?}", s.backend),
            Outcome::Wait => panic!("expected a reply, got a wait"),
            Outcome::Drop(d) => panic!("expected a reply, got a drop {d:?}"),
        }
    }

    fn backend_says(&mut self, from: SocketAddr, bytes: &[u8]) -> AnswerVerdict {
        self.engine.handle_backend_answer(self.now, from, 0, bytes, &mut self.out)
    }

    fn backend_says_on(&mut self, sent: &Sent, bytes: &[u8]) -> AnswerVerdict {
        self.engine.handle_backend_answer(self.now, sent.addr, sent.port, bytes, &mut self.out)
    }

    fn deliver(&mut self, sent: &Sent, rrs: &[Rr]) -> Reply {
        let ans = sent.answer(Rcode::NOERROR, rrs);
        match self.backend_says_on(sent, &ans) {
            AnswerVerdict::Reply { len, client: c } => {
                assert_eq!(c, client());
                Reply { bytes: self.out[..len].to_vec() }
            }
            v => panic!("answer not turned into a reply: {v:?}"),
        }
    }

    /// Runs timers at the current time and collects what the engine sends.
    fn tick(&mut self) -> (Vec<Sent>, Vec<Reply>) {
        if self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.engine.handle_timeout(self.now);
        }
        let (mut sent, mut replies) = (vec![], vec![]);
        while let Some(t) = self.engine.poll_transmit(self.now, &mut self.out) {
            match t {
                Transmit::Backend { backend, addr, len, port } => {
                    sent.push(Sent { backend, addr, port, bytes: self.out[..len].to_vec(), tcp: None })
                }
                Transmit::BackendTcp { backend, addr, len, exchange } => {
                    sent.push(Sent { backend, addr, port: 0, bytes: self.out[..len].to_vec(), tcp: Some(exchange) })
                }
                Transmit::Client { len, .. } => replies.push(Reply { bytes: self.out[..len].to_vec() }),
            }
        }
        (sent, replies)
    }

    /// Advances by `step` and runs timers, up to `steps` times, until the
    /// engine replies to a client; the first such reply.
    fn first_reply(&mut self, step: Duration, steps: usize) -> Option<Reply> {
        for _ in 0..steps {
            self.advance(step);
            if let Some(r) = self.tick().1.into_iter().next() {
                return Some(r);
            }
        }
        None
    }

    /// Asks `name` until the engine sends it to the first backend (other
    /// backends' tries are answered, and the answer left to expire).
    fn ask_forwarded_to_first(&mut self, name: &str) -> Sent {
        loop {
            let s = self.ask_forwarded(name);
            if s.backend == BackendId(0) {
                return s;
            }
            self.deliver(&s, &[a(60, [10, 0, 0, 1])]);
            self.advance(secs(61));
        }
    }

    /// Three silent timeouts (an overload burst, say) and an unanswered
    /// probe mark the only backend down.
    fn take_down_the_only_backend(&mut self) {
        for i in 0..3 {
            self.ask_forwarded(&format!("slow{i}.test"));
        }
        self.advance(Duration::from_millis(1000));
        self.tick();
        self.advance(Duration::from_millis(1000));
        self.tick();
        assert_eq!(self.engine.pool().state(BackendId(0)), BackendState::Down);
    }

    fn stats(&self) -> &EngineStats {
        self.engine.stats()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
