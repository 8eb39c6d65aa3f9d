//! The concurrency suite: real flock(2), real prctl, signals and alarm, real subprocesses —
//! never mocked. Helpers are real processes holding real locks; every process a test starts is
//! reaped by the test.

#![expect(
    clippy::disallowed_methods,
    reason = "tests drive the real binary and build their fixtures with plain processes; the spawn-path rule is for ccci itself"
)]
#![expect(
    unreachable_pub,
    reason = "a test crate is its own root: its shared helpers are pub for the test modules, never for anyone else"
)]

#[path = "../tests/common/mod.rs"]
mod common;

mod guard;
mod hostile_host;
mod janitor;
mod lease;
mod lifetime;
mod locks;
mod operate;
mod spawn;
mod watch;
