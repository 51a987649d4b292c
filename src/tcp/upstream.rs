//! TCP connections to the backends, one per exchange the engine asks for
//! ([`Transmit::BackendTcp`](kdns_core::engine::Transmit)): they carry the
//! engine's query out with its length prefix and one message back. Every
//! DNS decision (the query, its deadline, whether the answer is accepted,
//! what the client gets on failure) is the engine's.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use kdns_core::engine::TcpExchange;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// How an exchange's connection went this time it was ready.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// More to write or to read.
    Pending,
    /// The whole answer (without its length prefix).
    Answer(Vec<u8>),
    /// Refused, reset, or closed before a whole message.
    Failed,
}

struct Exchange {
    stream: TcpStream,
    exchange: TcpExchange,
    peer: SocketAddr,
    out: Vec<u8>,
    opos: usize,
    inbuf: Vec<u8>,
}

/// The open exchanges, keyed by their poll token.
pub(super) struct Upstreams {
    base: usize,
    span: usize,
    next: usize,
    open: HashMap<usize, Exchange>,
}

impl Upstreams {
    /// Exchanges get the tokens `base..base + span`.
    pub(super) fn new(base: usize, span: usize) -> Upstreams {
        Upstreams { base, span, next: 0, open: HashMap::new() }
    }

    pub(super) fn owns(&self, token: Token) -> bool {
        (self.base..self.base + self.span).contains(&token.0)
    }

    /// Connects to `addr` and queues `query` for it. False if the
    /// connection cannot even be started.
    pub(super) fn start(&mut self, registry: &Registry, exchange: TcpExchange, addr: SocketAddr, query: &[u8]) -> bool {
        let Ok(len) = u16::try_from(query.len()) else { return false };
        let Ok(mut stream) = TcpStream::connect(addr) else { return false };
        let key = self.base + self.next % self.span;
        self.next = self.next.wrapping_add(1);
        if self.open.contains_key(&key) || registry.register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE).is_err() {
            return false;
        }
        let mut out = Vec::with_capacity(2 + query.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(query);
        self.open.insert(key, Exchange { stream, exchange, peer: addr, out, opos: 0, inbuf: Vec::new() });
        true
    }

    /// Writes what is left of the query and reads what came back; once the
    /// exchange is over (answer or failure) its connection is closed and it
    /// is returned with the outcome.
    pub(super) fn ready(&mut self, registry: &Registry, token: Token, buf: &mut [u8]) -> Option<(TcpExchange, SocketAddr, Progress)> {
        let x = self.open.get_mut(&token.0)?;
        let p = x.progress(buf);
        if p == Progress::Pending {
            return None;
        }
        let mut x = self.open.remove(&token.0)?;
        let _ = registry.deregister(&mut x.stream);
        Some((x.exchange, x.peer, p))
    }

    /// Closes the connections of exchanges the engine no longer waits for
    /// (past their deadline).
    pub(super) fn retain(&mut self, registry: &Registry, mut open: impl FnMut(TcpExchange) -> bool) {
        self.open.retain(|_, x| {
            let keep = open(x.exchange);
            if !keep {
                tracing::debug!(backend = %x.peer, "tcp exchange with a backend timed out");
                let _ = registry.deregister(&mut x.stream);
            }
            keep
        });
    }
}

impl Exchange {
    fn progress(&mut self, buf: &mut [u8]) -> Progress {
        while self.opos < self.out.len() {
            match self.stream.write(&self.out[self.opos..]) {
                Ok(n) => self.opos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::NotConnected => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Failed,
            }
        }
        loop {
            if let Some(len) = self.inbuf.get(..2).map(|p| usize::from(u16::from_be_bytes([p[0], p[1]]))) {
                if self.inbuf.len() >= 2 + len {
                    return Progress::Answer(self.inbuf[2..2 + len].to_vec());
                }
            }
            match self.stream.read(buf) {
                Ok(0) => return Progress::Failed,
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Progress::Failed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    use kdns_core::engine::{Client, Engine, EngineConfig, Transmit, Transport, Verdict};
    use kdns_core::upstream::BackendSpec;
    use mio::{Events, Poll};

    use super::*;

    /// A real exchange handle: a TCP client's query whose UDP answer came
    /// back truncated, so the engine asks for the exchange.
    fn exchange(backend: SocketAddr) -> (Engine, TcpExchange, Vec<u8>) {
        let mut e = Engine::new(EngineConfig { backends: vec![BackendSpec::new(backend)], ..Default::default() }).unwrap();
        let c =
            Client { addr: "127.0.0.1:4000".parse().unwrap(), local: "127.0.0.1:53".parse().unwrap(), transport: Transport::Tcp, tag: 0 };
        let (mut name, mut q) = ([0u8; 64], [0u8; 64]);
        let n = kdns_core::wire::encode_name("big.test", &mut name).unwrap();
        let len = kdns_core::wire::write_query(&mut q, 1, 0x0100, &name[..n], kdns_core::wire::Rtype::A, kdns_core::wire::Class::IN, None)
            .unwrap();
        let mut out = vec![0u8; 65_535];
        let Verdict::Forward { len: ql, .. } = e.handle_query(kdns_core::Timestamp::ZERO, &c, &q[..len], &mut out) else { panic!() };
        let mut tc = out[..ql].to_vec();
        tc[2] |= 0x82; // QR, TC
        e.handle_backend_answer(kdns_core::Timestamp::ZERO, backend, 0, &tc, &mut out);
        let Some(Transmit::BackendTcp { exchange, len, .. }) = e.poll_transmit(kdns_core::Timestamp::ZERO, &mut out) else { panic!() };
        (e, exchange, out[..len].to_vec())
    }

    /// A backend listening on loopback, and an exchange started to it.
    struct Started {
        listener: std::net::TcpListener,
        addr: SocketAddr,
        ex: TcpExchange,
        query: Vec<u8>,
        poll: Poll,
        ups: Upstreams,
    }

    fn started() -> Started {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (_engine, ex, query) = exchange(addr);
        let poll = Poll::new().unwrap();
        let mut ups = Upstreams::new(100, 10);
        assert!(ups.start(poll.registry(), ex, addr, &query));
        Started { listener, addr, ex, query, poll, ups }
    }

    fn run(poll: &mut Poll, ups: &mut Upstreams) -> (TcpExchange, SocketAddr, Progress) {
        let mut events = Events::with_capacity(8);
        let mut buf = vec![0u8; 65_535];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
            for ev in events.iter() {
                if let Some(done) = ups.ready(poll.registry(), ev.token(), &mut buf) {
                    return done;
                }
            }
        }
        panic!("the exchange never ended");
    }

    #[test]
    fn the_query_goes_out_with_its_length_and_one_message_comes_back() {
        let Started { listener, addr, ex, query, mut poll, mut ups } = started();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = vec![0u8; 2 + query.len()];
            s.read_exact(&mut got).unwrap();
            assert_eq!(usize::from(u16::from_be_bytes([got[0], got[1]])), query.len());
            assert_eq!(&got[2..], &query[..]);
            // The answer in two writes: the length, then the message.
            s.write_all(&[0, 3]).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            s.write_all(b"abc").unwrap();
        });
        let (got_ex, peer, p) = run(&mut poll, &mut ups);
        server.join().unwrap();
        assert_eq!((got_ex, peer, p), (ex, addr, Progress::Answer(b"abc".to_vec())));
    }

    #[test]
    fn a_refused_or_cut_connection_fails_and_a_stale_one_is_closed() {
        let Started { listener, addr, ex, query, mut poll, mut ups } = started();
        let (s, _) = listener.accept().unwrap();
        drop(s); // closed before a whole message
        assert_eq!(run(&mut poll, &mut ups).2, Progress::Failed);
        drop(listener);
        // Nobody listens: refused at once, or once the connection is tried.
        let refused = !ups.start(poll.registry(), ex, addr, &query) || run(&mut poll, &mut ups).2 == Progress::Failed;
        assert!(refused);
        // An exchange the engine no longer waits for is closed by the sweep.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(ups.start(poll.registry(), ex, listener.local_addr().unwrap(), &query));
        ups.retain(poll.registry(), |_| false);
        assert!(ups.open.is_empty());
    }
}
