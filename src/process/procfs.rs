//! The one reader of `/proc/<pid>/…` for processes: stat (state, parent, group, start time),
//! the environment (where a run's token lives) and the command name. Everything that asks
//! "is this still the process I saw?" asks it here, by pid *and* start time: pids are reused.

/// `(pid, ppid, pgrp, state, start time)` of one /proc entry.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub state: char,
    /// Start time in clock ticks since boot (field 22).
    pub start_time: u64,
}

impl ProcStat {
    /// Exited, waiting to be reaped (or being reaped): no longer runs anything.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

pub fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let pid = text.split(' ').next()?.parse().ok()?;
    let rest = text.get(text.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgrp: f.get(2)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
    })
}

/// Every process on the host.
pub fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).filter_map(read_stat).collect()
}

/// The same process as one seen before: same pid, same start time, still running.
pub fn same_process(pid: i32, start_time: u64) -> bool {
    read_stat(pid).is_some_and(|st| st.start_time == start_time && !st.is_dead())
}

/// The raw `NUL`-separated environment of a process (readable for root, or for its own user).
pub fn environ(pid: i32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/environ")).ok()
}

/// The value of `key` in an environment blob read by [`environ`].
pub fn env_value<'a>(environ: &'a [u8], key: &str) -> Option<&'a str> {
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(key.as_bytes())?.strip_prefix(b"="))
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The command name (`comm`), as the kernel keeps it (15 bytes at most).
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim_end_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.pid, s.state, s.ppid, s.pgrp, s.start_time), (4242, 'S', 1, 4242, 98765));
        assert!(parse_stat("4242 (no fields)").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn reads_self() {
        let me = read_stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(same_process(me.pid, me.start_time));
        assert!(!same_process(me.pid, me.start_time + 1), "another start time is another process");
        assert!(comm(me.pid).is_some_and(|c| !c.is_empty()));
    }

    #[test]
    fn env_values_match_whole_keys() {
        let blob = b"CCCI_RUN_TOKEN_X=no\0CCCI_RUN_TOKEN=r:1:2\0PATH=/bin\0";
        assert_eq!(env_value(blob, "CCCI_RUN_TOKEN"), Some("r:1:2"));
        assert_eq!(env_value(blob, "PATH"), Some("/bin"));
        assert_eq!(env_value(blob, "HOME"), None);
        assert_eq!(env_value(b"", "PATH"), None);
    }
}
