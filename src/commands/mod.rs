//! One file per command.

pub mod audit;
pub mod completions;
pub mod display;
pub mod man;
pub mod patch;
