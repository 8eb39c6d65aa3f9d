//! flock(2) is unreliable on network filesystems: the lock dir and runs dir are checked once.

use std::path::Path;

/// The filesystem name when `f_type` is one ccci refuses to lock on.
pub fn refused(f_type: i64) -> Option<&'static str> {
    Some(match f_type {
        0x6969 => "NFS",
        0x517B => "SMB",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x6573_5546 => "FUSE",
        0x0102_1997 => "9p",
        0x00C3_6400 => "Ceph",
        0x5346_414F => "AFS",
        0x7375_7245 => "Coda",
        0x564C => "NCP",
        0x0116_1970 => "GFS2",
        0x7461_636F => "OCFS2",
        0x0BD0_0BD0 => "Lustre",
        _ => return None,
    })
}

/// Refuses a dir on a network filesystem. A dir that does not exist yet is checked at its
/// nearest existing ancestor (that is where it will be created).
pub fn check(dir: &Path, what: &str) -> Result<(), String> {
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) => probe = p,
            None => return Ok(()),
        }
    }
    match nix::sys::statfs::statfs(probe) {
        Ok(st) => match refused(st.filesystem_type().0) {
            Some(fs) => Err(format!(
                "{what} {} is on {fs}: flock(2) is unreliable on network filesystems; use a local dir",
                dir.display()
            )),
            None => Ok(()),
        },
        Err(e) => Err(format!("cannot statfs {what} {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filesystems_are_refused() {
        assert_eq!(refused(0x6969), Some("NFS"));
        assert_eq!(refused(0xFF53_4D42), Some("CIFS"));
        assert_eq!(refused(0x6573_5546), Some("FUSE"));
        assert_eq!(refused(0x01021994), None); // tmpfs
        assert_eq!(refused(0xEF53), None); // ext4
        assert_eq!(refused(0x5846_5342), None); // xfs
    }

    #[test]
    fn local_dirs_pass() {
        let d = tempfile::tempdir().unwrap();
        assert!(check(&d.path().join("not/yet"), "lock dir").is_ok());
    }
}
