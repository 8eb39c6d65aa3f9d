//! Embeds the git commit into `ccci --version` and the provenance of every report.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CCCI_GIT_COMMIT");
    // Builds without a git checkout (a Nix sandbox) pass the commit in.
    if let Ok(c) = std::env::var("CCCI_GIT_COMMIT")
        && !c.is_empty()
    {
        println!("cargo:rustc-env=CCCI_GIT_COMMIT={c}");
        return;
    }
    // A build script runs before ccci exists, so it cannot use process::Cmd.
    #[expect(clippy::disallowed_methods, reason = "the build script runs before the crate's spawn path exists")]
    let output = Command::new("git").args(["rev-parse", "--short=7", "HEAD"]).output();
    let commit = output
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CCCI_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
