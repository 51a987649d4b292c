//! Timers and the queue of packets the engine wants sent: retries,
//! probes, refreshes, answers to followers, stale answers and SERVFAIL.

use super::*;

impl Engine {
    /// When [`Engine::handle_timeout`] should next be called: the earliest
    /// try deadline or probe. `None`: no timer is running.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match (self.pending.next_deadline(), self.pool.next_probe_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`. A try that timed out on a backend
    /// that answered anything since it was sent (and within the last try
    /// timeout) keeps waiting there (a slow name); one that met silence is reported to the pool and
    /// re-sent to another backend, or waits for a late answer once every
    /// try is spent. At the query deadline the client gets a stale answer
    /// or SERVFAIL. Due probes are queued. Then drain
    /// [`Engine::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some((h, f)) = self.pending.pop_expired(now) {
            let Some(u) = self.pending.get(h).copied() else { continue };
            if u.purpose == Purpose::Probe {
                self.silent_timeout(f.backend, now, true);
                self.release(h);
                continue;
            }
            if u.over_tcp {
                if !u.settled {
                    self.stats.tcp_retry_failures.inc();
                    self.actions.push_back(Action::GiveUp(h));
                }
                continue;
            }
            let give_up_at = u.first_sent + self.query_deadline;
            // Alive: answered within the last try timeout (at the first
            // expiry, since the try left). Answers from before a long wait
            // say nothing about now: a backend that answered just after the
            // try left and then died must not keep it waiting to the deadline.
            let tt = u64::try_from(self.pool.try_timeout(f.backend).as_nanos()).unwrap_or(u64::MAX);
            let window = Timestamp::from_nanos(now.as_nanos().saturating_sub(tt));
            let alive = self.pool.answered_since(f.backend, f.sent_at.max(window));
            if now >= give_up_at {
                if !u.settled {
                    if alive {
                        self.stats.timeouts.inc();
                        self.pool.on_cancel(f.backend);
                    } else {
                        self.silent_timeout(f.backend, now, false);
                    }
                }
                self.actions.push_back(Action::GiveUp(h));
                continue;
            }
            if !u.settled && alive {
                // A slow name: the backend lives. Wait longer, doubling.
                if !u.slow {
                    self.stats.slow_tries.inc();
                    self.pool.on_slow(f.backend);
                }
                let wait = self.pool.try_timeout(f.backend).saturating_mul(2u32 << u.waits.min(8));
                if let Some(u) = self.pending.get_mut(h) {
                    u.slow = true;
                    u.waits = u.waits.saturating_add(1);
                }
                self.pending.rearm(h, now, (now + wait).min(give_up_at));
                continue;
            }
            if !u.settled {
                self.silent_timeout(f.backend, now, false);
                if let Some(u) = self.pending.get_mut(h) {
                    u.settled = true;
                }
            }
            let next = if u.tries < self.max_tries {
                // Prefer a backend not asked yet; else any that is up.
                self.pool.select(now, u.tried).or_else(|| self.pool.select(now, TriedSet::EMPTY)).or_else(|| self.pool.select_any(u.tried))
            } else {
                None
            };
            match next {
                Some(b) => {
                    if let Some(u) = self.pending.get_mut(h) {
                        u.next = b;
                    }
                    self.actions.push_back(Action::Send(h));
                }
                // Every try spent: a late answer may still come.
                None => {
                    self.pending.rearm(h, now, give_up_at);
                }
            }
        }
        while self.actions.len() < self.actions.capacity() {
            let Some(b) = self.pool.probe_due(now) else { break };
            let fill = |u: &mut Upstream| {
                *u = Upstream {
                    purpose: Purpose::Probe,
                    client_flags: 0,
                    qlen: self.probe_len as u8,
                    qtype: Rtype::TXT,
                    qclass: Class::CH,
                    next: b,
                    first_sent: now,
                    ..Upstream::default()
                };
                u.qname[..self.probe_len].copy_from_slice(&self.probe_name[..self.probe_len]);
            };
            match self.pending.insert(fill) {
                Some(h) => self.actions.push_back(Action::Send(h)),
                None => {
                    self.pool.on_cancel(b);
                    break;
                }
            }
        }
    }

    /// The next packet the engine wants sent (retries, probes, refreshes,
    /// answers to queries that waited on an identical one, answers to
    /// clients no backend answered), written into `out`. Call until it
    /// returns `None` after every `handle_*` call.
    pub fn poll_transmit(&mut self, now: Timestamp, out: &mut [u8]) -> Option<Transmit> {
        while let Some(a) = self.actions.pop_front() {
            match a {
                Action::Send(h) => {
                    let Some(u) = self.pending.get(h).copied() else { continue };
                    match self.send(now, h, u.next, out) {
                        Some(t) => {
                            match u.purpose {
                                Purpose::Client(_) if u.over_tcp => self.stats.tcp_retries.inc(),
                                Purpose::Client(_) if u.tries > 0 => self.stats.retried.inc(),
                                Purpose::Client(_) => {}
                                Purpose::Refresh => {
                                    if u.tries == 0 {
                                        self.stats.refreshes.inc();
                                    }
                                }
                                Purpose::Probe => self.stats.probes.inc(),
                            }
                            return Some(t);
                        }
                        None if u.purpose == Purpose::Probe => {
                            self.pool.on_cancel(u.next);
                            self.release(h);
                        }
                        None => {
                            if let Some(t) = self.give_up(h, now, out) {
                                return Some(t);
                            }
                        }
                    }
                }
                Action::GiveUp(h) => {
                    if let Some(t) = self.give_up(h, now, out) {
                        return Some(t);
                    }
                }
                Action::Fanout(h, gen) => {
                    if let Some(t) = self.answer_follower(h, gen, now, out) {
                        return Some(t);
                    }
                }
            }
        }
        None
    }

    /// Answers a query that waited on an identical one, from that one's
    /// answer (or, if the driver let a newer answer overwrite it, as if no
    /// backend had answered: a stale answer or SERVFAIL).
    pub(super) fn answer_follower(&mut self, h: Handle, gen: u32, now: Timestamp, out: &mut [u8]) -> Option<Transmit> {
        let u = *self.pending.get(h)?;
        let Purpose::Client(client) = u.purpose else {
            self.release(h);
            return None;
        };
        if gen == self.fanout.gen {
            if let Some(msg) = self.fanout.msg {
                self.release(h);
                let len = self.client_reply(now, &u, &self.fanout.buf[..self.fanout.len], &msg, out)?;
                return Some(Transmit::Client { client, len });
            }
        }
        self.give_up(h, now, out)
    }

    /// Ends a client's query no backend answered: a stale answer if the
    /// cache still has one, else SERVFAIL (and likewise for the queries
    /// waiting on it). A refresh that ends so leaves the entry as it was.
    pub(super) fn give_up(&mut self, h: Handle, now: Timestamp, out: &mut [u8]) -> Option<Transmit> {
        let u = *self.pending.get(h)?;
        self.release(h);
        self.queue_followers(&u, Action::GiveUp);
        let Purpose::Client(client) = u.purpose else {
            if u.purpose == Purpose::Refresh {
                if let Some(key) = self.cache.key(u.qname(), u.qtype, u.qclass, u.key_flags) {
                    self.cache.refresh_failed(&key);
                }
            }
            return None;
        };
        let (opt, room) = self.reply_room(u.client_edns, u.key_flags, client.transport, out.len());
        let stale =
            self.cache.key(u.qname(), u.qtype, u.qclass, u.key_flags).and_then(|k| self.cache.lookup_stale(now, &k, &mut out[..room]));
        let len = match stale {
            Some(len) => {
                self.stats.stale_answers.inc();
                reply::finish(out, len, u.client_id, u.client_flags, Some(u.qname()), opt)
            }
            None => {
                self.stats.gave_up.inc();
                reply::servfail(out, &u_question(&u), u.client_id, u.client_flags, opt)?
            }
        };
        self.count_reply(out);
        self.stats.latency(now.saturating_since(u.first_sent));
        Some(Transmit::Client { client, len })
    }
}
