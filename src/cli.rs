//! The command line, as clap parses it. Nothing here is validated beyond syntax and ranges: the commands
//! turn these into plain, checked configurations before doing anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ssh::HostKeyPolicy;

impl Cli {
    /// Parses the process's arguments. Help and `--version` print as clap prints them and exit
    /// 0; a usage error is one line on stderr and exit 2, like every other bad input.
    pub fn parse_or_exit() -> Cli {
        match Cli::try_parse() {
            Ok(cli) => cli,
            Err(err) if !err.use_stderr() => err.exit(),
            Err(err) => {
                let rendered = err.render().to_string();
                let first = rendered.lines().next().unwrap_or("error: invalid usage");
                eprintln!("{first}; see `dm-patch --help`");
                std::process::exit(i32::from(crate::error::ExitStatus::BadInput.code()));
            }
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "dm-patch",
    version,
    about = "Hot-fix a running TiDB Data Migration (DM) cluster, safely: a drop-in for `tiup dm patch`",
    long_about = None,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TiUP's home directory (default: $TIUP_HOME, else ~/.tiup)
    #[arg(long, global = true, value_name = "DIR")]
    pub tiup_home: Option<PathBuf>,
    /// Output format: human-readable text, or one JSON document for scripts
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Timeout in seconds for SSH connections and for HTTP calls to DM (1 to 3600)
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ssh_timeout: u64,
    /// Timeout in seconds for an instance to stop, start, or become healthy (1 to 86400)
    #[arg(long, global = true, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wait_timeout: u64,
    /// Hosts worked on in parallel (connections, uploads, checks); the roll itself is always one
    /// instance at a time
    #[arg(short, long, global = true, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// How to treat SSH host keys, checked against the cluster's ssh/known_hosts
    #[arg(long, global = true, value_name = "POLICY", default_value = "accept-new")]
    pub host_key_policy: HostKeyPolicy,
    /// More detail (repeat for debug logs)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and the final result
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replace the dm-master or dm-worker binary of running instances with a hotfix package
    Patch(PatchArgs),
    /// Show the cluster's instances with their live status and version
    Display(DisplayArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `-N` and `-R` as TiUP takes them: repeatable, and comma lists.
#[derive(Debug, Args)]
pub struct InstanceFilterArgs {
    /// Only these instances, by ID (host:port); repeat or separate with commas
    #[arg(short = 'N', long = "node", value_name = "ID", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Only these roles: dm-master, dm-worker; repeat or separate with commas
    #[arg(short = 'R', long = "role", value_name = "ROLE", value_delimiter = ',')]
    pub roles: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PatchArgs {
    /// Name of the cluster in the TiUP store
    pub cluster: String,
    /// The hotfix package: a .tar.gz holding <component>/<component>
    pub package: PathBuf,
    #[command(flatten)]
    pub filter: InstanceFilterArgs,
    /// Keep the package as the cluster's permanent patch (patch/<comp>.tar.gz), so TiUP's later
    /// scale-out and upgrade reuse it
    #[arg(long)]
    pub overwrite: bool,
    /// The cluster is stopped: only replace binaries; no restart, no DM API calls
    #[arg(long)]
    pub offline: bool,
    /// Accept a package whose binary reports another release line (major.minor) than the
    /// cluster's dm_version; a hotfix normally stays on its release line
    #[arg(long)]
    pub allow_version_change: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    /// Check everything and print the plan; connect to no host, change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct DisplayArgs {
    /// Name of the cluster in the TiUP store
    pub cluster: String,
    #[command(flatten)]
    pub filter: InstanceFilterArgs,
}
