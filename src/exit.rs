//! The documented exit codes and outcomes of §7.10, in one place.
//!
//! `docs/exit-codes.md` is checked against [`TABLE`] by a test.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every requested stage passed or was intentionally skipped; teardown clean.
pub const OK: u8 = 0;
/// A stage failed or was unintentionally skipped, or the recipe could not be fetched.
pub const FAILED: u8 = 1;
/// Bad input: nothing was created.
pub const USAGE: u8 = 2;
/// Refused at start: orphaned or an unexpected parent. Nothing was created.
pub const ORPHANED: u8 = 3;
/// Stages passed but teardown left residue or was abandoned.
pub const TEARDOWN: u8 = 4;
/// CI could not test the recipe: dockerd unreachable or erroring, a clone that failed for
/// network reasons after retries, a full disk, abra missing or unusable, the host draining
/// (sysexits' EX_UNAVAILABLE). Not the recipe's fault: a bridge posts "CI could not test".
pub const INFRA: u8 = 69;
/// ccci itself failed (a bug or an unexpected I/O error), or a bad recipe-local `ccci.yml`.
pub const INTERNAL: u8 = 70;
/// The app-lock wait timed out, or the run id is held by a live run.
pub const LOCK_TIMEOUT: u8 = 75;
/// SIGINT or SIGQUIT.
pub const INTERRUPTED: u8 = 130;
/// The run's deadline passed.
pub const DEADLINE: u8 = 142;
/// SIGTERM or SIGHUP, including the parent-death signal.
pub const TERMINATED: u8 = 143;

/// `(code, outcome, cause)` rows for documentation checks.
pub const TABLE: &[(u8, &str, &str)] = &[
    (OK, "pass", "every requested stage passed (or was intentionally skipped), teardown clean"),
    (
        FAILED,
        "fail",
        "a stage failed, was unintentionally skipped, or the recipe could not be fetched (a wrong repository or ref)",
    ),
    (USAGE, "-", "bad input; nothing was created"),
    (ORPHANED, "-", "refused at start: orphaned or unexpected parent; nothing was created"),
    (TEARDOWN, "pass", "stages passed but teardown left residue or was abandoned"),
    (
        INFRA,
        "infra",
        "CI could not test the recipe: dockerd unreachable or erroring, the forge unreachable after retries, a full disk, abra missing or unusable, a draining host, or the app lease (etcd) unreachable or lost",
    ),
    (INTERNAL, "error", "ccci itself failed, or a bad recipe-local ccci.yml"),
    (LOCK_TIMEOUT, "lock-timeout", "app-lock wait timed out, or the run id is held by a live run"),
    (INTERRUPTED, "cancelled", "SIGINT or SIGQUIT"),
    (DEADLINE, "deadline", "the run's deadline passed"),
    (TERMINATED, "cancelled", "SIGTERM or SIGHUP (including the parent-death signal)"),
];

/// What stopped a run early: the first signal, the deadline, or the loss of the app lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    Term,
    Hup,
    Int,
    Quit,
    Deadline,
    /// The cross-host app lease was lost (no keepalive answered in time, or it expired): the
    /// run stops like on a signal, and CI — not the recipe — could not finish testing.
    LeaseLost,
}

impl Cause {
    pub fn exit_code(self) -> u8 {
        match self {
            Cause::Term | Cause::Hup => TERMINATED,
            Cause::Int | Cause::Quit => INTERRUPTED,
            Cause::Deadline => DEADLINE,
            Cause::LeaseLost => INFRA,
        }
    }

    /// Whether the children still running must be killed at once, with no SIGTERM grace. A lost
    /// app lease: another host may own the app within the lease's safety margin (a fifth of its
    /// TTL), far less than a grace, so a child still changing the swarm must not get one.
    pub fn kills_at_once(self) -> bool {
        matches!(self, Cause::LeaseLost)
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Cause::Deadline => Outcome::Deadline,
            Cause::LeaseLost => Outcome::Infra,
            _ => Outcome::Cancelled,
        }
    }
}

/// The `outcome` of `results.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
    Infra,
    Error,
    LockTimeout,
    Cancelled,
    Deadline,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Infra => "infra",
            Outcome::Error => "error",
            Outcome::LockTimeout => "lock-timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Deadline => "deadline",
        }
    }
}

/// Everything that decides a run's verdict.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts {
    pub cause: Option<Cause>,
    pub lock_timeout: bool,
    pub infra: bool,
    pub internal_error: bool,
    pub failed: bool,
    pub teardown_unclean: bool,
}

/// Applies the precedence of §7.10: the first signal, deadline or lost lease wins; then 75 > 69 > 70 > 1 > 4
/// > 0 (infrastructure trouble explains a failure better than the failure does).
pub fn verdict(f: Facts) -> (Outcome, u8) {
    if let Some(cause) = f.cause {
        (cause.outcome(), cause.exit_code())
    } else if f.lock_timeout {
        (Outcome::LockTimeout, LOCK_TIMEOUT)
    } else if f.infra {
        (Outcome::Infra, INFRA)
    } else if f.internal_error {
        (Outcome::Error, INTERNAL)
    } else if f.failed {
        (Outcome::Fail, FAILED)
    } else if f.teardown_unclean {
        (Outcome::Pass, TEARDOWN)
    } else {
        (Outcome::Pass, OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_lease_kills_without_a_grace() {
        for c in [Cause::Term, Cause::Hup, Cause::Int, Cause::Quit, Cause::Deadline] {
            assert!(!c.kills_at_once(), "{c:?}");
        }
        assert!(Cause::LeaseLost.kills_at_once());
    }

    #[test]
    fn precedence() {
        let all = Facts {
            cause: Some(Cause::Deadline),
            lock_timeout: true,
            infra: true,
            internal_error: true,
            failed: true,
            teardown_unclean: true,
        };
        assert_eq!(verdict(all), (Outcome::Deadline, 142));
        let f = Facts { cause: None, ..all };
        assert_eq!(verdict(f), (Outcome::LockTimeout, 75));
        let f = Facts { lock_timeout: false, ..f };
        assert_eq!(verdict(f), (Outcome::Infra, 69));
        let f = Facts { infra: false, ..f };
        assert_eq!(verdict(f), (Outcome::Error, 70));
        let f = Facts { internal_error: false, ..f };
        assert_eq!(verdict(f), (Outcome::Fail, 1));
        let f = Facts { failed: false, ..f };
        assert_eq!(verdict(f), (Outcome::Pass, 4));
        assert_eq!(verdict(Facts::default()), (Outcome::Pass, 0));
        assert_eq!(verdict(Facts { cause: Some(Cause::Hup), ..Facts::default() }), (Outcome::Cancelled, 143));
        assert_eq!(verdict(Facts { cause: Some(Cause::Quit), ..Facts::default() }), (Outcome::Cancelled, 130));
        assert_eq!(verdict(Facts { cause: Some(Cause::LeaseLost), ..Facts::default() }), (Outcome::Infra, 69));
    }
}
