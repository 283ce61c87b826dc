//! dm-patch's integration tests: one binary, a module per area.

mod dry_run;
mod inputs;
mod support;
