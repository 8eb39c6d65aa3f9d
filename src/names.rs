//! Names of §3: app domains, stack names, the run-app pattern and run ids.

use regex::Regex;
use sha1::{Digest, Sha1};

/// `<p>-<h>.<suffix>`: `p` is the recipe reduced to `[a-z0-9]` and cut to 4 characters, `h` the
/// first 6 hex digits of `sha1("<recipe>|<pr>|<ref>")`. Short on purpose: swarm object names
/// (`<stack>_<secret>_<version>`) must stay within 64 characters.
pub fn app_domain(recipe: &str, pr: &str, git_ref: &str, suffix: &str) -> String {
    let prefix: String = recipe.chars().filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit()).take(4).collect();
    let digest = Sha1::digest(format!("{recipe}|{pr}|{git_ref}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{}.{suffix}", &hex[..6])
}

/// The domain of the `n`th dependency (1-based) of the run app `app_domain`:
/// `<p>-<h>-d<n>.<suffix>`. Derived from the run's domain so the janitor can tell whose it is
/// ([`RunAppPattern::owner_of`]), and flat (not a subdomain) so a wildcard certificate for the
/// suffix still covers it.
pub fn dep_domain(app_domain: &str, n: usize) -> String {
    match app_domain.split_once('.') {
        Some((label, suffix)) => format!("{label}-d{n}.{suffix}"),
        None => format!("{app_domain}-d{n}"),
    }
}

/// The run app a dependency app's domain names as its owner, from the domain alone (for a
/// domain already known to be a run app; [`RunAppPattern::owner_of`] checks the suffix too).
pub fn owner_of_dep(domain: &str) -> Option<String> {
    let (label, suffix) = domain.split_once('.')?;
    let (owner, n) = label.rsplit_once("-d")?;
    let ok = n.len() == 1
        && matches!(n.as_bytes()[0], b'1'..=b'9')
        && owner.split_once('-').is_some_and(|(p, h)| {
            (1..=4).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && h.len() == 6
                && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    ok.then(|| format!("{owner}.{suffix}"))
}

/// abra's rule: the stack name is the domain with every `.` replaced by `_`.
pub fn stack_name(domain: &str) -> String {
    domain.replace('.', "_")
}

/// The inverse of [`stack_name`] for run apps: the first `_` separates the short name, the rest
/// are the suffix's dots. Only meaningful for names matched by [`RunAppPattern`].
pub fn domain_of_stack(stack: &str) -> String {
    stack.replace('_', ".")
}

/// Recognises run apps and their dependency apps; nothing else is ever a janitor candidate.
#[derive(Clone, Debug)]
pub struct RunAppPattern {
    domain: Regex,
    stack: Regex,
    object: Regex,
    dep: Regex,
}

impl RunAppPattern {
    pub fn new(suffix: &str) -> Self {
        let esc = regex::escape(suffix);
        let stack_suffix = regex::escape(&suffix.replace('.', "_"));
        // A run app's short name, optionally `-d<n>`: one of its dependencies (dep_domain).
        let app = r"[a-z0-9]{1,4}-[0-9a-f]{6}(?:-d[1-9])?";
        RunAppPattern {
            domain: Regex::new(&format!(r"^{app}\.{esc}$")).expect("valid regex"),
            stack: Regex::new(&format!(r"^{app}_{stack_suffix}$")).expect("valid regex"),
            object: Regex::new(&format!(r"^({app}_{stack_suffix})_.")).expect("valid regex"),
            dep: Regex::new(&format!(r"^([a-z0-9]{{1,4}}-[0-9a-f]{{6}})-d[1-9]\.({esc})$")).expect("valid regex"),
        }
    }

    pub fn is_run_domain(&self, domain: &str) -> bool {
        self.domain.is_match(domain)
    }

    /// The run app a dependency app belongs to (`None` for anything else, run apps included):
    /// the janitor reaps a dependency only while its owner's lock is free too.
    pub fn owner_of(&self, domain: &str) -> Option<String> {
        self.dep.captures(domain).map(|c| format!("{}.{}", &c[1], &c[2]))
    }

    /// Maps a stack namespace back to its run-app domain, or `None` when it is not a run app.
    pub fn domain_for_stack(&self, stack: &str) -> Option<String> {
        self.stack.is_match(stack).then(|| domain_of_stack(stack))
    }

    /// The run-app stack an object named `<stack>_<name>…` belongs to (abra creates secrets
    /// without the stack label; their name is all that ties them to the app).
    pub fn stack_of_object(&self, name: &str) -> Option<String> {
        self.object.captures(name).map(|c| c[1].to_string())
    }
}

/// `^[A-Za-z0-9._-]{1,64}$`, and not `.` or `..`: a run id becomes a directory name.
pub fn valid_run_id(id: &str) -> bool {
    let ok_chars = id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok_chars && (1..=64).contains(&id.len()) && id != "." && id != ".."
}

/// The run dir name of attempt `n` of a run id: attempt 1 is `<run id>`, later ones
/// `<run id>.<n>` (a reused run id never appends to or deletes an earlier attempt).
pub fn attempt_dir(run_id: &str, n: u32) -> String {
    if n <= 1 { run_id.to_string() } else { format!("{run_id}.{n}") }
}

/// The attempt number a run dir name has for `run_id`: `Some(1)` for the run id itself,
/// `Some(n)` for `<run id>.<n>` with n ≥ 2.
pub fn attempt_of(run_id: &str, dir_name: &str) -> Option<u32> {
    if dir_name == run_id {
        return Some(1);
    }
    let n: u32 = dir_name.strip_prefix(run_id)?.strip_prefix('.')?.parse().ok()?;
    (n >= 2 && dir_name == attempt_dir(run_id, n)).then_some(n)
}

/// Whether a name under the runs dir can be a run dir: a run id, or a run id plus `.<n>`.
pub fn valid_run_dir(name: &str) -> bool {
    if valid_run_id(name) {
        return true;
    }
    match name.rsplit_once('.') {
        Some((base, n)) => valid_run_id(base) && n.parse::<u32>().is_ok_and(|n| n >= 2) && !n.starts_with('0'),
        None => false,
    }
}

/// The drain marker inside the lock dir: while it exists, new runs refuse to start.
pub const DRAIN_MARKER: &str = "cc-ci-drain";
/// The host lock inside the lock dir: every run holds it shared; `ccci drain --wait` takes it
/// exclusively.
pub const HOST_LOCK: &str = "cc-ci-host.lock";

/// The app lockfile name inside the lock dir. The predecessor's name, so a host running both
/// during a migration locks the same inode.
pub fn lock_file_name(domain: &str) -> String {
    format!("cc-ci-app-{domain}.lock")
}

/// The domain a lockfile name belongs to, if it is an app lockfile.
pub fn domain_of_lock_file(name: &str) -> Option<&str> {
    name.strip_prefix("cc-ci-app-")?.strip_suffix(".lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_dirs() {
        assert_eq!(attempt_dir("279", 1), "279");
        assert_eq!(attempt_dir("279", 3), "279.3");
        assert_eq!(attempt_of("279", "279"), Some(1));
        assert_eq!(attempt_of("279", "279.2"), Some(2));
        assert_eq!(attempt_of("279", "279.02"), None);
        assert_eq!(attempt_of("279", "279.1"), None);
        assert_eq!(attempt_of("279", "2790"), None);
        assert!(valid_run_dir(&format!("{}.12", "x".repeat(64))));
        assert!(!valid_run_dir("../x.2"));
    }

    const SUFFIX: &str = "ci.commoninternet.net";

    #[test]
    fn spec_vectors() {
        assert_eq!(app_domain("hello", "0", "", SUFFIX), "hell-620c9a.ci.commoninternet.net");
        assert_eq!(
            app_domain("hello", "7", "0123456789abcdef0123456789abcdef01234567", SUFFIX),
            "hell-b45f50.ci.commoninternet.net"
        );
        assert_eq!(app_domain("custom-html", "12", "deadbeef", SUFFIX), "cust-07de7c.ci.commoninternet.net");
        assert_eq!(app_domain("the-lounge", "3", "main", SUFFIX), "thel-bc7594.ci.commoninternet.net");
    }

    #[test]
    fn short_recipe_names_keep_what_they_have() {
        assert!(app_domain("ab", "0", "", SUFFIX).starts_with("ab-"));
        assert!(app_domain("a-b-c-d-e", "0", "", SUFFIX).starts_with("abcd-"));
    }

    #[test]
    fn stack_names_follow_abra() {
        assert_eq!(stack_name("hell-620c9a.ci.commoninternet.net"), "hell-620c9a_ci_commoninternet_net");
    }

    #[test]
    fn run_app_pattern() {
        let p = RunAppPattern::new(SUFFIX);
        assert!(p.is_run_domain("hell-620c9a.ci.commoninternet.net"));
        assert!(p.is_run_domain("a-000000.ci.commoninternet.net"));
        assert!(!p.is_run_domain("warm-keycloak.ci.commoninternet.net"));
        assert!(!p.is_run_domain("hell-620c9a.ci.commoninternetXnet"));
        assert!(!p.is_run_domain("hell-620c9a.other.example"));
        assert!(!p.is_run_domain("hello-620c9a.ci.commoninternet.net"));
        assert!(!p.is_run_domain("hell-620C9A.ci.commoninternet.net"));
        assert!(!p.is_run_domain("x.hell-620c9a.ci.commoninternet.net"));
        assert_eq!(
            p.domain_for_stack("hell-620c9a_ci_commoninternet_net").as_deref(),
            Some("hell-620c9a.ci.commoninternet.net")
        );
        assert_eq!(p.domain_for_stack("warm-keycloak_ci_commoninternet_net"), None);
        assert_eq!(
            p.stack_of_object("hell-620c9a_ci_commoninternet_net_api_key_v1").as_deref(),
            Some("hell-620c9a_ci_commoninternet_net")
        );
        assert_eq!(p.stack_of_object("hell-620c9a_ci_commoninternet_net"), None);
        assert_eq!(p.stack_of_object("warm-keycloak_ci_commoninternet_net_db_v1"), None);
        assert_eq!(p.stack_of_object("hell-620c9a_ci_commoninternet_netX_a"), None);
    }

    #[test]
    fn dependency_apps_are_run_apps_that_name_their_owner() {
        let p = RunAppPattern::new(SUFFIX);
        let app = "ssoa-0a1b2c.ci.commoninternet.net";
        let dep = dep_domain(app, 1);
        assert_eq!(dep, "ssoa-0a1b2c-d1.ci.commoninternet.net");
        assert!(p.is_run_domain(&dep));
        assert_eq!(p.owner_of(&dep).as_deref(), Some(app));
        assert_eq!(p.owner_of(app), None, "a run app has no owner");
        assert_eq!(owner_of_dep(&dep).as_deref(), Some(app));
        assert_eq!(owner_of_dep(app), None);
        assert_eq!(p.domain_for_stack(&stack_name(&dep)).as_deref(), Some(dep.as_str()));
        assert_eq!(
            p.stack_of_object("ssoa-0a1b2c-d8_ci_commoninternet_net_client_secret_v1").as_deref(),
            Some("ssoa-0a1b2c-d8_ci_commoninternet_net")
        );
        for not in [
            "ssoa-0a1b2c-d0.ci.commoninternet.net",
            "ssoa-0a1b2c-d10.ci.commoninternet.net",
            "ssoa-0a1b2c-x1.ci.commoninternet.net",
            "ssoa-0a1b2c-d1-d1.ci.commoninternet.net",
        ] {
            assert!(!p.is_run_domain(not) && p.owner_of(not).is_none() && owner_of_dep(not).is_none(), "{not}");
        }
    }

    #[test]
    fn run_ids() {
        for ok in ["279", "manual-42", "a.b_c-d", &"x".repeat(64)] {
            assert!(valid_run_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", &"x".repeat(65), "é"] {
            assert!(!valid_run_id(bad), "{bad}");
        }
    }

    #[test]
    fn lock_file_names_round_trip() {
        let name = lock_file_name("hell-620c9a.ci.commoninternet.net");
        assert_eq!(name, "cc-ci-app-hell-620c9a.ci.commoninternet.net.lock");
        assert_eq!(domain_of_lock_file(&name), Some("hell-620c9a.ci.commoninternet.net"));
        assert_eq!(domain_of_lock_file("other.lock"), None);
    }
}
