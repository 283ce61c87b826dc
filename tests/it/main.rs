//! dm-patch's integration tests: one binary, a module per area.

mod display;
mod dry_run;
mod inputs;
mod offline;
mod preflight;
mod ssh;
mod support;
