//! The explicit child environment (§4): an allow-list, never ccci's whole environment.

use std::sync::Mutex;

use crate::env_vars as ev;

// Locks rather than OnceLocks: the base is set once the host settings are read, and a run's
// token only once its run dir exists; a second `configure` must not be silently ignored.
static BASE: Mutex<Option<Vec<(String, String)>>> = Mutex::new(None);
static TOKEN: Mutex<Option<String>> = Mutex::new(None);
/// The §7.6 variables of the run (`CCCI_RECIPE`, `ABRA_DIR`, …), and the current `CCCI_STAGE`.
static RUN_VARS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
static STAGE: Mutex<Option<String>> = Mutex::new(None);

/// Sets the run's variables for every child started from now on.
pub fn set_run_vars(vars: Vec<(String, String)>) {
    *RUN_VARS.lock().unwrap_or_else(|e| e.into_inner()) = vars;
}

/// Sets `CCCI_STAGE` for every child started from now on.
pub fn set_stage(stage: &str) {
    *STAGE.lock().unwrap_or_else(|e| e.into_inner()) = Some(stage.to_string());
}

/// Builds the base environment from ccci's own: `PATH`, `HOME` (the passwd home, not `$HOME`),
/// `LANG`, `LC_*`, `TZ`, `DOCKER_HOST`, `DOCKER_CONFIG` and the proxy variables. `run_token`
/// marks every descendant of a run for the janitor's straggler sweep.
pub fn configure(passwd_home: &std::path::Path, run_token: Option<String>) {
    let mut vars: Vec<(String, String)> = Vec::new();
    for (k, v) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))) {
        let pass = matches!(k.as_str(), "PATH" | "LANG" | "TZ" | "DOCKER_HOST" | "DOCKER_CONFIG")
            || k.starts_with("LC_")
            || ev::PROXY_VARS.contains(&k.as_str());
        if pass {
            vars.push((k, v));
        }
    }
    if !vars.iter().any(|(k, _)| k == "PATH") {
        vars.push(("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()));
    }
    vars.push((ev::HOME.into(), passwd_home.display().to_string()));
    *BASE.lock().unwrap_or_else(|e| e.into_inner()) = Some(vars);
    set_run_token(run_token);
}

/// Marks every child started from now on as this run's (or as no run's).
pub fn set_run_token(token: Option<String>) {
    *TOKEN.lock().unwrap_or_else(|e| e.into_inner()) = token;
}

/// This process's run token, when it has one.
pub fn run_token() -> Option<String> {
    TOKEN.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The allow-listed variables plus the run token.
pub fn base() -> Vec<(String, String)> {
    let Some(mut vars) = BASE.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())];
    };
    vars.extend(RUN_VARS.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
    if let Some(stage) = STAGE.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        vars.push((ev::CCCI_STAGE.into(), stage));
    }
    if let Some(t) = run_token() {
        vars.push((ev::CCCI_RUN_TOKEN.into(), t));
    }
    vars
}

/// `<run id>:<pid>:<start time>`; the start time (clock ticks since boot, /proc/self/stat) makes
/// the token immune to pid reuse.
pub fn mint_run_token(run_id: &str) -> String {
    let pid = std::process::id();
    let start = super::procfs::read_stat(pid as i32).map_or(0, |s| s.start_time);
    format!("{run_id}:{pid}:{start}")
}

/// Parses a token back into `(run id, pid, start time)`.
pub fn parse_run_token(token: &str) -> Option<(String, i32, u64)> {
    let mut parts = token.rsplitn(3, ':');
    let start = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    let run_id = parts.next()?.to_string();
    crate::names::valid_run_id(&run_id).then_some((run_id, pid, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        assert_eq!(parse_run_token("279:4242:98765"), Some(("279".to_string(), 4242, 98765)));
        assert_eq!(parse_run_token("manual-1:2:3"), Some(("manual-1".to_string(), 2, 3)));
        assert_eq!(parse_run_token("../x:2:3"), None);
        assert_eq!(parse_run_token("garbage"), None);
    }
}
