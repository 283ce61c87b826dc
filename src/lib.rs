//! dm-patch: hot-fix a running TiDB Data Migration (DM) cluster, safely.
//!
//! Data flows one way: argv -> [`cli::Cli`] -> a checked [`plan::Plan`] plus
//! [`engine::Settings`] -> [`engine::execute`] -> an [`engine::report::Report`] -> terminal or
//! JSON. Imports only point down the layers:
//!
//! - [`cli`], [`commands`] (one file per command; the only code that maps results to an
//!   [`error::ExitStatus`]) and [`output`] (tables, progress, JSON) at the top;
//! - [`engine`]: the only side effects on hosts; emits events, returns a report;
//! - [`plan`], [`dm`] (the DM-master HTTP API, rolling order, health) and [`package`] (the
//!   local package check);
//! - [`remote`] (the shell scripts run on hosts, kept as files, and the one format they
//!   answer in), [`ssh`] and [`topology`] (meta.yaml, the TiUP store, selection) at the
//!   bottom.
//!
//! Each layer has its own typed errors (thiserror); `anyhow` is used only at the edge, here.

pub mod cli;
pub mod commands;
pub mod dm;
pub mod engine;
pub mod error;
pub mod output;
pub mod package;
pub mod plan;
pub mod remote;
pub mod ssh;
pub mod topology;

use cli::{Cli, Command};
use error::{ExitStatus, exit_status_of};
use output::Printer;

/// Runs one command line to its end and says how the process should exit. Errors are printed
/// here, once, as one line each.
pub fn run(cli: Cli) -> ExitStatus {
    init_logging(cli.global.verbose, cli.global.quiet);
    let printer = Printer::new(cli.global.format, cli.global.quiet, cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitStatus::Failure;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Patch(args) => commands::patch::run(args, &cli.global, &printer).await,
            Command::Display(args) => commands::display::run(args, &cli.global, &printer).await,
            Command::Rollback(args) => commands::rollback::run(args, &cli.global, &printer).await,
            Command::History(args) => commands::history::run(args, &cli.global, &printer),
            Command::Completions { shell } => Ok(commands::completions::run(shell)),
            Command::Man => Ok(commands::man::run()),
        }
    });
    match result {
        Ok(status) => status,
        Err(err) => {
            let status = exit_status_of(&err);
            printer.error(&one_line(&err), status);
            status
        }
    }
}

/// An error and its causes on one line, each cause said once: typed errors already name their
/// source in their message, context added with `anyhow` does not.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line.replace('\n', " ")
}

/// Logs go to stderr: warnings by default, only errors with -q. `-v` adds what dm-patch does
/// (each remote command and DM API call, with its answer and how long it took), `-vv` its
/// debug detail and what the SSH and HTTP libraries log, `-vvv` everything. With `-v` each line
/// carries the time since the start. `RUST_LOG` overrides the levels.
fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warn,dm_patch=info",
        (false, 2) => {
            "info,dm_patch=debug,russh=debug,russh_sftp=debug,reqwest=debug,hyper_util=debug"
        }
        (false, _) => "debug,dm_patch=trace,russh=trace,reqwest=trace,hyper_util=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours_on_stderr())
        .with_target(verbose >= 2);
    if verbose > 0 && !quiet {
        builder.with_timer(tracing_subscriber::fmt::time::uptime()).init();
    } else {
        builder.without_time().init();
    }
}

/// Colours in logs follow the same rule as everywhere else: only on a terminal, never with
/// `NO_COLOR` or `TERM=dumb`.
fn colours_on_stderr() -> bool {
    console::colors_enabled_stderr()
}
