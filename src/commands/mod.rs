//! One file per subcommand.

pub mod cancel;
pub mod doctor;
pub mod drain;
pub mod exec_step;
pub mod janitor;
pub mod lease_wait;
pub mod locks;
pub mod output;
pub mod policy;
pub mod ps;
pub mod run;
mod session;
pub mod watch;
