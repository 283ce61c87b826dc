//! `dm-patch completions <shell>`: a completion script on stdout.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::ExitStatus;

pub fn run(shell: clap_complete::Shell) -> ExitStatus {
    clap_complete::generate(shell, &mut Cli::command(), "dm-patch", &mut std::io::stdout());
    ExitStatus::Success
}
