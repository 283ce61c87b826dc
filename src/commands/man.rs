//! `dm-patch man`: the manual page, dm-patch(1), as roff on stdout
//! (`dm-patch man > /usr/local/share/man/man1/dm-patch.1`).
//!
//! It is made from the clap definitions that `--help` shows (clap_mangen), so it lists exactly
//! what this binary takes: the global options, then each command with its synopsis and options,
//! then the exit statuses and the environment. One page holds everything, so that a single
//! file is all there is to install.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use super::completions::COMPLETE_VAR;
use crate::cli::{Cli, NATIVE_SSH_ENV};
use crate::error::ExitStatus;
use crate::ssh::SSH_PATH_ENV;

pub fn run() -> ExitStatus {
    let mut stdout = io::stdout().lock();
    match render(&mut stdout).and_then(|()| stdout.flush()) {
        Ok(()) => ExitStatus::Success,
        Err(err) => {
            eprintln!("error: cannot write the manual page: {err}");
            ExitStatus::Failure
        }
    }
}

/// Writes the whole page.
pub fn render(out: &mut dyn Write) -> io::Result<()> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let man = Man::new(command.clone())
        .title("DM-PATCH")
        .source(format!("dm-patch {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");

    // The first part keeps roff's preamble (it defines the apostrophe every later part uses).
    man.render_title(out)?;
    write_part(out, |w| man.render_name_section(w), Keep::Headings)?;
    write_part(out, |w| man.render_synopsis_section(w), Keep::Headings)?;
    write_part(out, |w| man.render_description_section(w), Keep::Headings)?;
    write_part(out, |w| man.render_options_section(w), Keep::Headings)?;

    let mut commands = Roff::new();
    commands.control("SH", ["COMMANDS"]);
    write_part(out, |w| commands.to_writer(w), Keep::Headings)?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        // The global options and --help are listed once, above; each command lists its own.
        let own = sub.clone().mut_args(|arg| {
            let shared = arg.is_global_set() || arg.get_id() == "help";
            if shared { arg.hide(true) } else { arg }
        });
        let name = own.get_bin_name().unwrap_or_else(|| own.get_name()).to_owned();
        let mut heading = Roff::new();
        heading.control("SS", [name.as_str()]);
        if let Some(about) = own.get_long_about().or_else(|| own.get_about()) {
            heading.text([roman(about.to_string())]);
        }
        heading.control("PP", []);
        write_part(out, |w| heading.to_writer(w), Keep::Headings)?;
        let own = Man::new(own);
        write_part(out, |w| own.render_synopsis_section(w), Keep::Body)?;
        write_part(out, |w| own.render_options_section(w), Keep::Body)?;
    }

    write_part(out, |w| trailer().to_writer(w), Keep::Headings)?;
    write_part(out, |w| man.render_version_section(w), Keep::Headings)
}

/// What of a rendered part goes into the page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Everything but roff's preamble.
    Headings,
    /// Also without its section headings: the part goes under a command's subsection.
    Body,
}

/// Renders one part of the page and writes it without the preamble that each rendering starts
/// with (said once, by the title). A text line never starts with a control character (roff
/// escapes it), so the lines dropped here are only control lines.
fn write_part(
    out: &mut dyn Write,
    render: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    keep: Keep,
) -> io::Result<()> {
    let mut buffer = Vec::new();
    render(&mut buffer)?;
    let text = String::from_utf8_lossy(&buffer);
    for line in text.lines() {
        let preamble = line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq");
        let heading = line.starts_with(".SH ");
        if preamble || (heading && keep == Keep::Body) {
            continue;
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// EXIT STATUS, ENVIRONMENT and FILES: what README.md says about them, for a reader with only
/// the binary.
fn trailer() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    let statuses = [
        (ExitStatus::Success, "Done (or, with --dry-run, the plan is valid)."),
        (
            ExitStatus::Failure,
            "The cluster refused: a host unreachable, a preflight problem, or an instance that \
             failed and was rolled back. Every instance is as it was (or patched and healthy).",
        ),
        (
            ExitStatus::BadInput,
            "Bad input: usage, the TiUP store (unreadable, or not writable), the selection or the \
             package. Nothing was changed.",
        ),
        (
            ExitStatus::NeedsAttention,
            "Failed, and something needs a person: an instance that could not be put back, or \
             meta.yaml's marks that could not be recorded. The report says what, and how.",
        ),
        (
            ExitStatus::Interrupted,
            "Interrupted (Ctrl-C, SIGTERM) after the instance in flight was put back as it was.",
        ),
    ];
    for (status, meaning) in statuses {
        roff.control("TP", []).text([bold(status.code().to_string())]).text([roman(meaning)]);
    }

    roff.control("SH", ["ENVIRONMENT"]);
    let variables = [
        ("TIUP_HOME", "TiUP's home directory, when --tiup-home is not given (else ~/.tiup)."),
        (
            NATIVE_SSH_ENV,
            "true, 1 or enable: reach the hosts with the system's ssh client, as --ssh system \
             (and TiUP) do.",
        ),
        (
            SSH_PATH_ENV,
            "The ssh client --ssh system runs, instead of the one in PATH (as TiUP reads it).",
        ),
        (
            COMPLETE_VAR,
            "Set by the completion scripts (dm-patch completions) when they ask for completions.",
        ),
        ("NO_COLOR", "Set to anything: no colours."),
        ("RUST_LOG", "Log levels on stderr, overriding -v and -q (tracing's filter syntax)."),
    ];
    for (name, meaning) in variables {
        roff.control("TP", []).text([bold(name)]).text([roman(meaning)]);
    }

    roff.control("SH", ["FILES"]);
    let files = [
        (
            "$TIUP_HOME/storage/dm/clusters/<name>/",
            "The cluster, as TiUP keeps it: meta.yaml, ssh/id_rsa, ssh/known_hosts, tls/ and \
             patch/.",
        ),
        ("$TIUP_HOME/storage/dm/audit/", "One record per run, as tiup dm audit lists them."),
    ];
    for (path, meaning) in files {
        roff.control("TP", []).text([bold(path)]).text([roman(meaning)]);
    }
    roff
}
