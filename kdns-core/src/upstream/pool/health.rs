//! In-band health tracking: what the pool does with each outcome the
//! engine reports (the suspect / probe / down state machine of the module
//! docs of [`super`]), and each backend's RTT estimator (RFC 6298).

use core::time::Duration;

use super::{BackendId, BackendState, Pool, Probe, Slot, Transition};
use crate::time::Timestamp;

impl Pool {
    /// How long a try to backend `id` waits: its retransmission timeout
    /// (see the module docs). Panics if `id` is not from this pool.
    pub fn try_timeout(&self, id: BackendId) -> Duration {
        let s = &self.slots[id.index()];
        if s.srtt_us == 0 {
            return self.cfg.try_timeout_max;
        }
        Duration::from_micros(s.srtt_us + 4 * s.rttvar_us).clamp(self.cfg.try_timeout_min, self.cfg.try_timeout_max)
    }

    /// How long a probe to backend `id` waits: four times its try timeout,
    /// at most `try_timeout_max` (a probe decides a backend's fate, so it
    /// is given more room than a try).
    pub fn probe_timeout(&self, id: BackendId) -> Duration {
        (self.try_timeout(id) * 4).min(self.cfg.try_timeout_max)
    }

    /// A query (or a probe) was sent to `id` at `now`. Unknown ids are
    /// ignored.
    pub fn on_sent(&mut self, id: BackendId, now: Timestamp) {
        let Some(s) = self.slots.get_mut(id.index()) else {
            return;
        };
        let st = &self.stats[id.index()];
        s.outstanding = s.outstanding.saturating_add(1);
        st.outstanding.set(u64::from(s.outstanding));
        st.sent.inc();
        if s.probe == Probe::Dispensed {
            s.probe = Probe::InFlight { sent_at: now };
        } else if s.state == BackendState::Down {
            // Regular traffic to a down backend: not a probe.
            s.stale = s.stale.saturating_add(1);
        }
    }

    /// Takes one query off `id`'s outstanding count; false (and counted as
    /// spurious) if there was none.
    fn settle(&mut self, i: usize) -> bool {
        let s = &mut self.slots[i];
        if s.outstanding == 0 {
            self.stats[i].spurious.inc();
            return false;
        }
        s.outstanding -= 1;
        if s.outstanding == 0 && matches!(s.probe, Probe::InFlight { .. }) {
            // Nothing is out, so no probe is either (its outcome was
            // reported as a regular one).
            s.probe = Probe::Idle;
        }
        self.stats[i].outstanding.set(u64::from(s.outstanding));
        true
    }

    /// The common start of an answer or timeout report: `id`'s index and
    /// whether the outcome is the probe in flight, after settling one
    /// outstanding query. `None` for an unknown id or nothing outstanding.
    fn settle_outcome(&mut self, id: BackendId, probe: bool) -> Option<(usize, bool)> {
        let i = id.index();
        if i >= self.slots.len() {
            return None;
        }
        let probe = probe && matches!(self.slots[i].probe, Probe::InFlight { .. });
        self.settle(i).then_some((i, probe))
    }

    /// An answer from `id` arrived at `now`. `rtt` is the time since its
    /// try was sent, when that is a fair sample of the backend's speed (an
    /// answer within the try's timeout); `probe` says whether it answers
    /// the probe [`Pool::probe_due`] handed out. Any answer proves the
    /// backend alive; a good probe answer may bring a down backend up.
    pub fn on_answer(&mut self, id: BackendId, now: Timestamp, rtt: Option<Duration>, probe: bool) -> Option<Transition> {
        let (i, probe) = self.settle_outcome(id, probe)?;
        self.stats[i].answers.inc();
        if let Some(rtt) = rtt {
            self.stats[i].record_rtt(rtt);
            self.slots[i].rtt_sample(rtt);
            let rto = u64::try_from(self.try_timeout(id).as_micros()).unwrap_or(u64::MAX);
            self.stats[i].try_timeout_us.set(rto);
        }
        let s = &mut self.slots[i];
        s.last_answer = Some(now);
        match s.state {
            BackendState::Up => {
                if s.stale > 0 && rtt.is_some_and(|r| now.saturating_since(s.since) < r) {
                    s.stale -= 1;
                }
                s.stale = s.stale.min(s.outstanding);
                if probe {
                    s.probe = Probe::Idle;
                    s.next_probe = now + self.cfg.probe_initial;
                }
                s.suspect = false;
                s.timeouts_in_row = 0;
                self.push_outcome(i, false);
                None
            }
            BackendState::Down if probe => {
                s.probe = Probe::Idle;
                s.good_probes += 1;
                if s.good_probes >= self.cfg.up_after_successes {
                    self.transition(i, BackendState::Up, now);
                    return Some(Transition::CameUp);
                }
                s.backoff = self.cfg.probe_initial;
                s.next_probe = now;
                None
            }
            BackendState::Down => {
                s.stale = s.stale.saturating_sub(1);
                None
            }
        }
    }

    /// A try to `id` outlived its timeout while `id` kept answering others
    /// (a slow name): counted, nothing else.
    pub fn on_slow(&mut self, id: BackendId) {
        if let Some(st) = self.stats.get(id.index()) {
            st.slow.inc();
        }
    }

    /// An answer from `id` to a try whose timeout was already reported (or
    /// that was re-sent elsewhere): nothing is settled, but the backend is
    /// alive. Clears an up backend's suspicion.
    pub fn on_late_answer(&mut self, id: BackendId, now: Timestamp) {
        let Some(s) = self.slots.get_mut(id.index()) else { return };
        self.stats[id.index()].late_answers.inc();
        s.last_answer = Some(now);
        if s.state == BackendState::Up {
            s.suspect = false;
            s.timeouts_in_row = 0;
        }
    }

    /// A try to `id` timed out at `now` with no answer at all from `id`
    /// since it was sent (a *silent* timeout; the engine does not report
    /// slow ones). `probe`: it was the probe [`Pool::probe_due`] handed
    /// out. Silent timeouts make an up backend suspect; a suspect's probe
    /// timing out takes it down; a failed probe of a down backend doubles
    /// its backoff.
    pub fn on_timeout(&mut self, id: BackendId, now: Timestamp, probe: bool) -> Option<Transition> {
        let (i, probe) = self.settle_outcome(id, probe)?;
        self.stats[i].timeouts.inc();
        let s = &mut self.slots[i];
        if probe {
            s.probe = Probe::Idle;
        } else if s.stale > 0 {
            s.stale -= 1;
            return None;
        }
        match s.state {
            BackendState::Up if probe => {
                self.transition(i, BackendState::Down, now);
                Some(Transition::WentDown)
            }
            BackendState::Up => {
                s.timeouts_in_row += 1;
                let k = self.cfg.down_after_timeouts;
                let in_row = k > 0 && s.timeouts_in_row >= k;
                if (self.push_outcome(i, true) || in_row) && !self.slots[i].suspect {
                    let s = &mut self.slots[i];
                    s.suspect = true;
                    s.next_probe = s.next_probe.max(now);
                    self.stats[i].suspected.inc();
                }
                None
            }
            BackendState::Down if probe => {
                s.good_probes = 0;
                s.backoff = s.backoff.saturating_mul(2).min(self.cfg.probe_max);
                s.next_probe = now + s.backoff;
                None
            }
            BackendState::Down => None,
        }
    }

    /// A query to `id` was dropped without an outcome (also: a probe from
    /// [`Pool::probe_due`] that could not be sent, whose turn stays due).
    pub fn on_cancel(&mut self, id: BackendId) {
        let i = id.index();
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        if s.probe == Probe::Dispensed {
            s.probe = Probe::Idle;
            return;
        }
        if !self.settle(i) {
            return;
        }
        self.stats[i].cancelled.inc();
        let s = &mut self.slots[i];
        if let Probe::InFlight { .. } = s.probe {
            // Conservative: a cancelled query may have been the probe.
            s.probe = Probe::Idle;
        }
        match s.state {
            BackendState::Up => s.stale = s.stale.min(s.outstanding),
            BackendState::Down => s.stale = s.stale.saturating_sub(1),
        }
    }
    /// Records an outcome in `i`'s window; true if a full window now holds
    /// too many failures.
    fn push_outcome(&mut self, i: usize, failure: bool) -> bool {
        let s = &mut self.slots[i];
        s.window_bits = ((s.window_bits << 1) | u64::from(failure)) & self.window_mask;
        s.window_filled = (s.window_filled + 1).min(self.cfg.window);
        self.cfg.window > 0 && s.window_filled == self.cfg.window && s.window_bits.count_ones() > self.ratio_limit
    }

    fn transition(&mut self, i: usize, to: BackendState, now: Timestamp) {
        let s = &mut self.slots[i];
        s.state = to;
        s.since = now;
        s.stale = s.outstanding;
        s.current = 0;
        s.timeouts_in_row = 0;
        s.window_bits = 0;
        s.window_filled = 0;
        s.suspect = false;
        s.good_probes = 0;
        s.probe = Probe::Idle;
        s.backoff = self.cfg.probe_initial;
        s.next_probe = now + self.cfg.probe_initial;
        let st = &self.stats[i];
        let bit = 1u64 << i;
        match to {
            BackendState::Up => {
                self.up |= bit;
                st.came_up.inc();
                st.state_up.set(1);
            }
            BackendState::Down => {
                self.up &= !bit;
                st.went_down.inc();
                st.state_up.set(0);
            }
        }
    }
}

impl Slot {
    /// A probe is wanted: down, or up and suspect, with none out.
    pub(super) fn wants_probe(&self) -> bool {
        (self.state == BackendState::Down || self.suspect) && self.probe == Probe::Idle
    }

    /// RFC 6298, section 2, in microseconds.
    fn rtt_sample(&mut self, rtt: Duration) {
        let r = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX / 16).clamp(1, u64::MAX / 16);
        if self.srtt_us == 0 {
            self.srtt_us = r;
            self.rttvar_us = r / 2;
        } else {
            self.rttvar_us = (3 * self.rttvar_us + self.srtt_us.abs_diff(r)) / 4;
            self.srtt_us = ((7 * self.srtt_us + r) / 8).max(1);
        }
    }
}
