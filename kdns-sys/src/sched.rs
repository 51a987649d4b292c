//! Real-time scheduling of the calling thread.

use std::io;

/// Puts the calling thread in `SCHED_FIFO` at `priority` (1-99). Fails
/// without `CAP_SYS_NICE`, or in a container without a real-time CPU
/// budget; the thread then keeps its scheduling.
pub fn set_fifo(priority: u32) -> io::Result<()> {
    let priority = libc::c_int::try_from(priority).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let p = libc::sched_param { sched_priority: priority };
    // SAFETY: a valid sched_param for the calling thread (pid 0).
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_out_of_range_priority_is_refused() {
        // In a thread of its own: a success would leave the test thread real-time.
        let r = std::thread::spawn(|| super::set_fifo(1000)).join().unwrap();
        assert_eq!(r.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    }
}
