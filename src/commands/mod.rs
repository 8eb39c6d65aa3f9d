//! One file per subcommand.

pub mod exec_step;
pub mod janitor;
pub mod locks;
pub mod output;
pub mod policy;
pub mod run;
