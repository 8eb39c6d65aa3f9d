//! The ceiling of every number a setting, a flag or a `ccci.yml` can hold. A value above its
//! ceiling is refused (exit 2, or a bad `ccci.yml`), so no arithmetic on it can overflow and no
//! wait can be made endless by a typo or a hostile build parameter. docs/env.md lists them.

/// `--deadline`'s default (`CCCI_DEADLINE`): an hour for everything before teardown.
pub const DEFAULT_DEADLINE_SECS: u64 = 3_600;
/// `--teardown-budget`'s default (`CCCI_TEARDOWN_BUDGET`).
pub const DEFAULT_BUDGET_SECS: u64 = 600;
/// `CCCI_KILL_GRACE`'s default: docker's own stop grace.
pub const DEFAULT_KILL_GRACE_SECS: u64 = 10;
/// `CCCI_LEAK_TIMEOUT_MS`'s default: a well-behaved step's group is empty in microseconds.
pub const DEFAULT_LEAK_TIMEOUT_MS: u64 = 200;

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
/// `ccci janitor --prune-after`'s default, and the run-start janitor's: a fortnight of the
/// bulky parts of finished runs (their results and logs stay for the dashboard).
pub const DEFAULT_PRUNE_DAYS: u64 = 14;
/// `ccci janitor --deadline`'s default: a sweep of a busy host fits in it many times over; the
/// timer's next sweep starts after it anyway.
pub const DEFAULT_JANITOR_DEADLINE_SECS: u64 = 1_800;
/// `ccci janitor --watch --sweep-every`'s default: the full sweep behind the event-driven
/// reaper, for what no event announces (a reboot, a missed event).
pub const DEFAULT_SWEEP_EVERY_SECS: u64 = 300;
/// `CCCI_MIN_FREE_MB`'s default.
pub const DEFAULT_MIN_FREE_MB: u64 = 2_048;
