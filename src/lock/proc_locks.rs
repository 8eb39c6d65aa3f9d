//! Who holds a lock, read from `/proc/locks`. Reading never takes a lock.
//!
//! Two limits make this informational only — decisions are made by the kernel's answer to a
//! non-blocking try:
//! - `/proc/locks` is a seq_file read a page at a time; when other processes take or release
//!   locks between two reads, an entry can be printed twice or not at all;
//! - it names the device of the filesystem's superblock, which `stat` does not always report
//!   (btrfs subvolumes and overlayfs give files an anonymous device): the mount's device from
//!   `/proc/self/mountinfo` is matched too, and a lock that still cannot be matched is
//!   "unknown", never "free".

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// One `/proc/locks` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    pub kind: String,
    pub mode: String,
    pub pid: i32,
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
    /// A `->` line: this process waits for the lock, it does not hold it.
    pub blocked: bool,
}

/// Parses lines like `1: FLOCK  ADVISORY  WRITE 4242 00:1a:12345 0 EOF` and the waiters'
/// `1: -> FLOCK  ADVISORY  WRITE 4343 00:1a:12345 0 EOF`.
pub fn parse(text: &str) -> Vec<LockEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f: Vec<&str> = line.split_whitespace().collect();
            let blocked = f.get(1) == Some(&"->");
            if blocked {
                f.remove(1);
            }
            let (kind, mode, pid, dev) = (f.get(1)?, f.get(3)?, f.get(4)?, f.get(5)?);
            let mut parts = dev.split(':');
            let major = u32::from_str_radix(parts.next()?, 16).ok()?;
            let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
            let inode = parts.next()?.parse().ok()?;
            Some(LockEntry {
                kind: kind.to_string(),
                mode: mode.to_string(),
                pid: pid.parse().ok()?,
                major,
                minor,
                inode,
                blocked,
            })
        })
        .collect()
}

pub fn read() -> Vec<LockEntry> {
    std::fs::read_to_string("/proc/locks").map(|t| parse(&t)).unwrap_or_default()
}

/// The lock state of one file as `/proc/locks` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Held(Vec<i32>),
    Free,
    /// No entry matches the file's devices, but some entry has its inode on another device:
    /// the device could not be matched, so ccci cannot tell.
    Unknown,
}

/// One read of `/proc/locks`, indexed for many lookups.
#[derive(Debug, Default)]
pub struct HeldLocks {
    holders: HashMap<(u32, u32, u64), Vec<i32>>,
    waiters: HashMap<(u32, u32, u64), Vec<i32>>,
    inodes: HashSet<u64>,
    mounts: Vec<(String, u32, u32)>,
}

impl HeldLocks {
    pub fn read() -> HeldLocks {
        Self::from_entries(read(), mounts())
    }

    fn from_entries(entries: Vec<LockEntry>, mounts: Vec<(String, u32, u32)>) -> HeldLocks {
        let mut h = HeldLocks { mounts, ..HeldLocks::default() };
        for e in entries {
            h.inodes.insert(e.inode);
            let map = if e.blocked { &mut h.waiters } else { &mut h.holders };
            map.entry((e.major, e.minor, e.inode)).or_default().push(e.pid);
        }
        // A racing reader can see an entry twice (see the module doc).
        for pids in h.holders.values_mut().chain(h.waiters.values_mut()) {
            pids.sort_unstable();
            pids.dedup();
        }
        h
    }

    /// The devices `/proc/locks` may name for `path`: `stat`'s and its mount's.
    fn devices(&self, path: &Path, meta: &std::fs::Metadata) -> Vec<(u32, u32)> {
        let dev = meta.dev();
        let mut devs = vec![(libc::major(dev), libc::minor(dev))];
        if let Some(m) = mount_device(&self.mounts, path)
            && !devs.contains(&m)
        {
            devs.push(m);
        }
        devs
    }

    /// Held (by whom), free, or unknown; `path` is the file `meta` was read from.
    pub fn state(&self, path: &Path, meta: &std::fs::Metadata) -> Seen {
        let ino = meta.ino();
        let mut pids: Vec<i32> = self
            .devices(path, meta)
            .into_iter()
            .flat_map(|(ma, mi)| self.holders.get(&(ma, mi, ino)).cloned().unwrap_or_default())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        if !pids.is_empty() {
            Seen::Held(pids)
        } else if self.inodes.contains(&ino) {
            // Some entry names this inode (a holder on an unmatched device, or a waiter whose
            // holder the racing read missed): say so rather than call it free.
            Seen::Unknown
        } else {
            Seen::Free
        }
    }

    /// Pids holding a lock on the file (empty when free or unknown).
    pub fn holders(&self, path: &Path, meta: &std::fs::Metadata) -> Vec<i32> {
        match self.state(path, meta) {
            Seen::Held(p) => p,
            _ => Vec::new(),
        }
    }

    /// Pids blocked waiting for a lock on the file.
    pub fn waiters(&self, path: &Path, meta: &std::fs::Metadata) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .devices(path, meta)
            .into_iter()
            .flat_map(|(ma, mi)| self.waiters.get(&(ma, mi, meta.ino())).cloned().unwrap_or_default())
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// `(mount point, major, minor)` of every mount, from `/proc/self/mountinfo`.
fn mounts() -> Vec<(String, u32, u32)> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|t| parse_mountinfo(&t)).unwrap_or_default()
}

fn parse_mountinfo(text: &str) -> Vec<(String, u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let (ma, mi) = f.get(2)?.split_once(':')?;
            Some((unescape(f.get(4)?), ma.parse().ok()?, mi.parse().ok()?))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The device of the mount holding `path` (the longest mount point that prefixes it).
fn mount_device(mounts: &[(String, u32, u32)], path: &Path) -> Option<(u32, u32)> {
    let canon = std::fs::canonicalize(path.parent().unwrap_or(path)).ok()?;
    mounts
        .iter()
        .filter(|(mp, _, _)| canon.starts_with(mp))
        .max_by_key(|(mp, _, _)| mp.len())
        .map(|(_, ma, mi)| (*ma, *mi))
}

/// Pids holding a lock on the open file (informational; see the module doc).
pub fn holders_of_file(f: &File) -> Vec<i32> {
    let Ok(meta) = f.metadata() else { return Vec::new() };
    holders(meta.dev(), meta.ino())
}

/// Pids holding a lock on the inode `(dev, ino)` (tests and diagnostics).
pub fn holders(dev: u64, ino: u64) -> Vec<i32> {
    let (ma, mi) = (libc::major(dev), libc::minor(dev));
    let mut pids: Vec<i32> = read()
        .into_iter()
        .filter(|e| !e.blocked && e.inode == ino && e.major == ma && e.minor == mi)
        .map(|e| e.pid)
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A lock holder as people should read it: ccci runs by pid, anything else called out as a
/// foreign process (any local user can flock a file it can open).
pub fn describe_pid(pid: i32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim().to_string()).ok();
    match comm.as_deref() {
        Some("ccci") => format!("pid {pid}"),
        Some(c) => format!("a foreign process (pid {pid}, {c})"),
        None => format!("pid {pid} (gone)"),
    }
}

/// "held by a foreign process (pid N, comm)" when a holder of the lockfile at `path` is not a
/// ccci process; `None` when every holder is ccci (or none is visible).
pub fn foreign_holder(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let pids = HeldLocks::read().holders(path, &meta);
    pids.into_iter().find(|p| !is_ccci(*p)).map(|p| format!("held by {}", describe_pid(p)))
}

/// Whether `pid` is a ccci process (by its command name).
pub fn is_ccci(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "ccci")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_holders_and_waiters() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:1a:12345 0 EOF\n1: -> FLOCK  ADVISORY  WRITE 4343 00:1a:12345 0 EOF\n2: POSIX  ADVISORY  READ 99 fd:01:777 0 EOF\n";
        let e = parse(text);
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].pid, e[0].major, e[0].minor, e[0].inode, e[0].blocked), (4242, 0, 0x1a, 12345, false));
        assert_eq!((e[1].pid, e[1].blocked), (4343, true));
        assert_eq!((e[2].kind.as_str(), e[2].major, e[2].minor), ("POSIX", 0xfd, 1));
    }

    #[test]
    fn an_unmatchable_device_is_unknown_not_free() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        std::fs::write(&p, "").unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        let entry = |ma: u32, mi: u32, blocked| LockEntry {
            kind: "FLOCK".into(),
            mode: "WRITE".into(),
            pid: 7,
            major: ma,
            minor: mi,
            inode: meta.ino(),
            blocked,
        };
        let (ma, mi) = (libc::major(meta.dev()), libc::minor(meta.dev()));
        let held = HeldLocks::from_entries(vec![entry(ma, mi, false), entry(ma, mi, false)], Vec::new());
        assert_eq!(held.state(&p, &meta), Seen::Held(vec![7]), "a duplicated entry counts once");
        let elsewhere = HeldLocks::from_entries(vec![entry(ma + 1, 99, false)], Vec::new());
        assert_eq!(elsewhere.state(&p, &meta), Seen::Unknown);
        // The mount's device (what /proc/locks prints on btrfs subvolumes) matches too.
        let canon = std::fs::canonicalize(dir.path()).unwrap().display().to_string();
        let btrfs = HeldLocks::from_entries(vec![entry(ma + 1, 99, false)], vec![(canon, ma + 1, 99)]);
        assert_eq!(btrfs.state(&p, &meta), Seen::Held(vec![7]));
        assert_eq!(HeldLocks::from_entries(Vec::new(), Vec::new()).state(&p, &meta), Seen::Free);
    }

    #[test]
    fn mountinfo_lines() {
        let m =
            parse_mountinfo("22 1 0:21 / /run rw - tmpfs tmpfs rw\n30 22 0:25 / /run/my\\040lock rw - tmpfs x rw\n");
        assert_eq!(m, vec![("/run".into(), 0, 21), ("/run/my lock".into(), 0, 25)]);
        assert_eq!(mount_device(&m, Path::new("/run/my lock/a.lock")), None, "not canonicalizable here");
    }
}
