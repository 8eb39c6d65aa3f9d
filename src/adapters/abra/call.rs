//! Every abra call ccci makes, as data. An argv is built without running anything, so the
//! contract test (`tests/abra_contract.rs`) can hold each one against the `--help` abra printed
//! on a real host, and the spawn path needs no second copy of it.
//!
//! The rules, from what is known of the real abra (`docs/operations.md`, "abra compatibility",
//! has the evidence for each):
//! - flags before positionals, `-n` (no prompts) always;
//! - `-o` (offline) on every call that may touch the recipe, so abra never fetches from the
//!   recipe's origin (a private mirror answers `authentication required`); not on `recipe
//!   fetch`, whose whole job is the network;
//! - `-C` (chaos: the checkout as it is, untracked overlay included) on every command known to
//!   "ensure" the recipe checkout; without it abra refuses a dirty tree or checks out a release;
//! - deploys pass `-c` (ccci's readiness, §7.5, is the judge; abra's own convergence wait
//!   fails healthy-but-slow apps at the recipe's `TIMEOUT`) and `--no-domain-checks` (test
//!   domains do not resolve to the host).

/// One abra call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `abra --version`.
    Version,
    /// Creates the app's `.env` from the checked-out recipe; secrets are generated later.
    AppNew {
        recipe: String,
        domain: String,
    },
    /// Generates every secret the app's compose files declare that does not exist yet.
    SecretGenerate {
        domain: String,
    },
    /// The first deploy, or (`redeploy`) the upgrade's redeploy of a deployed app.
    AppDeploy {
        domain: String,
        redeploy: bool,
    },
    AppUndeploy {
        domain: String,
    },
    AppRemove {
        domain: String,
    },
    /// The machine-readable app listing (JSON on stdout).
    AppLs,
    /// A backupbot snapshot of the app.
    BackupCreate {
        domain: String,
    },
    /// Restores `snapshot`, or the latest snapshot when there is none.
    Restore {
        domain: String,
        snapshot: Option<String>,
    },
    RecipeFetch {
        recipe: String,
    },
    RecipeLint {
        recipe: String,
    },
}

impl Call {
    /// The command words, which also name the recorded help (`app deploy` → `app-deploy`).
    pub fn command(&self) -> &'static [&'static str] {
        match self {
            Call::Version => &[],
            Call::AppNew { .. } => &["app", "new"],
            Call::SecretGenerate { .. } => &["app", "secret", "generate"],
            Call::AppDeploy { .. } => &["app", "deploy"],
            Call::AppUndeploy { .. } => &["app", "undeploy"],
            Call::AppRemove { .. } => &["app", "remove"],
            Call::AppLs => &["app", "ls"],
            Call::BackupCreate { .. } => &["app", "backup", "create"],
            Call::Restore { .. } => &["app", "restore"],
            Call::RecipeFetch { .. } => &["recipe", "fetch"],
            Call::RecipeLint { .. } => &["recipe", "lint"],
        }
    }

    /// A short name for logs and errors (`app deploy -f` for the redeploy).
    pub fn what(&self) -> String {
        match self {
            Call::Version => "--version".into(),
            Call::AppDeploy { redeploy: true, .. } => "app deploy -f".into(),
            c => c.command().join(" "),
        }
    }

    /// Whether the call runs under a pseudo-terminal. backup and restore run backupbot through
    /// a TTY `docker exec` ("the input device is not a TTY" without one), lint fails with
    /// "inappropriate ioctl for device", and the predecessor ran deploys under one too.
    pub fn pty(&self) -> bool {
        matches!(
            self,
            Call::AppDeploy { .. } | Call::BackupCreate { .. } | Call::Restore { .. } | Call::RecipeLint { .. }
        )
    }

    /// The arguments after the program, `server` being abra's name for this host.
    pub fn argv(&self, server: &str) -> Vec<String> {
        let mut a: Vec<String> = self.command().iter().map(|s| s.to_string()).collect();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        match self {
            Call::Version => push(&["--version"]),
            Call::AppNew { recipe, domain } => {
                push(&["-n", "-o", "-C"]);
                push(&[&format!("--server={server}"), &format!("--domain={domain}"), recipe]);
            }
            Call::SecretGenerate { domain } => push(&["-n", "-o", "-C", "-a", "-m", domain]),
            Call::AppDeploy { domain, redeploy } => {
                push(&["-n", "-o", "-C", "-c", "--no-domain-checks"]);
                if *redeploy {
                    push(&["-f"]);
                }
                push(&[domain]);
            }
            Call::AppUndeploy { domain } => push(&["-n", "-o", domain]),
            Call::AppRemove { domain } => push(&["-n", "-o", "-f", domain]),
            Call::AppLs => push(&["-n", "-o", "-m"]),
            Call::BackupCreate { domain } => push(&["-n", "-o", "-C", domain]),
            Call::Restore { domain, snapshot } => {
                push(&["-n", "-o", "-C"]);
                if let Some(id) = snapshot {
                    push(&[&format!("--snapshot={id}")]);
                }
                push(&[domain]);
            }
            Call::RecipeFetch { recipe } => push(&["-n", recipe]),
            Call::RecipeLint { recipe } => push(&["-n", "-o", recipe]),
        }
        a
    }

    /// One call of every kind, with sample values (for the contract test and the docs).
    pub fn examples() -> Vec<Call> {
        let d = || "hell-620c9a.ci.example.org".to_string();
        let r = || "hello".to_string();
        vec![
            Call::Version,
            Call::AppNew { recipe: r(), domain: d() },
            Call::SecretGenerate { domain: d() },
            Call::AppDeploy { domain: d(), redeploy: false },
            Call::AppDeploy { domain: d(), redeploy: true },
            Call::AppUndeploy { domain: d() },
            Call::AppRemove { domain: d() },
            Call::AppLs,
            Call::BackupCreate { domain: d() },
            Call::Restore { domain: d(), snapshot: None },
            Call::Restore { domain: d(), snapshot: Some("4d1e8f0ab2c3".into()) },
            Call::RecipeFetch { recipe: r() },
            Call::RecipeLint { recipe: r() },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_come_before_positionals_and_no_input_is_always_set() {
        for call in Call::examples() {
            let argv = call.argv("default");
            let words = call.command().len();
            if call == Call::Version {
                assert_eq!(argv, ["--version"]);
                continue;
            }
            assert!(argv[words..].contains(&"-n".to_string()), "{argv:?}");
            let first_positional = argv[words..].iter().position(|a| !a.starts_with('-')).map(|i| i + words);
            if let Some(i) = first_positional {
                assert!(argv[i..].iter().all(|a| !a.starts_with('-')), "a flag after a positional: {argv:?}");
            }
        }
    }

    #[test]
    fn the_argv_of_each_call() {
        let d = "a-000000.x".to_string();
        let argv = |c: Call| c.argv("default").join(" ");
        assert_eq!(
            argv(Call::AppNew { recipe: "hello".into(), domain: d.clone() }),
            "app new -n -o -C --server=default --domain=a-000000.x hello"
        );
        assert_eq!(
            argv(Call::AppDeploy { domain: d.clone(), redeploy: true }),
            "app deploy -n -o -C -c --no-domain-checks -f a-000000.x"
        );
        assert_eq!(argv(Call::SecretGenerate { domain: d.clone() }), "app secret generate -n -o -C -a -m a-000000.x");
        assert_eq!(argv(Call::Restore { domain: d.clone(), snapshot: None }), "app restore -n -o -C a-000000.x");
        assert_eq!(
            argv(Call::Restore { domain: d, snapshot: Some("abcdef12".into()) }),
            "app restore -n -o -C --snapshot=abcdef12 a-000000.x"
        );
        assert_eq!(argv(Call::RecipeLint { recipe: "hello".into() }), "recipe lint -n -o hello");
    }
}
