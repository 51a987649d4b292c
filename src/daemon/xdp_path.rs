//! The AF_XDP part of a running daemon: its program(s), queue workers and
//! their own stop flag, so that a handover can stop them alone.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{IoMode, Settings};
use crate::handle::{self, WorkerHandle};

/// What keeps the AF_XDP path alive (nothing when built without it).
#[cfg(feature = "xdp")]
type XdpRuntime = crate::xdp::setup::XdpRuntime;
#[cfg(not(feature = "xdp"))]
type XdpRuntime = ();

/// The AF_XDP path: `None` inside when it is not used.
#[derive(Debug)]
pub struct XdpPath {
    rt: Option<XdpRuntime>,
    stop: Arc<AtomicBool>,
    handles: Vec<WorkerHandle>,
    threads: Vec<JoinHandle<()>>,
}

impl XdpPath {
    /// Starts the AF_XDP workers when the configuration asks for them,
    /// numbered from `first_id`. With `io = "auto"`, a failure is logged
    /// and the path is off.
    pub fn start(s: &Settings, first_id: usize, cores: &[core_affinity::CoreId]) -> Result<XdpPath, String> {
        let stop = Arc::new(AtomicBool::new(false));
        #[cfg_attr(not(feature = "xdp"), allow(unused_mut))]
        let mut path = XdpPath { rt: None, stop, handles: Vec::new(), threads: Vec::new() };
        if s.io == IoMode::Udp {
            return Ok(path);
        }
        #[cfg(feature = "xdp")]
        {
            match crate::xdp::setup::start(s, &path.stop, first_id, cores) {
                Ok((rt, hs, ts)) => {
                    path.rt = Some(rt);
                    path.handles = hs;
                    path.threads = ts;
                    Ok(path)
                }
                Err(e) if s.io == IoMode::Auto => {
                    tracing::info!("AF_XDP not used: {e}; serving with UDP sockets");
                    Ok(path)
                }
                Err(e) => Err(format!("AF_XDP: {e}")),
            }
        }
        #[cfg(not(feature = "xdp"))]
        {
            let _ = (first_id, cores);
            match s.io {
                IoMode::Xdp => Err("this kdns was built without AF_XDP support (cargo feature `xdp`)".into()),
                _ => {
                    tracing::info!("AF_XDP not used: built without the `xdp` feature; serving with UDP sockets");
                    Ok(path)
                }
            }
        }
    }

    /// Whether AF_XDP serves.
    pub fn running(&self) -> bool {
        self.rt.is_some()
    }

    /// The queue workers.
    pub fn handles(&self) -> &[WorkerHandle] {
        &self.handles
    }

    /// The XDP counter sources, for the control thread.
    pub fn counters(&self) -> Vec<Arc<dyn handle::XdpCounterSource>> {
        #[cfg(feature = "xdp")]
        {
            self.rt.as_ref().map(|r| r.counters()).unwrap_or_default()
        }
        #[cfg(not(feature = "xdp"))]
        {
            Vec::new()
        }
    }

    /// Hands the queues to the kernel: the AF_XDP sockets leave the
    /// XSKMAPs (the program passes those queries to the kernel's sockets),
    /// the workers answer what is on their rings and in flight and stop,
    /// and their sockets close. The program stays (pinned, for the next
    /// kdns; unpinned, it is detached and the kernel gets everything).
    /// Returns the number of queues released.
    pub fn release(&mut self) -> u32 {
        #[cfg(feature = "xdp")]
        let n = self.rt.as_mut().map_or(0, |r| r.release_queues());
        #[cfg(not(feature = "xdp"))]
        let n = 0;
        if self.rt.is_some() {
            // Frames redirected just before the release are on the RX
            // rings: give the workers a few turns to answer them.
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop_workers();
        #[cfg_attr(not(feature = "xdp"), allow(dropping_copy_types))]
        drop(self.rt.take());
        n
    }

    /// Stops the workers (each drains what it has in flight) and waits.
    pub fn stop_workers(&mut self) {
        super::stop_and_join(&self.stop, &self.handles, &mut self.threads);
    }
}
