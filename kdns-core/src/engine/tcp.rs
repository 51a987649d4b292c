//! Asking a backend again over TCP when its UDP answer to a TCP client was
//! truncated (RFC 7766: a client that asked over TCP expects the whole
//! answer, so the truncated one is not passed on).
//!
//! The engine does all the DNS of it: the query (a fresh ID, the client's
//! question in its 0x20 spelling, our OPT), the deadline (the query
//! deadline, on the engine's timers), the check of the answer (the ID,
//! exactly the question asked, on the exchange asked), the reply to the
//! client, and a stale answer or SERVFAIL when the exchange fails. The
//! driver only carries bytes over a TCP connection:
//!
//! ```text
//!   handle_backend_answer(.., truncated answer for a TCP client, ..) -> Consumed
//!   poll_transmit -> Transmit::BackendTcp { addr, len, exchange }
//!   driver: connect, send, read one message
//!       handle_tcp_answer(now, exchange, from, bytes, out) -> AnswerVerdict
//!    or tcp_failed(now, exchange)   then poll_transmit -> the stale answer or SERVFAIL
//! ```

use core::net::SocketAddr;

use super::{Action, AnswerVerdict, Engine, Purpose, Transmit, Upstream, Via};
use crate::time::Timestamp;
use crate::upstream::pending::Handle;
use crate::upstream::{BackendId, BackendState};

/// One TCP exchange with a backend, as [`Transmit::BackendTcp`] names it;
/// the driver gives it back with the answer or the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpExchange(pub(super) Handle);

impl Engine {
    /// Hands the message read from the TCP connection of `exchange` (to
    /// `from`, without its length prefix) to the engine. Accepted only with
    /// the exchange's ID and question; then the reply for the client is in
    /// `out` as for [`Engine::handle_backend_answer`]. An answer that is
    /// not accepted is counted as a drop and ends the exchange (the client
    /// gets a stale answer or SERVFAIL from [`Engine::poll_transmit`]).
    pub fn handle_tcp_answer(
        &mut self,
        now: Timestamp,
        exchange: TcpExchange,
        from: SocketAddr,
        answer: &[u8],
        out: &mut [u8],
    ) -> AnswerVerdict {
        let v = self.backend_answer(now, from, Via::Tcp(exchange.0), answer, out);
        if let AnswerVerdict::Drop(r) = v {
            self.stats.count_drop(r);
            self.tcp_failed(now, exchange);
        }
        v
    }

    /// The TCP exchange `exchange` failed (no connection, reset, closed
    /// before a whole message): its client gets a stale answer or SERVFAIL
    /// from [`Engine::poll_transmit`]. Nothing happens if it is already over.
    pub fn tcp_failed(&mut self, _now: Timestamp, exchange: TcpExchange) {
        if !self.tcp_exchange_open(exchange) {
            return;
        }
        if let Some(u) = self.pending.get_mut(exchange.0) {
            // Settled: its deadline, if it comes before the give-up is
            // drained, finds it over.
            u.settled = true;
        }
        self.stats.tcp_retry_failures.inc();
        self.actions.push_back(Action::GiveUp(exchange.0));
    }

    /// Whether the engine still waits for `exchange` (false once it was
    /// answered, failed or passed its deadline: the driver closes its
    /// connection).
    pub fn tcp_exchange_open(&self, exchange: TcpExchange) -> bool {
        self.pending.get(exchange.0).is_some_and(|u| u.over_tcp && !u.settled)
    }

    /// The truncated answer to `u` came from `answered`: queue the same
    /// question over TCP, to that backend if it is up, else to any backend
    /// that is up. False (the truncated answer goes to the client as it
    /// is) when no backend is up or the pending table is full.
    pub(super) fn ask_over_tcp(&mut self, u: &Upstream, answered: BackendId) -> bool {
        let up = |b: BackendId| self.pool.state(b) == BackendState::Up;
        let Some(b) = Some(answered).filter(|&b| up(b)).or_else(|| self.pool.ids().find(|&b| up(b))) else { return false };
        let Purpose::Client(_) = u.purpose else { return false };
        let fill = |n: &mut Upstream| {
            *n = Upstream { next: b, over_tcp: true, ..*u };
            // Its own entry: no followers, not the coalescing leader, and
            // the client's share was given back with the UDP try.
            n.waiters = None;
            n.indexed = false;
            n.client_slot = super::NO_CLIENT;
            n.tries = 0;
            n.tried = crate::upstream::TriedSet::EMPTY;
        };
        match self.pending.insert(fill) {
            Some(h) => {
                self.actions.push_back(Action::Send(h));
                true
            }
            None => false,
        }
    }

    /// The end of [`Engine::send`] for a TCP exchange: its deadline is the
    /// query deadline from now (one connection, one try), and the pool
    /// does not count it.
    pub(super) fn send_tcp(&mut self, now: Timestamp, h: Handle, backend: BackendId, id: u16, len: usize) -> Option<Transmit> {
        if !self.pending.sent(h, backend, id, 0, now, now + self.query_deadline) {
            return None;
        }
        Some(Transmit::BackendTcp { backend, addr: self.pool.addr(backend), len, exchange: TcpExchange(h) })
    }
}
