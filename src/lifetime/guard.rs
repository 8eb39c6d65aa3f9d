//! Start-up guards: the orphan check with the parent-death signal, the watched pid, the child
//! subreaper and the deadline alarm.

use std::time::Duration;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum OrphanError {
    #[error("parent process {0} exited while ccci was starting; refusing to run orphaned")]
    ParentDied(i32),
    #[error(
        "parent pid is {actual} but CCCI_EXPECT_PPID is {expected}: started by an unexpected parent (or the wrapper already exited); refusing to run"
    )]
    UnexpectedParent { expected: i32, actual: i32 },
    #[error(
        "parent pid is 1 outside systemd (no INVOCATION_ID): nothing would stop this run if its starter died; pass --allow-orphan to run anyway"
    )]
    Orphaned,
    #[error("cannot arm the parent-death signal: {0}")]
    Prctl(std::io::Error),
}

/// Arms `PR_SET_PDEATHSIG(SIGTERM)` and checks the parent. Returns the parent pid recorded
/// before arming.
///
/// `getppid() == 1` is the wrong orphan test under systemd or any subreaper: the re-check
/// compares against the parent recorded *before* arming, which catches a parent that died in
/// the window before the signal was armed (it would never be delivered then).
pub fn orphan_guard(expect_ppid: Option<i32>, under_systemd: bool, allow_orphan: bool) -> Result<i32, OrphanError> {
    let p0 = nix::unistd::getppid().as_raw();
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(OrphanError::Prctl(std::io::Error::last_os_error()));
    }
    if nix::unistd::getppid().as_raw() != p0 {
        return Err(OrphanError::ParentDied(p0));
    }
    if let Some(expected) = expect_ppid
        && expected != p0
    {
        return Err(OrphanError::UnexpectedParent { expected, actual: p0 });
    }
    if p0 == 1 && !under_systemd && !allow_orphan {
        return Err(OrphanError::Orphaned);
    }
    Ok(p0)
}

/// Adopts orphaned descendants, so a double-forked grandchild comes back to ccci to be killed.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// `alarm(deadline)`: SIGALRM reaches the signal thread, which starts the funnel.
pub fn arm_deadline(deadline: Duration) {
    let secs = u32::try_from(deadline.as_secs().max(1)).unwrap_or(u32::MAX);
    // SAFETY: alarm(2) only sets the process's one timer.
    unsafe {
        libc::alarm(secs);
    }
}

#[derive(Debug, Error)]
pub enum WatchError {
    /// Like a parent that died before ccci started: refuse (exit 3), create nothing.
    #[error("watched pid {0} (CCCI_WATCH_PID) is not running: refusing to start a run nothing would stop")]
    Gone(i32),
    #[error("cannot watch pid {pid} (CCCI_WATCH_PID): {source}")]
    Io { pid: i32, source: std::io::Error },
}

/// Treats the death of `pid` like the parent's: a SIGTERM to ourselves, through the one funnel.
/// Uses a pidfd, so a recycled pid can never be mistaken for the watched process. A pid that
/// is already gone is refused like a parent that died during start-up.
pub fn watch_pid(pid: i32) -> Result<(), WatchError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(WatchError::Gone(pid));
        }
        return Err(WatchError::Io { pid, source: err });
    }
    let fd = fd as libc::c_int;
    std::thread::Builder::new()
        .name("watch-pid".into())
        .spawn(move || {
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            loop {
                // SAFETY: one valid pollfd, owned by this thread for its whole life.
                let n = unsafe { libc::poll(&mut pfd, 1, -1) };
                if n > 0 {
                    break;
                }
                if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    return;
                }
            }
            tracing::warn!("watched pid {pid} (CCCI_WATCH_PID) exited: cancelling the run");
            raise_term();
        })
        .map_err(|source| WatchError::Io { pid, source })?;
    Ok(())
}

fn raise_term() {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
}
