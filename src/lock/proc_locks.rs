//! Who holds a lock, read from `/proc/locks` by device and inode. Reading never takes a lock.

use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// One `/proc/locks` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    pub kind: String,
    pub mode: String,
    pub pid: i32,
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

/// Parses lines like `1: FLOCK  ADVISORY  WRITE 4242 00:1a:12345 0 EOF` (blocked waiters carry
/// a `->` marker and are skipped: they do not hold the lock).
pub fn parse(text: &str) -> Vec<LockEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) == Some(&"->") {
                return None;
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
            })
        })
        .collect()
}

pub fn read() -> Vec<LockEntry> {
    std::fs::read_to_string("/proc/locks").map(|t| parse(&t)).unwrap_or_default()
}

/// Pids holding a lock on the inode `(dev, ino)`.
///
/// `/proc/locks` is a seq_file read a page at a time: when other processes take or release
/// locks between two reads, an entry can be printed twice or not at all. So the answer is
/// informational (who to name, what to show); decisions are made by the kernel's own answer
/// to a non-blocking try.
pub fn holders(dev: u64, ino: u64) -> Vec<i32> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut pids: Vec<i32> =
        read().into_iter().filter(|e| e.inode == ino && e.major == major && e.minor == minor).map(|e| e.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

pub fn holders_of_file(f: &File) -> Vec<i32> {
    match f.metadata() {
        Ok(m) => holders(m.dev(), m.ino()),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks() {
        let text = "1: FLOCK  ADVISORY  WRITE 4242 00:1a:12345 0 EOF\n1: -> FLOCK  ADVISORY  WRITE 4343 00:1a:12345 0 EOF\n2: POSIX  ADVISORY  READ 99 fd:01:777 0 EOF\n";
        let e = parse(text);
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].pid, e[0].major, e[0].minor, e[0].inode), (4242, 0, 0x1a, 12345));
        assert_eq!((e[1].kind.as_str(), e[1].major, e[1].minor), ("POSIX", 0xfd, 1));
    }
}
