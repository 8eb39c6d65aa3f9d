//! `ccci policy DIR`: the policy gate of a run, on a recipe checkout, without a swarm, a lock,
//! abra or a run dir. A maintainer runs it before opening a PR; it creates nothing.
//!
//! Order matters for what it reads as root: the dotenv file, abra.sh and the compose files are
//! read through [`crate::untrusted`] first (a link or FIFO there is bad input, exit 2), then the
//! tree's links are checked (exit 1), and only then does docker render the tree.
//!
//! `--json` prints (schema 1):
//!
//! ```text
//! { "schema": 1, "recipe": str, "dir": str, "domain": str, "stack": str,
//!   "verdict": "allowed"|"refused"|"error",
//!   "checked": int,                                   // services checked
//!   "violations": [ { "service", "key", "value", "rule", "file"?, "detail"? } ],
//!   "links": [ { "path", "target", "why", "kind"? } ], // refused links in DIR
//!   "special_files": [ { "path", "kind" } ],
//!   "compose_files": [str], "allow_list": str|null,   // the trusted ccci.yml used
//!   "error": str|null }                               // why it could not render
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::adapters::git::Git;
use crate::cli::{Cli, PolicyArgs};
use crate::commands::output;
use crate::config::{CcciYml, Host, input};
use crate::dotenv::Assignment;
use crate::policy::tree::SpecialFile;
use crate::policy::{self, AllowList, Context, LinkViolation, PolicyError, TreeError, Violation};
use crate::untrusted::{self, UntrustedError};
use crate::{exit, logging, names};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Verdict {
    Allowed,
    Refused,
    Error,
}

#[derive(Debug, Serialize)]
struct PolicyOut {
    schema: u32,
    recipe: String,
    dir: String,
    domain: String,
    stack: String,
    verdict: Verdict,
    checked: usize,
    violations: Vec<Violation>,
    links: Vec<LinkViolation>,
    special_files: Vec<SpecialFile>,
    compose_files: Vec<String>,
    allow_list: Option<String>,
    error: Option<String>,
}

impl PolicyOut {
    fn new(dir: &Path) -> PolicyOut {
        PolicyOut {
            schema: 1,
            recipe: String::new(),
            dir: dir.display().to_string(),
            domain: String::new(),
            stack: String::new(),
            verdict: Verdict::Error,
            checked: 0,
            violations: Vec::new(),
            links: Vec::new(),
            special_files: Vec::new(),
            compose_files: Vec::new(),
            allow_list: None,
            error: None,
        }
    }

    fn fail(mut self, why: impl Into<String>) -> PolicyOut {
        self.verdict = Verdict::Error;
        self.error = Some(why.into());
        self
    }
}

pub fn main(cli: &Cli, args: &PolicyArgs) -> u8 {
    let host = match super::session::operator(cli, false) {
        Ok(h) => h,
        Err(c) => return c,
    };
    let out = evaluate(args, &host);
    if args.json {
        output::stdout(&serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_human(&out);
    }
    logging::flush(crate::logging::EXIT_FLUSH);
    match out.verdict {
        Verdict::Allowed => exit::OK,
        Verdict::Refused => exit::FAILED,
        Verdict::Error => exit::USAGE,
    }
}

/// The recipe name: `--recipe`, else DIR's name when it is a valid recipe name.
fn recipe_name(args: &PolicyArgs, dir: &Path) -> Result<(String, bool), String> {
    if let Some(r) = args.recipe.as_deref().filter(|r| !r.is_empty()) {
        return input::recipe("recipe (from --recipe)", r).map(|r| (r, true)).map_err(|e| e.to_string());
    }
    let base = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    input::recipe("recipe", &base)
        .map(|r| (r, false))
        .map_err(|_| format!("cannot take the recipe name from the directory name {base:?}; pass --recipe NAME"))
}

/// `<tests dir>/<recipe>/ccci.yml`, read like any file ccci does not write itself.
fn trusted_yml(host: &Host, recipe: &str) -> Result<Option<(PathBuf, CcciYml)>, String> {
    let Some(tests) = &host.tests_dir else { return Ok(None) };
    let rel = Path::new(recipe).join("ccci.yml");
    let path = tests.join(&rel);
    match untrusted::read_to_string(tests, &rel) {
        Ok(text) => {
            CcciYml::parse(&path, &text).map(|y| Some((path, y))).map_err(|e| format!("invalid trusted ccci.yml: {e}"))
        }
        Err(UntrustedError::NotFound { .. }) => Ok(None),
        Err(e) => Err(format!("cannot read the trusted ccci.yml: {e}")),
    }
}

/// The dotenv file's assignments and the name it is shown by.
fn env_file(args: &PolicyArgs, dir: &Path) -> Result<(Vec<Assignment>, String), String> {
    let (root, name) = match &args.env {
        Some(f) => {
            let name = f.file_name().ok_or_else(|| format!("--env {}: names no file", f.display()))?;
            let root = f.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            (root.to_path_buf(), PathBuf::from(name))
        }
        None => (dir.to_path_buf(), PathBuf::from(".env.sample")),
    };
    let shown = root.join(&name).display().to_string();
    match policy::read_env(&root, &name) {
        Ok(a) => Ok((a, shown)),
        Err(PolicyError::EnvUnreadable(UntrustedError::NotFound { .. })) if args.env.is_none() => {
            tracing::warn!("{shown} does not exist: rendering with the overrides of a run alone");
            Ok((Vec::new(), shown))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Whether `dir` is inside a git work tree (then the tracked links are checked too).
fn in_work_tree(git: &Git, dir: &Path) -> bool {
    Git::output(git.at(dir).args(["rev-parse", "--is-inside-work-tree"]).level(tracing::Level::DEBUG))
        .is_ok_and(|o| o == "true")
}

fn evaluate(args: &PolicyArgs, host: &Host) -> PolicyOut {
    let mut out = PolicyOut::new(&args.dir);
    let dir = match args.dir.canonicalize() {
        Ok(d) if d.is_dir() => d,
        Ok(d) => return out.fail(format!("{} is not a directory; pass a recipe checkout", d.display())),
        Err(e) => return out.fail(format!("cannot open the recipe dir {}: {e}", args.dir.display())),
    };
    out.dir = dir.display().to_string();
    let (recipe, explicit) = match recipe_name(args, &dir) {
        Ok(r) => r,
        Err(e) => return out.fail(e),
    };
    out.recipe = recipe.clone();
    out.domain = names::app_domain(&recipe, "0", "", &host.domain_suffix);
    out.stack = names::stack_name(&out.domain);
    let trusted = match trusted_yml(host, &recipe) {
        Ok(t) => t,
        Err(e) => return out.fail(e),
    };
    out.allow_list = trusted.as_ref().map(|(p, _)| p.display().to_string());
    let allow: AllowList = trusted.as_ref().and_then(|(_, y)| y.policy.clone()).unwrap_or_default();

    let (mut assignments, env_shown) = match env_file(args, &dir) {
        Ok(x) => x,
        Err(e) => return out.fail(e),
    };
    // What a run writes over the recipe's sample before any deploy: the trusted extra_env, no
    // ACME, and the names ccci computed (so the sample cannot point abra elsewhere).
    let mut overrides: Vec<(String, String)> = Vec::new();
    if let Some((_, y)) = &trusted {
        overrides.extend(y.extra_env.iter().map(|(k, v)| (k.clone(), v.as_env_value())));
    }
    overrides.push(("LETS_ENCRYPT_ENV".into(), String::new()));
    overrides.push(("DOMAIN".into(), out.domain.clone()));
    overrides.push(("STACK_NAME".into(), out.stack.clone()));
    assignments.extend(overrides.into_iter().map(|(key, value)| Assignment {
        line: 0,
        key,
        value,
        unassigned: Vec::new(),
    }));

    // Read before anything else touches them: a linked or special compose file is bad input.
    let mut env = crate::dotenv::effective(&assignments);
    match untrusted::read_to_string(&dir, Path::new("abra.sh")) {
        Ok(text) => match policy::render::abra_sh_exports(&text) {
            Ok(exports) => env.extend(exports),
            Err(e) => return out.fail(e.to_string()),
        },
        Err(UntrustedError::NotFound { .. }) => {}
        Err(e) => return out.fail(format!("cannot read a recipe file: {e}")),
    }
    let files = match policy::compose_files(env.get("COMPOSE_FILE").map_or("", String::as_str)) {
        Ok(f) => f,
        Err(e) => return out.fail(e.to_string()),
    };
    out.compose_files = files.clone();
    for f in &files {
        if let Err(e) = untrusted::read(&dir, Path::new(f)) {
            return out.fail(format!("cannot read a compose file: {e}"));
        }
    }

    let git = Git::default();
    let tree = if in_work_tree(&git, &dir) { policy::check_tree(&git, &dir) } else { policy::check_walk(&dir) };
    match tree {
        Ok(()) => {}
        Err(TreeError::Links(v)) => {
            out.links = v;
            out.verdict = Verdict::Refused;
            return out;
        }
        Err(TreeError::Special(v)) => {
            out.special_files = v;
            out.verdict = Verdict::Refused;
            return out;
        }
        Err(e) => return out.fail(e.to_string()),
    }

    let ctx = Context {
        tree: dir.clone(),
        domain: out.domain.clone(),
        stack: out.stack.clone(),
        recipe: explicit.then_some(recipe),
    };
    match policy::check_deploy(&host.docker, &ctx, &assignments, &allow, policy::RENDER_TIMEOUT) {
        Ok(checked) => {
            out.checked = checked.report.services;
            out.violations = checked.report.violations;
            for v in out.violations.iter_mut().filter(|v| v.service == "(.env)") {
                v.file = Some(env_shown.clone());
            }
            out.verdict = if out.violations.is_empty() { Verdict::Allowed } else { Verdict::Refused };
            out
        }
        Err(e) => out.fail(e.to_string()),
    }
}

fn print_human(out: &PolicyOut) {
    let mut stdout = std::io::stdout().lock();
    match out.verdict {
        Verdict::Error => {
            eprintln!("ccci: policy: {}", out.error.as_deref().unwrap_or("cannot check"));
        }
        Verdict::Allowed => {
            let _ = writeln!(
                stdout,
                "allowed: {} ({} service{} checked, no violations; domain {})",
                out.recipe,
                out.checked,
                if out.checked == 1 { "" } else { "s" },
                out.domain
            );
        }
        Verdict::Refused if !out.links.is_empty() || !out.special_files.is_empty() => {
            let mut rows = vec![["PATH".to_string(), "TARGET".to_string(), "PROBLEM".to_string()]];
            for l in &out.links {
                let why = l.to_string();
                let why = why.split_once(", which ").map_or(why.as_str(), |(_, w)| w).to_string();
                rows.push([l.path.display().to_string(), l.target.display().to_string(), why]);
            }
            for s in &out.special_files {
                rows.push([s.path.display().to_string(), "-".into(), format!("is {}", s.kind)]);
            }
            table(&mut stdout, &rows);
            let n = out.links.len() + out.special_files.len();
            eprintln!(
                "ccci: policy: refused: {n} unsafe name{} in {}; a recipe tree may hold links only to regular files and directories inside it (docs/security.md)",
                if n == 1 { "" } else { "s" },
                out.dir
            );
        }
        Verdict::Refused => {
            let mut rows = vec![["SERVICE", "KEY", "VALUE", "RULE", "WHY"].map(str::to_string)];
            for v in &out.violations {
                let why = v.detail.clone().unwrap_or_else(|| v.rule.description().to_string());
                rows.push([v.service.clone(), v.key.clone(), v.value.clone(), v.rule.to_string(), why]);
            }
            table(&mut stdout, &rows);
            eprintln!(
                "ccci: policy: refused: {} violation{} in {} ({} service{} checked); see docs/security.md",
                out.violations.len(),
                if out.violations.len() == 1 { "" } else { "s" },
                out.recipe,
                out.checked,
                if out.checked == 1 { "" } else { "s" },
            );
        }
    }
}

fn table<const N: usize>(w: &mut impl Write, rows: &[[String; N]]) {
    let mut width = [0usize; N];
    for r in rows {
        for (w, c) in width.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        let _ = writeln!(w, "{}", line.trim_end());
    }
}
