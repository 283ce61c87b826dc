//! One file per command.

pub mod audit;
pub mod completions;
pub mod display;
pub mod history;
pub mod man;
pub mod patch;
pub mod reach;
pub mod rollback;
pub mod settings;
