//! The ceiling of every number a setting, a flag or a `ccci.yml` can hold. A value above its
//! ceiling is refused (exit 2, or a bad `ccci.yml`), so no arithmetic on it can overflow and no
//! wait can be made endless by a typo or a hostile build parameter. docs/env.md lists them.

/// `--deadline` may never exceed this, whatever the host allows (`alarm(2)` takes u32 seconds;
/// a week is beyond any CI run).
pub const MAX_DEADLINE_SECS: u64 = 7 * 86_400;
/// The host's default cap on `--deadline` (`CCCI_MAX_DEADLINE`).
pub const DEFAULT_MAX_DEADLINE_SECS: u64 = 86_400;
/// `--teardown-budget` may never exceed this.
pub const MAX_BUDGET_SECS: u64 = 86_400;
/// The host's default cap on `--teardown-budget` (`CCCI_MAX_TEARDOWN_BUDGET`).
pub const DEFAULT_MAX_BUDGET_SECS: u64 = 3_600;
/// `CCCI_KILL_GRACE`: a child that needs an hour to stop is not going to stop.
pub const MAX_KILL_GRACE_SECS: u64 = 3_600;
/// `CCCI_LEAK_TIMEOUT_MS`.
pub const MAX_LEAK_TIMEOUT_MS: u64 = 60_000;
/// `ccci janitor --prune-after` (ten years).
pub const MAX_PRUNE_DAYS: u64 = 3_650;
/// `ccci janitor --deadline`.
pub const MAX_JANITOR_DEADLINE_SECS: u64 = 86_400;
/// Every `timeouts.*` of `ccci.yml`.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;
/// `backup.attempts` of `ccci.yml`.
pub const MAX_BACKUP_ATTEMPTS: u32 = 100;
/// `deps:` of `ccci.yml`: each is a deploy of its own on the run's host; the domain scheme
/// (`<app>-d<N>`) numbers them with one digit.
pub const MAX_DEPS: usize = 8;
/// `ready_probes[].stable` of `ccci.yml`.
pub const MAX_PROBE_STABLE: u32 = 1_000;
/// `CCCI_MIN_FREE_MB` (1 TiB).
pub const MAX_MIN_FREE_MB: u64 = 1_048_576;
/// `CCCI_MIN_FREE_MB`'s default.
pub const DEFAULT_MIN_FREE_MB: u64 = 2_048;
