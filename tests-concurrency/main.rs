//! The concurrency suite: real flock(2), real prctl, signals and alarm, real subprocesses —
//! never mocked. Helpers are real processes holding real locks; every process a test starts is
//! reaped by the test.

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
