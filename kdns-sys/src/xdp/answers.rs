//! The in-kernel answer tier: the `answers` map the XDP program answers
//! the hottest names from (XDP_TX), filled by the userspace workers.
//!
//! Each rx queue's worker owns the keys of its queue (`queue` in the key is
//! the rx queue the program saw the query on). An entry holds what the
//! worker's engine would send for the question: the header flags and
//! counts, the sections after the question (no OPT), and where the TTL
//! fields are; the program writes the query's ID, the question as the
//! client spelled it, the TTLs counted down by the entry's age on the
//! kernel clock ([`crate::monotonic_ns`], `bpf_ktime_get_ns`), and an OPT
//! with the tier's UDP size when the query had one. See the top of
//! `bpf/kdns_xdp.c` for the checks a query must pass to be answered here.
//!
//! The map is never pinned: a new program starts with an empty map, so
//! entries of a dead process are never served.
//!
//! Map operations are plain bpf(2) calls on the map's descriptor (aya's
//! `HashMap` wants `&mut` for updates, which a handle shared by every
//! worker can't give without a lock).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::XdpError;

/// Longest QNAME (wire form, the root label included) an entry can have.
pub const ANSWER_NAME_MAX: usize = 128;
/// Most body bytes (the sections after the question, no OPT) of an entry.
pub const ANSWER_BODY_MAX: usize = 488;
/// Most TTL fields in an entry's body.
pub const ANSWER_TTLS_MAX: usize = 16;
/// Largest DNS reply the program sends (header, question, body, OPT).
pub const ANSWER_REPLY_MAX: usize = 512;
/// `max_entries` of `acl_v4` and `acl_v6` (each).
pub const MAX_ACL: usize = 1024;

/// Key flag: the query's OPT has the DO bit.
pub const FLAG_DO: u8 = 1;
/// Key flag: the query's header has the CD bit.
pub const FLAG_CD: u8 = 2;

/// Settings of the answer tier, given to
/// [`XdpProgram::load_pinned`](super::XdpProgram::load_pinned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerTier {
    /// `max_entries` of the `answers` map (all queues together).
    pub entries: u32,
    /// Our EDNS UDP payload size, written in the OPT of a reply.
    pub udp_size: u16,
    /// Allowed client networks (address, prefix length); empty: everyone.
    /// Clients outside go to userspace (which answers REFUSED).
    pub clients: Vec<(IpAddr, u8)>,
}

/// `struct answer_key` of `bpf/kdns_xdp.c`: the name is in it as its
/// seeded hash ([`name_hash`]); the value holds the name, which the
/// program compares before answering.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AnswerKey {
    pub(super) queue: u32,
    pub(super) qtype: u16,
    pub(super) qclass: u16,
    pub(super) flags: u8,
    pub(super) name_len: u8,
    pub(super) pad: [u8; 6],
    pub(super) name_hash: u64,
}

/// `struct answer_val` of `bpf/kdns_xdp.c`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct AnswerVal {
    pub(super) serve_until_ns: u64,
    pub(super) inserted_ns: u64,
    pub(super) hits: u64,
    pub(super) header: [u8; 10],
    pub(super) body_len: u16,
    pub(super) n_ttl: u8,
    pub(super) name_len: u8,
    pub(super) pad: [u8; 2],
    pub(super) body_csum: u32,
    pub(super) ttl_off: [u16; ANSWER_TTLS_MAX],
    pub(super) ttl: [u32; ANSWER_TTLS_MAX],
    pub(super) body: [u8; ANSWER_BODY_MAX],
    pub(super) name: [u8; ANSWER_NAME_MAX],
    pub(super) pad2: [u8; 4],
}

impl AnswerVal {
    pub(super) fn zeroed() -> AnswerVal {
        AnswerVal {
            serve_until_ns: 0,
            inserted_ns: 0,
            hits: 0,
            header: [0; 10],
            body_len: 0,
            n_ttl: 0,
            name_len: 0,
            pad: [0; 2],
            body_csum: 0,
            ttl_off: [0; ANSWER_TTLS_MAX],
            ttl: [0; ANSWER_TTLS_MAX],
            body: [0; ANSWER_BODY_MAX],
            name: [0; ANSWER_NAME_MAX],
            pad2: [0; 4],
        }
    }
}

/// One answer for [`AnswerMap::insert`].
#[derive(Debug, Clone, Copy)]
pub struct AnswerEntry<'a> {
    /// The rx queue whose worker owns the entry.
    pub queue: u32,
    /// The QNAME in wire form, any case (lower-cased here), the root label included.
    pub name: &'a [u8],
    /// QTYPE, host order.
    pub qtype: u16,
    /// QCLASS, host order.
    pub qclass: u16,
    /// [`FLAG_DO`] | [`FLAG_CD`]: the query bits the answer is for.
    pub flags: u8,
    /// CLOCK_MONOTONIC ([`crate::monotonic_ns`]): answered only while now < this.
    pub serve_until_ns: u64,
    /// CLOCK_MONOTONIC: the TTLs in `ttls` are as of this instant.
    pub inserted_ns: u64,
    /// DNS header bytes 2..12: flags, QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (without any OPT).
    pub header: [u8; 10],
    /// The answer, authority and additional sections (no OPT); names may
    /// be compression pointers to the question (0xc00c).
    pub body: &'a [u8],
    /// (offset in `body`, TTL in seconds) of each TTL field.
    pub ttls: &'a [(u16, u32)],
}

/// The `answers` map of a loaded program: any thread may insert and remove
/// (a clone per worker). Stays usable after the program is dropped (the
/// map then lives until the last handle goes).
#[derive(Clone)]
pub struct AnswerMap {
    fd: Arc<OwnedFd>,
    capacity: u32,
    /// `answer_hash_seed` of the program.
    seed: u64,
}

impl std::fmt::Debug for AnswerMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerMap").field("fd", &self.fd.as_raw_fd()).field("capacity", &self.capacity).finish()
    }
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub(super) const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_ANY: u64 = 0;

/// `union bpf_attr` for the map element commands: map_fd, key, value (or
/// next_key), flags.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

impl AnswerMap {
    pub(super) fn new(fd: OwnedFd, capacity: u32, seed: u64) -> AnswerMap {
        AnswerMap { fd: Arc::new(fd), capacity, seed }
    }

    pub(super) fn key(&self, queue: u32, name: &[u8], qtype: u16, qclass: u16, flags: u8) -> AnswerKey {
        key_of(self.seed, queue, name, qtype, qclass, flags)
    }

    /// bpf(2) on an element; `value` is written (lookup, next key) or read (update).
    pub(super) fn elem(&self, cmd: libc::c_long, key: Option<&AnswerKey>, value: *mut u8, flags: u64) -> io::Result<()> {
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            _pad: 0,
            key: key.map_or(0, |k| std::ptr::from_ref(k) as u64),
            value: value as u64,
            flags,
        };
        // SAFETY: bpf(2) reads the attr and, for these commands, reads the
        // key (key_size bytes: an AnswerKey) and reads or writes `value`,
        // which the callers point at an AnswerVal (lookup, update) or an
        // AnswerKey (next key) they own exclusively for the call; a null
        // pointer where the command allows it.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, &raw mut attr, std::mem::size_of::<ElemAttr>() as libc::c_uint) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn lookup(&self, key: &AnswerKey) -> io::Result<Option<AnswerVal>> {
        let mut val = AnswerVal::zeroed();
        match self.elem(BPF_MAP_LOOKUP_ELEM, Some(key), (&raw mut val).cast(), 0) {
            Ok(()) => Ok(Some(val)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn delete(&self, key: &AnswerKey) -> io::Result<bool> {
        match self.elem(BPF_MAP_DELETE_ELEM, Some(key), std::ptr::null_mut(), 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every key in the map (a snapshot; entries may come and go meanwhile).
    fn keys(&self) -> io::Result<Vec<AnswerKey>> {
        let mut out = Vec::new();
        let mut cur: Option<AnswerKey> = None;
        loop {
            let mut next = key_of(0, 0, &[], 0, 0, 0);
            match self.elem(BPF_MAP_GET_NEXT_KEY, cur.as_ref(), (&raw mut next).cast(), 0) {
                Ok(()) => {
                    out.push(next);
                    cur = Some(next);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
                Err(e) => return Err(e),
            }
            if out.len() > self.capacity as usize * 2 + 16 {
                // Deleted under us over and over: the walk restarted; stop.
                return Ok(out);
            }
        }
    }

    /// Stores (or replaces) the answer `e`. Errors: a name, body or TTL
    /// list beyond the limits ([`XdpError::AnswerTooLong`]), a TTL field
    /// outside the body or an empty name ([`XdpError::AnswerInvalid`]),
    /// the map full ([`XdpError::AnswerMapFull`], E2BIG), or the syscall's.
    pub fn insert(&self, e: &AnswerEntry<'_>) -> Result<(), XdpError> {
        use super::AnswerLimit;
        if e.name.len() > ANSWER_NAME_MAX {
            return Err(XdpError::AnswerTooLong { what: AnswerLimit::Name, len: e.name.len(), max: ANSWER_NAME_MAX });
        }
        if e.body.len() > ANSWER_BODY_MAX {
            return Err(XdpError::AnswerTooLong { what: AnswerLimit::Body, len: e.body.len(), max: ANSWER_BODY_MAX });
        }
        if e.ttls.len() > ANSWER_TTLS_MAX {
            return Err(XdpError::AnswerTooLong { what: AnswerLimit::Ttls, len: e.ttls.len(), max: ANSWER_TTLS_MAX });
        }
        if e.name.is_empty() {
            return Err(XdpError::AnswerInvalid { why: "the name is empty (the root name is one 0 byte)" });
        }
        if e.ttls.iter().any(|&(off, _)| usize::from(off) + 4 > e.body.len()) {
            return Err(XdpError::AnswerInvalid { why: "a TTL field lies beyond the body" });
        }
        let key = self.key(e.queue, e.name, e.qtype, e.qclass, e.flags);
        let mut val = AnswerVal::zeroed();
        val.name_len = e.name.len() as u8;
        for (d, s) in val.name.iter_mut().zip(e.name) {
            *d = s.to_ascii_lowercase();
        }
        val.serve_until_ns = e.serve_until_ns;
        val.inserted_ns = e.inserted_ns;
        val.header = e.header;
        val.body_len = e.body.len() as u16;
        val.n_ttl = e.ttls.len() as u8;
        val.body[..e.body.len()].copy_from_slice(e.body);
        for (i, &(off, ttl)) in e.ttls.iter().enumerate() {
            val.ttl_off[i] = off;
            val.ttl[i] = ttl;
        }
        val.body_csum = body_csum(e.body, e.ttls);
        match self.elem(BPF_MAP_UPDATE_ELEM, Some(&key), (&raw mut val).cast(), BPF_ANY) {
            Ok(()) => Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::E2BIG) => Err(XdpError::AnswerMapFull { capacity: self.capacity }),
            Err(err) => Err(XdpError::AnswerMap { what: "insert into", source: err }),
        }
    }

    /// Removes an entry; whether it was there.
    pub fn remove(&self, queue: u32, name: &[u8], qtype: u16, qclass: u16, flags: u8) -> Result<bool, XdpError> {
        if name.len() > ANSWER_NAME_MAX {
            return Ok(false);
        }
        self.delete(&self.key(queue, name, qtype, qclass, flags)).map_err(|e| XdpError::AnswerMap { what: "remove from", source: e })
    }

    /// How many times the program answered from an entry (None: no such entry).
    pub fn hits(&self, queue: u32, name: &[u8], qtype: u16, qclass: u16, flags: u8) -> Result<Option<u64>, XdpError> {
        if name.len() > ANSWER_NAME_MAX {
            return Ok(None);
        }
        let v = self.lookup(&self.key(queue, name, qtype, qclass, flags)).map_err(|e| XdpError::AnswerMap { what: "read", source: e })?;
        Ok(v.map(|v| v.hits))
    }

    /// Removes every entry of `queue`; how many were removed.
    pub fn clear_queue(&self, queue: u32) -> Result<usize, XdpError> {
        let keys = self.keys().map_err(|e| XdpError::AnswerMap { what: "list the keys of", source: e })?;
        let mut n = 0;
        for k in keys.iter().filter(|k| k.queue == queue) {
            if self.delete(k).map_err(|e| XdpError::AnswerMap { what: "remove from", source: e })? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The map's `max_entries` (all queues together).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

/// The map key: zeroed, the hash of the name lower-cased (A-Z only),
/// QTYPE and QCLASS in network order. `name` must be at most
/// [`ANSWER_NAME_MAX`] bytes.
pub(super) fn key_of(seed: u64, queue: u32, name: &[u8], qtype: u16, qclass: u16, flags: u8) -> AnswerKey {
    AnswerKey {
        queue,
        qtype: qtype.to_be(),
        qclass: qclass.to_be(),
        flags,
        name_len: name.len() as u8,
        pad: [0; 6],
        name_hash: name_hash(seed, name),
    }
}

/// The program's hash of a name (`name_hash_step` in `bpf/kdns_xdp.c`):
/// seed ^ length, then for each 32-bit word of the lower-cased name in
/// host order (the last one zero padded): h = (h ^ w) * K; h ^= h >> 32.
pub(super) fn name_hash(seed: u64, name: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ name.len() as u64;
    for chunk in name.chunks(4) {
        let mut b = [0u8; 4];
        for (d, s) in b.iter_mut().zip(chunk) {
            *d = s.to_ascii_lowercase();
        }
        h = (h ^ u64::from(u32::from_ne_bytes(b))).wrapping_mul(K);
        h ^= h >> 32;
    }
    h
}

/// The body's ones' complement sum as the program wants it: 16-bit words
/// in host byte order (as the program loads them), as if the body began at
/// an even offset, the TTL fields zeroed, an odd last byte padded with 0;
/// folded to 16 bits.
pub(super) fn body_csum(body: &[u8], ttls: &[(u16, u32)]) -> u32 {
    let mut b = [0u8; ANSWER_BODY_MAX + 1];
    b[..body.len()].copy_from_slice(body);
    for &(off, _) in ttls {
        b[usize::from(off)..usize::from(off) + 4].fill(0);
    }
    let mut sum: u32 = b[..body.len().div_ceil(2) * 2].chunks_exact(2).map(|w| u32::from(u16::from_ne_bytes([w[0], w[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}
