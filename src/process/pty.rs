//! A pseudo-terminal for children that need one.
//!
//! abra runs backupbot through a TTY `docker exec` and its lint and progress output want a
//! terminal: without one they fail with "the input device is not a TTY" or "inappropriate ioctl
//! for device" (the predecessor ran them under `script -qec`). ccci opens the pair itself, gives
//! the child the slave as stdin, stdout and stderr and its controlling terminal, and reads the
//! master like a pipe: one stream, both of the child's outputs merged, drained, masked and
//! logged like any other child's.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Rows and columns the child sees: wide enough that tables (abra's lint table) do not wrap.
const ROWS: u16 = 50;
const COLS: u16 = 200;

/// Opens a master/slave pair, both close-on-exec (the child gets the slave through its
/// standard descriptors, which are not). The slave echoes nothing and does no output
/// processing, so a child's `\n` reaches ccci as `\n`, not `\r\n`.
pub(super) fn open() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain libc calls on descriptors owned here; every pointer handed over points at a
    // live, correctly sized local.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if m < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(m);
        if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        let rc = libc::ptsname_r(m, name.as_mut_ptr(), name.len());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let slave = OwnedFd::from_raw_fd(s);
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        t.c_lflag &= !(libc::ECHO | libc::ECHONL);
        t.c_oflag &= !libc::OPOST;
        if libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(io::Error::last_os_error());
        }
        let size = libc::winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &size) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((master, slave))
    }
}
