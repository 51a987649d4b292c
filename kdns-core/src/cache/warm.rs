//! Export and import of the live entries: the cache outlives a restart.
//!
//! [`Cache::export`] writes every entry still servable (fresh, or within
//! its stale window) in the [`dump`] format, its lifetime relative to the
//! export; [`Cache::import`] puts them back at `now` less the time the
//! dump spent on disk, so TTLs keep counting down across the restart and no
//! entry outlives its source. An imported answer goes through the same
//! checks and bounds as a backend's (it is parsed, its TTL offsets found
//! again, the configured TTL limits and sizes applied, room made by the
//! CLOCK hand): a damaged or hostile dump can only be refused, never
//! corrupt the cache.

use core::time::Duration;

use super::dump::{self, DumpError, Export, Record, HINT_USED};
use super::{Cache, EntryKind, KeyFlags, NotCached, LIVE, NANOS, REFERENCED};
use crate::time::Timestamp;
use crate::wire::{Header, Message, Rcode, HEADER_LEN};

/// What [`Cache::import`] did with a dump's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Records the dump's header counts.
    pub records: u64,
    /// Entries put in the cache.
    pub loaded: u64,
    /// Records whose TTL (and stale window) ran out before the import.
    pub expired: u64,
    /// Records for a key the cache already holds for as long or longer
    /// (several workers cached the same name).
    pub duplicates: u64,
    /// Records that replaced an entry the cache held for less long (a
    /// copy of the same name from another worker, or an answer cached
    /// before the load); not counted in `loaded`.
    pub replaced: u64,
    /// Records this cache does not take (malformed, not cacheable under
    /// the current settings: too long, a foreign key flag).
    pub rejected: u64,
    /// Records not read: damaged or cut short (the walk stops at the first).
    pub damaged: u64,
    /// Entries evicted during the import to stay within the bounds (the
    /// dump held more than the cache does).
    pub evicted: u64,
    /// How long before the import the dump was written.
    pub age: Duration,
}

impl ImportReport {
    /// Records not loaded, for whatever reason.
    pub fn skipped(&self) -> u64 {
        self.expired + self.duplicates + self.rejected + self.damaged
    }
}

/// What became of one record.
enum Done {
    Loaded,
    Replaced,
}

/// Why one record was not loaded.
enum Skip {
    Expired,
    Duplicate,
    Rejected,
}

impl Cache {
    /// The records of every entry still servable at `now`, in the
    /// [`dump`] format, lifetimes relative to the instant `lead` before
    /// `now` (the dump's `written` stamp, read before the export started:
    /// an entry then looks `lead` older than it is, never younger).
    pub fn export(&self, now: Timestamp, lead: Duration) -> Export {
        let now = now.as_nanos();
        let lead = u64::try_from(lead.as_nanos()).unwrap_or(u64::MAX);
        let mut out = Export::default();
        let mut answer = Vec::new();
        for e in &self.entries {
            if e.state & LIVE == 0 || now >= e.stale_until {
                continue;
            }
            answer.resize(e.len as usize, 0);
            self.store.read(e.first_chunk, answer.len(), &mut answer);
            let expires_in = i128::from(e.expires) - i128::from(now) + i128::from(lead);
            let rec = Record {
                expires_in: expires_in.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
                age: now.saturating_sub(e.inserted).saturating_sub(lead),
                orig_ttl: e.orig_ttl,
                flags: e.flags.0,
                hints: if e.state & REFERENCED != 0 { HINT_USED } else { 0 },
                answer: &answer,
            };
            if rec.write(&mut out.bytes) {
                out.records += 1;
            }
        }
        out
    }

    /// Loads the dump `file` at `now`; `wall_now` is the wall clock (ns
    /// since the Unix epoch), to know how long the dump was on disk. An
    /// unreadable header is an error; bad records are skipped and counted.
    pub fn import(&mut self, now: Timestamp, wall_now: u64, file: &[u8]) -> Result<ImportReport, DumpError> {
        let (header, mut records) = dump::Records::new(file)?;
        let gap = header.age(wall_now)?;
        let evictions = self.stats.evictions.get();
        let mut report = ImportReport { records: header.records.into(), age: Duration::from_nanos(gap), ..ImportReport::default() };
        let mut buf = Vec::new();
        for rec in records.by_ref() {
            match self.import_one(now.as_nanos(), gap, &rec, &mut buf) {
                Ok(Done::Loaded) => report.loaded += 1,
                Ok(Done::Replaced) => report.replaced += 1,
                Err(Skip::Expired) => report.expired += 1,
                Err(Skip::Duplicate) => report.duplicates += 1,
                Err(Skip::Rejected) => report.rejected += 1,
            }
        }
        report.damaged = records.unread();
        report.evicted = self.stats.evictions.get().saturating_sub(evictions);
        self.stats.loaded.add(report.loaded);
        self.stats.load_expired.add(report.expired);
        Ok(report)
    }

    fn import_one(&mut self, now: u64, gap: u64, rec: &Record<'_>, buf: &mut Vec<u8>) -> Result<Done, Skip> {
        let answer = rec.answer;
        let msg = Message::parse(answer).map_err(|_| Skip::Rejected)?;
        if msg.edns().is_some() || msg.sections.end != answer.len() || rec.flags & !(KeyFlags::DO | KeyFlags::CD) != 0 {
            return Err(Skip::Rejected);
        }
        let q = msg.question;
        let name = answer.get(HEADER_LEN..q.name.end()).ok_or(Skip::Rejected)?;
        let key = self.key(name, q.qtype, q.qclass, KeyFlags(rec.flags)).ok_or(Skip::Rejected)?;
        let servfail = Header::new_checked(answer).map_or(true, |h| h.rcode() == Rcode::SERVFAIL);
        let window = u64::try_from(self.cfg.stale_window.as_nanos()).unwrap_or(u64::MAX);
        // Time left on the TTL now (negative: expired that long ago).
        let left = i128::from(rec.expires_in) - i128::from(gap);
        if left <= 0 && (servfail || -left >= i128::from(window)) {
            return Err(Skip::Expired);
        }
        let done = match self.find(&key) {
            Some(i) if i128::from(self.entries[i as usize].expires) >= i128::from(now) + left => return Err(Skip::Duplicate),
            Some(_) => Done::Replaced,
            None => Done::Loaded,
        };
        let at = Timestamp::from_nanos(now);
        if left <= 0 {
            // Within its stale window: stored as it was, served only stale.
            let expired_for = (-left) as u64;
            let (_, i) = self.store(at, &key, answer, &msg).map_err(|_| Skip::Rejected)?;
            let e = &mut self.entries[i as usize];
            e.expires = now.saturating_sub(expired_for);
            e.inserted = e.expires;
            e.stale_until = now.saturating_add(window - expired_for);
            return Ok(done);
        }
        // Fresh: count every TTL down by the whole seconds of its age; the
        // entry's insert time carries the fraction.
        let age = u128::from(rec.age) + u128::from(gap);
        let mut whole = u32::try_from(age / u128::from(NANOS)).unwrap_or(u32::MAX);
        let frac = (age % u128::from(NANOS)) as u64;
        let inserted = match now.checked_sub(frac) {
            Some(t) => t,
            None => {
                // Too early on this clock to date it back: one more second
                // off now, none counted until it has passed.
                whole = whole.saturating_add(1);
                now + (NANOS - frac)
            }
        };
        buf.clear();
        buf.extend_from_slice(answer);
        for r in msg.sections.records(answer) {
            buf[r.ttl_offset..r.ttl_offset + 4].copy_from_slice(&r.ttl.saturating_sub(whole).to_be_bytes());
        }
        let (kind, i) =
            self.store(at, &key, buf, &msg).map_err(|e| if e == NotCached::ZeroTtl { Skip::Expired } else { Skip::Rejected })?;
        let hi = self.cfg.max_ttl;
        let e = &mut self.entries[i as usize];
        let expires = (i128::from(now) + left).min(i128::from(e.expires)) as u64;
        e.inserted = inserted;
        e.expires = expires;
        e.stale_until = if kind == EntryKind::ServFail { expires } else { expires.saturating_add(window) };
        e.orig_ttl = rec.orig_ttl.clamp(e.orig_ttl, hi.max(e.orig_ttl));
        if rec.hints & HINT_USED != 0 {
            e.state |= REFERENCED;
        }
        Ok(done)
    }
}

#[cfg(test)]
#[path = "warm_tests.rs"]
mod tests;
