//! `ccci locks` (§1.3).

use crate::cli::{Cli, LocksArgs};

pub fn main(_cli: &Cli, _args: &LocksArgs) -> u8 {
    eprintln!("ccci locks: not implemented yet");
    crate::exit::INTERNAL
}
