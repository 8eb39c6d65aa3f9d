//! The link check after every checkout of PR code. A PR's tree is read by docker and abra as
//! root, and they follow links: `env_file: app.env` with `app.env -> /etc/ccci/env`, a
//! `configs: file:` that is a link to `/root/.docker/config.json`, a bind of `./data` where
//! `data -> /`. So a tree may hold links only to regular files and directories inside itself.
//!
//! Links are found twice: the tracked ones from git's index (`git ls-files -s`, mode 120000) and
//! every link on disk from a walk that never follows one (untracked links, e.g. left by a
//! previous checkout). Each is resolved lexically from its own directory and then with
//! `canonicalize`, which reads links and stats but never opens a file, so a link to a FIFO or a
//! device is judged without blocking on it. The walk also refuses FIFOs, sockets and devices in
//! the tree itself (git cannot create them; something that wrote into the tree did).

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::adapters::git::Git;
use crate::process::ProcessError;
use crate::untrusted::FileKind;

/// Why a link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkProblem {
    /// It resolves (lexically or for real) outside the tree.
    Outside,
    /// It names nothing (or a loop of links).
    Dangling,
    /// It names something in the tree that is neither a regular file nor a directory.
    NotFileOrDir,
}

/// One refused link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkViolation {
    /// Relative to the tree.
    pub path: PathBuf,
    /// The link's text, as stored.
    pub target: PathBuf,
    pub why: LinkProblem,
    /// What it names, for [`LinkProblem::NotFileOrDir`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<FileKind>,
}

impl fmt::Display for LinkViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is a symbolic link to {}, which ", self.path.display(), self.target.display())?;
        match (self.why, self.kind) {
            (LinkProblem::Outside, _) => f.write_str("points outside the recipe tree"),
            (LinkProblem::Dangling, _) => f.write_str("names nothing (dangling, or a loop of links)"),
            (LinkProblem::NotFileOrDir, Some(k)) => write!(f, "names {k}"),
            (LinkProblem::NotFileOrDir, None) => f.write_str("names neither a regular file nor a directory"),
        }
    }
}

/// A name in the tree that is neither a file, a directory nor a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecialFile {
    pub path: PathBuf,
    pub kind: FileKind,
}

#[derive(Debug, Error)]
pub enum TreeError {
    #[error("{}", links_message(.0))]
    Links(Vec<LinkViolation>),
    #[error("{}", specials_message(.0))]
    Special(Vec<SpecialFile>),
    #[error("cannot list the tracked links of {dir}: {source}")]
    Git { dir: PathBuf, source: ProcessError },
    #[error("cannot walk the recipe tree {dir}: {source}")]
    Walk { dir: PathBuf, source: std::io::Error },
}

fn more(n: usize) -> String {
    if n > 1 { format!(" (and {} more)", n - 1) } else { String::new() }
}

fn links_message(v: &[LinkViolation]) -> String {
    match v.first() {
        Some(first) => format!(
            "policy: {first}{}; a recipe tree may only link to regular files and directories inside it",
            more(v.len())
        ),
        None => "policy: no link violations".to_string(),
    }
}

fn specials_message(v: &[SpecialFile]) -> String {
    match v.first() {
        Some(first) => format!(
            "policy: {} is {} in the recipe tree{}; a recipe tree holds only regular files, directories and links",
            first.path.display(),
            first.kind,
            more(v.len())
        ),
        None => "policy: no special files".to_string(),
    }
}

/// The full check: tracked links (git) and every link and special file on disk (walk).
pub fn check_tree(git: &Git, dir: &Path) -> Result<(), TreeError> {
    let root = canonical_root(dir)?;
    let tracked = tracked_links(git, &root)?;
    judge(&root, tracked)
}

/// The walk alone, for a directory that is not a git work tree.
pub fn check_walk(dir: &Path) -> Result<(), TreeError> {
    let root = canonical_root(dir)?;
    judge(&root, BTreeSet::new())
}

fn canonical_root(dir: &Path) -> Result<PathBuf, TreeError> {
    dir.canonicalize().map_err(|source| TreeError::Walk { dir: dir.to_path_buf(), source })
}

/// Paths of index entries with mode 120000.
fn tracked_links(git: &Git, root: &Path) -> Result<BTreeSet<PathBuf>, TreeError> {
    let out = Git::output(git.at(root).args(["ls-files", "-s", "-z"]))
        .map_err(|source| TreeError::Git { dir: root.to_path_buf(), source })?;
    // The spawn path hands stdout over as text lines, so a path holding a newline (or cut at its
    // line-length bound) may come back altered: such a path then names nothing and is skipped
    // here; the walk, which sees every name as the kernel has it, is the authority.
    let out = out.replace('\n', "");
    Ok(out
        .split('\0')
        .filter_map(|entry| {
            let (meta, path) = entry.split_once('\t')?;
            meta.starts_with("120000 ").then(|| PathBuf::from(path))
        })
        .collect())
}

fn judge(root: &Path, mut links: BTreeSet<PathBuf>) -> Result<(), TreeError> {
    let mut specials = Vec::new();
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        // ccci's own clone metadata, not PR content.
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".git"));
    for entry in walk {
        let entry = entry.map_err(|e| TreeError::Walk {
            dir: root.to_path_buf(),
            source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("a loop of directories")),
        })?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path()).to_path_buf();
        match FileKind::of_file_type(entry.file_type()) {
            FileKind::Regular | FileKind::Directory => {}
            FileKind::Symlink => {
                links.insert(rel);
            }
            kind => specials.push(SpecialFile { path: rel, kind }),
        }
    }
    let violations: Vec<LinkViolation> = links.iter().filter_map(|rel| judge_link(root, rel)).collect();
    if !violations.is_empty() {
        return Err(TreeError::Links(violations));
    }
    if !specials.is_empty() {
        return Err(TreeError::Special(specials));
    }
    Ok(())
}

/// `None` when the link is fine (or is not a link on disk: a tracked link checked out as a
/// plain file with `core.symlinks=false` is harmless).
fn judge_link(root: &Path, rel: &Path) -> Option<LinkViolation> {
    let full = root.join(rel);
    let meta = std::fs::symlink_metadata(&full).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    let target = std::fs::read_link(&full).unwrap_or_default();
    let violation = |why, kind| Some(LinkViolation { path: rel.to_path_buf(), target: target.clone(), why, kind });
    let base = full.parent().unwrap_or(root);
    if !lexical(&base.join(&target)).starts_with(root) {
        return violation(LinkProblem::Outside, None);
    }
    let resolved = match full.canonicalize() {
        Ok(p) => p,
        Err(_) => return violation(LinkProblem::Dangling, None),
    };
    if !resolved.starts_with(root) {
        return violation(LinkProblem::Outside, None);
    }
    match std::fs::metadata(&resolved) {
        Ok(m) => match FileKind::of_file_type(m.file_type()) {
            FileKind::Regular | FileKind::Directory => None,
            kind => violation(LinkProblem::NotFileOrDir, Some(kind)),
        },
        Err(_) => violation(LinkProblem::Dangling, None),
    }
}

/// `.` dropped, `..` popped, without touching the filesystem.
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
#[expect(clippy::disallowed_methods, reason = "tests build fixture repositories and victims with plain processes")]
mod tests {
    use std::os::unix::fs::symlink;
    use std::process::Command;

    use super::*;

    /// A real git repository: files committed, links made with `ln -s` and committed too.
    struct Repo {
        dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Repo {
        fn new() -> Repo {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("recipe");
            std::fs::create_dir_all(root.join("conf")).unwrap();
            std::fs::write(root.join("compose.yml"), "services: {}\n").unwrap();
            std::fs::write(root.join("conf/app.conf"), "x\n").unwrap();
            let r = Repo { dir, root };
            r.git(&["init", "-q", "-b", "main"]);
            r.commit();
            r
        }

        fn git(&self, args: &[&str]) {
            let st = Command::new("git")
                .arg("-C")
                .arg(&self.root)
                .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"])
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .status()
                .unwrap();
            assert!(st.success(), "git {args:?}");
        }

        fn ln(&self, target: &str, name: &str) {
            let st = Command::new("ln").arg("-s").arg(target).arg(self.root.join(name)).status().unwrap();
            assert!(st.success());
        }

        fn commit(&self) {
            self.git(&["add", "-A"]);
            self.git(&["commit", "-q", "--allow-empty", "-m", "c"]);
        }

        fn check(&self) -> Result<(), TreeError> {
            check_tree(&Git::default(), &self.root)
        }

        fn refused(&self) -> Vec<(String, LinkProblem)> {
            match self.check() {
                Err(TreeError::Links(v)) => v.into_iter().map(|v| (v.path.display().to_string(), v.why)).collect(),
                other => panic!("expected link violations, got {other:?}"),
            }
        }
    }

    #[test]
    fn links_inside_the_tree_to_files_and_directories_pass() {
        let r = Repo::new();
        r.ln("compose.yml", "compose.override.yml");
        r.ln("conf", "config");
        r.ln("../compose.yml", "conf/up.yml");
        r.ln("config/app.conf", "app.conf");
        r.commit();
        r.check().unwrap();
        check_walk(&r.root).unwrap();
    }

    #[test]
    fn committed_links_leaving_the_tree_are_refused() {
        let r = Repo::new();
        r.ln("/etc/shadow", "compose.ccci.yml");
        r.ln("../../..", "conf/up");
        r.ln("/", "root");
        // Leaves by `..` and comes back in through the tree's own name: inside, allowed.
        r.ln("../recipe/compose.yml", "roundtrip.yml");
        r.commit();
        let got = r.refused();
        assert_eq!(
            got,
            vec![
                ("compose.ccci.yml".to_string(), LinkProblem::Outside),
                ("conf/up".to_string(), LinkProblem::Outside),
                ("root".to_string(), LinkProblem::Outside),
            ]
        );
        let msg = r.check().unwrap_err().to_string();
        assert!(
            msg.starts_with("policy: compose.ccci.yml is a symbolic link to /etc/shadow, which points outside"),
            "{msg}"
        );
        assert!(msg.contains("(and 2 more)"), "{msg}");
    }

    #[test]
    fn a_link_that_leaves_through_another_link_is_refused() {
        let r = Repo::new();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        r.ln(outside.path().to_str().unwrap(), "out");
        r.ln("out/secret", "env.yml");
        r.commit();
        let got = r.refused();
        assert!(got.contains(&("out".to_string(), LinkProblem::Outside)), "{got:?}");
        assert!(got.contains(&("env.yml".to_string(), LinkProblem::Outside)), "{got:?}");
    }

    #[test]
    fn dangling_links_and_links_to_fifos_are_refused_without_blocking() {
        let r = Repo::new();
        r.ln("nothere.yml", "compose.x.yml");
        r.ln("loop2", "loop1");
        r.ln("loop1", "loop2");
        r.commit();
        // A FIFO cannot be committed; a link to one in the tree can (the FIFO appears later).
        nix::unistd::mkfifo(&r.root.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        r.ln("fifo", "compose.zz.yml");
        let got = r.refused();
        assert!(got.contains(&("compose.x.yml".to_string(), LinkProblem::Dangling)), "{got:?}");
        assert!(got.contains(&("loop1".to_string(), LinkProblem::Dangling)), "{got:?}");
        assert!(got.contains(&("compose.zz.yml".to_string(), LinkProblem::NotFileOrDir)), "{got:?}");
        let Err(TreeError::Links(v)) = r.check() else { panic!() };
        let fifo = v.iter().find(|v| v.path == Path::new("compose.zz.yml")).unwrap();
        assert_eq!(fifo.kind, Some(FileKind::Fifo));
        assert!(fifo.to_string().ends_with("names a FIFO"), "{fifo}");
    }

    #[test]
    fn untracked_links_and_special_files_are_found_by_the_walk() {
        let r = Repo::new();
        symlink("/root", r.root.join("conf/untracked")).unwrap();
        assert_eq!(r.refused(), vec![("conf/untracked".to_string(), LinkProblem::Outside)]);
        std::fs::remove_file(r.root.join("conf/untracked")).unwrap();
        nix::unistd::mkfifo(&r.root.join("conf/pipe"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        match r.check() {
            Err(TreeError::Special(v)) => {
                assert_eq!(v, vec![SpecialFile { path: "conf/pipe".into(), kind: FileKind::Fifo }]);
            }
            other => panic!("{other:?}"),
        }
        let msg = r.check().unwrap_err().to_string();
        assert!(msg.starts_with("policy: conf/pipe is a FIFO in the recipe tree"), "{msg}");
    }

    #[test]
    fn the_git_part_needs_a_work_tree_and_the_walk_does_not() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("compose.yml"), "x").unwrap();
        assert!(matches!(check_tree(&Git::default(), d.path()), Err(TreeError::Git { .. })));
        check_walk(d.path()).unwrap();
        symlink("/etc/passwd", d.path().join("p")).unwrap();
        assert!(matches!(check_walk(d.path()), Err(TreeError::Links(_))));
        // Reached through a link itself, the tree is judged at its canonical path.
        let via = tempfile::tempdir().unwrap();
        symlink(d.path(), via.path().join("tree")).unwrap();
        assert!(matches!(check_walk(&via.path().join("tree")), Err(TreeError::Links(_))));
        drop(d);
    }

    #[test]
    fn the_dot_git_directory_is_not_walked() {
        let r = Repo::new();
        symlink("/etc", r.root.join(".git/odd-link")).unwrap();
        r.check().unwrap();
        let _ = &r.dir;
    }
}
