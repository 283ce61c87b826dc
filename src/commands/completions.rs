//! `dm-patch completions <shell>`: the shell's registration script on stdout.
//!
//! Completion is dynamic (clap_complete's `CompleteEnv`): the script asks dm-patch itself
//! (`COMPLETE=<shell> dm-patch -- <words>`) at each TAB, so it offers what is true now: the
//! subcommands and options, the values of enumerated options (`-R` roles, `--host-key-policy`,
//! `--format`, `--ssh`), and the names of the clusters in the TiUP store (`$TIUP_HOME`, else
//! `~/.tiup`).

use clap_complete::CompletionCandidate;
use clap_complete::env::{Bash, Elvish, EnvCompleter, Fish, Powershell, Zsh};

use crate::error::ExitStatus;
use crate::topology::store::Store;

/// The environment variable the registration script sets when it asks for completions.
pub const COMPLETE_VAR: &str = "COMPLETE";

pub fn run(shell: clap_complete::Shell) -> ExitStatus {
    let completer: &dyn EnvCompleter = match shell {
        clap_complete::Shell::Bash => &Bash,
        clap_complete::Shell::Elvish => &Elvish,
        clap_complete::Shell::Fish => &Fish,
        clap_complete::Shell::PowerShell => &Powershell,
        clap_complete::Shell::Zsh => &Zsh,
        _ => &Bash,
    };
    // The script calls back `dm-patch` as found in PATH, never the path of the binary that
    // wrote it: an upgraded or moved binary keeps completing.
    let mut stdout = std::io::stdout().lock();
    match completer.write_registration(
        COMPLETE_VAR,
        "dm-patch",
        "dm-patch",
        "dm-patch",
        &mut stdout,
    ) {
        Ok(()) => ExitStatus::Success,
        Err(err) => {
            eprintln!("error: cannot write the completion script: {err}");
            ExitStatus::Failure
        }
    }
}

/// The clusters of the TiUP store, for completing a cluster name: each directory of
/// `storage/dm/clusters/` that holds a meta.yaml, sorted.
pub fn cluster_names() -> Vec<CompletionCandidate> {
    let Ok(store) = Store::locate(None) else { return Vec::new() };
    let clusters = store.home().join("storage").join("dm").join("clusters");
    let Ok(entries) = std::fs::read_dir(clusters) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("meta.yaml").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().map(CompletionCandidate::new).collect()
}
