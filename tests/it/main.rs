//! dm-patch's integration tests: one binary, a module per area.

mod audit;
mod cli;
mod cluster;
mod connections;
mod display;
mod docs;
mod dry_run;
mod executors;
mod history;
mod hostile;
mod hosts;
mod inputs;
mod live_display;
mod offline;
mod patch;
mod preflight;
mod roll_steps;
mod rollback;
mod spare_worker;
mod ssh;
mod summary;
mod support;
mod tasks;
mod tls;
