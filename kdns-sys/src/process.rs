//! Child processes and signals: a child that is signalled when the thread
//! that started it dies, sending a signal, whether we are root, and where a
//! tool is installed (`kdns --supervise` and the test harnesses).

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

/// Makes the kernel kill the child (SIGKILL) when the thread that spawned
/// it dies: a test thread killed by a panic that skips `Drop`, or the whole
/// test process killed. A program that execs its command in place (`ip
/// netns exec`, `timeout`) passes the setting on to that command.
pub fn die_with_parent(cmd: &mut Command) {
    signal_when_parent_dies(cmd, libc::SIGKILL);
}

/// Makes the kernel send `sig` to the child when the thread that spawned
/// it dies (`PR_SET_PDEATHSIG`): with SIGTERM, a supervised server stops
/// cleanly when its supervisor is killed instead of running on unwatched.
pub fn signal_when_parent_dies(cmd: &mut Command, sig: libc::c_int) {
    // SAFETY: the closure runs between fork and exec in the child; it only
    // calls prctl(2), which is async-signal-safe, allocates nothing and
    // touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `sig` to process `pid` (`kill(2)`).
///
/// # Errors
/// `kill`'s: ESRCH when there is no such process, EPERM, EINVAL for a bad
/// signal number; a pid that does not fit a `pid_t` is InvalidInput (it
/// would name a process group or every process).
pub fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("pid {pid} is not a single process")))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this process runs with effective user id 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The full path of program `tool` on PATH or in the sbin and bin
/// directories (which a non-login root shell may lack on its PATH).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn signal_reaches_a_child() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn sleep");
        signal(child.id(), libc::SIGTERM).expect("kill");
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            assert!(Instant::now() < deadline, "sleep did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn signal_refuses_group_pids() {
        assert_eq!(signal(0, 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(signal(u32::MAX, 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
