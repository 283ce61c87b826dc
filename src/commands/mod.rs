//! One file per command.

pub mod completions;
pub mod display;
pub mod patch;
