//! Narrow adapters over the programs ccci drives. Each call to a program goes through the one
//! spawn path; `engine` reads dockerd's Engine API over its socket and spawns nothing.

pub mod abra;
pub mod docker;
pub mod engine;
pub mod git;

pub use abra::{Abra, AbraError};
pub use docker::{Docker, DockerError, Residue};
pub use engine::{Deadline, Engine, EngineError, EngineEvent, EventFilter, Host, Notice, Scope, Subscription};
pub use git::Git;
