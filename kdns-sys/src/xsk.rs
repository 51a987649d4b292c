//! An AF_XDP socket with its UMEM and its four rings: [`XskRings`].
//!
//! Built on xsk-rs, whose ring operations are `unsafe` because a frame
//! descriptor is a plain copyable offset: nothing stops a caller from
//! putting one frame on two rings, or reading a frame the kernel is
//! writing. Here a frame in user space is a [`Frame`], which is not
//! `Clone` and leaves the caller only by value: onto the TX ring
//! ([`XskRings::transmit`]), the fill ring ([`XskRings::recycle`]) or the
//! free list ([`XskRings::release`]). A frame's bytes are reached through
//! [`XskRings::buf`], which needs the `Frame` mutably, so safe code can
//! neither use a frame twice nor touch one the kernel owns. A `Frame`
//! remembers which `XskRings` it came from; handing it to another one
//! panics (a bug, like an index out of bounds).
//!
//! The per-frame work is what the rings cost anyway: descriptors are
//! copied into preallocated buffers and out again, nothing allocates once
//! the rings are open (the free list and the batches are sized then), and
//! frame bytes are never copied.
//!
//! The layout follows the rings: the RX ring fills the received batch
//! ([`XskRings::receive`], [`XskRings::next_received`]); the completion
//! ring feeds the free list ([`XskRings::reap_completions`],
//! [`XskRings::alloc`]); [`XskRings::flush_tx`] moves the frames given to
//! `transmit` onto the TX ring and kicks the kernel; [`XskRings::refill`]
//! tops up the fill ring.

use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use xsk_rs::config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::umem::frame::DataMut;
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// What to open: the interface queue, the UMEM and the rings.
#[derive(Debug, Clone)]
pub struct XskConfig<'a> {
    /// Interface name.
    pub ifname: &'a str,
    /// Queue id on the interface.
    pub queue: u32,
    /// UMEM frame size (2048 or 4096).
    pub frame_size: u32,
    /// Frames in the UMEM (at least twice `ring_size`): as many as the
    /// ring holds, up to half of them, wait in the fill ring; the rest are
    /// free frames.
    pub frames: u32,
    /// Size of each ring (RX, TX, fill, completion); a power of two.
    pub ring_size: u32,
    /// Frames taken off the RX ring at once.
    pub batch: usize,
    /// Ask for zero-copy first (falls back to copy mode).
    pub zero_copy: bool,
}

/// A UMEM frame held by user space: in no ring, not on the free list.
/// Not `Clone`; it goes back to its [`XskRings`] by value. Dropping it
/// only loses the frame (the UMEM has one frame fewer until it closes).
#[derive(Debug)]
pub struct Frame {
    desc: FrameDesc,
    owner: u32,
}

impl Frame {
    /// The frame's length: what was received, or what will be sent.
    pub fn len(&self) -> usize {
        self.desc.lengths().data()
    }

    /// Whether the frame's length is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bytes of one [`Frame`], from [`XskRings::buf`].
#[derive(Debug)]
pub struct FrameBuf<'a> {
    data: DataMut<'a>,
}

impl FrameBuf<'_> {
    /// The frame's bytes up to its length.
    pub fn bytes(&self) -> &[u8] {
        self.data.contents()
    }

    /// The whole frame, to write into: the length becomes the whole frame
    /// until [`FrameBuf::set_len`] says what to send.
    pub fn whole_mut(&mut self) -> &mut [u8] {
        let mut cursor = self.data.cursor();
        let cap = cursor.buf_len();
        cursor.set_pos(cap);
        self.data.contents_mut()
    }

    /// Sets the frame's length (at most the whole frame).
    pub fn set_len(&mut self, len: usize) {
        self.data.cursor().set_pos(len);
    }
}

/// What [`XskRings::flush_tx`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxFlush {
    /// Frames put on the TX ring.
    pub sent: usize,
    /// Frames that found no room even after kicking: they go back to the
    /// fill ring, their replies are lost.
    pub dropped: usize,
    /// `sendto` kicks made.
    pub kicks: u32,
    /// Whether frames still wait on the TX ring (the caller must not sleep).
    pub pending: bool,
}

/// The kernel's statistics of an AF_XDP socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskStatistics {
    /// Frames dropped for reasons other than an invalid descriptor.
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub fill_ring_empty: u64,
    /// Invalid descriptors on the RX side.
    pub rx_invalid: u64,
    /// Invalid descriptors on the TX ring.
    pub tx_invalid: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty: u64,
}

/// An AF_XDP socket bound to one interface queue, with its own UMEM and
/// its fill, RX, TX and completion rings (see the module documentation).
pub struct XskRings {
    // Field order is drop order: the UMEM and its rings before the socket's.
    umem: Umem,
    fq: FillQueue,
    cq: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    /// Tells this socket's frames from any other's.
    id: u32,
    ring_size: u32,
    zero_copy: bool,
    /// Why zero-copy was asked for and not granted.
    zero_copy_refused: Option<String>,
    /// Frames in user space that no [`Frame`] holds.
    free: Vec<FrameDesc>,
    /// The last batch off the RX ring; `rx_buf[rx_next..rx_len]` not yet
    /// handed out.
    rx_buf: Vec<FrameDesc>,
    rx_next: usize,
    rx_len: usize,
    comp_buf: Vec<FrameDesc>,
    /// Given to `transmit`, for the next `flush_tx`.
    tx_batch: Vec<FrameDesc>,
    /// Given to `recycle` (or dropped at TX), for the next `refill`.
    refill: Vec<FrameDesc>,
    /// Most frames moved from the free list to the fill ring per `refill`.
    refill_max: usize,
}

impl fmt::Debug for XskRings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XskRings")
            .field("fd", &self.fd())
            .field("ring_size", &self.ring_size)
            .field("zero_copy", &self.zero_copy)
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// The rings of a new socket and its UMEM.
type Parts = (Umem, Vec<FrameDesc>, TxQueue, RxQueue, FillQueue, CompQueue);

fn open_mode(cfg: &XskConfig<'_>, umem_cfg: UmemConfig, frames: NonZeroU32, ring: QueueSize, zero_copy: bool) -> Result<Parts, String> {
    let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| format!("UMEM: {e}"))?;
    let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
    bind |= if zero_copy { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY };
    let socket_cfg = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind)
        .build();
    let iface: Interface = cfg.ifname.parse().map_err(|_| format!("bad interface name {:?}", cfg.ifname))?;
    // SAFETY: the UMEM was made just above for this one socket, so the
    // double-free hazard xsk-rs documents for shared UMEMs cannot arise.
    let (tx, rx, rings) = unsafe { Socket::new(socket_cfg, &umem, &iface, cfg.queue) }.map_err(|e| format!("{e}"))?;
    let (fq, cq) = rings.ok_or("no fill/completion rings")?;
    Ok((umem, descs, tx, rx, fq, cq))
}

impl XskRings {
    /// Creates the UMEM and the socket (zero-copy first when asked, then
    /// copy mode), and puts up to half the frames in the fill ring. Errors
    /// are for the log: they say which interface and queue.
    pub fn open(cfg: &XskConfig<'_>) -> Result<XskRings, String> {
        let at = format!("{} queue {}", cfg.ifname, cfg.queue);
        let frames = NonZeroU32::new(cfg.frames.max(2 * cfg.ring_size)).ok_or("frames must be > 0")?;
        let ring = QueueSize::new(cfg.ring_size).map_err(|e| format!("{at}: ring size {}: {e}", cfg.ring_size))?;
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(cfg.frame_size).map_err(|e| format!("{at}: frame size {}: {e}", cfg.frame_size))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .frame_headroom(0)
            .build()
            .map_err(|e| format!("{at}: {e}"))?;
        let copy_mode = || open_mode(cfg, umem_cfg, frames, ring, false).map_err(|e| format!("{at}: AF_XDP socket: {e}"));
        let (zero_copy_refused, (umem, mut descs, tx, rx, mut fq, cq)) = if cfg.zero_copy {
            match open_mode(cfg, umem_cfg, frames, ring, true) {
                Ok(p) => (None, p),
                Err(e) => (Some(e), copy_mode()?),
            }
        } else {
            (None, copy_mode()?)
        };
        let zero_copy = cfg.zero_copy && zero_copy_refused.is_none();
        let fill_n = (cfg.ring_size as usize).min(descs.len() / 2);
        let free = descs.split_off(fill_n);
        // SAFETY: fresh frames of this UMEM, in no ring.
        if unsafe { fq.produce(&descs) } != descs.len() {
            return Err(format!("{at}: the fill ring refused the initial frames"));
        }
        let batch = cfg.batch.max(1);
        Ok(XskRings {
            umem,
            fq,
            cq,
            rx,
            tx,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            ring_size: cfg.ring_size,
            zero_copy,
            zero_copy_refused,
            rx_buf: vec![FrameDesc::default(); batch],
            rx_next: 0,
            rx_len: 0,
            comp_buf: vec![FrameDesc::default(); cfg.ring_size as usize],
            tx_batch: Vec::with_capacity(free.len() + batch),
            refill: Vec::with_capacity(free.len() + 2 * batch),
            refill_max: 2 * batch,
            free,
        })
    }

    /// The socket's descriptor: for the XDP program's socket map, and to
    /// wait for frames (poll(2) says readable when the RX ring has some).
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Whether the socket is in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Why the socket is in copy mode although zero-copy was asked for
    /// (the driver or the kernel refused it).
    pub fn zero_copy_refused(&self) -> Option<&str> {
        self.zero_copy_refused.as_deref()
    }

    /// The kernel's statistics of the socket.
    pub fn statistics(&self) -> io::Result<XskStatistics> {
        let s = self.rx.fd().xdp_statistics()?;
        Ok(XskStatistics {
            rx_dropped: s.rx_dropped(),
            rx_ring_full: s.rx_ring_full(),
            fill_ring_empty: s.rx_fill_ring_empty_descs(),
            rx_invalid: s.rx_invalid_descs(),
            tx_invalid: s.tx_invalid_descs(),
            tx_ring_empty: s.tx_ring_empty_descs(),
        })
    }

    fn check(&self, frame: &Frame) {
        assert_eq!(frame.owner, self.id, "a frame of another AF_XDP socket");
    }

    fn frame(&self, desc: FrameDesc) -> Frame {
        Frame { desc, owner: self.id }
    }

    /// Frames the kernel has sent go to the free list; returns how many.
    pub fn reap_completions(&mut self) -> usize {
        // SAFETY: `comp_buf` only receives descriptors; the frames they
        // name were put on the TX ring of this UMEM (checked in `transmit`)
        // and the kernel is done with them.
        let n = unsafe { self.cq.consume(&mut self.comp_buf) };
        self.free.extend_from_slice(&self.comp_buf[..n]);
        n
    }

    /// Takes a batch off the RX ring, to be handed out by
    /// [`XskRings::next_received`]; returns how many frames wait there. A
    /// batch not yet handed out entirely is kept (nothing new is taken).
    pub fn receive(&mut self) -> usize {
        if self.rx_next < self.rx_len {
            return self.rx_len - self.rx_next;
        }
        // SAFETY: `rx_buf` only receives descriptors; the frames they name
        // were given to the fill ring by this UMEM and are now ours.
        let n = unsafe { self.rx.consume(&mut self.rx_buf) };
        self.rx_next = 0;
        self.rx_len = n;
        n
    }

    /// The next received frame of the batch [`XskRings::receive`] took.
    pub fn next_received(&mut self) -> Option<Frame> {
        if self.rx_next >= self.rx_len {
            return None;
        }
        let desc = self.rx_buf[self.rx_next];
        self.rx_next += 1;
        Some(self.frame(desc))
    }

    /// A free frame (to send something new), if any is left.
    pub fn alloc(&mut self) -> Option<Frame> {
        let desc = self.free.pop()?;
        Some(self.frame(desc))
    }

    /// The bytes of `frame`.
    ///
    /// # Panics
    ///
    /// If `frame` belongs to another `XskRings`.
    pub fn buf<'a>(&'a self, frame: &'a mut Frame) -> FrameBuf<'a> {
        self.check(frame);
        // SAFETY: the frame belongs to this UMEM (checked above) and is in
        // no ring: a `Frame` exists only between leaving a ring or the free
        // list and going back by value, and is not `Clone`; the `&mut`
        // borrow makes this view the only one for its lifetime.
        FrameBuf { data: unsafe { self.umem.data_mut(&mut frame.desc) } }
    }

    /// Queues `frame` for the TX ring (sent at the next
    /// [`XskRings::flush_tx`], with its length).
    ///
    /// # Panics
    ///
    /// If `frame` belongs to another `XskRings`.
    pub fn transmit(&mut self, frame: Frame) {
        self.check(&frame);
        self.tx_batch.push(frame.desc);
    }

    /// Queues `frame` for the fill ring (at the next [`XskRings::refill`]).
    ///
    /// # Panics
    ///
    /// If `frame` belongs to another `XskRings`.
    pub fn recycle(&mut self, frame: Frame) {
        self.check(&frame);
        self.refill.push(frame.desc);
    }

    /// Puts `frame` back on the free list.
    ///
    /// # Panics
    ///
    /// If `frame` belongs to another `XskRings`.
    pub fn release(&mut self, frame: Frame) {
        self.check(&frame);
        self.free.push(frame.desc);
    }

    /// Puts the frames given to `transmit` on the TX ring and kicks the
    /// kernel (`sendto`) while the ring holds frames, at most `max_kicks`
    /// times, putting on what did not fit after each kick.
    ///
    /// In copy mode one kick makes the kernel send at most 32 frames (its
    /// TX batch), so a single kick per turn falls behind any turn that
    /// answered more than that and the ring fills up. Kicking until the
    /// ring is empty (bounded) keeps up with a full RX batch. In zero-copy
    /// mode the driver clears need_wakeup while it drains the ring itself,
    /// and the loop stops at once. Frames still without room are dropped
    /// rather than waited for (clients retry): they go to the fill ring.
    pub fn flush_tx(&mut self, max_kicks: u32) -> TxFlush {
        let mut put = 0;
        let mut kicks = 0;
        let pending = loop {
            if put < self.tx_batch.len() {
                let want = self.tx_batch.len() - put;
                let room = (self.tx.nb_free(want as u32) as usize).min(want);
                if room > 0 {
                    // SAFETY: every frame in tx_batch came from this UMEM
                    // (checked in `transmit`), by value, so it is in no
                    // other ring and nothing else refers to it.
                    put += unsafe { self.tx.produce(&self.tx_batch[put..put + room]) };
                }
            }
            let queued = self.tx.nb_free_exact() < self.ring_size;
            if !queued || kicks >= max_kicks || !self.tx.needs_wakeup() {
                break queued;
            }
            let _ = self.tx.wakeup();
            kicks += 1;
        };
        let dropped = self.tx_batch.len() - put;
        if dropped > 0 {
            self.refill.extend_from_slice(&self.tx_batch[put..]);
        }
        self.tx_batch.clear();
        TxFlush { sent: put, dropped, kicks, pending }
    }

    /// Gives the fill ring the frames given to `recycle`, topped up from
    /// the free list while it holds more than `keep_free` frames (at most
    /// two batches per call). What does not fit becomes a free frame. Then
    /// wakes the kernel if it asks for it (need_wakeup).
    pub fn refill(&mut self, keep_free: usize) {
        while self.free.len() > keep_free && self.refill.len() < self.refill_max {
            let Some(d) = self.free.pop() else { break };
            self.refill.push(d);
        }
        if self.refill.is_empty() {
            return;
        }
        let want = self.refill.len();
        let room = (self.fq.nb_free(want as u32) as usize).min(want);
        // SAFETY: the frames in `refill` came from this UMEM by value (or
        // from the free list) and are in no other ring.
        let n = if room > 0 { unsafe { self.fq.produce(&self.refill[..room]) } } else { 0 };
        self.free.extend_from_slice(&self.refill[n..]);
        self.refill.clear();
        if self.fq.needs_wakeup() {
            // A zero-timeout poll() is the wakeup the kernel asks for.
            crate::poll::poke(self.fd());
        }
    }
}
