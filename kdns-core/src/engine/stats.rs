//! What the engine counts: every outcome and every drop, per worker.

use crate::stats::Counter;

macro_rules! drop_reasons {
    ($($(#[$m:meta])* $v:ident => $s:expr,)*) => {
        /// Why a packet was dropped without a reply. Each has a counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason { $($(#[$m])* $v,)* }
        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$v,)*];
            /// Short snake_case name for metrics.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$v => $s,)* }
            }
        }
    };
}

drop_reasons! {
    /// A query shorter than a DNS header.
    QueryTooShort => "query_too_short",
    /// A "query" with QR set (a response sent to us).
    QueryIsResponse => "query_is_response",
    /// A client outside the allowed networks whose packet was not even a
    /// readable query (readable ones get REFUSED).
    NotAllowed => "not_allowed",
    /// The output buffer could not hold the reply.
    NoBufferSpace => "no_buffer_space",
    /// Every pending slot or ID was in use.
    PendingFull => "pending_full",
    /// A backend answer shorter than a header or malformed.
    AnswerMalformed => "answer_malformed",
    /// A backend answer with an ID nobody is waiting for (late or spoofed).
    AnswerUnknownId => "answer_unknown_id",
    /// A backend answer from an address other than the backend asked.
    AnswerWrongSource => "answer_wrong_source",
    /// A backend answer whose question is not the one asked.
    AnswerWrongQuestion => "answer_wrong_question",
    /// A backend answer without QR set.
    AnswerNotResponse => "answer_not_response",
    /// A backend answer on another source-port slot than the query left
    /// from (spoofed, or very late after a socket rotation).
    AnswerWrongPort => "answer_wrong_port",
    /// A backend answer whose question differs from the one asked only in
    /// letter case: the 0x20 spelling was not repeated (spoofed, or a
    /// backend that rewrites names).
    AnswerCaseMismatch => "answer_case_mismatch",
    /// A client over its fair share, with `over_limit = drop`.
    OverLimit => "over_limit",
}

/// Upper bounds (seconds) of the reply latency buckets: the time from a
/// query's arrival (`now` of `handle_query`) to its reply. Cache hits and
/// local answers are answered at once and land in the first bucket.
pub const LATENCY_BOUNDS: [f64; 15] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Per-worker engine counters; another thread reads them through an `Arc`.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Packets handed to `handle_query`.
    pub queries: Counter,
    /// Queries over TCP (included in `queries`).
    pub queries_tcp: Counter,
    /// Replies sent, by rcode (index = rcode; BADVERS is 16).
    pub rcodes: [Counter; 17],
    /// Answered from the local records (services, static records).
    pub local_answers: Counter,
    /// Answered from the cache.
    pub cache_hits: Counter,
    /// Not in the cache (or only stale).
    pub cache_misses: Counter,
    /// Cache hits that were negative answers.
    pub cache_negative_hits: Counter,
    /// Replies with TC set because the answer did not fit.
    pub truncated: Counter,
    /// Queries sent to backends (first tries).
    pub forwarded: Counter,
    /// Misses that waited on an identical question in flight instead of
    /// going upstream.
    pub coalesced: Counter,
    /// Misses refused because the client held its whole share of the
    /// pending table.
    pub limited_pending: Counter,
    /// Misses refused because the client spent its miss rate.
    pub limited_rate: Counter,
    /// Tries that outlived their timeout on a backend that kept answering
    /// others (slow names): they kept waiting there.
    pub slow_tries: Counter,
    /// Answers taken from a backend asked by an earlier try.
    pub late_answers: Counter,
    /// Queries sent while every backend was marked down (panic mode).
    pub panic_forwards: Counter,
    /// Queries sent again to another backend after a timeout.
    pub retried: Counter,
    /// Tries that timed out with no answer from their backend since they
    /// were sent (silent), or at the query deadline.
    pub timeouts: Counter,
    /// Early refreshes of popular entries sent.
    pub refreshes: Counter,
    /// Probes sent to down backends.
    pub probes: Counter,
    /// Stale answers served because no backend answered (RFC 8767).
    pub stale_answers: Counter,
    /// SERVFAILs sent because no backend answered in time.
    pub gave_up: Counter,
    /// Queries asked again over TCP to a backend because its UDP answer to
    /// a TCP client was truncated.
    pub tcp_retries: Counter,
    /// Of those, exchanges that failed (connection, timeout at the query
    /// deadline, or an answer that was not accepted): the client got a
    /// stale answer or SERVFAIL.
    pub tcp_retry_failures: Counter,
    /// Backend answers accepted.
    pub answers: Counter,
    /// Backend answers not cached (TC, rcode, no SOA, zero TTL, too long).
    pub not_cached: Counter,
    /// Backends marked down.
    pub backend_down: Counter,
    /// Backends back up.
    pub backend_up: Counter,
    /// REFUSED sent to clients outside the allowed networks.
    pub refused_acl: Counter,
    /// FORMERR sent.
    pub formerr: Counter,
    /// NOTIMP sent.
    pub notimp: Counter,
    /// BADVERS sent.
    pub badvers: Counter,
    /// Drops, by [`DropReason`] (index = position in `DropReason::ALL`).
    pub drops: [Counter; DropReason::ALL.len()],
    /// Replies by latency: `latency[i]` counts replies within
    /// `LATENCY_BOUNDS[i]` and above the previous bound (not cumulative);
    /// the last slot is for slower ones.
    pub latency: [Counter; LATENCY_BOUNDS.len() + 1],
    /// Sum of reply latencies in microseconds.
    pub latency_sum_us: Counter,
}

impl EngineStats {
    /// Counts a drop.
    #[inline]
    pub fn count_drop(&self, r: DropReason) {
        self.drops[r as usize].inc();
    }

    /// Counts a reply sent `d` after its query arrived.
    #[inline]
    pub fn latency(&self, d: core::time::Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BOUNDS.iter().position(|&b| s <= b).unwrap_or(LATENCY_BOUNDS.len());
        self.latency[i].inc();
        self.latency_sum_us.add(d.as_micros() as u64);
    }

    /// The drop counter for `r`.
    pub fn drops_for(&self, r: DropReason) -> u64 {
        self.drops[r as usize].get()
    }

    /// Replies sent with `rcode`.
    pub fn replies_with(&self, rcode: crate::wire::Rcode) -> u64 {
        self.rcodes.get(rcode.0 as usize).map_or(0, |c| c.get())
    }

    /// All replies sent.
    pub fn replies(&self) -> u64 {
        self.rcodes.iter().map(|c| c.get()).sum()
    }

    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|c| c.get()).sum()
    }
}
