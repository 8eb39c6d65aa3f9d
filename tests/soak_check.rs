//! The soak's judge can fail: `ci/soak_check.py --self-test` builds a clean synthetic world of
//! result files (every fault happened, every invariant holds) and, one at a time, plants a
//! violation of each invariant (a foreign uid reading a lockfile, a hard-link victim changed, a
//! panic, a removal under a live holder, a leftover, ...) and requires the checker to flag it.
//! The soak itself (`ci/soak.sh`, on the swarm) is run by `ci/test.sh`.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

#[test]
fn soak_checker_flags_every_planted_violation() {
    let mut c = Command::new("python3");
    c.arg(repo_root().join("ci/soak_check.py")).arg("--self-test");
    let out = output_within(c, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the soak checker's self-test failed:\n{stdout}");
    assert!(stdout.contains("self-test: ok (a clean world and "), "{stdout}");
}
