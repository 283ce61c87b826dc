use clap::CommandFactory;

fn main() -> std::process::ExitCode {
    // A shell asking for completions (`COMPLETE=<shell> dm-patch -- <words>`, from the script
    // `dm-patch completions <shell>` prints) is answered here, before anything else runs.
    clap_complete::CompleteEnv::with_factory(dm_patch::cli::Cli::command)
        .var(dm_patch::commands::completions::COMPLETE_VAR)
        .complete();
    dm_patch::run(dm_patch::cli::Cli::parse_or_exit()).into()
}
