//! `ccci janitor` (§6).

use crate::cli::{Cli, JanitorArgs};

pub fn main(_cli: &Cli, _args: &JanitorArgs) -> u8 {
    eprintln!("ccci janitor: not implemented yet");
    crate::exit::INTERNAL
}
