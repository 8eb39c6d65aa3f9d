//! The base version an upgrade starts from (§7.4), first that applies: `upgrade.base` from
//! `ccci.yml`; the newest release tag that is a strict ancestor of the head; the default branch
//! tip when it is a strict ancestor; none (the head is deployed directly).

use std::cmp::Ordering;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::adapters::git::Git;

static RELEASE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d+)\.(\d+)\.(\d+)(?:\+([0-9A-Za-z.+_-]+))?$").expect("regex"));

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A ref to check out (a tag, a commit or `origin/<branch>`), with its commit.
    Ref { name: String, commit: String, why: &'static str },
    /// No earlier release: the head is deployed directly and upgrade is an intentional skip.
    None,
}

/// A release tag's sort key: the semver core, then the part after `+` compared piecewise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseKey {
    core: (u64, u64, u64),
    upstream: Vec<String>,
}

pub fn release_key(tag: &str) -> Option<ReleaseKey> {
    let c = RELEASE.captures(tag)?;
    let n = |i: usize| c.get(i).and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
    let upstream =
        c.get(4).map(|m| m.as_str().split(['.', '-', '+', '_']).map(str::to_string).collect()).unwrap_or_default();
    Some(ReleaseKey { core: (n(1), n(2), n(3)), upstream })
}

fn cmp_piece(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        _ => a.cmp(b),
    }
}

impl Ord for ReleaseKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.core.cmp(&other.core).then_with(|| {
            for (a, b) in self.upstream.iter().zip(&other.upstream) {
                let o = cmp_piece(a, b);
                if o != Ordering::Equal {
                    return o;
                }
            }
            self.upstream.len().cmp(&other.upstream.len())
        })
    }
}

impl PartialOrd for ReleaseKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Picks the newest release among `(tag, date)` candidates (already known to be strict
/// ancestors of the head): semver core, then upstream part, then tag date.
pub fn newest_release(candidates: &[(String, i64)]) -> Option<String> {
    candidates
        .iter()
        .filter_map(|(t, d)| Some((release_key(t)?, *d, t)))
        .max_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)))
        .map(|(_, _, t)| t.clone())
}

/// Chooses the base. `Err` when an explicit `upgrade.base` does not exist.
pub fn choose(
    git: &Git,
    dir: &Path,
    head: &str,
    explicit: Option<&str>,
    default_branch: Option<&str>,
) -> Result<Base, String> {
    let rev = |r: &str| {
        Git::output(
            git.at(dir)
                .args(["rev-parse", "--verify", "--quiet", &format!("{r}^{{commit}}")])
                .level(tracing::Level::DEBUG),
        )
        .ok()
    };
    if let Some(b) = explicit {
        return match rev(b) {
            Some(commit) => Ok(Base::Ref { name: b.to_string(), commit, why: "upgrade.base in ccci.yml" }),
            None => Err(format!("upgrade.base {b:?} does not exist in the recipe repository")),
        };
    }
    let merged = Git::output(
        git.at(dir)
            .args([
                "for-each-ref",
                "--merged",
                head,
                "--format=%(refname:short) %(creatordate:unix) %(objectname) %(*objectname)",
                "refs/tags",
            ])
            .level(tracing::Level::DEBUG),
    )
    .unwrap_or_default();
    let candidates: Vec<(String, i64)> = merged
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (tag, date, obj) = (f.next()?, f.next()?.parse().ok()?, f.next()?);
            let peeled = f.next().unwrap_or(obj);
            // A head that is itself a tag never picks itself: strict ancestors only.
            (peeled != head && obj != head).then(|| (tag.to_string(), date))
        })
        .collect();
    if let Some(tag) = newest_release(&candidates)
        && let Some(commit) = rev(&tag)
    {
        return Ok(Base::Ref { name: tag, commit, why: "newest release tag before the head" });
    }
    if let Some(branch) = default_branch
        && let Some(commit) = rev(branch)
        && commit != head
        && Git::run(git.at(dir).args(["merge-base", "--is-ancestor", &commit, head]).level(tracing::Level::DEBUG))
            .is_ok()
    {
        return Ok(Base::Ref { name: branch.to_string(), commit, why: "default branch tip" });
    }
    Ok(Base::None)
}

#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "tests build fixture repositories and victims with plain processes")]
mod tests {
    use super::*;
    use std::process::Command;

    /// A real repository: commits c1..c5 on `main`, tags as given, `origin/main` as given.
    struct Repo {
        dir: tempfile::TempDir,
    }

    impl Repo {
        fn new() -> Repo {
            let r = Repo { dir: tempfile::tempdir().unwrap() };
            r.git(&["init", "-q", "-b", "main"]);
            for i in 1..=5 {
                std::fs::write(r.dir.path().join("f"), i.to_string()).unwrap();
                r.git(&["add", "f"]);
                r.git(&["commit", "-q", "-m", &format!("c{i}")]);
            }
            r
        }
        fn git(&self, args: &[&str]) -> String {
            let o = Command::new("git")
                .arg("-C")
                .arg(self.dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
                .args(args)
                .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
                .output()
                .unwrap();
            assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        }
        /// The commit `n` steps back from main (0 = tip).
        fn commit(&self, back: u32) -> String {
            self.git(&["rev-parse", &format!("main~{back}")])
        }
        fn tag(&self, name: &str, back: u32) {
            self.git(&["tag", "-a", "-m", name, name, &format!("main~{back}")]);
        }
        fn choose(&self, head: &str, explicit: Option<&str>, default_branch: Option<&str>) -> Result<Base, String> {
            choose(&Git::default(), self.dir.path(), head, explicit, default_branch)
        }
    }

    fn name(b: &Base) -> &str {
        match b {
            Base::Ref { name, .. } => name,
            Base::None => "none",
        }
    }

    #[test]
    fn the_newest_strict_ancestor_release_wins() {
        let r = Repo::new();
        r.tag("1.0.0+1", 4);
        r.tag("1.1.0+2", 2);
        r.tag("1.1.0+1", 3);
        r.tag("nightly", 1);
        let head = r.commit(0);
        assert_eq!(name(&r.choose(&head, None, None).unwrap()), "1.1.0+2");
        // A head that is itself a tag never picks itself.
        r.tag("1.2.0+1", 0);
        assert_eq!(name(&r.choose(&head, None, None).unwrap()), "1.1.0+2");
        // Tags after the head are not ancestors.
        let older_head = r.commit(3);
        assert_eq!(name(&r.choose(&older_head, None, None).unwrap()), "1.0.0+1");
    }

    #[test]
    fn the_default_branch_tip_only_when_it_is_a_strict_ancestor() {
        let r = Repo::new();
        // No release tags: the default branch tip behind the head is the base.
        r.git(&["update-ref", "refs/remotes/origin/main", &r.commit(2)]);
        let head = r.commit(0);
        assert_eq!(name(&r.choose(&head, None, Some("origin/main")).unwrap()), "origin/main");
        // A default branch tip ahead of the head is not an ancestor: no base.
        let behind = r.commit(3);
        assert_eq!(r.choose(&behind, None, Some("origin/main")).unwrap(), Base::None);
        // The tip itself is the head: no base either.
        r.git(&["update-ref", "refs/remotes/origin/main", &head]);
        assert_eq!(r.choose(&head, None, Some("origin/main")).unwrap(), Base::None);
    }

    #[test]
    fn an_explicit_base_must_exist() {
        let r = Repo::new();
        r.tag("1.0.0+1", 4);
        let head = r.commit(0);
        assert_eq!(name(&r.choose(&head, Some("1.0.0+1"), None).unwrap()), "1.0.0+1");
        let e = r.choose(&head, Some("9.9.9+9"), None).unwrap_err();
        assert!(e.contains("9.9.9+9") && e.contains("does not exist"), "{e}");
    }

    #[test]
    fn release_ordering() {
        let c = |v: &[(&str, i64)]| v.iter().map(|(t, d)| (t.to_string(), *d)).collect::<Vec<_>>();
        assert_eq!(
            newest_release(&c(&[("1.0.0+1", 1), ("1.1.0+1", 2), ("1.1.0+2", 3), ("latest", 9)])).as_deref(),
            Some("1.1.0+2")
        );
        assert_eq!(newest_release(&c(&[("1.1.0+1.10", 1), ("1.1.0+1.9", 2)])).as_deref(), Some("1.1.0+1.10"));
        assert_eq!(newest_release(&c(&[("2.0.0", 1), ("1.9.9+5", 2)])).as_deref(), Some("2.0.0"));
        assert_eq!(newest_release(&c(&[("1.0.0+1", 5), ("1.0.0+1", 7)])).as_deref(), Some("1.0.0+1"));
        assert_eq!(newest_release(&c(&[("v1.0.0", 1), ("nightly", 2)])), None);
    }
}
