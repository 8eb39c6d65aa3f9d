//! Narrow adapters over the programs ccci drives. Each call goes through the one spawn path.

pub mod abra;
pub mod docker;
pub mod git;

pub use abra::{Abra, AbraError};
pub use docker::{Docker, DockerError, Residue};
pub use git::{Git, GitError};
