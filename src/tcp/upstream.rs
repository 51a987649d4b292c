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
