//! The open-files limit.

use std::io;

/// Raises the soft limit on open files to the hard limit when `need` is
/// more than the soft limit; an error says what to change when even the
/// hard limit is too low.
pub fn ensure_open_files(need: u64, why: &str) -> Result<(), String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit with a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(()); // cannot tell; opening will say so if it fails
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        return Err(format!(
            "{why} needs up to {need} open files, but the limit (RLIMIT_NOFILE) is {} (hard {}); raise it (ulimit -n, LimitNOFILE= in the service unit) or lower upstream.source_ports",
            lim.rlim_cur, lim.rlim_max
        ));
    }
    let old = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit with a valid rlimit, soft <= hard.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!("{why} needs up to {need} open files; cannot raise RLIMIT_NOFILE from {old}: {}", io::Error::last_os_error()));
    }
    tracing::debug!(from = old, to = lim.rlim_cur, "raised the open-files limit");
    Ok(())
}
