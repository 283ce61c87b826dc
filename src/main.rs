fn main() -> std::process::ExitCode {
    dm_patch::run(dm_patch::cli::Cli::parse_or_exit()).into()
}
