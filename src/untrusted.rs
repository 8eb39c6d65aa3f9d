//! Reading and writing files of a tree ccci does not trust: a pull request's recipe tree, and
//! (read the same way) the operator's customisation files.
//!
//! Whoever wrote the tree chose its symlinks and file types. A plain `std::fs::read` as root
//! follows `compose.zz.yml -> /etc/shadow` (a leak), blocks forever on a FIFO or `/dev/console`
//! (while ccci holds the app lock, deaf to its deadline), and grows without bound on `/dev/zero`;
//! a plain `fs::copy` onto `compose.ccci.yml -> /etc/shadow` overwrites and chmods the victim.
//! So every path below the trusted root is walked one component at a time with `openat` and
//! `O_NOFOLLOW` (a link anywhere in the path is refused, not only at its end), the last
//! component's type is looked at before it is opened (opening a device node can have effects:
//! a tape rewinds, a tty becomes controlling), it is opened `O_NONBLOCK`, checked again on the
//! open descriptor (the name may have been swapped in between), and read to a cap.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use serde::Serialize;
use thiserror::Error;

/// The default cap on a tree file: compose files, `.env.sample`, `abra.sh` and `ccci.yml` are
/// a few KiB; anything near this is a mistake or an attack on ccci's memory.
pub const MAX_TREE_FILE: u64 = 1024 * 1024;

/// What a name in the tree is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Unknown,
}

impl FileKind {
    pub fn of_mode(mode: u32) -> FileKind {
        match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFREG => FileKind::Regular,
            SFlag::S_IFDIR => FileKind::Directory,
            SFlag::S_IFLNK => FileKind::Symlink,
            SFlag::S_IFIFO => FileKind::Fifo,
            SFlag::S_IFSOCK => FileKind::Socket,
            SFlag::S_IFCHR => FileKind::CharDevice,
            SFlag::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Unknown,
        }
    }

    fn of_stat(st: &FileStat) -> FileKind {
        FileKind::of_mode(st.st_mode)
    }

    pub fn of_file_type(t: std::fs::FileType) -> FileKind {
        use std::os::unix::fs::FileTypeExt;
        if t.is_file() {
            FileKind::Regular
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::Unknown
        }
    }
}

impl fmt::Display for FileKind {
    /// With its article: "is a FIFO".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Unknown => "a file of unknown type",
        })
    }
}

#[derive(Debug, Error)]
pub enum UntrustedError {
    #[error("{path}: {why}; name a file inside the tree by a plain relative path")]
    BadPath { path: String, why: &'static str },
    #[error(
        "{path}: is a symbolic link, which ccci never follows in a tree it does not trust; commit the file itself instead of a link"
    )]
    Symlink { path: PathBuf },
    #[error("{path}: is {kind}, not a regular file; replace it with a regular file")]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("{path}: is {kind}, not a directory")]
    NotDirectory { path: PathBuf, kind: FileKind },
    #[error("{path}: is {size} bytes, over the cap of {cap} bytes for a tree file; make it smaller")]
    TooLarge { path: PathBuf, size: u64, cap: u64 },
    #[error("{path}: not found")]
    NotFound { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl UntrustedError {
    fn io(path: &Path, e: impl Into<std::io::Error>) -> UntrustedError {
        UntrustedError::Io { path: path.to_path_buf(), source: e.into() }
    }
}

/// The components of `rel`, refusing anything but plain names: an absolute path, `..`, `.` and
/// empty components would let the name leave (or blur) the tree.
fn components(rel: &Path) -> Result<Vec<&OsStr>, UntrustedError> {
    let bytes = rel.as_os_str().as_bytes();
    let bad = |why| Err(UntrustedError::BadPath { path: rel.display().to_string(), why });
    if bytes.is_empty() {
        return bad("is empty");
    }
    if bytes[0] == b'/' {
        return bad("is an absolute path");
    }
    if bytes.contains(&0) {
        return bad("contains a NUL byte");
    }
    let mut out = Vec::new();
    for c in bytes.split(|b| *b == b'/') {
        match c {
            b"" => return bad("has an empty component (`//` or a trailing `/`)"),
            b"." => return bad("has a `.` component"),
            b".." => return bad("has a `..` component"),
            _ => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

/// Opens the directory that holds `rel`'s last component, following no link below `root`.
/// Returns that directory, the last component and the full path (for messages).
fn open_parent<'a>(root: &Path, rel: &'a Path) -> Result<(OwnedFd, &'a OsStr, PathBuf), UntrustedError> {
    let comps = components(rel)?;
    // The root itself is trusted (a run dir, the tests dir): it may be reached through links.
    let mut dir = nix::fcntl::open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| match e {
            Errno::ENOENT => UntrustedError::NotFound { path: root.to_path_buf() },
            e => UntrustedError::io(root, e),
        })?;
    let mut shown = root.to_path_buf();
    let (last, parents) = comps.split_last().expect("components() returns at least one");
    for c in parents {
        shown.push(c);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        dir = match openat(&dir, *c, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(UntrustedError::NotFound { path: shown }),
            // O_NOFOLLOW on a link fails with ELOOP; O_DIRECTORY on a non-directory with ENOTDIR
            // (some kernels report a link that way too): look without following to tell.
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let kind = fstatat(&dir, *c, AtFlags::AT_SYMLINK_NOFOLLOW).map(|st| FileKind::of_stat(&st));
                return Err(match kind {
                    Ok(FileKind::Symlink) => UntrustedError::Symlink { path: shown },
                    Ok(kind) => UntrustedError::NotDirectory { path: shown, kind },
                    Err(e) => UntrustedError::io(&shown, e),
                });
            }
            Err(e) => return Err(UntrustedError::io(&shown, e)),
        };
    }
    shown.push(last);
    Ok((dir, last, shown))
}

/// `rel` below `root`, at most [`MAX_TREE_FILE`] bytes, following no link and never blocking.
pub fn read(root: &Path, rel: &Path) -> Result<Vec<u8>, UntrustedError> {
    read_capped(root, rel, MAX_TREE_FILE)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(root: &Path, rel: &Path) -> Result<String, UntrustedError> {
    let bytes = read(root, rel)?;
    String::from_utf8(bytes).map_err(|_| UntrustedError::Io {
        path: root.join(rel),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "is not UTF-8 text"),
    })
}

/// [`read`] with its own cap.
pub fn read_capped(root: &Path, rel: &Path, cap: u64) -> Result<Vec<u8>, UntrustedError> {
    read_with_mode(root, rel, cap).map(|(bytes, _)| bytes)
}

/// [`read_capped`], with the file's permission bits (a hook or test must be executable).
pub fn read_with_mode(root: &Path, rel: &Path, cap: u64) -> Result<(Vec<u8>, u32), UntrustedError> {
    let (dir, last, shown) = open_parent(root, rel)?;
    // Look first, open second: a FIFO, socket or device is refused without ever being opened.
    let st = match fstatat(&dir, last, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Err(UntrustedError::NotFound { path: shown }),
        Err(e) => return Err(UntrustedError::io(&shown, e)),
    };
    check_regular(&st, &shown, cap)?;
    // The name may have been replaced since the look: O_NOFOLLOW refuses a link now there,
    // O_NONBLOCK keeps a FIFO now there from blocking the open, and the fstat below refuses it.
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let fd = match openat(&dir, last, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ELOOP) => return Err(UntrustedError::Symlink { path: shown }),
        Err(Errno::ENOENT) => return Err(UntrustedError::NotFound { path: shown }),
        Err(e) => return Err(UntrustedError::io(&shown, e)),
    };
    let st = fstat(&fd).map_err(|e| UntrustedError::io(&shown, e))?;
    check_regular(&st, &shown, cap)?;
    let mut buf = Vec::with_capacity(usize::try_from(st.st_size).unwrap_or(0).min(cap as usize) + 1);
    // One byte past the cap tells a file that grew after the fstat.
    File::from(fd).take(cap + 1).read_to_end(&mut buf).map_err(|e| UntrustedError::io(&shown, e))?;
    if buf.len() as u64 > cap {
        return Err(UntrustedError::TooLarge { path: shown, size: buf.len() as u64, cap });
    }
    Ok((buf, st.st_mode & 0o7777))
}

/// The entries of the directory `rel` below `root` (`.` for the root itself) and what each is,
/// sorted by name; nothing is followed, opened or read. Names that are not UTF-8 are left out
/// (no honoured file has one).
pub fn list(root: &Path, rel: &Path) -> Result<Vec<(String, FileKind)>, UntrustedError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let (fd, shown) = if rel == Path::new(".") {
        let fd = nix::fcntl::open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| match e {
                Errno::ENOENT => UntrustedError::NotFound { path: root.to_path_buf() },
                e => UntrustedError::io(root, e),
            })?;
        (fd, root.to_path_buf())
    } else {
        let (dir, last, shown) = open_parent(root, rel)?;
        let fd = match openat(&dir, last, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(UntrustedError::NotFound { path: shown }),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let kind = fstatat(&dir, last, AtFlags::AT_SYMLINK_NOFOLLOW).map(|st| FileKind::of_stat(&st));
                return Err(match kind {
                    Ok(FileKind::Symlink) => UntrustedError::Symlink { path: shown },
                    Ok(kind) => UntrustedError::NotDirectory { path: shown, kind },
                    Err(e) => UntrustedError::io(&shown, e),
                });
            }
            Err(e) => return Err(UntrustedError::io(&shown, e)),
        };
        (fd, shown)
    };
    let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| UntrustedError::io(&shown, e))?;
    let mut out = Vec::new();
    let dirfd = std::os::fd::AsRawFd::as_raw_fd(&d);
    for entry in d.iter() {
        let entry = entry.map_err(|e| UntrustedError::io(&shown, e))?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let Ok(name) = name.to_str() else { continue };
        // SAFETY: `dirfd` stays open for the whole loop (`d` owns it).
        let at = unsafe { std::os::fd::BorrowedFd::borrow_raw(dirfd) };
        let kind = match fstatat(at, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => FileKind::of_stat(&st),
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(UntrustedError::io(&shown.join(name), e)),
        };
        out.push((name.to_string(), kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn check_regular(st: &FileStat, path: &Path, cap: u64) -> Result<(), UntrustedError> {
    match FileKind::of_stat(st) {
        FileKind::Regular => {}
        FileKind::Symlink => return Err(UntrustedError::Symlink { path: path.to_path_buf() }),
        kind => return Err(UntrustedError::NotRegular { path: path.to_path_buf(), kind }),
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > cap {
        return Err(UntrustedError::TooLarge { path: path.to_path_buf(), size, cap });
    }
    Ok(())
}

/// Writes `bytes` as a fresh regular file at `rel` below `root` with exactly `mode`.
///
/// Whatever the name was (a link to `/etc/shadow`, a FIFO, a hard link to a file elsewhere), it
/// is unlinked first, never opened; then the file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`, so
/// a link planted between the unlink and the create makes the create fail instead of writing
/// through it. Only the name in the tree changes: a link's target keeps its content, mode and
/// mtime. A directory at the name is refused (it is not ccci's to remove).
pub fn replace_file(root: &Path, rel: &Path, bytes: &[u8], mode: u32) -> Result<(), UntrustedError> {
    let (dir, last, shown) = open_parent(root, rel)?;
    match fstatat(&dir, last, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if FileKind::of_stat(&st) == FileKind::Directory => {
            return Err(UntrustedError::NotRegular { path: shown, kind: FileKind::Directory });
        }
        Ok(_) => match unlinkat(&dir, last, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(UntrustedError::io(&shown, e)),
        },
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(UntrustedError::io(&shown, e)),
    }
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(&dir, last, flags, Mode::from_bits_truncate(mode & 0o7777)) {
        Ok(fd) => fd,
        Err(Errno::EEXIST) => {
            return Err(UntrustedError::Io {
                path: shown,
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "reappeared while ccci replaced it (something else writes into the tree)",
                ),
            });
        }
        Err(e) => return Err(UntrustedError::io(&shown, e)),
    };
    let mut file = File::from(fd);
    file.write_all(bytes).map_err(|e| UntrustedError::io(&shown, e))?;
    // The create mode went through the umask; the caller asked for exactly `mode`.
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777)).map_err(|e| UntrustedError::io(&shown, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::sync::mpsc;
    use std::time::{Duration, SystemTime};

    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("compose.yml"), "services: {}\n").unwrap();
        std::fs::write(d.path().join("sub/x.yml"), "x").unwrap();
        d
    }

    #[test]
    fn reads_a_regular_file_and_one_in_a_subdirectory() {
        let d = tree();
        assert_eq!(read(d.path(), Path::new("compose.yml")).unwrap(), b"services: {}\n");
        assert_eq!(read_to_string(d.path(), Path::new("sub/x.yml")).unwrap(), "x");
    }

    #[test]
    fn refuses_names_that_are_not_plain_relative_paths() {
        let d = tree();
        for rel in ["", "/etc/passwd", "../x", "sub/../compose.yml", "sub//x.yml", "./compose.yml", "sub/"] {
            let e = read(d.path(), Path::new(rel)).unwrap_err();
            assert!(matches!(e, UntrustedError::BadPath { .. }), "{rel:?}: {e}");
        }
    }

    /// A FIFO with no writer: a blocking open would hang forever. The read runs on a thread
    /// with a bounded wait, so this test fails instead of hanging if that ever regresses.
    #[test]
    fn a_fifo_without_a_writer_is_refused_at_once() {
        let d = tree();
        nix::unistd::mkfifo(&d.path().join("compose.zz.yml"), Mode::from_bits_truncate(0o644)).unwrap();
        // And a link to it, the shape a PR would commit.
        symlink(d.path().join("compose.zz.yml"), d.path().join("compose.link.yml")).unwrap();
        let root = d.path().to_path_buf();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let a = read(&root, Path::new("compose.zz.yml")).map(|_| ());
            let b = read(&root, Path::new("compose.link.yml")).map(|_| ());
            let _ = tx.send((a, b));
        });
        let (a, b) = rx.recv_timeout(Duration::from_secs(5)).expect("the read of a FIFO blocked");
        let e = a.unwrap_err();
        assert!(matches!(e, UntrustedError::NotRegular { kind: FileKind::Fifo, .. }), "{e}");
        assert!(e.to_string().contains("compose.zz.yml: is a FIFO"), "{e}");
        assert!(matches!(b.unwrap_err(), UntrustedError::Symlink { .. }));
    }

    #[test]
    fn symlinks_are_refused_at_the_end_and_in_the_middle() {
        let d = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s3cret").unwrap();
        symlink(outside.path().join("secret"), d.path().join("compose.yml.link")).unwrap();
        // A link to a file inside the tree is refused too: ccci reads names, never links.
        symlink("compose.yml", d.path().join("inside.yml")).unwrap();
        symlink(outside.path(), d.path().join("dirlink")).unwrap();
        symlink("sub", d.path().join("sublink")).unwrap();
        for rel in ["compose.yml.link", "inside.yml"] {
            let e = read(d.path(), Path::new(rel)).unwrap_err();
            assert!(matches!(&e, UntrustedError::Symlink { path } if path.ends_with(rel)), "{rel}: {e}");
            assert!(e.to_string().contains("is a symbolic link"), "{e}");
        }
        for (rel, link) in [("dirlink/secret", "dirlink"), ("sublink/x.yml", "sublink")] {
            let e = read(d.path(), Path::new(rel)).unwrap_err();
            assert!(matches!(&e, UntrustedError::Symlink { path } if path.ends_with(link)), "{rel}: {e}");
        }
    }

    #[test]
    fn devices_directories_and_sockets_are_refused_without_reading() {
        let e = read(Path::new("/dev"), Path::new("null")).unwrap_err();
        assert!(matches!(e, UntrustedError::NotRegular { kind: FileKind::CharDevice, .. }), "{e}");
        assert!(e.to_string().contains("/dev/null: is a character device"), "{e}");
        let d = tree();
        let e = read(d.path(), Path::new("sub")).unwrap_err();
        assert!(matches!(e, UntrustedError::NotRegular { kind: FileKind::Directory, .. }), "{e}");
        let _sock = std::os::unix::net::UnixListener::bind(d.path().join("s.sock")).unwrap();
        let e = read(d.path(), Path::new("s.sock")).unwrap_err();
        assert!(matches!(e, UntrustedError::NotRegular { kind: FileKind::Socket, .. }), "{e}");
        // A regular file used as a directory.
        let e = read(d.path(), Path::new("compose.yml/x")).unwrap_err();
        assert!(matches!(e, UntrustedError::NotDirectory { kind: FileKind::Regular, .. }), "{e}");
    }

    #[test]
    fn oversized_files_are_refused_and_missing_ones_named() {
        let d = tree();
        // Sparse: the size is refused from the stat, nothing is read.
        let f = File::create(d.path().join("big.yml")).unwrap();
        f.set_len(MAX_TREE_FILE + 1).unwrap();
        let e = read(d.path(), Path::new("big.yml")).unwrap_err();
        assert!(
            matches!(e, UntrustedError::TooLarge { size, cap, .. } if size == MAX_TREE_FILE + 1 && cap == MAX_TREE_FILE)
        );
        assert!(e.to_string().contains(&format!("is {} bytes, over the cap of {MAX_TREE_FILE}", MAX_TREE_FILE + 1)));
        std::fs::write(d.path().join("ten"), "0123456789").unwrap();
        assert_eq!(read_capped(d.path(), Path::new("ten"), 10).unwrap().len(), 10);
        assert!(matches!(read_capped(d.path(), Path::new("ten"), 9), Err(UntrustedError::TooLarge { .. })));
        let e = read(d.path(), Path::new("sub/nope.yml")).unwrap_err();
        assert!(matches!(&e, UntrustedError::NotFound { path } if path.ends_with("sub/nope.yml")), "{e}");
        assert!(matches!(read(d.path(), Path::new("nodir/x")), Err(UntrustedError::NotFound { .. })));
    }

    #[test]
    fn replace_file_removes_a_planted_link_and_leaves_its_target_untouched() {
        let d = tree();
        let victim_dir = tempfile::tempdir().unwrap();
        let victim = victim_dir.path().join("shadow");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options().write(true).open(&victim).unwrap().set_modified(old).unwrap();
        let before = std::fs::metadata(&victim).unwrap();
        symlink(&victim, d.path().join("compose.ccci.yml")).unwrap();

        replace_file(d.path(), Path::new("compose.ccci.yml"), b"overlay: yes\n", 0o644).unwrap();

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let after = std::fs::metadata(&victim).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o600);
        assert_eq!(after.mtime(), before.mtime());
        assert_eq!(after.modified().unwrap(), old);
        let written = std::fs::symlink_metadata(d.path().join("compose.ccci.yml")).unwrap();
        assert!(written.file_type().is_file());
        assert_eq!(written.mode() & 0o7777, 0o644);
        assert_eq!(std::fs::read(d.path().join("compose.ccci.yml")).unwrap(), b"overlay: yes\n");
    }

    #[test]
    fn replace_file_replaces_files_and_fifos_but_not_directories_or_linked_parents() {
        let d = tree();
        replace_file(d.path(), Path::new("compose.yml"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(d.path().join("compose.yml")).unwrap(), b"new");
        assert_eq!(std::fs::metadata(d.path().join("compose.yml")).unwrap().mode() & 0o7777, 0o600);
        nix::unistd::mkfifo(&d.path().join("f.yml"), Mode::from_bits_truncate(0o644)).unwrap();
        replace_file(d.path(), Path::new("f.yml"), b"x", 0o644).unwrap();
        assert!(std::fs::symlink_metadata(d.path().join("f.yml")).unwrap().is_file());
        let e = replace_file(d.path(), Path::new("sub"), b"x", 0o644).unwrap_err();
        assert!(matches!(e, UntrustedError::NotRegular { kind: FileKind::Directory, .. }), "{e}");
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), d.path().join("out")).unwrap();
        let e = replace_file(d.path(), Path::new("out/compose.ccci.yml"), b"x", 0o644).unwrap_err();
        assert!(matches!(e, UntrustedError::Symlink { .. }), "{e}");
        assert!(!outside.path().join("compose.ccci.yml").exists());
    }
}
