//! The janitor (§6): reaps what dead runs left — orphaned run apps, stale lockfiles, the bulk of
//! old run dirs, straggler processes — and never touches a live run.
//!
//! The kernel flock is the only liveness oracle. For every run app found by abra or docker, the
//! janitor probes the app lock (opened under the rules of §5, non-blocking exclusive try):
//!
//! | probe | meaning | action |
//! |---|---|---|
//! | acquired, `(dev, ino)` of the fd matches the path | the owner died | reap while holding the lock, unlink the lockfile, release |
//! | acquired, identity differs / path gone | another janitor reaped it | skip |
//! | would block | a live run | leave it; flag it when older than 2 × the holder's deadline (2 h when unknown) |
//! | no lockfile (a reboot emptied `/run/lock`) | no owner | create it under the probe lock and reap |
//! | not a regular file / not ours / cannot open | garbage or hostile | log and skip; never follow |
//!
//! Reaping under the probe lock is what makes a janitor and a new run of the same domain safe
//! together: the run's acquire waits until the reap is done, then finds the lockfile unlinked
//! and takes the live path. Two janitors arbitrate the same way: exactly one reaps.
//!
//! Layout: [`inventory`] reads the host without changing it, [`plan`] is a pure function from
//! that inventory to actions, [`apply`], [`prune`] and [`stragglers`] carry them out, [`sweep`]
//! runs one sweep through those phases, and [`report`] is what `--json` prints.
//!
//! The run-start janitor ([`run_start`]) runs inside `ccci run` before the fetch, before the run
//! takes its own app lock. It cannot reap its own run's app while the run uses it: the run holds
//! no app lock yet and has created nothing, and once it takes the lock (after this sweep ended
//! and dropped every probe lock) the lock protects it. A concurrent run of the same domain in
//! another process holds its lock, so the probe sees "would block" and leaves it. If this
//! domain is an orphan of an earlier crashed run, reaping it here is exactly right (the deploy
//! step would clear it anyway).

pub mod apply;
pub mod inventory;
pub mod plan;
pub mod prune;
pub mod report;
pub mod stragglers;
pub mod sweep;
pub mod vocab;
pub mod watch;

pub use sweep::{RUN_START_BUDGET, Settings, run_start, sweep};
