//! Byte storage for cached answers: fixed-size chunks, chained.
//!
//! All memory is allocated once. An answer takes `ceil(len / CHUNK)` chunks
//! linked through `next`; a typical A answer fits in one. Chunking instead
//! of one byte arena means any mix of answer sizes can reuse freed space
//! with no fragmentation and no compaction.

/// Bytes per chunk. 128 holds a typical A/AAAA answer (question plus a few
/// records) in one chunk.
pub const CHUNK: usize = 128;

const NIL: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct ChunkStore {
    bytes: Vec<u8>,
    next: Vec<u32>,
    free_head: u32,
    free_count: usize,
}

impl ChunkStore {
    pub(crate) fn new(chunks: usize) -> ChunkStore {
        let chunks = chunks.clamp(1, NIL as usize - 1);
        let next = (0..chunks as u32).map(|i| if i + 1 == chunks as u32 { NIL } else { i + 1 }).collect();
        ChunkStore { bytes: vec![0; chunks * CHUNK], next, free_head: 0, free_count: chunks }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.next.len()
    }

    pub(crate) fn free(&self) -> usize {
        self.free_count
    }

    pub(crate) fn chunks_for(len: usize) -> usize {
        len.div_ceil(CHUNK).max(1)
    }

    /// Takes chunks for `data` and copies it in; the caller checked that
    /// enough are free.
    pub(crate) fn store(&mut self, data: &[u8]) -> Option<u32> {
        let need = Self::chunks_for(data.len());
        if need > self.free_count {
            return None;
        }
        let first = self.free_head;
        let mut c = first;
        let mut last = first;
        for piece in data.chunks(CHUNK) {
            let at = c as usize * CHUNK;
            self.bytes[at..at + piece.len()].copy_from_slice(piece);
            last = c;
            c = self.next[c as usize];
        }
        if data.is_empty() {
            c = self.next[first as usize];
        }
        self.free_head = c;
        self.next[last as usize] = NIL;
        self.free_count -= need;
        Some(first)
    }

    /// Returns the chain starting at `first` to the free list.
    pub(crate) fn release(&mut self, first: u32) {
        let mut c = first;
        let mut n = 1;
        while self.next[c as usize] != NIL {
            c = self.next[c as usize];
            n += 1;
        }
        self.next[c as usize] = self.free_head;
        self.free_head = first;
        self.free_count += n;
    }

    /// Copies `len` bytes of the chain starting at `first` into `out`.
    #[inline]
    pub(crate) fn read(&self, first: u32, len: usize, out: &mut [u8]) {
        self.read_at(first, 0, &mut out[..len])
    }

    /// Fills `out` from the blob bytes at `offset..offset + out.len()` of
    /// the chain starting at `first`.
    #[inline]
    pub(crate) fn read_at(&self, first: u32, offset: usize, out: &mut [u8]) {
        let end = offset + out.len();
        if end <= CHUNK {
            let at = first as usize * CHUNK;
            out.copy_from_slice(&self.bytes[at + offset..at + end]);
            return;
        }
        let mut c = first;
        let mut base = 0;
        let mut pos = offset;
        let mut done = 0;
        while done < out.len() && c != NIL {
            if pos < base + CHUNK {
                let take = (base + CHUNK - pos).min(out.len() - done);
                let at = c as usize * CHUNK + (pos - base);
                out[done..done + take].copy_from_slice(&self.bytes[at..at + take]);
                done += take;
                pos += take;
            }
            base += CHUNK;
            c = self.next[c as usize];
        }
    }

    /// The bytes `offset..offset + len` of the chain starting at `first`,
    /// if they lie in its first chunk (the common case: one slice, no copy).
    #[inline(always)]
    pub(crate) fn first_chunk_slice(&self, first: u32, offset: usize, len: usize) -> Option<&[u8]> {
        if offset + len > CHUNK {
            return None;
        }
        let at = first as usize * CHUNK + offset;
        self.bytes.get(at..at + len)
    }

    /// Compares the bytes at `offset..offset + want.len()` of the chain to
    /// `want`, ASCII case ignored.
    #[inline]
    pub(crate) fn eq_ignore_case(&self, first: u32, offset: usize, want: &[u8]) -> bool {
        let end = offset + want.len();
        if end <= CHUNK {
            let at = first as usize * CHUNK;
            return self.bytes[at + offset..at + end].eq_ignore_ascii_case(want);
        }
        let mut c = first;
        let mut base = 0; // blob offset where chunk `c` starts
        let mut pos = offset;
        let mut w = want;
        while !w.is_empty() {
            if c == NIL {
                return false;
            }
            if pos < base + CHUNK {
                let take = (base + CHUNK - pos).min(w.len());
                let at = c as usize * CHUNK + (pos - base);
                if !self.bytes[at..at + take].eq_ignore_ascii_case(&w[..take]) {
                    return false;
                }
                w = &w[take..];
                pos += take;
            }
            base += CHUNK;
            c = self.next[c as usize];
        }
        true
    }

    /// Bytes allocated for the store.
    pub(crate) fn memory(&self) -> usize {
        self.bytes.len() + self.next.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_read_release_round_trip() {
        let mut s = ChunkStore::new(4);
        let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let a = s.store(&big).unwrap();
        assert_eq!(s.free(), 1);
        assert!(s.store(&[1; 200]).is_none(), "two chunks needed, one free");
        let b = s.store(b"Hello").unwrap();
        assert_eq!(s.free(), 0);
        let mut out = [0u8; 300];
        s.read(a, 300, &mut out);
        assert_eq!(&out[..], &big[..]);
        assert!(s.eq_ignore_case(a, 120, &big[120..260]));
        assert!(!s.eq_ignore_case(a, 120, &[0; 140]));
        assert!(s.eq_ignore_case(b, 0, b"hELLO"));
        let mut mid = [0u8; 200];
        s.read_at(a, 50, &mut mid);
        assert_eq!(&mid[..], &big[50..250]);
        s.release(a);
        assert_eq!(s.free(), 3);
        let c = s.store(&[7; 384]).unwrap();
        s.read(c, 384, &mut [0; 384]);
        s.release(b);
        s.release(c);
        assert_eq!(s.free(), 4);
    }
}
