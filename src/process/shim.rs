//! The exec shim: how a child gets its parent-death signal without `fork()`.
//!
//! The parent-death signal must be armed in the child before it execs the real program (with a
//! `getppid()` re-check for a parent that died in between). A `pre_exec` hook would do that, but
//! it forces std to `fork()` the multi-threaded ccci for every child — copying its page tables
//! and paying copy-on-write faults — which was most of ccci's own CPU in a run of ~300 docker
//! calls. Instead ccci spawns itself (`/proc/self/exe`, via `posix_spawn`, i.e. vfork) with
//! [`ARG`]; this tiny entry point arms the signal, re-checks the parent and execs the program in
//! place: same pid, same process group, same pipes.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::process::Command;

pub const ARG: &str = "__ccci-exec";

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Marks this process as the ccci binary (its `/proc/self/exe` understands [`ARG`]). A library
/// user such as a test harness is not, and spawns with a pre-exec hook instead.
pub fn enable() {
    ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// When this process is the shim, never returns on success (the program replaced it); returns
/// the exit code when it could not exec. `None`: not the shim, carry on as ccci.
#[expect(clippy::disallowed_methods, reason = "the shim execs the step program in place: it is the spawn path")]
pub fn run_if_shim() -> Option<u8> {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(OsStr::new(ARG)) {
        return None;
    }
    let parent: i32 = args.next().and_then(|p| p.to_str()?.parse().ok())?;
    let program: OsString = args.next()?;
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) } != 0 {
        return Some(127);
    }
    // The parent may have died before the signal was armed; it would never come.
    if nix::unistd::getppid().as_raw() != parent {
        return Some(127);
    }
    let err = Command::new(&program).args(args).exec();
    eprintln!("ccci: cannot start `{}`: {err}", program.to_string_lossy());
    Some(127)
}
